package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/vigilhq/vigil/logcore"
	"github.com/vigilhq/vigil/sample"
)

// newTestWriter is a batch writer on a fresh store, without the materializer's loop.
func newTestWriter(t *testing.T) *batchWriter {
	t.Helper()
	s, err := Open(Options{Dir: filepath.Join(t.TempDir(), "store"), Metrics: metrics.NewSet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	set := metrics.NewSet()
	m := &Materializer{s: s, log: s.opts.Logger, corruptTotal: set.NewCounter("corrupt"), samplesTotal: set.NewCounter("samples"), histsTotal: set.NewCounter("hists")}
	return newBatchWriter(m)
}

// writeBatch writes one record holding series and returns the metric names reported.
func writeBatch(t *testing.T, w *batchWriter, series ...sample.Series) []string {
	t.Helper()
	var enc sample.Encoder
	enc.Reset()
	for i := range series {
		enc.AppendSeries(&series[i])
	}
	return writeRaw(t, w, enc.Bytes())
}

func writeRaw(t *testing.T, w *batchWriter, value []byte) []string {
	t.Helper()
	if _, err := w.write(context.Background(), []logcore.Record{{Value: value}}); err != nil {
		t.Fatal(err)
	}
	return slices.Clone(w.names)
}

// headContents is every series of the store as "labels: t=v t=v".
func headContents(t *testing.T, w *batchWriter) string {
	t.Helper()
	q, err := w.m.s.db.Querier(math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ss := q.Select(context.Background(), true, nil, labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".*"))
	var out []string
	for ss.Next() {
		s := ss.At()
		line := s.Labels().String() + ":"
		it := s.Iterator(nil)
		for it.Next() != 0 {
			ts, v := it.At()
			line += fmt.Sprintf(" %d=%g", ts, v)
		}
		out = append(out, line)
	}
	if err := ss.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, "\n")
}

func float(ls []sample.Label, t int64, v float64) sample.Series {
	return sample.Series{Labels: ls, Samples: []sample.Sample{{T: t, V: v}}}
}

// TestBatchWriterSeriesIdentity checks that the series cache never changes which series
// a sample goes to: whatever the order of the series in the batches, whether their
// labels are sorted, how their lengths are encoded, and when the cached reference is
// stale or a hash collides.
func TestBatchWriterSeriesIdentity(t *testing.T) {
	a := lbls("__name__", "up", "job", "a")
	b := lbls("__name__", "up", "job", "b")
	c := lbls("__name__", "down", "job", "c")
	w := newTestWriter(t)
	f := func(want ...string) {
		t.Helper()
		if got := w.names; !slices.Equal(got, want) {
			t.Fatalf("names %q, want %q", got, want)
		}
	}
	writeBatch(t, w, float(a, 1000, 1), float(b, 1000, 2), float(c, 1000, 3))
	f("up", "down")
	// The same series in another order (the cache's guess of the next series misses).
	writeBatch(t, w, float(c, 2000, 30), float(a, 2000, 10), float(b, 2000, 20))
	f("down", "up")
	// Unsorted labels are the sorted series.
	writeBatch(t, w, float(lbls("job", "a", "__name__", "up"), 3000, 100))
	f("up")
	// Lengths in more bytes than needed: the same series, cached separately.
	raw := []byte{sample.Version, 1, 2}
	for _, s := range []string{"__name__", "up", "job", "b"} {
		raw = append(raw, byte(len(s))|0x80, 0)
		raw = append(raw, s...)
	}
	raw = binary.AppendUvarint(raw, 1)
	raw = binary.AppendVarint(raw, 3000)
	raw = binary.LittleEndian.AppendUint64(raw, math.Float64bits(200))
	raw = append(raw, 0, 0)
	writeRaw(t, w, raw)
	writeRaw(t, w, raw) // again: same timestamp and value, nothing changes
	// A stale reference (as after the head dropped the series) is looked up by labels.
	ce, _ := w.cache.get(appendRaw(nil, c))
	if ce == nil {
		t.Fatal("series c is not cached")
	}
	ce.ref = storage.SeriesRef(1 << 40)
	writeBatch(t, w, float(c, 3000, 300))
	if ce, _ := w.cache.get(appendRaw(nil, c)); ce == nil || ce.ref == 1<<40 {
		t.Fatal("stale reference of series c kept")
	}
	// A hash collision: series b's hash holds series a. b must stay b.
	ea, _ := w.cache.get(appendRaw(nil, a))
	rawB := appendRaw(nil, b)
	w.cache.put(mapHash(w.cache, rawB), appendRaw(nil, a), ea.lset, ea.ref, ea.name)
	w.cache.prev = noEntry
	writeBatch(t, w, float(b, 4000, 2000))
	writeBatch(t, w, float(a, 4000, 1000), float(b, 5000, 2001))
	want := strings.Join([]string{
		`{__name__="down", job="c"}: 1000=3 2000=30 3000=300`,
		`{__name__="up", job="a"}: 1000=1 2000=10 3000=100 4000=1000`,
		`{__name__="up", job="b"}: 1000=2 2000=20 3000=200 4000=2000 5000=2001`,
	}, "\n")
	if got := headContents(t, w); got != want {
		t.Fatalf("head:\n%s\nwant:\n%s", got, want)
	}
	if n := w.m.s.db.Head().NumSeries(); n != 3 {
		t.Fatalf("head holds %d series, want 3", n)
	}
}

// TestSeriesCache checks the cache alone: found only by the exact bytes, by guess or by
// hash, and cleared by trim once it holds its limit of series or names.
func TestSeriesCache(t *testing.T) {
	c := newSeriesCache()
	raws := [][]byte{[]byte("a"), []byte("b"), []byte("c")}
	for i, raw := range raws {
		if ce, _ := c.get(raw); ce != nil {
			t.Fatalf("%s found in an empty cache", raw)
		}
		c.put(mapHash(c, raw), raw, labels.FromStrings("i", fmt.Sprint(i)), storage.SeriesRef(i+1), nil)
	}
	f := func(raw string, want storage.SeriesRef) {
		t.Helper()
		ce, _ := c.get([]byte(raw))
		switch {
		case want == 0 && ce != nil:
			t.Fatalf("%q found as ref %d", raw, ce.ref)
		case want != 0 && (ce == nil || ce.ref != want):
			t.Fatalf("%q: got %v, want ref %d", raw, ce, want)
		}
	}
	f("a", 1) // by hash (c was the last)
	f("b", 2) // by guess
	f("c", 3)
	f("b", 2) // by hash; learns c → b
	f("c", 3)
	f("b", 2) // by guess
	f("d", 0)
	f("", 0)
	f("ab", 0)
	// A colliding hash holds the other bytes: a miss, and put replaces the entry.
	c.put(mapHash(c, []byte("d")), []byte("a"), labels.EmptyLabels(), 9, nil)
	f("d", 0)
	f("a", 1)
	c.put(mapHash(c, []byte("d")), []byte("d"), labels.EmptyLabels(), 4, nil)
	f("d", 4)
	c.trim()
	f("a", 1)
	// Full of series.
	c.limit = len(c.entries) + 1
	c.trim()
	f("a", 1)
	c.put(mapHash(c, []byte("e")), []byte("e"), labels.EmptyLabels(), 5, c.name([]byte("up")))
	c.trim()
	f("a", 0)
	f("e", 0)
	// Full of names.
	c.limit = 2
	c.put(mapHash(c, []byte("a")), []byte("a"), labels.EmptyLabels(), 1, c.name([]byte("up")))
	c.trim()
	f("a", 1)
	c.name([]byte("down"))
	c.trim()
	f("a", 0)
	if len(c.entries) != 0 || len(c.index) != 0 || len(c.names) != 0 {
		t.Fatalf("trim left %d entries, %d hashes, %d names", len(c.entries), len(c.index), len(c.names))
	}
}

func appendRaw(dst []byte, ls []sample.Label) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(ls)))
	for _, l := range ls {
		dst = binary.AppendUvarint(dst, uint64(len(l.Name)))
		dst = append(dst, l.Name...)
		dst = binary.AppendUvarint(dst, uint64(len(l.Value)))
		dst = append(dst, l.Value...)
	}
	return dst
}

func mapHash(c *seriesCache, raw []byte) uint64 { return c.hash(raw) }
