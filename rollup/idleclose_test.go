package rollup

import (
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/logcore"
)

// TestReplayAfterWallClockClose: a window closed by the wall clock on idle partitions,
// then a sample for it that is late, then a crash back to a checkpoint from before the
// close. The replay must drop that sample again (it re-applies the seals recorded
// with the emitted window), so the next window's increase is the crash-free value.
func TestReplayAfterWallClockClose(t *testing.T) {
	tl := openTestLog(t, t.TempDir(), 2, logcore.FsyncNever)
	defer tl.log.Close()
	base := int64(1_700_000_000_000)
	var now atomic.Int64
	now.Store(base + 5000) // closes nothing
	series := []inSeries{{labels.FromStrings("__name__", "c", "p", "0"), 0}, {labels.FromStrings("__name__", "c", "p", "1"), 1}}
	rollups := []config.RollupConfig{rc("c", `{__name__="c"}`, "10s", "1s", nil, []string{"p"}, "increase", "count_samples")}
	ckpt := t.TempDir()
	run := func(set *metrics.Set, col *collector) func() {
		_, stop := startEngine(t, tl, rollups, ckpt, func(o *Options) {
			o.Now = func() time.Time { return time.UnixMilli(now.Load()) }
			o.Metrics = set
			o.CheckpointInterval = time.Hour // checkpoints only at stop: the "crash" goes back to the first
			if col != nil {
				o.OnResult = col.onResult
			}
		})
		return stop
	}

	// Phase 1: one sample per partition; stop with a checkpoint, and keep a copy of it.
	tl.writeInput(t, series, [][]inSample{{{0, base + 1000, 10}}, {{1, base + 2000, 100}}}, 1)
	set := metrics.NewSet()
	stop := run(set, nil)
	time.Sleep(200 * time.Millisecond)
	stop()
	old, err := os.ReadFile(filepath.Join(ckpt, checkpointName))
	if err != nil {
		t.Fatal(err)
	}

	// Phase 2: the wall clock closes [0s,10s); then a sample for it is late.
	now.Store(base + 12_000)
	col := newCollector()
	set = metrics.NewSet()
	stop = run(set, col)
	col.waitFor(t, "the wall clock to close the first window", func(rs []*Result) bool { return len(rs) == 1 })
	tl.writeInput(t, series, [][]inSample{{{0, base + 9000, 15}, {0, base + 15000, 20}}, nil}, 1)
	late := set.GetOrCreateCounter(`vigil_rollup_late_samples_total`)
	deadline := time.Now().Add(30 * time.Second)
	for late.Get() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("late samples = %d, want 1", late.Get())
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()

	// The crash: back to the checkpoint of phase 1; the rollups topic keeps the window.
	if err := os.WriteFile(filepath.Join(ckpt, checkpointName), old, 0o644); err != nil {
		t.Fatal(err)
	}
	col = newCollector()
	set = metrics.NewSet()
	stop = run(set, col)
	tl.writeInput(t, series, [][]inSample{{{0, base + 25000, 21}}, {{1, base + 25000, 101}}}, 1)
	col.waitFor(t, "the second window", func(rs []*Result) bool { return len(rs) == 1 })
	stop()
	got := flatten(col.results)
	if v := got[`{__name__="c:10s_without_p_increase"}@1700000020000`]; v != 10 {
		t.Errorf("increase of [10s,20s) after the replay = %v, want 10 (the late sample stays out)\n%s", v, describe(col.results))
	}
	if v := got[`{__name__="c:10s_without_p_count_samples"}@1700000020000`]; v != 1 {
		t.Errorf("count_samples of [10s,20s) = %v, want 1", v)
	}
	if n := len(readResults(t, tl.results)); n != 2 {
		t.Errorf("%d windows in the rollups topic, want 2 (each once)", n)
	}
}
