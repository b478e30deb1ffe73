package rollup

// countSamples is the number of samples of the group in the window.
type countSamples struct{}

func (countSamples) suffix() string { return "count_samples" }
func (countSamples) needs() need    { return needCount }
func (countSamples) flush(g *merged, emit func(string, string, float64)) {
	emit("", "", g.Count)
}
