package rollup

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/logcore"
)

const crashChildEnv = "VIGIL_ROLLUP_CRASH_CHILD_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir) // never returns normally: the parent kills it
		os.Exit(3)
	}
	os.Exit(m.Run())
}

var crashRollups = []config.RollupConfig{
	rc("req_5s", `{__name__="req_total"}`, "5s", "2s", []string{"service"}, nil, "total", "increase", "rate_sum", "count_series"),
	rc("lat_5s", `{__name__="lat_seconds"}`, "5s", "2s", nil, []string{"instance"}, "sum_samples", "stddev", "quantiles(0.5, 0.99)", "histogram_bucket", "last"),
	rc("all_15s", `{__name__=~".+"}`, "15s", "2s", nil, nil, "count_samples", "max"),
}

// crashChild runs the engine over dir's log until it is killed.
func crashChild(dir string) {
	l, err := logcore.Open(filepath.Join(dir, "log"), logcore.Options{Fsync: logcore.FsyncAlways})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: open log:", err)
		os.Exit(2)
	}
	s, err1 := l.Topic("samples", logcore.TopicConfig{Partitions: 3})
	r, err2 := l.Topic("rollups", logcore.TopicConfig{Partitions: 1})
	if err1 != nil || err2 != nil {
		fmt.Fprintln(os.Stderr, "child: topics:", err1, err2)
		os.Exit(2)
	}
	e, err := New(Options{Rollups: crashRollups, Log: l, Samples: s, Results: r, CheckpointDir: filepath.Join(dir, "ckpt"),
		CheckpointInterval: 15 * time.Millisecond, IdleInterval: 20 * time.Millisecond,
		OnResult: func(*Result) { os.Stdout.WriteString("window\n") }}) // progress for the parent
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: New:", err)
		os.Exit(2)
	}
	if err := e.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "child: Run:", err)
		os.Exit(2)
	}
}

// genLongInput is a long, in-order-within-lateness input for the crash test.
func genLongInput(rng *rand.Rand) ([]inSeries, [][]inSample) {
	base := int64(1_700_000_000_000)
	var series []inSeries
	perPart := make([][]inSample, 3)
	for i := 0; i < 24; i++ {
		name := "lat_seconds"
		if i%2 == 0 {
			name = "req_total"
		}
		series = append(series, inSeries{labels: labels.FromStrings("__name__", name, "service", fmt.Sprint("s", i%4), "instance", fmt.Sprint("i", i)), part: i % 3})
	}
	vals := make([]float64, len(series))
	for t := base; t < base+1500_000; t += 1000 {
		for sid := range series {
			if rng.IntN(4) == 0 {
				continue
			}
			if sid%2 == 0 {
				vals[sid] += float64(rng.IntN(10))
				if rng.IntN(100) == 0 {
					vals[sid] = 0
				}
			} else {
				vals[sid] = rng.NormFloat64()*5 + 20
			}
			ts := t + rng.Int64N(1000)
			perPart[series[sid].part] = append(perPart[series[sid].part], inSample{series: sid, t: ts, v: vals[sid]})
		}
	}
	return series, perPart
}

func resultsByWindow(t *testing.T, rs []*Result) map[string]*Result {
	t.Helper()
	m := map[string]*Result{}
	for _, r := range rs {
		k := fmt.Sprintf("%s/%d", r.Rollup, r.End)
		if _, dup := m[k]; dup {
			t.Errorf("window %s emitted twice", k)
		}
		m[k] = r
	}
	return m
}

// TestCrashRecovery kills a child process running the engine at random points, a dozen
// times, then finishes the run; the rollups topic must hold every window exactly once
// with bit-identical values to a run that never crashed.
func TestCrashRecovery(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	series, perPart := genLongInput(rng)

	// The run without crashes.
	refDir := t.TempDir()
	ref := openTestLog(t, filepath.Join(refDir, "log"), 3, logcore.FsyncNever)
	ref.writeInput(t, series, perPart, 8)
	col := newCollector()
	_, stop := startEngine(t, ref, crashRollups, filepath.Join(refDir, "ckpt"), func(o *Options) { o.OnResult = col.onResult })
	waitQuiet(t, ref.results)
	stop()
	want := resultsByWindow(t, readResults(t, ref.results))
	ref.log.Close()
	if len(want) < 300 {
		t.Fatalf("reference run emitted only %d windows", len(want))
	}

	// The same input, with kill -9 at random points.
	dir := t.TempDir()
	tl := openTestLog(t, filepath.Join(dir, "log"), 3, logcore.FsyncNever)
	tl.writeInput(t, series, perPart, 8)
	tl.log.Close()
	kills, mid := 0, 0
	for i := 0; i < 12; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start child: %v", err)
		}
		// Kill after a random number of newly emitted windows (or after 10s), plus a
		// random few milliseconds, so kills land during emissions, checkpoints and reads.
		progress := make(chan struct{}, 1024)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				progress <- struct{}{}
			}
			close(progress)
		}()
		target, seen := 1+rng.IntN(50), 0
		timeout := time.After(10 * time.Second)
	wait:
		for seen < target {
			select {
			case _, ok := <-progress:
				if !ok {
					break wait
				}
				seen++
			case <-timeout:
				break wait
			}
		}
		time.Sleep(time.Duration(rng.IntN(15)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("kill child: %v", err)
		}
		for range progress {
		}
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("child %d ended by itself: %v", i, err)
		}
		kills++
		l := openTestLog(t, filepath.Join(dir, "log"), 3, logcore.FsyncNever)
		n := len(readResults(t, l.results))
		l.log.Close()
		if n > 0 && n < len(want) {
			mid++
		}
		t.Logf("kill %d after %d new windows: %d of %d windows in the rollups topic", i, seen, n, len(want))
	}
	if mid < 5 {
		t.Fatalf("only %d of %d kills landed mid-run", mid, kills)
	}
	// Finish the run in-process.
	tl = openTestLog(t, filepath.Join(dir, "log"), 3, logcore.FsyncNever)
	defer tl.log.Close()
	_, stop = startEngine(t, tl, crashRollups, filepath.Join(dir, "ckpt"), nil)
	waitCount(t, tl.results, len(want))
	stop()
	got := resultsByWindow(t, readResults(t, tl.results))
	if len(got) != len(want) {
		t.Errorf("%d windows after crashes, %d without", len(got), len(want))
	}
	for k, w := range want {
		g := got[k]
		if g == nil {
			t.Errorf("window %s missing after crashes", k)
			continue
		}
		if describe([]*Result{g}) != describe([]*Result{w}) {
			t.Errorf("window %s differs after crashes:\n got %s\nwant %s", k, describe([]*Result{g}), describe([]*Result{w}))
		}
	}
}

// waitCount waits until the topic holds n records, then a little longer so that a
// wrong extra window would show.
func waitCount(t *testing.T, topic logcore.Topic, n int) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for topic.Stats(0).EndOffset-topic.Stats(0).StartOffset < int64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("rollups topic has %d records after 90s, want %d", topic.Stats(0).EndOffset, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
}

// waitQuiet waits until the topic has stopped growing for a while (the engine has
// consumed everything and closed every window).
func waitQuiet(t *testing.T, topic logcore.Topic) {
	t.Helper()
	last, since := int64(-1), time.Now()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		end := topic.Stats(0).EndOffset
		if end != last {
			last, since = end, time.Now()
		} else if end > 0 && time.Since(since) > 2*time.Second {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("rollups topic never went quiet")
}
