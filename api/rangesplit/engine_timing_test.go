package rangesplit

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/tsdb"
)

// BenchmarkRangeQuery evaluates dashboard range queries (1h at a 15s step over 10,000
// series in the head) whole, split always (Options{}) and split when CPUs are idle
// (LoadavgIdleCPUs, as vigil serve does), in turn within each iteration so that load
// from elsewhere on the machine falls on all alike; the ratios are to the whole time.
func BenchmarkRangeQuery(b *testing.B) {
	opts := tsdb.DefaultOptions()
	db, err := tsdb.Open(b.TempDir(), nil, nil, opts, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	const series, step = 10000, int64(15000)
	end := base + 3600_000
	app := db.Appender(context.Background())
	for i := range series {
		l := labels.FromStrings("__name__", "http_requests_total", "code", []string{"200", "404", "500"}[i%3],
			"instance", fmt.Sprintf("host-%03d", i/100), "job", fmt.Sprintf("svc-%d", i%10), "path", fmt.Sprintf("/p/%d", i%100))
		c := 0.0
		for ts := base; ts <= end; ts += step {
			c += float64(i%7 + 1)
			if _, err := app.Append(0, l, ts, c); err != nil {
				b.Fatal(err)
			}
		}
		if i%500 == 499 {
			if err := app.Commit(); err != nil {
				b.Fatal(err)
			}
			app = db.Appender(context.Background())
		}
	}
	if err := app.Commit(); err != nil {
		b.Fatal(err)
	}
	plain := newEngine(50_000_000, time.Minute)
	split := New(plain, Options{})
	adaptive := New(plain, Options{IdleCPUs: LoadavgIdleCPUs})
	run := func(b *testing.B, e promql.QueryEngine, qs string) time.Duration {
		t0 := time.Now()
		q, err := e.NewRangeQuery(context.Background(), db, nil, qs, at(base), at(end), 15*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		if res := q.Exec(context.Background()); res.Err != nil {
			b.Fatal(res.Err)
		}
		q.Close()
		return time.Since(t0)
	}
	for name, qs := range map[string]string{
		"sum_rate":          `sum(rate(http_requests_total[5m]))`,
		"sum_by_job_code":   `sum by (job, code) (rate(http_requests_total[5m]))`,
		"one_instance_rate": `rate(http_requests_total{instance="host-042"}[5m])`,
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			var whole, parts, adapted time.Duration
			for i := 0; i < b.N; i++ {
				if i%2 == 0 {
					whole += run(b, plain, qs)
					parts += run(b, split, qs)
					adapted += run(b, adaptive, qs)
				} else {
					adapted += run(b, adaptive, qs)
					parts += run(b, split, qs)
					whole += run(b, plain, qs)
				}
			}
			b.ReportMetric(float64(whole.Microseconds())/1000/float64(b.N), "whole_ms/op")
			b.ReportMetric(float64(parts)/float64(whole), "split/whole")
			b.ReportMetric(float64(adapted)/float64(whole), "adaptive/whole")
		})
	}
}
