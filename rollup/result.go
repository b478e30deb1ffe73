package rollup

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/vigilhq/vigil/sample"
)

// Result is one closed window of one rollup: every output series of every group that
// had samples in the window, each with one value at the window's end. Series are
// sorted by labels. A Result handed to a callback must not be modified.
type Result struct {
	Rollup string
	// Start and End bound the window [Start, End) in milliseconds since the epoch; the
	// output samples carry timestamp End.
	Start, End int64
	Series     []ResultSeries
	// marks are the partitions' (offset, sealed) reports this window was closed on.
	marks []sealMark
}

// ResultSeries is one output series' value for the window.
type ResultSeries struct {
	Labels labels.Labels
	Value  float64
}

// MetricNames returns the distinct output metric names of the result, sorted.
func (r *Result) MetricNames() []string {
	var names []string
	for i := range r.Series {
		names = append(names, r.Series[i].Labels.Get(model.MetricNameLabel))
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// WindowEnd returns the window's end as a time.
func (r *Result) WindowEnd() time.Time { return time.UnixMilli(r.End) }

// Record encoding of a Result in the rollups topic (part of the on-disk format):
//
//	key   := "rollup/v1/" name "/" end:decimal-ms
//	value := a sample batch (package sample): a first pseudo-series with no samples
//	         and the labels __rollup_window__="<start>" and
//	         __rollup_marks__="<offset>:<sealed>,..." (one per input partition: what
//	         each had read and sealed when the window closed), then one series per
//	         output series, each with one float sample at End.
const resultKeyPrefix = "rollup/v1/"

// encodeResult returns the record key and value of r.
func encodeResult(r *Result) (key, value []byte) {
	key = fmt.Appendf(nil, "%s%s/%d", resultKeyPrefix, r.Rollup, r.End)
	var enc sample.Encoder
	enc.Reset()
	var marks []byte
	for i, m := range r.marks {
		if i > 0 {
			marks = append(marks, ',')
		}
		marks = fmt.Appendf(marks, "%d:%d", m.Offset, m.Sealed)
	}
	enc.AppendSeries(&sample.Series{Labels: []sample.Label{
		{Name: []byte("__rollup_marks__"), Value: marks},
		{Name: []byte("__rollup_window__"), Value: fmt.Appendf(nil, "%d", r.Start)},
	}})
	var s sample.Series
	for i := range r.Series {
		s.Labels = s.Labels[:0]
		r.Series[i].Labels.Range(func(l labels.Label) {
			s.Labels = append(s.Labels, sample.Label{Name: []byte(l.Name), Value: []byte(l.Value)})
		})
		s.Samples = append(s.Samples[:0], sample.Sample{T: r.End, V: r.Series[i].Value})
		enc.AppendSeries(&s)
	}
	return key, slices.Clone(enc.Bytes())
}

// decodeResult parses a record of the rollups topic.
func decodeResult(key, value []byte) (*Result, error) {
	k := string(key)
	if !strings.HasPrefix(k, resultKeyPrefix) {
		return nil, fmt.Errorf("rollups record key %q: not a rollup result", k)
	}
	k = k[len(resultKeyPrefix):]
	i := strings.LastIndexByte(k, '/')
	if i < 0 {
		return nil, fmt.Errorf("rollups record key %q: no window end", key)
	}
	r := &Result{Rollup: k[:i]}
	if _, err := fmt.Sscanf(k[i+1:], "%d", &r.End); err != nil {
		return nil, fmt.Errorf("rollups record key %q: bad window end: %w", key, err)
	}
	var dec sample.Decoder
	if err := dec.Reset(value); err != nil {
		return nil, fmt.Errorf("rollups record %q: %w", key, err)
	}
	first := true
	for dec.Next() {
		s := dec.Series()
		if first {
			first = false
			if len(s.Labels) != 2 || string(s.Labels[0].Name) != "__rollup_marks__" || string(s.Labels[1].Name) != "__rollup_window__" {
				return nil, fmt.Errorf("rollups record %q: missing window header", key)
			}
			if _, err := fmt.Sscanf(string(s.Labels[1].Value), "%d", &r.Start); err != nil {
				return nil, fmt.Errorf("rollups record %q: bad window start: %w", key, err)
			}
			if ms := string(s.Labels[0].Value); ms != "" {
				for _, m := range strings.Split(ms, ",") {
					var sm sealMark
					if _, err := fmt.Sscanf(m, "%d:%d", &sm.Offset, &sm.Sealed); err != nil {
						return nil, fmt.Errorf("rollups record %q: bad mark %q: %w", key, m, err)
					}
					r.marks = append(r.marks, sm)
				}
			}
			continue
		}
		b := labels.NewScratchBuilder(len(s.Labels))
		for _, l := range s.Labels {
			b.Add(string(l.Name), string(l.Value))
		}
		if len(s.Samples) != 1 {
			return nil, fmt.Errorf("rollups record %q: series with %d samples", key, len(s.Samples))
		}
		r.Series = append(r.Series, ResultSeries{Labels: b.Labels(), Value: s.Samples[0].V})
	}
	if err := dec.Err(); err != nil {
		return nil, fmt.Errorf("rollups record %q: %w", key, err)
	}
	if first {
		return nil, errors.New("rollups record: empty batch")
	}
	return r, nil
}
