package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// killProc kills p with sig and waits for it to exit.
func killProc(t *testing.T, p *vigilProc, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
	case <-time.After(60 * time.Second):
		t.Fatalf("vigil did not exit after %v", sig)
	}
}

// seriesCounts returns count_over_time(e2e_store[2h]) per series from p's query API.
func seriesCounts(t *testing.T, p *vigilProc, at int64) map[string]int {
	t.Helper()
	resp, err := http.Get("http://" + p.addr + "/api/v1/query?" + url.Values{"query": {"count_over_time(e2e_store[2h])"}, "time": {strconv.FormatInt(at/1000, 10)}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Data   struct {
			Result []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || r.Status != "success" {
		t.Fatalf("query: %v %+v", err, r)
	}
	out := map[string]int{}
	for _, s := range r.Data.Result {
		n, _ := strconv.Atoi(s.Value[1].(string))
		out[s.Metric["s"]] = n
	}
	return out
}

// TestServeStoreKill9AndRestart remote-writes to `vigil serve` and kills it with
// SIGKILL in the middle of the load: after a restart every acknowledged sample is
// queryable and none is counted twice; after a clean stop and another start the
// answers are the same.
func TestServeStoreKill9AndRestart(t *testing.T) {
	dir := t.TempDir()
	p := startVigil(t, dir)
	const nSeries = 40
	base := (time.Now().Add(-90*time.Minute).UnixMilli() / 1000) * 1000
	var mu sync.Mutex
	acked, sent := 0, 0
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		client := &http.Client{Timeout: 10 * time.Second}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			var series []prompb.TimeSeries
			for k := 0; k < nSeries; k++ {
				series = append(series, prompb.TimeSeries{
					Labels:  []prompb.Label{{Name: "__name__", Value: "e2e_store"}, {Name: "s", Value: fmt.Sprint(k)}},
					Samples: []prompb.Sample{{Timestamp: base + int64(i)*1000, Value: float64(i)}},
				})
			}
			mu.Lock()
			sent++
			mu.Unlock()
			if ok := tryWrite(client, p.addr, series); !ok {
				return
			}
			mu.Lock()
			acked++
			mu.Unlock()
		}
	}()
	// Kill once a few hundred writes are acknowledged, with the writer still going.
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		n := acked
		mu.Unlock()
		if n >= 300 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	killProc(t, p, syscall.SIGKILL)
	close(stop)
	<-done
	mu.Lock()
	wantMin, wantMax := acked, sent
	mu.Unlock()
	if wantMin < 300 {
		t.Fatalf("only %d writes acknowledged in 60s", wantMin)
	}

	at := base + int64(wantMax)*1000 + 60000
	p = startVigil(t, dir)
	var got map[string]int
	waitIngest(t, 60*time.Second, "replayed samples to become queryable", func() bool {
		got = seriesCounts(t, p, at)
		if len(got) != nSeries {
			return false
		}
		for _, n := range got {
			if n < wantMin {
				return false
			}
		}
		return true
	})
	for s, n := range got {
		if n < wantMin || n > wantMax {
			t.Errorf("series s=%s: %d samples after kill -9 and restart; %d were acknowledged, %d sent", s, n, wantMin, wantMax)
		}
	}

	killProc(t, p, syscall.SIGTERM)
	p = startVigil(t, dir)
	again := seriesCounts(t, p, at)
	for s, n := range got {
		if again[s] != n {
			t.Errorf("series s=%s: %d samples after a clean restart, %d before", s, again[s], n)
		}
	}
	t.Logf("%d writes acknowledged, %d sent; every series has %d samples after kill -9 and after a clean restart", wantMin, wantMax, got["0"])
}

// tryWrite remote-writes series and reports whether Vigil acknowledged them.
func tryWrite(client *http.Client, addr string, series []prompb.TimeSeries) bool {
	raw, err := (&prompb.WriteRequest{Timeseries: series}).Marshal()
	if err != nil {
		return false
	}
	req, _ := http.NewRequest("POST", "http://"+addr+"/api/v1/write", bytes.NewReader(snappy.Encode(nil, raw)))
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode/100 == 2
}
