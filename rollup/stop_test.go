package rollup

import (
	"context"
	"testing"
	"time"

	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/logcore"
)

// TestRunStopsDuringCheckpoints stops Run many times at random moments relative to
// its (very frequent) checkpoints; it must always return, and the state it saved must
// load again.
func TestRunStopsDuringCheckpoints(t *testing.T) {
	tl := openTestLog(t, t.TempDir(), 4, logcore.FsyncNever)
	defer tl.log.Close()
	ckpt := t.TempDir()
	rollups := []config.RollupConfig{rc("r", `{__name__="g"}`, "1s", "0s", nil, nil, "count_samples")}
	for i := 0; i < 30; i++ {
		e, err := New(Options{Rollups: rollups, Log: tl.log, Samples: tl.samples, Results: tl.results, CheckpointDir: ckpt,
			CheckpointInterval: time.Millisecond, IdleInterval: time.Millisecond})
		if err != nil {
			t.Fatalf("New (round %d): %v", i, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- e.Run(ctx) }()
		time.Sleep(time.Duration(i%7) * time.Millisecond)
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("Run (round %d): %v", i, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("Run did not return after cancel (round %d)", i)
		}
	}
}
