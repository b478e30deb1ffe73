package ingest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/logcore"
	"github.com/vigilhq/vigil/sample"
)

// testLog opens a real file log on a temp dir with a samples topic of n partitions.
func testLog(t testing.TB, n int, fsync logcore.FsyncPolicy) (*logcore.FileLog, logcore.Topic) {
	t.Helper()
	l, err := logcore.Open(t.TempDir(), logcore.Options{Fsync: fsync, Defaults: logcore.TopicConfig{Partitions: n}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	tp, err := l.Topic("samples", logcore.TopicConfig{Partitions: n})
	if err != nil {
		t.Fatal(err)
	}
	return l, tp
}

func testLimits() config.LimitsConfig {
	c := config.Default().Limits
	return c
}

func testWriter(t testing.TB, tp logcore.Topic, mod func(*config.LimitsConfig)) (*Writer, *metrics.Set) {
	t.Helper()
	lim := testLimits()
	if mod != nil {
		mod(&lim)
	}
	set := metrics.NewSet()
	w, err := NewWriter(Options{Topic: tp, Limits: lim, Metrics: set})
	if err != nil {
		t.Fatal(err)
	}
	return w, set
}

// logSeries is a series read back from the log, in a comparable text form.
type logSeries struct {
	Partition  int
	Labels     string // {a="b", ...} sorted
	Samples    []sample.Sample
	Histograms []sample.Histogram
	Exemplars  []string
}

// readLog decodes every series of every partition of tp.
func readLog(t testing.TB, tp logcore.Topic) []logSeries {
	t.Helper()
	var out []logSeries
	var dec sample.Decoder
	for p := 0; p < tp.Partitions(); p++ {
		st := tp.Stats(p)
		off := st.StartOffset
		for off < st.EndOffset {
			recs, err := tp.Read(p, off, 1<<20, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				if err := dec.Reset(r.Value); err != nil {
					t.Fatalf("partition %d offset %d: %v", p, r.Offset, err)
				}
				for dec.Next() {
					s := dec.Series()
					ls := labelsString(s.Labels)
					h := SeriesHash(s.Labels)
					if PartitionOf(h, tp.Partitions()) != p {
						t.Fatalf("series %s in partition %d, want %d", ls, p, PartitionOf(h, tp.Partitions()))
					}
					x := logSeries{Partition: p, Labels: ls, Samples: append([]sample.Sample(nil), s.Samples...)}
					for _, hg := range s.Histograms {
						x.Histograms = append(x.Histograms, sample.Histogram{T: hg.T, Proto: append([]byte(nil), hg.Proto...)})
					}
					for _, e := range s.Exemplars {
						x.Exemplars = append(x.Exemplars, fmt.Sprintf("%s %g @%d", labelsString(e.Labels), e.V, e.T))
					}
					out = append(out, x)
				}
				if err := dec.Err(); err != nil {
					t.Fatal(err)
				}
				off = r.Offset + 1
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Labels < out[j].Labels })
	return out
}

func labelsString(ls []sample.Label) string {
	var sb strings.Builder
	sb.WriteByte('{')
	for i, l := range ls {
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "%s=%q", l.Name, l.Value)
	}
	sb.WriteByte('}')
	return sb.String()
}

// failingTopic wraps a topic and fails appends while fail() says so.
type failingTopic struct {
	logcore.Topic
	mu    sync.Mutex
	fails int // number of appends still to fail
	calls int
	delay time.Duration
}

func (f *failingTopic) Append(ctx context.Context, p int, recs []logcore.Record) (int64, error) {
	f.mu.Lock()
	f.calls++
	fail := f.fails > 0
	if fail {
		f.fails--
	}
	d := f.delay
	f.mu.Unlock()
	if d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if fail {
		return 0, errors.New("injected append failure")
	}
	return f.Topic.Append(ctx, p, recs)
}

func (f *failingTopic) setFails(n int) {
	f.mu.Lock()
	f.fails = n
	f.mu.Unlock()
}

// counterValue reads a counter of set by its full name.
func counterValue(set *metrics.Set, name string) uint64 {
	return set.GetOrCreateCounter(name).Get()
}

// addSeries is a test shorthand: labels as name, value pairs, then samples.
func addSeries(b *Batch, labels []string, samples ...sample.Sample) {
	b.BeginSeries()
	for i := 0; i+1 < len(labels); i += 2 {
		b.AddLabel([]byte(labels[i]), []byte(labels[i+1]))
	}
	for _, s := range samples {
		b.AddSample(s.T, s.V)
	}
	b.EndSeries()
}
