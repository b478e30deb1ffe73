package main

import (
	"encoding/json"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/vigilhq/vigil/rollup"
)

// TestServeRollups runs vigil with a rollup, writes samples over remote-write and
// checks that each closed window is published on NATS vigil.rollups.<name> and is
// queryable from the query store under its VictoriaMetrics-style name.
func TestServeRollups(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(cfg, []byte(`rollups:
  - name: e2e_1s
    match: '{__name__="e2e_requests_total"}'
    interval: 1s
    by: [job]
    outputs: [count_samples, max, quantiles(0.5, 0.99)]
    lateness: 0s
`), 0o644); err != nil {
		t.Fatal(err)
	}
	natsAddr := freeAddr(t)
	p := startVigil(t, dir, "--config", cfg, "--nats-listen", natsAddr)
	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	msgs := make(chan *nats.Msg, 64)
	if _, err := nc.ChanSubscribe("vigil.rollups.>", msgs); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i := 0; i < 3; i++ {
		rulesRemoteWrite(t, p.addr, "e2e_requests_total", float64(10+i), now.Add(time.Duration(i)*time.Millisecond))
	}
	var m rollupMessage
	select {
	case msg := <-msgs:
		if msg.Subject != "vigil.rollups.e2e_1s" {
			t.Fatalf("subject %q", msg.Subject)
		}
		if err := json.Unmarshal(msg.Data, &m); err != nil {
			t.Fatalf("message %s: %v", msg.Data, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no rollup window on NATS within 30s")
	}
	got := map[string]string{}
	for _, s := range m.Series {
		got[s.Labels["__name__"]+"/"+s.Labels["job"]+s.Labels["quantile"]] = s.Value
	}
	if _, ok := got["e2e_requests_total:1s_by_job_quantiles/e2e0.99"]; !ok {
		t.Fatalf("no quantile 0.99 series in %+v", m)
	}
	if got["e2e_requests_total:1s_by_job_count_samples/e2e"] != "3" || got["e2e_requests_total:1s_by_job_max/e2e"] != "12" {
		t.Fatalf("window %+v, want count_samples 3 and max 12", m)
	}
	q := "/api/v1/query?query=" + url.QueryEscape("e2e_requests_total:1s_by_job_max") + "&time=" + strconv.FormatFloat(float64(m.EndMs)/1000, 'f', 3, 64)
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := p.get(t, q)
		if code == 200 && strings.Contains(body, `"12"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("query %s: %d %s", q, code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if v := p.metricValue(t, "vigil_rollup_windows_emitted_total"); v < 1 {
		t.Fatalf("vigil_rollup_windows_emitted_total = %v", v)
	}
}

// TestRollupMessage: every float value survives the NATS JSON, as Prometheus's API
// writes them.
func TestRollupMessage(t *testing.T) {
	r := &rollup.Result{Rollup: "r", Start: 1000, End: 6000, Series: []rollup.ResultSeries{
		{Labels: labels.FromStrings("__name__", "m:5s_max", "job", "x"), Value: 1.5},
		{Labels: labels.FromStrings("__name__", "m:5s_min"), Value: math.NaN()},
		{Labels: labels.FromStrings("__name__", "m:5s_sum_samples"), Value: math.Inf(1)},
	}}
	b, err := json.Marshal(toRollupMessage(r))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"rollup":"r","start_ms":1000,"end_ms":6000,"series":[{"labels":{"__name__":"m:5s_max","job":"x"},"value":"1.5"},{"labels":{"__name__":"m:5s_min"},"value":"NaN"},{"labels":{"__name__":"m:5s_sum_samples"},"value":"+Inf"}]}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
}
