package alerting

import (
	"net/http"
	"sort"
	"time"

	amalert "github.com/prometheus/alertmanager/alert"
	"github.com/prometheus/common/model"
)

// APIAlert is an alert as Alertmanager's API v2 shows it (GettableAlert).
type APIAlert struct {
	Labels       model.LabelSet `json:"labels"`
	Annotations  model.LabelSet `json:"annotations"`
	StartsAt     time.Time      `json:"startsAt"`
	EndsAt       time.Time      `json:"endsAt"`
	UpdatedAt    time.Time      `json:"updatedAt"`
	GeneratorURL string         `json:"generatorURL,omitempty"`
	Fingerprint  string         `json:"fingerprint"`
	Receivers    []APIReceiver  `json:"receivers"`
	Status       APIAlertStatus `json:"status"`
}

// APIReceiver names a receiver.
type APIReceiver struct {
	Name string `json:"name"`
}

// APIAlertStatus says whether an alert is notified ("active") or muted
// ("suppressed"), and by what.
type APIAlertStatus struct {
	State       string   `json:"state"`
	SilencedBy  []string `json:"silencedBy"`
	InhibitedBy []string `json:"inhibitedBy"`
	MutedBy     []string `json:"mutedBy"`
}

// APIAlertGroup is one aggregation group (AlertGroup of Alertmanager's API v2).
type APIAlertGroup struct {
	Labels   model.LabelSet `json:"labels"`
	Receiver APIReceiver    `json:"receiver"`
	Alerts   []APIAlert     `json:"alerts"`
}

// Alerts returns the alerts not resolved at now, in Alertmanager's API form,
// sorted by fingerprint.
func (p *Pipeline) Alerts(now time.Time) []APIAlert {
	all := p.snapshotAlerts()
	p.mu.Lock()
	cfg := p.cfg
	p.mu.Unlock()
	srcs := sourcesAt(cfg.inhibitors, all, now)
	out := make([]APIAlert, 0, len(all))
	for _, a := range all {
		if a.ResolvedAt(now) {
			continue
		}
		out = append(out, p.apiAlert(cfg, a, srcs, now))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Fingerprint < out[j].Fingerprint })
	return out
}

// Groups returns the aggregation groups and their unresolved alerts, sorted by
// receiver and labels.
func (p *Pipeline) Groups(now time.Time) []APIAlertGroup {
	all := p.snapshotAlerts()
	p.mu.Lock()
	cfg := p.cfg
	srcs := sourcesAt(cfg.inhibitors, all, now)
	groups := make([]*aggrGroup, 0, len(p.groups))
	for _, g := range p.groups {
		groups = append(groups, g)
	}
	p.mu.Unlock()
	out := make([]APIAlertGroup, 0, len(groups))
	for _, g := range groups {
		ag := APIAlertGroup{Labels: g.labels, Receiver: APIReceiver{g.route.RouteOpts.Receiver}}
		g.mu.Lock()
		for _, a := range g.alerts {
			if !a.ResolvedAt(now) {
				ag.Alerts = append(ag.Alerts, p.apiAlert(cfg, a, srcs, now))
			}
		}
		g.mu.Unlock()
		if len(ag.Alerts) == 0 {
			continue
		}
		sort.Slice(ag.Alerts, func(i, j int) bool { return ag.Alerts[i].Fingerprint < ag.Alerts[j].Fingerprint })
		out = append(out, ag)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Receiver.Name != out[j].Receiver.Name {
			return out[i].Receiver.Name < out[j].Receiver.Name
		}
		return out[i].Labels.String() < out[j].Labels.String()
	})
	return out
}

func (p *Pipeline) apiAlert(cfg *Config, a *amalert.Alert, srcs inhibitSources, now time.Time) APIAlert {
	out := APIAlert{
		Labels: a.Labels, Annotations: a.Annotations, StartsAt: a.StartsAt, EndsAt: a.EndsAt,
		UpdatedAt: a.UpdatedAt, GeneratorURL: a.GeneratorURL, Fingerprint: a.Fingerprint().String(),
		Receivers: []APIReceiver{},
		Status:    APIAlertStatus{State: "active", SilencedBy: []string{}, InhibitedBy: []string{}, MutedBy: []string{}},
	}
	seen := map[string]bool{}
	for _, r := range cfg.route.Match(a.Labels) {
		if name := r.RouteOpts.Receiver; !seen[name] {
			seen[name] = true
			out.Receivers = append(out.Receivers, APIReceiver{name})
		}
	}
	if ids := p.silences.MutedBy(a.Labels, now); len(ids) > 0 {
		out.Status.SilencedBy = ids
	}
	if fp, ok := srcs.inhibited(cfg.inhibitors, a.Labels); ok {
		out.Status.InhibitedBy = []string{fp.String()}
	}
	if len(out.Status.SilencedBy)+len(out.Status.InhibitedBy) > 0 {
		out.Status.State = "suppressed"
	}
	return out
}

// RegisterRoutes registers the silences API (see Silences.RegisterRoutes) and
// Alertmanager's read API for alerts, so amtool and Alertmanager clients work:
//
//	GET /api/v2/alerts         the unresolved alerts, with receivers and silenced/inhibited status
//	GET /api/v2/alerts/groups  the aggregation groups and their alerts
func (p *Pipeline) RegisterRoutes(mux *http.ServeMux) {
	p.silences.RegisterRoutes(mux)
	mux.HandleFunc("GET /api/v2/alerts", func(w http.ResponseWriter, r *http.Request) {
		writeJSONBody(w, http.StatusOK, p.Alerts(time.Now()))
	})
	mux.HandleFunc("GET /api/v2/alerts/groups", func(w http.ResponseWriter, r *http.Request) {
		writeJSONBody(w, http.StatusOK, p.Groups(time.Now()))
	})
}
