package ingest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/vigilhq/vigil/logcore"
	"github.com/vigilhq/vigil/sample"
)

// captureTopic is a samples topic that keeps what is appended, per partition.
type captureTopic struct {
	logcore.Topic
	n    int
	mu   sync.Mutex
	recs [][][]byte
}

func newCaptureTopic(n int) *captureTopic { return &captureTopic{n: n, recs: make([][][]byte, n)} }

func (c *captureTopic) Partitions() int { return c.n }

func (c *captureTopic) Append(_ context.Context, p int, recs []logcore.Record) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range recs {
		c.recs[p] = append(c.recs[p], bytes.Clone(r.Value))
	}
	return int64(len(c.recs[p]) - len(recs)), nil
}

// take returns what was appended since the last take, one string per partition.
func (c *captureTopic) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, c.n)
	for p, rs := range c.recs {
		out[p] = string(bytes.Join(rs, []byte{'|'}))
		c.recs[p] = nil
	}
	return out
}

// writeTwice decodes and writes body, a 1.0 or (v2) a 2.0 request, through one Writer
// twice, as two requests would arrive, and returns what each wrote to the log and
// answered, and how many series the second write found known.
func writeTwice(t *testing.T, body []byte, v2 bool) (first, second string, hits int) {
	t.Helper()
	tp := newCaptureTopic(4)
	now := time.UnixMilli(1_700_000_000_000)
	w, err := NewWriter(Options{Topic: tp, Limits: testLimits(), Metrics: metrics.NewSet(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	run := func() string {
		var b Batch
		b.useCache(w.known)
		var err error
		if v2 {
			b.deriveKeys = true
			var d V2Decoder
			_, err = d.Decode(&b, body)
		} else {
			_, err = DecodeWriteV1(&b, body)
		}
		if err != nil {
			return "decode: " + err.Error()
		}
		res, err := w.Write(context.Background(), &b, ProtocolRemoteWrite)
		for i := range b.Series {
			if len(b.Series[i].Labels) == 0 && len(b.Series[i].RawLabels) > 0 {
				hits++ // written from a known series' entry
			}
		}
		return fmt.Sprintf("%v %d/%d/%d %s\n%q", err, res.Samples, res.Histograms, res.Exemplars, res.Rejected.String(), tp.take())
	}
	first = run()
	hits = 0
	second = run()
	return first, second, hits
}

// marshalPB marshals a gogo protobuf message (remote-write 1.0 or 2.0).
func marshalPB(t testing.TB, req interface{ Marshal() ([]byte, error) }) []byte {
	t.Helper()
	buf, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return buf
}

// TestKnownSeriesSameLog: a request written a second time, its series now known to the
// Writer, puts the same bytes in the log and gets the same answer as the first time,
// for valid series and for each kind of label the Writer normalizes or refuses.
func TestKnownSeriesSameLog(t *testing.T) {
	ts := int64(1_700_000_000_000)
	smp := []prompb.Sample{{Value: 1.5, Timestamp: ts}}
	lbl := func(kv ...string) []prompb.Label {
		var ls []prompb.Label
		for i := 0; i+1 < len(kv); i += 2 {
			ls = append(ls, prompb.Label{Name: kv[i], Value: kv[i+1]})
		}
		return ls
	}
	cases := []struct {
		name     string
		series   []prompb.TimeSeries
		wantHits int
	}{
		{"sorted", []prompb.TimeSeries{{Labels: lbl("__name__", "up", "job", "a"), Samples: smp}}, 1},
		{"unsorted", []prompb.TimeSeries{{Labels: lbl("job", "a", "__name__", "up"), Samples: smp}}, 1},
		{"empty value dropped", []prompb.TimeSeries{{Labels: lbl("__name__", "up", "empty", "", "job", "a"), Samples: smp}}, 1},
		{"duplicate label refused", []prompb.TimeSeries{{Labels: lbl("__name__", "up", "job", "a", "job", "b"), Samples: smp}}, 0},
		{"no name refused", []prompb.TimeSeries{{Labels: lbl("job", "a"), Samples: smp}}, 0},
		{"invalid UTF-8 refused", []prompb.TimeSeries{{Labels: lbl("__name__", "up", "job", "\xff"), Samples: smp}}, 0},
		{"too old still refused", []prompb.TimeSeries{{Labels: lbl("__name__", "up"), Samples: []prompb.Sample{{Timestamp: 1}}}}, 1},
		{"two samples", []prompb.TimeSeries{
			{Labels: lbl("__name__", "a"), Samples: smp},
			{Labels: lbl("__name__", "b", "x", "y"), Samples: []prompb.Sample{{Value: 1, Timestamp: ts}, {Value: 2, Timestamp: ts + 1}}},
		}, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			first, second, hits := writeTwice(t, marshalPB(t, &prompb.WriteRequest{Timeseries: c.series}), false)
			if first != second {
				t.Fatalf("first write:\n%s\nsecond write:\n%s", first, second)
			}
			if hits != c.wantHits {
				t.Fatalf("%d series known on the second write, want %d\n%s", hits, c.wantHits, first)
			}
		})
	}
}

// TestKnownSeriesSplitLabels: a series whose leading label fields are those of a known
// series but which has another label field after its samples is not taken for it.
func TestKnownSeriesSplitLabels(t *testing.T) {
	ts := int64(1_700_000_000_000)
	known := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "up"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: ts}}}
	body := marshalPB(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{known}})
	// The same series, then a label field after the sample: {__name__="up", job="a"}.
	extra := marshalPB(t, &prompb.TimeSeries{Labels: []prompb.Label{{Name: "job", Value: "a"}}})
	series := marshalPB(t, &known)
	series = append(series, extra...)
	split := append([]byte{0x0a, byte(len(series))}, series...)

	tp := newCaptureTopic(1)
	w, err := NewWriter(Options{Topic: tp, Limits: testLimits(), Metrics: metrics.NewSet(), Now: func() time.Time { return time.UnixMilli(ts) }})
	if err != nil {
		t.Fatal(err)
	}
	for i, buf := range [][]byte{body, split} {
		var b Batch
		b.useCache(w.known)
		if _, err := DecodeWriteV1(&b, buf); err != nil {
			t.Fatal(err)
		}
		if _, ok := b.known(0); ok {
			t.Fatalf("request %d: series taken from the cache", i)
		}
		if i == 1 && labelsString(b.Series[0].Labels) != `{__name__="up", job="a"}` {
			t.Fatalf("split series decoded as %s", labelsString(b.Series[0].Labels))
		}
		if b.key(0) == nil != (i == 1) {
			t.Fatalf("request %d: key %q", i, b.key(0))
		}
		if _, err := w.Write(context.Background(), &b, ProtocolRemoteWrite); err != nil {
			t.Fatal(err)
		}
	}
}

// TestKnownSeriesBounded: past its byte budget the cache starts over instead of
// growing, and finds series by index and by the order they came in.
func TestKnownSeriesBounded(t *testing.T) {
	k := newKnownSeries(DefaultKnownSeriesBytes)
	ls := []sample.Label{{Name: []byte("__name__"), Value: []byte("m")}}
	key := func(i int) []byte { return fmt.Appendf(nil, "series-%d-%01200d", i, 0) }
	const n = 200_000 // about 240 MB of keys
	for i := 0; i < n; i++ {
		k.add(key(i), ls, uint64(i))
	}
	g := k.gen.Load()
	if g.nslab > k.maxSlabs || len(g.index) == 0 || len(g.index) >= n {
		t.Fatalf("%d slabs, %d series indexed of %d", g.nslab, len(g.index), n)
	}
	c := k.cursor()
	if _, ok := c.lookup(key(0)); ok {
		t.Fatal("the first series is still there after the cache started over")
	}
	for i := n - 1000; i < n; i++ {
		hit, ok := c.lookup(key(i))
		if !ok || hit.hash != uint64(i) {
			t.Fatalf("series %d: %v %+v", i, ok, hit)
		}
		if ls2, err := sample.DecodeLabels(nil, hit.encoded); err != nil || len(ls2) != 1 || string(ls2[0].Value) != "m" {
			t.Fatalf("series %d labels %v %v", i, ls2, err)
		}
	}
	if _, ok := c.lookup([]byte("unknown")); ok {
		t.Fatal("unknown series found")
	}
}

// TestKnownSeriesV2: a 2.0 request written again puts the same bytes in the log and
// gets the same answer, its series found known by their labels as decoded.
func TestKnownSeriesV2(t *testing.T) {
	ts := int64(1_700_000_000_000)
	req := &writev2.Request{
		Symbols: []string{"", "__name__", "up", "job", "a", "b"},
		Timeseries: []writev2.TimeSeries{
			{LabelsRefs: []uint32{1, 2, 3, 4}, Samples: []writev2.Sample{{Value: 1, Timestamp: ts}}},
			{LabelsRefs: []uint32{3, 5, 1, 2}, Samples: []writev2.Sample{{Value: 2, Timestamp: ts}}},       // unsorted
			{LabelsRefs: []uint32{3, 4, 3, 5, 1, 2}, Samples: []writev2.Sample{{Value: 3, Timestamp: ts}}}, // duplicate
		},
	}
	first, second, hits := writeTwice(t, marshalPB(t, req), true)
	if first != second {
		t.Fatalf("first write:\n%s\nsecond write:\n%s", first, second)
	}
	if hits != 2 {
		t.Fatalf("%d series known on the second write, want 2\n%s", hits, first)
	}
}

// FuzzKnownSeriesV2: for any 2.0 request, the second write (series known) puts the
// same bytes in the log and answers the same as the first.
func FuzzKnownSeriesV2(f *testing.F) {
	r := rand.New(rand.NewPCG(13, 14))
	for i := 0; i < 8; i++ {
		f.Add(marshalPB(f, randRequestV2(r)))
	}
	f.Fuzz(sameSecondWrite(true))
}

// FuzzKnownSeriesV1: for any request, the second write (series known) puts the same
// bytes in the log and answers the same as the first.
func FuzzKnownSeriesV1(f *testing.F) {
	r := rand.New(rand.NewPCG(11, 12))
	for i := 0; i < 8; i++ {
		f.Add(marshalPB(f, randWriteRequest(r)))
	}
	f.Fuzz(sameSecondWrite(false))
}

// sameSecondWrite is the known-series fuzz targets' check for 1.0 or (v2) 2.0 bodies.
func sameSecondWrite(v2 bool) func(*testing.T, []byte) {
	return func(t *testing.T, buf []byte) {
		first, second, _ := writeTwice(t, buf, v2)
		if first != second {
			t.Fatalf("first write:\n%s\nsecond write:\n%s", first, second)
		}
	}
}
