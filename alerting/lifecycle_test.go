package alerting

import (
	"fmt"
	"testing"
	"time"

	"github.com/vigilhq/vigil/logcore"
)

// TestResolveTimeout: a firing alert not sent again resolves after
// global.resolve_timeout (or at its ValidUntil), as in Alertmanager.
func TestResolveTimeout(t *testing.T) {
	sink := newWebhookSink(t)
	doc := "global:\n  resolve_timeout: 400ms\n" + hookConfig(sink.srv.URL, "  group_wait: 0s\n  group_interval: 100ms\n  group_by: [alertname]", "")
	p, _ := newTestPipeline(t, doc, nil)
	start := time.Now()
	send(t, p, alert(start, time.Time{}, "alertname=Timeout"))
	long := alert(start, time.Time{}, "alertname=Valid")
	long.ValidUntil = start.Add(time.Hour)
	send(t, p, long)
	ms, err := sink.wait(waitCtx(t, 10*time.Second), 3)
	if err != nil {
		t.Fatal(err)
	}
	var resolvedTimeout, resolvedValid bool
	for i, m := range ms {
		if m.Status == "resolved" && m.GroupLabels["alertname"] == "Timeout" {
			resolvedTimeout = true
			if d := sink.times[i].Sub(start); d < 400*time.Millisecond {
				t.Errorf("resolved after %s, before resolve_timeout", d)
			}
		}
		if m.Status == "resolved" && m.GroupLabels["alertname"] == "Valid" {
			resolvedValid = true
		}
	}
	time.Sleep(300 * time.Millisecond)
	if !resolvedTimeout || resolvedValid {
		t.Errorf("resolved: timeout alert %t (want true), alert valid for an hour %t (want false)", resolvedTimeout, resolvedValid)
	}
}

// TestReload: a reload rebuilds the groups under the new route tree without sending
// again what was already sent, and sends to the new receivers from then on.
func TestReload(t *testing.T) {
	a, b := newWebhookSink(t), newWebhookSink(t)
	doc := func(url string) string {
		return hookConfig(url, "  group_wait: 0s\n  group_interval: 100ms\n  group_by: [alertname]", "")
	}
	p, _ := newTestPipeline(t, doc(a.srv.URL), nil)
	start := time.Now()
	send(t, p, alert(start, time.Time{}, "alertname=R1"))
	if _, err := a.wait(waitCtx(t, 10*time.Second), 1); err != nil {
		t.Fatal(err)
	}
	// Same receiver name and route: nothing new to send after the reload.
	if err := p.Reload(mustConfig(t, doc(a.srv.URL))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	if n := len(a.messages()); n != 1 {
		t.Errorf("%d notifications after a no-op reload, want 1", n)
	}
	// A new receiver (other name): its first notification goes out.
	other := fmt.Sprintf(`
route:
  receiver: other
  group_wait: 0s
  group_interval: 100ms
  group_by: [alertname]
receivers:
  - name: other
    webhook_configs: [{url: %s}]
`, b.srv.URL)
	if err := p.Reload(mustConfig(t, other)); err != nil {
		t.Fatal(err)
	}
	ms, err := b.wait(waitCtx(t, 10*time.Second), 1)
	if err != nil {
		t.Fatal(err)
	}
	if ms[0].Receiver != "other" || ms[0].GroupLabels["alertname"] != "R1" {
		t.Errorf("after reload: %+v", ms[0])
	}
}

// TestRestartRestoresGroups: the pipeline's alerts survive a restart (alerts topic),
// so a group is rebuilt before the rules re-send anything: an alert joining it after
// the restart is notified together with the one from before, and nothing already
// notified is sent again.
func TestRestartRestoresGroups(t *testing.T) {
	sink := newWebhookSink(t)
	dir := t.TempDir()
	doc := hookConfig(sink.srv.URL, "  group_wait: 0s\n  group_interval: 100ms\n  group_by: [alertname]", "")
	l := openTestLog(t, dir)
	p, err := New(Options{Config: mustConfig(t, doc), Log: l})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	send(t, p, alert(start, time.Time{}, "alertname=G", "instance=1"))
	if _, err := sink.wait(waitCtx(t, 10*time.Second), 1); err != nil {
		t.Fatal(err)
	}
	p.Close(t.Context())
	l.Close()

	l = openTestLog(t, dir)
	defer l.Close()
	p, err = New(Options{Config: mustConfig(t, doc), Log: l})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(t.Context())
	time.Sleep(300 * time.Millisecond)
	if n := len(sink.messages()); n != 1 {
		for _, m := range sink.messages() {
			t.Logf("%s %s", m.NotificationReason, summary(m))
		}
		t.Fatalf("%d notifications after the restart alone, want 1", n)
	}
	send(t, p, alert(time.Now(), time.Time{}, "alertname=G", "instance=2"))
	ms, err := sink.wait(waitCtx(t, 10*time.Second), 2)
	if err != nil {
		t.Fatal(err)
	}
	if s := summary(ms[1]); s != "firing: G/1 G/2" {
		t.Errorf("after restart: %q, want both alerts", s)
	}
}

// TestUndecodableRecordsSkipped: a record of the pipeline's topics that does not
// decode is reported and skipped; the pipeline starts and the good records count.
func TestUndecodableRecordsSkipped(t *testing.T) {
	dir := t.TempDir()
	l := openTestLog(t, dir)
	for _, name := range []string{OutboxTopic, SilencesTopic, AlertsTopic} {
		tp, err := l.Topic(name, logcore.TopicConfig{Partitions: 1, Compacted: true})
		if err != nil {
			t.Fatal(err)
		}
		key := "o\x00x/webhook/0\x00k\x000000000000000001"
		if name == AlertsTopic {
			key = "zz-not-a-fingerprint"
		}
		if _, err := tp.Append(t.Context(), 0, []logcore.Record{{Key: []byte(key), Value: []byte("{not json")}}); err != nil {
			t.Fatal(err)
		}
	}
	sink := newWebhookSink(t)
	p, err := New(Options{Config: mustConfig(t, hookConfig(sink.srv.URL, "  group_wait: 0s", "")), Log: l})
	if err != nil {
		t.Fatalf("New with undecodable records: %v", err)
	}
	defer l.Close()
	defer p.Close(t.Context())
	send(t, p, alert(time.Now(), time.Time{}, "alertname=AfterBadRecords"))
	if _, err := sink.wait(waitCtx(t, 10*time.Second), 1); err != nil {
		t.Fatal(err)
	}
}
