package rollup

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/logcore"
	"github.com/vigilhq/vigil/sample"
)

// benchBatches encodes one scrape round of n series (one sample each at ts) in batches
// of per series, with labels job (100 values), instance (unique) and __name__.
func benchBatches(n, per int, ts int64, dst [][]byte) [][]byte {
	dst = dst[:0]
	var enc sample.Encoder
	var s sample.Series
	for i := 0; i < n; i += per {
		enc.Reset()
		for j := i; j < min(i+per, n); j++ {
			s.Labels = append(s.Labels[:0],
				sample.Label{Name: []byte("__name__"), Value: []byte("http_requests_total")},
				sample.Label{Name: []byte("instance"), Value: fmt.Appendf(nil, "host-%06d:9100", j)},
				sample.Label{Name: []byte("job"), Value: fmt.Appendf(nil, "job-%02d", j%100)},
			)
			s.Samples = append(s.Samples[:0], sample.Sample{T: ts, V: float64(ts/1000 + int64(j))})
			enc.AppendSeries(&s)
		}
		dst = append(dst, slices.Clone(enc.Bytes()))
	}
	return dst
}

// BenchmarkAggregate100kSeries4Outputs is the aggregation throughput of one partition
// (one core): 100k series, grouped by job, outputs sum_samples, count_samples, max,
// rate_sum, 10s windows sealed and merged as the scrape rounds advance.
func BenchmarkAggregate100kSeries4Outputs(b *testing.B) {
	b.Run("with_rate_sum", func(b *testing.B) { benchAggregate(b, "sum_samples", "count_samples", "max", "rate_sum") })
	b.Run("gauges_only", func(b *testing.B) { benchAggregate(b, "sum_samples", "count_samples", "max", "min") })
}

func benchAggregate(b *testing.B, outputs ...string) {
	const n = 100_000
	se := newSyncEngine(b, 1, rc("r", `{__name__="http_requests_total"}`, "10s", "1s", []string{"job"}, nil, outputs...))
	se.coord.emit = func(*Result) error { return nil }
	rounds := make([][][]byte, 10)
	base := int64(1_700_000_000_000)
	for r := range rounds {
		rounds[r] = benchBatches(n, 500, base+int64(r)*1000, nil)
	}
	b.ReportAllocs()
	b.ResetTimer()
	samples := 0
	p := se.parts[0]
	var off int64
	for round := 0; samples < b.N; round++ {
		// Reuse the ten encoded rounds, shifting time by re-encoding only the timestamps
		// is not possible in place, so the window sequence repeats every 10 rounds with a
		// fresh engine state boundary: the rounds are 1s apart and 10 rounds fill a window.
		if round > 0 && round%10 == 0 {
			b.StopTimer()
			base += 10_000
			for r := range rounds {
				rounds[r] = benchBatches(n, 500, base+int64(r)*1000, rounds[r])
			}
			b.StartTimer()
		}
		for _, batch := range rounds[round%10] {
			p.processBatch(off, 0, batch)
			off++
			se.deliver(0)
		}
		samples += n
	}
	b.StopTimer()
	el := b.Elapsed().Seconds()
	b.ReportMetric(float64(samples)/el, "samples/s")
}

// BenchmarkBytesPerGroup measures the heap held per active aggregation group, with one
// open window: bytes/group is the group's own state (group table entry, key, window
// accumulator and extension), computed as the heap of 50k series in 50k groups minus
// the heap of the same series in one group; bytes/series is the per-series input
// cache (which series feeds which group), paid once per series whatever the grouping.
func BenchmarkBytesPerGroup(b *testing.B) {
	for _, tc := range []struct {
		name    string
		outputs []string
	}{
		{"sum_count_min_max", []string{"sum_samples", "count_samples", "min", "max"}},
		{"stddev", []string{"stddev"}},
		{"rate_sum", []string{"rate_sum"}},
		{"quantiles", []string{"quantiles(0.5,0.99)"}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			const n = 50_000
			batches := benchBatches(n, 1000, 1_700_000_000_000, nil)
			heap := func(by []string) (float64, int) {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				se := newSyncEngine(b, 1, rc("r", `{__name__="http_requests_total"}`, "10s", "1s", by, nil, tc.outputs...))
				for j, batch := range batches {
					se.parts[0].processBatch(int64(j), 0, batch)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				groups := se.parts[0].rules[0].groupIDs.len()
				runtime.KeepAlive(se)
				return float64(after.HeapAlloc) - float64(before.HeapAlloc), groups
			}
			var perGroup, perSeries float64
			for i := 0; i < b.N; i++ {
				many, groups := heap(nil)                 // a group per series
				one, _ := heap([]string{"no_such_label"}) // every series in one group
				perGroup = (many - one) / float64(groups-1)
				perSeries = one / n
			}
			b.ReportMetric(perGroup, "bytes/group")
			b.ReportMetric(perSeries, "bytes/series")
		})
	}
}

// BenchmarkWindowCloseToQueryable measures, per window of 100 groups and 4 outputs,
// the time from the watermark passing the window's end to its outputs being
// queryable in a TSDB: seal, merge, flush, append to the rollups topic (fsync always),
// append and commit to the TSDB, and a query that finds the result.
func BenchmarkWindowCloseToQueryable(b *testing.B) {
	dir := b.TempDir()
	l, err := logcore.Open(filepath.Join(dir, "log"), logcore.Options{Fsync: logcore.FsyncAlways})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	samples, _ := l.Topic("samples", logcore.TopicConfig{Partitions: 1})
	results, _ := l.Topic("rollups", logcore.TopicConfig{Partitions: 1})
	db, err := tsdb.Open(filepath.Join(dir, "tsdb"), nil, nil, tsdb.DefaultOptions(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	e, err := New(Options{Rollups: []config.RollupConfig{rc("r", `{__name__="http_requests_total"}`, "1s", "0s", []string{"job"}, nil,
		"sum_samples", "count_samples", "max", "rate_sum")}, Log: l, Samples: samples, Results: results, Appendable: db,
		CheckpointDir: filepath.Join(dir, "ckpt")})
	if err != nil {
		b.Fatal(err)
	}
	p := e.parts[0]
	base := time.Now().Add(-time.Hour).UnixMilli() / 1000 * 1000
	probe := labels.MustNewMatcher(labels.MatchEqual, "__name__", "http_requests_total:1s_by_job_max")
	var lat []time.Duration
	var batches [][]byte
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ts := base + int64(i)*1000
		batches = benchBatches(1000, 1000, ts, batches) // 1000 series, 100 groups
		p.processBatch(int64(i), 0, batches[0])
		next := benchBatches(1, 1, ts+1000, nil)
		b.StartTimer()
		t0 := time.Now()
		p.processBatch(int64(i), 0, next[0]) // moves the watermark past the window's end
		for _, m := range p.collect(nil) {
			if err := e.coord.handle(&m); err != nil {
				b.Fatal(err)
			}
		}
		q, err := db.Querier(ts+1000, ts+1000)
		if err != nil {
			b.Fatal(err)
		}
		ss := q.Select(context.Background(), false, nil, probe)
		found := 0
		for ss.Next() {
			found++
		}
		q.Close()
		lat = append(lat, time.Since(t0))
		if found != 100 {
			b.Fatalf("window %d: %d series queryable, want 100", i, found)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkCheckpoint100kSeries is the cost of one partition's checkpoint snapshot
// (the time the partition pauses) with 100k series in 100 groups and one open window,
// for sum/count/max and for rate_sum (which keeps per-series samples).
func BenchmarkCheckpoint100kSeries(b *testing.B) {
	for _, outputs := range [][]string{{"sum_samples", "count_samples", "max"}, {"rate_sum"}} {
		b.Run(outputs[0], func(b *testing.B) {
			se := newSyncEngine(b, 1, rc("r", `{__name__="http_requests_total"}`, "10s", "1s", []string{"job"}, nil, outputs...))
			for j, batch := range benchBatches(100_000, 1000, 1_700_000_000_000, nil) {
				se.parts[0].processBatch(int64(j), 0, batch)
			}
			b.ReportAllocs()
			b.ResetTimer()
			var n int
			for i := 0; i < b.N; i++ {
				data, err := se.parts[0].snapshot()
				if err != nil {
					b.Fatal(err)
				}
				n = len(data)
			}
			b.ReportMetric(float64(n), "bytes")
		})
	}
}
