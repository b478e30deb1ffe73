package rollup

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/logcore"
	"github.com/vigilhq/vigil/sample"
)

// testLog is a real file log in a temp dir with a samples and a rollups topic.
type testLog struct {
	dir     string
	log     *logcore.FileLog
	samples logcore.Topic
	results logcore.Topic
}

func openTestLog(t testing.TB, dir string, partitions int, fsync logcore.FsyncPolicy) *testLog {
	t.Helper()
	l, err := logcore.Open(dir, logcore.Options{Fsync: fsync, Defaults: logcore.TopicConfig{Partitions: partitions}})
	if err != nil {
		t.Fatalf("open log: %v", err)
	}
	s, err := l.Topic("samples", logcore.TopicConfig{Partitions: partitions})
	if err != nil {
		t.Fatalf("samples topic: %v", err)
	}
	r, err := l.Topic("rollups", logcore.TopicConfig{Partitions: 1})
	if err != nil {
		t.Fatalf("rollups topic: %v", err)
	}
	return &testLog{dir: dir, log: l, samples: s, results: r}
}

// inSample is one input sample of the generated streams.
type inSample struct {
	series int
	t      int64
	v      float64
}

// inSeries is one generated input series.
type inSeries struct {
	labels labels.Labels
	part   int
}

// writeInput appends the samples of each partition in the given order, in batches of
// up to batch samples (consecutive samples of one series share a batch entry).
func (tl *testLog) writeInput(t testing.TB, series []inSeries, perPart [][]inSample, batch int) {
	t.Helper()
	var enc sample.Encoder
	for p, ss := range perPart {
		var recs []logcore.Record
		for i := 0; i < len(ss); i += batch {
			enc.Reset()
			j := min(i+batch, len(ss))
			for k := i; k < j; {
				sid := ss[k].series
				var s sample.Series
				series[sid].labels.Range(func(l labels.Label) {
					s.Labels = append(s.Labels, sample.Label{Name: []byte(l.Name), Value: []byte(l.Value)})
				})
				for k < j && ss[k].series == sid {
					s.Samples = append(s.Samples, sample.Sample{T: ss[k].t, V: ss[k].v})
					k++
				}
				enc.AppendSeries(&s)
			}
			recs = append(recs, logcore.Record{Value: append([]byte(nil), enc.Bytes()...)})
			if len(recs) == 64 {
				if _, err := tl.samples.Append(context.Background(), p, recs); err != nil {
					t.Fatalf("append samples: %v", err)
				}
				recs = recs[:0]
			}
		}
		if len(recs) > 0 {
			if _, err := tl.samples.Append(context.Background(), p, recs); err != nil {
				t.Fatalf("append samples: %v", err)
			}
		}
	}
}

// readResults returns every result recorded in the rollups topic, in order.
func readResults(t testing.TB, topic logcore.Topic) []*Result {
	t.Helper()
	var out []*Result
	var recs []logcore.Record
	off := topic.Stats(0).StartOffset
	for {
		var err error
		recs, err = topic.Read(0, off, 1<<20, recs[:0])
		if err != nil {
			t.Fatalf("read rollups: %v", err)
		}
		if len(recs) == 0 {
			return out
		}
		for _, r := range recs {
			off = r.Offset + 1
			res, err := decodeResult(r.Key, r.Value)
			if err != nil {
				t.Fatalf("decode rollups record %d: %v", r.Offset, err)
			}
			out = append(out, res)
		}
	}
}

// collector gathers emitted results and lets a test wait for a condition.
type collector struct {
	mu      sync.Mutex
	results []*Result
	closed  []string
	changed chan struct{}
}

func newCollector() *collector { return &collector{changed: make(chan struct{}, 1)} }

func (c *collector) onResult(r *Result) {
	c.mu.Lock()
	c.results = append(c.results, r)
	c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *collector) onClosed(name string, metrics []string, end time.Time) {
	c.mu.Lock()
	c.closed = append(c.closed, fmt.Sprintf("%s %v %d", name, metrics, end.UnixMilli()))
	c.mu.Unlock()
}

// waitFor waits (generously) until cond holds over the results.
func (c *collector) waitFor(t testing.TB, what string, cond func([]*Result) bool) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		c.mu.Lock()
		ok := cond(c.results)
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-c.changed:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// startEngine runs an engine over tl until the returned stop is called.
func startEngine(t testing.TB, tl *testLog, rollups []config.RollupConfig, ckptDir string, mod func(*Options)) (*Engine, func()) {
	t.Helper()
	opts := Options{Rollups: rollups, Log: tl.log, Samples: tl.samples, Results: tl.results, CheckpointDir: ckptDir,
		CheckpointInterval: 50 * time.Millisecond, IdleInterval: 20 * time.Millisecond}
	if mod != nil {
		mod(&opts)
	}
	e, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- e.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return e, stop
}

// flatten turns results into "labels@end" -> value.
func flatten(rs []*Result) map[string]float64 {
	m := map[string]float64{}
	for _, r := range rs {
		for _, s := range r.Series {
			m[fmt.Sprintf("%s@%d", s.Labels, r.End)] = s.Value
		}
	}
	return m
}

func sortedKeysOf(m map[string]float64) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// approxEqual compares floats with a relative tolerance (float sums depend on order).
func approxEqual(a, b, rel float64) bool {
	if a == b || (math.IsNaN(a) && math.IsNaN(b)) {
		return true
	}
	return math.Abs(a-b) <= rel*math.Max(math.Abs(a), math.Abs(b))+1e-12
}

func rc(name, match, interval, lateness string, by, without []string, outputs ...string) config.RollupConfig {
	var c config.RollupConfig
	c.Name, c.Match, c.By, c.Without, c.Outputs = name, match, by, without, outputs
	c.Interval = mustDur(interval)
	c.Lateness = mustDur(lateness)
	return c
}

func mustDur(s string) config.Duration {
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return config.Duration(d)
}

func describe(rs []*Result) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "%s [%d,%d)\n", r.Rollup, r.Start, r.End)
		for _, s := range r.Series {
			fmt.Fprintf(&b, "  %s %g\n", s.Labels, s.Value)
		}
	}
	return b.String()
}
