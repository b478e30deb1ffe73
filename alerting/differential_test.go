package alerting

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/notify/webhook"

	"github.com/vigilhq/vigil/alerting/pagerdutyfake"
)

// alertmanagerBinary returns the Debian prometheus-alertmanager, skipping the test
// when it is absent outside CI (scripts/test-deps.sh installs it).
func alertmanagerBinary(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("ALERTMANAGER"), "/usr/bin/prometheus-alertmanager"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("prometheus-alertmanager is not installed (scripts/test-deps.sh installs it)")
	}
	t.Skip("prometheus-alertmanager is not installed")
	return ""
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startAlertmanager runs the real Alertmanager on config and returns its base URL.
func startAlertmanager(t *testing.T, config string) string {
	t.Helper()
	bin := alertmanagerBinary(t)
	dir := t.TempDir()
	cf := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(cf, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	cmd := exec.Command(bin, "--config.file="+cf, "--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--cluster.listen-address=", "--log.level=warn")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("alertmanager output:\n%s", stderr.String())
		}
	})
	base := "http://" + addr
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("alertmanager not ready: %v\n%s", err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func postJSON(t *testing.T, url string, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST %s: %s", url, resp.Status)
	}
}

// amAlert is an alert in Alertmanager's API v2 form.
type amAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt,omitempty"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

func toAMAlert(a Alert) amAlert {
	out := amAlert{Labels: a.Labels.Map(), Annotations: a.Annotations.Map(), StartsAt: a.StartsAt, GeneratorURL: a.GeneratorURL}
	if !a.EndsAt.IsZero() {
		out.EndsAt = a.EndsAt
	}
	return out
}

// notificationSummary is what is compared between the two: a notification's group,
// status and alerts (labels and status), independent of timing.
func notificationSummary(m webhook.Message) string {
	var as []string
	for _, a := range m.Alerts {
		as = append(as, a.Status+" "+fmt.Sprint(a.Labels.SortedPairs()))
	}
	sort.Strings(as)
	return fmt.Sprintf("key=%s status=%s group=%v alerts=%s", m.GroupKey, m.Status, m.GroupLabels.SortedPairs(), strings.Join(as, "; "))
}

// byGroup lists each group's notifications in the order they arrived.
func byGroup(ms []webhook.Message) map[string][]string {
	out := map[string][]string{}
	for _, m := range ms {
		out[m.GroupKey] = append(out[m.GroupKey], notificationSummary(m))
	}
	return out
}

// TestDifferentialAlertmanager posts the same alerts, silence and resolutions to the
// real Alertmanager and to the pipeline, with the same configuration (routes with
// matchers, group_by, continue, inhibition, repeat_interval), and compares the
// notifications each group received, in order.
func TestDifferentialAlertmanager(t *testing.T) {
	amSink, vSink := newWebhookSink(t), newWebhookSink(t)
	cfg := func(url string) string {
		return fmt.Sprintf(`
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 3s
  routes:
    - matchers: ['team="db"']
      group_by: [alertname, instance]
      continue: true
    - matchers: ['alertname=~"B|D"']
      group_by: ['...']
inhibit_rules:
  - source_matchers: [severity="critical"]
    target_matchers: [severity="warning"]
    equal: [alertname]
receivers:
  - name: hook
    webhook_configs:
      - url: %s
        send_resolved: true
`, url)
	}
	amURL := startAlertmanager(t, cfg(amSink.srv.URL))
	p, _ := newTestPipeline(t, cfg(vSink.srv.URL), func(o *Options) { o.Log = noSyncLog(t) })

	now := time.Now()
	// A silence on alertname=C, in both.
	sil := Silence{Matchers: []SilenceMatcher{{Name: "alertname", Value: "C"}}, StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour), CreatedBy: "test", Comment: "differential"}
	postJSON(t, amURL+"/api/v2/silences", sil)
	if _, err := p.Silences().Set(context.Background(), sil, time.Now()); err != nil {
		t.Fatal(err)
	}

	post := func(as ...Alert) {
		t.Helper()
		am := make([]amAlert, len(as))
		for i, a := range as {
			am[i] = toAMAlert(a)
		}
		postJSON(t, amURL+"/api/v2/alerts", am)
		send(t, p, as...)
	}
	start := time.Now()
	a1 := alert(start, time.Time{}, "alertname=A", "instance=1", "severity=warning")
	a2 := alert(start, time.Time{}, "alertname=A", "instance=2", "severity=critical")
	b1 := alert(start, time.Time{}, "alertname=B", "instance=1", "team=db")
	b2 := alert(start, time.Time{}, "alertname=B", "instance=2", "team=db")
	c1 := alert(start, time.Time{}, "alertname=C", "instance=1")
	e1 := alert(start, time.Time{}, "alertname=E", "instance=1")
	post(a1, a2, b1, b2, c1, e1)

	// Mid-way between the first flush (1s) and the second (3s): a new alert joins group B.
	time.Sleep(time.Until(start.Add(2 * time.Second)))
	b3 := alert(start, time.Time{}, "alertname=B", "instance=3", "team=db")
	e2 := alert(start.Add(2*time.Second), time.Time{}, "alertname=E", "instance=2")
	post(b3, e2)

	// Between the flushes at 3s and 5s: the critical A resolves, which lifts the
	// inhibition of the warning; b1 resolves.
	time.Sleep(time.Until(start.Add(4 * time.Second)))
	end := time.Now()
	a2r := alert(start, end, "alertname=A", "instance=2", "severity=critical")
	b1r := alert(start, end, "alertname=B", "instance=1", "team=db")
	post(a2r, b1r)

	// Let the flushes at 5s and 7s happen.
	time.Sleep(time.Until(start.Add(8 * time.Second)))

	am, v := byGroup(amSink.messages()), byGroup(vSink.messages())
	if len(am) == 0 {
		t.Fatal("alertmanager sent nothing")
	}
	keys := map[string]bool{}
	for k := range am {
		keys[k] = true
	}
	for k := range v {
		keys[k] = true
	}
	var sorted []string
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		if fmt.Sprint(am[k]) != fmt.Sprint(v[k]) {
			t.Errorf("group %s:\nalertmanager: %s\nvigil:        %s", k, strings.Join(am[k], "\n              "), strings.Join(v[k], "\n              "))
		}
	}
	if t.Failed() || testing.Verbose() {
		for _, k := range sorted {
			t.Logf("%s: %d notifications from alertmanager, %d from vigil:\n%s", k, len(am[k]), len(v[k]), strings.Join(am[k], "\n"))
		}
	}
	// The scenario must have exercised what it is about.
	all := strings.Join(append(flatten(am), flatten(v)...), "\n")
	// An unchanged group is notified again after repeat_interval.
	if rep := v[`{}/{team="db"}:{alertname="B", instance="2"}`]; len(rep) != 2 || rep[0] != rep[1] {
		t.Errorf("no repeat of the unchanged group: %q", rep)
	}
	if strings.Contains(all, `alertname="C"`) {
		t.Error("the silenced alert was notified")
	}
	for _, want := range []string{
		// Inhibited at first, then notified once the critical one resolved.
		`alerts=firing alertname=A, instance=1, severity=warning; resolved alertname=A, instance=2, severity=critical`,
		// An alert joining a group is sent at the next group_interval, with the first.
		`alerts=firing alertname=E, instance=1; firing alertname=E, instance=2`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no notification has %s", want)
		}
	}
	if t.Failed() {
		t.Logf("vigil: %d failed delivery attempts", p.metrics.failed("hook").Get())
		vs := vSink.messages()
		for i, m := range vs {
			t.Logf("vigil %s %s %s", vSink.times[i].Sub(start), m.NotificationReason, notificationSummary(m))
		}
	}
}

func flatten(m map[string][]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v...)
	}
	return out
}

// TestDifferentialPagerDuty: the real Alertmanager and the pipeline, with the same
// pagerduty_configs, send the same events to the fake PagerDuty: same dedup_key
// (so incidents carry over when moving from Alertmanager to Vigil), same actions,
// summary, severity and Alertmanager's default custom details.
func TestDifferentialPagerDuty(t *testing.T) {
	amFake, vFake := pagerdutyfake.New(), pagerdutyfake.New()
	defer amFake.Close()
	defer vFake.Close()
	cfg := func(url string) string {
		return fmt.Sprintf(`
route:
  receiver: oncall
  group_by: [alertname, service]
  group_wait: 0s
  group_interval: 1s
receivers:
  - name: oncall
    pagerduty_configs:
      - routing_key: %s
        url: %s
        severity: '{{ .CommonLabels.severity }}'
        class: '{{ .CommonLabels.class }}'
`, testRoutingKey, url)
	}
	amURL := startAlertmanager(t, cfg(amFake.EnqueueURL()))
	p, _ := newTestPipeline(t, cfg(vFake.EnqueueURL()), func(o *Options) { o.Log = noSyncLog(t) })
	start := time.Now().Add(-time.Minute)
	post := func(a Alert) {
		postJSON(t, amURL+"/api/v2/alerts", []amAlert{toAMAlert(a)})
		send(t, p, a)
	}
	post(alert(start, time.Time{}, "alertname=Disk", "service=db", "severity=warning", "class=disk"))
	_, err := amFake.WaitEvents(waitCtx(t, 20*time.Second), 1)
	if err != nil {
		t.Fatal(err)
	}
	_, err = vFake.WaitEvents(waitCtx(t, 20*time.Second), 1)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	post(alert(start, time.Now(), "alertname=Disk", "service=db", "severity=warning", "class=disk"))
	amEv, err := amFake.WaitEvents(waitCtx(t, 20*time.Second), 2)
	if err != nil {
		t.Fatal(err)
	}
	vEv, err := vFake.WaitEvents(waitCtx(t, 20*time.Second), 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range amEv {
		a, v := amEv[i], vEv[i]
		if a.Action != v.Action || a.DedupKey != v.DedupKey {
			t.Errorf("event %d: alertmanager %s %s, vigil %s %s", i, a.Action, a.DedupKey, v.Action, v.DedupKey)
		}
		if a.Action == "trigger" {
			if a.Payload.Summary != v.Payload.Summary || a.Payload.Severity != v.Payload.Severity || a.Payload.Class != v.Payload.Class {
				t.Errorf("payload: alertmanager %+v\nvigil %+v", a.Payload, v.Payload)
			}
			for k := range a.Payload.CustomDetails {
				if _, ok := v.Payload.CustomDetails[k]; !ok {
					t.Errorf("custom_details lacks Alertmanager's %q", k)
				}
			}
		}
	}
	for _, r := range vFake.Requests() {
		if r.Status != 202 {
			t.Errorf("vigil request answered %d: %v", r.Status, r.Errors)
		}
	}
}
