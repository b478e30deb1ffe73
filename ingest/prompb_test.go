package ingest

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

// testHistogram is a small native histogram with both bucket sides.
func testHistogram(i int) *histogram.Histogram {
	return &histogram.Histogram{
		Schema:          1,
		ZeroThreshold:   1e-128,
		ZeroCount:       uint64(i % 3),
		Count:           uint64(10 + i),
		Sum:             18.4 * float64(i+1),
		PositiveSpans:   []histogram.Span{{Offset: 0, Length: 2}, {Offset: 1, Length: 2}},
		PositiveBuckets: []int64{int64(i + 1), 1, -1, 0},
		NegativeSpans:   []histogram.Span{{Offset: 0, Length: 1}},
		NegativeBuckets: []int64{int64(i + 1)},
	}
}

var randLabelChars = []string{"a", "b", "_", "z", "0", ".", "é", "日", " ", "\"", "\\"}

func randString(r *rand.Rand, max int) string {
	n := r.IntN(max + 1)
	var sb strings.Builder
	for i := 0; i < n; i++ {
		sb.WriteString(randLabelChars[r.IntN(len(randLabelChars))])
	}
	return sb.String()
}

// randWriteRequest makes a random 1.0 request: random labels (possibly empty, odd,
// duplicated), samples with special values, exemplars, native histograms, metadata.
func randWriteRequest(r *rand.Rand) *prompb.WriteRequest {
	req := &prompb.WriteRequest{}
	for i, n := 0, r.IntN(20); i < n; i++ {
		var ts prompb.TimeSeries
		for j, m := 0, r.IntN(6); j < m; j++ {
			ts.Labels = append(ts.Labels, prompb.Label{Name: randString(r, 8), Value: randString(r, 12)})
		}
		for j, m := 0, r.IntN(5); j < m; j++ {
			v := []float64{r.NormFloat64(), math.NaN(), math.Inf(1), 0, -1e300}[r.IntN(5)]
			ts.Samples = append(ts.Samples, prompb.Sample{Timestamp: r.Int64N(2e12) - 1e11, Value: v})
		}
		for j, m := 0, r.IntN(3); j < m; j++ {
			ts.Exemplars = append(ts.Exemplars, prompb.Exemplar{
				Labels:    []prompb.Label{{Name: "trace_id", Value: randString(r, 16)}},
				Value:     r.Float64(),
				Timestamp: r.Int64N(2e12),
			})
		}
		for j, m := 0, r.IntN(3); j < m; j++ {
			if r.IntN(2) == 0 {
				ts.Histograms = append(ts.Histograms, prompb.FromIntHistogram(r.Int64N(2e12), testHistogram(j)))
			} else {
				ts.Histograms = append(ts.Histograms, prompb.FromFloatHistogram(r.Int64N(2e12), testHistogram(j).ToFloat(nil)))
			}
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	for i, n := 0, r.IntN(3); i < n; i++ {
		req.Metadata = append(req.Metadata, prompb.MetricMetadata{Type: prompb.MetricMetadata_COUNTER, MetricFamilyName: randString(r, 8), Help: "help"})
	}
	return req
}

// batchText prints a decoded batch canonically (labels in input order).
func batchText(b *Batch) string {
	var sb strings.Builder
	for _, s := range b.Series {
		sb.WriteString(labelsString(s.Labels))
		for _, x := range s.Samples {
			fmt.Fprintf(&sb, " %d:%x", x.T, math.Float64bits(x.V))
		}
		for _, h := range s.Histograms {
			fmt.Fprintf(&sb, " h%d:%x", h.T, h.Proto)
		}
		for _, e := range s.Exemplars {
			fmt.Fprintf(&sb, " e%s:%x@%d", labelsString(e.Labels), math.Float64bits(e.V), e.T)
		}
		sb.WriteByte('\n')
	}
	return sb.String()
}

func protoLabelsString(ls []prompb.Label) string {
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

// v1Text prints what prompb's own Unmarshal gives, in batchText's form.
func v1Text(t testing.TB, req *prompb.WriteRequest) string {
	var sb strings.Builder
	for _, ts := range req.Timeseries {
		sb.WriteString(protoLabelsString(ts.Labels))
		for _, x := range ts.Samples {
			fmt.Fprintf(&sb, " %d:%x", x.Timestamp, math.Float64bits(x.Value))
		}
		for _, h := range ts.Histograms {
			p, err := h.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&sb, " h%d:%x", h.Timestamp, p)
		}
		for _, e := range ts.Exemplars {
			fmt.Fprintf(&sb, " e%s:%x@%d", protoLabelsString(e.Labels), math.Float64bits(e.Value), e.Timestamp)
		}
		sb.WriteByte('\n')
	}
	return sb.String()
}

// TestDecodeV1Differential checks the purpose-built 1.0 parser against prompb's
// generated Unmarshal on random requests.
func TestDecodeV1Differential(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var b Batch
	for i := 0; i < 500; i++ {
		req := randWriteRequest(r)
		buf, err := req.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		var ref prompb.WriteRequest
		if err := ref.Unmarshal(buf); err != nil {
			t.Fatal(err)
		}
		b.Reset()
		st, err := DecodeWriteV1(&b, buf)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if got, want := batchText(&b), v1Text(t, &ref); got != want {
			t.Fatalf("request %d differs:\ngot:\n%s\nwant:\n%s", i, got, want)
		}
		if st.Metadata != len(ref.Metadata) {
			t.Fatalf("metadata %d, want %d", st.Metadata, len(ref.Metadata))
		}
	}
}

// randRequestV2 makes a random 2.0 request with its symbol table.
func randRequestV2(r *rand.Rand) *writev2.Request {
	st := writev2.NewSymbolTable()
	req := &writev2.Request{}
	for i, n := 0, r.IntN(20); i < n; i++ {
		var ts writev2.TimeSeries
		for j, m := 0, r.IntN(6); j < m; j++ {
			ts.LabelsRefs = append(ts.LabelsRefs, st.Symbolize(randString(r, 8)), st.Symbolize(randString(r, 12)))
		}
		for j, m := 0, r.IntN(5); j < m; j++ {
			ts.Samples = append(ts.Samples, writev2.Sample{Timestamp: r.Int64N(2e12), Value: r.NormFloat64(), StartTimestamp: r.Int64N(10)})
		}
		for j, m := 0, r.IntN(3); j < m; j++ {
			ts.Exemplars = append(ts.Exemplars, writev2.Exemplar{
				LabelsRefs: []uint32{st.Symbolize("trace_id"), st.Symbolize(randString(r, 16))},
				Value:      r.Float64(), Timestamp: r.Int64N(2e12),
			})
		}
		for j, m := 0, r.IntN(3); j < m; j++ {
			ts.Histograms = append(ts.Histograms, writev2.FromIntHistogram(0, r.Int64N(2e12), testHistogram(j)))
		}
		if r.IntN(2) == 0 {
			ts.Metadata = writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_GAUGE, HelpRef: st.Symbolize("help"), UnitRef: st.Symbolize("seconds")}
		}
		req.Timeseries = append(req.Timeseries, ts)
	}
	req.Symbols = st.Symbols()
	return req
}

// v2Text prints what writev2's Unmarshal gives, desymbolized. Histograms are
// compared by their 1.0 form: the stored bytes must unmarshal as prompb.Histogram equal
// to the 2.0 histogram's fields.
func v2Text(t testing.TB, req *writev2.Request) string {
	var sb strings.Builder
	sym := func(refs []uint32) string {
		var ls []prompb.Label
		for i := 0; i+1 < len(refs); i += 2 {
			ls = append(ls, prompb.Label{Name: req.Symbols[refs[i]], Value: req.Symbols[refs[i+1]]})
		}
		return protoLabelsString(ls)
	}
	for _, ts := range req.Timeseries {
		sb.WriteString(sym(ts.LabelsRefs))
		for _, x := range ts.Samples {
			fmt.Fprintf(&sb, " %d:%x", x.Timestamp, math.Float64bits(x.Value))
		}
		for _, h := range ts.Histograms {
			p, err := h.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&sb, " h%d:%x", h.Timestamp, p)
		}
		for _, e := range ts.Exemplars {
			fmt.Fprintf(&sb, " e%s:%x@%d", sym(e.LabelsRefs), math.Float64bits(e.Value), e.Timestamp)
		}
		sb.WriteByte('\n')
	}
	return sb.String()
}

func TestDecodeV2Differential(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var b Batch
	var d V2Decoder
	for i := 0; i < 500; i++ {
		req := randRequestV2(r)
		buf, err := req.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		var ref writev2.Request
		if err := ref.Unmarshal(buf); err != nil {
			t.Fatal(err)
		}
		b.Reset()
		if _, err := d.Decode(&b, buf); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if got, want := batchText(&b), v2Text(t, &ref); got != want {
			t.Fatalf("request %d differs:\ngot:\n%s\nwant:\n%s", i, got, want)
		}
		// The stored histogram bytes read back as 1.0 histograms with the same content.
		for si, s := range b.Series {
			for hi, h := range s.Histograms {
				var ph prompb.Histogram
				if err := ph.Unmarshal(h.Proto); err != nil {
					t.Fatalf("stored 2.0 histogram is not a prompb.Histogram: %v", err)
				}
				want := ref.Timeseries[si].Histograms[hi].ToIntHistogram()
				if got := ph.ToIntHistogram(); !got.Equals(want) || ph.Timestamp != h.T {
					t.Fatalf("histogram %v, want %v", got, want)
				}
			}
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	f := func(v2 bool, buf []byte, wantMsg string) {
		t.Helper()
		var b Batch
		var err error
		if v2 {
			var d V2Decoder
			_, err = d.Decode(&b, buf)
		} else {
			_, err = DecodeWriteV1(&b, buf)
		}
		if err == nil || !strings.Contains(err.Error(), wantMsg) {
			t.Fatalf("decode %x: err %v, want %q", buf, err, wantMsg)
		}
	}
	f(false, []byte{0x0a, 0x05, 0x0a}, "length 5 exceeds")
	f(false, []byte{0x0a}, "truncated")
	f(false, []byte{0x08, 0x01}, "wire type 0, want 2")
	f(false, []byte{0x0a, 0x02, 0x12, 0x01}, "timeseries[0]")
	f(false, []byte{0x00}, "field number 0 out of range")
	f(false, []byte{0x0b}, "unsupported wire type 3")
	f(true, []byte{0x22, 0x01, 'x'}, "symbols[0] must be the empty string")
	// symbols "", "a"; series labels_refs [0, 5]
	f(true, []byte{0x22, 0x00, 0x22, 0x01, 'a', 0x2a, 0x04, 0x0a, 0x02, 0x00, 0x05}, "symbol reference 5 out of range")
	f(true, []byte{0x22, 0x00, 0x2a, 0x03, 0x0a, 0x01, 0x00}, "odd number")
}

// TestDecodeV1NoAllocs: decoding into a warmed-up batch allocates nothing.
func TestDecodeV1NoAllocs(t *testing.T) {
	req := randWriteRequest(rand.New(rand.NewPCG(5, 6)))
	buf, _ := req.Marshal()
	var b Batch
	DecodeWriteV1(&b, buf)
	allocs := testing.AllocsPerRun(100, func() {
		b.Reset()
		if _, err := DecodeWriteV1(&b, buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per decode, want 0", allocs)
	}
	req2 := randRequestV2(rand.New(rand.NewPCG(7, 8)))
	buf2, _ := req2.Marshal()
	var d V2Decoder
	d.Decode(&b, buf2)
	allocs = testing.AllocsPerRun(100, func() {
		b.Reset()
		if _, err := d.Decode(&b, buf2); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per 2.0 decode, want 0", allocs)
	}
}

// FuzzDecodeV1: the parser never panics, and whenever prompb's Unmarshal succeeds on
// the same bytes, both read the same series.
func FuzzDecodeV1(f *testing.F) {
	r := rand.New(rand.NewPCG(9, 10))
	for i := 0; i < 8; i++ {
		buf, _ := randWriteRequest(r).Marshal()
		f.Add(buf)
	}
	f.Add([]byte{0x0a, 0x05, 0x0a})
	f.Fuzz(func(t *testing.T, buf []byte) {
		var b Batch
		_, err := DecodeWriteV1(&b, buf)
		var ref prompb.WriteRequest
		refErr := ref.Unmarshal(buf)
		if refErr != nil && err == nil {
			t.Fatalf("prompb fails (%v) but the parser accepts", refErr)
		}
		if err == nil {
			checkASCIIMarks(t, &b)
		}
		if err == nil && refErr == nil {
			if got, want := batchText(&b), v1Text(t, &ref); got != want && !histogramReencodes(&b) {
				t.Fatalf("differs:\ngot:\n%s\nwant:\n%s", got, want)
			}
		}
	})
}

// checkASCIIMarks fails when a series marked ASCII has a label name or value that is
// not: the mark lets the Writer skip its UTF-8 checks.
func checkASCIIMarks(t *testing.T, b *Batch) {
	t.Helper()
	for i, s := range b.Series {
		if !b.labelsASCII(i) {
			continue
		}
		for _, l := range s.Labels {
			for _, c := range append(append([]byte{}, l.Name...), l.Value...) {
				if c >= 0x80 {
					t.Fatalf("series %d is marked ASCII but has label %q=%q", i, l.Name, l.Value)
				}
			}
		}
	}
}

// histogramReencodes reports a batch with histograms: their stored bytes are the
// sender's, which need not be gogo's canonical encoding, so the text comparison does not
// apply to fuzzed input holding them.
func histogramReencodes(b *Batch) bool {
	for _, s := range b.Series {
		if len(s.Histograms) > 0 {
			return true
		}
	}
	return false
}

func FuzzDecodeV2(f *testing.F) {
	r := rand.New(rand.NewPCG(11, 12))
	for i := 0; i < 8; i++ {
		buf, _ := randRequestV2(r).Marshal()
		f.Add(buf)
	}
	f.Add([]byte{0x22, 0x00, 0x2a, 0x03, 0x0a, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, buf []byte) {
		var b Batch
		var d V2Decoder
		_, err := d.Decode(&b, buf)
		var ref writev2.Request
		refErr := ref.Unmarshal(buf)
		if refErr != nil && err == nil {
			t.Fatalf("writev2 fails (%v) but the parser accepts", refErr)
		}
		if err != nil {
			return
		}
		checkASCIIMarks(t, &b)
		for _, s := range b.Series {
			for _, l := range s.Labels {
				if !bytes.Contains(buf, l.Name) || !bytes.Contains(buf, l.Value) {
					t.Fatalf("label %q=%q not from the input", l.Name, l.Value)
				}
			}
		}
		if got, want := batchText(&b), v2Text(t, &ref); got != want && !histogramReencodes(&b) {
			t.Fatalf("differs:\ngot:\n%s\nwant:\n%s", got, want)
		}
	})
}

func TestIsASCII(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"", true}, {"a", true}, {"node_cpu_seconds_total", true}, {"exactly8", true},
		{"\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f", true},
		{"é", false}, {"abcdefgh\x80", false}, {"\xffabcdefgh", false}, {"abcd\x80efgh", false},
	} {
		if got := isASCII([]byte(tc.in)); got != tc.want {
			t.Errorf("isASCII(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestASCIIMarks checks which decoded series skip the Writer's UTF-8 checks: those whose
// labels are one ASCII run of the message, never one with a byte of 0x80 or more.
func TestASCIIMarks(t *testing.T) {
	long := strings.Repeat("v", 200) // its length takes a two-byte varint (>= 0x80)
	v1 := func(ls ...prompb.Label) []byte {
		req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{Labels: ls, Samples: []prompb.Sample{{Timestamp: 1, Value: 1}}}}}
		buf, err := req.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return buf
	}
	name := prompb.Label{Name: "__name__", Value: "up"}
	// Labels split by a sample: the run is broken, so no mark even though all is ASCII.
	var split []byte
	{
		var ts []byte
		lab := func(n, v string) []byte {
			l := append([]byte{0x0a, byte(len(n))}, n...)
			l = append(append(l, 0x12, byte(len(v))), v...)
			return append([]byte{0x0a, byte(len(l))}, l...)
		}
		smp := []byte{0x12, 0x09, 0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f}
		ts = append(append(append(ts, lab("__name__", "up")...), smp...), lab("job", "a")...)
		split = append([]byte{0x0a, byte(len(ts))}, ts...)
	}
	for _, tc := range []struct {
		name string
		buf  []byte
		want bool
	}{
		{"ascii", v1(name, prompb.Label{Name: "job", Value: "node"}), true},
		{"utf8 value", v1(name, prompb.Label{Name: "city", Value: "Zürich"}), false},
		{"invalid utf8", v1(name, prompb.Label{Name: "bad", Value: "\xff"}), false},
		{"long value", v1(name, prompb.Label{Name: "long", Value: long}), false},
		{"labels split by a sample", split, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b Batch
			if _, err := DecodeWriteV1(&b, tc.buf); err != nil {
				t.Fatal(err)
			}
			if b.Len() != 1 || b.labelsASCII(0) != tc.want {
				t.Fatalf("%d series, marked %v, want %v", b.Len(), b.labelsASCII(0), tc.want)
			}
		})
	}
	// Remote-write 2.0: a request is marked series by series when all its symbols are ASCII.
	for _, tc := range []struct {
		symbols []string
		want    bool
	}{{[]string{"", "__name__", "up"}, true}, {[]string{"", "__name__", "up", "Zürich"}, false}} {
		req := &writev2.Request{Symbols: tc.symbols, Timeseries: []writev2.TimeSeries{{LabelsRefs: []uint32{1, 2}, Samples: []writev2.Sample{{Value: 1, Timestamp: 1}}}}}
		buf, err := req.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		var b Batch
		var d V2Decoder
		if _, err := d.Decode(&b, buf); err != nil {
			t.Fatal(err)
		}
		if b.Len() != 1 || b.labelsASCII(0) != tc.want {
			t.Fatalf("symbols %q: %d series, marked %v, want %v", tc.symbols, b.Len(), b.labelsASCII(0), tc.want)
		}
	}
}

// TestDecodeSampleForms: the fast path and the general one read every encoding prompb
// writes (zero fields omitted, negative timestamps in ten bytes) and field orders it
// does not.
func TestDecodeSampleForms(t *testing.T) {
	for _, s := range []prompb.Sample{
		{Value: 1.5, Timestamp: 1_700_000_000_000},
		{Value: 0, Timestamp: 1},
		{Value: 2, Timestamp: 0},
		{Value: -3, Timestamp: -1},
		{Value: math.Inf(1), Timestamp: math.MaxInt64},
		{Value: math.Float64frombits(0x7ff0000000000002), Timestamp: 5}, // a stale marker
	} {
		buf, err := s.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		ts, v, err := decodeSample(buf)
		if err != nil || ts != s.Timestamp || math.Float64bits(v) != math.Float64bits(s.Value) {
			t.Fatalf("%v: got %d %v %v", s, ts, v, err)
		}
	}
	// Timestamp first, then value; and a trailing unknown field.
	buf := []byte{0x10, 0x07, 0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f}
	if ts, v, err := decodeSample(buf); err != nil || ts != 7 || v != 1 {
		t.Fatalf("reordered: %d %v %v", ts, v, err)
	}
	buf = []byte{0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x10, 0x07, 0x18, 0x01}
	if ts, v, err := decodeSample(buf); err != nil || ts != 7 || v != 1 {
		t.Fatalf("trailing field: %d %v %v", ts, v, err)
	}
	if _, _, err := decodeSample([]byte{0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x10}); err == nil {
		t.Fatal("truncated timestamp accepted")
	}
}
