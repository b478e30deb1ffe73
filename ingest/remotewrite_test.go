package ingest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/logcore"
)

const (
	ctV1 = "application/x-protobuf"
	ctV2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request"
)

func TestNegotiateRemoteWrite(t *testing.T) {
	f := func(ct, enc string, want RemoteWriteVersion, wantErr string) {
		t.Helper()
		got, err := NegotiateRemoteWrite(ct, enc)
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Fatalf("%q %q: err %v, want %q", ct, enc, err, wantErr)
			}
			return
		}
		if err != nil || got != want {
			t.Fatalf("%q %q: %v %v, want %v", ct, enc, got, err, want)
		}
	}
	f("", "", RemoteWriteV1, "")
	f("application/x-protobuf", "snappy", RemoteWriteV1, "")
	f("application/x-protobuf;proto=prometheus.WriteRequest", "snappy", RemoteWriteV1, "")
	f("application/x-protobuf; proto=io.prometheus.write.v2.Request", "snappy", RemoteWriteV2, "")
	f("Application/X-Protobuf;proto=io.prometheus.write.v2.Request", "SNAPPY", RemoteWriteV2, "")
	f("application/x-protobuf;proto=io.prometheus.write.v3.Request", "snappy", 0, `proto "io.prometheus.write.v3.Request" is not supported`)
	f("application/json", "snappy", 0, `Content-Type "application/json" is not supported`)
	f("application/x-protobuf;proto", "snappy", 0, "not key=value")
	f("application/x-protobuf", "zstd", 0, `Content-Encoding "zstd" is not supported`)
	f("application/x-protobuf", "gzip", 0, `Content-Encoding "gzip"`)
}

type rwFixture struct {
	t   *testing.T
	tp  logcore.Topic
	ft  *failingTopic
	w   *Writer
	srv *httptest.Server
}

func newRWFixture(t *testing.T, mod func(*config.LimitsConfig)) *rwFixture {
	_, tp := testLog(t, 4, logcore.FsyncAlways)
	ft := &failingTopic{Topic: tp}
	w, _ := testWriter(t, ft, mod)
	srv := httptest.NewServer(NewRemoteWriteHandler(w, nil))
	t.Cleanup(srv.Close)
	return &rwFixture{t: t, tp: tp, ft: ft, w: w, srv: srv}
}

func (fx *rwFixture) post(ct, enc string, body []byte) (*http.Response, string) {
	fx.t.Helper()
	req, _ := http.NewRequest("POST", fx.srv.URL, bytes.NewReader(body))
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if enc != "" {
		req.Header.Set("Content-Encoding", enc)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fx.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func v1Body(t testing.TB, series ...prompb.TimeSeries) []byte {
	req := &prompb.WriteRequest{Timeseries: series}
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, raw)
}

func ts1(now int64, kv ...string) prompb.TimeSeries {
	var ls []prompb.Label
	for i := 0; i+1 < len(kv); i += 2 {
		ls = append(ls, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	return prompb.TimeSeries{Labels: ls, Samples: []prompb.Sample{{Timestamp: now, Value: 1}}}
}

// TestRemoteWriteBadInput: every kind of bad input gets its status code and a message
// naming the problem; a partly bad request still lands its valid series.
func TestRemoteWriteBadInput(t *testing.T) {
	now := time.Now().UnixMilli()
	fx := newRWFixture(t, func(l *config.LimitsConfig) {
		l.MaxRequestBytes = 64 << 10
		l.MaxDecompressedBytes = 1 << 20
		l.MaxSeriesPerRequest = 4
	})
	f := func(ct, enc string, body []byte, wantCode int, wantMsg string) {
		t.Helper()
		resp, msg := fx.post(ct, enc, body)
		if resp.StatusCode != wantCode || !strings.Contains(msg, wantMsg) {
			t.Fatalf("got %d %q, want %d with %q", resp.StatusCode, msg, wantCode, wantMsg)
		}
		if wantCode == 429 || wantCode == 503 {
			if resp.Header.Get("Retry-After") == "" {
				t.Fatalf("%d without Retry-After", wantCode)
			}
		}
	}
	good := v1Body(t, ts1(now, "__name__", "up", "job", "a"))
	f("text/plain", "snappy", good, 415, `Content-Type "text/plain" is not supported`)
	f(ctV1+";proto=foo.Bar", "snappy", good, 415, `proto "foo.Bar" is not supported`)
	f(ctV1, "zstd", good, 415, `Content-Encoding "zstd" is not supported`)
	f(ctV1, "snappy", bytes.Repeat([]byte{0}, 65<<10), 413, "exceeds limits.max_request_bytes")
	// A snappy bomb: the header claims 1 GiB; refused from the header alone.
	bomb := binary.AppendUvarint(nil, 1<<30)
	bomb = append(bomb, 0x00)
	f(ctV1, "snappy", bomb, 413, "would exceed limits.max_decompressed_bytes")
	f(ctV1, "snappy", []byte("this is not snappy"), 400, "cannot decode snappy")
	f(ctV1, "snappy", snappy.Encode(nil, []byte{0x0a, 0x7f, 0x01}), 400, "cannot parse protobuf WriteRequest")
	f(ctV2, "snappy", snappy.Encode(nil, []byte{0x22, 0x01, 'x'}), 400, "symbols[0] must be the empty string")
	f(ctV1, "snappy", v1Body(t, ts1(now, "__name__", "a"), ts1(now, "__name__", "b"), ts1(now, "__name__", "c"), ts1(now, "__name__", "d"), ts1(now, "__name__", "e")), 400, "5 series in one request, more than the limit of 4")
	f(ctV1, "snappy", v1Body(t,
		ts1(now, "__name__", "good1", "job", "x"),
		ts1(now, "__name__", "bad", "job", "x", "job", "y"),
		ts1(now, "job", "noname"),
		ts1(now, "__name__", "good2", "l", "\xff"),
	), 400, "3 series rejected")
	resp, msg := fx.post(ctV1, "snappy", v1Body(t, ts1(now, "__name__", "good3"), ts1(now, "__name__", "bad", "", "x")))
	if resp.StatusCode != 400 || !strings.Contains(msg, "1 series rejected: 1 empty_label_name") || !strings.Contains(msg, "1 series accepted") {
		t.Fatalf("partial: %d %q", resp.StatusCode, msg)
	}
	got := readLog(t, fx.tp)
	var names []string
	for _, s := range got {
		names = append(names, s.Labels)
	}
	if fmt.Sprint(names) != `[{__name__="good1", job="x"} {__name__="good3"}]` {
		t.Fatalf("log holds %v", names)
	}
	// Overload: the in-flight budget is spent.
	fx.w.Acquire(fx.w.maxInflight)
	f(ctV1, "snappy", good, 429, "overloaded")
	fx.w.Release(fx.w.maxInflight)
	// The log fails.
	fx.ft.setFails(1)
	f(ctV1, "snappy", good, 503, "the log did not accept the append")
	f(ctV1, "snappy", good, 204, "")
}

// TestRemoteWriteV2 sends a 2.0 request built with the prometheus module's writev2
// types, with floats, a native histogram, exemplars and metadata, and reads it back.
func TestRemoteWriteV2(t *testing.T) {
	fx := newRWFixture(t, nil)
	now := time.Now().UnixMilli()
	st := writev2.NewSymbolTable()
	ref := func(kv ...string) []uint32 {
		var r []uint32
		for _, s := range kv {
			r = append(r, st.Symbolize(s))
		}
		return r
	}
	h := testHistogram(2)
	req := &writev2.Request{Timeseries: []writev2.TimeSeries{
		{
			LabelsRefs: ref("__name__", "http_requests_total", "job", "api"),
			Samples:    []writev2.Sample{{Value: 10, Timestamp: now}, {Value: 11, Timestamp: now + 1000}},
			Exemplars:  []writev2.Exemplar{{LabelsRefs: ref("trace_id", "abc"), Value: 1, Timestamp: now}},
			Metadata:   writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_COUNTER, HelpRef: st.Symbolize("Requests."), UnitRef: st.Symbolize("")},
		},
		{
			LabelsRefs: ref("__name__", "request_duration_seconds", "job", "api"),
			Histograms: []writev2.Histogram{writev2.FromIntHistogram(0, now, h)},
			Metadata:   writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_HISTOGRAM},
		},
	}}
	req.Symbols = st.Symbols()
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	resp, msg := fx.post(ctV2, "snappy", snappy.Encode(nil, raw))
	if resp.StatusCode != 204 {
		t.Fatalf("%d %s", resp.StatusCode, msg)
	}
	for hd, want := range map[string]string{headerSamplesWritten: "2", headerHistogramsWritten: "1", headerExemplarsWritten: "1"} {
		if got := resp.Header.Get(hd); got != want {
			t.Fatalf("%s = %q, want %q", hd, got, want)
		}
	}
	got := readLog(t, fx.tp)
	if len(got) != 2 {
		t.Fatalf("log: %+v", got)
	}
	c := got[0]
	if c.Labels != `{__name__="http_requests_total", job="api"}` || len(c.Samples) != 2 || c.Samples[1].V != 11 || len(c.Exemplars) != 1 || c.Exemplars[0] != fmt.Sprintf(`{trace_id="abc"} 1 @%d`, now) {
		t.Fatalf("counter series: %+v", c)
	}
	hs := got[1]
	if hs.Labels != `{__name__="request_duration_seconds", job="api"}` || len(hs.Histograms) != 1 || hs.Histograms[0].T != now {
		t.Fatalf("histogram series: %+v", hs)
	}
	var ph prompb.Histogram
	if err := ph.Unmarshal(hs.Histograms[0].Proto); err != nil {
		t.Fatal(err)
	}
	if !ph.ToIntHistogram().Equals(h) {
		t.Fatalf("histogram read back %v, want %v", ph.ToIntHistogram(), h)
	}
	// A 1.0 request gets no 2.0 headers.
	resp, _ = fx.post(ctV1, "snappy", v1Body(t, ts1(now, "__name__", "up")))
	if resp.StatusCode != 204 || resp.Header.Get(headerSamplesWritten) != "" {
		t.Fatalf("1.0: %d, headers %v", resp.StatusCode, resp.Header)
	}
}
