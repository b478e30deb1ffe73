package rollup

// histogramBucket emits the group's VictoriaMetrics histogram buckets (label vmrange,
// the same bucket bounds as github.com/VictoriaMetrics/metrics.Histogram) over the
// sample values. As in VictoriaMetrics, the counts are cumulative over the windows (a
// counter per bucket, for histogram_quantile over rate or increase) and restart after
// the group has had no samples for the staleness interval. Negative and NaN values are
// not counted.
type histogramBucket struct{}

func (histogramBucket) suffix() string { return "histogram_bucket" }
func (histogramBucket) needs() need    { return needHist }
func (histogramBucket) flush(g *merged, emit func(string, string, float64)) {
	for _, b := range g.histCum.sorted() {
		emit("vmrange", vmRange(b.Idx), float64(b.N))
	}
}
