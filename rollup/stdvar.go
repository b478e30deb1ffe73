package rollup

// stdvar is the population variance of the group's values in the window.
type stdvar struct{}

func (stdvar) suffix() string { return "stdvar" }
func (stdvar) needs() need    { return needStd }
func (stdvar) flush(g *merged, emit func(string, string, float64)) {
	emit("", "", g.M2/g.StdN)
}
