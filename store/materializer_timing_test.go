package store

import (
	"context"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vigilhq/vigil/logcore"
	"github.com/vigilhq/vigil/sample"
)

// BenchmarkMaterializer measures how fast the materializer turns logged sample batches
// into queryable samples: b.N records of 1,000 series with one sample each (a typical
// remote-write request), over 20,000 distinct series, on 4 partitions. It reports
// samples/s and the lag left when the timer stops (zero: Sync waits for all).
func BenchmarkMaterializer(b *testing.B) {
	const partitions, perRecord, distinct = 4, 1000, 20000
	dir := b.TempDir()
	l, err := logcore.Open(filepath.Join(dir, "log"), logcore.Options{Fsync: logcore.FsyncNever})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	topic, err := l.Topic("samples", logcore.TopicConfig{Partitions: partitions})
	if err != nil {
		b.Fatal(err)
	}
	labelSets := make([][]sample.Label, distinct)
	for i := range labelSets {
		labelSets[i] = lbls("__name__", fmt.Sprintf("metric_%d", i%50), "instance", fmt.Sprintf("host-%d", i/50), "job", "bench")
	}
	start := time.Now().Add(-time.Hour).UnixMilli()
	var enc sample.Encoder
	for i := 0; i < b.N; i++ {
		enc.Reset()
		p := i % partitions
		ts := start + int64(i/partitions)*1000
		for k := 0; k < perRecord; k++ {
			// Partition p holds the series whose index is p modulo partitions.
			idx := ((i/partitions)*perRecord + k) % (distinct / partitions)
			enc.AppendSeries(&sample.Series{Labels: labelSets[idx*partitions+p], Samples: []sample.Sample{{T: ts, V: float64(i)}}})
		}
		if _, err := topic.Append(context.Background(), p, []logcore.Record{{Value: enc.Bytes()}}); err != nil {
			b.Fatal(err)
		}
	}
	s, err := Open(Options{Dir: filepath.Join(dir, "store"), Metrics: metrics.NewSet()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	m, err := s.StartMaterializer(MaterializerOptions{Log: l, Topic: topic, CheckpointInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := m.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(t0)
	b.StopTimer()
	b.ReportMetric(float64(b.N*perRecord)/elapsed.Seconds(), "samples/s")
	b.ReportMetric(float64(m.Lag()), "lag_records")
	m.Stop(context.Background())
}

// steadySeries is the series count of the steady-state benchmarks: the load of
// ingest's BenchmarkRemoteWritePeers (100k series of 8 labels, one sample per series
// per round, 2,000 series per remote-write request).
const steadySeries, steadyPerRequest = 100000, 2000

// steadyLabels are the label sets of ingest's peerBodies, sorted by name as
// remote-write senders give them.
func steadyLabels() [][]sample.Label {
	out := make([][]sample.Label, steadySeries)
	for id := range out {
		out[id] = lbls(
			"__name__", fmt.Sprintf("peer_metric_%d", id%100), "cluster", "prod-eu",
			"instance", fmt.Sprintf("10.0.%d.%d:9100", id/1000%256, id%256), "job", "node",
			"mode", "idle", "region", "eu-west-1",
			"series", strconv.Itoa(id), "zone", "eu-west-1b")
	}
	return out
}

// steadyRound encodes round r (every series, one sample at ts) as ingest would: each
// request of steadyPerRequest series becomes one record per partition, a series going
// to the partition of its labels' hash. It returns the records of each partition.
func steadyRound(sets [][]sample.Label, partitions int, ts int64, r int) [][]logcore.Record {
	out := make([][]logcore.Record, partitions)
	encs := make([]sample.Encoder, partitions)
	now := time.Now().UnixMilli()
	for first := 0; first < len(sets); first += steadyPerRequest {
		for p := range encs {
			encs[p].Reset()
		}
		for id := first; id < min(first+steadyPerRequest, len(sets)); id++ {
			p := int(steadyPartition(sets[id]) % uint64(partitions))
			encs[p].AppendSeries(&sample.Series{Labels: sets[id], Samples: []sample.Sample{{T: ts, V: float64(r*id) * 0.5}}})
		}
		for p := range encs {
			if encs[p].Len() > 0 {
				out[p] = append(out[p], logcore.Record{Timestamp: now, Value: append([]byte(nil), encs[p].Bytes()...)})
			}
		}
	}
	return out
}

// steadyBase is the warm-up round's timestamp: the start of a 2h block, so that the
// rounds of a benchmark fall in one head chunk range.
func steadyBase() int64 {
	const block = int64(2 * time.Hour / time.Millisecond)
	return (time.Now().UnixMilli()/block - 2) * block
}

func steadyPartition(ls []sample.Label) uint64 {
	h := fnv.New64a()
	for _, l := range ls {
		h.Write(l.Name)
		h.Write([]byte{0xff})
		h.Write(l.Value)
		h.Write([]byte{0xff})
	}
	return h.Sum64()
}

// cpuTime is the CPU time (user and system) the process has used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMaterializerSteady measures the materializer end to end (log reads, decode,
// TSDB appends and commits) at steady state: 100k series of 8 labels already in the
// head (one warm-up round), then b.N rounds of one new sample per series (a new
// timestamp each second), on 8 partitions as `vigil serve` runs. One op is one round.
// It reports samples/s (wall clock), the process CPU per sample (cpu-ns/sample) and
// allocations per sample, all over the b.N rounds only. The topic is S2-compressed, as
// vigil serve writes it; VIGIL_POLL_BYTES sets MaterializerOptions.MaxPollBytes (128 KiB
// and the default 1 MiB measured the same, within the noise).
func BenchmarkMaterializerSteady(b *testing.B) {
	const partitions = 8
	dir := b.TempDir()
	l, err := logcore.Open(filepath.Join(dir, "log"), logcore.Options{Fsync: logcore.FsyncNever})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	// S2, as vigil serve writes the samples topic.
	topic, err := l.Topic("samples", logcore.TopicConfig{Partitions: partitions, Compression: logcore.CompressionS2})
	if err != nil {
		b.Fatal(err)
	}
	sets := steadyLabels()
	// The warm-up round is more than the gate's slack (a quarter block duration) before
	// the others, so that no partition goes past it before all have appended it.
	base := steadyBase()
	warmEnd := make([]int64, partitions)
	for r := 0; r <= b.N; r++ {
		ts := base + int64(r)*1000
		if r > 0 {
			ts += (31 * time.Minute).Milliseconds()
		}
		for p, recs := range steadyRound(sets, partitions, ts, r) {
			if _, err := topic.Append(context.Background(), p, recs); err != nil {
				b.Fatal(err)
			}
			if r == 0 {
				warmEnd[p] = topic.Stats(p).EndOffset
			}
		}
	}
	s, err := Open(Options{Dir: filepath.Join(dir, "store"), Metrics: metrics.NewSet()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.StopTimer()
	pollBytes, _ := strconv.Atoi(os.Getenv("VIGIL_POLL_BYTES"))
	m, err := s.StartMaterializer(MaterializerOptions{Log: l, Topic: topic, CheckpointInterval: time.Hour, MaxPollBytes: pollBytes})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Stop(context.Background())
	// The warm-up round creates the series; the timer starts once every partition has
	// appended it (the gate holds them there).
	for warm := false; !warm; {
		warm = true
		for p, ps := range m.parts {
			warm = warm && ps.processed.Load() >= warmEnd[p]
		}
		time.Sleep(200 * time.Microsecond)
	}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0, t0 := cpuTime(b), time.Now()
	b.ResetTimer()
	b.StartTimer()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := m.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	elapsed, cpu := time.Since(t0), cpuTime(b)-cpu0
	runtime.ReadMemStats(&ms1)
	n := float64(b.N * steadySeries)
	b.ReportMetric(n/elapsed.Seconds(), "samples/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/n, "cpu-ns/sample")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/n, "allocs/sample")
	b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/n, "B/sample")
}

// BenchmarkBatchWriterSteady is the materializer's writer alone (decode, series cache,
// TSDB appends and commits; no log reads): one partition's writer taking b.N rounds of
// 100k series of 8 labels already in the head, in calls of about 1 MiB of records as a
// backlogged Poll returns them. One op is one round; it reports ns (wall clock) and
// process CPU per sample (cpu-ns/sample: less sensitive to a busy machine), and
// allocations per round. Profile the steady rounds with go tool pprof -tagfocus phase=steady.
func BenchmarkBatchWriterSteady(b *testing.B) {
	s, err := Open(Options{Dir: filepath.Join(b.TempDir(), "store"), Metrics: metrics.NewSet()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	set := metrics.NewSet()
	m := &Materializer{s: s, log: s.opts.Logger, corruptTotal: set.NewCounter("corrupt"), samplesTotal: set.NewCounter("samples"), histsTotal: set.NewCounter("hists")}
	w := newBatchWriter(m)
	sets := steadyLabels()
	base := steadyBase()
	round := func(r int) [][]logcore.Record {
		var chunks [][]logcore.Record
		var chunk []logcore.Record
		size := 0
		for _, rec := range steadyRound(sets, 1, base+int64(r)*1000, r)[0] {
			if size+len(rec.Value) > 1<<20 && len(chunk) > 0 {
				chunks, chunk, size = append(chunks, chunk), nil, 0
			}
			chunk, size = append(chunk, rec), size+len(rec.Value)
		}
		return append(chunks, chunk)
	}
	write := func(chunks [][]logcore.Record) {
		for _, c := range chunks {
			if _, err := w.write(context.Background(), c); err != nil {
				b.Fatal(err)
			}
		}
	}
	write(round(0))
	if got := s.db.Head().NumSeries(); got != steadySeries {
		b.Fatalf("head holds %d series after the warm-up round, want %d", got, steadySeries)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var spent, cpu time.Duration
	for r := 1; r <= b.N; r++ {
		b.StopTimer()
		chunks := round(r)
		b.StartTimer()
		t0, cpu0 := time.Now(), cpuTime(b)
		// The label lets a profile show the steady rounds alone: -tagfocus phase=steady.
		pprof.Do(context.Background(), pprof.Labels("phase", "steady"), func(context.Context) { write(chunks) })
		spent, cpu = spent+time.Since(t0), cpu+cpuTime(b)-cpu0
	}
	b.StopTimer()
	if got := s.db.Head().NumSeries(); got != steadySeries {
		b.Fatalf("head holds %d series, want %d", got, steadySeries)
	}
	b.ReportMetric(float64(spent.Nanoseconds())/float64(b.N*steadySeries), "ns/sample")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*steadySeries), "cpu-ns/sample")
	b.ReportMetric(float64(b.N*steadySeries)/spent.Seconds(), "samples/s")
}
