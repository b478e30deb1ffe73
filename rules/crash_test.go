package rules

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vigilhq/vigil/alerting"
	"github.com/vigilhq/vigil/logcore"
)

// The crash scenario: one alerting rule with for: 5m over a metric that is high all
// along, evaluated at its 1m slots from crashBase. The child process evaluates the
// first slots with its state in the log, then is killed with SIGKILL; the test goes
// on from the log in a new manager.
const crashRules = `
groups:
  - name: crash
    interval: 1m
    rules:
      - alert: High
        expr: vigil_test_value > 10
        for: 5m
        annotations:
          summary: 'value {{ $value }}'
`

const crashChildEnv = "VIGIL_RULES_CRASH_CHILD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		steps, _ := strconv.Atoi(os.Getenv(crashChildEnv + "_STEPS"))
		if err := crashChild(dir, steps, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "crash child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashSetup opens a store with the scenario's samples and a manager over it with the
// rule file of dir, its state in l (nil: none), reporting notifications to notify.
func crashSetup(dir, storeDir string, l logcore.Log, notify func(context.Context, []alerting.Alert)) (*Manager, *Group, time.Time, func(), error) {
	st, err := openTestStore(storeDir)
	if err != nil {
		return nil, nil, time.Time{}, nil, err
	}
	m, err := NewManager(Options{Queryable: st.db, Engine: st.engine, Appendable: st.db, Log: l, Notify: notify,
		ResendDelay: time.Hour, Metrics: metrics.NewSet()})
	if err != nil {
		st.db.Close()
		return nil, nil, time.Time{}, nil, err
	}
	if err := m.Update([]string{filepath.Join(dir, "crash.yml")}); err != nil {
		st.db.Close()
		return nil, nil, time.Time{}, nil, err
	}
	g := m.Groups()[0]
	base := g.slotAtOrAfter(time.Unix(1_700_000_000, 0))
	for ts := base.Add(-10 * time.Minute); ts.Before(base.Add(30 * time.Minute)); ts = ts.Add(15 * time.Second) {
		if err := st.addErr(ts, 20, "__name__", "vigil_test_value"); err != nil {
			st.db.Close()
			return nil, nil, time.Time{}, nil, err
		}
	}
	return m, g, base, func() { st.db.Close() }, nil
}

// crashChild evaluates the first steps slots with state in the log in dir, prints one
// line per notification and "READY", and waits to be killed.
func crashChild(dir string, steps int, out io.Writer) error {
	l, err := logcore.Open(filepath.Join(dir, "log"), logcore.Options{Fsync: logcore.FsyncAlways})
	if err != nil {
		return err
	}
	notify := func(_ context.Context, as []alerting.Alert) {
		for _, a := range as {
			fmt.Fprintf(out, "NOTIFY %s %d %d\n", a.Labels.Get("alertname"), a.StartsAt.Unix(), a.EndsAt.Unix())
		}
	}
	m, g, base, _, err := crashSetup(dir, filepath.Join(dir, "child-store"), l, notify)
	if err != nil {
		return err
	}
	for s := range steps {
		g.Eval(context.Background(), m.env, base.Add(time.Duration(s)*time.Minute))
	}
	fmt.Fprintln(out, "READY")
	select {} // until SIGKILL
}

// runAndKill runs the child for steps slots, kills it with SIGKILL once it is ready,
// and returns its notification lines.
func runAndKill(t *testing.T, dir string, steps int) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashChildEnv+"_STEPS="+strconv.Itoa(steps))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(stdout)
	ready := false
	for sc.Scan() {
		if sc.Text() == "READY" {
			ready = true
			break
		}
		lines = append(lines, sc.Text())
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if !ready {
		t.Fatalf("child exited before it was ready; output %q", lines)
	}
	return lines
}

// evalFrom evaluates slots from..to-1 and returns the slot at which the alert fired
// (zero if it did not) and the notifications made.
func evalFrom(t *testing.T, dir string, l logcore.Log, from, to int) (time.Time, []alerting.Alert, time.Time) {
	t.Helper()
	n := newNotifications()
	m, g, base, closeStore, err := crashSetup(dir, t.TempDir(), l, n.notify)
	if err != nil {
		t.Fatal(err)
	}
	defer closeStore()
	var fired time.Time
	for s := from; s < to; s++ {
		ts := base.Add(time.Duration(s) * time.Minute)
		g.Eval(context.Background(), m.env, ts)
		if fired.IsZero() && g.Rules()[0].(*AlertingRule).State() == StateFiring {
			fired = ts
		}
	}
	return fired, n.all(), base
}

// reference evaluates the scenario without a crash (and without a log): the alert
// fires 5m after the first slot and is sent once. The slots depend on the rule file's
// path, so each scenario has its own reference.
func reference(t *testing.T, dir string) (time.Time, []alerting.Alert, time.Time) {
	t.Helper()
	refFired, refNotes, base := evalFrom(t, dir, nil, 0, 10)
	if want := base.Add(5 * time.Minute); !refFired.Equal(want) || len(refNotes) != 1 {
		t.Fatalf("reference run fired at %v (want %v) with %d notifications", refFired, want, len(refNotes))
	}
	return refFired, refNotes, base
}

func TestAlertStateSurvivesKill9(t *testing.T) {

	t.Run("killed while pending", func(t *testing.T) {
		d := t.TempDir()
		writeFile(t, d, "crash.yml", crashRules)
		refFired, refNotes, _ := reference(t, d)
		if lines := runAndKill(t, d, 3); len(lines) != 0 {
			t.Fatalf("child notified while pending: %q", lines)
		}
		l, err := logcore.Open(filepath.Join(d, "log"), logcore.Options{Fsync: logcore.FsyncAlways})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		fired, notes, _ := evalFrom(t, d, l, 3, 10)
		if !fired.Equal(refFired) {
			t.Errorf("after kill -9 the alert fired at %v, without the kill at %v", fired, refFired)
		}
		if len(notes) != 1 || !notes[0].StartsAt.Equal(refNotes[0].StartsAt) {
			t.Errorf("notifications %+v, want one starting at %v", notes, refNotes[0].StartsAt)
		}
	})

	t.Run("killed while firing", func(t *testing.T) {
		d := t.TempDir()
		writeFile(t, d, "crash.yml", crashRules)
		_, refNotes, base := reference(t, d)
		lines := runAndKill(t, d, 7)
		want := fmt.Sprintf("NOTIFY High %d %d", refNotes[0].StartsAt.Unix(), time.Time{}.Unix())
		if len(lines) != 1 || lines[0] != want {
			t.Fatalf("child notifications %q, want [%q]", lines, want)
		}
		l, err := logcore.Open(filepath.Join(d, "log"), logcore.Options{Fsync: logcore.FsyncAlways})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		fired, notes, _ := evalFrom(t, d, l, 7, 10)
		if !fired.Equal(base.Add(7 * time.Minute)) {
			t.Errorf("not firing at the first slot after the restart (%v)", fired)
		}
		if len(notes) != 0 {
			t.Errorf("a firing alert was sent again after the restart: %+v", notes)
		}
		// Its FiredAt (StartsAt of later sends) is the original one.
		var firedAt []string
		for _, r := range mustGroups(t, d, l) {
			for _, a := range r.ActiveAlerts() {
				firedAt = append(firedAt, a.FiredAt.String())
			}
		}
		if strings.Join(firedAt, ",") != refNotes[0].StartsAt.String() {
			t.Errorf("restored FiredAt %v, want %v", firedAt, refNotes[0].StartsAt)
		}
	})
}

// mustGroups loads the crash rules with state from l (as a restart would) and returns
// the alerting rules.
func mustGroups(t *testing.T, dir string, l logcore.Log) []*AlertingRule {
	t.Helper()
	m, g, _, closeStore, err := crashSetup(dir, t.TempDir(), l, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeStore()
	_ = m
	return []*AlertingRule{g.Rules()[0].(*AlertingRule)}
}
