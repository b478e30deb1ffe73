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
}

// Resolved reports whether the alert has resolved by now.
func (a *Alert) Resolved(now time.Time) bool {
	return !a.EndsAt.IsZero() && !a.EndsAt.After(now)
}
