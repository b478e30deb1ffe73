package rollup

// avg is the mean of the group's sample values in the window.
type avg struct{}

func (avg) suffix() string { return "avg" }
func (avg) needs() need    { return needSum | needCount }
func (avg) flush(g *merged, emit func(string, string, float64)) {
	emit("", "", g.Sum/g.Count)
}
