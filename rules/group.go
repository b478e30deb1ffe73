package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	promrules "github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/storage"
)

// Env is what evaluating a group needs: where to query, where to write results, and
// what to do with alerts. The Manager builds one; the unit-test runner builds its own.
type Env struct {
	// Query runs an instant query (promrules.EngineQueryFunc over the query store).
	Query promrules.QueryFunc
	// Appendable receives recording rule results, ALERTS and ALERTS_FOR_STATE, and
	// staleness markers.
	Appendable storage.Appendable
	// ExternalURL is handed to templates as $externalURL and used for links.
	ExternalURL *url.URL
	// ResendDelay is how often a firing alert is re-sent (Prometheus: 1m).
	ResendDelay time.Duration
	// Persist, if set, is called after each alerting rule's evaluation with the alerts
	// whose state changed and the label sets of alerts that are gone, before Notify.
	Persist func(ctx context.Context, g *Group, r *AlertingRule, changed []Alert, deleted []labels.Labels) error
	// Notify, if set, is called with the alerts due for sending after each alerting
	// rule's evaluation.
	Notify func(ctx context.Context, g *Group, r *AlertingRule, alerts []Alert)
	// Logger, if set, receives evaluation warnings.
	Logger *slog.Logger
	// OnRuleEval, if set, is called after each rule's evaluation with its error.
	OnRuleEval func(err error)
	// OnRecorded, if set, is called after a slot evaluation with the names of the
	// metrics the group's recording rules wrote, so that other groups reading them can
	// be evaluated on their arrival.
	OnRecorded func(g *Group, metricNames []string)
}

// Group is a rule group of a rule file. Evaluations of a group are serialized; its
// accessors are safe for concurrent use.
type Group struct {
	name        string
	file        string
	interval    time.Duration
	queryOffset time.Duration
	limit       int
	rules       []Rule
	reads       readSet

	evalMu               sync.Mutex
	seriesInPreviousEval []map[string]labels.Labels
	staleSeries          []labels.Labels

	statusMu       sync.Mutex
	lastEvaluation time.Time
	evaluationTime time.Duration
	lastSlot       time.Time

	sched groupSched
}

// Name returns the group's name.
func (g *Group) Name() string { return g.name }

// File returns the file the group was loaded from.
func (g *Group) File() string { return g.file }

// Key returns the group's identity: file and name, as Prometheus's GroupKey.
func (g *Group) Key() string { return g.file + ";" + g.name }

// Interval returns the group's evaluation interval.
func (g *Group) Interval() time.Duration { return g.interval }

// QueryOffset returns how far in the past the group's queries look.
func (g *Group) QueryOffset() time.Duration { return g.queryOffset }

// Limit returns the group's limit on alerts or series per rule (0: none).
func (g *Group) Limit() int { return g.limit }

// Rules returns the group's rules in file order. The slice must not be modified.
func (g *Group) Rules() []Rule { return g.rules }

// LastEvaluation returns when the last evaluation started and how long it took.
func (g *Group) LastEvaluation() (time.Time, time.Duration) {
	g.statusMu.Lock()
	defer g.statusMu.Unlock()
	return g.lastEvaluation, g.evaluationTime
}

// lastTimes returns the start and duration of the last evaluation, and the last slot
// evaluated.
func (g *Group) lastTimes() (time.Time, time.Duration, time.Time) {
	g.statusMu.Lock()
	defer g.statusMu.Unlock()
	return g.lastEvaluation, g.evaluationTime, g.lastSlot
}

// mergeAlerts returns the alerts of a and b, b's copy winning for the same labels.
func mergeAlerts(a, b []Alert) []Alert {
	if len(b) == 0 {
		return a
	}
	if len(a) == 0 {
		return b
	}
	out := append([]Alert(nil), b...)
	inB := make(map[uint64]struct{}, len(b))
	for _, x := range b {
		inB[x.Labels.Hash()] = struct{}{}
	}
	for _, x := range a {
		if _, ok := inB[x.Labels.Hash()]; !ok {
			out = append(out, x)
		}
	}
	return out
}

// slotOffset is the group's fixed offset within its interval, so that groups spread
// their evaluations (Prometheus's EvalTimestamp).
func (g *Group) slotOffset() time.Duration {
	h := labels.New(labels.Label{Name: "name", Value: g.name}, labels.Label{Name: "file", Value: g.file}).Hash()
	return time.Duration(h % uint64(g.interval))
}

// slotAtOrBefore returns the latest evaluation slot of the group at or before t.
func (g *Group) slotAtOrBefore(t time.Time) time.Time {
	off := int64(g.slotOffset())
	adj := t.UnixNano() - off
	base := adj - adj%int64(g.interval)
	if adj < 0 && adj%int64(g.interval) != 0 {
		base -= int64(g.interval)
	}
	return time.Unix(0, base+off).UTC()
}

// slotAtOrAfter returns the earliest evaluation slot of the group at or after t.
func (g *Group) slotAtOrAfter(t time.Time) time.Time {
	s := g.slotAtOrBefore(t)
	if s.Before(t) {
		s = s.Add(g.interval)
	}
	return s
}

// Eval evaluates every rule of the group at ts, in order, as Prometheus does at an
// interval slot: results, ALERTS series and staleness markers are written, alerts
// move through their states, and alerts due are handed to env.Notify. A failing rule
// is recorded in its status and does not stop the others.
func (g *Group) Eval(ctx context.Context, env *Env, ts time.Time) {
	g.eval(ctx, env, modeSlot, ts)
}

// eval evaluates the group at ts in the given mode and reports whether any alert
// changed state.
func (g *Group) eval(ctx context.Context, env *Env, mode evalMode, ts time.Time) bool {
	g.evalMu.Lock()
	defer g.evalMu.Unlock()
	start := time.Now()
	changedAny := false
	for i, rule := range g.rules {
		if ctx.Err() != nil {
			return changedAny
		}
		if g.evalRule(ctx, env, mode, ts, i, rule) {
			changedAny = true
		}
	}
	if mode == modeSlot {
		g.cleanupStaleSeries(ctx, env, ts)
		if env.OnRecorded != nil {
			var names []string
			for i, r := range g.rules {
				if _, ok := r.(*RecordingRule); ok && len(g.seriesInPreviousEval[i]) > 0 {
					names = append(names, r.Name())
				}
			}
			if len(names) > 0 {
				env.OnRecorded(g, names)
			}
		}
	}
	g.statusMu.Lock()
	g.lastEvaluation = start
	g.evaluationTime = time.Since(start)
	if mode == modeSlot {
		g.lastSlot = ts
	}
	g.statusMu.Unlock()
	return changedAny
}

func (g *Group) evalRule(ctx context.Context, env *Env, mode evalMode, ts time.Time, i int, rule Rule) (changed bool) {
	if _, ok := rule.(*RecordingRule); ok && mode == modeArrival {
		// Recording results are written at slot times only (see modeArrival); the
		// rule is not evaluated and its status stays that of the last slot.
		return false
	}
	start := time.Now()
	var (
		vec     promql.Vector
		tmplErr error
		err     error
	)
	defer func() {
		rule.ruleStatus().set(err, tmplErr, start, time.Since(start))
		if env.OnRuleEval != nil {
			env.OnRuleEval(err)
		}
		if err != nil && env.Logger != nil {
			var qc promql.ErrQueryCanceled
			if !errors.As(err, &qc) {
				env.Logger.Warn("rule evaluation failed", "group", g.Key(), "rule", rule.Name(), "err", err)
			}
		}
	}()

	switch r := rule.(type) {
	case *AlertingRule:
		next := ts
		if mode == modeArrival {
			next = g.slotAtOrAfter(ts)
		}
		vec, tmplErr, err = r.eval(ctx, mode, g.queryOffset, ts, next, env.Query, env.ExternalURL, g.limit)
		changedAlerts, deleted := r.takeChanges()
		changed = len(changedAlerts) > 0 || len(deleted) > 0
		var sends []Alert
		if err == nil {
			sends = r.toSend(ts, env.ResendDelay, g.interval)
		}
		// Persist the state changes and the send times, then send: a crash in
		// between sends at the next resend rather than paging twice, and a crash
		// before persisting re-evaluates from the previous durable state.
		if env.Persist != nil && (changed || len(sends) > 0) {
			if perr := env.Persist(ctx, g, r, mergeAlerts(changedAlerts, sends), deleted); perr != nil && env.Logger != nil {
				env.Logger.Error("persist alert state", "group", g.Key(), "rule", r.Name(), "err", perr)
			}
		}
		if env.Notify != nil && len(sends) > 0 {
			env.Notify(ctx, g, r, sends)
		}
		if err != nil {
			return changed
		}
	case *RecordingRule:
		vec, err = r.eval(ctx, g.queryOffset, ts, env.Query, g.limit)
		if err != nil {
			return false
		}
	default:
		panic(fmt.Sprintf("BUG: unknown rule type %T", rule))
	}
	if mode == modeArrival || env.Appendable == nil {
		return changed
	}
	if werr := g.write(ctx, env, ts, i, vec); werr != nil {
		err = werr
	}
	return changed
}

// write appends a rule's results at ts, and staleness markers for the series the
// rule returned last time but not now, as Prometheus's Group.Eval does.
func (g *Group) write(ctx context.Context, env *Env, ts time.Time, i int, vec promql.Vector) error {
	app := env.Appendable.Appender(ctx)
	app.SetOptions(&storage.AppendOptions{DiscardOutOfOrder: true})
	returned := make(map[string]labels.Labels, len(vec))
	var firstErr error
	var buf [1024]byte
	for _, s := range vec {
		var err error
		if s.H != nil {
			_, err = app.AppendHistogram(0, s.Metric, s.T, nil, s.H)
		} else {
			_, err = app.Append(0, s.Metric, s.T, s.F)
		}
		if err != nil {
			// As in Prometheus, any failed append (also out of order or a duplicate
			// timestamp) makes the rule's health bad.
			// The error as the storage gives it, as Prometheus reports it.
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		returned[string(s.Metric.Bytes(buf[:]))] = s.Metric
	}
	staleT := timestamp.FromTime(ts.Add(-g.queryOffset))
	for key, lset := range g.seriesInPreviousEval[i] {
		if _, ok := returned[key]; !ok {
			_, err := app.Append(0, lset, staleT, math.Float64frombits(value.StaleNaN))
			if err != nil && !isBenignAppendErr(err) && env.Logger != nil {
				env.Logger.Warn("append staleness marker", "series", lset.String(), "err", err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		return fmt.Errorf("commit rule results: %w", err)
	}
	g.seriesInPreviousEval[i] = returned
	return firstErr
}

// isBenignAppendErr reports the append errors Prometheus only counts: a sample out
// of order, too old, or a duplicate at the same timestamp.
func isBenignAppendErr(err error) bool {
	return errors.Is(err, storage.ErrOutOfOrderSample) || errors.Is(err, storage.ErrTooOldSample) ||
		errors.Is(err, storage.ErrDuplicateSampleForTimestamp)
}

// cleanupStaleSeries writes staleness markers for the series of rules that a reload
// removed.
func (g *Group) cleanupStaleSeries(ctx context.Context, env *Env, ts time.Time) {
	if len(g.staleSeries) == 0 || env.Appendable == nil {
		return
	}
	app := env.Appendable.Appender(ctx)
	app.SetOptions(&storage.AppendOptions{DiscardOutOfOrder: true})
	staleT := timestamp.FromTime(ts.Add(-g.queryOffset))
	for _, s := range g.staleSeries {
		_, _ = app.Append(0, s, staleT, math.Float64frombits(value.StaleNaN))
	}
	if err := app.Commit(); err == nil {
		g.staleSeries = nil
	}
}

// copyState takes over the alerts and staleness bookkeeping of the group this one
// replaces on a reload, matching rules by name and labels as Prometheus does.
func (g *Group) copyState(from *Group) {
	from.evalMu.Lock()
	defer from.evalMu.Unlock()
	g.statusMu.Lock()
	from.statusMu.Lock()
	g.lastEvaluation, g.evaluationTime, g.lastSlot = from.lastEvaluation, from.evaluationTime, from.lastSlot
	from.statusMu.Unlock()
	g.statusMu.Unlock()

	byKey := map[string][]int{}
	for i, r := range from.rules {
		k := r.Name() + r.Labels().String()
		byKey[k] = append(byKey[k], i)
	}
	for i, r := range g.rules {
		k := r.Name() + r.Labels().String()
		idx := byKey[k]
		if len(idx) == 0 {
			continue
		}
		fi := idx[0]
		byKey[k] = idx[1:]
		g.seriesInPreviousEval[i] = from.seriesInPreviousEval[fi]
		ar, ok := r.(*AlertingRule)
		if !ok {
			continue
		}
		if far, ok := from.rules[fi].(*AlertingRule); ok {
			ar.restore(far.snapshot())
		}
	}
	g.staleSeries = append(g.staleSeries, from.staleSeries...)
	for _, idx := range byKey {
		for _, fi := range idx {
			for _, s := range from.seriesInPreviousEval[fi] {
				g.staleSeries = append(g.staleSeries, s)
			}
		}
	}
}

// readSet is what metric names a group's expressions read.
type readSet struct {
	// names are the metric names selected by equality.
	names map[string]struct{}
	// matchers are name matchers other than equality (regular expressions).
	matchers []*labels.Matcher
	// any is set when a selector has no name matcher at all: every arrival counts.
	any bool
}

func (rs *readSet) add(expr parser.Expr) {
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		found := false
		for _, m := range vs.LabelMatchers {
			if m.Name != model.MetricNameLabel {
				continue
			}
			found = true
			if m.Type == labels.MatchEqual {
				rs.names[m.Value] = struct{}{}
			} else {
				rs.matchers = append(rs.matchers, m)
			}
		}
		if !found {
			rs.any = true
		}
		return nil
	})
}

func (rs *readSet) matches(name string) bool {
	if rs.any {
		return true
	}
	if _, ok := rs.names[name]; ok {
		return true
	}
	for _, m := range rs.matchers {
		if m.Matches(name) {
			return true
		}
	}
	return false
}
