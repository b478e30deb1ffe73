package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/vigilhq/vigil/logcore"
	"github.com/vigilhq/vigil/sample"
)

// toolPath returns a real client binary, skipping the test when it is absent unless
// CI=true, where that is a failure.
func toolPath(t *testing.T, path string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found (run scripts/test-deps.sh): %v", path, err)
		}
		t.Skipf("%s not found; run scripts/test-deps.sh", path)
	}
	return path
}

// startTool runs a client process for the test's lifetime.
func startTool(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("%s output:\n%.5000s", filepath.Base(name), out.String())
		}
	})
	return cmd
}

// stopTool sends SIGTERM and waits (a clean stop flushes the remote-write queues).
func stopTool(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if cmd.ProcessState != nil || syscall.Kill(cmd.Process.Pid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metricValue reads one sample of vigil's /metrics.
func (p *vigilProc) metricValue(t *testing.T, name string) float64 {
	t.Helper()
	_, body := p.get(t, "/metrics")
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, name+" ") {
			v, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, name)), 64)
			return v
		}
	}
	return 0
}

// eachLoggedSeries opens the stopped vigil's log and calls fn with every series of the
// samples topic, partition by partition in offset order (s is valid during the call).
func eachLoggedSeries(t *testing.T, dataDir string, fn func(s *sample.Series)) {
	t.Helper()
	l, err := logcore.Open(filepath.Join(dataDir, "log"), logcore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	tp, err := l.Topic("samples", logcore.TopicConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var dec sample.Decoder
	for p := 0; p < tp.Partitions(); p++ {
		st := tp.Stats(p)
		for off := st.StartOffset; off < st.EndOffset; {
			recs, err := tp.Read(p, off, 4<<20, nil)
			if err != nil || len(recs) == 0 {
				t.Fatalf("read partition %d at %d: %v", p, off, err)
			}
			for _, r := range recs {
				if err := dec.Reset(r.Value); err != nil {
					t.Fatal(err)
				}
				for dec.Next() {
					fn(dec.Series())
				}
				if err := dec.Err(); err != nil {
					t.Fatal(err)
				}
			}
			off = recs[len(recs)-1].Offset + 1
		}
	}
}

// readSamplesLog returns every series of the stopped vigil's log (labels in Prometheus
// text form) with its samples.
func readSamplesLog(t *testing.T, dataDir string) map[string][]sample.Sample {
	t.Helper()
	out := map[string][]sample.Sample{}
	eachLoggedSeries(t, dataDir, func(s *sample.Series) {
		k := seriesKey(s.Labels)
		out[k] = append(out[k], s.Samples...)
	})
	return out
}

func seriesKey(ls []sample.Label) string {
	var parts []string
	for _, l := range ls {
		parts = append(parts, fmt.Sprintf("%s=%q", l.Name, l.Value))
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

func mapKey(m map[string]string) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s=%q", k, v))
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

// staticTarget serves a fixed exposition for vmagent to scrape.
func staticTarget(t *testing.T, n int) (addr string, want map[string]float64) {
	want = map[string]float64{}
	var body strings.Builder
	body.WriteString("# TYPE e2e_static gauge\n")
	for i := 0; i < n; i++ {
		v := float64(i) + 0.5
		fmt.Fprintf(&body, "e2e_static{i=\"%d\",kind=\"a b é\"} %g\n", i, v)
		want[mapKey(map[string]string{"__name__": "e2e_static", "i": strconv.Itoa(i), "kind": "a b é", "job": "static", "instance": ""})] = v
	}
	ln := freeAddr(t)
	srv := &http.Server{Addr: ln, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		w.Write([]byte(body.String()))
	})}
	go srv.ListenAndServe()
	t.Cleanup(func() { srv.Close() })
	fixed := map[string]float64{}
	for k, v := range want {
		fixed[strings.Replace(k, `instance=""`, fmt.Sprintf("instance=%q", ln), 1)] = v
	}
	return ln, fixed
}

// TestRealClientsRemoteWrite runs Debian's prometheus (scraping itself) and vmagent
// (scraping a fixed target) against a running `vigil serve` with a bearer token, and
// checks that their series are in the log afterwards, decoded and complete. It also
// publishes over the embedded NATS server.
func TestRealClientsRemoteWrite(t *testing.T) {
	promBin := toolPath(t, "/usr/bin/prometheus")
	vmBin := toolPath(t, "/usr/bin/vmagent")
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "vigil.yaml")
	os.WriteFile(filepath.Join(dir, "token"), []byte("e2e-token\n"), 0o600)
	os.WriteFile(cfgFile, []byte("server:\n  auth:\n    bearer_token_file: "+filepath.Join(dir, "token")+"\n"), 0o644)
	dataDir := filepath.Join(dir, "data")
	os.MkdirAll(dataDir, 0o755)
	natsAddr := freeAddr(t)
	v := startVigil(t, dataDir, "--config", cfgFile, "--nats-listen", natsAddr)
	v.token = "e2e-token" // server.auth guards /metrics too
	writeURL := "http://" + v.addr + "/api/v1/write"

	// Without the token: 401.
	resp, err := http.Post(writeURL, "application/x-protobuf", bytes.NewReader(snappy.Encode(nil, nil)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("no token: %d, want 401", resp.StatusCode)
	}

	// Prometheus scrapes itself every second and remote-writes to vigil.
	promAddr := freeAddr(t)
	promCfg := filepath.Join(dir, "prometheus.yml")
	os.WriteFile(promCfg, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
  - job_name: prometheus
    static_configs: [{targets: ['%s']}]
remote_write:
  - url: %s
    authorization: {credentials: e2e-token}
    queue_config: {batch_send_deadline: 500ms, max_samples_per_send: 2000, min_backoff: 100ms}
    metadata_config: {send_interval: 1s}
`, promAddr, writeURL)), 0o644)
	prom := startTool(t, promBin, "--config.file="+promCfg, "--storage.tsdb.path="+filepath.Join(dir, "prom"),
		"--web.listen-address="+promAddr, "--log.level=warn")

	// vmagent scrapes a fixed target and remote-writes to vigil.
	target, wantStatic := staticTarget(t, 40)
	vmCfg := filepath.Join(dir, "vmagent.yml")
	os.WriteFile(vmCfg, []byte(fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: static\n    static_configs: [{targets: ['%s']}]\n", target)), 0o644)
	vm := startTool(t, vmBin, "-promscrape.config="+vmCfg, "-remoteWrite.url="+writeURL, "-remoteWrite.bearerToken=e2e-token",
		"-remoteWrite.tmpDataPath="+filepath.Join(dir, "vmagent"), "-httpListenAddr="+freeAddr(t), "-remoteWrite.flushInterval=200ms", "-loggerLevel=WARN")

	// NATS: one JSON and one Influx message through the embedded server.
	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.Publish("metrics.e2e", []byte(`{"name":"e2e_nats_json","labels":{"src":"nats"},"value":7}`))
	nc.Publish("metrics.e2e", []byte("e2e_nats_influx,src=nats value=8"))
	nc.Flush()

	// Wait until Prometheus has scraped a few times and vigil has samples from both.
	waitIngest(t, 60*time.Second, "samples from every client", func() bool {
		return v.metricValue(t, `vigil_ingest_samples_total{protocol="remote_write"}`) > 2000 &&
			v.metricValue(t, `vigil_ingest_samples_total{protocol="nats"}`) >= 2 &&
			promUpSamples(t, promAddr) >= 3
	})
	time.Sleep(2 * time.Second) // let vmagent scrape a few more times
	// What Prometheus has, before it stops: its series and how many `up` samples.
	promSeries := promSeriesSet(t, promAddr)
	upCount := promUpSamples(t, promAddr)
	stopTool(t, prom) // flushes its remote-write queue
	stopTool(t, vm)
	if err := v.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-v.done; err != nil {
		t.Fatalf("vigil exit: %v\n%s", err, v.stderr.String())
	}
	v.done <- nil // for the cleanup

	got := readSamplesLog(t, dataDir)
	missing := 0
	for k := range promSeries {
		if _, ok := got[k]; !ok {
			if missing < 5 {
				t.Errorf("Prometheus series %s not in the log", k)
			}
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d Prometheus series missing from the log", missing, len(promSeries))
	}
	upKey := mapKey(map[string]string{"__name__": "up", "job": "prometheus", "instance": promAddr})
	if n := len(got[upKey]); n < upCount {
		t.Fatalf("%s: %d samples in the log, Prometheus had %d", upKey, n, upCount)
	}
	for _, s := range got[upKey] {
		if s.V != 1 {
			t.Fatalf("up sample %v", s)
		}
	}
	for k, want := range wantStatic {
		ss := got[k]
		if len(ss) == 0 {
			t.Fatalf("vmagent series %s not in the log (have %d series)", k, len(got))
		}
		for _, s := range ss {
			if s.V != want {
				t.Fatalf("%s = %v, want %v", k, s.V, want)
			}
		}
	}
	for _, k := range []string{`{__name__="e2e_nats_json",src="nats"}`, `{__name__="e2e_nats_influx",src="nats"}`} {
		if len(got[k]) != 1 {
			t.Fatalf("NATS series %s: %v", k, got[k])
		}
	}
	t.Logf("log: %d series; Prometheus %d series, %d up samples; vmagent %d series", len(got), len(promSeries), upCount, len(wantStatic))
}

func waitIngest(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func promQuery(t *testing.T, addr, path string, params url.Values, v any) bool {
	resp, err := http.Get("http://" + addr + path + "?" + params.Encode())
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(v) == nil
}

// promUpSamples is how many `up` samples Prometheus holds for itself.
func promUpSamples(t *testing.T, addr string) int {
	var r struct {
		Data struct {
			Result []struct {
				Value []any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if !promQuery(t, addr, "/api/v1/query", url.Values{"query": {`count_over_time(up{job="prometheus"}[1h])`}}, &r) || len(r.Data.Result) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(fmt.Sprint(r.Data.Result[0].Value[1]))
	return n
}

// promSeriesSet is every series Prometheus has stored.
func promSeriesSet(t *testing.T, addr string) map[string]bool {
	var r struct {
		Data []map[string]string `json:"data"`
	}
	if !promQuery(t, addr, "/api/v1/series", url.Values{"match[]": {`{job="prometheus"}`}, "start": {strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10)}}, &r) {
		t.Fatal("cannot list Prometheus series")
	}
	out := map[string]bool{}
	for _, m := range r.Data {
		out[mapKey(m)] = true
	}
	if len(out) < 50 {
		t.Fatalf("Prometheus has only %d series", len(out))
	}
	return out
}

// TestRemoteWriteServed posts a 1.0 request and a 2.0 request (built with the prometheus
// module's writev2 types, with a native histogram) to a running vigil and reads them back
// from the log.
func TestRemoteWriteServed(t *testing.T) {
	dataDir := t.TempDir()
	v := startVigil(t, dataDir)
	now := time.Now().UnixMilli()
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "served_total"}, {Name: "job", Value: "t"}},
		Samples: []prompb.Sample{{Timestamp: now, Value: 1}, {Timestamp: now + 1, Value: 2}},
	}}}
	raw, _ := req.Marshal()
	hreq, _ := http.NewRequestWithContext(context.Background(), "POST", "http://"+v.addr+"/api/v1/write", bytes.NewReader(snappy.Encode(nil, raw)))
	hreq.Header.Set("Content-Type", "application/x-protobuf")
	hreq.Header.Set("Content-Encoding", "snappy")
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	st := writev2.NewSymbolTable()
	h := &histogram.Histogram{Schema: 0, Count: 3, Sum: 4.5, ZeroThreshold: 1e-128,
		PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []int64{1, 1}}
	req2 := &writev2.Request{Timeseries: []writev2.TimeSeries{{
		LabelsRefs: []uint32{st.Symbolize("__name__"), st.Symbolize("latency_seconds"), st.Symbolize("job"), st.Symbolize("t")},
		Histograms: []writev2.Histogram{writev2.FromIntHistogram(0, now, h)},
		Metadata:   writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_HISTOGRAM},
	}}}
	req2.Symbols = st.Symbols()
	raw2, _ := req2.Marshal()
	hreq, _ = http.NewRequest("POST", "http://"+v.addr+"/api/v1/write", bytes.NewReader(snappy.Encode(nil, raw2)))
	hreq.Header.Set("Content-Type", "application/x-protobuf;proto=io.prometheus.write.v2.Request")
	hreq.Header.Set("Content-Encoding", "snappy")
	hreq.Header.Set("X-Prometheus-Remote-Write-Version", "2.0.0")
	resp, err = http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || resp.Header.Get("X-Prometheus-Remote-Write-Histograms-Written") != "1" {
		t.Fatalf("2.0: status %d, headers %v", resp.StatusCode, resp.Header)
	}
	v.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-v.done; err != nil {
		t.Fatal(err)
	}
	v.done <- nil
	got := readSamplesLog(t, dataDir)
	if ss := got[`{__name__="served_total",job="t"}`]; len(ss) != 2 || ss[1].V != 2 {
		t.Fatalf("log: %v", got)
	}
	hs := readHistogramsLog(t, dataDir)[`{__name__="latency_seconds",job="t"}`]
	if len(hs) != 1 || hs[0].T != now {
		t.Fatalf("histograms in the log: %v", hs)
	}
	var ph prompb.Histogram
	if err := ph.Unmarshal(hs[0].Proto); err != nil || !ph.ToIntHistogram().Equals(h) {
		t.Fatalf("histogram read back %v (%v), want %v", ph.ToIntHistogram(), err, h)
	}
}

// readHistogramsLog returns the native histograms of the stopped vigil's log by series.
func readHistogramsLog(t *testing.T, dataDir string) map[string][]sample.Histogram {
	t.Helper()
	out := map[string][]sample.Histogram{}
	eachLoggedSeries(t, dataDir, func(s *sample.Series) {
		for _, h := range s.Histograms {
			k := seriesKey(s.Labels)
			out[k] = append(out[k], sample.Histogram{T: h.T, Proto: append([]byte(nil), h.Proto...)})
		}
	})
	return out
}
