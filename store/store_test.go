package store

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/vigilhq/vigil/logcore"
	"github.com/vigilhq/vigil/sample"
)

// testEnv is a real file log and a store in one temporary directory.
type testEnv struct {
	t     *testing.T
	dir   string
	log   *logcore.FileLog
	topic logcore.Topic
	store *Store
	mat   *Materializer
	set   *metrics.Set
	opts  Options
}

func newEnv(t *testing.T, partitions int, opts Options) *testEnv {
	t.Helper()
	e := &testEnv{t: t, dir: t.TempDir(), opts: opts}
	e.openLog(partitions)
	e.openStore()
	t.Cleanup(func() {
		if e.mat != nil {
			e.mat.Stop(context.Background())
		}
		if e.store != nil {
			e.store.Close()
		}
		if e.log != nil {
			e.log.Close()
		}
	})
	return e
}

func (e *testEnv) openLog(partitions int) {
	e.t.Helper()
	l, err := logcore.Open(filepath.Join(e.dir, "log"), logcore.Options{Fsync: logcore.FsyncNever})
	if err != nil {
		e.t.Fatal(err)
	}
	topic, err := l.Topic("samples", logcore.TopicConfig{Partitions: partitions})
	if err != nil {
		e.t.Fatal(err)
	}
	e.log, e.topic = l, topic
}

func (e *testEnv) openStore() {
	e.t.Helper()
	o := e.opts
	o.Dir = filepath.Join(e.dir, "store")
	e.set = metrics.NewSet()
	o.Metrics = e.set
	s, err := Open(o)
	if err != nil {
		e.t.Fatal(err)
	}
	e.store = s
	m, err := s.StartMaterializer(MaterializerOptions{Log: e.log, Topic: e.topic, CheckpointInterval: time.Hour})
	if err != nil {
		e.t.Fatal(err)
	}
	e.mat = m
}

// crash drops the store's head and the materializer without persisting anything, as a
// kill -9 would; the log (already synced by the OS) stays.
func (e *testEnv) crash() {
	e.mat.cancel()
	e.mat.wg.Wait()
	<-e.mat.ckDone
	e.mat = nil
	if err := e.store.close(); err != nil {
		e.t.Fatal(err)
	}
	e.store = nil
}

func (e *testEnv) stop() {
	if err := e.mat.Stop(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.mat = nil
	if err := e.store.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.store = nil
}

func (e *testEnv) sync() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.mat.Sync(ctx); err != nil {
		e.t.Fatal(err)
	}
}

// appendSeries writes one record holding series to partition p.
func (e *testEnv) appendSeries(p int, series ...sample.Series) {
	e.t.Helper()
	var enc sample.Encoder
	enc.Reset()
	for i := range series {
		enc.AppendSeries(&series[i])
	}
	if _, err := e.topic.Append(context.Background(), p, []logcore.Record{{Value: append([]byte(nil), enc.Bytes()...)}}); err != nil {
		e.t.Fatal(err)
	}
}

func lbls(kv ...string) []sample.Label {
	var ls []sample.Label
	for i := 0; i < len(kv); i += 2 {
		ls = append(ls, sample.Label{Name: []byte(kv[i]), Value: []byte(kv[i+1])})
	}
	return ls
}

func (e *testEnv) instant(q string, ts int64) promql.Vector {
	e.t.Helper()
	qry, err := e.store.Engine().NewInstantQuery(context.Background(), e.store.Queryable(), nil, q, time.UnixMilli(ts))
	if err != nil {
		e.t.Fatal(err)
	}
	defer qry.Close()
	res := qry.Exec(context.Background())
	if res.Err != nil {
		e.t.Fatalf("%s: %v", q, res.Err)
	}
	v, err := res.Vector()
	if err != nil {
		e.t.Fatalf("%s: %v", q, err)
	}
	return v
}

func TestMaterializeFloatsAndHistograms(t *testing.T) {
	e := newEnv(t, 2, Options{OutOfOrderWindow: 10 * time.Minute})
	var mu sync.Mutex
	var arrived []string
	e.store.SetArrivalHook(func(names []string) {
		mu.Lock()
		arrived = append(arrived, names...)
		mu.Unlock()
	})
	base := time.Now().Add(-time.Minute).UnixMilli()
	e.appendSeries(0, sample.Series{
		Labels:  lbls("__name__", "up", "job", "a"),
		Samples: []sample.Sample{{T: base, V: 1}, {T: base + 1000, V: 2}},
	}, sample.Series{
		Labels:  lbls("__name__", "up", "job", "a"), // the same series again: one sample twice
		Samples: []sample.Sample{{T: base + 1000, V: 2}},
	})
	h := &histogram.Histogram{Count: 3, Sum: 4.5, Schema: 0, ZeroThreshold: 0.001,
		PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []int64{1, 1}}
	hp := prompb.FromIntHistogram(base, h)
	proto, err := hp.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	e.appendSeries(1, sample.Series{
		Labels:     lbls("__name__", "lat", "job", "b"),
		Histograms: []sample.Histogram{{T: base, Proto: proto}},
	})
	// Labels out of order and a corrupt record are handled, not fatal.
	e.appendSeries(1, sample.Series{
		Labels:  lbls("job", "c", "__name__", "up"),
		Samples: []sample.Sample{{T: base, V: 7}},
	})
	if _, err := e.topic.Append(context.Background(), 1, []logcore.Record{{Value: []byte{9, 9, 9}}}); err != nil {
		t.Fatal(err)
	}
	e.sync()

	v := e.instant(`count_over_time(up[5m])`, base+2000)
	got := map[string]float64{}
	for _, s := range v {
		got[s.Metric.Get("job")] = s.F
	}
	if got["a"] != 2 || got["c"] != 1 || len(got) != 2 {
		t.Errorf("count_over_time(up[5m]) = %v, want a=2 c=1", got)
	}
	hv := e.instant(`lat`, base+2000)
	if len(hv) != 1 || hv[0].H == nil || hv[0].H.Count != 3 || hv[0].H.Sum != 4.5 {
		t.Fatalf("lat = %v, want the native histogram with count 3 sum 4.5", hv)
	}
	if n := e.set.GetOrCreateCounter(`vigil_materializer_corrupt_records_total`).Get(); n != 1 {
		t.Errorf("corrupt records = %d, want 1", n)
	}
	mu.Lock()
	sort.Strings(arrived)
	names := fmt.Sprint(arrived)
	mu.Unlock()
	if names != "[lat up up]" && names != "[lat up]" {
		t.Errorf("arrival hook names = %s, want lat and up (one per commit)", names)
	}
	var buf bytesBuffer
	e.set.WritePrometheus(&buf)
	if !buf.contains("vigil_store_ingest_to_queryable_seconds_bucket") {
		t.Errorf("no ingest-to-queryable histogram in metrics:\n%s", buf)
	}
}

// TestCrashReplaysExactlyOnce writes samples across several block durations, cuts
// blocks at a checkpoint, crashes (head lost, nothing flushed), restarts, and checks
// that every sample is queryable exactly once; then the same after a clean stop.
func TestCrashReplaysExactlyOnce(t *testing.T) {
	const partitions = 3
	e := newEnv(t, partitions, Options{BlockDuration: 2 * time.Minute, OutOfOrderWindow: 5 * time.Minute, RawRetention: 24 * time.Hour})
	start := (time.Now().Add(-30*time.Minute).UnixMilli() / 60000) * 60000
	const step = 5000
	const series = 12
	n := 0
	write := func(from, to int64) {
		for ts := from; ts < to; ts += step {
			for p := 0; p < partitions; p++ {
				var ss []sample.Series
				for i := p; i < series; i += partitions {
					ss = append(ss, sample.Series{Labels: lbls("__name__", "m", "i", fmt.Sprint(i)), Samples: []sample.Sample{{T: ts, V: float64(ts)}}})
					n++
				}
				e.appendSeries(p, ss...)
			}
		}
	}
	// An out-of-order straggler, older than the block cut below.
	write(start, start+10*60000)
	e.sync()
	if err := e.mat.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	committed := int64(0)
	for p := 0; p < partitions; p++ {
		committed += e.mat.Committed(p)
	}
	if committed == 0 {
		t.Fatal("checkpoint committed nothing although blocks were cut")
	}
	if len(e.store.DB().Blocks()) == 0 {
		t.Fatal("no block persisted")
	}
	write(start+10*60000, start+15*60000)
	e.sync()

	check := func(when string) {
		t.Helper()
		v := e.instant(`sum(count_over_time(m[1h]))`, start+15*60000)
		if len(v) != 1 || int(v[0].F) != n {
			var buf bytesBuffer
			e.set.WritePrometheus(&buf)
			t.Fatalf("%s: sum(count_over_time(m[1h])) = %v, want %d\n%s", when, v, n, buf)
		}
		v = e.instant(`max(max_over_time(m[1h]) - min_over_time(m[1h]))`, start+15*60000)
		if len(v) != 1 || v[0].F != float64(15*60000-step) {
			t.Fatalf("%s: span = %v", when, v)
		}
	}
	check("before crash")
	e.crash()
	e.openStore()
	e.sync()
	check("after crash")
	// Crash again right after the replay, before any checkpoint: still exactly once.
	e.crash()
	e.openStore()
	e.sync()
	check("after second crash")
	e.stop()
	e.openStore()
	e.sync()
	check("after clean stop")
	for p := 0; p < partitions; p++ {
		if c, end := e.mat.Committed(p), e.topic.Stats(p).EndOffset; c != end {
			t.Errorf("partition %d: committed %d after a clean stop, want the end %d", p, c, end)
		}
	}
}

// TestReplayAfterKillBetweenCuts leaves the store as a kill -9 between a checkpoint's
// in-order head cut and its out-of-order compaction does: in-order blocks end past an
// out-of-order sample that is in no block, and no offset is committed. The restarted
// TSDB's head starts at the in-order blocks' end, further ahead of that sample than the
// out-of-order window; its replay must still store it.
func TestReplayAfterKillBetweenCuts(t *testing.T) {
	e := newEnv(t, 1, Options{BlockDuration: time.Minute, OutOfOrderWindow: 30 * time.Second})
	start := killStart()
	series := func(name string, v float64, from, to int64) sample.Series {
		s := sample.Series{Labels: lbls("__name__", name)}
		for sec := from; sec <= to; sec++ {
			s.Samples = append(s.Samples, sample.Sample{T: start + sec*1000, V: v})
		}
		return s
	}
	e.appendSeries(0, series("a", 1, 0, 400), series("b", 1, 395, 395))
	e.appendSeries(0, series("b", 2, 380, 380)) // out of order: older than b's last, inside the window
	e.appendSeries(0, series("a", 1, 401, 500))
	e.sync()
	// Cut the in-order head as far as it is due, leaving the out-of-order head alone.
	h := e.store.db.Head()
	for h.MaxTime()-h.MinTime() > time.Minute.Milliseconds()/2*3 {
		mint := h.MinTime()
		maxt := (floorDiv(mint, 60000) + 1) * 60000
		if err := e.store.db.CompactHead(tsdb.NewRangeHead(h, mint, maxt-1)); err != nil {
			t.Fatal(err)
		}
	}
	check := func(when string) {
		t.Helper()
		for name, want := range map[string]int{"a": 501, "b": 2} {
			v := e.instant(`count_over_time(`+name+`[1h])`, start+30*60000)
			if len(v) != 1 || int(v[0].F) != want {
				var buf bytesBuffer
				e.set.WritePrometheus(&buf)
				t.Fatalf("%s: count_over_time(%s[1h]) = %v, want %d\n%s", when, name, v, want, buf)
			}
		}
	}
	check("before the crash")
	if h.MinTime() < start+400000 || e.mat.Committed(0) != 0 {
		t.Fatalf("head starts %dms after the first sample, %d committed: want past the out-of-order sample, nothing committed", h.MinTime()-start, e.mat.Committed(0))
	}
	e.crash()
	e.openStore()
	e.sync()
	check("after the crash")
	if e.mat.replaying.Load() != 0 {
		t.Fatal("the replay is over, yet the materializer counts replaying partitions")
	}
	e.store.wmu.Lock()
	extra := e.store.replayExtra
	e.store.wmu.Unlock()
	if extra != 0 {
		t.Fatalf("the replay is over, yet the out-of-order window is still widened by %s", extra)
	}
}

func TestGateKeepsPartitionsInStep(t *testing.T) {
	g := newGate(2, 10, func(int) bool { return false })
	ctx := context.Background()
	if !g.wait(ctx, 0, 100) {
		t.Fatal("first partition blocked")
	}
	done := make(chan bool)
	go func() { done <- g.wait(ctx, 1, 200) }()
	select {
	case <-done:
		t.Fatal("partition 1 ran 100ms ahead of partition 0 with slack 10")
	case <-time.After(50 * time.Millisecond):
	}
	g.idle(0)
	if !<-done {
		t.Fatal("partition 1 not released when partition 0 went idle")
	}
	cctx, cancel := context.WithCancel(ctx)
	go func() { done <- g.wait(cctx, 0, 1000) }()
	time.Sleep(10 * time.Millisecond)
	cancel()
	if <-done {
		t.Fatal("wait returned true after its context was canceled")
	}
	// A partition's later records do not move the others on before they are appended.
	g = newGate(2, 10, func(int) bool { return true })
	go func() { done <- g.wait(ctx, 0, 100) }()
	if !g.wait(ctx, 1, 95) || !<-done {
		t.Fatal("partitions 5 apart blocked with slack 10")
	}
	if !g.allows(0, 105) || g.allows(0, 150) {
		t.Fatal("allows ignores the slack")
	}
	go func() { done <- g.wait(ctx, 1, 115) }()
	select {
	case <-done:
		t.Fatal("partition 1 passed 15 ahead of partition 0's oldest record (slack 10) after allows(0, 150)")
	case <-time.After(50 * time.Millisecond):
	}
	if !g.wait(ctx, 0, 106) || !<-done {
		t.Fatal("partition 1 not released when partition 0 moved on")
	}
	if floorDiv(-1, 60000) != -1 || floorDiv(60000, 60000) != 1 || math.MaxInt64 == 0 {
		t.Fatal("floorDiv")
	}
}

type bytesBuffer struct{ b []byte }

func (b *bytesBuffer) Write(p []byte) (int, error) { b.b = append(b.b, p...); return len(p), nil }
func (b *bytesBuffer) String() string              { return string(b.b) }
func (b *bytesBuffer) contains(s string) bool      { return strings.Contains(string(b.b), s) }

// TestAppendableIsDurableAndMerged writes derived series through Appendable, crashes,
// and finds them again next to the raw samples.
func TestAppendableIsDurableAndMerged(t *testing.T) {
	e := newEnv(t, 1, Options{})
	ts := time.Now().Add(-time.Minute).UnixMilli()
	e.appendSeries(0, sample.Series{Labels: lbls("__name__", "raw", "job", "a"), Samples: []sample.Sample{{T: ts, V: 1}}})
	e.sync()
	app := e.store.Appendable().Appender(context.Background())
	if _, err := app.Append(0, labels.FromStrings("__name__", "job:raw:sum", "job", "a"), ts, 5); err != nil {
		t.Fatal(err)
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		v := e.instant(`raw + on (job) job:raw:sum`, ts)
		if len(v) != 1 || v[0].F != 6 {
			t.Fatalf("%s: raw + job:raw:sum = %v, want 6", when, v)
		}
		v = e.instant(`count({job="a"})`, ts)
		if len(v) != 1 || v[0].F != 2 {
			t.Fatalf("%s: count({job=\"a\"}) = %v, want 2", when, v)
		}
	}
	check("before crash")
	e.crash()
	e.openStore()
	e.sync()
	check("after crash")
}

func TestReconfigureOutOfOrderWindow(t *testing.T) {
	e := newEnv(t, 1, Options{})
	now := time.Now().UnixMilli()
	e.appendSeries(0, sample.Series{Labels: lbls("__name__", "o"), Samples: []sample.Sample{{T: now, V: 1}}})
	e.sync()
	// Without a window a sample older than the series' newest is refused...
	e.appendSeries(0, sample.Series{Labels: lbls("__name__", "o"), Samples: []sample.Sample{{T: now - 60000, V: 2}}})
	e.sync()
	if v := e.instant(`count_over_time(o[10m])`, now); len(v) != 1 || v[0].F != 1 {
		t.Fatalf("without out-of-order window: %v, want 1 sample", v)
	}
	// ...and accepted once the window is reloaded.
	if err := e.store.Reconfigure(10*time.Minute, 24*time.Hour, 48*time.Hour); err != nil {
		t.Fatal(err)
	}
	e.appendSeries(0, sample.Series{Labels: lbls("__name__", "o"), Samples: []sample.Sample{{T: now - 30000, V: 3}}})
	e.sync()
	if v := e.instant(`count_over_time(o[10m])`, now); len(v) != 1 || v[0].F != 2 {
		t.Fatalf("with out-of-order window: %v, want 2 samples", v)
	}
	if err := e.store.Reconfigure(-1, time.Hour, time.Hour); err == nil {
		t.Fatal("negative window accepted")
	}
}

func TestNotifyingAppendableCallsTheHook(t *testing.T) {
	e := newEnv(t, 1, Options{})
	var got []string
	e.store.SetArrivalHook(func(names []string) { got = append(got, names...) })
	ts := time.Now().UnixMilli()
	app := e.store.NotifyingAppendable().Appender(context.Background())
	for _, l := range []labels.Labels{labels.FromStrings("__name__", "r:5s", "a", "1"), labels.FromStrings("__name__", "r:5s", "a", "2"), labels.FromStrings("__name__", "q:5s")} {
		if _, err := app.Append(0, l, ts, 1); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 0 {
		t.Fatalf("hook called before Commit: %v", got)
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[r:5s q:5s]" {
		t.Fatalf("hook got %v, want [r:5s q:5s]", got)
	}
	if v := e.instant(`count({__name__=~".:5s"})`, ts); len(v) != 1 || v[0].F != 3 {
		t.Fatalf("count = %v, want 3", v)
	}
}

// TestMaterializerYield: while Yield reports ingest busy, records wait in the log, up to
// YieldLag records and for YieldFor at a stretch; once ingest is idle, or a bound is
// reached, they are stored.
func TestMaterializerYield(t *testing.T) {
	e := newEnv(t, 1, Options{})
	if err := e.mat.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	var busy atomic.Bool
	busy.Store(true)
	start := func(yieldFor time.Duration) {
		t.Helper()
		m, err := e.store.StartMaterializer(MaterializerOptions{Log: e.log, Topic: e.topic, CheckpointInterval: time.Hour,
			Yield: busy.Load, YieldLag: 4, YieldFor: yieldFor})
		if err != nil {
			t.Fatal(err)
		}
		e.mat = m
	}
	start(time.Hour)
	base := time.Now().Add(-time.Minute).UnixMilli()
	n := 0
	add := func(k int) {
		for i := 0; i < k; i++ {
			e.appendSeries(0, sample.Series{Labels: lbls("__name__", "up", "n", strconv.Itoa(n)), Samples: []sample.Sample{{T: base + int64(n)*1000, V: 1}}})
			n++
		}
	}
	held := func(what string, want int64) {
		t.Helper()
		time.Sleep(50 * time.Millisecond)
		if lag := e.mat.Lag(); lag != want {
			t.Fatalf("%s: lag %d, want %d records held back", what, lag, want)
		}
	}
	add(3)
	held("busy, under YieldLag", 3)
	if e.set.GetOrCreateFloatCounter(`vigil_materializer_yield_seconds_total`).Get() <= 0 {
		t.Fatal("vigil_materializer_yield_seconds_total did not count the wait")
	}
	add(1) // 4 records: YieldLag reached
	e.sync()
	add(2)
	held("busy again after catching up", 2)
	busy.Store(false)
	e.sync()

	// YieldFor bounds a stretch of holding back.
	if err := e.mat.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	busy.Store(true)
	start(20 * time.Millisecond)
	add(1)
	e.sync()
	if got := len(e.instant(`up`, base+int64(n)*1000)); got != n {
		t.Fatalf("%d series stored, want %d", got, n)
	}
}
