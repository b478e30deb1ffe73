package api

import (
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
)

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote\back`, "<tag>&amp;", "tab\tnl\ncr\r", "\x00\x1f\x7f", "héllo wörld ✓", "\u2028\u2029", "bad\xffutf8", "\xed\xa0\x80"} {
		want, _ := json.Marshal(s)
		if got := appendString(nil, s); string(got) != string(want) {
			t.Errorf("appendString(%q) = %s, want %s", s, got, want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a\"b", "<>&", "\u2028", "\xff", "ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendString(nil, s); string(got) != string(want) {
			t.Fatalf("appendString(%q) = %s, want %s", s, got, want)
		}
	})
}

func FuzzParseTimeAndDuration(f *testing.F) {
	for _, s := range []string{"1700000000", "1700000000.123", "2023-11-14T22:13:20Z", "5m", "1h30m", "-1", "NaN", "1e400", "", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ParseTime(s)
		ParseDuration(s)
	})
}

func TestTimestampFormat(t *testing.T) {
	for ms, want := range map[int64]string{0: "0", 1000: "1", 1500: "1.500", 1050: "1.050", 1005: "1.005", -1500: "-1.500", 1700000000123: "1700000000.123"} {
		if got := string(appendTimestamp(nil, ms)); got != want {
			t.Errorf("appendTimestamp(%d) = %s, want %s", ms, got, want)
		}
	}
}

// TestQueryResponseEncoding checks the fast encoder against the values' own JSON
// marshalers (decoded, since timestamps are formatted differently).
func TestQueryResponseEncoding(t *testing.T) {
	h := &histogram.FloatHistogram{Count: 3, Sum: 1.5, Schema: 0, PositiveSpans: []histogram.Span{{Offset: 0, Length: 2}}, PositiveBuckets: []float64{1, 2}}
	m := labels.FromStrings("__name__", "x", "a", `<"b">`)
	for _, v := range []parser.Value{
		promql.Matrix{{Metric: m, Floats: []promql.FPoint{{T: 1000, F: 1}, {T: 2500, F: math.NaN()}}}, {Metric: labels.EmptyLabels(), Histograms: []promql.HPoint{{T: 3000, H: h}}}},
		promql.Matrix{},
		promql.Vector{{Metric: m, T: 1000, F: math.Inf(-1)}, {Metric: m, T: 1001, H: h}},
		promql.Vector{},
		promql.Scalar{T: 1234, V: 0.1},
		promql.String{T: 1, V: "s<"},
	} {
		got := appendQueryResponse(nil, &QueryData{ResultType: v.Type(), Result: v}, []string{"w"}, nil)
		wantB, err := json.Marshal(map[string]any{"status": "success", "data": map[string]any{"resultType": v.Type(), "result": v}, "warnings": []string{"w"}})
		if err != nil {
			t.Fatal(err)
		}
		var gotV, wantV any
		if err := json.Unmarshal(got, &gotV); err != nil {
			t.Fatalf("%T: invalid JSON %s: %v", v, got, err)
		}
		json.Unmarshal(wantB, &wantV)
		if fmt.Sprint(gotV) != fmt.Sprint(wantV) {
			t.Errorf("%T:\ngot  %s\nwant %s", v, got, wantB)
		}
	}
}

func TestErrorTypesAndStatus(t *testing.T) {
	for _, c := range []struct {
		err  error
		typ  ErrorType
		code int
	}{
		{Errorf(ErrBadData, "x"), ErrBadData, 400},
		{errors.New("boom"), ErrExec, 422},
		{promql.ErrQueryTimeout("eval"), ErrTimeout, 503},
		{fmt.Errorf("wrapped: %w", promql.ErrQueryCanceled("eval")), ErrCanceled, 499},
		{context.Canceled, ErrCanceled, 499},
		{promql.ErrStorage{Err: errors.New("disk")}, ErrInternal, 500},
		{promql.ErrTooManySeries("x"), ErrCostLimit, 422},
		{&Error{ErrNotFound, errors.New("no")}, ErrNotFound, 404},
	} {
		rec := httptest.NewRecorder()
		WriteError(rec, c.err, nil)
		var body map[string]any
		json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != c.code || body["errorType"] != string(c.typ) || body["status"] != "error" || rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%v: got %d %s, want %d %s", c.err, rec.Code, rec.Body, c.code, c.typ)
		}
	}
}

func TestHandlerFormAndWarnings(t *testing.T) {
	h := Handler(func(r *http.Request) (any, annotations.Annotations, error) {
		var a annotations.Annotations
		a.Add(errors.New("careful"))
		return map[string]string{"q": r.FormValue("query"), "m": strings.Join(r.Form["match[]"], ",")}, a, nil
	})
	req := httptest.NewRequest("POST", "/x?match[]=a", strings.NewReader(url.Values{"query": {"up"}, "match[]": {"b"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	want := `{"status":"success","data":{"m":"b,a","q":"up"},"warnings":["careful"]}`
	if rec.Code != 200 || rec.Body.String() != want {
		t.Errorf("got %d %s, want %s", rec.Code, rec.Body, want)
	}
}

// TestQueryTimeoutParameter runs a query with a tiny timeout through the real engine.
func TestQueryTimeoutParameter(t *testing.T) {
	a := New(Options{Queryable: emptyQueryable{}, Engine: promql.NewEngine(promql.EngineOpts{MaxSamples: 1000, Timeout: time.Minute})})
	mux := http.NewServeMux()
	a.Register(mux)
	for _, c := range []struct {
		params url.Values
		code   int
		typ    string
	}{
		{url.Values{"query": {"vector(1)"}, "timeout": {"10s"}}, 200, ""},
		{url.Values{"query": {"1"}, "timeout": {"0"}}, 400, "bad_data"},
		{url.Values{"query": {"1"}, "lookback_delta": {"x"}}, 400, "bad_data"},
		{url.Values{"query": {"count_over_time(vector(1)[1h:1s])"}}, 422, "execution"},
		{url.Values{"query": {"1"}}, 200, ""},
	} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/query?"+c.params.Encode(), nil))
		var body map[string]any
		json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != c.code || (c.typ != "" && body["errorType"] != c.typ) {
			t.Errorf("%v: got %d %s, want %d %s", c.params, rec.Code, rec.Body, c.code, c.typ)
		}
	}
}

type emptyQueryable struct{}

func (emptyQueryable) Querier(int64, int64) (storage.Querier, error) {
	return storage.NoopQuerier(), nil
}

func TestHandlerCompresses(t *testing.T) {
	body := `{"status":"success","data":["` + strings.Repeat("a", 5000) + `"]}`
	h := Handler(func(r *http.Request) (any, annotations.Annotations, error) {
		return []string{strings.Repeat("a", 5000)}, nil, nil
	})
	for _, tc := range []struct {
		accept, want string
	}{
		{"gzip", "gzip"},
		{"gzip, deflate, br", "gzip"},
		{"deflate, gzip", "deflate"}, // the first listed, as Prometheus chooses
		{"br, deflate;q=0.5", "deflate"},
		{"gzip;q=0, deflate", "deflate"},
		{"gzip;q=0", ""},
		{"br", ""},
		{"", ""},
	} {
		// Twice: the second request gets a compressor back from the pool.
		for round := 0; round < 2; round++ {
			req := httptest.NewRequest("GET", "/x", nil)
			req.Header.Set("Accept-Encoding", tc.accept)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if got := rec.Header().Get("Content-Encoding"); got != tc.want {
				t.Fatalf("Accept-Encoding %q: Content-Encoding %q, want %q", tc.accept, got, tc.want)
			}
			if rec.Header().Get("Vary") != "Accept-Encoding" {
				t.Fatalf("Accept-Encoding %q: Vary %q", tc.accept, rec.Header().Get("Vary"))
			}
			var r io.Reader = rec.Body
			switch tc.want {
			case "gzip":
				zr, err := gzip.NewReader(rec.Body)
				if err != nil {
					t.Fatal(err)
				}
				r = zr
			case "deflate":
				zr, err := zlib.NewReader(rec.Body)
				if err != nil {
					t.Fatal(err)
				}
				r = zr
			}
			b, err := io.ReadAll(r)
			if err != nil || string(b) != body {
				t.Fatalf("Accept-Encoding %q, round %d: body %.80s... (%d bytes), err %v", tc.accept, round, b, len(b), err)
			}
			if tc.want != "" && rec.Body.Len() >= len(body) {
				t.Fatalf("Accept-Encoding %q: not compressed (%d bytes of %d)", tc.accept, rec.Body.Len(), len(body))
			}
		}
	}
}
