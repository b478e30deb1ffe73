package rollup

// increase is the sum over a group's series of each counter's increase during the
// window, counted from the series' last sample before the window; resets and new series
// are handled as in total.
type increase struct{ name string }

func (o increase) suffix() string {
	if o.name != "" {
		return o.name
	}
	return "increase"
}
func (increase) needs() need { return needCounter }
func (increase) flush(g *merged, emit func(string, string, float64)) {
	emit("", "", g.increase)
}
