package rollup

// last is the value of the group's sample with the newest timestamp in the window; of
// samples sharing that timestamp, the largest value (so arrival order never matters).
type last struct{}

func (last) suffix() string { return "last" }
func (last) needs() need    { return needLast }
func (last) flush(g *merged, emit func(string, string, float64)) {
	emit("", "", g.LastV)
}
