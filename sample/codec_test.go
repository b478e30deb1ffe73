package sample

import (
	"bytes"
	"errors"
	"math"
	"testing"
)

func lbl(kv ...string) []Label {
	var ls []Label
	for i := 0; i < len(kv); i += 2 {
		ls = append(ls, Label{Name: []byte(kv[i]), Value: []byte(kv[i+1])})
	}
	return ls
}

func TestRoundTrip(t *testing.T) {
	in := []Series{
		{Labels: lbl("__name__", "up", "job", "a"), Samples: []Sample{{1000, 1}, {2000, math.Inf(1)}, {1500, -3}}},
		{Labels: lbl("__name__", "h"), Histograms: []Histogram{{5, []byte{1, 2, 3}}}},
		{Labels: lbl("__name__", "e"), Samples: []Sample{{-7, math.Float64frombits(0x7ff0000000000002)}},
			Exemplars: []Exemplar{{T: 9, V: 2.5, Labels: lbl("trace_id", "abc")}}},
		{},
	}
	var e Encoder
	e.Reset()
	for i := range in {
		e.AppendSeries(&in[i])
	}
	var d Decoder
	if err := d.Reset(e.Bytes()); err != nil {
		t.Fatal(err)
	}
	i := 0
	for d.Next() {
		got, want := d.Series(), &in[i]
		if len(got.Labels) != len(want.Labels) || len(got.Samples) != len(want.Samples) ||
			len(got.Histograms) != len(want.Histograms) || len(got.Exemplars) != len(want.Exemplars) {
			t.Fatalf("series %d: got %+v want %+v", i, got, want)
		}
		for j := range want.Labels {
			if !bytes.Equal(got.Labels[j].Name, want.Labels[j].Name) || !bytes.Equal(got.Labels[j].Value, want.Labels[j].Value) {
				t.Fatalf("series %d label %d differs", i, j)
			}
		}
		for j := range want.Samples {
			if got.Samples[j].T != want.Samples[j].T || math.Float64bits(got.Samples[j].V) != math.Float64bits(want.Samples[j].V) {
				t.Fatalf("series %d sample %d: got %v want %v", i, j, got.Samples[j], want.Samples[j])
			}
		}
		for j := range want.Histograms {
			if got.Histograms[j].T != want.Histograms[j].T || !bytes.Equal(got.Histograms[j].Proto, want.Histograms[j].Proto) {
				t.Fatalf("series %d histogram %d differs", i, j)
			}
		}
		for j := range want.Exemplars {
			if got.Exemplars[j].T != want.Exemplars[j].T || got.Exemplars[j].V != want.Exemplars[j].V ||
				string(got.Exemplars[j].Labels[0].Value) != string(want.Exemplars[j].Labels[0].Value) {
				t.Fatalf("series %d exemplar %d differs", i, j)
			}
		}
		i++
	}
	if d.Err() != nil || i != len(in) {
		t.Fatalf("decoded %d series, err %v", i, d.Err())
	}
}

func TestCorrupt(t *testing.T) {
	var e Encoder
	e.Reset()
	e.AppendSeries(&Series{Labels: lbl("__name__", "up"), Samples: []Sample{{1, 1}}})
	good := append([]byte(nil), e.Bytes()...)
	f := func(b []byte) {
		t.Helper()
		for _, skip := range []bool{false, true} {
			d := Decoder{SkipLabels: skip}
			if err := d.Reset(b); err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("Reset error %v is not ErrCorrupt", err)
				}
				return
			}
			for d.Next() {
			}
			if !errors.Is(d.Err(), ErrCorrupt) {
				t.Fatalf("%x (SkipLabels %v): want ErrCorrupt, got %v", b, skip, d.Err())
			}
		}
	}
	f(nil)
	f([]byte{2})
	f(good[:len(good)-1])
	f(good[:7])
	huge := append([]byte{Version, 0xff, 0xff, 0xff, 0xff, 0x0f}, 0xff, 0xff, 0xff, 0xff, 0x0f)
	f(huge)
	// A label value whose length runs past the batch, in one byte and in two.
	f([]byte{Version, 1, 1, 1, 'a', 5, 'b'})
	f([]byte{Version, 1, 1, 1, 'a', 0x80, 0x01, 'b'})
}

// TestRawLabels checks that RawLabels is the labels' encoding with and without
// SkipLabels, and that DecodeLabels gives back the labels.
func TestRawLabels(t *testing.T) {
	long := string(bytes.Repeat([]byte("v"), 300)) // a two-byte length
	in := []Series{
		{Labels: lbl("__name__", "up", "job", "a"), Samples: []Sample{{1, 1}}},
		{Labels: lbl("__name__", long, "", "")},
		{},
	}
	var e Encoder
	e.Reset()
	for i := range in {
		e.AppendSeries(&in[i])
	}
	d, skipping := Decoder{}, Decoder{SkipLabels: true}
	if d.Reset(e.Bytes()) != nil || skipping.Reset(e.Bytes()) != nil {
		t.Fatal("Reset failed")
	}
	for i := range in {
		if !d.Next() || !skipping.Next() {
			t.Fatalf("series %d: Next false: %v, %v", i, d.Err(), skipping.Err())
		}
		got, sk := d.Series(), skipping.Series()
		if len(sk.Labels) != 0 {
			t.Fatalf("series %d: SkipLabels decoded %d labels", i, len(sk.Labels))
		}
		want := appendLabels(nil, in[i].Labels)
		if !bytes.Equal(got.RawLabels, want) || !bytes.Equal(sk.RawLabels, want) {
			t.Fatalf("series %d: RawLabels %x and %x, want %x", i, got.RawLabels, sk.RawLabels, want)
		}
		if len(sk.Samples) != len(in[i].Samples) {
			t.Fatalf("series %d: SkipLabels decoded %d samples, want %d", i, len(sk.Samples), len(in[i].Samples))
		}
		ls, err := DecodeLabels(nil, sk.RawLabels)
		if err != nil || len(ls) != len(in[i].Labels) {
			t.Fatalf("series %d: DecodeLabels = %d labels, %v", i, len(ls), err)
		}
		for j := range ls {
			if string(ls[j].Name) != string(in[i].Labels[j].Name) || string(ls[j].Value) != string(in[i].Labels[j].Value) {
				t.Fatalf("series %d label %d: got %q=%q", i, j, ls[j].Name, ls[j].Value)
			}
		}
	}
	if d.Next() || skipping.Next() || d.Err() != nil || skipping.Err() != nil {
		t.Fatalf("after the last series: %v, %v", d.Err(), skipping.Err())
	}
	// Expect: a match skips the labels, anything else decodes them as usual.
	for i, expect := range [][]byte{appendLabels(nil, in[0].Labels), appendLabels(nil, in[1].Labels), appendLabels(nil, in[0].Labels[:1]), {}} {
		d := Decoder{SkipLabels: true}
		if err := d.Reset(e.Bytes()); err != nil {
			t.Fatal(err)
		}
		d.Expect(expect)
		if !d.Next() {
			t.Fatalf("expect %d: %v", i, d.Err())
		}
		want := appendLabels(nil, in[0].Labels)
		if got := d.Series(); !bytes.Equal(got.RawLabels, want) || len(got.Samples) != 1 || d.Matched() != (i == 0) {
			t.Fatalf("expect %d: RawLabels %x, %d samples, matched %v", i, got.RawLabels, len(got.Samples), d.Matched())
		}
		if !d.Next() || d.Matched() || !bytes.Equal(d.Series().RawLabels, appendLabels(nil, in[1].Labels)) {
			t.Fatalf("expect %d: second series matched %v, err %v", i, d.Matched(), d.Err())
		}
	}
	f := func(raw []byte) {
		t.Helper()
		if _, err := DecodeLabels(nil, raw); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("DecodeLabels(%x): want ErrCorrupt, got %v", raw, err)
		}
	}
	f(nil)
	f([]byte{1, 1, 'a'})
	f([]byte{1, 1, 'a', 1, 'b', 0})
	f([]byte{2, 1, 'a', 1, 'b'})
}

func FuzzDecode(f *testing.F) {
	var e Encoder
	e.Reset()
	e.AppendSeries(&Series{Labels: lbl("__name__", "up"), Samples: []Sample{{1, 1}, {2, 2}},
		Histograms: []Histogram{{3, []byte("x")}}, Exemplars: []Exemplar{{4, 4, lbl("a", "b")}}})
	f.Add(append([]byte(nil), e.Bytes()...))
	f.Add([]byte{Version, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var d Decoder
		if d.Reset(b) != nil {
			return
		}
		// A decoder skipping labels sees the same series and the same errors, and
		// their RawLabels decode to the labels.
		// So does one expecting each series to have the labels of the one before.
		skipping, expecting := Decoder{SkipLabels: true}, Decoder{SkipLabels: true}
		_ = skipping.Reset(b)
		_ = expecting.Reset(b)
		var prev []byte
		n := 0
		for d.Next() {
			expecting.Expect(prev)
			if !skipping.Next() || !expecting.Next() {
				t.Fatalf("series %d: SkipLabels stops: %v, %v", n, skipping.Err(), expecting.Err())
			}
			got, sk, ex := d.Series(), skipping.Series(), expecting.Series()
			if !bytes.Equal(got.RawLabels, sk.RawLabels) || len(got.Samples) != len(sk.Samples) {
				t.Fatalf("series %d: SkipLabels differs", n)
			}
			if !bytes.Equal(got.RawLabels, ex.RawLabels) || len(got.Samples) != len(ex.Samples) ||
				expecting.Matched() != (prev != nil && bytes.Equal(prev, got.RawLabels)) {
				t.Fatalf("series %d: Expect(%x) differs (matched %v)", n, prev, expecting.Matched())
			}
			prev = append(prev[:0], got.RawLabels...)
			ls, err := DecodeLabels(nil, sk.RawLabels)
			if err != nil || len(ls) != len(got.Labels) {
				t.Fatalf("series %d: DecodeLabels = %d labels, %v; want %d", n, len(ls), err, len(got.Labels))
			}
			for j := range ls {
				if !bytes.Equal(ls[j].Name, got.Labels[j].Name) || !bytes.Equal(ls[j].Value, got.Labels[j].Value) {
					t.Fatalf("series %d label %d differs", n, j)
				}
			}
			n++
		}
		expecting.Expect(prev)
		if skipping.Next() || expecting.Next() || (d.Err() == nil) != (skipping.Err() == nil) || (d.Err() == nil) != (expecting.Err() == nil) {
			t.Fatalf("after %d series: errors %v, %v and %v", n, d.Err(), skipping.Err(), expecting.Err())
		}
		if d.Err() == nil {
			// A batch that decodes cleanly re-encodes to a batch that decodes to the same count.
			var e Encoder
			e.Reset()
			var d2 Decoder
			_ = d2.Reset(b)
			for d2.Next() {
				e.AppendSeries(d2.Series())
			}
			var d3 Decoder
			if err := d3.Reset(e.Bytes()); err != nil {
				t.Fatal(err)
			}
			m := 0
			for d3.Next() {
				m++
			}
			if m != n || d3.Err() != nil {
				t.Fatalf("re-encoded %d series, decoded %d, err %v", n, m, d3.Err())
			}
		}
	})
}

func BenchmarkEncodeDecode(b *testing.B) {
	s := Series{Labels: lbl("__name__", "http_requests_total", "job", "api", "instance", "10.0.0.1:9100", "code", "200")}
	for i := 0; i < 10; i++ {
		s.Samples = append(s.Samples, Sample{int64(i) * 15000, float64(i)})
	}
	var e Encoder
	var d Decoder
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		e.Reset()
		for j := 0; j < 100; j++ {
			e.AppendSeries(&s)
		}
		_ = d.Reset(e.Bytes())
		for d.Next() {
		}
	}
	b.SetBytes(int64(len(e.Bytes())))
}

// BenchmarkDecodePeers decodes batches of 250 series of 8 labels with one sample each
// (what a partition gets of a 2,000-series remote-write request on 8 partitions), with
// labels decoded and with SkipLabels. It reports ns per series.
func BenchmarkDecodePeers(b *testing.B) {
	var e Encoder
	e.Reset()
	for id := 0; id < 250; id++ {
		e.AppendSeries(&Series{Labels: lbl("__name__", "peer_metric_"+string(rune('a'+id%26)), "cluster", "prod-eu",
			"instance", "10.0.3.42:9100", "job", "node", "mode", "idle", "region", "eu-west-1",
			"series", string(rune('a'+id%26))+"12345", "zone", "eu-west-1b"), Samples: []Sample{{1700000000000, float64(id)}}})
	}
	batch := append([]byte(nil), e.Bytes()...)
	for _, skip := range []bool{false, true} {
		name := "labels"
		if skip {
			name = "skip-labels"
		}
		b.Run(name, func(b *testing.B) {
			d := Decoder{SkipLabels: skip}
			b.ReportAllocs()
			b.SetBytes(int64(len(batch)))
			n := 0
			for i := 0; i < b.N; i++ {
				_ = d.Reset(batch)
				for d.Next() {
					n++
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/series")
		})
	}
}
