package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"

	"github.com/vigilhq/vigil/api"
	"github.com/vigilhq/vigil/api/rangesplit"
	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/ingest"
	"github.com/vigilhq/vigil/logcore"
	"github.com/vigilhq/vigil/store"
)

// vigil is an in-process Vigil: the real log, remote-write ingest, store and query API
// behind one HTTP server.
type vigil struct {
	url   string
	log   *logcore.FileLog
	store *store.Store
	mat   *store.Materializer
}

func startVigil(t testing.TB, partitions int) *vigil {
	t.Helper()
	dir := t.TempDir()
	l, err := logcore.Open(filepath.Join(dir, "log"), logcore.Options{Fsync: logcore.FsyncNever})
	if err != nil {
		t.Fatal(err)
	}
	topic, err := l.Topic("samples", logcore.TopicConfig{Partitions: partitions})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(store.Options{Dir: filepath.Join(dir, "store"), OutOfOrderWindow: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.StartMaterializer(store.MaterializerOptions{Log: l, Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	w, err := ingest.NewWriter(ingest.Options{Topic: topic, Limits: config.Default().Limits})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /api/v1/write", ingest.NewRemoteWriteHandler(w, slog.New(slog.DiscardHandler)))
	// The engine as `vigil serve` wires it: long range queries split across cores.
	q := config.Default().Query
	engine := rangesplit.New(st.Engine(), rangesplit.Options{Parallelism: q.SplitParallelism, MinStepsPerPart: q.SplitMinSteps, MaxSamples: q.MaxSamples, IdleCPUs: rangesplit.LoadavgIdleCPUs})
	api.New(api.Options{Queryable: st.Queryable(), Engine: engine}).Register(mux)
	srv := httptest.NewServer(mux)
	v := &vigil{url: srv.URL, log: l, store: st, mat: m}
	t.Cleanup(func() {
		srv.Close()
		m.Stop(context.Background())
		st.Close()
		l.Close()
	})
	return v
}

// startVigilServe runs `vigil serve` ($VIGIL_BIN, as make test sets it) on defaults
// with a temporary data directory: the whole binary, remote-write and all.
func startVigilServe(t testing.TB, bin string) *vigil {
	t.Helper()
	dir := t.TempDir()
	addr := freeAddr(t)
	cmd := exec.Command(bin, "serve", "--data-dir", filepath.Join(dir, "data"), "--listen", addr, "--nats-listen", freeAddr(t))
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("vigil stderr:\n%s", stderr.String())
		}
	})
	v := &vigil{url: "http://" + addr}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(v.url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return v
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("vigil serve not ready: %v\n%s", err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startVigilAny is `vigil serve` when $VIGIL_BIN names it, else the in-process Vigil.
func startVigilAny(t testing.TB, partitions int) *vigil {
	if bin := os.Getenv("VIGIL_BIN"); bin != "" {
		return startVigilServe(t, bin)
	}
	return startVigil(t, partitions)
}

// sync waits until everything written is queryable.
func (v *vigil) sync(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if v.mat != nil {
		if err := v.mat.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		return
	}
	// A separate process: wait until its materializer reports no lag.
	for ctx.Err() == nil {
		resp, err := http.Get(v.url + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), "\nvigil_materializer_lag_records 0\n") {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("vigil serve's materializer did not catch up in a minute")
}

// referenceBinary finds the reference Prometheus of the module's version; it skips the
// test only outside CI.
func referenceBinary(t testing.TB) string {
	t.Helper()
	p := os.Getenv("PROMETHEUS_REF")
	if p == "" {
		p, _ = filepath.Abs("../bin/prometheus")
	}
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("reference Prometheus not found at %s (run scripts/test-deps.sh): %v", p, err)
		}
		t.Skipf("reference Prometheus not found at %s (run scripts/test-deps.sh)", p)
	}
	return p
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startReference runs the reference Prometheus with the remote-write receiver on a
// temporary directory and returns its base URL.
func startReference(t testing.TB, extraArgs ...string) string {
	t.Helper()
	bin := referenceBinary(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte("global: {}\nstorage:\n  tsdb:\n    out_of_order_time_window: 10m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	args := append([]string{
		"--config.file=" + cfg,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + addr,
		"--web.enable-remote-write-receiver",
		"--log.level=warn",
	}, extraArgs...)
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	base := "http://" + addr
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("reference Prometheus not ready: %v\n%s", err, stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// remoteWrite sends series to base's /api/v1/write as remote-write 1.0, in requests
// of at most perRequest series.
func remoteWrite(t testing.TB, base string, series []prompb.TimeSeries, perRequest int) {
	t.Helper()
	for i := 0; i < len(series); i += perRequest {
		req := prompb.WriteRequest{Timeseries: series[i:min(i+perRequest, len(series))]}
		raw, err := req.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		hr, _ := http.NewRequest("POST", base+"/api/v1/write", bytes.NewReader(snappy.Encode(nil, raw)))
		hr.Header.Set("Content-Type", "application/x-protobuf")
		hr.Header.Set("Content-Encoding", "snappy")
		hr.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
		resp, err := http.DefaultClient.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("remote write to %s: %s: %s", base, resp.Status, body)
		}
	}
}

// testData is a fixed, varied set of series: counters with resets, gauges with a NaN,
// classic and native histograms, a sparse series, label values that need escaping.
// Samples are every 15s over an hour starting at base (ms).
func testData(base int64) []prompb.TimeSeries {
	rng := rand.New(rand.NewSource(1))
	const step, n = 15000, 241
	var out []prompb.TimeSeries
	add := func(lbls []string, f func(i int) (float64, bool)) {
		ts := prompb.TimeSeries{}
		for i := 0; i < len(lbls); i += 2 {
			ts.Labels = append(ts.Labels, prompb.Label{Name: lbls[i], Value: lbls[i+1]})
		}
		sort.Slice(ts.Labels, func(a, b int) bool { return ts.Labels[a].Name < ts.Labels[b].Name })
		for i := 0; i < n; i++ {
			if v, ok := f(i); ok {
				ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: base + int64(i)*step, Value: v})
			}
		}
		out = append(out, ts)
	}
	for _, job := range []string{"api", "web"} {
		for _, inst := range []string{"i0", "i1", "i2"} {
			for _, code := range []string{"200", "500"} {
				for _, method := range []string{"GET", "POST"} {
					c := 0.0
					rate := rng.Float64() * 10
					reset := rng.Intn(n)
					add([]string{"__name__", "http_requests_total", "job", job, "instance", inst, "code", code, "method", method}, func(i int) (float64, bool) {
						if i == reset && code == "500" {
							c = 0
						}
						c += rate * (0.5 + rng.Float64())
						return math.Floor(c), true
					})
				}
			}
		}
		cum := make([]float64, 4)
		les := []string{"0.1", "0.5", "1", "+Inf"}
		var series [][]prompb.Sample
		for range les {
			series = append(series, nil)
		}
		var sum []prompb.Sample
		s := 0.0
		for i := 0; i < n; i++ {
			obs := rng.Intn(20)
			for k := 0; k < obs; k++ {
				x := rng.ExpFloat64() / 2
				s += x
				for b, le := range []float64{0.1, 0.5, 1, math.Inf(1)} {
					if x <= le {
						cum[b]++
					}
				}
			}
			for b := range les {
				series[b] = append(series[b], prompb.Sample{Timestamp: base + int64(i)*step, Value: cum[b]})
			}
			sum = append(sum, prompb.Sample{Timestamp: base + int64(i)*step, Value: s})
		}
		for b, le := range les {
			out = append(out, prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "request_duration_seconds_bucket"}, {Name: "job", Value: job}, {Name: "le", Value: le}}, Samples: series[b]})
		}
		out = append(out, prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "request_duration_seconds_count"}, {Name: "job", Value: job}}, Samples: series[3]})
		out = append(out, prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "request_duration_seconds_sum"}, {Name: "job", Value: job}}, Samples: sum})
		// A native histogram, growing.
		nh := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "rpc_latency_seconds"}, {Name: "job", Value: job}}}
		h := &histogram.Histogram{Schema: 1, ZeroThreshold: 0.001, PositiveSpans: []histogram.Span{{Offset: -2, Length: 4}}, PositiveBuckets: []int64{0, 0, 0, 0}}
		counts := make([]int64, 4)
		for i := 0; i < n; i++ {
			for k := range counts {
				counts[k] += int64(rng.Intn(5))
			}
			h = h.Copy()
			var prev, total int64
			for k, c := range counts {
				h.PositiveBuckets[k] = c - prev
				prev = c
				total += c
			}
			h.Count = uint64(total)
			h.Sum += float64(total) * 0.01
			nh.Histograms = append(nh.Histograms, prompb.FromIntHistogram(base+int64(i)*step, h))
		}
		out = append(out, nh)
	}
	for _, room := range []string{"a", "b", "c"} {
		v := 20.0
		add([]string{"__name__", "temperature", "room", room, "building", "x"}, func(i int) (float64, bool) {
			v += rng.NormFloat64()
			if room == "c" && i == 100 {
				return math.NaN(), true
			}
			return math.Round(v*100) / 100, true
		})
	}
	add([]string{"__name__", "sparse", "job", "api"}, func(i int) (float64, bool) { return float64(i), i < 80 })
	// A target that goes away (Prometheus sends a staleness marker) and comes back.
	add([]string{"__name__", "flappy", "job", "web"}, func(i int) (float64, bool) {
		switch {
		case i == 100:
			return math.Float64frombits(value.StaleNaN), true
		case i > 100 && i < 150:
			return 0, false
		}
		return float64(i % 7), true
	})
	add([]string{"__name__", "odd_labels", "path", `/a<b>&"c"`, "greeting", "héllo wörld", "empty_ok", "x"}, func(i int) (float64, bool) { return 1, true })
	return out
}

// get sends a GET (or a form POST when post is set) to base+path with params and
// returns the status and the decoded JSON body.
func get(t testing.TB, base, path string, params url.Values, post bool) (int, any) {
	t.Helper()
	var resp *http.Response
	var err error
	if post {
		resp, err = http.PostForm(base+path, params)
	} else {
		resp, err = http.Get(base + path + "?" + params.Encode())
	}
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("%s %s: not JSON (%d): %s", path, params.Encode(), resp.StatusCode, body)
	}
	return resp.StatusCode, v
}

// normalize sorts the entries of vector results (whose order PromQL does not fix) so
// two answers compare equal when they hold the same samples.
func normalize(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	d, ok := m["data"].(map[string]any)
	if !ok || d["resultType"] != "vector" {
		return v
	}
	res, _ := d["result"].([]any)
	sort.Slice(res, func(i, j int) bool {
		a, _ := json.Marshal(res[i])
		b, _ := json.Marshal(res[j])
		return string(a) < string(b)
	})
	return v
}

// sortData sorts a success's data array (series look-ups, whose order is the storage's
// series creation order in Prometheus too).
func sortData(v any) any {
	m, _ := v.(map[string]any)
	if d, ok := m["data"].([]any); ok {
		sort.Slice(d, func(i, j int) bool {
			a, _ := json.Marshal(d[i])
			b, _ := json.Marshal(d[j])
			return string(a) < string(b)
		})
	}
	return v
}

// truncateData keeps only the length of a success's data array: which items a limit
// keeps is the storage's choice (series creation order), in Prometheus too.
func truncateData(v any) any {
	m, _ := v.(map[string]any)
	if d, ok := m["data"].([]any); ok {
		m["data"] = len(d)
	}
	return v
}

// equalJSON compares decoded JSON; strings holding floats compare with a relative
// tolerance of 1e-12, because aggregations sum series in storage order, which is
// series creation order in both, and that differs between a single head and Vigil's
// partitions (Prometheus's own answers change the same way once blocks are cut).
func equalJSON(a, b any) bool {
	switch a := a.(type) {
	case map[string]any:
		bm, ok := b.(map[string]any)
		if !ok || len(a) != len(bm) {
			return false
		}
		for k, av := range a {
			if !equalJSON(av, bm[k]) {
				return false
			}
		}
		return true
	case []any:
		bs, ok := b.([]any)
		if !ok || len(a) != len(bs) {
			return false
		}
		for i := range a {
			if !equalJSON(a[i], bs[i]) {
				return false
			}
		}
		return true
	case string:
		bs, ok := b.(string)
		if !ok {
			return false
		}
		if a == bs {
			return true
		}
		fa, err1 := strconv.ParseFloat(a, 64)
		fb, err2 := strconv.ParseFloat(bs, 64)
		if err1 != nil || err2 != nil {
			return false
		}
		return math.Abs(fa-fb) <= 1e-12*math.Max(math.Abs(fa), math.Abs(fb))
	default:
		return reflect.DeepEqual(a, b)
	}
}

// compare asks both servers the same request and reports any difference.
func compare(t *testing.T, vigilURL, refURL, path string, params url.Values, post bool) {
	t.Helper()
	vc, vv := get(t, vigilURL, path, params, post)
	rc, rv := get(t, refURL, path, params, post)
	vv, rv = normalize(vv), normalize(rv)
	if strings.HasPrefix(path, "/api/v1/series") {
		vv, rv = sortData(vv), sortData(rv)
	}
	if params.Get("limit") != "" && !strings.HasSuffix(path, "query") {
		vv, rv = truncateData(vv), truncateData(rv)
	}
	if vc != rc || !equalJSON(vv, rv) {
		vj, _ := json.Marshal(vv)
		rj, _ := json.Marshal(rv)
		t.Errorf("%s %s (post=%v):\nvigil     %d %s\nreference %d %s", path, params.Encode(), post, vc, clip(vj), rc, clip(rj))
	}
}

func clip(b []byte) string {
	if len(b) > 1500 {
		return string(b[:1500]) + fmt.Sprintf("... (%d bytes)", len(b))
	}
	return string(b)
}

// isSuccess reports whether a decoded answer is a success with a non-empty result.
func nonEmpty(v any) bool {
	m, _ := v.(map[string]any)
	if m["status"] != "success" {
		return false
	}
	switch d := m["data"].(type) {
	case []any:
		return len(d) > 0
	case map[string]any:
		r, _ := d["result"].([]any)
		return len(r) > 0 || d["resultType"] == "scalar" || d["resultType"] == "string"
	}
	return false
}
