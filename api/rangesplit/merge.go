package rangesplit

import (
	"sort"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/util/stats"
)

// mergeMatrices merges the matrices of consecutive parts of a range query into the
// whole query's: series with the same labels become one, their points concatenated in
// part order (which is time order), and the result is sorted by labels as the engine
// sorts a range query's matrix. A series found in one part only keeps that part's
// point slices, which stay owned by the part: the result is valid until the parts are
// closed. nil is returned when every part's matrix is nil, as the engine's would be.
func mergeMatrices(mats []promql.Matrix) promql.Matrix {
	allNil, most := true, 0
	for _, m := range mats {
		if m != nil {
			allNil = false
		}
		most = max(most, len(m))
		if !sort.IsSorted(m) {
			// The engine sorts every range query's result; this is only a safeguard.
			sort.Sort(m)
		}
	}
	if allNil {
		return nil
	}
	out := make(promql.Matrix, 0, most)
	next := make([]int, len(mats)) // next series of each part
	from := make([]int, 0, len(mats))
	for {
		// The parts whose next series has the smallest labels.
		from = from[:0]
		var smallest labels.Labels
		for i, m := range mats {
			if next[i] == len(m) {
				continue
			}
			l := m[next[i]].Metric
			if len(from) > 0 {
				c := labels.Compare(l, smallest)
				if c > 0 {
					continue
				}
				if c < 0 {
					from = from[:0]
				}
			}
			if len(from) == 0 {
				smallest = l
			}
			from = append(from, i)
		}
		if len(from) == 0 {
			return out
		}
		if len(from) == 1 {
			i := from[0]
			out = append(out, mats[i][next[i]])
			next[i]++
			continue
		}
		var floats, histograms int
		for _, i := range from {
			s := mats[i][next[i]]
			floats += len(s.Floats)
			histograms += len(s.Histograms)
		}
		first := mats[from[0]][next[from[0]]]
		s := promql.Series{Metric: first.Metric, DropName: first.DropName}
		if floats > 0 {
			s.Floats = make([]promql.FPoint, 0, floats)
		}
		if histograms > 0 {
			s.Histograms = make([]promql.HPoint, 0, histograms)
		}
		for _, i := range from {
			p := mats[i][next[i]]
			s.Floats = append(s.Floats, p.Floats...)
			s.Histograms = append(s.Histograms, p.Histograms...)
			next[i]++
		}
		out = append(out, s)
	}
}

// mergeStats sums the sample statistics of the parts, which ran at once: totals,
// series touched and peaks are sums, per-step counts are the parts' one after the
// other. The timers are those of the split query itself (timers), wall-clock.
func mergeStats(parts []promql.Query, timers *stats.QueryTimers) *stats.Statistics {
	var samples *stats.QuerySamples
	for i, p := range parts {
		ps := p.Stats().Samples
		if ps == nil {
			continue
		}
		if samples == nil {
			samples = stats.NewQuerySamples(ps.EnablePerStepStats)
			samples.StartTimestamp = ps.StartTimestamp
			samples.Interval = ps.Interval
		}
		samples.PeakSamples += ps.PeakSamples
		samples.TotalSamples += ps.TotalSamples
		samples.SamplesRead += ps.SamplesRead
		samples.TotalSeries += ps.TotalSeries
		if i == 0 || samples.TotalSamplesPerStep != nil {
			samples.TotalSamplesPerStep = appendSteps(samples.TotalSamplesPerStep, ps.TotalSamplesPerStep)
		}
		if i == 0 || samples.SamplesReadPerStep != nil {
			samples.SamplesReadPerStep = appendSteps(samples.SamplesReadPerStep, ps.SamplesReadPerStep)
		}
	}
	if samples == nil {
		samples = stats.NewQuerySamples(false)
	}
	return &stats.Statistics{Timers: timers, Samples: samples}
}

// appendSteps appends a part's per-step counts; a part without them (nil) leaves the
// merged counts nil, since they would no longer line up with the steps.
func appendSteps(to, steps []int64) []int64 {
	if steps == nil {
		return nil
	}
	return append(to, steps...)
}
