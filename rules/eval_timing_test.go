package rules

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"

	"github.com/vigilhq/vigil/alerting"
)

// benchSeries fills st with metrics bench_metric_0..metrics-1, each with perMetric
// series (instance label), one sample per 15s over the 5 minutes before end. Values
// are below 90 except for one series in a hundred.
func benchSeries(b *testing.B, st *testStore, nMetrics, perMetric int, end time.Time) {
	b.Helper()
	for ts := end.Add(-5 * time.Minute); !ts.After(end); ts = ts.Add(15 * time.Second) {
		app := st.db.Appender(context.Background())
		for m := range nMetrics {
			name := "bench_metric_" + strconv.Itoa(m)
			for i := range perMetric {
				v := float64(i % 90)
				if i%100 == 7 {
					v = 95
				}
				lset := labels.FromStrings("__name__", name, "instance", "host-"+strconv.Itoa(i), "job", "bench")
				if _, err := app.Append(0, lset, timestamp.FromTime(ts), v); err != nil {
					b.Fatal(err)
				}
			}
		}
		if err := app.Commit(); err != nil {
			b.Fatal(err)
		}
	}
}

// benchRuleFile writes nRules alerting rules in groups of perGroup, rule k reading
// bench_metric_(k % nMetrics).
func benchRuleFile(b *testing.B, dir string, nRules, perGroup, nMetrics int) string {
	b.Helper()
	var sb strings.Builder
	sb.WriteString("groups:\n")
	for k := range nRules {
		if k%perGroup == 0 {
			fmt.Fprintf(&sb, "  - name: bench-%d\n    rules:\n", k/perGroup)
		}
		fmt.Fprintf(&sb, "      - alert: BenchHigh%d\n        expr: bench_metric_%d > 90\n        for: 1m\n        labels:\n          severity: page\n        annotations:\n          summary: '{{ $labels.instance }} is at {{ $value }}'\n", k, k%nMetrics)
	}
	p := filepath.Join(dir, "bench.yml")
	if err := os.WriteFile(p, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkEvalRound1000RulesOver100kSeries measures one evaluation round of 1,000
// alerting rules (10 groups of 100) over 100,000 series (100 metrics of 1,000 series;
// each rule reads 1,000 series and yields 10 alerts), ALERTS writes included, the
// groups evaluated concurrently as the Manager does.
func BenchmarkEvalRound1000RulesOver100kSeries(b *testing.B) {
	st := newTestStore(b)
	end := time.Unix(1_700_000_000, 0)
	benchSeries(b, st, 100, 1000, end)
	f := benchRuleFile(b, b.TempDir(), 1000, 100, 100)
	groups, errs := LoadFiles([]string{f}, LoadOptions{})
	if errs != nil {
		b.Fatal(errs)
	}
	m, err := NewManager(Options{Queryable: st.db, Engine: st.engine, Appendable: st.db, Metrics: metrics.NewSet()})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		// Successive rounds at successive instants within the data's lookback.
		// The groups run concurrently, as the Manager runs them.
		ts := end.Add(time.Duration(i%1000) * time.Millisecond)
		var wg sync.WaitGroup
		for _, g := range groups {
			wg.Go(func() { g.Eval(context.Background(), m.env, ts) })
		}
		wg.Wait()
	}
	b.StopTimer()
	for _, g := range groups {
		for _, r := range g.Rules() {
			if err := r.Status().LastError; err != nil {
				b.Fatalf("%s: %v", r.Name(), err)
			}
		}
	}
	if n := len(groups[0].Rules()[0].(*AlertingRule).ActiveAlerts()); n != 10 {
		b.Fatalf("%d alerts per rule, want 10", n)
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/round")
}

// BenchmarkArrivalToStateChange measures, through a running Manager, the time from a
// sample being committed to the store and Arrived being called to the alert firing
// (Notify called), with the group's interval an hour away. Reports p50 and p99, idle
// and with a background load of 100k samples/s (10k other series, each batch announced
// with Arrived as the store does).
func BenchmarkArrivalToStateChange(b *testing.B) {
	b.Run("idle", func(b *testing.B) { benchArrival(b, false) })
	b.Run("background=100k/s", func(b *testing.B) { benchArrival(b, true) })
}

func benchArrival(b *testing.B, background bool) {
	st := newTestStore(b)
	dir := b.TempDir()
	p := filepath.Join(dir, "arrival.yml")
	if err := os.WriteFile(p, []byte("groups:\n  - name: arrival\n    interval: 1h\n    rules:\n      - alert: Spike\n        expr: bench_arrival > 10\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	fired := make(chan struct{}, 16)
	m, err := NewManager(Options{Queryable: st.db, Engine: st.engine, Appendable: st.db, Metrics: metrics.NewSet(),
		OnArrival: true, OnArrivalMinInterval: time.Microsecond,
		Notify: func(_ context.Context, as []alerting.Alert) {
			for _, a := range as {
				if a.EndsAt.IsZero() {
					fired <- struct{}{}
				}
			}
		}})
	if err != nil {
		b.Fatal(err)
	}
	if err := m.Update([]string{p}); err != nil {
		b.Fatal(err)
	}
	m.Start(context.Background())
	defer m.Stop()
	if background {
		stop := make(chan struct{})
		done := make(chan struct{})
		defer func() { close(stop); <-done }()
		go func() {
			defer close(done)
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			names := make([]string, 10)
			for i := range names {
				names[i] = "bench_background_" + strconv.Itoa(i)
			}
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				app := st.db.Appender(context.Background())
				now := timestamp.FromTime(time.Now())
				for i := range 1000 {
					lset := labels.FromStrings("__name__", names[i%10], "series", strconv.Itoa(i*10+int(now/10%10)))
					_, _ = app.Append(0, lset, now, float64(i))
				}
				_ = app.Commit()
				m.Arrived(names)
			}
		}()
	}
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		// A distinct series per iteration: each one is a new alert.
		now := time.Now()
		start := time.Now()
		if err := st.addErr(now, 20, "__name__", "bench_arrival", "i", strconv.Itoa(i)); err != nil {
			b.Fatal(err)
		}
		m.Arrived([]string{"bench_arrival"})
		select {
		case <-fired:
		case <-time.After(30 * time.Second):
			b.Fatal("no alert within 30s")
		}
		lat = append(lat, time.Since(start))
		// Let the series go stale for the next iteration's alert to be the only new one.
		if err := st.addErr(now.Add(time.Millisecond), 0, "__name__", "bench_arrival", "i", strconv.Itoa(i)); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
