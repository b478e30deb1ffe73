package rollup

// maxOutput is the largest sample value of the group in the window.
type maxOutput struct{}

func (maxOutput) suffix() string { return "max" }
func (maxOutput) needs() need    { return needMax }
func (maxOutput) flush(g *merged, emit func(string, string, float64)) {
	emit("", "", g.Max)
}
