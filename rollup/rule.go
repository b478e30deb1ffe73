package rollup

import (
	"fmt"
	"hash/crc32"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/sample"
)

// groupMode says how a rule derives a group's labels from a series' labels.
type groupMode uint8

const (
	// groupAll keeps every label: the rule aggregates each series over time only.
	groupAll groupMode = iota
	// groupBy keeps __name__ and the by labels.
	groupBy
	// groupWithout keeps every label except the without labels.
	groupWithout
)

// rule is one compiled rollup: what it matches, how it groups, its window and outputs.
// A rule is immutable once built and shared read-only by every partition.
type rule struct {
	name     string
	matchers []*labels.Matcher
	interval int64 // window length, milliseconds
	lateness int64 // milliseconds
	// staleness is how long per-series counter state and per-group running totals are
	// kept without new samples (max(2*interval, 5m)).
	staleness int64
	mode      groupMode
	labels    []string // by or without labels, sorted, without __name__
	outputs   []output
	need      need
	// suffix is ":<interval>[_by_..|_without_..]_", the part of every output name
	// between the input metric name and the output's own name.
	suffix string
	// fingerprint identifies the rule's definition: checkpointed state is reused only by
	// a rule with the same fingerprint.
	fingerprint uint32
}

// compileRule validates one rollup config and builds its rule.
func compileRule(c config.RollupConfig) (*rule, error) {
	if c.Name == "" {
		return nil, fmt.Errorf("rollup: name must not be empty")
	}
	if c.Interval.D() < time.Millisecond {
		return nil, fmt.Errorf("rollup %q: interval %v must be positive", c.Name, c.Interval.D())
	}
	if c.Lateness < 0 {
		return nil, fmt.Errorf("rollup %q: lateness must not be negative", c.Name)
	}
	if len(c.By) > 0 && len(c.Without) > 0 {
		return nil, fmt.Errorf("rollup %q: set by or without, not both", c.Name)
	}
	ms, err := parser.NewParser(parser.Options{}).ParseMetricSelector(c.Match)
	if err != nil {
		return nil, fmt.Errorf("rollup %q: match %q is not a series selector: %w", c.Name, c.Match, err)
	}
	if len(c.Outputs) == 0 {
		return nil, fmt.Errorf("rollup %q: outputs must not be empty", c.Name)
	}
	r := &rule{
		name:     c.Name,
		matchers: ms,
		interval: c.Interval.D().Milliseconds(),
		lateness: c.Lateness.D().Milliseconds(),
	}
	r.staleness = max(2*r.interval, (5 * time.Minute).Milliseconds())
	switch {
	case len(c.By) > 0:
		r.mode = groupBy
		r.labels = cleanLabelList(c.By)
	case len(c.Without) > 0:
		r.mode = groupWithout
		r.labels = cleanLabelList(c.Without)
	}
	seen := map[string]bool{}
	for _, spec := range config.JoinOutputs(c.Outputs) {
		o, err := parseOutput(spec)
		if err != nil {
			return nil, fmt.Errorf("rollup %q: %w", c.Name, err)
		}
		if seen[o.suffix()] {
			return nil, fmt.Errorf("rollup %q: output %q is listed twice", c.Name, o.suffix())
		}
		seen[o.suffix()] = true
		r.outputs = append(r.outputs, o)
		r.need |= o.needs()
	}
	r.suffix = outputSuffix(c.IntervalText, c.Interval.D(), r.mode, r.labels)
	r.fingerprint = crc32.ChecksumIEEE(fmt.Appendf(nil, "%q|%d|%d|%d|%q|%q|%q", c.Match, r.interval, r.lateness, r.mode, r.labels, c.Outputs, r.suffix))
	return r, nil
}

// cleanLabelList sorts and dedupes a by/without list and drops __name__, which output
// names always keep.
func cleanLabelList(in []string) []string {
	out := make([]string, 0, len(in))
	for _, l := range in {
		if l != model.MetricNameLabel {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// outputSuffix builds the middle of a VictoriaMetrics stream aggregation output name:
// <metric_name>:<interval>[_by_<by_labels>][_without_<without_labels>]_<output>,
// the interval as written in the config (else in Prometheus's form), the label lists
// sorted and joined with "_".
func outputSuffix(text string, interval time.Duration, mode groupMode, ls []string) string {
	var b strings.Builder
	b.WriteString(":")
	if text == "" {
		text = model.Duration(interval).String()
	}
	b.WriteString(text)
	if len(ls) > 0 {
		switch mode {
		case groupBy:
			b.WriteString("_by_")
		case groupWithout:
			b.WriteString("_without_")
		}
		b.WriteString(strings.Join(ls, "_"))
	}
	b.WriteString("_")
	return b.String()
}

// matches reports whether the series with labels ls is an input of the rule.
func (r *rule) matches(ls labels.Labels) bool {
	for _, m := range r.matchers {
		if !m.Matches(ls.Get(m.Name)) {
			return false
		}
	}
	return true
}

// matchesRaw is matches over a decoded series' raw labels (sorted by name), without
// building a labels.Labels: the strings it hands the matchers alias ls and are not kept.
func (r *rule) matchesRaw(ls []sample.Label) bool {
	for _, m := range r.matchers {
		v := ""
		for _, l := range ls {
			if len(l.Name) == len(m.Name) && string(l.Name) == m.Name {
				if len(l.Value) > 0 {
					v = unsafe.String(&l.Value[0], len(l.Value))
				}
				break
			}
		}
		if !m.Matches(v) {
			return false
		}
	}
	return true
}

// groupLabels returns the labels of the group that series ls falls into.
func (r *rule) groupLabels(b *labels.Builder, ls labels.Labels) labels.Labels {
	switch r.mode {
	case groupBy:
		b.Reset(labels.EmptyLabels())
		b.Set(model.MetricNameLabel, ls.Get(model.MetricNameLabel))
		for _, n := range r.labels {
			b.Set(n, ls.Get(n))
		}
		return b.Labels()
	case groupWithout:
		b.Reset(ls)
		b.Del(r.labels...)
		return b.Labels()
	case groupAll:
	}
	return ls
}

// windowStart is the start of the window holding timestamp t: windows are aligned to
// multiples of the interval since the Unix epoch.
func (r *rule) windowStart(t int64) int64 {
	s := t - t%r.interval
	if t < 0 && t%r.interval != 0 {
		s -= r.interval
	}
	return s
}

// sealedBoundary is the end of the newest window that a watermark wm closes: every
// window ending at or before it is final. noWatermark gives noWatermark.
func (r *rule) sealedBoundary(wm int64) int64 {
	if wm == noWatermark {
		return noWatermark
	}
	return r.windowStart(wm)
}

// noWatermark is the watermark of a partition that has seen no sample yet.
const noWatermark = int64(-1 << 62)

// formatPhi formats a quantile level as the quantile label value (VM's strconv 'g' form).
func formatPhi(phi float64) string { return strconv.FormatFloat(phi, 'g', -1, 64) }
