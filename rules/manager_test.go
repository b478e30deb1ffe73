package rules

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/vigilhq/vigil/alerting"
)

func newTestManager(t *testing.T, st *testStore, o Options) *Manager {
	t.Helper()
	o.Queryable, o.Engine, o.Appendable = st.db, st.engine, st.db
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}
	m, err := NewManager(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	return m
}

func counterValue(set *metrics.Set, name string) uint64 {
	return set.GetOrCreateCounter(name).Get()
}

func firing(as []alerting.Alert, name string) []alerting.Alert {
	var out []alerting.Alert
	for _, a := range as {
		if a.Labels.Get(labels.AlertName) == name && a.EndsAt.IsZero() {
			out = append(out, a)
		}
	}
	return out
}

func TestManagerEvaluatesOnInterval(t *testing.T) {
	st := newTestStore(t)
	dir := t.TempDir()
	writeFile(t, dir, "fast.yml", `
groups:
  - name: fast
    interval: 1s
    rules:
      - record: vigil_test:value:max
        expr: max(vigil_test_value)
      - alert: ValueHigh
        expr: vigil_test:value:max > 10
        labels: {severity: page}
        annotations: {summary: "value is {{ $value }}"}
`)
	n := newNotifications()
	set := metrics.NewSet()
	m := newTestManager(t, st, Options{Notify: n.notify, Metrics: set, ExternalURL: "http://vigil.example:9201",
		ExternalLabels: labels.FromStrings("cluster", "eu1")})
	if err := m.Update([]string{dir + "/*.yml"}); err != nil {
		t.Fatal(err)
	}
	st.add(t, time.Now(), 20, "__name__", "vigil_test_value", "job", "api")
	m.Start(context.Background())
	waitFor(t, "ValueHigh to fire", func() bool { return len(firing(n.all(), "ValueHigh")) > 0 })

	a := firing(n.all(), "ValueHigh")[0]
	if got := a.Labels.String(); got != `{alertname="ValueHigh", cluster="eu1", severity="page"}` {
		t.Errorf("labels %s", got)
	}
	if got := a.Annotations.Get("summary"); got != "value is 20" {
		t.Errorf("summary %q", got)
	}
	if a.StartsAt.IsZero() || !strings.HasPrefix(a.GeneratorURL, "http://vigil.example:9201/graph?g0.expr=") {
		t.Errorf("StartsAt %v, GeneratorURL %q", a.StartsAt, a.GeneratorURL)
	}
	if v := st.query(t, "vigil_test:value:max", time.Now()); len(v) != 1 || v[0].F != 20 {
		t.Errorf("recorded series: %v", v)
	}
	if counterValue(set, "vigil_rule_evaluations_total") < 2 {
		t.Errorf("vigil_rule_evaluations_total = %d", counterValue(set, "vigil_rule_evaluations_total"))
	}
	alerts := m.AlertsAPI().Alerts
	if len(alerts) != 1 || alerts[0].State != "firing" || alerts[0].Value != "2e+01" {
		b, _ := json.Marshal(alerts)
		t.Errorf("alerts API: %s", b)
	}
}

func TestManagerReloadKeepsOldRulesOnError(t *testing.T) {
	st := newTestStore(t)
	dir := t.TempDir()
	good := `
groups:
  - name: g
    rules:
      - alert: A
        expr: vector(1)
`
	f := writeFile(t, dir, "r.yml", good)
	set := metrics.NewSet()
	m := newTestManager(t, st, Options{Metrics: set})
	if err := m.Update([]string{f}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "r.yml", "groups:\n  - name: g\n    rules:\n      - alert: B\n        expr: sum(\n")
	err := m.Update([]string{f})
	if err == nil || !strings.Contains(err.Error(), "r.yml") {
		t.Fatalf("Update of a broken file: %v", err)
	}
	if gs := m.Groups(); len(gs) != 1 || gs[0].Rules()[0].Name() != "A" {
		t.Fatalf("old rules not kept: %v", gs)
	}
	if _, lerr := m.LastReload(); lerr == nil {
		t.Error("LastReload reports no error")
	}
	if got := counterValue(set, `vigil_rule_reloads_total{result="failure"}`); got != 1 {
		t.Errorf("failure count %d", got)
	}
	writeFile(t, dir, "r.yml", strings.Replace(good, "alert: A", "alert: C", 1))
	if err := m.Update([]string{f}); err != nil {
		t.Fatal(err)
	}
	if gs := m.Groups(); gs[0].Rules()[0].Name() != "C" {
		t.Errorf("new rules not loaded")
	}
	if _, lerr := m.LastReload(); lerr != nil {
		t.Errorf("LastReload after a good load: %v", lerr)
	}
}

func TestManagerEvaluatesOnArrival(t *testing.T) {
	st := newTestStore(t)
	dir := t.TempDir()
	writeFile(t, dir, "slow.yml", `
groups:
  - name: slow
    interval: 1h
    rules:
      - alert: ValueHigh
        expr: vigil_test_value > 10
  - name: unrelated
    interval: 1h
    rules:
      - alert: Other
        expr: other_metric > 0
`)
	n := newNotifications()
	set := metrics.NewSet()
	m := newTestManager(t, st, Options{Notify: n.notify, Metrics: set, OnArrival: true, OnArrivalMinInterval: time.Hour})
	if err := m.Update([]string{dir + "/*.yml"}); err != nil {
		t.Fatal(err)
	}
	m.Start(context.Background())
	st.add(t, time.Now(), 20, "__name__", "vigil_test_value")
	m.Arrived([]string{"vigil_test_value"})
	waitFor(t, "ValueHigh to fire on arrival", func() bool { return len(firing(n.all(), "ValueHigh")) == 1 })
	// More arrivals within the minimum interval are coalesced into one pending
	// evaluation (an hour away here).
	for range 100 {
		m.Arrived([]string{"vigil_test_value", "unrelated_metric"})
	}
	time.Sleep(50 * time.Millisecond)
	if got := counterValue(set, "vigil_rule_group_arrival_evaluations_total"); got != 1 {
		t.Errorf("arrival evaluations = %d, want 1", got)
	}
	if len(m.AlertsAPI().Alerts) != 1 {
		t.Errorf("alerts: %+v", m.AlertsAPI().Alerts)
	}
}

// TestArrivalMatchesIntervalOnly evaluates one group at its slots only and a twin at
// its slots plus every 10s in between (as arrivals would): the ALERTS and
// ALERTS_FOR_STATE series at slot times are the same, the twin fires earlier, and it
// resolves between slots: at once when the series recovers, firing again when a dip
// between slots ends (which the slot-only group never sees), and never while
// keep_firing_for holds the alert.
func TestArrivalMatchesIntervalOnly(t *testing.T) {
	st := newTestStore(t)
	f := writeFile(t, t.TempDir(), "r.yml", `
groups:
  - name: g
    rules:
      - alert: High
        expr: vigil_test_value > 10
        for: 2m
      - alert: HighNow
        expr: vigil_test_value > 10
      - alert: HighKept
        expr: vigil_test_value > 10
        keep_firing_for: 3m
`)
	load := func() *Group {
		gs, errs := LoadFiles([]string{f}, LoadOptions{})
		if errs != nil {
			t.Fatal(errs)
		}
		return gs[0]
	}
	slotOnly, withArrivals := load(), load()
	base := slotOnly.slotAtOrAfter(time.Unix(1_700_000_000, 0))
	for i := range 13 * 6 {
		ts := base.Add(time.Duration(i) * 10 * time.Second)
		v := 0.0
		// High from 2m30s to 8m20s but for a dip at 5m20s, and a blip at 30s-40s.
		if i >= 15 && i < 50 && i != 32 || i == 3 || i == 4 {
			v = 20
		}
		st.add(t, ts, v, "__name__", "vigil_test_value")
	}
	var c1, c2 captureAppendable
	env := func(c *captureAppendable) *Env {
		return &Env{Query: queryFunc(st), Appendable: c, ResendDelay: time.Minute}
	}
	e1, e2 := env(&c1), env(&c2)
	// sent records the twin's notifications: "<rule> fire|resolve <offset from base>".
	var sent []string
	var now time.Time
	e2.Notify = func(_ context.Context, _ *Group, r *AlertingRule, as []Alert) {
		for _, a := range as {
			what := "fire"
			if !a.ResolvedAt.IsZero() {
				what = "resolve"
				if !a.ResolvedAt.Equal(now) {
					continue // a re-send
				}
			} else if !a.LastSentAt.Equal(now) || a.LastSentAt.Sub(a.FiredAt) >= time.Minute {
				continue // a re-send
			}
			sent = append(sent, fmt.Sprintf("%s %s %s", r.Name(), what, now.Sub(base)))
		}
	}
	var firedSlot, firedArrival time.Time
	for s := range 12 {
		ts := base.Add(time.Duration(s) * time.Minute)
		slotOnly.Eval(context.Background(), e1, ts)
		now = ts
		withArrivals.Eval(context.Background(), e2, ts)
		for k := 1; k < 6; k++ {
			now = ts.Add(time.Duration(k) * 10 * time.Second)
			withArrivals.eval(context.Background(), e2, modeArrival, ts.Add(time.Duration(k)*10*time.Second))
			if firedArrival.IsZero() && withArrivals.Rules()[0].(*AlertingRule).State() == StateFiring {
				firedArrival = ts.Add(time.Duration(k) * 10 * time.Second)
			}
		}
		if firedSlot.IsZero() && slotOnly.Rules()[0].(*AlertingRule).State() == StateFiring {
			firedSlot = ts
		}
	}
	for _, name := range []string{"ALERTS", "ALERTS_FOR_STATE"} {
		a, b := c1.byName(name), c2.byName(name)
		if len(a) == 0 || len(a) != len(b) {
			t.Fatalf("%s: %d samples slot-only, %d with arrivals", name, len(a), len(b))
		}
		for i := range a {
			if !labels.Equal(a[i].Labels, b[i].Labels) || a[i].T != b[i].T || math.Float64bits(a[i].V) != math.Float64bits(b[i].V) {
				t.Errorf("%s sample %d: slot-only %v, with arrivals %v", name, i, a[i], b[i])
			}
		}
	}
	if firedSlot.IsZero() || firedArrival.IsZero() || !firedArrival.Before(firedSlot) {
		t.Errorf("fired at %v slot-only, %v with arrivals: want earlier with arrivals", firedSlot, firedArrival)
	}
	// The blip at 30s-40s fires HighNow and HighKept on arrival; the slot-only group
	// never sees it, so both resolve at 50s (keep_firing_for holds only alerts a
	// slot has seen). High (for: 2m) is active from the 3m slot and fires on the
	// first arrival that previews the 5m slot. The dip at 5m20s resolves High and
	// HighNow at once, and its end at 5m30s fires them again (the slot-only group
	// keeps them firing through it); keep_firing_for holds HighKept. The end at
	// 8m20s resolves High and HighNow at once; HighKept is held from the 9m slot
	// for 3m and resolves on the first arrival that previews the 12m slot.
	want := []string{
		"HighNow fire 30s", "HighKept fire 30s",
		"HighNow resolve 50s", "HighKept resolve 50s",
		"HighNow fire 2m30s", "HighKept fire 2m30s",
		"High fire 4m10s",
		"High resolve 5m20s", "HighNow resolve 5m20s",
		"High fire 5m30s", "HighNow fire 5m30s",
		"High resolve 8m20s", "HighNow resolve 8m20s",
		"HighKept resolve 11m10s",
	}
	if fmt.Sprint(sent) != fmt.Sprint(want) {
		t.Errorf("notifications with arrivals:\n got %q\nwant %q", sent, want)
	}
}

// TestRuleErrorsReportedPerRule checks that a PromQL error, a template error and a
// duplicate label set each mark their rule unhealthy and the group goes on.
func TestRuleErrorsReportedPerRule(t *testing.T) {
	st := newTestStore(t)
	ts := time.Unix(1_700_000_000, 0)
	st.add(t, ts, 0, "__name__", "up", "job", "a", "instance", "x")
	st.add(t, ts, 0, "__name__", "up", "job", "a", "instance", "y")
	f := writeFile(t, t.TempDir(), "r.yml", `
groups:
  - name: g
    rules:
      - alert: QueryError
        expr: up + on() up
      - alert: TemplateError
        expr: up == 0
        annotations:
          summary: '{{ $labels.job | humanizeDuration }}'
      - alert: Duplicates
        expr: up == 0
        labels:
          instance: fixed
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: Fine
        expr: job:up:sum == 0
`)
	gs, errs := LoadFiles([]string{f}, LoadOptions{})
	if errs != nil {
		t.Fatal(errs)
	}
	set := metrics.NewSet()
	m := newTestManager(t, st, Options{Metrics: set})
	m.groups = gs
	gs[0].Eval(context.Background(), m.env, ts)
	want := map[string]string{
		"QueryError":    "many-to-many matching not allowed",
		"TemplateError": "expand template",
		"Duplicates":    "same labelset",
		"job:up:sum":    "",
		"Fine":          "",
	}
	for _, r := range gs[0].Rules() {
		s := r.Status()
		w := want[r.Name()]
		if w == "" {
			if s.Health != HealthGood || s.LastError != nil {
				t.Errorf("%s: health %s, error %v", r.Name(), s.Health, s.LastError)
			}
			continue
		}
		if s.Health != HealthBad || s.LastError == nil || !strings.Contains(s.LastError.Error(), w) {
			t.Errorf("%s: health %s, error %v, want one containing %q", r.Name(), s.Health, s.LastError, w)
		}
	}
	if fine := gs[0].Rules()[4].(*AlertingRule); fine.State() != StateFiring {
		t.Errorf("the rule after the failing ones did not fire: %v", fine.State())
	}
	// The template error leaves the alert in place, with the error text.
	tmpl := gs[0].Rules()[1].(*AlertingRule).ActiveAlerts()
	if len(tmpl) != 2 || !strings.HasPrefix(tmpl[0].Annotations.Get("summary"), "<error expanding template") {
		t.Errorf("template error alerts: %+v", tmpl)
	}
	if counterValue(set, "vigil_rule_evaluation_failures_total") != 2 {
		t.Errorf("failures = %d, want 2 (query and duplicates)", counterValue(set, "vigil_rule_evaluation_failures_total"))
	}

	b, err := json.Marshal(m.RulesAPI(RulesFilter{}))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Name           string  `json:"name"`
			File           string  `json:"file"`
			Interval       float64 `json:"interval"`
			EvaluationTime float64 `json:"evaluationTime"`
			LastEvaluation string  `json:"lastEvaluation"`
			Rules          []map[string]any
		}
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Groups) != 1 || doc.Groups[0].Interval != 60 || len(doc.Groups[0].Rules) != 5 {
		t.Fatalf("rules API: %s", b)
	}
	for _, r := range doc.Groups[0].Rules {
		for _, k := range []string{"name", "query", "health", "evaluationTime", "lastEvaluation", "type", "labels"} {
			if _, ok := r[k]; !ok {
				t.Errorf("rule %v lacks %q", r["name"], k)
			}
		}
		if r["type"] == "alerting" {
			for _, k := range []string{"state", "duration", "keepFiringFor", "annotations", "alerts"} {
				if _, ok := r[k]; !ok {
					t.Errorf("alerting rule %v lacks %q", r["name"], k)
				}
			}
		}
		if r["name"] == "QueryError" && (r["health"] != "err" || !strings.Contains(r["lastError"].(string), "many-to-many")) {
			t.Errorf("QueryError in API: %v", r)
		}
		if r["name"] == "Fine" {
			alerts := r["alerts"].([]any)
			a := alerts[0].(map[string]any)
			if len(alerts) != 1 || a["state"] != "firing" || a["activeAt"] == nil || a["value"] != "0e+00" {
				t.Errorf("Fine alerts in API: %v", alerts)
			}
		}
	}
	only := m.RulesAPI(RulesFilter{Type: "record"})
	if len(only.Groups) != 1 || len(only.Groups[0].Rules) != 1 {
		t.Errorf("type=record filter: %+v", only.Groups)
	}
}

// TestRecordedResultsTriggerReaders checks that a group reading another group's
// recorded metric is evaluated on the arrival of that result.
func TestRecordedResultsTriggerReaders(t *testing.T) {
	st := newTestStore(t)
	dir := t.TempDir()
	writeFile(t, dir, "r.yml", `
groups:
  - name: recorder
    interval: 1s
    rules:
      - record: vigil_test:value:sum
        expr: sum(vigil_test_value)
  - name: reader
    interval: 1h
    rules:
      - alert: SumHigh
        expr: vigil_test:value:sum > 10
`)
	n := newNotifications()
	m := newTestManager(t, st, Options{Notify: n.notify, OnArrival: true})
	if err := m.Update([]string{dir + "/r.yml"}); err != nil {
		t.Fatal(err)
	}
	st.add(t, time.Now(), 20, "__name__", "vigil_test_value")
	m.Start(context.Background())
	waitFor(t, "SumHigh to fire after the recorder's evaluation", func() bool { return len(firing(n.all(), "SumHigh")) == 1 })
}

// TestReloadKeepsAlertState checks that a reload keeps the alerts of rules that stay
// (matched by name and labels) and drops those of removed rules.
func TestReloadKeepsAlertState(t *testing.T) {
	st := newTestStore(t)
	dir := t.TempDir()
	ts := time.Unix(1_700_000_000, 0)
	st.add(t, ts, 20, "__name__", "vigil_test_value")
	rulesV1 := `
groups:
  - name: g
    rules:
      - alert: Kept
        expr: vigil_test_value > 10
        for: 10m
      - alert: Removed
        expr: vigil_test_value > 10
        for: 10m
`
	f := writeFile(t, dir, "r.yml", rulesV1)
	m := newTestManager(t, st, Options{})
	if err := m.Update([]string{f}); err != nil {
		t.Fatal(err)
	}
	m.Groups()[0].Eval(context.Background(), m.env, ts)
	writeFile(t, dir, "r.yml", strings.Replace(rulesV1, "      - alert: Removed\n        expr: vigil_test_value > 10\n        for: 10m\n", "", 1)+
		"        annotations:\n          summary: changed\n")
	if err := m.Update([]string{f}); err != nil {
		t.Fatal(err)
	}
	rs := m.Groups()[0].Rules()
	if len(rs) != 1 {
		t.Fatalf("rules after reload: %d", len(rs))
	}
	as := rs[0].(*AlertingRule).ActiveAlerts()
	if len(as) != 1 || as[0].State != StatePending || !as[0].ActiveAt.Equal(ts) {
		t.Errorf("Kept after reload: %+v", as)
	}
}

func TestArrivalIndex(t *testing.T) {
	f := writeFile(t, t.TempDir(), "r.yml", `
groups:
  - name: exact
    rules:
      - record: a:sum
        expr: sum(metric_a) + sum(metric_b offset 5m)
  - name: regex
    rules:
      - alert: R
        expr: '{__name__=~"metric_.*"} > 0'
  - name: nameless
    rules:
      - alert: N
        expr: '{job="x"} > 0'
  - name: none
    rules:
      - alert: V
        expr: vector(1)
`)
	gs, errs := LoadFiles([]string{f}, LoadOptions{})
	if errs != nil {
		t.Fatal(errs)
	}
	m := &Manager{groups: gs}
	m.indexLocked()
	idx := m.index.Load()
	check := func(name string, want ...string) {
		t.Helper()
		var got []string
		for _, g := range idx.byName[name] {
			got = append(got, g.Name())
		}
		for range 2 { // the second time from the cache
			var w []string
			for _, g := range idx.wildcardFor(name) {
				w = append(w, g.Name())
			}
			if strings.Join(append(append([]string(nil), got...), w...), ",") != strings.Join(want, ",") {
				t.Errorf("%s: groups %v then %v, want %v", name, got, w, want)
			}
		}
	}
	check("metric_a", "exact", "regex", "nameless")
	check("metric_b", "exact", "regex", "nameless")
	check("other", "nameless")
}
