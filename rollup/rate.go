package rollup

// rateSum is the sum over a group's series of each series' per-second increase rate in
// the window: its increase divided by the time from its last sample before the window
// (or its first sample, for a new series) to its last sample in the window. Series
// with no time span are left out; a group with none emits nothing.
type rateSum struct{}

func (rateSum) suffix() string { return "rate_sum" }
func (rateSum) needs() need    { return needCounter }
func (rateSum) flush(g *merged, emit func(string, string, float64)) {
	if g.rateSeries > 0 {
		emit("", "", g.rateSum)
	}
}

// rateAvg is rateSum divided by the number of series it sums.
type rateAvg struct{}

func (rateAvg) suffix() string { return "rate_avg" }
func (rateAvg) needs() need    { return needCounter }
func (rateAvg) flush(g *merged, emit func(string, string, float64)) {
	if g.rateSeries > 0 {
		emit("", "", g.rateSum/float64(g.rateSeries))
	}
}
