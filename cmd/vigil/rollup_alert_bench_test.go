package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
)

// BenchmarkRollupWindowCloseToAlert measures, through a running `vigil serve`, the time
// from the sample that closes a rollup window (its acknowledgement) to the alert of a
// rule reading that rollup's output being firing in /api/v1/alerts. The rule's interval
// is an hour, so only the window-closed notification can make it fire; one partition,
// so the closing sample moves the only watermark. Each iteration is a new job (a new
// group, a new alert). Reports p50 and p99 (goal: p99 under 50 ms).
func BenchmarkRollupWindowCloseToAlert(b *testing.B) {
	bin, err := vigilBinary()
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	rule := "groups:\n  - name: on-rollup\n    interval: 1h\n    rules:\n      - alert: RollupMaxHigh\n        expr: bench_rollup_requests_total:1s_by_job_max > 10\n"
	if err := os.WriteFile(filepath.Join(dir, "r.yml"), []byte(rule), 0o644); err != nil {
		b.Fatal(err)
	}
	cfg := fmt.Sprintf(`data_dir: %s/data
rule_files: [%s/r.yml]
rollups:
  - name: bench_1s
    match: '{__name__="bench_rollup_requests_total"}'
    interval: 1s
    by: [job]
    outputs: [max]
    lateness: 0s
`, dir, dir)
	if err := os.WriteFile(filepath.Join(dir, "vigil.yaml"), []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	addr := freePortTB(b)
	startProc(b, "http://"+addr+"/-/ready", bin, "serve", "--config", filepath.Join(dir, "vigil.yaml"),
		"--listen", addr, "--nats-listen", freePortTB(b), "--partitions", "1", "--log-level", "warn")
	client := &http.Client{Timeout: 10 * time.Second}
	firing := func(job string) bool {
		resp, err := client.Get("http://" + addr + "/api/v1/alerts")
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		var a apiAlerts
		if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
			b.Fatal(err)
		}
		for _, al := range a.Data.Alerts {
			if al.Labels["job"] == job && al.State == "firing" {
				return true
			}
		}
		return false
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		job := fmt.Sprintf("job-%d", i)
		now := time.Now()
		benchWrite(b, client, addr, []prompb.TimeSeries{{
			Labels:  []prompb.Label{{Name: "__name__", Value: "bench_rollup_requests_total"}, {Name: "job", Value: job}},
			Samples: []prompb.Sample{{Value: 20, Timestamp: now.UnixMilli()}},
		}})
		// Past the window's end, a sample of another series closes it.
		end := now.Truncate(time.Second).Add(time.Second)
		time.Sleep(time.Until(end.Add(2 * time.Millisecond)))
		acked := benchWrite(b, client, addr, []prompb.TimeSeries{{
			Labels:  []prompb.Label{{Name: "__name__", Value: "bench_rollup_closer"}},
			Samples: []prompb.Sample{{Value: 1, Timestamp: time.Now().UnixMilli()}},
		}})
		deadline := time.Now().Add(30 * time.Second)
		for !firing(job) {
			if time.Now().After(deadline) {
				b.Fatalf("%s not firing 30s after its window closed", job)
			}
			time.Sleep(500 * time.Microsecond)
		}
		lat = append(lat, time.Since(acked))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
