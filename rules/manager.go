package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	promrules "github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/strutil"

	"github.com/vigilhq/vigil/alerting"
	"github.com/vigilhq/vigil/logcore"
)

// Options configure a Manager.
type Options struct {
	// Queryable and Engine answer the rules' queries (the query store).
	Queryable storage.Queryable
	Engine    *promql.Engine
	// Appendable receives recording rule results, ALERTS and ALERTS_FOR_STATE.
	Appendable storage.Appendable
	// Log holds the compacted alert_state topic that makes alert state survive a
	// restart (also kill -9). Nil keeps alert state in memory only.
	Log logcore.Log
	// Notify receives the alerts due for sending: new firing ones, resolved ones, and
	// re-sends every ResendDelay. It is called from the group's goroutine after the
	// state change is durable; it should hand the alerts over and return quickly.
	Notify func(ctx context.Context, alerts []alerting.Alert)
	// Interval is the evaluation interval of groups that set none; zero means 1m.
	// (Interval, ExternalLabels, OnArrival and OnArrivalMinInterval are the initial
	// Settings.)
	Interval time.Duration
	// ExternalLabels are added to sent alerts and handed to templates.
	ExternalLabels labels.Labels
	// ExternalURL is Vigil's URL for templates ($externalURL) and generator links.
	ExternalURL string
	// ResendDelay is how often a firing alert is re-sent; zero means 1m.
	ResendDelay time.Duration
	// OnArrival enables evaluation on arrival (see Manager.Arrived).
	OnArrival bool
	// OnArrivalMinInterval is the least time between two evaluations on arrival of a
	// group; zero means 20ms.
	OnArrivalMinInterval time.Duration
	// Parser parses rule expressions; nil means the default PromQL parser.
	Parser parser.Parser
	// Metrics receives the manager's metrics; nil makes a private set.
	Metrics *metrics.Set
	// Logger receives reload results and evaluation errors; nil discards.
	Logger *slog.Logger
}

// Settings are the Options a running Manager can change (see SetSettings).
type Settings struct {
	// Interval is the evaluation interval of groups that set none; zero means 1m.
	Interval time.Duration
	// ExternalLabels are added to sent alerts and handed to templates.
	ExternalLabels labels.Labels
	// OnArrival enables evaluation on arrival.
	OnArrival bool
	// OnArrivalMinInterval is the least time between two evaluations on arrival of a
	// group; zero means 20ms.
	OnArrivalMinInterval time.Duration
}

func (s Settings) withDefaults() Settings {
	if s.Interval <= 0 {
		s.Interval = time.Minute
	}
	if s.OnArrivalMinInterval <= 0 {
		s.OnArrivalMinInterval = 20 * time.Millisecond
	}
	return s
}

// Manager loads rule files, evaluates each group on its interval (and on arrival of
// the metrics it reads), keeps alert state in the alert_state topic, and hands alerts
// to Notify. Its methods are safe for concurrent use.
type Manager struct {
	opts     Options
	settings atomic.Pointer[Settings]
	logger   *slog.Logger
	env      *Env
	state    *stateStore

	mu        sync.RWMutex
	groups    []*Group
	loops     map[*Group]*groupLoop
	index     atomic.Pointer[arrivalIndex]
	files     []string
	ctx       context.Context
	running   bool
	lastErr   error
	lastLoad  time.Time
	loadCount int

	evals         *metrics.Counter
	evalFailures  *metrics.Counter
	arrivalEvals  *metrics.Counter
	missed        *metrics.Counter
	reloads       *metrics.Counter
	reloadFails   *metrics.Counter
	persistFails  *metrics.Counter
	notified      *metrics.Counter
	restoreErrors *metrics.Counter
}

// arrivalIndex maps metric names to the groups that read them, for Arrived. It is
// replaced whole on every load and never modified.
type arrivalIndex struct {
	byName map[string][]*Group
	// wildcard are the groups with a regular expression on, or no, metric name.
	wildcard []*Group
	// cache maps a metric name to the wildcard groups reading it; cached counts entries.
	cache  sync.Map
	cached atomic.Int64
}

// groupLoop is the goroutine evaluating one group.
type groupLoop struct {
	stop chan struct{}
	done chan struct{}
}

// NewManager returns a Manager with no rules; it reads the alert state topic, so that
// groups loaded later start from their persisted state. Call Update to load rule
// files and Start to begin evaluating.
func NewManager(o Options) (*Manager, error) {
	if o.Queryable == nil || o.Engine == nil {
		return nil, errors.New("rules: Options.Queryable and Options.Engine are required")
	}
	if o.ResendDelay <= 0 {
		o.ResendDelay = time.Minute
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	set := o.Metrics
	m := &Manager{
		opts:          o,
		logger:        o.Logger,
		loops:         map[*Group]*groupLoop{},
		evals:         set.GetOrCreateCounter(`vigil_rule_evaluations_total`),
		evalFailures:  set.GetOrCreateCounter(`vigil_rule_evaluation_failures_total`),
		arrivalEvals:  set.GetOrCreateCounter(`vigil_rule_group_arrival_evaluations_total`),
		missed:        set.GetOrCreateCounter(`vigil_rule_group_iterations_missed_total`),
		reloads:       set.GetOrCreateCounter(`vigil_rule_reloads_total{result="success"}`),
		reloadFails:   set.GetOrCreateCounter(`vigil_rule_reloads_total{result="failure"}`),
		persistFails:  set.GetOrCreateCounter(`vigil_rule_alert_state_write_failures_total`),
		notified:      set.GetOrCreateCounter(`vigil_rule_alerts_sent_total`),
		restoreErrors: set.GetOrCreateCounter(`vigil_rule_alert_state_restore_errors_total`),
	}
	m.SetSettings(Settings{Interval: o.Interval, ExternalLabels: o.ExternalLabels, OnArrival: o.OnArrival, OnArrivalMinInterval: o.OnArrivalMinInterval})
	set.GetOrCreateGauge(`vigil_rule_last_reload_success`, func() float64 {
		m.mu.RLock()
		defer m.mu.RUnlock()
		if m.lastErr != nil {
			return 0
		}
		return 1
	})
	set.GetOrCreateGauge(`vigil_rule_groups`, func() float64 {
		m.mu.RLock()
		defer m.mu.RUnlock()
		return float64(len(m.groups))
	})
	if o.Log != nil {
		st, bad, err := openStateStore(o.Log)
		if err != nil {
			return nil, err
		}
		if bad > 0 {
			m.restoreErrors.Add(bad)
			m.logger.Warn("skipped undecodable alert state records", "count", bad)
		}
		m.state = st
	}
	m.env = &Env{
		Query:       promrules.EngineQueryFunc(o.Engine, o.Queryable),
		Appendable:  o.Appendable,
		ExternalURL: nil,
		ResendDelay: o.ResendDelay,
		Logger:      m.logger,
		OnRuleEval: func(err error) {
			m.evals.Inc()
			if err != nil {
				m.evalFailures.Inc()
			}
		},
		Persist:    m.persist,
		Notify:     m.notify,
		OnRecorded: m.recorded,
	}
	return m, nil
}

// SetSettings replaces the settings from Options that a reload may change: the on
// arrival settings apply at once, the interval and external labels from the next
// Update (which rebuilds the rules).
func (m *Manager) SetSettings(s Settings) {
	s = s.withDefaults()
	m.settings.Store(&s)
}

// Update loads the rule files matched by the globs and replaces the running groups
// with them. Alert state carries over to groups of the same file and name (rules
// matched by name and labels), and groups seen for the first time start from the
// persisted state. If any file fails to load, the old groups keep running, the error
// is returned, logged, counted in vigil_rule_reloads_total{result="failure"} and shown
// by LastReload.
func (m *Manager) Update(globs []string) error {
	files, err := expandGlobs(globs)
	var groups []*Group
	if err == nil {
		var errs []error
		st := m.settings.Load()
		groups, errs = LoadFiles(files, LoadOptions{
			Interval:       st.Interval,
			ExternalLabels: st.ExternalLabels,
			ExternalURL:    m.opts.ExternalURL,
			Parser:         m.opts.Parser,
			Logger:         m.logger,
		})
		err = errors.Join(errs...)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastLoad = time.Now()
	if err != nil {
		m.lastErr = err
		m.reloadFails.Inc()
		m.logger.Error("loading rule files failed; the previous rules stay in force", "err", err)
		return fmt.Errorf("load rule files: %w", err)
	}
	m.lastErr = nil
	m.reloads.Inc()
	m.loadCount++

	old := map[string]*Group{}
	for _, g := range m.groups {
		old[g.Key()] = g
	}
	keep := map[string]struct{}{}
	for _, g := range groups {
		if og, ok := old[g.Key()]; ok {
			m.stopLoopLocked(og)
			g.copyState(og)
			delete(old, g.Key())
		} else if m.state != nil {
			ids := ruleIdentities(g)
			for i, r := range g.rules {
				if ar, ok := r.(*AlertingRule); ok {
					ar.restore(m.state.take(stateKeyPrefix(g.Key(), ids[i])))
				}
			}
		}
		for _, id := range ruleIdentities(g) {
			keep[stateKeyPrefix(g.Key(), id)] = struct{}{}
		}
	}
	for _, og := range old {
		m.stopLoopLocked(og)
		m.markRemovedStale(og)
	}
	if m.state != nil {
		if err := m.state.dropExcept(context.Background(), keep); err != nil {
			m.persistFails.Inc()
			m.logger.Error("drop alert state of removed rules", "err", err)
		}
	}
	m.groups = groups
	m.files = files
	m.indexLocked()
	if m.running {
		for _, g := range groups {
			m.startLoopLocked(g)
		}
	}
	m.logger.Info("rule files loaded", "files", len(files), "groups", len(groups))
	return nil
}

// expandGlobs returns the files matched by the globs, sorted, without duplicates. A
// glob that matches nothing is not an error (as in Prometheus).
func expandGlobs(globs []string) ([]string, error) {
	seen := map[string]struct{}{}
	var files []string
	for _, pat := range globs {
		fns, err := filepath.Glob(pat)
		if err != nil {
			return nil, fmt.Errorf("rule_files pattern %q: %w", pat, err)
		}
		for _, fn := range fns {
			if _, ok := seen[fn]; !ok {
				seen[fn] = struct{}{}
				files = append(files, fn)
			}
		}
	}
	sort.Strings(files)
	return files, nil
}

// indexLocked rebuilds the metric name index used by Arrived. Must hold m.mu.
func (m *Manager) indexLocked() {
	idx := &arrivalIndex{byName: map[string][]*Group{}}
	for _, g := range m.groups {
		if g.reads.any || len(g.reads.matchers) > 0 {
			idx.wildcard = append(idx.wildcard, g)
			continue
		}
		for n := range g.reads.names {
			idx.byName[n] = append(idx.byName[n], g)
		}
	}
	m.index.Store(idx)
}

// markRemovedStale writes staleness markers for the series a removed group wrote.
func (m *Manager) markRemovedStale(g *Group) {
	if m.opts.Appendable == nil {
		return
	}
	app := m.opts.Appendable.Appender(context.Background())
	ts := timestamp.FromTime(time.Now())
	for _, series := range g.seriesInPreviousEval {
		for _, lset := range series {
			_, _ = app.Append(0, lset, ts, math.Float64frombits(value.StaleNaN))
		}
	}
	if err := app.Commit(); err != nil {
		m.logger.Warn("staleness markers for removed group", "group", g.Key(), "err", err)
	}
}

// Start begins evaluating every group on its interval; evaluation stops when ctx
// ends or Stop is called.
func (m *Manager) Start(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.running {
		return
	}
	m.ctx = ctx
	m.running = true
	for _, g := range m.groups {
		m.startLoopLocked(g)
	}
}

// Stop stops every group's evaluation and waits for the evaluations under way.
func (m *Manager) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, g := range m.groups {
		m.stopLoopLocked(g)
	}
	m.running = false
}

func (m *Manager) startLoopLocked(g *Group) {
	l := &groupLoop{stop: make(chan struct{}), done: make(chan struct{})}
	m.loops[g] = l
	go m.run(m.ctx, g, l)
}

func (m *Manager) stopLoopLocked(g *Group) {
	l, ok := m.loops[g]
	if !ok {
		return
	}
	close(l.stop)
	<-l.done
	delete(m.loops, g)
}

// run is a group's loop: an evaluation at every slot of its interval (missed slots
// skipped and counted), and between slots, evaluations on arrival, coalesced to at
// most one per OnArrivalMinInterval.
func (m *Manager) run(ctx context.Context, g *Group, l *groupLoop) {
	defer close(l.done)
	next := g.slotAtOrAfter(time.Now())
	if _, _, last := g.lastTimes(); !last.IsZero() && !last.Before(next) {
		next = last.Add(g.interval)
	}
	slot := time.NewTimer(time.Until(next))
	defer slot.Stop()
	coalesce := time.NewTimer(time.Hour)
	coalesce.Stop()
	defer coalesce.Stop()
	var lastArrival time.Time
	coalescing := false
	arrivalEval := func() {
		lastArrival = time.Now()
		m.arrivalEvals.Inc()
		g.eval(ctx, m.env, modeArrival, lastArrival)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.stop:
			return
		case <-slot.C:
			ts := g.slotAtOrBefore(time.Now())
			if ts.Before(next) {
				// Woken early (clock change): wait for the slot.
				slot.Reset(time.Until(next))
				continue
			}
			if n := int(ts.Sub(next) / g.interval); n > 0 {
				m.missed.Add(n)
			}
			g.eval(ctx, m.env, modeSlot, ts)
			next = ts.Add(g.interval)
			slot.Reset(time.Until(next))
		case <-g.sched.wake:
			st := m.settings.Load()
			if !st.OnArrival || coalescing {
				continue
			}
			now := time.Now()
			if !now.Before(next) {
				continue // the slot evaluation is due and will see the samples
			}
			if wait := st.OnArrivalMinInterval - now.Sub(lastArrival); wait > 0 {
				coalescing = true
				coalesce.Reset(wait)
				continue
			}
			arrivalEval()
		case <-coalesce.C:
			coalescing = false
			if time.Now().Before(next) {
				arrivalEval()
			}
		}
	}
}

// Arrived tells the manager that new samples of these metrics are queryable (the
// store's arrival hook, and the rollup engine when a window closes). Every group
// reading one of them is evaluated again at once, on arrival; see evalMode for what
// such an evaluation may change. It never blocks (not even during a reload) and takes
// no lock: arrivals while a group is busy or coalescing are folded into one evaluation.
func (m *Manager) Arrived(metricNames []string) { m.arrived(nil, metricNames) }

// arrived pokes the groups reading the metrics, except skip.
func (m *Manager) arrived(skip *Group, metricNames []string) {
	if !m.settings.Load().OnArrival {
		return
	}
	idx := m.index.Load()
	if idx == nil {
		return
	}
	for _, name := range metricNames {
		for _, g := range idx.byName[name] {
			if g != skip {
				g.sched.poke()
			}
		}
	}
	if len(idx.wildcard) == 0 {
		return
	}
	for _, name := range metricNames {
		for _, g := range idx.wildcardFor(name) {
			if g != skip {
				g.sched.poke()
			}
		}
	}
}

// maxWildcardCache bounds the per-name cache of wildcard matches.
const maxWildcardCache = 100_000

// wildcardFor returns the wildcard groups that read metric name, caching the answer
// (regular expressions are costly on every arrival).
func (idx *arrivalIndex) wildcardFor(name string) []*Group {
	if v, ok := idx.cache.Load(name); ok {
		return v.([]*Group)
	}
	var gs []*Group
	for _, g := range idx.wildcard {
		if g.reads.matches(name) {
			gs = append(gs, g)
		}
	}
	if idx.cached.Add(1) > maxWildcardCache {
		idx.cache.Clear()
		idx.cached.Store(0)
	}
	idx.cache.Store(name, gs)
	return gs
}

// recorded is the arrival of recording rule results written by group from: the other
// groups reading them are evaluated on arrival.
func (m *Manager) recorded(from *Group, metricNames []string) {
	m.arrived(from, metricNames)
}

// Groups returns the loaded groups in file and group order.
func (m *Manager) Groups() []*Group {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]*Group(nil), m.groups...)
}

// LastReload returns when the rule files were last loaded and that load's error
// (nil if it succeeded).
func (m *Manager) LastReload() (time.Time, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.lastLoad, m.lastErr
}

// persist writes a rule's alert state changes to the alert_state topic.
func (m *Manager) persist(ctx context.Context, g *Group, r *AlertingRule, changed []Alert, deleted []labels.Labels) error {
	if m.state == nil {
		return nil
	}
	ids := ruleIdentities(g)
	prefix := ""
	for i, rr := range g.rules {
		if rr == Rule(r) {
			prefix = stateKeyPrefix(g.Key(), ids[i])
			break
		}
	}
	if err := m.state.write(ctx, prefix, changed, deleted); err != nil {
		m.persistFails.Inc()
		return err
	}
	return nil
}

// notify converts alerts to the alerting contract and hands them to Options.Notify.
func (m *Manager) notify(ctx context.Context, g *Group, r *AlertingRule, alerts []Alert) {
	if m.opts.Notify == nil || len(alerts) == 0 {
		return
	}
	out := make([]alerting.Alert, 0, len(alerts))
	gen := strings.TrimRight(m.opts.ExternalURL, "/") + strutil.TableLinkForExpression(r.exprString)
	for _, a := range alerts {
		lb := labels.NewBuilder(a.Labels)
		m.settings.Load().ExternalLabels.Range(func(l labels.Label) {
			if a.Labels.Get(l.Name) == "" {
				lb.Set(l.Name, l.Value)
			}
		})
		out = append(out, alerting.Alert{
			Labels:       lb.Labels(),
			Annotations:  a.Annotations,
			StartsAt:     a.FiredAt,
			EndsAt:       a.ResolvedAt,
			GeneratorURL: gen,
			ValidUntil:   a.ValidUntil,
		})
	}
	m.notified.Add(len(out))
	m.opts.Notify(ctx, out)
}

// Files returns the rule files of the last successful load.
func (m *Manager) Files() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]string(nil), m.files...)
}
