package ingest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// BenchmarkSustainedPeers is the sustained figure: for 60 s (VIGIL_SUSTAINED_SECONDS)
// the same load as BenchmarkRemoteWritePeers (100k series of 8 labels, 2,000 samples per
// request, 4 in flight, pre-encoded), every round of 100k samples 200 ms newer than the
// last, goes to each peer in turn. For Vigil the clock runs until every stage has caught up: the
// materializer has put every acknowledged sample into the query store (its lag is zero
// and its sample count covers them), so the rate is acknowledged samples / (sending
// time + drain time). For VictoriaMetrics and Prometheus, whose writes are indexed and
// queryable when acknowledged, it is acknowledged samples / sending time.
// Run it alone: go test -run '^$' -bench SustainedPeers -benchtime 1x -timeout 30m ./ingest/
func BenchmarkSustainedPeers(b *testing.B) {
	secs := 60
	if v, err := strconv.Atoi(os.Getenv("VIGIL_SUSTAINED_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	// Enough rounds for 2.5 million samples/s (2 MB each: 3 GB for 60 s); a peer faster
	// than that stops early, and the log says so.
	bodies := newRoundTemplate(b).encode(secs * 25)
	b.ResetTimer()
	benchPeers(b, func(b *testing.B, p peerServer, addr string, out *bytes.Buffer) int {
		t0 := time.Now()
		n, err := sendFor(time.Duration(secs)*time.Second, "http://"+addr+"/api/v1/write", bodies, 4)
		if n == len(bodies)*2000 {
			b.Logf("%s took every pre-encoded round before %d s", p.name, secs)
		}
		if err != nil {
			b.Fatalf("%s: %v\n%s", p.name, err, out.String())
		}
		sent := time.Since(t0)
		if p.bin == "" { // Vigil
			waitMaterialized(b, addr, n, out)
		}
		b.Logf("%s: %d samples acknowledged in %s; every stage caught up after %s", p.name, n, sent.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
		return n
	})
}

// roundTemplate is one round of the load (50 requests of 2,000 series) encoded once,
// with the byte positions of every sample timestamp, so that each round is a copy with
// its timestamps rewritten in place (the varint keeps its length), then compressed.
type roundTemplate struct {
	raw   [][]byte
	tsPos [][]int
	base  int64 // the timestamp encoded in raw, ms
}

const roundStepMs = 200

func newRoundTemplate(b *testing.B) *roundTemplate {
	// Rounds start ten minutes back, so thousands of them stay within the peers'
	// accepted window and all timestamps keep a 6-byte varint.
	t := &roundTemplate{base: time.Now().Add(-10 * time.Minute).UnixMilli()}
	sentinel := binary.AppendUvarint([]byte{0x10}, uint64(t.base)) // Sample.timestamp, field 2
	for first := 0; first < 100000; first += 2000 {
		req := &prompb.WriteRequest{}
		for id := first; id < first+2000; id++ {
			req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
				Labels:  peerLabels(id),
				Samples: []prompb.Sample{{Timestamp: t.base, Value: float64(id%977) * 0.25}},
			})
		}
		raw, err := req.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		var pos []int
		for i := 0; ; {
			j := bytes.Index(raw[i:], sentinel)
			if j < 0 {
				break
			}
			pos = append(pos, i+j+1)
			i += j + len(sentinel)
		}
		if len(pos) != 2000 {
			b.Fatalf("found %d timestamps in a request of 2000 samples", len(pos))
		}
		t.raw, t.tsPos = append(t.raw, raw), append(t.tsPos, pos)
	}
	return t
}

// encode makes the bodies of rounds 0..n-1 (snappy-compressed, ready to send), using
// every core, before any peer runs: the senders then cost the servers no CPU.
func (t *roundTemplate) encode(n int) [][]byte {
	out := make([][]byte, n*len(t.raw))
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var raw []byte
			for {
				i := int(next.Add(1) - 1)
				if i >= len(out) {
					return
				}
				round, body := i/len(t.raw), i%len(t.raw)
				raw = append(raw[:0], t.raw[body]...)
				ts := uint64(t.base + int64(round)*roundStepMs)
				for _, p := range t.tsPos[body] {
					binary.PutUvarint(raw[p:p+6], ts)
				}
				out[i] = snappy.Encode(nil, raw)
			}
		}()
	}
	wg.Wait()
	return out
}

// sendFor posts bodies in order with `inflight` senders until d has passed or the
// bodies run out, and returns the samples acknowledged.
func sendFor(d time.Duration, url string, bodies [][]byte, inflight int) (int, error) {
	deadline := time.Now().Add(d)
	var next atomic.Int64
	var acked atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: inflight}}
	for w := 0; w < inflight; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				i := int(next.Add(1) - 1)
				if i >= len(bodies) {
					return
				}
				if err := postWithRetry(client, url, bodies[i]); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				acked.Add(2000)
			}
		}()
	}
	wg.Wait()
	return int(acked.Load()), firstErr
}

// waitMaterialized waits until Vigil's materializer has no lag and has stored at least
// want samples, reading its /metrics.
func waitMaterialized(b *testing.B, addr string, want int, out *bytes.Buffer) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		lag, stored := vigilMetric(addr, "vigil_materializer_lag_records"), vigilMetric(addr, `vigil_materializer_samples_total{type="float"}`)
		if lag == 0 && stored >= float64(want) {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("the materializer did not catch up: lag %v records, %v of %d samples stored\n%s", lag, stored, want, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// vigilMetric reads one sample of Vigil's /metrics by its full name; -1 if absent.
func vigilMetric(addr, name string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// postWithRetry posts one remote-write 1.0 body, retrying 429 and 503 after a short
// pause (up to 100 times), as a remote-write client does.
// retriedRequests counts the answers 429 and 503 that postWithRetry retried: a
// server's backpressure, reported beside the peers' figures.
var retriedRequests atomic.Int64

func postWithRetry(client *http.Client, url string, body []byte) error {
	for attempt := 0; ; attempt++ {
		req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-protobuf")
		req.Header.Set("Content-Encoding", "snappy")
		req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		var msg bytes.Buffer
		msg.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			return nil
		}
		if (resp.StatusCode == 429 || resp.StatusCode == 503) && attempt < 100 {
			retriedRequests.Add(1)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		return fmt.Errorf("status %d: %.300s", resp.StatusCode, msg.String())
	}
}
