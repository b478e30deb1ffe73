package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
)

// BenchmarkIngestToQueryable measures, on a `vigil serve` with its default settings
// (fsync always) under a moderate background load of 100k samples/s over 10k series,
// the delay from a remote-write's acknowledgement to the moment a query returns the
// sample it carried. Each op is 50 probes, one every 20ms; the p50, p99 and largest
// delays are reported in ms (the bound: under 100 ms), beside the time one
// query takes (the resolution of the measurement).
func BenchmarkIngestToQueryable(b *testing.B) {
	const probes = 50
	bin, err := vigilBinary()
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	cfg := filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(cfg, []byte("data_dir: "+filepath.Join(dir, "data")+"\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	addr := freePortTB(b)
	startProc(b, "http://"+addr+"/-/ready", bin, "serve", "--config", cfg, "--listen", addr, "--nats-listen", freePortTB(b))
	stop := make(chan struct{})
	wg := backgroundLoad(b, addr, 100000, stop)
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(time.Second)

	client := &http.Client{Timeout: 30 * time.Second}
	var delays, queries []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for p := 0; p < probes; p++ {
			v := float64(i*probes + p + 1)
			ls := []prompb.Label{{Name: "__name__", Value: "vigil_bench_visible"}}
			acked := benchWrite(b, client, addr, []prompb.TimeSeries{{Labels: ls, Samples: []prompb.Sample{{Value: v, Timestamp: time.Now().UnixMilli()}}}})
			deadline := acked.Add(10 * time.Second)
			for {
				q0 := time.Now()
				got, err := instantValue(client, addr, "vigil_bench_visible")
				now := time.Now()
				queries = append(queries, now.Sub(q0))
				if err != nil {
					b.Fatal(err)
				}
				if got == v {
					delays = append(delays, now.Sub(acked))
					break
				}
				if now.After(deadline) {
					b.Fatalf("probe %v not queryable 10s after its acknowledgement (query returns %v)", v, got)
				}
				time.Sleep(time.Millisecond)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
	sort.Slice(queries, func(i, j int) bool { return queries[i] < queries[j] })
	b.ReportMetric(ms(delays[len(delays)/2]), "p50-ms")
	b.ReportMetric(ms(delays[len(delays)*99/100]), "p99-ms")
	b.ReportMetric(ms(delays[len(delays)-1]), "max-ms")
	b.ReportMetric(ms(queries[len(queries)/2]), "query-p50-ms")
}

// instantValue returns the value of the first series query selects now, or -1 when it
// selects none.
func instantValue(client *http.Client, addr, query string) (float64, error) {
	resp, err := client.Get("http://" + addr + "/api/v1/query?" + url.Values{"query": {query}}.Encode())
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("query %s: %d %s", query, resp.StatusCode, body)
	}
	var r vectorAnswer
	if err := json.Unmarshal(body, &r); err != nil {
		return 0, fmt.Errorf("query %s: %w: %s", query, err, body)
	}
	if len(r.Data.Result) == 0 {
		return -1, nil
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	return strconv.ParseFloat(s, 64)
}

// vectorAnswer is the part of an instant query's answer the tests read: each series'
// [time, "value"] pair.
type vectorAnswer struct {
	Data struct {
		Result []struct {
			Value [2]any `json:"value"`
		} `json:"result"`
	} `json:"data"`
}
