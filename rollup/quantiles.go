package rollup

// quantiles emits, for each φ, the group's φ-quantile of the window's values, labelled
// quantile="φ". The value is the sample of rank ⌊φ·(n−1)⌋ (0-based, in sorted order),
// within the sketch's relative error (sketchRelativeError, 1%): |got−exact| ≤ 1%·|exact|.
type quantiles struct{ phis []float64 }

func (quantiles) suffix() string { return "quantiles" }
func (quantiles) needs() need    { return needSketch }
func (o quantiles) flush(g *merged, emit func(string, string, float64)) {
	if g.sketch == nil || g.sketch.count() == 0 {
		return
	}
	for _, phi := range o.phis {
		emit("quantile", formatPhi(phi), g.sketch.quantile(phi))
	}
}
