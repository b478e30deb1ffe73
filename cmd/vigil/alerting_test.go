package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/alerting/pagerdutyfake"
)

const e2eRoutingKey = "e2e0123456789abcdef0123456789abc"

// alertingSetup writes a rule file (alert E2ELatency on vigil_e2e_latency > 10,
// evaluated on arrival and every second) and a vigil.yaml paging the fake PagerDuty, and returns the
// config path and the data dir.
func alertingSetup(t *testing.T, fake *pagerdutyfake.Server) (cfg, dataDir string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "rules"), 0o755); err != nil {
		t.Fatal(err)
	}
	rule := `groups:
  - name: e2e
    interval: 1s
    rules:
      - alert: E2ELatency
        expr: vigil_e2e_latency > 10
        labels:
          severity: critical
          service: checkout
        annotations:
          summary: 'latency is {{ $value }}'
`
	if err := os.WriteFile(filepath.Join(dir, "rules", "e2e.yml"), []byte(rule), 0o644); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "pd.key")
	if err := os.WriteFile(keyFile, []byte(e2eRoutingKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg = filepath.Join(dir, "vigil.yaml")
	doc := fmt.Sprintf(`rule_files: [rules/*.yml]
rules:
  on_arrival: true
server:
  external_url: http://vigil.e2e:9201
  grafana_url: http://grafana.e2e/d/abc
alerting:
  route:
    receiver: oncall
    group_by: [alertname, service]
    group_wait: 0s
    group_interval: 100ms
  receivers:
    - name: oncall
      pagerduty_configs:
        - routing_key_file: %s
          url: %s
          severity: '{{ .CommonLabels.severity }}'
`, keyFile, fake.EnqueueURL())
	if err := os.WriteFile(cfg, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	dataDir = filepath.Join(dir, "data")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	return cfg, dataDir
}

func waitEvents(t *testing.T, fake *pagerdutyfake.Server, n int) []pagerdutyfake.Event {
	t.Helper()
	ctx, cancel := contextWithTimeout(30 * time.Second)
	defer cancel()
	ev, err := fake.WaitEvents(ctx, n)
	if err != nil {
		t.Fatalf("%v (%d requests)", err, len(fake.Requests()))
	}
	return ev
}

// TestServeAlertingEndToEnd: a series crosses a rule's threshold through
// remote-write; the fake PagerDuty receives one trigger with the right fields; the
// series recovers; the fake receives the resolve with the same dedup_key. The
// silences API is served, and the routing key appears in no log line or API answer.
func TestServeAlertingEndToEnd(t *testing.T) {
	fake := pagerdutyfake.New()
	defer fake.Close()
	cfg, dataDir := alertingSetup(t, fake)
	p := startVigil(t, dataDir, "--config", cfg)

	t0 := time.Now()
	rulesRemoteWrite(t, p.addr, "vigil_e2e_latency", 25, time.Now())
	ev := waitEvents(t, fake, 1)
	t.Logf("trigger %s after the write", time.Since(t0))
	trig := ev[0]
	if trig.Action != "trigger" || trig.RoutingKey != e2eRoutingKey || trig.Payload.Severity != "critical" {
		t.Fatalf("trigger %+v", trig)
	}
	if !strings.Contains(trig.Payload.Summary, "E2ELatency") || trig.DedupKey == "" || len(trig.DedupKey) > 255 {
		t.Errorf("summary %q, dedup_key %q", trig.Payload.Summary, trig.DedupKey)
	}
	if cl, _ := trig.Payload.CustomDetails["common_labels"].(map[string]any); cl["service"] != "checkout" || cl["job"] != "e2e" {
		t.Errorf("custom_details.common_labels %v", trig.Payload.CustomDetails["common_labels"])
	}
	if links := fmt.Sprint(trig.Links); !strings.Contains(links, "http://vigil.e2e:9201") || !strings.Contains(links, "http://grafana.e2e/d/abc") {
		t.Errorf("links %s", links)
	}

	t0 = time.Now()
	rulesRemoteWrite(t, p.addr, "vigil_e2e_latency", 3, time.Now())
	ev = waitEvents(t, fake, 2)
	t.Logf("resolve %s after the write", time.Since(t0))
	if ev[1].Action != "resolve" || ev[1].DedupKey != trig.DedupKey {
		t.Fatalf("second event %s %s, want resolve %s", ev[1].Action, ev[1].DedupKey, trig.DedupKey)
	}
	for _, r := range fake.Requests() {
		if r.Status != 202 {
			t.Errorf("request answered %d: %v", r.Status, r.Errors)
		}
	}

	// Silences API.
	end := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	resp, err := http.Post("http://"+p.addr+"/api/v1/silences", "application/json", strings.NewReader(
		`{"matchers":[{"name":"alertname","value":"E2ELatency","isRegex":false}],"endsAt":"`+end+`","createdBy":"e2e","comment":"test"}`))
	if err != nil {
		t.Fatal(err)
	}
	var created struct{ SilenceID string }
	json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if resp.StatusCode != 200 || created.SilenceID == "" {
		t.Fatalf("POST /api/v1/silences: %d", resp.StatusCode)
	}
	if code, body := p.get(t, "/api/v1/silences"); code != 200 || !strings.Contains(body, created.SilenceID) || !strings.Contains(body, `"state":"active"`) {
		t.Errorf("GET /api/v1/silences: %d %s", code, body)
	}
	// Silenced now: firing again sends nothing.
	rulesRemoteWrite(t, p.addr, "vigil_e2e_latency", 30, time.Now())
	time.Sleep(500 * time.Millisecond)
	if n := len(fake.Events()); n != 2 {
		t.Errorf("%d events while silenced, want 2", n)
	}
	req, _ := http.NewRequest("DELETE", "http://"+p.addr+"/api/v1/silence/"+created.SilenceID, nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("DELETE silence: %v %v", resp, err)
	}
	t0 = time.Now()
	ev = waitEvents(t, fake, 3)
	t.Logf("trigger %s after the silence expired", time.Since(t0))
	if ev[2].Action != "trigger" || ev[2].DedupKey != trig.DedupKey {
		t.Errorf("after the silence expired: %s %s", ev[2].Action, ev[2].DedupKey)
	}

	_, metrics := p.get(t, "/metrics")
	for _, want := range []string{`vigil_notifications_sent_total{receiver="oncall"} 3`, `vigil_notifications_failed_total{receiver="oncall"} 0`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, path := range []string{"/api/v1/silences", "/api/v1/alerts", "/api/v1/rules", "/metrics", "/api/v1/status/log"} {
		if _, body := p.get(t, path); strings.Contains(body, e2eRoutingKey) {
			t.Errorf("%s shows the routing key", path)
		}
	}
	if strings.Contains(p.stderr.String(), e2eRoutingKey) {
		t.Error("the routing key is in the log")
	}
}

// TestServeAlertingKill9: vigil serve is killed with -9 while PagerDuty hangs on the
// page; after the restart the page is delivered, once.
func TestServeAlertingKill9(t *testing.T) {
	fake := pagerdutyfake.New()
	defer fake.Close()
	fake.SetMode(pagerdutyfake.Hang)
	cfg, dataDir := alertingSetup(t, fake)
	p := startVigil(t, dataDir, "--config", cfg)
	rulesRemoteWrite(t, p.addr, "vigil_e2e_latency", 25, time.Now())
	ctx, cancel := contextWithTimeout(30 * time.Second)
	defer cancel()
	if err := fake.WaitRequests(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	p.done <- nil
	fake.SetMode(pagerdutyfake.Accept)

	startVigil(t, dataDir, "--config", cfg)
	ev := waitEvents(t, fake, 1)
	time.Sleep(time.Second)
	if ev = fake.Events(); len(ev) != 1 || ev[0].Action != "trigger" {
		t.Fatalf("events after restart %+v, want one trigger", ev)
	}
	if inc := fake.Incidents(); len(inc) != 1 {
		t.Fatalf("%d incidents, want 1", len(inc))
	}
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
