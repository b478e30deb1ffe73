package logcore

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// The benchmarks behind `make bench` (issue 2's performance goals). They report their
// figures with b.ReportMetric; none of them asserts a speed.

// BenchmarkAppendFsyncAlways64Producers: FsyncAlways, 64 concurrent producers, 1 KiB
// records. Beside the log's MB/s it measures this machine's own synced sequential
// write bandwidth in the same folder, with writes of the log's average group-commit
// size each followed by fdatasync, and reports the ratio (goal: at least 0.7). The
// disk's speed drifts on a shared machine, so the run alternates: 16 rounds of the
// log, each followed by the baseline for as long as that round took. "ratio" is the
// median of the rounds' ratios (robust to bursts of other load), "ratio_total" the
// ratio of the totals.
func BenchmarkAppendFsyncAlways64Producers(b *testing.B) {
	const producers, recSize, rounds = 64, 1024, 16
	dir := b.TempDir()
	set := metrics.NewSet()
	l, err := Open(filepath.Join(dir, "log"), Options{Fsync: FsyncAlways, Metrics: set, MaintenanceInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	tp, err := l.Topic("bench", TopicConfig{Partitions: 1})
	if err != nil {
		b.Fatal(err)
	}
	value := make([]byte, recSize)
	for i := range value {
		value[i] = byte(i * 7)
	}
	appended := set.GetOrCreateCounter("vigil_log_appended_bytes_total")
	fsyncs := set.GetOrCreateCounter("vigil_log_fsyncs_total")
	run := func(n int) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for g := 0; g < producers; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				recs := []Record{{Value: value}}
				for {
					mu.Lock()
					if n == 0 {
						mu.Unlock()
						return
					}
					n--
					mu.Unlock()
					if _, err := tp.Append(context.Background(), 0, recs); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	var logTime, diskTime time.Duration
	var logBytes, diskBytes, syncs uint64
	var ratios []float64
	b.ReportAllocs()
	b.SetBytes(recSize)
	b.ResetTimer()
	for r := 0; r < rounds; r++ {
		n := b.N / rounds
		if r == rounds-1 {
			n = b.N - (rounds-1)*(b.N/rounds)
		}
		bytes0, syncs0 := appended.Get(), fsyncs.Get()
		start := time.Now()
		run(n)
		took := time.Since(start)
		b.StopTimer()
		db, ds := appended.Get()-bytes0, fsyncs.Get()-syncs0
		logTime += took
		logBytes += db
		syncs += ds
		if ds > 0 {
			w, d := syncedWrites(b, dir, int(db/ds), took)
			diskBytes += w
			diskTime += d
			ratios = append(ratios, (float64(db)/took.Seconds())/(float64(w)/d.Seconds()))
		}
		b.StartTimer()
	}
	b.StopTimer()
	if syncs == 0 || diskTime == 0 {
		b.Fatal("no fsyncs")
	}
	logMBs := float64(logBytes) / logTime.Seconds() / 1e6
	diskMBs := float64(diskBytes) / diskTime.Seconds() / 1e6
	b.ReportMetric(logMBs, "log_MB/s")
	b.ReportMetric(diskMBs, "disk_MB/s")
	sort.Float64s(ratios)
	b.ReportMetric(ratios[len(ratios)/2], "ratio")
	b.ReportMetric(logMBs/diskMBs, "ratio_total")
	b.ReportMetric(float64(logBytes)/float64(syncs), "group_bytes")
	b.ReportMetric(float64(b.N)/float64(syncs), "records/fsync")
}

// syncedWrites appends chunk-byte writes, each followed by fdatasync, to a fresh file
// in dir for about d (at least 16 writes), and returns the bytes written and the time taken.
func syncedWrites(b *testing.B, dir string, chunk int, d time.Duration) (uint64, time.Duration) {
	f, err := os.OpenFile(filepath.Join(dir, "baseline"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, chunk)
	for i := range buf {
		buf[i] = byte(i)
	}
	var pos int64
	start := time.Now()
	for n := 0; n < 16 || time.Since(start) < d; n++ {
		if _, err := f.WriteAt(buf, pos); err != nil {
			b.Fatal(err)
		}
		if err := fdatasync(int(f.Fd())); err != nil {
			b.Fatal(err)
		}
		pos += int64(chunk)
	}
	return uint64(pos), time.Since(start)
}

// BenchmarkAppendFsyncNeverBatches: FsyncNever, one producer appending batches of
// 1,000 records of 100 bytes, with GOMAXPROCS=1 (one core). Goal: 3 M records/s.
func BenchmarkAppendFsyncNeverBatches(b *testing.B) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	l, err := Open(b.TempDir(), Options{Fsync: FsyncNever, MaintenanceInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	tp, err := l.Topic("bench", TopicConfig{Partitions: 1, SegmentBytes: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	recs := make([]Record, 1000)
	for i := range recs {
		v := make([]byte, 100)
		for j := range v {
			v[j] = byte(i + j)
		}
		recs[i] = Record{Value: v, Timestamp: 1_700_000_000_000 + int64(i)}
	}
	b.ReportAllocs()
	b.SetBytes(100 * 1000)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := tp.Append(context.Background(), 0, recs); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer() // not the final sync in Close
	b.ReportMetric(float64(b.N)*1000/elapsed.Seconds(), "records/s")
}

// BenchmarkTailingReadPageCache: a Consumer polls a 64 MiB partition of 1 KiB records
// from the page cache, from its start to its end. Goal: 1 GB/s.
func BenchmarkTailingReadPageCache(b *testing.B) {
	for _, c := range []struct {
		name  string
		codec Compression
	}{{"none", CompressionNone}, {"s2", CompressionS2}} {
		b.Run(c.name, func(b *testing.B) { benchTailingRead(b, c.codec) })
	}
}

// benchTailingRead reads 64 MiB of 1 KiB records (compressible text, so that an S2 log
// holds about a quarter of it) through a Consumer; a steady reader should not allocate.
func benchTailingRead(b *testing.B, codec Compression) {
	const total, recSize = 64 << 20, 1024
	l, err := Open(b.TempDir(), Options{Fsync: FsyncNever, MaintenanceInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	tp, err := l.Topic("bench", TopicConfig{Partitions: 1, Compression: codec})
	if err != nil {
		b.Fatal(err)
	}
	recs := make([]Record, 256)
	for i := range recs {
		v := make([]byte, 0, recSize)
		for j := 0; len(v) < recSize; j++ {
			v = fmt.Appendf(v, "series_%d{job=%q} %d ", j%13, "bench", i*j)
		}
		recs[i] = Record{Value: v[:recSize]}
	}
	var n int64
	for written := 0; written < total; written += len(recs) * recSize {
		if _, err := tp.Append(context.Background(), 0, recs); err != nil {
			b.Fatal(err)
		}
		n += int64(len(recs))
	}
	c, err := NewConsumer(l, "bench", tp, 0)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(n * recSize)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		c.SeekTo(0)
		for c.Position() < n {
			recs, err := c.Poll(ctx, 1<<20)
			if err != nil {
				b.Fatal(err)
			}
			if len(recs) == 0 {
				b.Fatal("empty poll")
			}
		}
	}
	elapsed := time.Since(start)
	b.StopTimer() // not the final sync in Close
	b.ReportMetric(float64(b.N)*float64(n*recSize)/elapsed.Seconds()/1e9, "GB/s")
}

// benchFillEnv makes the test binary (see TestMain) a child that fills the log in the
// named directory up to 1 GiB and then appends until it is killed.
const benchFillEnv = "VIGIL_LOGCORE_BENCH_FILL"

const benchFillBytes = 1 << 30

// benchFillChild appends 1 MiB batches of 4 KiB records (FsyncNever) until the
// partition holds benchFillBytes, prints "filled", then goes on appending small
// batches until it is killed.
func benchFillChild(dir string) error {
	l, err := Open(dir, Options{Fsync: FsyncNever, MaintenanceInterval: time.Hour})
	if err != nil {
		return err
	}
	tp, err := l.Topic("bench", TopicConfig{Partitions: 1})
	if err != nil {
		return err
	}
	big := make([]Record, 256)
	for i := range big {
		big[i] = Record{Value: make([]byte, 4096)}
	}
	for tp.Stats(0).Bytes < benchFillBytes {
		if _, err := tp.Append(context.Background(), 0, big); err != nil {
			return err
		}
	}
	w := bufio.NewWriter(os.Stdout)
	fmt.Fprintln(w, "filled")
	w.Flush()
	small := big[:8]
	for {
		if _, err := tp.Append(context.Background(), 0, small); err != nil {
			return err
		}
	}
}

// BenchmarkReopenAfterKill1GiB: a child fills a 1 GiB partition and is killed with
// SIGKILL while appending; the benchmark times Open (with recovery) of the log, then
// lets a child append to it and kills it again for the next round. Goal: under 1 s.
// The child writes with FsyncNever (to fill the partition quickly) and Open uses the
// same policy: opening with FsyncAlways would also make Open sync the dirty pages the
// child left when it truncates a torn tail, which measures the disk's writeback, not
// recovery (with FsyncAlways throughout, those pages are already synced).
func BenchmarkReopenAfterKill1GiB(b *testing.B) {
	dir := b.TempDir()
	kill := func(wait string, after time.Duration) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), benchFillEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		for sc.Scan() && sc.Text() != wait {
		}
		time.Sleep(after)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	}
	kill("filled", 50*time.Millisecond)
	var total time.Duration
	var bytes int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		l, err := Open(dir, Options{Fsync: FsyncNever, MaintenanceInterval: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		tp, err := l.Topic("bench", TopicConfig{})
		if err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		b.StopTimer()
		bytes = tp.Stats(0).Bytes
		l.Close()
		if i+1 < b.N {
			kill("filled", time.Duration(10+i%40)*time.Millisecond)
		}
		b.StartTimer()
	}
	b.ReportMetric(total.Seconds()*1000/float64(b.N), "open_ms")
	b.ReportMetric(float64(bytes)/(1<<30), "GiB")
}
