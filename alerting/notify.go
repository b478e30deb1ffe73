package alerting

import (
	"fmt"
	"time"

	amalert "github.com/prometheus/alertmanager/alert"
	"github.com/prometheus/alertmanager/notify"
	"github.com/prometheus/alertmanager/template"
	"github.com/prometheus/common/model"
)

// notify runs a group's flush through Alertmanager's notification stages, in
// Alertmanager's order: inhibition, active_time_intervals, mute_time_intervals,
// silences (each removes the alerts it mutes; nothing left means nothing sent and
// nothing logged), then per integration the notification-log check (first
// notification, new alerts, new resolved alerts, all resolved, repeat_interval),
// and finally the durable outbox write. It returns only once every notification it
// decided on is durable in the outbox together with its notification-log entry.
func (p *Pipeline) notify(g *aggrGroup, alerts amalert.AlertSlice, now time.Time) error {
	cfg := g.cfg
	opts := &g.route.RouteOpts

	if len(cfg.inhibitors) > 0 {
		srcs := p.inhibitSources(cfg, now)
		kept := alerts[:0:0]
		for _, a := range alerts {
			if _, ok := srcs.inhibited(cfg.inhibitors, a.Labels); ok {
				p.metrics.suppressed("inhibition").Inc()
				continue
			}
			kept = append(kept, a)
		}
		alerts = kept
	}
	if len(alerts) == 0 {
		return nil
	}
	if len(opts.ActiveTimeIntervals) > 0 {
		active, _, err := cfg.intervals.Mutes(opts.ActiveTimeIntervals, now)
		if err != nil {
			return fmt.Errorf("active_time_intervals: %w", err)
		}
		if !active {
			p.metrics.suppressed("active_time_interval").Add(len(alerts))
			return nil
		}
	}
	if len(opts.MuteTimeIntervals) > 0 {
		muted, _, err := cfg.intervals.Mutes(opts.MuteTimeIntervals, now)
		if err != nil {
			return fmt.Errorf("mute_time_intervals: %w", err)
		}
		if muted {
			p.metrics.suppressed("mute_time_interval").Add(len(alerts))
			return nil
		}
	}
	kept := alerts[:0:0]
	for _, a := range alerts {
		if p.silences.Mutes(a.Labels, now) {
			p.metrics.suppressed("silence").Inc()
			continue
		}
		kept = append(kept, a)
	}
	alerts = kept
	if len(alerts) == 0 {
		return nil
	}

	firing, resolved := map[uint64]struct{}{}, map[uint64]struct{}{}
	var firingList, resolvedList []uint64
	var firingAlerts []*amalert.Alert
	for _, a := range alerts {
		h := uint64(a.Fingerprint())
		if a.Resolved() {
			resolved[h] = struct{}{}
			resolvedList = append(resolvedList, h)
		} else {
			firing[h] = struct{}{}
			firingList = append(firingList, h)
			firingAlerts = append(firingAlerts, a)
		}
	}

	var batch []pendingWrite
	for _, in := range cfg.receivers[opts.Receiver] {
		entry := p.outbox.nflogEntry(in.id(), g.key)
		reason := needsUpdate(entry, firing, resolved, in.sendResolved(), opts.RepeatInterval, now)
		if reason == notify.ReasonDoNotNotify {
			continue
		}
		log := &nflogEntry{Firing: firingList, Resolved: resolvedList, Timestamp: now}
		sent := []*amalert.Alert(alerts)
		if !in.sendResolved() {
			if len(firingAlerts) == 0 {
				// Only resolved alerts and the integration does not send resolved:
				// log them so the next flush knows, send nothing.
				batch = append(batch, pendingWrite{integration: in, groupKey: g.key, nflog: log})
				continue
			}
			sent = firingAlerts
		}
		data := cfg.tmpl.Data(opts.Receiver, g.labels, p.routeLabels(g, sent), reason.String(), sent...)
		template.MarkRouteLabelsRendered(data)
		n, err := p.render(in, g, reason.String(), data, sent)
		if err != nil {
			// A template that cannot render never will: report and log it as sent so
			// that it is not retried on every flush.
			p.metrics.failed(in.receiver).Inc()
			p.metrics.dropped(in.receiver).Inc()
			p.log.Error("cannot render notification; dropped", "receiver", in.receiver, "integration", in.id(), "group", g.key, "err", err)
			batch = append(batch, pendingWrite{integration: in, groupKey: g.key, nflog: log})
			continue
		}
		batch = append(batch, pendingWrite{integration: in, groupKey: g.key, nflog: log, note: n})
	}
	if len(batch) == 0 {
		return nil
	}
	return p.outbox.enqueue(p.ctx, batch)
}

// needsUpdate is Alertmanager's DedupStage decision: whether a group whose current
// alerts are firing/resolved must be notified, given the last notification logged.
func needsUpdate(entry *nflogEntry, firing, resolved map[uint64]struct{}, sendResolved bool, repeat time.Duration, now time.Time) notify.NotifyReason {
	if entry == nil {
		if len(firing) > 0 {
			return notify.ReasonFirstNotification
		}
		return notify.ReasonDoNotNotify
	}
	if !isSubset(entry.Firing, firing) {
		if len(entry.Firing) == 0 {
			return notify.ReasonFirstNotification
		}
		return notify.ReasonNewAlertsInGroup
	}
	if len(firing) == 0 {
		if len(entry.Firing) > 0 {
			return notify.ReasonAllAlertsResolved
		}
		return notify.ReasonDoNotNotify
	}
	if sendResolved && !isSubset(entry.Resolved, resolved) {
		return notify.ReasonNewResolvedAlerts
	}
	if entry.Timestamp.Before(now.Add(-repeat)) {
		return notify.ReasonRepeatIntervalElapsed
	}
	return notify.ReasonDoNotNotify
}

// isSubset reports whether every element of subset is in set.
func isSubset(set []uint64, subset map[uint64]struct{}) bool {
	if len(subset) == 0 {
		return true
	}
	m := make(map[uint64]struct{}, len(set))
	for _, h := range set {
		m[h] = struct{}{}
	}
	for h := range subset {
		if _, ok := m[h]; !ok {
			return false
		}
	}
	return true
}

// routeLabels renders the route's labels (templates) against the alerts, as
// Alertmanager's dispatcher does before each notification.
func (p *Pipeline) routeLabels(g *aggrGroup, alerts []*amalert.Alert) model.LabelSet {
	opts := &g.route.RouteOpts
	if len(opts.Labels) == 0 {
		return model.LabelSet{}
	}
	data := g.cfg.tmpl.Data(opts.Receiver, g.labels, opts.Labels, notify.ReasonUnknown.String(), alerts...)
	render := g.cfg.tmpl.RouteLabelRenderer(data)
	out := make(model.LabelSet, len(opts.Labels))
	for ln := range opts.Labels {
		if v, err := render(string(ln)); err == nil {
			out[ln] = model.LabelValue(v)
		}
	}
	return out
}

// render builds the notification of one integration.
func (p *Pipeline) render(in *integration, g *aggrGroup, reason string, data *template.Data, alerts []*amalert.Alert) (*notification, error) {
	if in.kind == "pagerduty" {
		return p.renderPagerDuty(in, g.cfg, g.key, data, alerts)
	}
	return p.renderWebhook(in, g.cfg, g.key, reason, data, alerts, g)
}
