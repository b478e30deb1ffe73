package alerting

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	amalert "github.com/prometheus/alertmanager/alert"
	"github.com/prometheus/alertmanager/notify"
	"github.com/prometheus/alertmanager/notify/webhook"
	"github.com/prometheus/alertmanager/template"
	"github.com/prometheus/common/model"
)

// renderWebhook builds Alertmanager's webhook message (version 4) for the group,
// truncated to max_alerts. The URL is read at send time (it is a secret) unless it
// is a template.
func (p *Pipeline) renderWebhook(in *integration, cfg *Config, groupKey string, reason string, data *template.Data, alerts []*amalert.Alert, g *aggrGroup) (*notification, error) {
	c := in.wh
	var truncated uint64
	if c.MaxAlerts != 0 && uint64(len(alerts)) > c.MaxAlerts {
		truncated = uint64(len(alerts)) - c.MaxAlerts
		alerts = alerts[:c.MaxAlerts]
		data = cfg.tmpl.Data(g.route.RouteOpts.Receiver, g.labels, p.routeLabels(g, alerts), reason, alerts...)
		template.MarkRouteLabelsRendered(data)
	}
	msg := &webhook.Message{Data: data, Version: "4", GroupKey: groupKey, TruncatedAlerts: truncated}
	body, err := json.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("encode webhook message: %w", err)
	}
	action := "firing"
	if amalert.Alerts(alerts...).Status() == model.AlertResolved {
		action = "resolved"
	}
	n := &notification{Kind: "webhook", Action: action, DedupKey: notify.Key(groupKey).Hash(), Body: body}
	if u := string(c.URL); strings.Contains(u, "{{") {
		var tmplErr error
		n.URL = notify.TmplText(cfg.tmpl, data, &tmplErr)(u)
		if tmplErr != nil {
			return nil, fmt.Errorf("template url: %w", tmplErr)
		}
	}
	return n, nil
}

// webhookURL returns the integration's URL, inline or from url_file. Never logged.
func webhookURL(in *integration) (string, error) {
	if u := string(in.wh.URL); u != "" {
		return u, nil
	}
	if in.wh.URLFile == "" {
		return "", errors.New("no url or url_file")
	}
	b, err := os.ReadFile(in.wh.URLFile)
	if err != nil {
		return "", fmt.Errorf("read url_file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// deliverWebhook POSTs the message. Like Alertmanager, 5xx and network errors are
// retried, other non-2xx statuses are not (429 is retried as well, honouring Retry-After).
func (s *sender) deliverWebhook(ctx context.Context, in *integration, n *notification) error {
	u := n.URL
	if u == "" {
		var err error
		if u, err = webhookURL(in); err != nil {
			return &deliveryError{err: err}
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(n.Body))
	if err != nil {
		return &deliveryError{err: errors.New("invalid webhook URL")}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Vigil")
	rec := &responseRecorder{client: s.client(in)}
	resp, err := rec.Do(req)
	if err != nil {
		// The URL may hold a secret: report the error without it.
		return &deliveryError{err: notify.RedactURL(err), retry: true}
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		return nil
	}
	return classify(rec, fmt.Errorf("webhook answered %s", resp.Status))
}
