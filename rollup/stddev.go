package rollup

import "math"

// stddev is the population standard deviation of the group's values in the window.
type stddev struct{}

func (stddev) suffix() string { return "stddev" }
func (stddev) needs() need    { return needStd }
func (stddev) flush(g *merged, emit func(string, string, float64)) {
	emit("", "", math.Sqrt(g.M2/g.StdN))
}
