package rollup

// countSeries is the number of distinct series of the group with samples in the window.
type countSeries struct{}

func (countSeries) suffix() string { return "count_series" }
func (countSeries) needs() need    { return needSeries }
func (countSeries) flush(g *merged, emit func(string, string, float64)) {
	emit("", "", float64(len(g.series)))
}
