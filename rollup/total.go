package rollup

// total is the running sum of a group's counter increases since the group appeared
// (VictoriaMetrics "total"). Counter resets count as Prometheus's increase counts them:
// a drop adds the new value. The first sample of a new series is its baseline and adds
// nothing, so a restart or a retention cut never produces a spike (VM's
// total_prometheus behaviour; "total_prometheus" is accepted as a name too). The running
// sum restarts after the group has had no samples for the staleness interval.
type total struct{ name string }

func (o total) suffix() string {
	if o.name != "" {
		return o.name
	}
	return "total"
}
func (total) needs() need { return needCounter }
func (total) flush(g *merged, emit func(string, string, float64)) {
	emit("", "", g.total)
}
