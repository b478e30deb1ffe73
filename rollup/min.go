package rollup

// minOutput is the smallest sample value of the group in the window.
type minOutput struct{}

func (minOutput) suffix() string { return "min" }
func (minOutput) needs() need    { return needMin }
func (minOutput) flush(g *merged, emit func(string, string, float64)) {
	emit("", "", g.Min)
}
