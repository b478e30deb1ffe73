package alerting

import (
	"time"

	"github.com/prometheus/prometheus/model/labels"
)

// Alert is one alert as the rules hand it over: the contract between the rules and the
// alerting pipeline. A firing alert has a zero EndsAt; a resolved one has EndsAt set to
// when it resolved. The rules send an alert on every state change and re-send firing
// alerts periodically; sending the same alert again is harmless.
type Alert struct {
	// Labels identify the alert (alertname, rule labels, external labels, series labels).
	Labels labels.Labels
	// Annotations are the expanded annotation templates (summary, description, ...).
	Annotations labels.Labels
	// StartsAt is when the alert started firing (entered the firing state).
	StartsAt time.Time
	// EndsAt is zero while firing, and the resolve time once resolved.
	EndsAt time.Time
	// GeneratorURL links back to the rule's expression in Vigil.
	GeneratorURL string
	// ValidUntil, optional, is how long a firing alert stays firing without being
	// sent again (Prometheus sends 4 × max(evaluation interval, resend delay) as
	// EndsAt). Zero means global.resolve_timeout from now, as Alertmanager does for
	// alerts posted without an end. Ignored once EndsAt is set.
	ValidUntil time.Time
}

// Resolved reports whether the alert has resolved by now.
func (a *Alert) Resolved(now time.Time) bool {
	return !a.EndsAt.IsZero() && !a.EndsAt.After(now)
}
