package alerting

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vigilhq/vigil/alerting/pagerdutyfake"
	"github.com/vigilhq/vigil/logcore"
)

// TestMain doubles as the child process of the kill -9 tests.
func TestMain(m *testing.M) {
	if spec := os.Getenv("VIGIL_ALERTING_CHILD"); spec != "" {
		os.Exit(childMain(spec))
	}
	os.Exit(m.Run())
}

// childMain runs a pipeline on the log in dir, sending to the fake at url, sends
// one firing alert and waits to be killed.
func childMain(spec string) int {
	dir, url, _ := strings.Cut(spec, "|")
	l := openTestLog(nopTB{}, dir)
	p, err := New(Options{Config: mustConfig(nopTB{}, pdConfig(url, "")), Log: l, RequestTimeout: time.Hour})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := p.Send(context.Background(), []Alert{alert(time.Now(), time.Time{}, "alertname=Kill9", "severity=critical")}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	time.Sleep(time.Hour)
	return 0
}

// nopTB lets the test helpers run in the child, where there is no *testing.T.
type nopTB struct{ testing.TB }

func (nopTB) Helper()                   {}
func (nopTB) Fatalf(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...); os.Exit(1) }
func (nopTB) Fatal(a ...any)            { fmt.Fprintln(os.Stderr, a...); os.Exit(1) }

// outageConfig routes every alert (grouped by alertname) to PagerDuty at url.
func fastOptions(o *Options) {
	o.RequestTimeout = 200 * time.Millisecond
	o.BackoffInitial = 10 * time.Millisecond
	o.BackoffMax = 100 * time.Millisecond
	o.BreakerCooldown = 100 * time.Millisecond
}

// TestDeliveryAfterOutage: PagerDuty answers 500, or hangs, while pages pile up;
// once it recovers every page is delivered, in order per dedup_key, none twice.
func TestDeliveryAfterOutage(t *testing.T) {
	for _, mode := range []pagerdutyfake.Mode{pagerdutyfake.ServerError, pagerdutyfake.Hang} {
		t.Run(fmt.Sprint(map[pagerdutyfake.Mode]string{pagerdutyfake.ServerError: "500", pagerdutyfake.Hang: "hang"}[mode]), func(t *testing.T) {
			fake := pagerdutyfake.New()
			defer fake.Close()
			fake.SetMode(mode)
			p, _ := newTestPipeline(t, pdConfig(fake.EnqueueURL(), ""), fastOptions)
			start := time.Now()
			const n = 6
			for i := 0; i < n; i++ {
				send(t, p, alert(start, time.Time{}, fmt.Sprintf("alertname=A%d", i), "severity=warning"))
			}
			// Let the first groups flush, then resolve half of them during the outage.
			if err := fake.WaitRequests(waitCtx(t, 10*time.Second), 3); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
			for i := 0; i < n; i += 2 {
				send(t, p, alert(start, time.Now(), fmt.Sprintf("alertname=A%d", i), "severity=warning"))
			}
			time.Sleep(300 * time.Millisecond)
			if got := len(fake.Events()); got != 0 {
				t.Fatalf("%d events accepted during the outage", got)
			}
			fake.SetMode(pagerdutyfake.Accept)
			_, err := fake.WaitEvents(waitCtx(t, 20*time.Second), n+n/2)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
			ev := fake.Events()
			if len(ev) != n+n/2 {
				for _, e := range ev {
					t.Logf("%s %s %s", e.Received.Sub(start), e.Action, e.DedupKey)
				}
				t.Fatalf("%d events accepted, want %d", len(ev), n+n/2)
			}
			seen := map[string]bool{}
			last := map[string]string{}
			for _, e := range ev {
				k := e.DedupKey + " " + e.Action
				if seen[k] {
					t.Errorf("%s delivered twice", k)
				}
				seen[k] = true
				if e.Action == "trigger" && last[e.DedupKey] != "" {
					t.Errorf("trigger of %s after its %s", e.DedupKey, last[e.DedupKey])
				}
				last[e.DedupKey] = e.Action
			}
			if inc := fake.Incidents(); len(inc) != n {
				t.Errorf("%d incidents, want %d", len(inc), n)
			}
			if p.metrics.failed("oncall").Get() == 0 {
				t.Error("failed attempts not counted")
			}
			if got := p.metrics.sent("oncall").Get(); got != uint64(n+n/2) {
				t.Errorf("sent_total %d, want %d", got, n+n/2)
			}
		})
	}
}

// TestRetryAfterHonoured: a 429's Retry-After delays the retry at least that long.
func TestRetryAfterHonoured(t *testing.T) {
	fake := pagerdutyfake.New()
	defer fake.Close()
	fake.SetRetryAfter(time.Second)
	fake.FailNext(1, pagerdutyfake.RateLimit)
	p, _ := newTestPipeline(t, pdConfig(fake.EnqueueURL(), ""), fastOptions)
	send(t, p, alert(time.Now(), time.Time{}, "alertname=Throttled", "severity=info"))
	if _, err := fake.WaitEvents(waitCtx(t, 10*time.Second), 1); err != nil {
		t.Fatal(err)
	}
	rs := fake.Requests()
	if len(rs) != 2 || rs[0].Status != 429 {
		t.Fatalf("requests %v, want a 429 then the accepted retry", rs)
	}
	if gap := rs[1].Received.Sub(rs[0].Received); gap < 950*time.Millisecond {
		t.Errorf("retried after %s, before Retry-After's 1s", gap)
	}
}

// TestCircuitBreakerIsolation: a hanging receiver opens its breaker and does not
// delay another receiver's pages.
func TestCircuitBreakerIsolation(t *testing.T) {
	dead, alive := pagerdutyfake.New(), pagerdutyfake.New()
	defer dead.Close()
	defer alive.Close()
	dead.SetMode(pagerdutyfake.Hang)
	doc := fmt.Sprintf(`
route:
  receiver: alive
  group_wait: 0s
  group_by: [alertname]
  routes:
    - matchers: [team="dead"]
      receiver: dead
receivers:
  - name: alive
    pagerduty_configs: [{routing_key: %[1]s, url: %[2]s}]
  - name: dead
    pagerduty_configs: [{routing_key: %[1]s, url: %[3]s}]
`, testRoutingKey, alive.EnqueueURL(), dead.EnqueueURL())
	p, _ := newTestPipeline(t, doc, func(o *Options) {
		fastOptions(o)
		o.RequestTimeout = 100 * time.Millisecond
		o.BreakerFailures = 2
		o.BreakerCooldown = 700 * time.Millisecond
	})
	send(t, p, alert(time.Now(), time.Time{}, "alertname=D", "team=dead"))
	if err := dead.WaitRequests(waitCtx(t, 10*time.Second), 3); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		send(t, p, alert(time.Now(), time.Time{}, fmt.Sprintf("alertname=L%d", i)))
	}
	if _, err := alive.WaitEvents(waitCtx(t, 10*time.Second), 5); err != nil {
		t.Fatalf("the healthy receiver was held up by the dead one: %v", err)
	}
	rs := dead.Requests()
	// After 2 failures the breaker opens for 700ms: the third attempt comes late.
	if gap := rs[2].Received.Sub(rs[1].Received); gap < 600*time.Millisecond {
		t.Errorf("third attempt %s after the second; the breaker should hold it ~700ms", gap)
	}
	if len(dead.Events()) != 0 {
		t.Error("the dead receiver accepted events")
	}
}

// TestRateLimitPerIntegration: no more than the rate limit's burst is sent at once.
func TestRateLimitPerIntegration(t *testing.T) {
	fake := pagerdutyfake.New()
	defer fake.Close()
	p, _ := newTestPipeline(t, pdConfig(fake.EnqueueURL(), ""), func(o *Options) { o.RateLimit = 60 }) // burst 10, then 50/min
	start := time.Now()
	for i := 0; i < 11; i++ {
		send(t, p, alert(start, time.Time{}, fmt.Sprintf("alertname=R%d", i)))
	}
	ev, err := fake.WaitEvents(waitCtx(t, 20*time.Second), 11)
	if err != nil {
		t.Fatal(err)
	}
	if gap := ev[10].Received.Sub(ev[0].Received); gap < time.Second {
		t.Errorf("11 events within %s; the limit allows a burst of 10 then 50 a minute", gap)
	}
}

// TestRestartResumesDelivery: notifications pending at Close are delivered once
// after the pipeline is opened again on the same log, and the notification log
// keeps the group from being notified again.
func TestRestartResumesDelivery(t *testing.T) {
	fake := pagerdutyfake.New()
	defer fake.Close()
	fake.SetMode(pagerdutyfake.ServerError)
	dir := t.TempDir()
	l := openTestLog(t, dir)
	cfg := pdConfig(fake.EnqueueURL(), "")
	p, err := New(Options{Config: mustConfig(t, cfg), Log: l, Metrics: metrics.NewSet()})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	send(t, p, alert(start, time.Time{}, "alertname=Pending", "severity=critical"))
	if err := fake.WaitRequests(waitCtx(t, 10*time.Second), 1); err != nil {
		t.Fatal(err)
	}
	p.Close(context.Background())
	l.Close()

	fake.SetMode(pagerdutyfake.Accept)
	l = openTestLog(t, dir)
	defer l.Close()
	p, err = New(Options{Config: mustConfig(t, cfg), Log: l, Metrics: metrics.NewSet()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	if _, err := fake.WaitEvents(waitCtx(t, 10*time.Second), 1); err != nil {
		// Say whether the notification was in the log after the reopen (pending in
		// the outbox) or was never taken up again, and what the fake received.
		var offsets any
		if tp, terr := l.Topic(OutboxTopic, logcore.TopicConfig{Partitions: 1, Compacted: true}); terr == nil {
			offsets = tp.Stats(0)
		} else {
			offsets = terr
		}
		t.Fatalf("%v; after the reopen: %d notifications pending, outbox %+v; the fake received %d requests",
			err, p.outbox.pending(), offsets, len(fake.Requests()))
	}
	// The rules re-send the firing alert after the restart: no new notification.
	send(t, p, alert(start, time.Time{}, "alertname=Pending", "severity=critical"))
	time.Sleep(300 * time.Millisecond)
	if ev := fake.Events(); len(ev) != 1 {
		t.Fatalf("%d events after the restart, want 1", len(ev))
	}
	// It resolves: the resolve goes out with the same dedup_key.
	send(t, p, alert(start, time.Now(), "alertname=Pending", "severity=critical"))
	ev, err := fake.WaitEvents(waitCtx(t, 10*time.Second), 2)
	if err != nil {
		t.Fatal(err)
	}
	if ev[1].Action != "resolve" || ev[1].DedupKey != ev[0].DedupKey {
		t.Fatalf("after restart got %s %s, want resolve %s", ev[1].Action, ev[1].DedupKey, ev[0].DedupKey)
	}
}

// TestKill9DuringDelivery kills a child process running the pipeline with -9 while
// its page is in flight, then opens the same log: the page is delivered, and
// PagerDuty has exactly one incident. When PagerDuty had accepted the event before
// the kill (its answer lost), the resend carries the same dedup_key: a repeat
// PagerDuty folds into the same incident.
func TestKill9DuringDelivery(t *testing.T) {
	for name, mode := range map[string]pagerdutyfake.Mode{"not-accepted": pagerdutyfake.Hang, "accepted-answer-lost": pagerdutyfake.AcceptHang} {
		t.Run(name, func(t *testing.T) {
			fake := pagerdutyfake.New()
			defer fake.Close()
			fake.SetMode(mode)
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "VIGIL_ALERTING_CHILD="+dir+"|"+fake.EnqueueURL())
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			if err := fake.WaitRequests(waitCtx(t, 20*time.Second), 1); err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("%v; child: %s", err, stderr.String())
			}
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()
			fake.SetMode(pagerdutyfake.Accept)

			l := openTestLog(t, dir)
			defer l.Close()
			p, err := New(Options{Config: mustConfig(t, pdConfig(fake.EnqueueURL(), "")), Log: l, Metrics: metrics.NewSet()})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close(context.Background())
			want := 1
			if mode == pagerdutyfake.AcceptHang {
				want = 2
			}
			ev, err := fake.WaitEvents(waitCtx(t, 10*time.Second), want)
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
			if got := len(fake.Events()); got != want {
				t.Fatalf("%d events, want %d", got, want)
			}
			for _, e := range ev {
				if e.Action != "trigger" || e.DedupKey != ev[0].DedupKey {
					t.Errorf("event %s %s, want triggers of %s", e.Action, e.DedupKey, ev[0].DedupKey)
				}
			}
			if inc := fake.Incidents(); len(inc) != 1 {
				t.Fatalf("%d incidents, want 1", len(inc))
			}
		})
	}
}
