package rollup

import (
	"fmt"
	"slices"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// coordinator merges the partitions' sealed windows: a window of a rule closes when
// every partition has sealed past its end; it is then merged in partition order,
// flushed through the rule's outputs and emitted, unless the rollups log already holds
// it (a replay after a crash), in which case only the running state is updated. It is
// owned by the engine's main goroutine.
type coordinator struct {
	parts int
	rules []*coordRule
	emit  func(*Result) error
	m     *engineMetrics
	lb    *labels.Builder
}

// coordRule is one rule's cross-partition state.
type coordRule struct {
	r       *rule
	sealed  []int64                    // per partition
	pending map[int64][][]groupPartial // window start -> per-partition partials
	cum     map[string]*cumState
	// lastEmitted is the end of the newest window in the rollups log (noWatermark if
	// none): windows ending at or before it are never emitted again.
	lastEmitted int64
	// marks are the latest report of each partition, recorded with every result.
	marks []sealMark
}

func newCoordRule(r *rule, parts int) *coordRule {
	cr := &coordRule{r: r, sealed: make([]int64, parts), pending: map[int64][][]groupPartial{}, cum: map[string]*cumState{},
		lastEmitted: noWatermark, marks: make([]sealMark, parts)}
	for i := range cr.sealed {
		cr.sealed[i] = noWatermark
		cr.marks[i].Sealed = noWatermark
	}
	return cr
}

func newCoordinator(rules []*rule, parts int, emit func(*Result) error, m *engineMetrics) *coordinator {
	c := &coordinator{parts: parts, emit: emit, m: m, lb: labels.NewBuilder(labels.EmptyLabels())}
	c.setRules(rules, nil)
	return c
}

// setRules installs a new rule set, keeping the state of rules whose definition is
// unchanged.
func (c *coordinator) setRules(rules []*rule, old map[string]*coordRule) {
	c.rules = c.rules[:0]
	for _, r := range rules {
		cr := old[r.name]
		if cr == nil || cr.r.fingerprint != r.fingerprint {
			cr = newCoordRule(r, c.parts)
		}
		cr.r = r
		c.rules = append(c.rules, cr)
	}
}

func (c *coordinator) byName() map[string]*coordRule {
	m := make(map[string]*coordRule, len(c.rules))
	for _, cr := range c.rules {
		m[cr.r.name] = cr
	}
	return m
}

// handle takes one partition report and closes every window it completes.
func (c *coordinator) handle(msg *sealMsg) error {
	if msg.rule >= len(c.rules) {
		return fmt.Errorf("BUG: seal report for rule %d of %d", msg.rule, len(c.rules))
	}
	cr := c.rules[msg.rule]
	for _, w := range msg.windows {
		if len(w.Groups) == 0 {
			continue
		}
		pp := cr.pending[w.Start]
		if pp == nil {
			pp = make([][]groupPartial, c.parts)
			cr.pending[w.Start] = pp
		}
		pp[msg.part] = append(pp[msg.part], w.Groups...)
	}
	cr.sealed[msg.part] = max(cr.sealed[msg.part], msg.sealed)
	cr.marks[msg.part] = sealMark{Offset: msg.offset, Sealed: msg.sealed}
	return c.closeReady(cr)
}

// closeReady closes the pending windows of cr that every partition has sealed.
func (c *coordinator) closeReady(cr *coordRule) error {
	global := slices.Min(cr.sealed)
	var starts []int64
	for s := range cr.pending {
		if s+cr.r.interval <= global {
			starts = append(starts, s)
		}
	}
	slices.Sort(starts)
	for _, s := range starts {
		res := c.compute(cr, s, cr.pending[s])
		delete(cr.pending, s)
		if res == nil {
			continue
		}
		if res.End <= cr.lastEmitted {
			c.m.suppressed.Inc()
			continue
		}
		if err := c.emit(res); err != nil {
			return fmt.Errorf("emit rollup %q window ending %d: %w", cr.r.name, res.End, err)
		}
		cr.lastEmitted = res.End
	}
	if len(starts) > 0 {
		c.sweepCum(cr, starts[len(starts)-1])
	}
	return nil
}

// compute merges one window's partials and flushes the outputs.
func (c *coordinator) compute(cr *coordRule, start int64, parts [][]groupPartial) *Result {
	r := cr.r
	end := start + r.interval
	idx := map[string]int{}
	var groups []*merged
	var keys []string
	for p := range parts {
		for i := range parts[p] {
			gp := &parts[p][i]
			j, ok := idx[gp.Key]
			if !ok {
				j = len(groups)
				idx[gp.Key] = j
				groups = append(groups, &merged{})
				keys = append(keys, gp.Key)
			}
			groups[j].add(gp)
		}
	}
	if len(groups) == 0 {
		return nil
	}
	res := &Result{Rollup: r.name, Start: start, End: end, marks: slices.Clone(cr.marks)}
	for j, m := range groups {
		key := keys[j]
		if r.need&(needCounter|needHist) != 0 {
			cs := cr.cum[key]
			if cs == nil || start-cs.LastEnd >= r.staleness {
				cs = &cumState{}
				cr.cum[key] = cs
			}
			cs.Total += m.increase
			if m.winHist != nil {
				if cs.Hist == nil {
					cs.Hist = &vmHist{}
				}
				cs.Hist.merge(m.winHist)
			}
			cs.LastEnd = end
			m.total = cs.Total
			m.histCum = cs.Hist
		}
		gl, err := decodeKey(key)
		if err != nil {
			continue // keys are built by encodeKey; a bad one is skipped, never emitted
		}
		name := gl.Get(model.MetricNameLabel)
		for _, o := range r.outputs {
			metric := name + r.suffix + o.suffix()
			o.flush(m, func(extraName, extraValue string, v float64) {
				c.lb.Reset(gl)
				c.lb.Set(model.MetricNameLabel, metric)
				if extraName != "" {
					c.lb.Set(extraName, extraValue)
				}
				res.Series = append(res.Series, ResultSeries{Labels: c.lb.Labels(), Value: v})
			})
		}
	}
	slices.SortFunc(res.Series, func(a, b ResultSeries) int { return labels.Compare(a.Labels, b.Labels) })
	return res
}

// sweepCum drops running state of groups that have been silent for the staleness
// interval: it would restart anyway.
func (c *coordinator) sweepCum(cr *coordRule, lastStart int64) {
	for k, cs := range cr.cum {
		if lastStart-cs.LastEnd >= cr.r.staleness {
			delete(cr.cum, k)
		}
	}
}
