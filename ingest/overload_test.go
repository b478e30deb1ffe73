package ingest

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/logcore"
)

// TestOverload: 16 producers send as fast as they can to a log slowed to 20 ms per
// append (fsync always). They get 429s, the heap stays under baseline +
// 3 x max_inflight_bytes + 16 MiB (with max_inflight_bytes = 8 MiB) + what the
// known-series cache holds at the end (it has a bound of its own, and every series of
// the test is new), and every request answered 204 is in the log afterwards.
func TestOverload(t *testing.T) {
	_, tp := testLog(t, 4, logcore.FsyncAlways)
	ft := &failingTopic{Topic: tp, delay: 20 * time.Millisecond}
	const budget = 8 << 20
	w, set := testWriter(t, ft, func(l *config.LimitsConfig) { l.MaxInflightBytes = budget })
	srv := httptest.NewServer(NewRemoteWriteHandler(w, nil))
	defer srv.Close()

	// Pre-encode the bodies: 1000 series of 8 labels per request, each request's series
	// unique, so the log shows which requests landed.
	const nreq, nseries = 320, 1000
	now := time.Now().UnixMilli()
	bodies := make([][]byte, nreq)
	for r := range bodies {
		req := &prompb.WriteRequest{}
		for i := 0; i < nseries; i++ {
			req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
				Labels: []prompb.Label{
					{Name: "__name__", Value: "overload_test_metric"}, {Name: "cluster", Value: "c1"},
					{Name: "instance", Value: fmt.Sprintf("host-%04d:9100", i)}, {Name: "job", Value: "node"},
					{Name: "mode", Value: "idle"}, {Name: "region", Value: "eu-west-1"},
					{Name: "req", Value: fmt.Sprint(r)}, {Name: "zone", Value: "b"},
				},
				Samples: []prompb.Sample{{Timestamp: now, Value: float64(i)}},
			})
		}
		raw, _ := req.Marshal()
		bodies[r] = snappy.Encode(nil, raw)
	}
	// The bound is on the live heap (what the last GC found reachable), which is what
	// limits.max_inflight_bytes controls; garbage between collections is GOGC's business.
	liveHeap := func() uint64 {
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	runtime.GC()
	baseline := liveHeap()
	var peak atomic.Uint64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if h := liveHeap(); h > peak.Load() {
				peak.Store(h)
			}
		}
	}()

	var next atomic.Int64
	var acked sync.Map
	var codes [600]atomic.Int64
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	for p := 0; p < 16; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				r := int(next.Add(1) - 1)
				if r >= nreq {
					return
				}
				resp, err := client.Post(srv.URL, "application/x-protobuf", bytes.NewReader(bodies[r]))
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				codes[resp.StatusCode].Add(1)
				switch resp.StatusCode {
				case 204:
					acked.Store(r, true)
				case 429, 503:
					if resp.Header.Get("Retry-After") == "" {
						t.Errorf("%d without Retry-After", resp.StatusCode)
					}
				default:
					t.Errorf("status %d", resp.StatusCode)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	sampler.Wait()
	n204, n429 := codes[204].Load(), codes[429].Load()
	grow := int64(peak.Load()) - int64(baseline)
	bound := int64(3*budget + 16<<20 + w.known.memory())
	t.Logf("204: %d, 429: %d, 503: %d; live heap peak %d MiB over a %d MiB baseline (bound %d MiB)", n204, n429, codes[503].Load(), grow>>20, baseline>>20, bound>>20)
	if n429 == 0 {
		t.Fatal("no 429 although the producers outran the log")
	}
	if n204 == 0 {
		t.Fatal("nothing accepted")
	}
	if grow > bound {
		t.Fatalf("heap grew by %d MiB, more than the bound of %d MiB", grow>>20, bound>>20)
	}
	if v := counterValue(set, `vigil_ingest_rejected_total{reason="overloaded"}`); v != uint64(n429) {
		t.Fatalf("overloaded counter %d, 429s %d", v, n429)
	}
	// Every acknowledged request is wholly in the log.
	perReq := map[string]int{}
	for _, s := range readLog(t, tp) {
		perReq[extractReq(s.Labels)]++
	}
	acked.Range(func(k, _ any) bool {
		if n := perReq[fmt.Sprint(k)]; n != nseries {
			t.Fatalf("acked request %v has %d of %d series in the log", k, n, nseries)
		}
		return true
	})
}

func extractReq(labels string) string {
	i := bytes.Index([]byte(labels), []byte(`req="`))
	if i < 0 {
		return ""
	}
	rest := labels[i+5:]
	j := bytes.IndexByte([]byte(rest), '"')
	return rest[:j]
}
