package alerting

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/alertmanager/notify"

	"github.com/vigilhq/vigil/alerting/pagerdutyfake"
)

func pdConfig(url, extra string) string {
	return fmt.Sprintf(`
route:
  receiver: oncall
  group_by: [alertname, service]
  group_wait: 0s
  group_interval: 50ms
  repeat_interval: 1h
receivers:
  - name: oncall
    pagerduty_configs:
      - routing_key: %s
        url: %s
        severity: '{{ .CommonLabels.severity }}'
%s`, testRoutingKey, url, extra)
}

func TestPagerDutyTriggerThenResolve(t *testing.T) {
	fake := pagerdutyfake.New()
	defer fake.Close()
	p, _ := newTestPipeline(t, pdConfig(fake.EnqueueURL(), ""), func(o *Options) { o.GrafanaURL = "http://grafana.example/d/x" })
	start := time.Now().Add(-time.Minute)
	a := alert(start, time.Time{}, "alertname=HighLatency", "service=api", "severity=critical")
	send(t, p, a)
	ev, err := fake.WaitEvents(waitCtx(t, 10*time.Second), 1)
	if err != nil {
		t.Fatal(err)
	}
	trig := ev[0]
	if trig.Client != "Vigil" || trig.Payload.Source != "Vigil" {
		t.Errorf("client %q source %q, want Vigil", trig.Client, trig.Payload.Source)
	}
	if trig.Action != "trigger" || trig.RoutingKey != testRoutingKey {
		t.Fatalf("first event %+v, want a trigger with the routing key", trig)
	}
	wantKey := notify.Key(`{}:{alertname="HighLatency", service="api"}`).Hash()
	if trig.DedupKey != wantKey {
		t.Errorf("dedup_key %q, want Alertmanager's %q", trig.DedupKey, wantKey)
	}
	if trig.Payload.Severity != "critical" {
		t.Errorf("severity %q, want critical", trig.Payload.Severity)
	}
	if !strings.Contains(trig.Payload.Summary, "HighLatency") {
		t.Errorf("summary %q lacks the alert name", trig.Payload.Summary)
	}
	cl, _ := trig.Payload.CustomDetails["common_labels"].(map[string]any)
	if cl["service"] != "api" {
		t.Errorf("custom_details.common_labels = %v", trig.Payload.CustomDetails["common_labels"])
	}
	ca, _ := trig.Payload.CustomDetails["common_annotations"].(map[string]any)
	if ca["summary"] != "it broke" {
		t.Errorf("custom_details.common_annotations = %v", trig.Payload.CustomDetails["common_annotations"])
	}
	links := fmt.Sprint(trig.Links)
	for _, want := range []string{"http://vigil.example:9201", "http://grafana.example/d/x", "graph?g0.expr=up"} {
		if !strings.Contains(links, want) {
			t.Errorf("links %s lack %s", links, want)
		}
	}

	send(t, p, alert(start, time.Now(), "alertname=HighLatency", "service=api", "severity=critical"))
	ev, err = fake.WaitEvents(waitCtx(t, 10*time.Second), 2)
	if err != nil {
		t.Fatal(err)
	}
	if ev[1].Action != "resolve" || ev[1].DedupKey != trig.DedupKey {
		t.Fatalf("second event %s %s, want resolve %s", ev[1].Action, ev[1].DedupKey, trig.DedupKey)
	}
	if inc := fake.Incidents(); len(inc) != 1 || inc[0].Status != "resolved" {
		t.Fatalf("incidents %+v, want one resolved", inc)
	}
	for _, r := range fake.Requests() {
		if r.Status != 202 {
			t.Errorf("request answered %d: %v", r.Status, r.Errors)
		}
	}
}

func TestPagerDutyRoutingKeyFileSummaryTruncationSeverityFallback(t *testing.T) {
	fake := pagerdutyfake.New()
	defer fake.Close()
	doc := fmt.Sprintf(`
route:
  receiver: oncall
  group_wait: 0s
receivers:
  - name: oncall
    pagerduty_configs:
      - routing_key_file: %s
        url: %s
        severity: '{{ .CommonLabels.severity }}'
        description: '{{ .CommonAnnotations.summary }}'
`, writeKeyFile(t), fake.EnqueueURL())
	p, _ := newTestPipeline(t, doc, nil)
	a := alert(time.Now(), time.Time{}, "alertname=Long", "severity=bogus")
	a.Annotations = a.Annotations.Copy()
	long := strings.Repeat("é", 3000)
	a.Annotations = labelsFrom("summary", long)
	send(t, p, a)
	ev, err := fake.WaitEvents(waitCtx(t, 10*time.Second), 1)
	if err != nil {
		t.Fatal(err)
	}
	if ev[0].RoutingKey != testRoutingKey {
		t.Errorf("routing key from file not used")
	}
	if n := utf8.RuneCountInString(ev[0].Payload.Summary); n != 1024 {
		t.Errorf("summary has %d characters, want 1024", n)
	}
	if ev[0].Payload.Severity != "error" {
		t.Errorf("invalid severity sent as %q, want the fallback error", ev[0].Payload.Severity)
	}
}

func TestPagerDuty400GivesUpAndReports(t *testing.T) {
	fake := pagerdutyfake.New()
	defer fake.Close()
	p, _ := newTestPipeline(t, pdConfig(fake.EnqueueURL(), ""), nil)
	fake.FailNext(1, pagerdutyfake.BadRequest)
	send(t, p, alert(time.Now(), time.Time{}, "alertname=A", "severity=info"))
	send(t, p, alert(time.Now(), time.Time{}, "alertname=B", "severity=info"))
	ev, err := fake.WaitEvents(waitCtx(t, 10*time.Second), 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(fake.Requests()) != 2 {
		t.Fatalf("%d requests, want 2 (the rejected one is not retried)", len(fake.Requests()))
	}
	_ = ev
	waitFor(t, func() bool { return p.metrics.dropped("oncall").Get() == 1 && p.metrics.failed("oncall").Get() == 1 })
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
