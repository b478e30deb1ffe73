package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/vigilhq/vigil/alerting/pagerdutyfake"
)

const e2eRoutingKey = "e2e0123456789abcdef0123456789abc"

// alertingSetup writes a rule file (alert E2ELatency on vigil_e2e_latency > 10,
// evaluated on arrival and every second) and a vigil.yaml paging the fake PagerDuty, and returns the
// config path and the data dir.
func alertingSetup(t *testing.T, fake *pagerdutyfake.Server) (cfg, dataDir string) {
	t.Helper()
	return alertingSetupWith(t, fake, "1s", "100ms")
}

// alertingSetupWith is alertingSetup with the rule group's interval and the route's
// group_interval given.
func alertingSetupWith(t *testing.T, fake *pagerdutyfake.Server, interval, groupInterval string) (cfg, dataDir string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "rules"), 0o755); err != nil {
		t.Fatal(err)
	}
	rule := `groups:
  - name: e2e
    interval: ` + interval + `
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
    group_interval: %s
  receivers:
    - name: oncall
      pagerduty_configs:
        - routing_key_file: %s
          url: %s
          severity: '{{ .CommonLabels.severity }}'
`, groupInterval, keyFile, fake.EnqueueURL())
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

	// The sender counts a notification once its delivery is recorded, just after
	// the fake answered: wait for the count.
	var metrics string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, metrics = p.get(t, "/metrics")
		if strings.Contains(metrics, `vigil_notifications_sent_total{receiver="oncall"} 3`) || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range []string{`vigil_notifications_sent_total{receiver="oncall"} 3`, `vigil_notifications_failed_total{receiver="oncall"} 0`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
			for _, l := range strings.Split(metrics, "\n") {
				if strings.HasPrefix(l, "vigil_notifications_") {
					t.Log(l)
				}
			}
			for _, e := range fake.Events() {
				t.Logf("event %s %s", e.Action, e.DedupKey)
			}
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

// TestServeAlertingResolveOnArrival: with a rule evaluated every hour (on arrival in
// between) and a group_interval of an hour, the recovering sample's resolve reaches
// the fake PagerDuty at once, long before either interval: the rules resolve on
// arrival, and the group, its last alert resolved, is flushed at once. A relapse
// before the next slot pages again (a new trigger with the same dedup_key).
func TestServeAlertingResolveOnArrival(t *testing.T) {
	fake := pagerdutyfake.New()
	defer fake.Close()
	cfg, dataDir := alertingSetupWith(t, fake, "1h", "1h")
	p := startVigil(t, dataDir, "--config", cfg)

	rulesRemoteWrite(t, p.addr, "vigil_e2e_latency", 25, time.Now())
	trig := waitEvents(t, fake, 1)[0]
	if trig.Action != "trigger" {
		t.Fatalf("first event %s, want trigger", trig.Action)
	}
	t0 := time.Now()
	rulesRemoteWrite(t, p.addr, "vigil_e2e_latency", 3, time.Now())
	ev := waitEvents(t, fake, 2)
	t.Logf("resolve %s after the write", time.Since(t0))
	if ev[1].Action != "resolve" || ev[1].DedupKey != trig.DedupKey {
		t.Fatalf("second event %s %s, want resolve %s", ev[1].Action, ev[1].DedupKey, trig.DedupKey)
	}
	if code, body := p.get(t, "/api/v1/alerts"); code != 200 || strings.Contains(body, "E2ELatency") {
		t.Errorf("GET /api/v1/alerts after the resolve: %d %s", code, body)
	}

	rulesRemoteWrite(t, p.addr, "vigil_e2e_latency", 40, time.Now())
	ev = waitEvents(t, fake, 3)
	if ev[2].Action != "trigger" || ev[2].DedupKey != trig.DedupKey {
		t.Fatalf("third event %s %s, want trigger %s", ev[2].Action, ev[2].DedupKey, trig.DedupKey)
	}
	rulesRemoteWrite(t, p.addr, "vigil_e2e_latency", 1, time.Now())
	ev = waitEvents(t, fake, 4)
	if ev[3].Action != "resolve" || ev[3].DedupKey != trig.DedupKey {
		t.Fatalf("fourth event %s %s, want resolve %s", ev[3].Action, ev[3].DedupKey, trig.DedupKey)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(fake.Events()); n != 4 {
		t.Errorf("%d events, want 4", n)
	}
	for _, r := range fake.Requests() {
		if r.Status != 202 {
			t.Errorf("request answered %d: %v", r.Status, r.Errors)
		}
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
	waitEvents(t, fake, 1)
	time.Sleep(time.Second)
	if ev := fake.Events(); len(ev) != 1 || ev[0].Action != "trigger" {
		t.Fatalf("events after restart %+v, want one trigger", ev)
	}
	if inc := fake.Incidents(); len(inc) != 1 {
		t.Fatalf("%d incidents, want 1", len(inc))
	}
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// benchWrite sends one remote-write 1.0 request and returns when it was acknowledged.
func benchWrite(tb testing.TB, client *http.Client, addr string, series []prompb.TimeSeries) time.Time {
	req := &prompb.WriteRequest{Timeseries: series}
	raw, err := req.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	hreq, _ := http.NewRequest("POST", "http://"+addr+"/api/v1/write", bytes.NewReader(snappy.Encode(nil, raw)))
	hreq.Header.Set("Content-Type", "application/x-protobuf")
	hreq.Header.Set("Content-Encoding", "snappy")
	hreq.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	resp, err := client.Do(hreq)
	if err != nil {
		tb.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		tb.Fatalf("remote write to %s: %d %s", addr, resp.StatusCode, body)
	}
	return time.Now()
}

// backgroundLoad remote-writes about perSecond samples a second (10 requests a
// second over 10k series) to addr until stop is closed.
func backgroundLoad(tb testing.TB, addr string, perSecond int, stop chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		client := &http.Client{Timeout: 30 * time.Second}
		per := perSecond / 10
		series := make([]prompb.TimeSeries, per)
		for i := range series {
			series[i].Labels = []prompb.Label{{Name: "__name__", Value: "vigil_bench_load"}, {Name: "i", Value: strconv.Itoa(i)}}
			series[i].Samples = []prompb.Sample{{}}
		}
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case now := <-t.C:
				for i := range series {
					series[i].Samples[0] = prompb.Sample{Value: float64(n), Timestamp: now.UnixMilli()}
				}
				req := &prompb.WriteRequest{Timeseries: series}
				raw, _ := req.Marshal()
				hreq, _ := http.NewRequest("POST", "http://"+addr+"/api/v1/write", bytes.NewReader(snappy.Encode(nil, raw)))
				hreq.Header.Set("Content-Type", "application/x-protobuf")
				hreq.Header.Set("Content-Encoding", "snappy")
				hreq.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
				if resp, err := client.Do(hreq); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}
	}()
	return &wg
}

// startProc runs a command until the benchmark ends, and waits for url to answer 200.
func startProc(tb testing.TB, url string, name string, args ...string) {
	tb.Helper()
	cmd := exec.Command(name, args...)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if tb.Failed() {
			tb.Logf("%s output:\n%s", name, out.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s not ready: %v\n%s", name, err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BenchmarkPagingEndToEnd measures paging latency from a remote-write being
// acknowledged to the fake PagerDuty receiving the trigger (a rule on the raw series,
// for: 0, group_wait 0s), and the same for the resolve, under a background load of
// 100k samples/s, for Vigil and for the Debian prometheus (evaluation_interval 1s)
// with the Debian prometheus-alertmanager (group_wait 0s, group_interval 1s). Each
// op is 10 pages; p50 and p99 are reported in ms. Each write waits until eventGap
// after the previous event reached the fake, so that the probe stays within
// PagerDuty's 120 events a minute per routing key, which Vigil's sender enforces (a
// burst of 20, then one event per 600ms): faster, the benchmark would measure that
// limit rather than latency. It also makes each incident last at least that long,
// as real ones do. A random extra wait of up to 1s keeps the writes from locking to
// one phase of the peers' evaluation interval.
func BenchmarkPagingEndToEnd(b *testing.B) {
	const (
		rounds   = 10
		eventGap = 600 * time.Millisecond
	)
	rule := `groups:
  - name: bench
    interval: 1s
    rules:
      - alert: BenchPage
        expr: vigil_bench_page > 10
`
	run := func(b *testing.B, writeAddr string, fake *pagerdutyfake.Server, debug ...string) {
		stop := make(chan struct{})
		wg := backgroundLoad(b, writeAddr, 100000, stop)
		defer func() { close(stop); wg.Wait() }()
		time.Sleep(time.Second)
		client := &http.Client{Timeout: 30 * time.Second}
		var trig, res []time.Duration
		var lastEvent time.Time
		// A random extra wait of up to a second spreads the writes over the peers'
		// evaluation interval instead of locking them to one phase of it.
		rnd := rand.New(rand.NewPCG(1, 2))
		pace := func() {
			time.Sleep(time.Until(lastEvent.Add(eventGap + time.Duration(rnd.Int64N(int64(time.Second))))))
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			for r := 0; r < rounds; r++ {
				ls := []prompb.Label{{Name: "__name__", Value: "vigil_bench_page"}, {Name: "round", Value: fmt.Sprintf("%d-%d", i, r)}}
				n := len(fake.Events())
				pace()
				acked := benchWrite(b, client, writeAddr, []prompb.TimeSeries{{Labels: ls, Samples: []prompb.Sample{{Value: 20, Timestamp: time.Now().UnixMilli()}}}})
				ctx, cancel := contextWithTimeout(time.Minute)
				_, err := fake.WaitEvents(ctx, n+1)
				cancel()
				if err != nil {
					for _, r := range fake.Requests() {
						b.Logf("request answered %d: %v", r.Status, r.Errors)
					}
					for _, u := range debug {
						if resp, err := http.Get(u); err == nil {
							body, _ := io.ReadAll(resp.Body)
							resp.Body.Close()
							b.Logf("%s: %s", u, body)
						}
					}
					b.Fatal(err)
				}
				lastEvent = time.Now()
				trig = append(trig, lastEvent.Sub(acked))
				pace()
				acked = benchWrite(b, client, writeAddr, []prompb.TimeSeries{{Labels: ls, Samples: []prompb.Sample{{Value: 0, Timestamp: time.Now().UnixMilli()}}}})
				ctx, cancel = contextWithTimeout(time.Minute)
				_, err = fake.WaitEvents(ctx, n+2)
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				lastEvent = time.Now()
				res = append(res, lastEvent.Sub(acked))
			}
		}
		b.StopTimer()
		for _, e := range fake.Events()[:2] {
			if e.Action != "trigger" && e.Action != "resolve" {
				b.Fatalf("unexpected event %+v", e)
			}
		}
		report := func(name string, d []time.Duration) {
			sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
			b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, name+"-p50-ms")
			b.ReportMetric(float64(d[(len(d)*99)/100].Microseconds())/1000, name+"-p99-ms")
		}
		report("trigger", trig)
		report("resolve", res)
	}

	b.Run("vigil", func(b *testing.B) {
		bin, err := vigilBinary()
		if err != nil {
			b.Fatal(err)
		}
		fake := pagerdutyfake.New()
		defer fake.Close()
		dir := b.TempDir()
		os.MkdirAll(filepath.Join(dir, "rules"), 0o755)
		os.WriteFile(filepath.Join(dir, "rules", "bench.yml"), []byte(rule), 0o644)
		addr := freePortTB(b)
		cfg := fmt.Sprintf(`data_dir: %s/data
rule_files: [%s/rules/*.yml]
rules:
  on_arrival: true
alerting:
  route:
    receiver: pd
    group_by: [alertname, round]
    group_wait: 0s
    group_interval: 10ms
  receivers:
    - name: pd
      pagerduty_configs: [{routing_key: %s, url: %s}]
`, dir, dir, e2eRoutingKey, fake.EnqueueURL())
		os.WriteFile(filepath.Join(dir, "vigil.yaml"), []byte(cfg), 0o644)
		startProc(b, "http://"+addr+"/-/ready", bin, "serve", "--config", filepath.Join(dir, "vigil.yaml"), "--listen", addr, "--nats-listen", freePortTB(b))
		run(b, addr, fake)
	})

	b.Run("prometheus+alertmanager", func(b *testing.B) {
		for _, bin := range []string{"/usr/bin/prometheus", "/usr/bin/prometheus-alertmanager"} {
			if _, err := os.Stat(bin); err != nil {
				if os.Getenv("CI") == "true" {
					b.Fatalf("%s is not installed", bin)
				}
				b.Skipf("%s is not installed", bin)
			}
		}
		fake := pagerdutyfake.New()
		defer fake.Close()
		dir := b.TempDir()
		amAddr, promAddr := freePortTB(b), freePortTB(b)
		os.WriteFile(filepath.Join(dir, "am.yml"), []byte(fmt.Sprintf(`route:
  receiver: pd
  group_by: [alertname, round]
  group_wait: 0s
  group_interval: 1s
receivers:
  - name: pd
    pagerduty_configs: [{routing_key: %s, url: %s}]
`, e2eRoutingKey, fake.EnqueueURL())), 0o644)
		os.WriteFile(filepath.Join(dir, "rules.yml"), []byte(rule), 0o644)
		os.WriteFile(filepath.Join(dir, "prom.yml"), []byte(fmt.Sprintf(`global:
  evaluation_interval: 1s
rule_files: [%s/rules.yml]
alerting:
  alertmanagers: [{static_configs: [{targets: [%s]}]}]
`, dir, amAddr)), 0o644)
		startProc(b, "http://"+amAddr+"/-/ready", "/usr/bin/prometheus-alertmanager", "--config.file="+filepath.Join(dir, "am.yml"),
			"--storage.path="+filepath.Join(dir, "am"), "--web.listen-address="+amAddr, "--cluster.listen-address=")
		startProc(b, "http://"+promAddr+"/-/ready", "/usr/bin/prometheus", "--config.file="+filepath.Join(dir, "prom.yml"),
			"--storage.tsdb.path="+filepath.Join(dir, "prom"), "--web.listen-address="+promAddr, "--web.enable-remote-write-receiver")
		// Prometheus finds its Alertmanager through service discovery, every 5s: wait
		// for it, or the first alerts are dropped until the next resend a minute later.
		deadline := time.Now().Add(time.Minute)
		for {
			resp, err := http.Get("http://" + promAddr + "/api/v1/alertmanagers")
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if strings.Contains(string(body), amAddr) {
					break
				}
			}
			if time.Now().After(deadline) {
				b.Fatal("prometheus did not discover its alertmanager")
			}
			time.Sleep(100 * time.Millisecond)
		}
		run(b, promAddr, fake, "http://"+promAddr+"/api/v1/alerts", "http://"+amAddr+"/api/v2/alerts", "http://"+promAddr+"/api/v1/query?query=vigil_bench_page")
	})
}

func freePortTB(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
