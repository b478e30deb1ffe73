package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseErrors(t *testing.T) {
	f := func(doc, wantErr string) {
		t.Helper()
		_, err := Parse([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("Parse(%q): error %v, want one containing %q", doc, err, wantErr)
		}
	}
	f("bogus: 1\n", `line 1: unknown key "bogus" in the top level`)
	f("server:\n  listen: x\n  lisen: y\n", `line 3: unknown key "lisen" in server`)
	f("log:\n  partitions: 0\n", "log.partitions")
	f("log:\n  fsync: sometimes\n", "log.fsync")
	f("log:\n  segment_age: 5 minutes\n", "bad duration")
	f("log:\n  segment_bytes: lots\n", "bad size")
	f("limits:\n  name_validation: ascii\n", "name_validation")
	f("nats:\n  formats: {\"metrics.x\": csv}\n", "csv")
	f("rollups:\n  - name: a\n    match: up\n    interval: 5s\n", "outputs")
	f("rollups:\n  - {name: a, match: up, interval: 5s, outputs: [max]}\n  - {name: a, match: up, interval: 5s, outputs: [max]}\n", "duplicate name")
	f("rollups:\n  - {name: a, match: 'up{', interval: 5s, outputs: [max]}\n", "series selector")
	f("rollups:\n  - {name: a, match: up, interval: 5s, outputs: [maxx]}\n", `unknown output "maxx"`)
	f("rollups:\n  - {name: a, match: up, interval: 5s, outputs: ['quantiles(2)']}\n", "quantile")
	f("server:\n  tls:\n    cert_file: a\n", "together")
	f("log:\n  retention_age: 1h\n", "1.5 x query.block_duration")
}

func TestRollupOutputsFlowSequence(t *testing.T) {
	c, err := Parse([]byte("rollups:\n  - name: a\n    match: up\n    interval: 5s\n    outputs: [rate_sum, quantiles(0.5, 0.99), max]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Rollups[0].Outputs, "|"); got != "rate_sum|quantiles(0.5, 0.99)|max" {
		t.Fatalf("outputs %q", got)
	}
	if c.Rollups[0].IntervalText != "5s" {
		t.Fatalf("interval text %q", c.Rollups[0].IntervalText)
	}
	if _, err := Parse([]byte("rollups:\n  - {name: a, match: up, interval: 5s, outputs: [max], bogus: 1}\n")); err == nil ||
		!strings.Contains(err.Error(), `line 2: unknown key "bogus" in rollups`) {
		t.Fatalf("unknown rollup key: %v", err)
	}
}

func TestParseDefaultsAndValues(t *testing.T) {
	c, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.Listen != "127.0.0.1:9201" || c.NATS.Listen != "127.0.0.1:4222" || c.Log.Partitions != 8 ||
		c.Log.Fsync != "always" || c.DataDir != "./data" {
		t.Fatalf("defaults: %+v", c)
	}
	c, err = Parse([]byte("log:\n  segment_bytes: 1MiB\n  retention_age: 7d\nalerting:\n  route:\n    receiver: x\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Log.SegmentBytes != 1<<20 || c.Log.RetentionAge.D() != 7*24*time.Hour {
		t.Fatalf("values: %+v", c.Log)
	}
	y, err := c.Alerting.YAML()
	if err != nil || !strings.Contains(string(y), "receiver: x") {
		t.Fatalf("alerting yaml %q %v", y, err)
	}
}

func TestExampleConfigLoads(t *testing.T) {
	c, err := Load(filepath.Join("..", "vigil.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Alerting.IsZero() || len(c.Rollups) == 0 {
		t.Fatal("example config should show alerting and rollups")
	}
}

func TestResolveSecret(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	if err := os.WriteFile(p, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VIGIL_TEST_SECRET", "fromenv")
	f := func(inline Secret, file, env, want string, wantErr bool) {
		t.Helper()
		got, err := ResolveSecret(inline, file, env)
		if (err != nil) != wantErr || got != want {
			t.Fatalf("ResolveSecret(%q,%q,%q) = %q, %v", inline, file, env, got, err)
		}
	}
	f("a", "", "", "a", false)
	f("", p, "", "s3cret", false)
	f("", "", "VIGIL_TEST_SECRET", "fromenv", false)
	f("a", p, "", "", true)
	f("", filepath.Join(dir, "missing"), "", "", true)
	f("", "", "VIGIL_TEST_UNSET_VAR", "", true)
	if Secret("x").String() != "<secret>" {
		t.Fatal("secret leaks through String")
	}
}
