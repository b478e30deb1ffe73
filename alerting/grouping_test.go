package alerting

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/notify/webhook"
)

func hookConfig(url, route, extra string) string {
	return fmt.Sprintf(`
route:
  receiver: hook
%s
receivers:
  - name: hook
    webhook_configs:
      - url: %s
%s`, route, url, extra)
}

// summary is "status: alertname/instance ..." of a webhook message.
func summary(m webhook.Message) string {
	var as []string
	for _, a := range m.Alerts {
		s := a.Labels["alertname"]
		if in := a.Labels["instance"]; in != "" {
			s += "/" + in
		}
		if a.Status == "resolved" {
			s += "(resolved)"
		}
		as = append(as, s)
	}
	sort.Strings(as)
	return m.Status + ": " + strings.Join(as, " ")
}

// TestGroupWaitCollectsAlerts: alerts arriving during group_wait go out together in
// the first notification, no earlier than group_wait.
func TestGroupWaitCollectsAlerts(t *testing.T) {
	sink := newWebhookSink(t)
	p, _ := newTestPipeline(t, hookConfig(sink.srv.URL, "  group_by: [alertname]\n  group_wait: 400ms\n  group_interval: 1h", ""), nil)
	start := time.Now()
	send(t, p, alert(start, time.Time{}, "alertname=A", "instance=1"))
	time.Sleep(100 * time.Millisecond)
	send(t, p, alert(time.Now(), time.Time{}, "alertname=A", "instance=2"), alert(time.Now(), time.Time{}, "alertname=B", "instance=1"))
	ms, err := sink.wait(waitCtx(t, 10*time.Second), 2)
	if err != nil {
		t.Fatal(err)
	}
	got := []string{summary(ms[0]), summary(ms[1])}
	sort.Strings(got)
	if want := "[firing: A/1 A/2 firing: B/1]"; fmt.Sprint(got) != want {
		t.Errorf("notifications %v, want %s", got, want)
	}
	if d := sink.times[0].Sub(start); d < 400*time.Millisecond {
		t.Errorf("first notification after %s, before group_wait", d)
	}
}

// TestOldAlertFlushesAtOnce: an alert that started longer than group_wait ago is
// sent at once (Alertmanager resets the timer to zero).
func TestOldAlertFlushesAtOnce(t *testing.T) {
	sink := newWebhookSink(t)
	p, _ := newTestPipeline(t, hookConfig(sink.srv.URL, "  group_wait: 1h", ""), nil)
	send(t, p, alert(time.Now().Add(-2*time.Hour), time.Time{}, "alertname=Old"))
	if _, err := sink.wait(waitCtx(t, 10*time.Second), 1); err != nil {
		t.Fatal(err)
	}
}

// TestGroupIntervalAndRepeat: a new alert in a notified group waits for the next
// group_interval; an unchanged group is re-notified after repeat_interval only; a
// resolution is sent at the next group_interval and ends the group.
func TestGroupIntervalAndRepeat(t *testing.T) {
	sink := newWebhookSink(t)
	p, _ := newTestPipeline(t, hookConfig(sink.srv.URL, "  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 300ms\n  repeat_interval: 1s", ""), nil)
	start := time.Now()
	send(t, p, alert(start, time.Time{}, "alertname=A", "instance=1"))
	if _, err := sink.wait(waitCtx(t, 10*time.Second), 1); err != nil {
		t.Fatal(err)
	}
	first := sink.times[0]
	time.Sleep(50 * time.Millisecond)
	send(t, p, alert(time.Now(), time.Time{}, "alertname=A", "instance=2"))
	ms, err := sink.wait(waitCtx(t, 10*time.Second), 2)
	if err != nil {
		t.Fatal(err)
	}
	if d := sink.times[1].Sub(first); d < 250*time.Millisecond {
		t.Errorf("second notification %s after the first, before group_interval", d)
	}
	if s := summary(ms[1]); s != "firing: A/1 A/2" {
		t.Errorf("second notification %q", s)
	}
	// Nothing changes: the next one is the repeat, ≥ repeat_interval after the last.
	ms, err = sink.wait(waitCtx(t, 10*time.Second), 3)
	if err != nil {
		t.Fatal(err)
	}
	if d := sink.times[2].Sub(sink.times[1]); d < 950*time.Millisecond {
		t.Errorf("repeat %s after the last notification, before repeat_interval", d)
	}
	if s := summary(ms[2]); s != "firing: A/1 A/2" {
		t.Errorf("repeat %q", s)
	}
	// Both resolve: one resolved notification, then nothing more.
	send(t, p, alert(start, time.Now(), "alertname=A", "instance=1"), alert(start, time.Now(), "alertname=A", "instance=2"))
	ms, err = sink.wait(waitCtx(t, 10*time.Second), 4)
	if err != nil {
		t.Fatal(err)
	}
	if s := summary(ms[3]); s != "resolved: A/1(resolved) A/2(resolved)" {
		t.Errorf("resolution %q", s)
	}
	time.Sleep(1500 * time.Millisecond)
	if n := len(sink.messages()); n != 4 {
		t.Errorf("%d notifications after the group resolved, want 4", n)
	}
}

// TestWholeGroupResolveFlushesAtOnce: Vigil's one deviation from Alertmanager's
// timers. A group whose last firing alert resolves is flushed at once rather than at
// its next group_interval (an hour here), so the resolve is not held back; a partial
// resolution keeps waiting for group_interval as in Alertmanager.
func TestWholeGroupResolveFlushesAtOnce(t *testing.T) {
	sink := newWebhookSink(t)
	p, _ := newTestPipeline(t, hookConfig(sink.srv.URL, "  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1h", ""), nil)
	start := time.Now().Add(-time.Second)
	send(t, p, alert(start, time.Time{}, "alertname=A", "instance=1"), alert(start, time.Time{}, "alertname=A", "instance=2"))
	if _, err := sink.wait(waitCtx(t, 10*time.Second), 1); err != nil {
		t.Fatal(err)
	}
	// One of the two resolves: nothing before the next group_interval.
	send(t, p, alert(start, time.Now(), "alertname=A", "instance=1"))
	time.Sleep(500 * time.Millisecond)
	if n := len(sink.messages()); n != 1 {
		t.Fatalf("%d notifications after a partial resolution, want 1 (it waits for group_interval)", n)
	}
	// The other one too: the group is resolved and flushed at once.
	send(t, p, alert(start, time.Now(), "alertname=A", "instance=2"))
	ms, err := sink.wait(waitCtx(t, 20*time.Second), 2)
	if err != nil {
		t.Fatalf("no resolved notification long before group_interval: %v", err)
	}
	if s := summary(ms[1]); s != "resolved: A/1(resolved) A/2(resolved)" {
		t.Errorf("resolution %q", s)
	}
	// The group is gone: a new firing alert makes a new group, sent after group_wait.
	send(t, p, alert(time.Now(), time.Time{}, "alertname=A", "instance=1"))
	ms, err = sink.wait(waitCtx(t, 20*time.Second), 3)
	if err != nil {
		t.Fatal(err)
	}
	if s := summary(ms[2]); s != "firing: A/1" {
		t.Errorf("after the resolution %q", s)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(sink.messages()); n != 3 {
		t.Errorf("%d notifications, want 3", n)
	}
}

// TestGroupingTable checks group_by variants and send_resolved: which notifications
// a set of alerts produces.
func TestGroupingTable(t *testing.T) {
	f := func(name, route, extra string, want ...string) {
		t.Run(name, func(t *testing.T) {
			sink := newWebhookSink(t)
			p, _ := newTestPipeline(t, hookConfig(sink.srv.URL, route+"\n  group_wait: 100ms\n  group_interval: 100ms", extra), nil)
			now := time.Now()
			send(t, p,
				alert(now, time.Time{}, "alertname=A", "instance=1", "job=x"),
				alert(now, time.Time{}, "alertname=A", "instance=2", "job=x"),
				alert(now, time.Time{}, "alertname=B", "instance=1", "job=y"),
				alert(now, now, "alertname=C", "instance=1", "job=y"))
			_, err := sink.wait(waitCtx(t, 10*time.Second), len(want))
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond)
			ms := sink.messages()
			var got []string
			for _, m := range ms {
				got = append(got, summary(m))
			}
			sort.Strings(got)
			sort.Strings(want)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("got %q\nwant %q", got, want)
			}
		})
	}
	f("no group_by: one group", "", "", "firing: A/1 A/2 B/1 C/1(resolved)")
	f("by alertname", "  group_by: [alertname]", "", "firing: A/1 A/2", "firing: B/1")
	f("by job", "  group_by: [job]", "", "firing: A/1 A/2", "firing: B/1 C/1(resolved)")
	f("by all labels", "  group_by: ['...']", "", "firing: A/1", "firing: A/2", "firing: B/1")
	f("send_resolved false", "  group_by: [job]", "        send_resolved: false\n", "firing: A/1 A/2", "firing: B/1")
	f("child route with continue", `  group_by: [alertname]
  routes:
    - matchers: [job="x"]
      continue: true
      group_by: [instance]
    - matchers: [alertname=~"A|B"]`, "", "firing: A/1", "firing: A/2", "firing: A/1 A/2", "firing: B/1")
	// A group whose only alert is already resolved is never notified.
	f("resolved-only group", "  group_by: [alertname]\n  routes:\n    - matchers: [alertname=\"C\"]", "", "firing: A/1 A/2", "firing: B/1")
}

// TestTimeIntervals: mute_time_intervals covering now suppress a route's
// notifications; active_time_intervals not covering now do too.
func TestTimeIntervals(t *testing.T) {
	weekday := time.Now().UTC().Weekday().String()
	other := time.Now().UTC().Add(48 * time.Hour).Weekday().String()
	intervals := fmt.Sprintf(`time_intervals:
  - name: today
    time_intervals: [{weekdays: [%s]}]
  - name: otherday
    time_intervals: [{weekdays: [%s]}]
`, strings.ToLower(weekday), strings.ToLower(other))
	f := func(name, route string, wantSent bool) {
		t.Run(name, func(t *testing.T) {
			sink := newWebhookSink(t)
			doc := hookConfig(sink.srv.URL, "  group_wait: 0s\n  group_by: [alertname]\n  routes:\n    - matchers: [alertname=\"A\"]\n"+route, "") + intervals
			p, _ := newTestPipeline(t, doc, nil)
			send(t, p, alert(time.Now(), time.Time{}, "alertname=A"), alert(time.Now(), time.Time{}, "alertname=Control"))
			_, err := sink.wait(waitCtx(t, 10*time.Second), 1)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond)
			ms := sink.messages()
			sentA := false
			for _, m := range ms {
				if m.GroupLabels["alertname"] == "A" {
					sentA = true
				}
			}
			if sentA != wantSent {
				t.Errorf("alert A sent = %t, want %t (%d notifications)", sentA, wantSent, len(ms))
			}
		})
	}
	f("muted today", "      mute_time_intervals: [today]\n", false)
	f("mute another day", "      mute_time_intervals: [otherday]\n", true)
	f("active today", "      active_time_intervals: [today]\n", true)
	f("active another day", "      active_time_intervals: [otherday]\n", false)
}

// TestInhibitionTable checks Alertmanager's inhibition rules: equal labels, a
// resolved source inhibits nothing, an alert matching both sides is not inhibited by
// alerts that also match both.
func TestInhibitionTable(t *testing.T) {
	rule := `inhibit_rules:
  - source_matchers: [severity="critical"]
    target_matchers: [severity=~"warning|critical"]
    equal: [cluster]
`
	f := func(name string, as []Alert, want ...string) {
		t.Run(name, func(t *testing.T) {
			sink := newWebhookSink(t)
			p, _ := newTestPipeline(t, hookConfig(sink.srv.URL, "  group_wait: 100ms\n  group_by: ['...']", "")+rule, nil)
			send(t, p, as...)
			time.Sleep(400 * time.Millisecond)
			var got []string
			for _, m := range sink.messages() {
				got = append(got, summary(m))
			}
			sort.Strings(got)
			sort.Strings(want)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
	now := time.Now()
	f("same cluster inhibited", []Alert{
		alert(now, time.Time{}, "alertname=Down", "severity=critical", "cluster=a"),
		alert(now, time.Time{}, "alertname=Slow", "severity=warning", "cluster=a"),
	}, "firing: Down")
	f("other cluster not inhibited", []Alert{
		alert(now, time.Time{}, "alertname=Down", "severity=critical", "cluster=a"),
		alert(now, time.Time{}, "alertname=Slow", "severity=warning", "cluster=b"),
	}, "firing: Down", "firing: Slow")
	f("resolved source inhibits nothing", []Alert{
		alert(now, now, "alertname=Down", "severity=critical", "cluster=a"),
		alert(now, time.Time{}, "alertname=Slow", "severity=warning", "cluster=a"),
	}, "firing: Slow")
	f("both sides do not inhibit each other", []Alert{
		alert(now, time.Time{}, "alertname=Down", "severity=critical", "cluster=a"),
		alert(now, time.Time{}, "alertname=Down2", "severity=critical", "cluster=a"),
	}, "firing: Down", "firing: Down2")
	f("missing equal label on both counts as equal", []Alert{
		alert(now, time.Time{}, "alertname=Down", "severity=critical"),
		alert(now, time.Time{}, "alertname=Slow", "severity=warning"),
	}, "firing: Down")
}

// TestWebhookMessage: Alertmanager's webhook JSON (version 4) with max_alerts.
func TestWebhookMessage(t *testing.T) {
	sink := newWebhookSink(t)
	p, _ := newTestPipeline(t, hookConfig(sink.srv.URL, "  group_wait: 100ms\n  group_by: [job]", "        max_alerts: 2\n"), nil)
	now := time.Now()
	send(t, p, alert(now, time.Time{}, "alertname=A", "job=j"), alert(now, time.Time{}, "alertname=B", "job=j"), alert(now, time.Time{}, "alertname=C", "job=j"))
	ms, err := sink.wait(waitCtx(t, 10*time.Second), 1)
	if err != nil {
		t.Fatal(err)
	}
	m := ms[0]
	if m.Version != "4" || m.GroupKey != `{}:{job="j"}` || m.TruncatedAlerts != 1 || len(m.Alerts) != 2 || m.Receiver != "hook" ||
		m.Status != "firing" || m.GroupLabels["job"] != "j" || m.CommonLabels["job"] != "j" || m.ExternalURL != "http://vigil.example:9201" {
		t.Errorf("message %+v", m)
	}
	a := m.Alerts[0]
	if a.Fingerprint == "" || a.GeneratorURL == "" || a.Annotations["summary"] != "it broke" || a.StartsAt.IsZero() {
		t.Errorf("alert %+v", a)
	}
}

// TestWebhookHTTPConfig: a webhook's http_config (here a bearer token from a file) is
// applied, as in Alertmanager.
func TestWebhookHTTPConfig(t *testing.T) {
	got := make(chan string, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Authorization")
	}))
	defer srv.Close()
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("s3cret\n"), 0o600)
	doc := hookConfig(srv.URL, "  group_wait: 0s", "        http_config:\n          authorization:\n            credentials_file: "+tok+"\n")
	p, _ := newTestPipeline(t, doc, nil)
	send(t, p, alert(time.Now(), time.Time{}, "alertname=Auth"))
	select {
	case h := <-got:
		if h != "Bearer s3cret" {
			t.Errorf("Authorization %q, want Bearer s3cret", h)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no request")
	}
}
