package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	promrules "github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/template"
)

// AlertState is the state of one alert instance, as in Prometheus.
type AlertState int

const (
	// StateInactive is the state of an alert that is neither pending nor firing: a
	// resolved alert kept for resolvedRetention so that its resolve is re-sent.
	StateInactive AlertState = iota + 1
	// StatePending is the state of an alert whose condition has held for less than
	// the rule's for duration.
	StatePending
	// StateFiring is the state of an alert whose condition has held for at least the
	// rule's for duration (or that is kept firing by keep_firing_for).
	StateFiring
)

// String returns the state's name as the Prometheus API spells it.
func (s AlertState) String() string {
	switch s {
	case StateInactive:
		return "inactive"
	case StatePending:
		return "pending"
	case StateFiring:
		return "firing"
	}
	return "unknown"
}

// resolvedRetention is how long a resolved alert is kept, and its resolve re-sent,
// after it resolved (Prometheus's value).
const resolvedRetention = 15 * time.Minute

// ErrDuplicateAlertLabelSet is the error of an alerting rule whose result holds two
// samples with the same label set once the rule's labels are applied.
var ErrDuplicateAlertLabelSet = errors.New("vector contains metrics with the same labelset after applying alert labels")

// Alert is one instance of an alerting rule: one label set of its expression's
// result. The times are evaluation timestamps; a zero time means "not yet" / "no".
type Alert struct {
	State       AlertState
	Labels      labels.Labels
	Annotations labels.Labels
	// Value is the expression's value at the last evaluation that returned this alert.
	Value           float64
	ActiveAt        time.Time
	FiredAt         time.Time
	ResolvedAt      time.Time
	LastSentAt      time.Time
	ValidUntil      time.Time
	KeepFiringSince time.Time

	// dirty marks a change of a durable field (state or one of the times but
	// LastSentAt/ValidUntil) since the state was last persisted.
	dirty bool
	// arrivalOnly marks an alert that an evaluation on arrival made active and no
	// slot evaluation has seen yet: if the next slot does not see it either, it
	// resolves there without keep_firing_for, as interval-only evaluation never had it.
	arrivalOnly bool
	// arrivalResolved marks a firing alert that an evaluation on arrival resolved
	// (and sent as resolved) since the last slot. It keeps the ActiveAt and
	// KeepFiringSince of the slot view: if the alert's series is back by the next
	// slot, interval-only evaluation never saw it resolve, so the alert fires again
	// (a new firing for the receivers) with the ActiveAt it had, and ALERTS and
	// ALERTS_FOR_STATE at that slot are those of interval-only evaluation. The next
	// slot evaluation clears it either way.
	arrivalResolved bool
}

// refire makes an alert resolved on arrival (arrivalResolved) fire again at ts: a
// new firing for the receivers (FiredAt ts, sent at once), the slot view's ActiveAt
// and KeepFiringSince unchanged.
func (a *Alert) refire(ts time.Time) {
	a.State = StateFiring
	a.FiredAt = ts
	a.ResolvedAt = time.Time{}
	a.LastSentAt = time.Time{}
	a.arrivalResolved = false
	a.dirty = true
}

func (a *Alert) needsSending(ts time.Time, resendDelay time.Duration) bool {
	if a.State == StatePending {
		return false
	}
	if a.ResolvedAt.After(a.LastSentAt) {
		return true
	}
	return a.LastSentAt.Add(resendDelay).Before(ts)
}

// evalMode says what an evaluation may change.
type evalMode int

const (
	// modeSlot is an evaluation at one of the group's interval slots: exactly
	// Prometheus's semantics, results written to storage.
	modeSlot evalMode = iota
	// modeArrival is an extra evaluation on the arrival of samples. It previews the
	// next slot with the data there is: new pending alerts, pending to firing, new
	// values, and a firing alert whose series is gone (and that keep_firing_for would
	// not hold at the next slot) resolved at once for the receivers (arrivalResolved),
	// firing again if its series comes back before that slot. Pending alerts that
	// are gone and keep_firing_for bookkeeping wait for the next slot, and nothing is
	// written to storage, so the results at slot times are those of interval-only
	// evaluation.
	modeArrival
)

// AlertingRule is an alerting rule and the state of its alerts. Its methods are safe
// for concurrent use; evaluations of one rule are serialized by its group.
type AlertingRule struct {
	name           string
	expr           parser.Expr
	exprString     string
	holdDuration   time.Duration
	keepFiringFor  time.Duration
	labels         labels.Labels
	annotations    labels.Labels
	externalLabels map[string]string
	externalURL    string
	logger         *slog.Logger

	status ruleStatus

	mu     sync.Mutex
	active map[uint64]*Alert
	// deleted holds the label sets of alerts removed from active since the state was
	// last persisted.
	deleted []labels.Labels
}

func newAlertingRule(name string, expr parser.Expr, hold, keepFiringFor time.Duration, lset, annotations labels.Labels, externalLabels labels.Labels, externalURL string, logger *slog.Logger) *AlertingRule {
	return &AlertingRule{
		name:           name,
		expr:           expr,
		exprString:     expr.String(),
		holdDuration:   hold,
		keepFiringFor:  keepFiringFor,
		labels:         lset,
		annotations:    annotations,
		externalLabels: externalLabels.Map(),
		externalURL:    externalURL,
		logger:         logger,
		active:         map[uint64]*Alert{},
	}
}

// Name returns the alert name.
func (r *AlertingRule) Name() string { return r.name }

// Query returns the rule's expression.
func (r *AlertingRule) Query() parser.Expr { return r.expr }

// Labels returns the rule's labels (group labels merged with the rule's own).
func (r *AlertingRule) Labels() labels.Labels { return r.labels }

// Annotations returns the rule's annotation templates.
func (r *AlertingRule) Annotations() labels.Labels { return r.annotations }

// HoldDuration returns the rule's for duration.
func (r *AlertingRule) HoldDuration() time.Duration { return r.holdDuration }

// KeepFiringFor returns the rule's keep_firing_for duration.
func (r *AlertingRule) KeepFiringFor() time.Duration { return r.keepFiringFor }

// Status returns the outcome of the rule's last evaluation.
func (r *AlertingRule) Status() RuleStatus { return r.status.get() }

func (r *AlertingRule) ruleStatus() *ruleStatus { return &r.status }

// State returns the highest state of the rule's alerts: firing over pending over
// inactive; StateInactive also for a rule with no alerts.
func (r *AlertingRule) State() AlertState {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := StateInactive
	for _, a := range r.active {
		if a.State > st {
			st = a.State
		}
	}
	return st
}

// ActiveAlerts returns copies of the pending and firing alerts (not the resolved
// ones), in no particular order.
func (r *AlertingRule) ActiveAlerts() []Alert {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := make([]Alert, 0, len(r.active))
	for _, a := range r.active {
		if a.ResolvedAt.IsZero() {
			res = append(res, *a)
		}
	}
	return res
}

// eval evaluates the rule at ts and updates its alerts. It returns the ALERTS and
// ALERTS_FOR_STATE samples to write (none in modeArrival). A template that fails to
// expand yields Prometheus's "<error expanding template: ...>" text and is returned
// as tmplErr; err is a query error, a duplicate label set or an exceeded limit, in
// which case the alerts are unchanged (or, for the limit, cleared as in Prometheus).
//
// In modeArrival, next is the group's next slot (at or after ts): the evaluation
// previews that slot with the data queryable now, so new alerts are active from next
// and a pending alert fires if it will have been active for its for duration at next.
// An alert therefore fires at the arrival of the sample that makes it fire, yet its
// ActiveAt, and so ALERTS_FOR_STATE and the firing slot, are those of interval-only
// evaluation.
func (r *AlertingRule) eval(ctx context.Context, mode evalMode, queryOffset time.Duration, ts, next time.Time, query promrules.QueryFunc, externalURL *url.URL, limit int) (vec promql.Vector, tmplErr, err error) {
	res, err := query(ctx, r.exprString, ts.Add(-queryOffset))
	if err != nil {
		return nil, nil, err
	}

	defs := "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"
	lb := labels.NewBuilder(labels.EmptyLabels())
	sb := labels.NewScratchBuilder(0)
	alerts := make(map[uint64]*Alert, len(res))
	for _, smpl := range res {
		data := template.AlertTemplateData(smpl.Metric.Map(), r.externalLabels, r.externalURL, smpl)
		expand := func(text string) string {
			if !strings.Contains(text, "{{") {
				return text
			}
			tmpl := template.NewTemplateExpander(ctx, defs+text, "__alert_"+r.name, data,
				model.Time(timestamp.FromTime(ts)), template.QueryFunc(query), externalURL, nil)
			out, err := tmpl.Expand()
			if err != nil {
				out = fmt.Sprintf("<error expanding template: %s>", err)
				if tmplErr == nil {
					tmplErr = fmt.Errorf("expand template: %w", err)
				}
			}
			return out
		}
		lb.Reset(smpl.Metric)
		lb.Del(model.MetricNameLabel)
		r.labels.Range(func(l labels.Label) { lb.Set(l.Name, expand(l.Value)) })
		lb.Set(labels.AlertName, r.name)
		sb.Reset()
		r.annotations.Range(func(a labels.Label) { sb.Add(a.Name, expand(a.Value)) })
		lset := lb.Labels()
		h := lset.Hash()
		if _, dup := alerts[h]; dup {
			return nil, tmplErr, ErrDuplicateAlertLabelSet
		}
		alerts[h] = &Alert{Labels: lset, Annotations: sb.Labels(), ActiveAt: ts, State: StatePending, Value: smpl.F, dirty: true}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if mode == modeArrival {
		return nil, tmplErr, r.advanceLocked(alerts, ts, next, limit)
	}

	for h, a := range alerts {
		if old, ok := r.active[h]; ok && (old.State != StateInactive || old.arrivalResolved) {
			if old.arrivalResolved {
				// Resolved on arrival, but back by this slot: interval-only
				// evaluation kept it firing all along, so it fires again with
				// its ActiveAt.
				old.refire(ts)
			}
			old.Value = a.Value
			old.Annotations = a.Annotations
			old.arrivalOnly = false
			continue
		}
		// New, or resolved and active again: starts afresh as pending.
		r.active[h] = a
	}
	for _, a := range r.active {
		if a.arrivalResolved {
			// Gone at this slot too: resolved as interval-only evaluation resolves
			// it here (ResolvedAt stays the earlier instant it was sent with).
			a.arrivalResolved = false
			a.dirty = true
		}
	}

	numActive := 0
	for h, a := range r.active {
		if _, ok := alerts[h]; !ok {
			keepFiring := false
			if a.State == StateFiring && r.keepFiringFor > 0 && !a.arrivalOnly {
				if a.KeepFiringSince.IsZero() {
					a.KeepFiringSince = ts
					a.dirty = true
				}
				if ts.Sub(a.KeepFiringSince) < r.keepFiringFor {
					keepFiring = true
				}
			}
			if a.State == StatePending || (!a.ResolvedAt.IsZero() && ts.Sub(a.ResolvedAt) > resolvedRetention) {
				delete(r.active, h)
				r.deleted = append(r.deleted, a.Labels)
			}
			if a.State != StateInactive && !keepFiring {
				a.State = StateInactive
				a.ResolvedAt = ts
				a.dirty = true
			}
			if !keepFiring {
				continue
			}
		} else if !a.KeepFiringSince.IsZero() {
			a.KeepFiringSince = time.Time{}
			a.dirty = true
		}
		numActive++
		if a.State == StatePending && ts.Sub(a.ActiveAt) >= r.holdDuration {
			a.State = StateFiring
			a.FiredAt = ts
			a.dirty = true
		}
		if a.State == StateFiring && ts.Sub(a.ActiveAt) < r.holdDuration {
			// The for duration grew on a reload: back to pending.
			a.State = StatePending
			a.FiredAt = time.Time{}
			a.LastSentAt = time.Time{}
			a.KeepFiringSince = time.Time{}
			a.dirty = true
		}
		vec = append(vec, r.sample(a, ts.Add(-queryOffset)), r.forStateSample(a, ts.Add(-queryOffset)))
	}

	if limit > 0 && numActive > limit {
		for _, a := range r.active {
			r.deleted = append(r.deleted, a.Labels)
		}
		r.active = map[uint64]*Alert{}
		return nil, tmplErr, fmt.Errorf("exceeded limit of %d with %d alerts", limit, numActive)
	}
	return vec, tmplErr, nil
}

// advanceLocked applies an arrival evaluation's result at ts, previewing the slot next:
// new alerts become pending from next, pending alerts whose for duration will have
// passed at next fire (FiredAt is ts, when it really fired), values and annotations
// are refreshed, and firing alerts missing from the result resolve at ts unless
// keep_firing_for will still hold them at next (see arrivalResolved); an alert so
// resolved that is back fires again at ts. Pending alerts missing from the result
// stay until the next slot (they were never sent). Must hold r.mu.
func (r *AlertingRule) advanceLocked(alerts map[uint64]*Alert, ts, next time.Time, limit int) error {
	if limit > 0 {
		n := 0
		for _, a := range r.active {
			if a.State != StateInactive {
				n++
			}
		}
		for h := range alerts {
			if old, ok := r.active[h]; !ok || old.State == StateInactive {
				n++
			}
		}
		if n > limit {
			return fmt.Errorf("exceeded limit of %d with %d alerts", limit, n)
		}
	}
	for h, a := range alerts {
		old, ok := r.active[h]
		if ok && old.arrivalResolved {
			// Back before the next slot: the slot view never resolved it.
			old.refire(ts)
			old.Value = a.Value
			old.Annotations = a.Annotations
			continue
		}
		if !ok || old.State == StateInactive {
			a.ActiveAt = next
			a.arrivalOnly = true
			r.active[h] = a
			old = a
		} else {
			old.Value = a.Value
			old.Annotations = a.Annotations
		}
		if old.State == StatePending && next.Sub(old.ActiveAt) >= r.holdDuration {
			old.State = StateFiring
			old.FiredAt = ts
			old.dirty = true
		}
	}
	for h, a := range r.active {
		if _, ok := alerts[h]; ok || a.State != StateFiring {
			continue
		}
		if r.keepFiringFor > 0 && !a.arrivalOnly {
			// The next slot's keep_firing_for decision, as eval makes it there.
			since := a.KeepFiringSince
			if since.IsZero() {
				since = next
			}
			if next.Sub(since) < r.keepFiringFor {
				continue
			}
		}
		a.State = StateInactive
		a.ResolvedAt = ts
		a.arrivalResolved = true
		a.dirty = true
	}
	return nil
}

func (r *AlertingRule) sample(a *Alert, ts time.Time) promql.Sample {
	lb := labels.NewBuilder(r.labels)
	a.Labels.Range(func(l labels.Label) { lb.Set(l.Name, l.Value) })
	lb.Set(model.MetricNameLabel, "ALERTS")
	lb.Set(labels.AlertName, r.name)
	lb.Set("alertstate", a.State.String())
	return promql.Sample{Metric: lb.Labels(), T: timestamp.FromTime(ts), F: 1}
}

func (r *AlertingRule) forStateSample(a *Alert, ts time.Time) promql.Sample {
	lb := labels.NewBuilder(r.labels)
	a.Labels.Range(func(l labels.Label) { lb.Set(l.Name, l.Value) })
	lb.Set(model.MetricNameLabel, "ALERTS_FOR_STATE")
	lb.Set(labels.AlertName, r.name)
	return promql.Sample{Metric: lb.Labels(), T: timestamp.FromTime(ts), F: float64(a.ActiveAt.Unix())}
}

// toSend marks the alerts due for (re)sending as sent at ts and returns copies of
// them, as Prometheus's sendAlerts does.
func (r *AlertingRule) toSend(ts time.Time, resendDelay, interval time.Duration) []Alert {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Alert
	for _, a := range r.active {
		if a.needsSending(ts, resendDelay) {
			a.LastSentAt = ts
			a.ValidUntil = ts.Add(4 * max(interval, resendDelay))
			out = append(out, *a)
		}
	}
	return out
}

// takeChanges returns the alerts changed and the label sets deleted since the last
// call, and clears both marks.
func (r *AlertingRule) takeChanges() (changed []Alert, deleted []labels.Labels) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range r.active {
		if a.dirty {
			a.dirty = false
			changed = append(changed, *a)
		}
	}
	deleted, r.deleted = r.deleted, nil
	return changed, deleted
}

// restore replaces the rule's alerts with copies of alerts (from the state topic or
// the rule this one replaces on a reload).
func (r *AlertingRule) restore(alerts []Alert) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.active = make(map[uint64]*Alert, len(alerts))
	for i := range alerts {
		a := alerts[i]
		a.dirty = false
		r.active[a.Labels.Hash()] = &a
	}
}

// snapshot returns copies of all the rule's alerts, resolved ones included.
func (r *AlertingRule) snapshot() []Alert {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Alert, 0, len(r.active))
	for _, a := range r.active {
		out = append(out, *a)
	}
	return out
}
