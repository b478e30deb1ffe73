package rollup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/logcore"
)

// TestQuietStreamClosesWindows: samples stop arriving; the wall clock still closes
// their window once it is lateness past the window's end.
func TestQuietStreamClosesWindows(t *testing.T) {
	tl := openTestLog(t, t.TempDir(), 2, logcore.FsyncNever)
	defer tl.log.Close()
	now := time.Now().UnixMilli()
	series := []inSeries{{labels.FromStrings("__name__", "q"), 0}}
	tl.writeInput(t, series, [][]inSample{{{0, now, 1}, {0, now + 1, 2}}, nil}, 10)
	col := newCollector()
	_, stop := startEngine(t, tl, []config.RollupConfig{rc("q", `{__name__="q"}`, "1s", "500ms", nil, nil, "count_samples")},
		t.TempDir(), func(o *Options) { o.OnResult = col.onResult; o.OnWindowClosed = col.onClosed })
	col.waitFor(t, "the quiet window to close", func(rs []*Result) bool { return len(rs) == 1 })
	stop()
	r := col.results[0]
	if r.End <= now || r.End > now+1000 || len(r.Series) != 1 || r.Series[0].Value != 2 {
		t.Fatalf("got %s", describe(col.results))
	}
	if closed := time.Now().UnixMilli(); closed < r.End+500 {
		t.Errorf("window ending %d closed at %d, before its lateness passed", r.End, closed)
	}
	if len(col.closed) != 1 || col.closed[0] != "q [q:1s_count_samples] "+itoa(int(r.End)) {
		t.Errorf("window-closed callbacks: %q", col.closed)
	}
}

// TestReload: an unchanged rollup keeps its state across a reload, a new one starts,
// and a bad config changes nothing.
func TestReload(t *testing.T) {
	tl := openTestLog(t, t.TempDir(), 1, logcore.FsyncNever)
	defer tl.log.Close()
	keep := rc("keep", `{__name__="g"}`, "10s", "0s", nil, nil, "count_samples")
	added := rc("added", `{__name__="g"}`, "10s", "0s", nil, nil, "max")
	series := []inSeries{{labels.FromStrings("__name__", "g"), 0}}
	base := int64(1_700_000_000_000)
	tl.writeInput(t, series, [][]inSample{{{0, base + 1000, 1}, {0, base + 2000, 2}}}, 1)
	col := newCollector()
	e, stop := startEngine(t, tl, []config.RollupConfig{keep}, t.TempDir(), func(o *Options) {
		o.OnResult = col.onResult
		o.Now = func() time.Time { return time.UnixMilli(base + 5000) } // the wall clock closes nothing yet
	})
	ctx := context.Background()
	time.Sleep(100 * time.Millisecond) // let the first samples be aggregated
	if err := e.Reload(ctx, []config.RollupConfig{keep, rc("bad", `{`, "10s", "0s", nil, nil, "max")}); err == nil {
		t.Fatal("Reload accepted a bad selector")
	}
	if err := e.Reload(ctx, []config.RollupConfig{keep, added}); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	tl.writeInput(t, series, [][]inSample{{{0, base + 3000, 30}, {0, base + 25000, 4}}}, 1)
	col.waitFor(t, "both rollups' first window", func(rs []*Result) bool { return len(rs) == 2 })
	stop()
	m := flatten(col.results)
	if v := m[`{__name__="g:10s_count_samples"}@1700000010000`]; v != 3 {
		t.Errorf("kept rollup lost state over the reload: count %v, want 3\n%s", v, describe(col.results))
	}
	if v := m[`{__name__="g:10s_max"}@1700000010000`]; v != 30 {
		t.Errorf("added rollup: max %v, want 30 (it starts at the reload)\n%s", v, describe(col.results))
	}
}

// TestCorruptCheckpoint: every kind of damage is detected, reported and survived: the
// engine starts over from the retained log and still emits.
func TestCorruptCheckpoint(t *testing.T) {
	tl := openTestLog(t, t.TempDir(), 1, logcore.FsyncNever)
	defer tl.log.Close()
	series := []inSeries{{labels.FromStrings("__name__", "g"), 0}}
	base := int64(1_700_000_000_000)
	tl.writeInput(t, series, [][]inSample{{{0, base + 1000, 1}, {0, base + 2000, 2}}}, 1)
	rollups := []config.RollupConfig{rc("r", `{__name__="g"}`, "10s", "0s", nil, nil, "count_samples")}
	ckpt := t.TempDir()
	_, stop := startEngine(t, tl, rollups, ckpt, func(o *Options) { o.Now = func() time.Time { return time.UnixMilli(base) } })
	time.Sleep(100 * time.Millisecond)
	stop()
	good, err := os.ReadFile(filepath.Join(ckpt, checkpointName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeCheckpoint(good); err != nil {
		t.Fatalf("good checkpoint: %v", err)
	}
	damage := map[string]func([]byte) []byte{
		"truncated":   func(b []byte) []byte { return b[:len(b)/2] },
		"header only": func(b []byte) []byte { return b[:20] },
		"flipped bit": func(b []byte) []byte { c := append([]byte(nil), b...); c[len(c)-3] ^= 0x10; return c },
		"zero-filled": func(b []byte) []byte { return make([]byte, len(b)) },
		"bad magic":   func(b []byte) []byte { c := append([]byte(nil), b...); c[0] = 'X'; return c },
		"empty":       func([]byte) []byte { return nil },
	}
	for name, f := range damage {
		t.Run(name, func(t *testing.T) {
			bad := f(good)
			if _, err := decodeCheckpoint(bad); !errors.Is(err, ErrCorruptCheckpoint) {
				t.Fatalf("decode: %v, want ErrCorruptCheckpoint", err)
			}
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, checkpointName), bad, 0o644); err != nil {
				t.Fatal(err)
			}
			rtl := openTestLog(t, t.TempDir(), 1, logcore.FsyncNever)
			defer rtl.log.Close()
			rtl.writeInput(t, series, [][]inSample{{{0, base + 1000, 1}, {0, base + 2000, 2}, {0, base + 11000, 3}}}, 1)
			col := newCollector()
			_, stop := startEngine(t, rtl, rollups, dir, func(o *Options) { o.OnResult = col.onResult })
			col.waitFor(t, "windows after a corrupt checkpoint", func(rs []*Result) bool { return len(rs) == 2 })
			stop()
			if v := flatten(col.results)[`{__name__="g:10s_count_samples"}@1700000010000`]; v != 2 {
				t.Fatalf("count %v, want 2", v)
			}
		})
	}
}

// TestReloadFromNoRollups: an engine with no rollup reads nothing but follows the
// samples' end, so a rollup added by a reload starts there, as in TestReload.
func TestReloadFromNoRollups(t *testing.T) {
	tl := openTestLog(t, t.TempDir(), 1, logcore.FsyncNever)
	defer tl.log.Close()
	series := []inSeries{{labels.FromStrings("__name__", "g"), 0}}
	base := int64(1_700_000_000_000)
	tl.writeInput(t, series, [][]inSample{{{0, base + 1000, 100}}}, 1)
	col := newCollector()
	e, stop := startEngine(t, tl, nil, t.TempDir(), func(o *Options) {
		o.OnResult = col.onResult
		o.Now = func() time.Time { return time.UnixMilli(base + 5000) }
	})
	time.Sleep(100 * time.Millisecond) // let the workers follow the end
	if err := e.Reload(context.Background(), []config.RollupConfig{rc("added", `{__name__="g"}`, "10s", "0s", nil, nil, "max")}); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	tl.writeInput(t, series, [][]inSample{{{0, base + 3000, 30}, {0, base + 25000, 4}}}, 1)
	col.waitFor(t, "the added rollup's first window", func(rs []*Result) bool { return len(rs) == 1 })
	stop()
	if v := flatten(col.results)[`{__name__="g:10s_max"}@1700000010000`]; v != 30 {
		t.Errorf("added rollup: max %v, want 30 (the sample before the reload is not in it)\n%s", v, describe(col.results))
	}
}
