package logcore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

func openTest(t testing.TB, dir string, opts Options) *FileLog {
	t.Helper()
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func rec(key, val string, ts int64) Record {
	r := Record{Value: []byte(val), Timestamp: ts}
	if key != "" {
		r.Key = []byte(key)
	}
	return r
}

// readAll reads partition p of t from its start offset to its end offset.
func readAll(t testing.TB, tp Topic, p int) []Record {
	t.Helper()
	var out []Record
	off := tp.Stats(p).StartOffset
	end := tp.Stats(p).EndOffset
	for off < end {
		recs, err := tp.Read(p, off, 0, nil)
		if err != nil {
			t.Fatalf("read %d: %v", off, err)
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			r.Key = bytes.Clone(r.Key)
			r.Value = bytes.Clone(r.Value)
			out = append(out, r)
		}
		off = recs[len(recs)-1].Offset + 1
	}
	return out
}

func TestAppendReadReopen(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  Options
		codec Compression
	}{
		{"always", Options{Fsync: FsyncAlways}, CompressionNone},
		{"interval-s2", Options{Fsync: FsyncInterval, FsyncInterval: 5 * time.Millisecond}, CompressionS2},
		{"never", Options{Fsync: FsyncNever}, CompressionNone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openTest(t, dir, tc.opts)
			tp, err := l.Topic("samples", TopicConfig{Partitions: 3, SegmentBytes: 4096, Compression: tc.codec})
			if err != nil {
				t.Fatal(err)
			}
			var want [3][]string
			for i := 0; i < 200; i++ {
				p := i % 3
				v := fmt.Sprintf("value-%d-%s", i, bytes.Repeat([]byte("x"), i%50))
				off, err := tp.Append(context.Background(), p, []Record{rec("", v, int64(1000+i))})
				if err != nil {
					t.Fatal(err)
				}
				if off != int64(len(want[p])) {
					t.Fatalf("offset %d, want %d", off, len(want[p]))
				}
				want[p] = append(want[p], v)
			}
			check := func(tp Topic) {
				for p := 0; p < 3; p++ {
					got := readAll(t, tp, p)
					if len(got) != len(want[p]) {
						t.Fatalf("partition %d: %d records, want %d", p, len(got), len(want[p]))
					}
					for i, r := range got {
						if r.Offset != int64(i) || string(r.Value) != want[p][i] || r.Key != nil {
							t.Fatalf("partition %d record %d: %+v, want %q", p, i, r, want[p][i])
						}
					}
				}
			}
			check(tp)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := tp.Append(context.Background(), 0, []Record{rec("", "x", 0)}); !errors.Is(err, ErrClosed) {
				t.Fatalf("append after close: %v, want ErrClosed", err)
			}
			l = openTest(t, dir, tc.opts)
			defer l.Close()
			tp, err = l.Topic("samples", TopicConfig{})
			if err != nil {
				t.Fatal(err)
			}
			if tp.Partitions() != 3 {
				t.Fatalf("reopened with %d partitions", tp.Partitions())
			}
			check(tp)
			if _, err := l.Topic("samples", TopicConfig{Partitions: 4}); err == nil {
				t.Fatal("changing the partition count succeeded")
			}
			off, err := tp.Append(context.Background(), 1, []Record{rec("", "after", 0)})
			if err != nil || off != int64(len(want[1])) {
				t.Fatalf("append after reopen: %d %v, want offset %d", off, err, len(want[1]))
			}
		})
	}
}

func TestGroupCommitConcurrentProducers(t *testing.T) {
	l := openTest(t, t.TempDir(), Options{})
	defer l.Close()
	tp, err := l.Topic("t", TopicConfig{Partitions: 1, SegmentBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	const producers, each = 16, 50
	var wg sync.WaitGroup
	offs := make(chan int64, producers*each)
	for g := 0; g < producers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				off, err := tp.Append(context.Background(), 0, []Record{rec("", fmt.Sprintf("%d/%d", g, i), 0), rec("", "second", 0)})
				if err != nil {
					t.Error(err)
					return
				}
				offs <- off
			}
		}()
	}
	wg.Wait()
	close(offs)
	seen := map[int64]bool{}
	for o := range offs {
		if o%2 != 0 || seen[o] {
			t.Fatalf("bad or duplicate base offset %d", o)
		}
		seen[o] = true
	}
	if got := tp.Stats(0).EndOffset; got != producers*each*2 {
		t.Fatalf("end offset %d, want %d", got, producers*each*2)
	}
	if got := len(readAll(t, tp, 0)); got != producers*each*2 {
		t.Fatalf("read %d records", got)
	}
}

func TestWaitWakesTailingReader(t *testing.T) {
	l := openTest(t, t.TempDir(), Options{})
	defer l.Close()
	tp, _ := l.Topic("t", TopicConfig{Partitions: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan error, 1)
	go func() { got <- tp.Wait(ctx, 0, 0) }()
	if _, err := tp.Append(ctx, 0, []Record{rec("", "x", 0)}); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("wait: %v", err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if err := tp.Wait(short, 0, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait past the end: %v", err)
	}
}

func TestOffsetForTime(t *testing.T) {
	l := openTest(t, t.TempDir(), Options{IndexIntervalBytes: 64})
	defer l.Close()
	tp, _ := l.Topic("t", TopicConfig{Partitions: 1, SegmentBytes: 1024})
	for i := 0; i < 100; i++ {
		if _, err := tp.Append(context.Background(), 0, []Record{rec("", "v", int64(10*i+10))}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ ts, want int64 }{{0, 0}, {10, 0}, {11, 1}, {500, 49}, {1000, 99}, {1001, 100}} {
		got, err := tp.OffsetForTime(0, tc.ts)
		if err != nil || got != tc.want {
			t.Errorf("OffsetForTime(%d) = %d, %v; want %d", tc.ts, got, err, tc.want)
		}
	}
}

func TestConsumerCommitAndResume(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, Options{})
	tp, _ := l.Topic("t", TopicConfig{Partitions: 2})
	for i := 0; i < 10; i++ {
		tp.Append(context.Background(), 1, []Record{rec("", fmt.Sprint(i), 0)})
	}
	c, err := NewConsumer(l, "g", tp, 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, err := c.Poll(ctx, 0)
	if err != nil || len(recs) != 10 {
		t.Fatalf("poll: %d records, %v", len(recs), err)
	}
	if err := c.Commit(7); err != nil {
		t.Fatal(err)
	}
	st := StatusOf(l)
	if len(st.Consumers) != 1 || st.Consumers[0].Partitions[1].Committed != 7 || st.Consumers[0].Partitions[1].Lag != 3 {
		t.Fatalf("status: %+v", st.Consumers)
	}
	l.Close()
	l = openTest(t, dir, Options{})
	defer l.Close()
	tp, _ = l.Topic("t", TopicConfig{})
	c, _ = NewConsumer(l, "g", tp, 1)
	if c.Position() != 7 {
		t.Fatalf("resumed at %d, want 7", c.Position())
	}
	recs, err = c.Poll(ctx, 0)
	if err != nil || len(recs) != 3 || string(recs[0].Value) != "7" {
		t.Fatalf("poll after restart: %v %v", recs, err)
	}
}

func TestRetentionBySizeAndAgeAndSkippedConsumer(t *testing.T) {
	now := time.UnixMilli(1_000_000)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	dir := t.TempDir()
	l := openTest(t, dir, Options{Now: clock, MaintenanceInterval: time.Hour})
	tp, _ := l.Topic("t", TopicConfig{Partitions: 1, SegmentBytes: 1024, RetentionBytes: 4096})
	c, _ := NewConsumer(l, "slow", tp, 0)
	for i := 0; i < 200; i++ {
		if _, err := tp.Append(context.Background(), 0, []Record{rec("", fmt.Sprintf("%040d", i), 0)}); err != nil {
			t.Fatal(err)
		}
	}
	l.RunMaintenance()
	st := tp.Stats(0)
	if st.Bytes > 4096+1024 || st.StartOffset == 0 || st.EndOffset != 200 {
		t.Fatalf("after size retention: %+v", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, err := c.Poll(ctx, 0)
	if err != nil || len(recs) == 0 || recs[0].Offset != st.StartOffset {
		t.Fatalf("consumer behind retention: %v, first %v; start %d", err, recs, st.StartOffset)
	}
	l.Close()

	l = openTest(t, dir, Options{Now: clock, MaintenanceInterval: time.Hour})
	defer l.Close()
	tp, _ = l.Topic("t", TopicConfig{RetentionAge: time.Minute, SegmentAge: time.Minute})
	if got := tp.Stats(0).StartOffset; got != st.StartOffset {
		t.Fatalf("start after reopen %d, want %d", got, st.StartOffset)
	}
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	tp.Append(context.Background(), 0, []Record{rec("", "new", 0)})
	l.RunMaintenance()
	st = tp.Stats(0)
	if st.StartOffset != 200 || st.EndOffset != 201 {
		t.Fatalf("after age retention: %+v", st)
	}
}

func TestCompaction(t *testing.T) {
	now := time.UnixMilli(1_000_000)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	dir := t.TempDir()
	l := openTest(t, dir, Options{Now: clock, MaintenanceInterval: time.Hour})
	tp, _ := l.Topic("state", TopicConfig{Partitions: 1, SegmentBytes: 512, Compacted: true, TombstoneRetention: time.Minute})
	want := map[string]string{}
	for i := 0; i < 300; i++ {
		k, v := fmt.Sprintf("k%d", i%7), fmt.Sprintf("v%d", i)
		if i%50 == 49 {
			v = "" // tombstone
			delete(want, k)
		} else {
			want[k] = v
		}
		if _, err := tp.Append(context.Background(), 0, []Record{rec(k, v, 0)}); err != nil {
			t.Fatal(err)
		}
	}
	before := tp.Stats(0)
	l.RunMaintenance()
	after := tp.Stats(0)
	if after.Bytes >= before.Bytes || after.EndOffset != 300 {
		t.Fatalf("compaction: before %+v after %+v", before, after)
	}
	state := func(tp Topic) map[string]string {
		m := map[string]string{}
		last := int64(-1)
		for _, r := range readAll(t, tp, 0) {
			if r.Offset <= last {
				t.Fatalf("offsets not ascending: %d after %d", r.Offset, last)
			}
			last = r.Offset
			if len(r.Value) == 0 {
				delete(m, string(r.Key))
			} else {
				m[string(r.Key)] = string(r.Value)
			}
		}
		return m
	}
	if got := state(tp); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("state after compaction %v, want %v", got, want)
	}
	l.Close()
	l = openTest(t, dir, Options{Now: clock, MaintenanceInterval: time.Hour})
	defer l.Close()
	tp, _ = l.Topic("state", TopicConfig{})
	if got := state(tp); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("state after reopen %v, want %v", got, want)
	}
	off, err := tp.Append(context.Background(), 0, []Record{rec("k1", "again", 0)})
	if err != nil || off != 300 {
		t.Fatalf("append after compaction: %d %v", off, err)
	}
}

// testClock is a settable clock for Options.Now.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func counterValue(set *metrics.Set, name string) uint64 {
	return set.GetOrCreateCounter(name).Get()
}

// TestConsumerBehindRetentionAcrossRestart: a group commits, retention deletes past its
// offset while it is down, and after a restart its consumer resumes at the start
// offset and counts the skipped records in vigil_log_consumer_skipped_records_total.
func TestConsumerBehindRetentionAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	clock := &testClock{now: time.UnixMilli(1_000_000)}
	opts := Options{Now: clock.Now, MaintenanceInterval: time.Hour, Fsync: FsyncNever}
	l := openTest(t, dir, opts)
	tp, _ := l.Topic("t", TopicConfig{Partitions: 1, SegmentBytes: 1024, RetentionBytes: 3000})
	for i := 0; i < 20; i++ {
		if _, err := tp.Append(context.Background(), 0, []Record{rec("", fmt.Sprintf("%040d", i), 0)}); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := NewConsumer(l, "late", tp, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if recs, err := c.Poll(ctx, 200); err != nil || recs[0].Offset != 0 {
		t.Fatalf("first poll: %v %v", recs, err)
	}
	if err := c.Commit(5); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// While the consumer is down: more data, retention.
	opts.Metrics = metrics.NewSet()
	l = openTest(t, dir, opts)
	defer l.Close()
	tp, _ = l.Topic("t", TopicConfig{})
	for i := 20; i < 200; i++ {
		if _, err := tp.Append(context.Background(), 0, []Record{rec("", fmt.Sprintf("%040d", i), 0)}); err != nil {
			t.Fatal(err)
		}
	}
	l.RunMaintenance()
	st := tp.Stats(0)
	if st.StartOffset <= 5 || st.Bytes > 3000+1024 {
		t.Fatalf("retention did not delete past the committed offset: %+v", st)
	}
	if n := counterValue(opts.Metrics, "vigil_log_retention_deleted_segments_total"); n == 0 {
		t.Fatal("no deleted segments counted")
	}
	c, _ = NewConsumer(l, "late", tp, 0)
	if c.Position() != 5 {
		t.Fatalf("resumed at %d, want the committed 5", c.Position())
	}
	recs, err := c.Poll(ctx, 0)
	if err != nil || len(recs) == 0 || recs[0].Offset != st.StartOffset {
		t.Fatalf("poll behind retention: %v, %v; want first offset %d", recs, err, st.StartOffset)
	}
	if want := string(fmt.Sprintf("%040d", st.StartOffset)); string(recs[0].Value) != want {
		t.Fatalf("first record after the skip is %q, want %q", recs[0].Value, want)
	}
	name := `vigil_log_consumer_skipped_records_total{group="late",topic="t"}`
	if got := counterValue(opts.Metrics, name); got != uint64(st.StartOffset-5) {
		t.Fatalf("%s = %d, want %d", name, got, st.StartOffset-5)
	}
	// Lag is counted from the start offset, not from the deleted commit.
	status := StatusOf(l)
	if lag := status.Consumers[0].Partitions[0].Lag; lag != st.EndOffset-st.StartOffset {
		t.Fatalf("lag %d, want %d", lag, st.EndOffset-st.StartOffset)
	}
}

// TestConsumerOffsetsAcrossRestarts: several groups and partitions commit, recommit
// and restart; each resumes at its last commit, and status reports commits and lag.
func TestConsumerOffsetsAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	set := metrics.NewSet()
	l := openTest(t, dir, Options{Metrics: set})
	tp, _ := l.Topic("events", TopicConfig{Partitions: 2})
	for p := 0; p < 2; p++ {
		for i := 0; i < 10; i++ {
			tp.Append(context.Background(), p, []Record{rec("", fmt.Sprintf("p%d-%d", p, i), 0)})
		}
	}
	commits := map[string][2]int64{"a": {3, 10}, "b": {0, 7}}
	for g, offs := range commits {
		for p, off := range offs {
			if err := l.Offsets().Commit(g, "events", p, off+1); err != nil { // superseded below
				t.Fatal(err)
			}
			if err := l.Offsets().Commit(g, "events", p, off); err != nil {
				t.Fatal(err)
			}
		}
	}
	for restart := 0; restart < 3; restart++ {
		l.Close()
		set = metrics.NewSet()
		l = openTest(t, dir, Options{Metrics: set})
		tp, _ = l.Topic("events", TopicConfig{})
		if got := l.Offsets().Groups(); fmt.Sprint(got) != "[{a events} {b events}]" {
			t.Fatalf("groups after restart %d: %v", restart, got)
		}
		for g, offs := range commits {
			for p, off := range offs {
				c, err := NewConsumer(l, g, tp, p)
				if err != nil || c.Position() != off {
					t.Fatalf("restart %d: group %s partition %d at %d (%v), want %d", restart, g, p, c.Position(), err, off)
				}
				var b bytes.Buffer
				set.WritePrometheus(&b)
				lagLine := fmt.Sprintf(`vigil_log_consumer_lag{group=%q,topic="events",partition="%d"} %d`, g, p, 10-off)
				if !strings.Contains(b.String(), lagLine) {
					t.Fatalf("restart %d: metrics lack %q:\n%s", restart, lagLine, b.String())
				}
			}
		}
		// Move group a on by one in partition 0 each restart.
		offs := commits["a"]
		offs[0]++
		commits["a"] = offs
		if err := l.Offsets().Commit("a", "events", 0, offs[0]); err != nil {
			t.Fatal(err)
		}
	}
	defer l.Close()
	st := StatusOf(l)
	if len(st.Consumers) != 2 || st.Consumers[0].Partitions[0].Committed != commits["a"][0] || st.Consumers[0].Partitions[0].Lag != 10-commits["a"][0] {
		t.Fatalf("status: %+v", st.Consumers)
	}
}

// TestCompactionTombstonesAcrossRestart: a tombstone stays while it is younger than
// TombstoneRetention (so readers rebuilding state see the delete) and is removed after;
// a consumer reads across the gaps compaction leaves; everything survives a restart.
func TestCompactionTombstonesAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	clock := &testClock{now: time.UnixMilli(10_000_000)}
	opts := Options{Now: clock.Now, MaintenanceInterval: time.Hour}
	l := openTest(t, dir, opts)
	cfg := TopicConfig{Partitions: 1, SegmentBytes: 400, Compacted: true, TombstoneRetention: time.Hour, Compression: CompressionS2}
	tp, _ := l.Topic("state", cfg)
	app := func(k, v string) int64 {
		t.Helper()
		off, err := tp.Append(context.Background(), 0, []Record{rec(k, v, 0)})
		if err != nil {
			t.Fatal(err)
		}
		return off
	}
	for i := 0; i < 40; i++ {
		app(fmt.Sprintf("k%d", i%4), fmt.Sprintf("v%d-%s", i, strings.Repeat("x", 30)))
	}
	tomb := app("k1", "")
	for i := 0; i < 20; i++ { // push the tombstone into a closed segment
		app("filler", fmt.Sprintf("f%d-%s", i, strings.Repeat("y", 30)))
	}
	keysAt := func(tp Topic) map[string][]int64 {
		m := map[string][]int64{}
		for _, r := range readAll(t, tp, 0) {
			m[string(r.Key)] = append(m[string(r.Key)], r.Offset)
		}
		return m
	}
	l.RunMaintenance()
	m := keysAt(tp)
	if got := m["k1"]; len(got) != 1 || got[0] != tomb {
		t.Fatalf("young tombstone: k1 at %v, want only the tombstone %d", got, tomb)
	}
	if len(m["k0"]) != 1 || len(m["k2"]) != 1 || len(m["k3"]) != 1 {
		t.Fatalf("compaction kept superseded records: %v", m)
	}
	l.Close()

	clock.Add(2 * time.Hour)
	l = openTest(t, dir, opts)
	defer l.Close()
	tp, _ = l.Topic("state", TopicConfig{})
	if m2 := keysAt(tp); fmt.Sprint(m2) != fmt.Sprint(m) {
		t.Fatalf("state changed by restart: %v, want %v", m2, m)
	}
	l.RunMaintenance()
	m = keysAt(tp)
	if _, ok := m["k1"]; ok {
		t.Fatalf("tombstone older than TombstoneRetention kept: %v", m["k1"])
	}
	if len(m["k0"]) != 1 || len(m["filler"]) == 0 {
		t.Fatalf("after tombstone removal: %v", m)
	}
	// A consumer from the start reads the survivors in order across the gaps.
	c, _ := NewConsumer(l, "rebuild", tp, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []int64
	for c.Position() < tp.Stats(0).EndOffset {
		recs, err := c.Poll(ctx, 64)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			got = append(got, r.Offset)
		}
	}
	if want := readAll(t, tp, 0); len(got) != len(want) || got[0] != want[0].Offset {
		t.Fatalf("consumer read %v, want %d records from %d", got, len(want), want[0].Offset)
	}
	if end := tp.Stats(0).EndOffset; app("k9", "new") != end {
		t.Fatal("append after compaction did not continue at the end offset")
	}
}

// TestCompactionCrashBeforeRename: compaction stops after <base>.cleaned is written and
// the old indexes are removed, as a crash there would leave it; reopening discards the
// rewrite, keeps the original segment (rebuilding its indexes) and compacts again.
func TestCompactionCrashBeforeRename(t *testing.T) {
	dir := t.TempDir()
	opts := Options{MaintenanceInterval: time.Hour}
	l := openTest(t, dir, opts)
	tp, _ := l.Topic("state", TopicConfig{Partitions: 1, SegmentBytes: 300, Compacted: true})
	want := map[string]string{}
	for i := 0; i < 60; i++ {
		k, v := fmt.Sprintf("k%d", i%3), fmt.Sprintf("value-%d", i)
		if i%4 == 0 {
			k = fmt.Sprintf("unique-%d", i) // kept: every segment is rewritten, none deleted
		}
		want[k] = v
		tp.Append(context.Background(), 0, []Record{rec(k, v, 0)})
	}
	before := readAll(t, tp, 0)
	crashed := errors.New("simulated crash before rename")
	hits := 0
	l.testHooks.beforeSwapRename = func() error { hits++; return crashed }
	l.RunMaintenance()
	if hits == 0 {
		t.Fatal("compaction never reached the rename")
	}
	pdir := filepath.Join(dir, "state", "0")
	cleaned, _ := filepath.Glob(filepath.Join(pdir, "*"+cleanedExt))
	if len(cleaned) == 0 {
		t.Fatal("no .cleaned file left behind")
	}
	l.Close()

	l = openTest(t, dir, opts)
	defer l.Close()
	tp, _ = l.Topic("state", TopicConfig{})
	if left, _ := filepath.Glob(filepath.Join(pdir, "*"+cleanedExt)); len(left) != 0 {
		t.Fatalf("open left %v", left)
	}
	after := readAll(t, tp, 0)
	if len(after) != len(before) {
		t.Fatalf("after the crashed compaction: %d records, want the original %d", len(after), len(before))
	}
	for i := range after {
		if !sameRecord(after[i], before[i]) {
			t.Fatalf("record %d changed", i)
		}
	}
	checkIndexesOnDisk(t, pdir, "after crashed compaction")
	l.RunMaintenance()
	state := map[string]string{}
	recs := readAll(t, tp, 0)
	for _, r := range recs {
		state[string(r.Key)] = string(r.Value)
	}
	if len(recs) >= len(before) || fmt.Sprint(state) != fmt.Sprint(want) {
		t.Fatalf("compaction after reopen: %d records, state %v; want fewer than %d and %v", len(recs), state, len(before), want)
	}
}

// TestCompactionDeletesEmptySegments: a closed segment whose records are all
// superseded is deleted (in the middle of the partition too, not only at its start),
// and reads and consumers step over the gap it leaves.
func TestCompactionDeletesEmptySegments(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, Options{MaintenanceInterval: time.Hour})
	defer l.Close()
	tp, _ := l.Topic("state", TopicConfig{Partitions: 1, SegmentBytes: 256, Compacted: true})
	app := func(k string) int64 {
		off, err := tp.Append(context.Background(), 0, []Record{rec(k, k+"-"+strings.Repeat("v", 60), 0)})
		if err != nil {
			t.Fatal(err)
		}
		return off
	}
	keep := app("first") // stays: the first segment is kept
	for i := 0; i < 12; i++ {
		app("churn") // all but the last superseded: whole segments become empty
	}
	last := app("churn")
	app("tail")
	pdir := filepath.Join(dir, "state", "0")
	before := len(segmentBases(t, pdir))
	l.RunMaintenance()
	after := segmentBases(t, pdir)
	if len(after) >= before || after[0] != 0 {
		t.Fatalf("segments %d -> %v: want fewer, the first kept", before, after)
	}
	got := readAll(t, tp, 0)
	if len(got) != 3 || got[0].Offset != keep || got[1].Offset != last || string(got[2].Key) != "tail" {
		t.Fatalf("after compaction: %+v", got)
	}
	c, _ := NewConsumer(l, "g", tp, 0)
	c.SeekTo(keep + 1) // inside a deleted segment's range
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, err := c.Poll(ctx, 0)
	if err != nil || len(recs) == 0 || recs[0].Offset != last {
		t.Fatalf("poll from inside a deleted range: %v, %v; want offset %d first", recs, err, last)
	}
}

// TestDamagedConsumerOffsets: a damaged batch inside the consumer-offsets topic does
// not make the log unopenable; the commits around it are loaded, and a group whose
// last commit was in the damage falls back to an older commit, never a newer one.
func TestDamagedConsumerOffsets(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, Options{IndexIntervalBytes: 256})
	tp, _ := l.Topic("t", TopicConfig{Partitions: 1})
	tp.Append(context.Background(), 0, []Record{rec("", "x", 0)})
	offs := l.Offsets()
	offs.Commit("early", "t", 0, 1)
	offs.Commit("damaged", "t", 0, 3) // the batch to damage
	offs.Commit("damaged", "t", 0, 1)
	for i := 0; i < 40; i++ {
		offs.Commit("late", "t", 0, int64(i))
	}
	l.Close()
	pdir := filepath.Join(dir, offsetsTopic, "0")
	path := segmentPath(pdir, 0, logExt)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The second batch: the commit of "damaged" at 3.
	h, _ := parseBatchHeader(b[segmentHeaderSize:])
	b[segmentHeaderSize+int(h.size())+batchHeaderSize+2] ^= 0xff
	os.WriteFile(path, b, 0o644)

	l, err = Open(dir, Options{IndexIntervalBytes: 256})
	if err != nil {
		t.Fatalf("open with a damaged consumer-offsets batch: %v", err)
	}
	defer l.Close()
	for _, tc := range []struct {
		group string
		want  int64
		ok    bool
	}{{"early", 1, true}, {"late", 39, true}} {
		got, ok := l.Offsets().Committed(tc.group, "t", 0)
		if got != tc.want || ok != tc.ok {
			t.Errorf("group %s: committed %d %v, want %d %v", tc.group, got, ok, tc.want, tc.ok)
		}
	}
	if got, ok := l.Offsets().Committed("damaged", "t", 0); ok && got > 1 {
		t.Errorf("group damaged: committed %d, newer than its commits around the damage", got)
	}
}

// TestCompactedConsumerBehindStart: when compaction deletes a compacted topic's first
// segments, a consumer behind the new start offset resumes there without counting the
// superseded records as skipped.
func TestCompactedConsumerBehindStart(t *testing.T) {
	set := metrics.NewSet()
	l := openTest(t, t.TempDir(), Options{Metrics: set, MaintenanceInterval: time.Hour})
	defer l.Close()
	tp, _ := l.Topic("state", TopicConfig{Partitions: 1, SegmentBytes: 256, Compacted: true})
	for i := 0; i < 20; i++ {
		tp.Append(context.Background(), 0, []Record{rec("only", fmt.Sprintf("%d-%s", i, strings.Repeat("v", 60)), 0)})
	}
	c, _ := NewConsumer(l, "g", tp, 0)
	l.RunMaintenance()
	start := tp.Stats(0).StartOffset
	if start == 0 {
		t.Fatal("compaction deleted no leading segment")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, err := c.Poll(ctx, 0)
	if err != nil || len(recs) == 0 || recs[0].Offset < start {
		t.Fatalf("poll: %v, %v; want records from %d", recs, err, start)
	}
	if n := counterValue(set, `vigil_log_consumer_skipped_records_total{group="g",topic="state"}`); n != 0 {
		t.Fatalf("%d superseded records counted as skipped", n)
	}
}

// onlyAppend hides a topic's AppendPartitions, so that AppendPartitions falls back to
// concurrent Appends.
type onlyAppend struct{ Topic }

func TestAppendPartitions(t *testing.T) {
	l := openTest(t, t.TempDir(), Options{})
	defer l.Close()
	tp, err := l.Topic("t", TopicConfig{Partitions: 3, SegmentBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tp.(MultiAppender); !ok {
		t.Fatal("the file topic is not a MultiAppender")
	}
	for _, tc := range []struct {
		name string
		t    Topic
	}{{"file", tp}, {"fallback", onlyAppend{tp}}} {
		t.Run(tc.name, func(t *testing.T) {
			before := [3]int64{tp.Stats(0).EndOffset, tp.Stats(1).EndOffset, tp.Stats(2).EndOffset}
			// Partition 1 gets nothing and partition 3 does not exist: the others are
			// still appended, and the entries of partition 1 are left alone.
			recs := [][]Record{{rec("", "a", 1), rec("", "b", 2)}, nil, {rec("", "c", 3)}, {rec("", "d", 4)}}
			bases := []int64{-7, -7, -7, -7}
			errs := make([]error, 4)
			AppendPartitions(context.Background(), tc.t, recs, bases, errs)
			if errs[0] != nil || errs[1] != nil || errs[2] != nil || !errors.Is(errs[3], ErrNoPartition) {
				t.Fatalf("errs = %v", errs)
			}
			if bases[0] != before[0] || bases[1] != -7 || bases[2] != before[2] {
				t.Fatalf("bases = %v, ends before %v", bases, before)
			}
			if got := tp.Stats(0).EndOffset; got != before[0]+2 {
				t.Fatalf("partition 0 ends at %d, want %d", got, before[0]+2)
			}
			if got := tp.Stats(1).EndOffset; got != before[1] {
				t.Fatalf("partition 1 ends at %d, want %d", got, before[1])
			}
			last := readAll(t, tp, 2)
			if v := string(last[len(last)-1].Value); v != "c" {
				t.Fatalf("partition 2 ends with %q", v)
			}
		})
	}
	// A cancelled context fails every partition without appending.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	errs := make([]error, 2)
	AppendPartitions(ctx, tp, [][]Record{{rec("", "x", 1)}, {rec("", "y", 1)}}, make([]int64, 2), errs)
	if !errors.Is(errs[0], context.Canceled) || !errors.Is(errs[1], context.Canceled) {
		t.Fatalf("errs with a cancelled context = %v", errs)
	}
}

// TestConsumerPollS2NoAllocs: a consumer polling an S2-compressed partition reads and
// decompresses into the buffer it kept from the polls before, without allocating.
func TestConsumerPollS2NoAllocs(t *testing.T) {
	l, err := Open(t.TempDir(), Options{Fsync: FsyncNever, MaintenanceInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	tp, err := l.Topic("s2", TopicConfig{Partitions: 1, Compression: CompressionS2})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 64; i++ {
		recs := make([]Record, 16)
		for j := range recs {
			recs[j].Value = bytes.Repeat(fmt.Appendf(nil, "series_%d_%d ", i, j), 200)
		}
		if _, err := tp.Append(context.Background(), 0, recs); err != nil {
			t.Fatal(err)
		}
	}
	c, err := NewConsumer(l, "g", tp, 0)
	if err != nil {
		t.Fatal(err)
	}
	poll := func() {
		c.SeekTo(0)
		for c.Position() < 64*16 {
			if recs, err := c.Poll(context.Background(), 64<<10); err != nil || len(recs) == 0 {
				t.Fatalf("poll at %d: %d records, %v", c.Position(), len(recs), err)
			}
		}
	}
	poll() // the buffers grow to what a poll takes
	if allocs := testing.AllocsPerRun(5, poll); allocs != 0 {
		t.Fatalf("%v allocations per pass over the partition, want 0", allocs)
	}
}
