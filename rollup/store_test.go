package rollup

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/vigilhq/vigil/logcore"
)

// TestStoreGetsWindowsAfterCrash: windows that reached the rollups topic but not the
// query store (a crash in between, simulated by running without a store and losing
// the checkpoint) are written to the store on the next start, once; a further start
// re-appends them again harmlessly, and nothing is emitted twice.
func TestStoreGetsWindowsAfterCrash(t *testing.T) {
	tl := openTestLog(t, t.TempDir(), 2, logcore.FsyncNever)
	defer tl.log.Close()
	base := int64(1_700_000_000_000)
	series := []inSeries{{labels.FromStrings("__name__", "g", "i", "0"), 0}, {labels.FromStrings("__name__", "g", "i", "1"), 1}}
	var perPart [2][]inSample
	for ts := base; ts < base+60_000; ts += 1000 {
		perPart[0] = append(perPart[0], inSample{0, ts, float64(ts % 7)})
		perPart[1] = append(perPart[1], inSample{1, ts + 500, float64(ts % 5)})
	}
	tl.writeInput(t, series, perPart[:], 5)
	rollups := diffRollups[:0:0]
	rollups = append(rollups, rc("g10", `{__name__="g"}`, "10s", "1s", nil, []string{"i"}, "sum_samples", "max"))
	ckpt := t.TempDir()

	_, stop := startEngine(t, tl, rollups, ckpt, nil) // no store
	waitQuiet(t, tl.results)
	stop()
	emitted := readResults(t, tl.results)
	if len(emitted) != 6 {
		t.Fatalf("%d windows emitted, want 6", len(emitted))
	}
	db, err := tsdb.Open(filepath.Join(t.TempDir(), "tsdb"), nil, nil, tsdb.DefaultOptions(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for round := 0; round < 2; round++ {
		if err := os.Remove(filepath.Join(ckpt, checkpointName)); err != nil {
			t.Fatal(err)
		}
		_, stop = startEngine(t, tl, rollups, ckpt, func(o *Options) { o.Appendable = db })
		waitQuiet(t, tl.results)
		stop()
		if n := len(readResults(t, tl.results)); n != len(emitted) {
			t.Fatalf("round %d: rollups topic has %d windows, want %d (nothing emitted twice)", round, n, len(emitted))
		}
	}
	q, err := db.Querier(base, base+120_000)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ss := q.Select(context.Background(), true, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "g:10s_without_i_max"))
	n := 0
	for ss.Next() {
		it := ss.At().Iterator(nil)
		for it.Next() != 0 {
			n++
		}
	}
	if n != 6 {
		t.Fatalf("store holds %d samples of g:10s_without_i_max, want 6", n)
	}
}
