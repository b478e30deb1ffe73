package rollup

// sumSamples is the sum of the group's sample values in the window.
type sumSamples struct{}

func (sumSamples) suffix() string { return "sum_samples" }
func (sumSamples) needs() need    { return needSum }
func (sumSamples) flush(g *merged, emit func(string, string, float64)) {
	emit("", "", g.Sum)
}
