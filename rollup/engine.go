package rollup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/prometheus/storage"

	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/logcore"
)

// Options configures an Engine. Log, Samples, Results and CheckpointDir are required.
type Options struct {
	// Rollups are the rollup definitions (config section rollups).
	Rollups []config.RollupConfig
	// Log holds the consumer offsets; Samples is the input topic (sample batches).
	Log     logcore.Log
	Samples logcore.Topic
	// Results is the "rollups" topic: every emitted window is appended to its
	// partition 0 before anything else sees it, and it is the record of what was
	// emitted (exactly-once across crashes).
	Results logcore.Topic
	// Group is the consumer group whose offsets the engine commits after each
	// checkpoint, for lag reporting (default "rollup"). The engine resumes from its
	// checkpoint, not from these offsets.
	Group string
	// Appendable, if set, receives every emitted output sample (the query store).
	Appendable storage.Appendable
	// OnResult, if set, is called with every emitted window after it is durable in
	// Results and written to Appendable (for live consumers such as NATS). It runs on the
	// engine's emitting goroutine: it must not block for long. After a crash the last
	// windows before it may be passed again; the rollups topic never repeats them.
	OnResult func(*Result)
	// OnWindowClosed, if set, is called after OnResult for every emitted window, with
	// the output metric names it holds (the rules stage evaluates the groups that read
	// them at once).
	OnWindowClosed func(rollupName string, metricNames []string, windowEnd time.Time)
	// CheckpointDir holds the checkpoint file.
	CheckpointDir string
	// CheckpointInterval is how often state and offsets are saved (default 2s).
	CheckpointInterval time.Duration
	// IdleInterval is how long a partition must be without new input before its
	// watermark follows the wall clock (default 100ms).
	IdleInterval time.Duration
	// Now is the wall clock (default time.Now).
	Now func() time.Time
	// Metrics receives the vigil_rollup_* metrics (default: a private set).
	Metrics *metrics.Set
	// Logger receives recovery and failure reports (default: discarded).
	Logger *slog.Logger
}

// Engine computes the rollups over the samples topic: one goroutine per input
// partition aggregates its own state (no shared lock on the hot path), and one
// coordinator goroutine (Run's) merges sealed windows, emits them and checkpoints.
//
// Use: New, then Run until its context ends. Reload may be called concurrently with
// Run; ActiveGroups at any time.
type Engine struct {
	opts    Options
	metrics *engineMetrics

	rules  []*rule
	parts  []*partition
	coord  *coordinator
	resOff int64 // rollups topic end offset at the last checkpoint

	reloadCh chan reloadReq
	runMu    sync.Mutex // held by Run
}

type reloadReq struct {
	rules []*rule
	done  chan error
}

// New builds the engine, restores the last checkpoint if there is one, and replays
// the tail of the rollups topic: windows recorded there after the checkpoint are
// re-sent to Appendable (idempotent) and never emitted again.
func New(opts Options) (*Engine, error) {
	if opts.Log == nil || opts.Samples == nil || opts.Results == nil {
		return nil, errors.New("rollup: Options.Log, Samples and Results are required")
	}
	if opts.CheckpointDir == "" {
		return nil, errors.New("rollup: Options.CheckpointDir is required")
	}
	if opts.Group == "" {
		opts.Group = "rollup"
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = 2 * time.Second
	}
	if opts.IdleInterval <= 0 {
		opts.IdleInterval = 100 * time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.NewSet()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	rules, err := compileRules(opts.Rollups)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.CheckpointDir, 0o755); err != nil {
		return nil, fmt.Errorf("rollup: create checkpoint dir: %w", err)
	}
	n := opts.Samples.Partitions()
	e := &Engine{opts: opts, rules: rules, metrics: newEngineMetrics(opts.Metrics, n), reloadCh: make(chan reloadReq)}
	e.coord = newCoordinator(rules, n, e.emit, e.metrics)
	for p := 0; p < n; p++ {
		e.parts = append(e.parts, newPartition(p, rules, e.metrics))
		e.parts[p].offset = opts.Samples.Stats(p).StartOffset
	}
	if err := e.recover(); err != nil {
		return nil, err
	}
	return e, nil
}

// Validate checks rollup definitions as New and Reload do (selectors, outputs,
// intervals, unique names), for config validation before anything starts.
func Validate(cfgs []config.RollupConfig) error {
	_, err := compileRules(cfgs)
	return err
}

func compileRules(cfgs []config.RollupConfig) ([]*rule, error) {
	var rules []*rule
	seen := map[string]bool{}
	for _, c := range cfgs {
		r, err := compileRule(c)
		if err != nil {
			return nil, err
		}
		if seen[r.name] {
			return nil, fmt.Errorf("rollup %q: duplicate name", r.name)
		}
		seen[r.name] = true
		rules = append(rules, r)
	}
	return rules, nil
}

func (e *Engine) recover() error {
	d, err := readCheckpoint(e.opts.CheckpointDir)
	if errors.Is(err, ErrCorruptCheckpoint) {
		e.opts.Logger.Error("rollup checkpoint is corrupt; starting from the start of the retained log", "err", err)
		d = nil
	} else if err != nil {
		return err
	}
	if d != nil && d.Partitions != len(e.parts) {
		e.opts.Logger.Error("rollup checkpoint is for another partition count; ignoring it", "checkpoint", d.Partitions, "topic", len(e.parts))
		d = nil
	}
	if d != nil {
		for p, b := range d.Parts {
			if err := e.parts[p].restore(b); err != nil {
				return err
			}
		}
		if err := e.coord.restore(d.Coord); err != nil {
			return err
		}
		e.resOff = d.ResultsOffset
		e.opts.Logger.Info("rollup checkpoint restored", "results_offset", d.ResultsOffset)
	} else {
		e.resOff = e.opts.Results.Stats(0).StartOffset
	}
	// Windows emitted after the checkpoint: never emit them again, and make sure the
	// store has them (the crash may have come between the topic and the store).
	byName := e.coord.byName()
	var recs []logcore.Record
	off := max(e.resOff, e.opts.Results.Stats(0).StartOffset)
	for {
		recs, err = e.opts.Results.Read(0, off, 1<<20, recs[:0])
		if err != nil {
			return fmt.Errorf("rollup: replay rollups topic at offset %d: %w", off, err)
		}
		if len(recs) == 0 {
			break
		}
		for _, rec := range recs {
			off = rec.Offset + 1
			res, err := decodeResult(rec.Key, rec.Value)
			if err != nil {
				e.opts.Logger.Warn("skipping unreadable rollups record", "offset", rec.Offset, "err", err)
				continue
			}
			if cr := byName[res.Rollup]; cr != nil {
				cr.lastEmitted = max(cr.lastEmitted, res.End)
				if len(res.marks) == len(e.parts) {
					for p, m := range res.marks {
						if rs := e.parts[p].shard(res.Rollup); rs != nil && m.Sealed > rs.sealed && m.Offset >= e.parts[p].offset {
							rs.forced = append(rs.forced, m)
						}
					}
				}
			}
			if err := e.appendStore(res); err != nil {
				e.opts.Logger.Error("rollup: re-append a window to the query store failed", "rollup", res.Rollup, "window_end", res.End, "err", err)
			}
		}
	}
	return nil
}

// emit makes one window durable in the rollups topic, then writes it to the store and
// tells the callbacks.
func (e *Engine) emit(res *Result) error {
	t0 := time.Now()
	key, val := encodeResult(res)
	if _, err := e.opts.Results.Append(context.Background(), 0, []logcore.Record{{Key: key, Value: val}}); err != nil {
		return fmt.Errorf("append to rollups topic: %w", err)
	}
	if err := e.appendStore(res); err != nil {
		// The window is recorded; the next start re-appends it. Keep going.
		e.opts.Logger.Error("rollup: write to the query store failed", "rollup", res.Rollup, "window_end", res.End, "err", err)
	}
	e.metrics.closeLat.UpdateDuration(t0)
	e.metrics.windows.Inc()
	e.metrics.series.Add(len(res.Series))
	if e.opts.OnResult != nil {
		e.opts.OnResult(res)
	}
	if e.opts.OnWindowClosed != nil {
		e.opts.OnWindowClosed(res.Rollup, res.MetricNames(), res.WindowEnd())
	}
	return nil
}

func (e *Engine) appendStore(res *Result) error {
	if e.opts.Appendable == nil || len(res.Series) == 0 {
		return nil
	}
	app := e.opts.Appendable.Appender(context.Background())
	for i := range res.Series {
		if _, err := app.Append(0, res.Series[i].Labels, res.End, res.Series[i].Value); err != nil {
			if errors.Is(err, storage.ErrDuplicateSampleForTimestamp) || errors.Is(err, storage.ErrOutOfOrderSample) ||
				errors.Is(err, storage.ErrOutOfBounds) || errors.Is(err, storage.ErrTooOldSample) {
				// Already there (a re-append after a crash) or refused by the store's
				// time bounds: the rollups topic still holds the value.
				e.metrics.storeRejected.Inc()
				continue
			}
			app.Rollback()
			return fmt.Errorf("append %s: %w", res.Series[i].Labels, err)
		}
	}
	return app.Commit()
}

// ActiveGroups returns the number of aggregation groups the partitions hold state for,
// as of their last sweep (also the gauge vigil_rollup_active_groups).
func (e *Engine) ActiveGroups() int {
	n := 0
	for i := range e.metrics.groups {
		n += int(e.metrics.groups[i].Load())
	}
	return n
}

// Reload replaces the rollup definitions. Rules whose definition is unchanged keep
// their state; changed and new rules start empty at the current input position;
// removed rules are dropped. On error nothing changes.
func (e *Engine) Reload(ctx context.Context, cfgs []config.RollupConfig) error {
	rules, err := compileRules(cfgs)
	if err != nil {
		return err
	}
	req := reloadReq{rules: rules, done: make(chan error, 1)}
	if !e.runMu.TryLock() {
		// Run is active: hand the rules to it.
		select {
		case e.reloadCh <- req:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case err := <-req.done:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer e.runMu.Unlock()
	e.applyRules(rules)
	return nil
}

func (e *Engine) applyRules(rules []*rule) {
	old := e.coord.byName()
	e.coord.setRules(rules, old)
	for _, p := range e.parts {
		shards := map[string]*ruleShard{}
		for _, rs := range p.rules {
			shards[rs.r.name] = rs
		}
		p.setRules(rules, shards)
	}
	e.rules = rules
}

// Run consumes the samples topic until ctx ends, then checkpoints and returns. It
// returns early on an error it cannot recover from (appending to the rollups topic, or
// reading a samples partition); a failed checkpoint is logged and counted
// (vigil_rollup_checkpoint_errors_total) and retried at the next interval.
func (e *Engine) Run(ctx context.Context) error {
	e.runMu.Lock()
	defer e.runMu.Unlock()
	for {
		rules, err := e.runGeneration(ctx)
		if err != nil {
			return err
		}
		if rules == nil {
			return nil
		}
		e.applyRules(rules.rules)
		rules.done <- e.checkpoint(nil)
	}
}
