package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// vigilBinary builds the vigil binary once per test run, or uses $VIGIL_BIN.
var vigilBinary = sync.OnceValues(func() (string, error) {
	if p := os.Getenv("VIGIL_BIN"); p != "" {
		return p, nil
	}
	dir, err := os.MkdirTemp("", "vigil-bin")
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "vigil")
	out, err := exec.Command("go", "build", "-o", p, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return p, nil
})

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// vigilProc is a running `vigil serve` child process.
type vigilProc struct {
	cmd    *exec.Cmd
	addr   string
	stderr *lockedBuffer
	done   chan error
	token  string // bearer token get sends, for a vigil with server.auth
	scheme string // http, or https for a vigil with server.tls
	client *http.Client
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startVigil runs `vigil serve` on free ports with a fresh data dir and waits until it
// is ready.
func startVigil(t *testing.T, dataDir string, extra ...string) *vigilProc {
	t.Helper()
	return startVigilWith(t, dataDir, "http", http.DefaultClient, extra...)
}

// startVigilWith is startVigil for a server reached with scheme through client (https
// and a client trusting its certificate, for a vigil with server.tls).
func startVigilWith(t *testing.T, dataDir, scheme string, client *http.Client, extra ...string) *vigilProc {
	t.Helper()
	bin, err := vigilBinary()
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	args := append([]string{"serve", "--data-dir", dataDir, "--listen", addr, "--nats-listen", freeAddr(t)}, extra...)
	p := &vigilProc{cmd: exec.Command(bin, args...), addr: addr, stderr: &lockedBuffer{}, done: make(chan error, 1), scheme: scheme, client: client}
	p.cmd.Stderr = p.stderr
	p.cmd.Dir = dataDir
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("vigil stderr:\n%s", p.stderr.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-p.done:
			t.Fatalf("vigil exited before ready: %v\n%s", err, p.stderr.String())
		default:
		}
		resp, err := client.Get(scheme + "://" + addr + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("vigil not ready after 60s:\n%s", p.stderr.String())
	return nil
}

func (p *vigilProc) get(t *testing.T, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", p.scheme+"://"+p.addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.token != "" {
		req.Header.Set("Authorization", "Bearer "+p.token)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServeEndpointsAndCleanShutdown(t *testing.T) {
	p := startVigil(t, t.TempDir())
	if code, body := p.get(t, "/-/healthy"); code != 200 || !strings.Contains(body, "Healthy") {
		t.Fatalf("/-/healthy: %d %q", code, body)
	}
	code, body := p.get(t, "/api/v1/status/log")
	if code != 200 {
		t.Fatalf("/api/v1/status/log: %d %s", code, body)
	}
	var st struct {
		Topics []struct {
			Name       string `json:"name"`
			Partitions []struct {
				ID          *int   `json:"id"`
				StartOffset *int64 `json:"start_offset"`
				EndOffset   *int64 `json:"end_offset"`
				Bytes       *int64 `json:"bytes"`
			} `json:"partitions"`
		} `json:"topics"`
		Consumers []json.RawMessage `json:"consumers"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("status JSON %s: %v", body, err)
	}
	found := false
	for _, tp := range st.Topics {
		if tp.Name == "samples" {
			found = true
			if len(tp.Partitions) != 8 {
				t.Fatalf("samples has %d partitions, want the default 8", len(tp.Partitions))
			}
			for _, pt := range tp.Partitions {
				if pt.ID == nil || pt.StartOffset == nil || pt.EndOffset == nil || pt.Bytes == nil {
					t.Fatalf("partition misses a field: %s", body)
				}
			}
		}
	}
	if !found || st.Consumers == nil {
		t.Fatalf("status lacks the samples topic or the consumers list: %s", body)
	}
	if code, body := p.get(t, "/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Fatalf("/debug/pprof/: %d %.200q", code, body)
	}
	code, body = p.get(t, "/metrics")
	if code != 200 || !strings.Contains(body, "vigil_log_appended_bytes_total") {
		t.Fatalf("/metrics: %d, lacks vigil_log_appended_bytes_total:\n%.2000s", code, body)
	}

	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err // give it back: the cleanup waits on done too
		if err != nil {
			t.Fatalf("vigil exited with %v after SIGTERM:\n%s", err, p.stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("vigil did not stop within 10s of SIGTERM")
	}
	t.Logf("clean shutdown took %v", time.Since(start))
}

func TestServePortInUse(t *testing.T) {
	bin, err := vigilBinary()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().String()
	_, port, _ := net.SplitHostPort(busy)
	f := func(flagName string, args ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append([]string{"serve", "--data-dir", t.TempDir()}, args...)...)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("serve %v succeeded with a busy port", args)
		}
		if !strings.Contains(string(out), port) || !strings.Contains(string(out), flagName) {
			t.Fatalf("error should name port %s and %s:\n%s", port, flagName, out)
		}
	}
	f("--listen", "--listen", busy, "--nats-listen", freeAddr(t))
	f("--nats-listen", "--listen", freeAddr(t), "--nats-listen", busy)
}

func TestCommandLine(t *testing.T) {
	f := func(args []string, wantCode int, wantOut string) {
		t.Helper()
		var out, errOut strings.Builder
		code := run(args, &out, &errOut)
		if code != wantCode || !strings.Contains(out.String()+errOut.String(), wantOut) {
			t.Fatalf("vigil %v: code %d, output %q%q; want %d and %q", args, code, out.String(), errOut.String(), wantCode, wantOut)
		}
	}
	f([]string{"version"}, 0, "vigil ")
	f(nil, 2, "Usage")
	f([]string{"bogus"}, 2, `unknown command "bogus"`)
	f([]string{"serve", "--help"}, 0, "--nats-url")
	f([]string{"serve", "--fsync", "sometimes"}, 2, "log.fsync")
	f([]string{"serve", "--config", "/nonexistent/vigil.yaml"}, 2, "read config")
	cfg := filepath.Join(t.TempDir(), "vigil.yaml")
	if err := os.WriteFile(cfg, []byte("server:\n  listen: 127.0.0.1:0\n  lisen: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f([]string{"serve", "--config", cfg}, 2, `line 3: unknown key "lisen" in server`)
}

// TestReadyLogLine checks the log line that says where Vigil listens.
func TestReadyLogLine(t *testing.T) {
	p := startVigil(t, t.TempDir(), "--partitions", "3")
	sc := bufio.NewScanner(strings.NewReader(p.stderr.String()))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "vigil is ready") && strings.Contains(sc.Text(), "partitions=3") {
			return
		}
	}
	t.Fatalf("no ready line with partitions=3:\n%s", p.stderr.String())
}

// TestServeAuthGuardsEveryEndpoint checks that server.auth protects the whole API
// (queries, status, metrics, writes), not only remote-write, while the health and
// readiness probes stay open, and that the token never appears in the log.
func TestServeAuthGuardsEveryEndpoint(t *testing.T) {
	dir := t.TempDir()
	const token = "s3cret-token-for-test"
	cfg := filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(cfg, []byte("server:\n  auth:\n    bearer_token_env: VIGIL_TEST_TOKEN\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VIGIL_TEST_TOKEN", token)
	p := startVigil(t, dir, "--config", cfg)
	do := func(path, tok string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+p.addr+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, path := range []string{"/api/v1/status/log", "/metrics", "/api/v1/query?query=1", "/api/v1/labels"} {
		if code := do(path, ""); code != http.StatusUnauthorized {
			t.Errorf("GET %s without a token: %d, want 401", path, code)
		}
		if code := do(path, "wrong"); code != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong token: %d, want 401", path, code)
		}
		if code := do(path, token); code != http.StatusOK {
			t.Errorf("GET %s with the token: %d, want 200", path, code)
		}
	}
	for _, path := range []string{"/-/healthy", "/-/ready"} {
		if code := do(path, ""); code != http.StatusOK {
			t.Errorf("GET %s without a token: %d, want 200", path, code)
		}
	}
	if strings.Contains(p.stderr.String(), token) {
		t.Fatalf("the token appears in the log:\n%s", p.stderr.String())
	}
}

func TestSetProcs(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(before)
	logger := slog.New(slog.DiscardHandler)
	t.Setenv("GOMAXPROCS", "")
	os.Unsetenv("GOMAXPROCS")
	setProcs("interval", logger)
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Fatalf("fsync interval: GOMAXPROCS %d, want %d unchanged", got, before)
	}
	setProcs("always", logger)
	if got := runtime.GOMAXPROCS(0); got != 2*before {
		t.Fatalf("fsync always: GOMAXPROCS %d, want %d", got, 2*before)
	}
	runtime.GOMAXPROCS(before)
	t.Setenv("GOMAXPROCS", "3")
	setProcs("always", logger)
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Fatalf("with GOMAXPROCS set in the environment: %d, want %d unchanged", got, before)
	}
}
