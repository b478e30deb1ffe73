package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
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
	for _, c := range cases {
		want := runPromtool(t, promtool, c.args)
		// promtool check rules F... is vigil rules check F...
		got := runVigilRules(append([]string{c.args[0]}, c.args[2:]...))
		if got.code != want.code {
			t.Errorf("%v: exit code %d, promtool %d\nvigil stderr:\n%s\npromtool stderr:\n%s", c.args, got.code, want.code, got.stderr, want.stderr)
			continue
		}
		if c.sameStdout && got.stdout != want.stdout {
			t.Errorf("%v: stdout differs\nvigil:\n%s\npromtool:\n%s", c.args, got.stdout, want.stdout)
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
