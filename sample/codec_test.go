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
		var d Decoder
		if err := d.Reset(b); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Reset error %v is not ErrCorrupt", err)
			}
			return
		}
		for d.Next() {
		}
		if !errors.Is(d.Err(), ErrCorrupt) {
			t.Fatalf("%x: want ErrCorrupt, got %v", b, d.Err())
		}
	}
	f(nil)
	f([]byte{2})
	f(good[:len(good)-1])
	f(good[:7])
	huge := append([]byte{Version, 0xff, 0xff, 0xff, 0xff, 0x0f}, 0xff, 0xff, 0xff, 0xff, 0x0f)
	f(huge)
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
		n := 0
		for d.Next() {
			n++
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
