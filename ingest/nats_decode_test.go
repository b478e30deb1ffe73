package ingest

import (
	"fmt"
	"sort"
	"strings"
	"testing"
)

// seriesTexts prints a batch as sorted `{labels} t v` lines (labels sorted).
func seriesTexts(b *Batch) []string {
	var out []string
	for _, s := range b.Series {
		ls := append(s.Labels[:0:0], s.Labels...)
		sortLabels(ls)
		for _, x := range s.Samples {
			out = append(out, fmt.Sprintf("%s %d %g", labelsString(ls), x.T, x.V))
		}
	}
	sort.Strings(out)
	return out
}

func TestDecodeJSON(t *testing.T) {
	f := func(in string, want ...string) {
		t.Helper()
		var b Batch
		if err := DecodeJSON(&b, []byte(in), 42, 7); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if got := seriesTexts(&b); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("%s:\ngot  %q\nwant %q", in, got, want)
		}
		for _, s := range b.Source {
			if s != 7 {
				t.Fatalf("source %d", s)
			}
		}
	}
	f(`{"name":"cpu","labels":{"host":"a"},"value":1.5,"timestamp_ms":1700000000000}`, `{__name__="cpu", host="a"} 1700000000000 1.5`)
	f(` [{"name":"a","value":1},{"name":"b","value":"NaN","labels":{"x":"y"}}] `, `{__name__="a"} 42 1`, `{__name__="b", x="y"} 42 NaN`)
	f(`{"labels":{"__name__":"up"},"value":0,"extra":true}`, `{__name__="up"} 42 0`)
	f(`[]`)
	bad := func(in, wantErr string) {
		t.Helper()
		var b Batch
		err := DecodeJSON(&b, []byte(in), 42, 0)
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("%s: err %v, want %q", in, err, wantErr)
		}
		if b.Len() != 0 {
			t.Fatalf("%s: %d series left in the batch", in, b.Len())
		}
	}
	bad(``, "empty")
	bad(`cpu value=1`, "must be an object or an array")
	bad(`{"name":"a"}`, "no value")
	bad(`{"value":1}`, "no name")
	bad(`{"name":"a","value":"x"}`, "not a number")
	bad(`{"name":"a","value":true}`, "not a number")
	bad(`[{"name":"a","value":1},{"name":"b"}]`, "item 1 (b): no value")
	bad(`{"name":"a","labels":{"__name__":"b"},"value":1}`, "differ")
	bad(`{"name":"a","value":1`, "invalid JSON")
}

func TestDecodeInflux(t *testing.T) {
	f := func(in string, wantErr string, want ...string) {
		t.Helper()
		var b Batch
		var d InfluxDecoder
		err := d.Decode(&b, []byte(in), 42, 0)
		if wantErr == "" && err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)) {
			t.Fatalf("%q: err %v, want %q", in, err, wantErr)
		}
		if got := seriesTexts(&b); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("%q:\ngot  %q\nwant %q", in, got, want)
		}
		if len(b.Source) != b.Len() {
			t.Fatalf("%d sources for %d series", len(b.Source), b.Len())
		}
	}
	// What Telegraf's cpu input sends.
	f("cpu,cpu=cpu0,host=h1 usage_idle=98.5,usage_user=1.2 1700000000000000000\n", "",
		`{__name__="cpu_usage_idle", cpu="cpu0", host="h1"} 1700000000000 98.5`,
		`{__name__="cpu_usage_user", cpu="cpu0", host="h1"} 1700000000000 1.2`)
	f("mem value=3i", "", `{__name__="mem"} 42 3`)
	f("disk,path=/a\\ b free=10u,ok=true,label=\"x, \\\"y\\\" z\",bad=f 5000000", "",
		`{__name__="disk_bad", path="/a b"} 5 0`,
		`{__name__="disk_free", path="/a b"} 5 10`,
		`{__name__="disk_ok", path="/a b"} 5 1`)
	f("my\\,meas,t\\=k=v\\,1 f\\ x=1\n# comment\n\n", "", `{__name__="my,meas_f x", t=k="v,1"} 42 1`)
	// One bad line does not lose the good ones.
	f("a x=1\nbad line here\nb y=2i 1000000\nc z=zz\n", "2 bad line(s); line 2", `{__name__="a_x"} 42 1`, `{__name__="b_y"} 1 2`)
	f("a", "missing fields")
	f("a,t x=1", "tag without '='")
	f("a,t= x=1", "empty tag")
	f("a x=1 notatime", "bad timestamp")
	f(`a s="unterminated`, "unterminated")
	f("a x=12xi", "bad integer")
	f(",t=v x=1", "missing measurement")
}

func FuzzDecodeJSON(f *testing.F) {
	f.Add([]byte(`{"name":"cpu","labels":{"host":"a"},"value":1.5,"timestamp_ms":1700000000000}`))
	f.Add([]byte(`[{"name":"a","value":1},{"name":"b","value":"NaN"}]`))
	f.Add([]byte(`{"name":"a"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		var b Batch
		if err := DecodeJSON(&b, in, 0, 0); err != nil && b.Len() != 0 {
			t.Fatalf("error %v with %d series left", err, b.Len())
		}
		for _, s := range b.Series {
			if len(s.Samples) != 1 || len(s.Labels) == 0 || string(s.Labels[0].Name) != "__name__" || len(s.Labels[0].Value) == 0 {
				t.Fatalf("bad series %+v", s)
			}
		}
	})
}

func FuzzDecodeInflux(f *testing.F) {
	f.Add([]byte("cpu,cpu=cpu0,host=h1 usage_idle=98.5,usage_user=1.2 1700000000000000000\n"))
	f.Add([]byte("disk,path=/a\\ b free=10u,ok=true,label=\"x, \\\"y\\\" z\" 5000000"))
	f.Add([]byte("a x=1\nbad line\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var b Batch
		var d InfluxDecoder
		d.Decode(&b, in, 0, 0)
		if len(b.Source) != b.Len() {
			t.Fatalf("%d sources for %d series", len(b.Source), b.Len())
		}
		for _, s := range b.Series {
			if len(s.Samples) != 1 || string(s.Labels[0].Name) != "__name__" || len(s.Labels[0].Value) == 0 {
				t.Fatalf("bad series %+v", s)
			}
		}
	})
}
