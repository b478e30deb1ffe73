package api_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"
)

// BenchmarkDashboardQuery runs typical dashboard range queries (1h at a 15s step) over
// 10,000 series, against Vigil and, side by side, against the reference Prometheus
// holding the same samples (both through their HTTP API, JSON included).
func BenchmarkDashboardQuery(b *testing.B) {
	const series, step = 10000, 15000
	ref := startReference(b)
	v := startVigil(b, 4)
	end := (time.Now().UnixMilli() / 60000) * 60000
	start := end - 3600*1000
	var batch []prompb.TimeSeries
	flush := func() {
		remoteWrite(b, ref, batch, len(batch))
		remoteWrite(b, v.url, batch, len(batch))
		batch = batch[:0]
	}
	for i := 0; i < series; i++ {
		ts := prompb.TimeSeries{Labels: []prompb.Label{
			{Name: "__name__", Value: "http_requests_total"},
			{Name: "code", Value: []string{"200", "404", "500"}[i%3]},
			{Name: "instance", Value: fmt.Sprintf("host-%03d", i/100)},
			{Name: "job", Value: fmt.Sprintf("svc-%d", i%10)},
			{Name: "path", Value: fmt.Sprintf("/p/%d", i%100)},
		}}
		c := 0.0
		for t := start; t <= end; t += step {
			c += float64(i%7 + 1)
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: t, Value: c})
		}
		batch = append(batch, ts)
		if len(batch) == 500 {
			flush()
		}
	}
	flush()
	v.sync(b)
	queries := map[string]string{
		"sum_rate":          `sum(rate(http_requests_total[5m]))`,
		"sum_by_job_code":   `sum by (job, code) (rate(http_requests_total[5m]))`,
		"errors_ratio":      `sum by (job) (rate(http_requests_total{code="500"}[5m])) / sum by (job) (rate(http_requests_total[5m]))`,
		"one_instance_rate": `rate(http_requests_total{instance="host-042"}[5m])`,
	}
	params := func(q string) url.Values {
		return url.Values{"query": {q}, "start": {strconv.FormatInt(start/1000, 10)}, "end": {strconv.FormatInt(end/1000, 10)}, "step": {"15"}}
	}
	run := func(b *testing.B, base, q string) time.Duration {
		t0 := time.Now()
		resp, err := http.PostForm(base+"/api/v1/query_range", params(q))
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n < 100 {
			b.Fatalf("%s: %s (%d bytes)", q, resp.Status, n)
		}
		return time.Since(t0)
	}
	// Each iteration asks Vigil and the reference in turn, so that load from elsewhere on
	// the machine falls on both alike; ns/op is the pair.
	for name, q := range queries {
		b.Run(name, func(b *testing.B) {
			var vigil, reference time.Duration
			for i := 0; i < b.N; i++ {
				if i%2 == 0 {
					vigil += run(b, v.url, q)
					reference += run(b, ref, q)
				} else {
					reference += run(b, ref, q)
					vigil += run(b, v.url, q)
				}
			}
			b.ReportMetric(float64(vigil.Milliseconds())/float64(b.N), "vigil_ms/op")
			b.ReportMetric(float64(reference.Milliseconds())/float64(b.N), "reference_ms/op")
			b.ReportMetric(float64(reference)/float64(vigil), "speedup")
		})
	}
}
