package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// promtoolPath returns the reference promtool ($PROMTOOL, else ../../bin/promtool). When
// it is absent the test skips, unless CI=true, where that is a failure.
func promtoolPath(t *testing.T) string {
	t.Helper()
	p := os.Getenv("PROMTOOL")
	if p == "" {
		p, _ = filepath.Abs(filepath.Join("..", "..", "bin", "promtool"))
	}
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("reference promtool not found at %s (run scripts/test-deps.sh): %v", p, err)
		}
		t.Skipf("reference promtool not found at %s; run scripts/test-deps.sh", p)
	}
	return p
}

type toolResult struct {
	code   int
	stdout string
	stderr string
}

func runPromtool(t *testing.T, promtool string, args []string) toolResult {
	t.Helper()
	cmd := exec.Command(promtool, args...)
	cmd.Stdin = strings.NewReader("")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("run promtool %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return toolResult{code, stdout.String(), stderr.String()}
}

func runVigilRules(args []string) toolResult {
	var stdout, stderr bytes.Buffer
	code := run(append([]string{"rules"}, args...), &stdout, &stderr)
	return toolResult{code, stdout.String(), stderr.String()}
}

// diffCase is one command line given to both tools.
type diffCase struct {
	args []string
	// sameStdout also requires the same standard output (progress lines and counts).
	sameStdout bool
}

// compareWithPromtool runs each case under promtool and vigil and requires the same
// exit code (and, where asked, the same stdout).
func compareWithPromtool(t *testing.T, promtool string, cases []diffCase) {
	t.Helper()
	want := make([]toolResult, len(cases))
	for i, c := range cases {
		want[i] = runPromtool(t, promtool, c.args)
	}
	for i, c := range cases {
		// promtool check rules F... is vigil rules check F...
		got := runVigilRules(append([]string{c.args[0]}, c.args[2:]...))
		if got.code != want[i].code {
			t.Errorf("%v: exit code %d, promtool %d\nvigil stderr:\n%s\npromtool stderr:\n%s", c.args, got.code, want[i].code, got.stderr, want[i].stderr)
			continue
		}
		if c.sameStdout && got.stdout != want[i].stdout {
			t.Errorf("%v: stdout differs\nvigil:\n%s\npromtool:\n%s", c.args, got.stdout, want[i].stdout)
		}
	}
}

func ymlFiles(t *testing.T, dir string, recursive bool) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != dir && !recursive {
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".yml") || strings.HasSuffix(p, ".yaml")) {
			abs, err := filepath.Abs(p)
			if err != nil {
				return err
			}
			files = append(files, abs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	return files
}

// corpusDir returns ../shared/corpus/<sub> beside the project, or "" when absent.
func corpusDir(sub string) string {
	d := filepath.Join("..", "..", "..", "shared", "corpus", sub)
	if _, err := os.Stat(d); err != nil {
		return ""
	}
	return d
}

// TestRulesAgainstPromtoolProjectFiles runs the project's own rule files and unit tests
// (passing and failing ones) through both tools.
func TestRulesAgainstPromtoolProjectFiles(t *testing.T) {
	promtool := promtoolPath(t)
	td := filepath.Join("..", "..", "rules", "testdata")
	var cases []diffCase
	var passing, failing int
	for _, f := range ymlFiles(t, filepath.Join(td, "unit"), false) {
		cases = append(cases, diffCase{args: []string{"test", "rules", f}, sameStdout: true})
		if strings.HasPrefix(filepath.Base(f), "pass_") {
			passing++
		} else {
			failing++
		}
	}
	checkFiles := append(ymlFiles(t, filepath.Join(td, "check"), false), ymlFiles(t, filepath.Join(td, "rules"), false)...)
	for _, f := range checkFiles {
		cases = append(cases,
			diffCase{args: []string{"check", "rules", f}, sameStdout: true},
			diffCase{args: []string{"check", "rules", "--lint-fatal", f}},
			diffCase{args: []string{"check", "rules", "--lint=none", f}},
		)
	}
	cases = append(cases, diffCase{args: append([]string{"check", "rules"}, checkFiles...)})
	if passing == 0 || failing == 0 || len(checkFiles) < 5 {
		t.Fatalf("testdata incomplete: %d passing and %d failing unit tests, %d rule files", passing, failing, len(checkFiles))
	}
	compareWithPromtool(t, promtool, cases)

	// The verdicts the file names promise.
	for _, f := range ymlFiles(t, filepath.Join(td, "unit"), false) {
		want := 1
		if strings.HasPrefix(filepath.Base(f), "pass_") {
			want = 0
		}
		if got := runVigilRules([]string{"test", f}); got.code != want {
			t.Errorf("vigil rules test %s: exit %d, want %d\n%s", f, got.code, want, got.stderr)
		}
	}
}

// TestRulesAgainstPromtoolCorpus gives every file of promtool's own test data to both
// `check rules` and `test rules`, with the flag combinations promtool's tests use, and
// every real-world rule file to `check rules`.
func TestRulesAgainstPromtoolCorpus(t *testing.T) {
	promtool := promtoolPath(t)
	ran := false
	if dir := corpusDir("promtool-testdata"); dir != "" {
		ran = true
		var cases []diffCase
		for _, f := range ymlFiles(t, dir, false) {
			cases = append(cases,
				diffCase{args: []string{"check", "rules", f}, sameStdout: true},
				diffCase{args: []string{"test", "rules", f}, sameStdout: true},
			)
		}
		abs := func(name string) string { p, _ := filepath.Abs(filepath.Join(dir, name)); return p }
		cases = append(cases,
			diffCase{args: []string{"test", "rules", "--run", "correct", abs("rules_run.yml")}},
			diffCase{args: []string{"test", "rules", "--run", "wrong", abs("rules_run.yml")}},
			diffCase{args: []string{"test", "rules", "--run", "correct", "--run", "wrong", abs("rules_run.yml")}},
			diffCase{args: []string{"test", "rules", "--ignore-unknown-fields", abs("rules_run_extrafields.yml")}},
			diffCase{args: []string{"test", "rules", "--run", "correct", abs("rules_run_fuzzy.yml")}},
			diffCase{args: []string{"test", "rules", "--run", "wrong", abs("rules_run_fuzzy.yml")}},
			diffCase{args: []string{"test", "rules", abs("rules_run_no_fuzzy.yml")}},
			diffCase{args: []string{"check", "rules", "--lint-fatal", abs("rules_duplicates.yml")}},
			diffCase{args: []string{"check", "rules", "--lint=none", "--lint-fatal", abs("rules_duplicates.yml")}},
			diffCase{args: []string{"check", "rules", "--ignore-unknown-fields", abs("rules_extrafields.yml")}},
			diffCase{args: []string{"check", "rules", abs("rules.yml"), abs("rules-bad.yml")}},
			diffCase{args: []string{"test", "rules", abs("unittest.yml"), abs("failing.yml")}},
			diffCase{args: []string{"test", "rules", abs("does-not-exist.yml")}},
		)
		compareWithPromtool(t, promtool, cases)
	}
	if dir := corpusDir(filepath.Join("rules", "awesome-prometheus-alerts")); dir != "" {
		ran = true
		var cases []diffCase
		for _, f := range ymlFiles(t, dir, true) {
			cases = append(cases, diffCase{args: []string{"check", "rules", f}, sameStdout: true})
		}
		if len(cases) < 100 {
			t.Errorf("only %d rule files in %s", len(cases), dir)
		}
		compareWithPromtool(t, promtool, cases)
	}
	if !ran {
		// The corpus is not part of the repository: it is checked whenever it is beside it.
		t.Skip("../shared/corpus is absent beside the project")
	}
}

// rulesRemoteWrite sends one sample over remote-write 1.0.
func rulesRemoteWrite(t *testing.T, addr, name string, v float64, ts time.Time) {
	t.Helper()
	req := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: name}, {Name: "job", Value: "e2e"}},
		Samples: []prompb.Sample{{Value: v, Timestamp: ts.UnixMilli()}},
	}}}
	b, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	hreq, _ := http.NewRequest("POST", "http://"+addr+"/api/v1/write", bytes.NewReader(snappy.Encode(nil, b)))
	hreq.Header.Set("Content-Type", "application/x-protobuf")
	hreq.Header.Set("Content-Encoding", "snappy")
	hreq.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("remote write: %d %s", resp.StatusCode, body)
	}
}

type apiAlerts struct {
	Status string `json:"status"`
	Data   struct {
		Alerts []struct {
			Labels   map[string]string `json:"labels"`
			State    string            `json:"state"`
			ActiveAt string            `json:"activeAt"`
			Value    string            `json:"value"`
		} `json:"alerts"`
	} `json:"data"`
}

func (p *vigilProc) alerts(t *testing.T) apiAlerts {
	t.Helper()
	code, body := p.get(t, "/api/v1/alerts")
	var a apiAlerts
	if code != 200 || json.Unmarshal([]byte(body), &a) != nil || a.Status != "success" {
		t.Fatalf("/api/v1/alerts: %d %s", code, body)
	}
	return a
}

func waitRules(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServeRules runs `vigil serve` with a rule file: a remote-written sample fires an
// alert on arrival (the group's interval is an hour), a broken rule file on reload
// keeps the old rules and is reported, and after kill -9 the alert is still firing
// with the same activeAt.
func TestServeRules(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "rules"), 0o755); err != nil {
		t.Fatal(err)
	}
	ruleFile := filepath.Join(dir, "rules", "e2e.yml")
	good := "groups:\n  - name: e2e\n    interval: 1h\n    rules:\n      - alert: E2EHigh\n        expr: vigil_e2e_value > 10\n        annotations:\n          summary: 'value {{ $value }}'\n"
	if err := os.WriteFile(ruleFile, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(cfg, []byte("rule_files: [rules/*.yml]\nrules:\n  on_arrival: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(dir, "data")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := startVigil(t, dataDir, "--config", cfg)

	rulesRemoteWrite(t, p.addr, "vigil_e2e_value", 20, time.Now())
	waitRules(t, "E2EHigh firing", func() bool {
		a := p.alerts(t)
		return len(a.Data.Alerts) == 1 && a.Data.Alerts[0].State == "firing"
	})
	before := p.alerts(t).Data.Alerts[0]
	if before.Labels["alertname"] != "E2EHigh" || before.Value != "2e+01" {
		t.Errorf("alert %+v", before)
	}

	if err := os.WriteFile(ruleFile, []byte("groups:\n  - name: e2e\n    rules:\n      - alert: X\n        expr: sum(\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post("http://"+p.addr+"/-/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == 200 {
		t.Errorf("reload of a broken rule file answered 200")
	}
	if code, body := p.get(t, "/api/v1/rules"); code != 200 || !strings.Contains(body, `"name":"E2EHigh"`) || !strings.Contains(body, `"health":"ok"`) {
		t.Errorf("/api/v1/rules after a failed reload: %d %s", code, body)
	}
	if code, body := p.get(t, "/api/v1/status/rules"); code != 200 || !strings.Contains(body, `"lastReloadSuccess":false`) || !strings.Contains(body, "e2e.yml") {
		t.Errorf("/api/v1/status/rules: %d %s", code, body)
	}
	if _, body := p.get(t, "/metrics"); !strings.Contains(body, `vigil_rule_reloads_total{result="failure"} 1`) || !strings.Contains(body, "vigil_rule_evaluations_total") {
		t.Errorf("/metrics lacks the rule metrics")
	}

	// kill -9, restart: the alert is restored from the alert_state topic.
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	p.done <- nil // for the first process's cleanup
	if err := os.WriteFile(ruleFile, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	p2 := startVigil(t, dataDir, "--config", cfg)
	after := p2.alerts(t).Data.Alerts
	if len(after) != 1 || after[0].State != "firing" || after[0].ActiveAt != before.ActiveAt {
		t.Errorf("after kill -9: %+v, before %+v", after, before)
	}
}

// TestServeRulesOnRollupWindow checks that a group reading a rollup's output is
// evaluated as soon as a window closes: its interval is an hour, yet the alert fires.
func TestServeRulesOnRollupWindow(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "r.yml"), []byte(`groups:
  - name: on-rollup
    interval: 1h
    rules:
      - alert: RollupMaxHigh
        expr: e2e_rule_requests_total:1s_by_job_max > 10
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(cfg, []byte(`rule_files: [r.yml]
rollups:
  - name: e2e_rule_1s
    match: '{__name__="e2e_rule_requests_total"}'
    interval: 1s
    by: [job]
    outputs: [max]
    lateness: 0s
`), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startVigil(t, dir, "--config", cfg)
	now := time.Now()
	for i := 0; i < 3; i++ {
		rulesRemoteWrite(t, p.addr, "e2e_rule_requests_total", float64(10+i), now.Add(time.Duration(i)*time.Millisecond))
	}
	waitRules(t, "RollupMaxHigh firing", func() bool {
		a := p.alerts(t)
		return len(a.Data.Alerts) == 1 && a.Data.Alerts[0].State == "firing" && a.Data.Alerts[0].Value == "1.2e+01"
	})
}
