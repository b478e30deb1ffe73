package alerting

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/PagerDuty/go-pagerduty"
	amalert "github.com/prometheus/alertmanager/alert"
	"github.com/prometheus/alertmanager/notify"
	"github.com/prometheus/alertmanager/template"
	"github.com/prometheus/common/model"
)

// PagerDuty Events API v2 limits.
const (
	pdMaxEventBytes   = 512000
	pdMaxSummaryRunes = 1024
	pdMaxDedupKey     = 255
)

// renderPagerDuty builds the Events API v2 event for a notification of the group
// with Alertmanager's templates and defaults (description, client, client_url,
// source, details, links, images), plus Vigil's additions: the group's common labels
// and annotations in custom_details, a timestamp, and links back to the rule in
// Vigil and to Grafana. The routing key is left out (it is read at send time) unless
// it is a template, which can only be rendered here.
func (p *Pipeline) renderPagerDuty(in *integration, cfg *Config, groupKey string, data *template.Data, alerts []*amalert.Alert) (*notification, error) {
	c := in.pd
	var tmplErr error
	tmpl := notify.TmplText(cfg.tmpl, data, &tmplErr)

	action := "trigger"
	if amalert.Alerts(alerts...).Status() == model.AlertResolved {
		action = "resolve"
	}
	dedup := notify.Key(groupKey).Hash()
	if len(dedup) > pdMaxDedupKey {
		dedup = dedup[:pdMaxDedupKey]
	}
	summary, _ := notify.TruncateInRunes(tmpl(c.Description), pdMaxSummaryRunes)
	severity := c.Severity
	if severity == "" {
		severity = "error"
	}
	severity = tmpl(severity)
	details := make(map[string]any, len(c.Details)+2)
	tf := func(s string) (string, error) { return tmpl(s), tmplErr }
	for k, v := range c.Details {
		r, err := template.DeepCopyWithTemplate(v, tf)
		if err != nil {
			return nil, fmt.Errorf("details %q: %w", k, err)
		}
		details[k] = r
	}
	if _, ok := details["common_labels"]; !ok {
		details["common_labels"] = map[string]string(data.CommonLabels)
	}
	if _, ok := details["common_annotations"]; !ok {
		details["common_annotations"] = map[string]string(data.CommonAnnotations)
	}
	ev := &pagerduty.V2Event{
		Action:    action,
		DedupKey:  dedup,
		Client:    tmpl(c.Client),
		ClientURL: tmpl(c.ClientURL),
		Payload: &pagerduty.V2Payload{
			Summary:   summary,
			Source:    tmpl(c.Source),
			Severity:  severity,
			Component: tmpl(c.Component),
			Group:     tmpl(c.Group),
			Class:     tmpl(c.Class),
			Details:   details,
		},
	}
	if rk := string(c.RoutingKey); strings.Contains(rk, "{{") {
		ev.RoutingKey = tmpl(rk)
	}
	var earliest time.Time
	for _, a := range alerts {
		if earliest.IsZero() || a.StartsAt.Before(earliest) {
			earliest = a.StartsAt
		}
	}
	if !earliest.IsZero() {
		ev.Payload.Timestamp = earliest.UTC().Format(time.RFC3339Nano)
	}
	for _, im := range c.Images {
		if src := tmpl(im.Src); src != "" {
			ev.Images = append(ev.Images, map[string]string{"src": src, "alt": tmpl(im.Alt), "href": tmpl(im.Href)})
		}
	}
	for _, l := range c.Links {
		if href := tmpl(l.Href); href != "" {
			ev.Links = append(ev.Links, map[string]string{"href": href, "text": tmpl(l.Text)})
		}
	}
	if tmplErr != nil {
		return nil, fmt.Errorf("template: %w", tmplErr)
	}
	if len(alerts) > 0 && alerts[0].GeneratorURL != "" {
		ev.Links = append(ev.Links, map[string]string{"href": alerts[0].GeneratorURL, "text": "Vigil: rule of " + string(alerts[0].Name())})
	}
	if data.ExternalURL != "" {
		ev.Links = append(ev.Links, map[string]string{"href": data.ExternalURL, "text": "Vigil"})
	}
	if p.opts.GrafanaURL != "" {
		ev.Links = append(ev.Links, map[string]string{"href": p.opts.GrafanaURL, "text": "Grafana"})
	}
	if !validSeverity(ev.Payload.Severity) {
		p.log.Warn("PagerDuty severity is not one of critical, error, warning, info; sending error", "receiver", in.receiver, "severity", ev.Payload.Severity)
		ev.Payload.Severity = "error"
	}
	if ev.Payload.Summary == "" {
		ev.Payload.Summary, _ = notify.TruncateInRunes(fmt.Sprintf("[%s] %s", strings.ToUpper(data.Status), data.GroupLabels.Values()), pdMaxSummaryRunes)
	}
	if ev.Payload.Source == "" {
		ev.Payload.Source = "Vigil"
	}
	// Keep the event under PagerDuty's size limit (with room for the routing key).
	if b, err := json.Marshal(ev); err != nil {
		return nil, fmt.Errorf("encode event: %w", err)
	} else if len(b)+64 > pdMaxEventBytes {
		ev.Payload.Details = map[string]any{"error": fmt.Sprintf("Custom details have been removed because the original event exceeds the maximum size of %d bytes", pdMaxEventBytes)}
	}
	return &notification{Kind: "pagerduty", Action: action, DedupKey: dedup, Event: ev}, nil
}

// routingKey returns the integration's routing key: inline or from routing_key_file
// (surrounding space trimmed). It is never logged.
func routingKey(in *integration) (string, error) {
	if k := string(in.pd.RoutingKey); k != "" {
		return k, nil
	}
	if in.pd.RoutingKeyFile == "" {
		return "", errors.New("no routing_key or routing_key_file")
	}
	b, err := os.ReadFile(in.pd.RoutingKeyFile)
	if err != nil {
		return "", fmt.Errorf("read routing_key_file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// deliverPagerDuty sends one event through go-pagerduty to the integration's
// endpoint. The error is a *deliveryError saying whether to retry.
func (s *sender) deliverPagerDuty(ctx context.Context, in *integration, n *notification) error {
	ev := *n.Event
	if ev.RoutingKey == "" {
		k, err := routingKey(in)
		if err != nil {
			return &deliveryError{err: err}
		}
		ev.RoutingKey = k
	}
	if ev.RoutingKey == "" {
		return &deliveryError{err: errors.New("routing key is empty")}
	}
	full := ""
	if in.pd.URL != nil && in.pd.URL.URL != nil {
		full = in.pd.URL.String()
	}
	base, err := eventsBaseURL(full)
	if err != nil {
		return &deliveryError{err: err}
	}
	rec := &responseRecorder{client: s.client(in)}
	client := pagerduty.NewClient("", pagerduty.WithV2EventsAPIEndpoint(base))
	client.HTTPClient = rec
	_, err = client.ManageEventWithContext(ctx, &ev)
	if err == nil {
		return nil
	}
	return classify(rec, err)
}

// responseRecorder is the http client handed to go-pagerduty: it keeps the status
// and Retry-After of the response, which go-pagerduty's errors do not carry.
type responseRecorder struct {
	client     *http.Client
	status     int
	retryAfter time.Duration
}

// Do sends req and records the response status and Retry-After.
func (r *responseRecorder) Do(req *http.Request) (*http.Response, error) {
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, err
	}
	r.status = resp.StatusCode
	r.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	return resp, nil
}

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// classify turns an attempt's outcome into a deliveryError: 408, 429 and 5xx and
// network errors are retried; other statuses (400: the event will never be
// accepted) are not.
func classify(rec *responseRecorder, err error) error {
	st := rec.status
	switch {
	case st == 0:
		return &deliveryError{err: err, retry: true}
	case st == http.StatusTooManyRequests || st == http.StatusRequestTimeout || st >= 500:
		return &deliveryError{err: err, retry: true, status: st, retryAfter: rec.retryAfter}
	case st >= 200 && st < 300:
		// A 2xx with an undecodable body: the event was accepted.
		return nil
	default:
		return &deliveryError{err: err, status: st}
	}
}

// deliveryError is a failed delivery attempt.
type deliveryError struct {
	err        error
	retry      bool
	status     int
	retryAfter time.Duration
}

// Error describes the failed attempt (never with a secret).
func (e *deliveryError) Error() string {
	if e.status != 0 {
		return fmt.Sprintf("status %d: %v", e.status, e.err)
	}
	return e.err.Error()
}

// Unwrap returns the underlying error.
func (e *deliveryError) Unwrap() error { return e.err }
