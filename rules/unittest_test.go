package rules

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnitTestFiles runs the project's promtool-format unit tests: pass_*.yml must
// pass and fail_*.yml must fail, with promtool's report.
func TestUnitTestFiles(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "unit", "*.yml"))
	if err != nil || len(files) < 4 {
		t.Fatalf("testdata/unit: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := RunUnitTests(&stdout, &stderr, UnitTestOptions{}, f)
			want := 1
			if strings.HasPrefix(filepath.Base(f), "pass_") {
				want = 0
			}
			if code != want {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, want, &stdout, &stderr)
			}
			if !strings.HasPrefix(stdout.String(), "Processing test file: "+f+"\n") {
				t.Errorf("stdout: %q", stdout.String())
			}
			if want == 0 && !strings.Contains(stdout.String(), "  SUCCESS\n") {
				t.Errorf("no SUCCESS in %q", stdout.String())
			}
			if want == 1 && !strings.Contains(stderr.String(), "  FAILED:\n") {
				t.Errorf("no FAILED in %q", stderr.String())
			}
		})
	}
}

func TestUnitTestFailureMessages(t *testing.T) {
	f := func(file, want string) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		RunUnitTests(&stdout, &stderr, UnitTestOptions{}, filepath.Join("testdata", "unit", file))
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("%s: stderr lacks %q:\n%s", file, want, &stderr)
		}
	}
	f("fail_wrong_expectation.yml", "alertname: InstanceDown, time: 1m, \n        exp:[")
	f("fail_wrong_sample.yml", `expr: "job:http_requests:rate5m", time: 10m,`)
	f("fail_duplicate_labelset.yml", "rule: ByJobOnly, time: 0s, err: vector contains metrics with the same labelset after applying alert labels")
	f("fail_unknown_field.yml", "field value not found")
}

func TestUnitTestRunFilterAndJUnit(t *testing.T) {
	var stdout, stderr, junit bytes.Buffer
	file := filepath.Join("testdata", "unit", "pass_service.yml")
	code := RunUnitTests(&stdout, &stderr, UnitTestOptions{Run: []string{"^keep firing"}, JUnit: &junit}, file)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, &stderr)
	}
	x := junit.String()
	if !strings.Contains(x, `<testcase name="keep firing for">`) || strings.Contains(x, "error ratio") {
		t.Errorf("junit: %s", x)
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatal(err)
	}
}

func TestCheckRuleFiles(t *testing.T) {
	f := func(lint string, fatal bool, want int, files ...string) {
		t.Helper()
		var paths []string
		for _, fn := range files {
			paths = append(paths, filepath.Join("testdata", "check", fn))
		}
		var stdout, stderr bytes.Buffer
		if got := CheckRuleFiles(&stdout, &stderr, CheckOptions{Lint: lint, LintFatal: fatal}, paths...); got != want {
			t.Errorf("%v lint=%q fatal=%v: exit %d, want %d\n%s%s", files, lint, fatal, got, want, &stdout, &stderr)
		}
	}
	f("duplicate-rules", false, 0, "good.yml")
	f("duplicate-rules", false, 1, "bad_expr.yml")
	f("duplicate-rules", false, 1, "bad_template.yml")
	f("duplicate-rules", false, 1, "duplicate_group.yml")
	f("duplicate-rules", false, 1, "unknown_field.yml")
	f("duplicate-rules", false, 0, "duplicate_rules.yml")
	f("duplicate-rules", true, 3, "duplicate_rules.yml")
	f("none", true, 0, "duplicate_rules.yml")
	f("all", true, 3, "duplicate_rules.yml")
	f("duplicate-rules", true, 1, "duplicate_rules.yml", "bad_expr.yml")
	f("duplicate-rules", false, 0, "good.yml", "utf8_record_name.yml")

	var stdout, stderr bytes.Buffer
	code := CheckRuleFiles(&stdout, &stderr, CheckOptions{Stdin: strings.NewReader("groups: []\n")})
	if code != 0 || stdout.String() != "Checking standard input\n  SUCCESS: 0 rules found\n\n" {
		t.Errorf("stdin: %d %q %q", code, stdout.String(), stderr.String())
	}
}
