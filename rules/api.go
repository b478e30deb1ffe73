package rules

import (
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/prometheus/model/labels"
)

// The JSON of Prometheus's GET /api/v1/rules and GET /api/v1/alerts (the "data"
// member; the HTTP layer wraps it in {"status":"success","data":...}).

// APIAlert is one alert of the alerts and rules endpoints.
type APIAlert struct {
	Labels          labels.Labels `json:"labels"`
	Annotations     labels.Labels `json:"annotations"`
	State           string        `json:"state"`
	ActiveAt        *time.Time    `json:"activeAt,omitempty"`
	KeepFiringSince *time.Time    `json:"keepFiringSince,omitempty"`
	Value           string        `json:"value"`
}

// APIAlerts is the data of GET /api/v1/alerts.
type APIAlerts struct {
	Alerts []*APIAlert `json:"alerts"`
}

// APIRuleGroups is the data of GET /api/v1/rules.
type APIRuleGroups struct {
	Groups []*APIRuleGroup `json:"groups"`
}

// APIRuleGroup is one group of GET /api/v1/rules.
type APIRuleGroup struct {
	Name  string `json:"name"`
	File  string `json:"file"`
	Rules []any  `json:"rules"`
	// Interval is in seconds.
	Interval       float64   `json:"interval"`
	Limit          int       `json:"limit"`
	EvaluationTime float64   `json:"evaluationTime"`
	LastEvaluation time.Time `json:"lastEvaluation"`
}

// APIAlertingRule is an alerting rule of GET /api/v1/rules.
type APIAlertingRule struct {
	State          string        `json:"state"`
	Name           string        `json:"name"`
	Query          string        `json:"query"`
	Duration       float64       `json:"duration"`
	KeepFiringFor  float64       `json:"keepFiringFor"`
	Labels         labels.Labels `json:"labels"`
	Annotations    labels.Labels `json:"annotations"`
	Alerts         []*APIAlert   `json:"alerts"`
	Health         Health        `json:"health"`
	LastError      string        `json:"lastError,omitempty"`
	EvaluationTime float64       `json:"evaluationTime"`
	LastEvaluation time.Time     `json:"lastEvaluation"`
	Type           string        `json:"type"`
}

// APIRecordingRule is a recording rule of GET /api/v1/rules.
type APIRecordingRule struct {
	Name           string        `json:"name"`
	Query          string        `json:"query"`
	Labels         labels.Labels `json:"labels"`
	Health         Health        `json:"health"`
	LastError      string        `json:"lastError,omitempty"`
	EvaluationTime float64       `json:"evaluationTime"`
	LastEvaluation time.Time     `json:"lastEvaluation"`
	Type           string        `json:"type"`
}

// RulesFilter narrows GET /api/v1/rules, as Prometheus's query parameters do.
type RulesFilter struct {
	// Type is "alert", "record" or "" (both).
	Type string
	// RuleNames, RuleGroups and Files keep only rules with these names, groups and files.
	RuleNames, RuleGroups, Files []string
	// ExcludeAlerts leaves out the alerts of alerting rules.
	ExcludeAlerts bool
}

func set(vals []string) map[string]bool {
	if len(vals) == 0 {
		return nil
	}
	m := make(map[string]bool, len(vals))
	for _, v := range vals {
		m[v] = true
	}
	return m
}

func apiAlerts(r *AlertingRule) []*APIAlert {
	alerts := r.ActiveAlerts()
	sort.Slice(alerts, func(i, j int) bool { return labels.Compare(alerts[i].Labels, alerts[j].Labels) < 0 })
	out := make([]*APIAlert, 0, len(alerts))
	for i := range alerts {
		a := &alerts[i]
		aa := &APIAlert{
			Labels:      a.Labels,
			Annotations: a.Annotations,
			State:       a.State.String(),
			ActiveAt:    &a.ActiveAt,
			Value:       strconv.FormatFloat(a.Value, 'e', -1, 64),
		}
		if !a.KeepFiringSince.IsZero() {
			aa.KeepFiringSince = &a.KeepFiringSince
		}
		out = append(out, aa)
	}
	return out
}

// RulesAPI returns the data of GET /api/v1/rules.
func (m *Manager) RulesAPI(f RulesFilter) *APIRuleGroups {
	names, groupsSet, files := set(f.RuleNames), set(f.RuleGroups), set(f.Files)
	res := &APIRuleGroups{Groups: []*APIRuleGroup{}}
	for _, g := range m.Groups() {
		if groupsSet != nil && !groupsSet[g.Name()] || files != nil && !files[g.File()] {
			continue
		}
		last, took := g.LastEvaluation()
		ag := &APIRuleGroup{
			Name: g.Name(), File: g.File(), Rules: []any{}, Interval: g.Interval().Seconds(), Limit: g.Limit(),
			EvaluationTime: took.Seconds(), LastEvaluation: last,
		}
		for _, r := range g.Rules() {
			if names != nil && !names[r.Name()] {
				continue
			}
			st := r.Status()
			lastErr := ""
			if st.LastError != nil {
				lastErr = st.LastError.Error()
			}
			switch r := r.(type) {
			case *AlertingRule:
				if f.Type == "record" {
					continue
				}
				state := r.State().String()
				if st.LastEvaluation.IsZero() {
					state = "unknown" // not evaluated yet, as Prometheus says
				}
				ar := &APIAlertingRule{
					State: state, Name: r.Name(), Query: r.exprString,
					Duration: r.HoldDuration().Seconds(), KeepFiringFor: r.KeepFiringFor().Seconds(),
					Labels: r.Labels(), Annotations: r.Annotations(), Health: st.Health, LastError: lastErr,
					EvaluationTime: st.EvaluationTime.Seconds(), LastEvaluation: st.LastEvaluation, Type: "alerting",
				}
				if !f.ExcludeAlerts {
					ar.Alerts = apiAlerts(r)
				}
				ag.Rules = append(ag.Rules, ar)
			case *RecordingRule:
				if f.Type == "alert" {
					continue
				}
				ag.Rules = append(ag.Rules, &APIRecordingRule{
					Name: r.Name(), Query: r.Query().String(), Labels: r.Labels(), Health: st.Health, LastError: lastErr,
					EvaluationTime: st.EvaluationTime.Seconds(), LastEvaluation: st.LastEvaluation, Type: "recording",
				})
			}
		}
		if len(ag.Rules) == 0 && (names != nil || f.Type != "") {
			continue
		}
		res.Groups = append(res.Groups, ag)
	}
	return res
}

// AlertsAPI returns the data of GET /api/v1/alerts: every pending and firing alert.
func (m *Manager) AlertsAPI() *APIAlerts {
	res := &APIAlerts{Alerts: []*APIAlert{}}
	for _, g := range m.Groups() {
		for _, r := range g.Rules() {
			if ar, ok := r.(*AlertingRule); ok {
				res.Alerts = append(res.Alerts, apiAlerts(ar)...)
			}
		}
	}
	return res
}
