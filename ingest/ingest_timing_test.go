package ingest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/logcore"
)

// benchBodies pre-encodes n remote-write 1.0 requests of 2,000 series (8 labels, one
// sample each) drawn from a pool of 100k series, as the load describes.
func benchBodies(n int) [][]byte { return benchBodiesVersion(n, false) }

// benchBodiesVersion is benchBodies as remote-write 1.0 or (v2) 2.0 requests.
func benchBodiesVersion(n int, v2 bool) [][]byte {
	now := time.Now().UnixMilli()
	out := make([][]byte, n)
	for r := range out {
		req := &prompb.WriteRequest{}
		for i := 0; i < 2000; i++ {
			id := (r*2000 + i) % 100000
			req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
				Labels: []prompb.Label{
					{Name: "__name__", Value: fmt.Sprintf("bench_metric_%d", id%100)}, {Name: "cluster", Value: "prod-eu"},
					{Name: "instance", Value: fmt.Sprintf("10.0.%d.%d:9100", id/1000%256, id%1000%256)}, {Name: "job", Value: "node"},
					{Name: "mode", Value: "idle"}, {Name: "region", Value: "eu-west-1"},
					{Name: "series", Value: fmt.Sprint(id)}, {Name: "zone", Value: "eu-west-1b"},
				},
				Samples: []prompb.Sample{{Timestamp: now + int64(r), Value: float64(i)}},
			})
		}
		var raw []byte
		if v2 {
			raw, _ = requestV2(req).Marshal()
		} else {
			raw, _ = req.Marshal()
		}
		out[r] = snappy.Encode(nil, raw)
	}
	return out
}

// requestV2 is req as a remote-write 2.0 request (float samples only).
func requestV2(req *prompb.WriteRequest) *writev2.Request {
	out := &writev2.Request{Symbols: []string{""}}
	refs := map[string]uint32{"": 0}
	sym := func(s string) uint32 {
		if r, ok := refs[s]; ok {
			return r
		}
		refs[s] = uint32(len(out.Symbols))
		out.Symbols = append(out.Symbols, s)
		return refs[s]
	}
	for _, ts := range req.Timeseries {
		var s writev2.TimeSeries
		for _, l := range ts.Labels {
			s.LabelsRefs = append(s.LabelsRefs, sym(l.Name), sym(l.Value))
		}
		for _, x := range ts.Samples {
			s.Samples = append(s.Samples, writev2.Sample{Value: x.Value, Timestamp: x.Timestamp})
		}
		out.Timeseries = append(out.Timeseries, s)
	}
	return out
}

// discardTopic is a Topic whose Append does nothing, to time everything before the log.
type discardTopic struct {
	logcore.Topic
	n int
}

func (d discardTopic) Partitions() int { return d.n }
func (d discardTopic) Append(context.Context, int, []logcore.Record) (int64, error) {
	return 0, nil
}

// decodeLoop is Vigil's decode path n times: snappy into a reused buffer, the
// purpose-built parser into a pooled Batch, label sort, series hash and partition.
// With full, it is the whole Writer before the log instead: also validation and
// limits, and the encoding of one sample batch per partition (the Append discarded).
type decodeLoop struct {
	w       *Writer
	batch   Batch
	buf     []byte
	hashBuf []byte
	parts   []int
}

func newDecodeLoop() *decodeLoop {
	w, err := NewWriter(Options{Topic: discardTopic{n: 8}, Limits: config.Default().Limits})
	if err != nil {
		panic(err)
	}
	return &decodeLoop{w: w, parts: make([]int, 8)}
}

func (d *decodeLoop) run(n int, bodies [][]byte, full bool) (samples int, err error) {
	for i := 0; i < n; i++ {
		body := bodies[i%len(bodies)]
		size, _ := snappy.DecodedLen(body)
		if cap(d.buf) < size {
			d.buf = make([]byte, size)
		}
		dec, err := snappy.Decode(d.buf[:size], body)
		if err != nil {
			return 0, err
		}
		d.batch.Reset()
		if _, err := DecodeWriteV1(&d.batch, dec); err != nil {
			return 0, err
		}
		if !full {
			for j := range d.batch.Series {
				s := &d.batch.Series[j]
				sortLabels(s.Labels)
				var h uint64
				h, d.hashBuf = seriesHash(d.hashBuf, s.Labels)
				d.parts[PartitionOf(h, len(d.parts))]++
				samples += len(s.Samples)
			}
			continue
		}
		res, err := d.w.Write(context.Background(), &d.batch, ProtocolRemoteWrite)
		if err != nil || res.Rejected.Total() > 0 {
			return 0, fmt.Errorf("%v %s", err, res.Rejected.String())
		}
		samples += res.Samples
	}
	return samples, nil
}

// prompbLoop is the plain loop n times: snappy.Decode + prompb.WriteRequest.Unmarshal.
func prompbLoop(n int, bodies [][]byte) (samples int, err error) {
	for i := 0; i < n; i++ {
		raw, err := snappy.Decode(nil, bodies[i%len(bodies)])
		if err != nil {
			return 0, err
		}
		var req prompb.WriteRequest
		if err := req.Unmarshal(raw); err != nil {
			return 0, err
		}
		for _, ts := range req.Timeseries {
			samples += len(ts.Samples)
		}
	}
	return samples, nil
}

func benchLoop(b *testing.B, f func(n int) (int, error)) {
	f(1) // warm up the pools
	b.ReportAllocs()
	b.ResetTimer()
	samples, err := f(b.N)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(samples)/b.Elapsed().Seconds(), "samples/s")
}

// BenchmarkDecodePath compares Vigil's decode path with the plain snappy + prompb loop
// on the same bodies (one core); see BenchmarkDecodeRatio for the ratio.
func BenchmarkDecodePath(b *testing.B) {
	bodies := benchBodies(8)
	d := newDecodeLoop()
	b.Run("vigil", func(b *testing.B) { benchLoop(b, func(n int) (int, error) { return d.run(n, bodies, false) }) })
	b.Run("vigil-writer", func(b *testing.B) { benchLoop(b, func(n int) (int, error) { return d.run(n, bodies, true) }) })
	b.Run("prompb", func(b *testing.B) { benchLoop(b, func(n int) (int, error) { return prompbLoop(n, bodies) }) })
}

// BenchmarkDecodeRatio times the decode paths on the same bodies, interleaved in
// rounds so that a noisy machine affects them alike, and reports how many times faster
// Vigil's is (decode to partitions; and with the whole Writer before the log) and the
// allocations per request (2,000 samples).
func BenchmarkDecodeRatio(b *testing.B) {
	bodies := benchBodies(8)
	type path struct {
		run  func(n int) (int, error)
		ns   time.Duration
		mall uint64
	}
	d := newDecodeLoop()
	paths := []*path{
		{run: func(n int) (int, error) { return d.run(n, bodies, false) }},
		{run: func(n int) (int, error) { return d.run(n, bodies, true) }},
		{run: func(n int) (int, error) { return prompbLoop(n, bodies) }},
	}
	for _, p := range paths {
		p.run(1) // warm up
	}
	const per = 50
	rounds := 0
	for i := 0; i < b.N; i++ {
		for r := 0; r < 4; r++ {
			rounds++
			for _, p := range paths {
				var m0, m1 runtime.MemStats
				runtime.ReadMemStats(&m0)
				t0 := time.Now()
				if _, err := p.run(per); err != nil {
					b.Fatal(err)
				}
				p.ns += time.Since(t0)
				runtime.ReadMemStats(&m1)
				p.mall += m1.Mallocs - m0.Mallocs
			}
		}
	}
	reqs := float64(rounds * per)
	v, w, pb := paths[0], paths[1], paths[2]
	b.ReportMetric(float64(pb.ns)/float64(v.ns), "x-faster")
	b.ReportMetric(float64(pb.ns)/float64(w.ns), "x-faster-with-writer")
	b.ReportMetric(float64(v.mall)/reqs, "vigil-allocs/req")
	b.ReportMetric(float64(pb.mall)/reqs, "prompb-allocs/req")
	b.ReportMetric(reqs*2000/v.ns.Seconds(), "vigil-samples/s")
	b.ReportMetric(reqs*2000/w.ns.Seconds(), "vigil-writer-samples/s")
	b.ReportMetric(reqs*2000/pb.ns.Seconds(), "prompb-samples/s")
}

// BenchmarkIngestLog is remote-write 1.0 through the handler into the real log with
// fsync=always (group commit), 4 requests in flight, and the same with fsync=never as
// the ceiling the disk takes away (also with 2.0 requests). It reports samples/s and the bytes written to the
// log per sample.
func BenchmarkIngestLog(b *testing.B) {
	for _, comp := range []struct {
		name  string
		c     logcore.Compression
		fsync logcore.FsyncPolicy
		v2    bool
	}{
		{"none", logcore.CompressionNone, logcore.FsyncAlways, false},
		{"s2", logcore.CompressionS2, logcore.FsyncAlways, false},
		// The ceiling without the disk: the same path, never synced.
		{"s2-fsync-never", logcore.CompressionS2, logcore.FsyncNever, false},
		// The same with remote-write 2.0 requests.
		{"s2-fsync-never-v2", logcore.CompressionS2, logcore.FsyncNever, true},
	} {
		b.Run(comp.name, func(b *testing.B) {
			l, err := logcore.Open(b.TempDir(), logcore.Options{Fsync: comp.fsync, Defaults: logcore.TopicConfig{Partitions: 8, Compression: comp.c}})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			tp, err := l.Topic("samples", logcore.TopicConfig{Partitions: 8, Compression: comp.c})
			if err != nil {
				b.Fatal(err)
			}
			lim := config.Default().Limits
			lim.MaxInflightBytes = 0
			w, _ := NewWriter(Options{Topic: tp, Limits: lim})
			h := NewRemoteWriteHandler(w, nil)
			bodies := benchBodiesVersion(16, comp.v2)
			contentType := "application/x-protobuf"
			if comp.v2 {
				contentType += ";proto=io.prometheus.write.v2.Request"
			}
			var next atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(2) // 2 x GOMAXPROCS(2) = 4 requests in flight
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					body := bodies[next.Add(1)%int64(len(bodies))]
					req := httptest.NewRequest("POST", "/api/v1/write", bytes.NewReader(body))
					req.Header.Set("Content-Type", contentType)
					req.Header.Set("Content-Encoding", "snappy")
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					if rec.Code != http.StatusNoContent {
						b.Errorf("status %d: %s", rec.Code, rec.Body.String())
						return
					}
				}
			})
			b.StopTimer()
			var bytes int64
			for p := 0; p < 8; p++ {
				bytes += tp.Stats(p).Bytes
			}
			samples := float64(b.N) * 2000
			b.ReportMetric(samples/b.Elapsed().Seconds(), "samples/s")
			b.ReportMetric(float64(bytes)/samples, "log-bytes/sample")
		})
	}
}
