package ingest

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// BenchmarkRemoteWritePeers sends the same pre-encoded remote-write 1.0 payloads
// (100k series of 8 labels, 2,000 samples per request, 4 requests in flight) to
// `vigil serve` (fsync always), Debian's victoria-metrics and Debian's prometheus
// (--web.enable-remote-write-receiver), one after the other in one run, and reports for
// each the accepted samples/s, samples per server CPU-second and the server's peak RSS.
// Run it alone: go test -run '^$' -bench RemoteWritePeers -benchtime 1x ./ingest/
func BenchmarkRemoteWritePeers(b *testing.B) {
	// 60 rounds of the 100k series (6M samples per server and b.N): long enough that
	// creating the series (the first round) is not most of the run, as in the issue's
	// figures; VIGIL_PEER_ROUNDS changes it.
	rounds := 60
	if v, err := strconv.Atoi(os.Getenv("VIGIL_PEER_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	bodies := peerBodies(b, rounds)
	benchPeers(b, func(b *testing.B, p peerServer, addr string, out *bytes.Buffer) int {
		n, err := sendAll("http://"+addr+"/api/v1/write", bodies, 4)
		if err != nil {
			b.Fatalf("%s: %v\n%s", p.name, err, out.String())
		}
		return n
	})
}

// benchPeers starts each peer server b.N times on a fresh directory, runs load against
// it (which returns the samples it counts as done) and reports samples per second of
// load's run time, samples per server CPU-second over that time, and the peak RSS.
// VIGIL_PEER_ARGS adds flags to vigil serve's command line (e.g. "--partitions 2").
// VIGIL_PEER_CPUPROFILE and VIGIL_PEER_TRACE name files for a CPU profile and an
// execution trace of vigil serve under the load (see saveProfile; VIGIL_PEER_PROFILE_AFTER
// delays them by a duration); VIGIL_PEER_METRICS
// logs the metrics of vigil serve whose lines contain it, after the load.
func benchPeers(b *testing.B, load func(b *testing.B, p peerServer, addr string, out *bytes.Buffer) int) {
	for _, p := range peerServers(b) {
		b.Run(p.name, func(b *testing.B) {
			bin := p.binary(b)
			var total, cpu time.Duration
			var peak, retried int64
			samples := 0
			for i := 0; i < b.N; i++ {
				dir := b.TempDir()
				addr := freeTCPAddr(b)
				args := p.args(b, dir, addr)
				if strings.HasPrefix(p.name, "vigil") {
					args = append(args, strings.Fields(os.Getenv("VIGIL_PEER_ARGS"))...)
				}
				cmd := exec.Command(bin, args...)
				cmd.Dir = dir
				var out bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &out
				if err := cmd.Start(); err != nil {
					b.Fatal(err)
				}
				func() {
					defer func() { cmd.Process.Kill(); cmd.Wait() }()
					waitHTTP(b, addr, &out)
					cpu0 := procCPU(cmd.Process.Pid)
					if p.name == "vigil" {
						go saveProfile(addr, "profile?seconds=5", os.Getenv("VIGIL_PEER_CPUPROFILE"))
						go saveProfile(addr, "trace?seconds=3", os.Getenv("VIGIL_PEER_TRACE"))
					}
					t0 := time.Now()
					retried0 := retriedRequests.Load()
					samples += load(b, p, addr, &out)
					retried += retriedRequests.Load() - retried0
					total += time.Since(t0)
					cpu += procCPU(cmd.Process.Pid) - cpu0
					if strings.HasPrefix(p.name, "vigil") && os.Getenv("VIGIL_PEER_METRICS") != "" {
						printMetrics(b, addr, os.Getenv("VIGIL_PEER_METRICS"))
					}
					if rss := procPeakRSS(cmd.Process.Pid); rss > peak {
						peak = rss
					}
				}()
			}
			b.ReportMetric(float64(samples)/total.Seconds(), "samples/s")
			b.ReportMetric(float64(samples)/cpu.Seconds(), "samples/cpu-s")
			b.ReportMetric(float64(peak)/(1<<20), "peak-rss-MiB")
			b.ReportMetric(float64(retried), "retried-429-503")
		})
	}
}

// peerServer is one server of the side-by-side benchmarks: how to find its binary and
// how to start it on a data directory and a listen address.
type peerServer struct {
	name string
	bin  string // empty: Vigil, built from this tree (or VIGIL_BIN)
	args func(b *testing.B, dir, addr string) []string
}

// peerServers are Vigil (fsync always, then fsync interval), Debian's victoria-metrics
// and Debian's prometheus with its remote-write receiver, in that order.
func peerServers(b *testing.B) []peerServer {
	return []peerServer{
		{"vigil", "", func(b *testing.B, dir, addr string) []string {
			return []string{"serve", "--data-dir", dir, "--listen", addr, "--nats-listen", freeTCPAddr(b), "--fsync", "always", "--log-level", "warn"}
		}},
		// Vigil acknowledging once written and syncing on a timer: the kind of
		// acknowledgement the two peers give (neither syncs before it answers).
		{"vigil-fsync-interval", "", func(b *testing.B, dir, addr string) []string {
			return []string{"serve", "--data-dir", dir, "--listen", addr, "--nats-listen", freeTCPAddr(b), "--fsync", "interval", "--log-level", "warn"}
		}},
		{"victoria-metrics", "/usr/bin/victoria-metrics", func(b *testing.B, dir, addr string) []string {
			return []string{"-storageDataPath=" + dir, "-httpListenAddr=" + addr, "-retentionPeriod=100y", "-loggerLevel=ERROR"}
		}},
		{"prometheus", "/usr/bin/prometheus", func(b *testing.B, dir, addr string) []string {
			cfg := filepath.Join(dir, "prometheus.yml")
			if err := os.WriteFile(cfg, []byte("global: {}\n"), 0o644); err != nil {
				b.Fatal(err)
			}
			return []string{"--config.file=" + cfg, "--storage.tsdb.path=" + filepath.Join(dir, "tsdb"), "--web.listen-address=" + addr, "--web.enable-remote-write-receiver", "--log.level=error"}
		}},
	}
}

// binary is the server's executable: Vigil is built once; a Debian binary that is
// missing fails the benchmark in CI and skips it elsewhere.
func (p peerServer) binary(b *testing.B) string {
	if p.bin == "" {
		return buildVigil(b)
	}
	if _, err := os.Stat(p.bin); err != nil {
		if os.Getenv("CI") == "true" {
			b.Fatalf("%s not found: %v", p.bin, err)
		}
		b.Skipf("%s not found", p.bin)
	}
	return p.bin
}

// peerLabels are the 8 labels of load series id.
func peerLabels(id int) []prompb.Label {
	return []prompb.Label{
		{Name: "__name__", Value: fmt.Sprintf("peer_metric_%d", id%100)}, {Name: "cluster", Value: "prod-eu"},
		{Name: "instance", Value: fmt.Sprintf("10.0.%d.%d:9100", id/1000%256, id%256)}, {Name: "job", Value: "node"},
		{Name: "mode", Value: "idle"}, {Name: "region", Value: "eu-west-1"},
		{Name: "series", Value: strconv.Itoa(id)}, {Name: "zone", Value: "eu-west-1b"},
	}
}

// peerBodies encodes rounds x 100k series as 2,000-sample requests, timestamps one
// second apart per round, ending now (so every peer accepts them in order).
func peerBodies(b *testing.B, rounds int) [][]byte {
	start := time.Now().Add(-time.Duration(rounds) * time.Second).UnixMilli()
	var out [][]byte
	for r := 0; r < rounds; r++ {
		for first := 0; first < 100000; first += 2000 {
			req := &prompb.WriteRequest{}
			for id := first; id < first+2000; id++ {
				req.Timeseries = append(req.Timeseries, prompb.TimeSeries{
					Labels:  peerLabels(id),
					Samples: []prompb.Sample{{Timestamp: start + int64(r)*1000, Value: float64(r*id) * 0.5}},
				})
			}
			raw, err := req.Marshal()
			if err != nil {
				b.Fatal(err)
			}
			out = append(out, snappy.Encode(nil, raw))
		}
	}
	return out
}

// sendAll posts bodies in order with `inflight` concurrent senders, retrying 429/503
// after a short pause, and returns the samples accepted.
func sendAll(url string, bodies [][]byte, inflight int) (int, error) {
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: inflight}}
	for w := 0; w < inflight; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
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
			}
		}()
	}
	wg.Wait()
	return len(bodies) * 2000, firstErr
}

var vigilBin struct {
	once sync.Once
	path string
	err  error
}

func buildVigil(b *testing.B) string {
	vigilBin.once.Do(func() {
		if p := os.Getenv("VIGIL_BIN"); p != "" {
			vigilBin.path = p
			return
		}
		dir, err := os.MkdirTemp("", "vigil-peer-bench")
		if err != nil {
			vigilBin.err = err
			return
		}
		vigilBin.path = filepath.Join(dir, "vigil")
		if out, err := exec.Command("go", "build", "-o", vigilBin.path, "../cmd/vigil").CombinedOutput(); err != nil {
			vigilBin.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if vigilBin.err != nil {
		b.Fatal(vigilBin.err)
	}
	return vigilBin.path
}

func freeTCPAddr(b testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitHTTP waits until something answers HTTP on addr.
func waitHTTP(b *testing.B, addr string, out *bytes.Buffer) {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Fatalf("no HTTP on %s after 60s:\n%s", addr, out.String())
}

// procCPU is a process's user+system CPU time from /proc/<pid>/stat.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// procPeakRSS is a process's peak resident set (VmHWM) in bytes.
func procPeakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// printMetrics logs the lines of vigil serve's /metrics that contain match (after the
// load, when VIGIL_PEER_METRICS is set: "materializer", say).
func printMetrics(b *testing.B, addr, match string) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		b.Logf("metrics: %v", err)
		return
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	for _, line := range strings.Split(buf.String(), "\n") {
		if strings.Contains(line, match) && !strings.HasPrefix(line, "#") {
			b.Log(line)
		}
	}
}

// saveProfile writes what vigil serve's /debug/pprof/<what> answers to path (nothing
// when path is empty): VIGIL_PEER_CPUPROFILE gets 5 s of CPU profile and
// VIGIL_PEER_TRACE 3 s of execution trace (for go tool trace -pprof=sync|syscall|sched),
// taken under the benchmark's load.
func saveProfile(addr, what, path string) {
	if path == "" {
		return
	}
	if d, err := time.ParseDuration(os.Getenv("VIGIL_PEER_PROFILE_AFTER")); err == nil {
		time.Sleep(d) // e.g. 10s: past the materializer's first 5 s of holding back
	}
	resp, err := http.Get("http://" + addr + "/debug/pprof/" + what)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	os.WriteFile(path, buf.Bytes(), 0o644)
}
