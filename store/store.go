package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/common/model"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
)

// Options configure a Store. Zero values take the defaults noted on each field.
type Options struct {
	// Dir is the store's directory (<data_dir>/store); it is created if missing.
	Dir string
	// RawRetention deletes blocks of raw (logged) samples whose newest sample is older
	// than this (default 24h).
	RawRetention time.Duration
	// DerivedRetention is the retention of what is written through Appendable: rollup
	// outputs, recording rules, ALERTS (default 30d).
	DerivedRetention time.Duration
	// OutOfOrderWindow accepts samples this far behind the newest sample of the store
	// (default 0: none).
	OutOfOrderWindow time.Duration
	// BlockDuration is the time range of the head block cut to disk (default 2h, as
	// Prometheus). The head is cut once it spans 1.5 block durations, which also bounds
	// how much of the log a restart after a crash replays. Samples up to half of it
	// behind the newest sample are appended in order (more with OutOfOrderWindow).
	BlockDuration time.Duration
	// QueryTimeout bounds one PromQL query (default 2m).
	QueryTimeout time.Duration
	// MaxSamples bounds the samples one query may hold in memory (default 50,000,000).
	MaxSamples int
	// MaxConcurrency bounds the queries that run at once; more wait (default 20).
	MaxConcurrency int
	// LookbackDelta is PromQL's lookback for instant vectors (default 5m).
	LookbackDelta time.Duration
	// Metrics receives the store's vigil_store_* metrics; nil makes a private set.
	Metrics *metrics.Set
	// Logger receives the store's and the TSDB's logs; nil discards them.
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.RawRetention <= 0 {
		o.RawRetention = 24 * time.Hour
	}
	if o.DerivedRetention <= 0 {
		o.DerivedRetention = 30 * 24 * time.Hour
	}
	if o.BlockDuration <= 0 {
		o.BlockDuration = 2 * time.Hour
	}
	if o.QueryTimeout <= 0 {
		o.QueryTimeout = 2 * time.Minute
	}
	if o.MaxSamples <= 0 {
		o.MaxSamples = 50000000
	}
	if o.MaxConcurrency <= 0 {
		o.MaxConcurrency = 20
	}
	if o.LookbackDelta <= 0 {
		o.LookbackDelta = 5 * time.Minute
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Store is the query store: a TSDB of raw samples without its own WAL (filled by the
// materializer from the log), a TSDB of derived series with its WAL and a longer
// retention (filled through Appendable), a PromQL engine over both, and the arrival
// hook the materializer calls. All methods are safe for concurrent use.
type Store struct {
	opts      Options
	db        *tsdb.DB
	derived   *tsdb.DB
	queryable storage.Queryable
	engine    *promql.Engine
	hook      atomic.Pointer[func([]string)]

	// cmu serialises checkpoints and the final flush with each other.
	cmu sync.Mutex

	// wmu guards the raw TSDB's settings: the configured out-of-order window and
	// retention, and the extra window a replay adds (see widenForReplay).
	wmu          sync.Mutex
	oooWindow    time.Duration
	rawRetention time.Duration
	replayExtra  time.Duration

	delay    *metrics.Histogram
	rejected map[string]*metrics.Counter
	closed   atomic.Bool
}

// Open opens (or creates) the store in opts.Dir. The TSDB's blocks are loaded; the head
// starts empty and the materializer refills it from the log.
func Open(opts Options) (*Store, error) {
	opts.setDefaults()
	if opts.Dir == "" {
		return nil, errors.New("store: no directory given")
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("store: create %s: %w", opts.Dir, err)
	}
	blockMs := opts.BlockDuration.Milliseconds()
	to := tsdb.DefaultOptions()
	to.WALSegmentSize = -1 // the log is the WAL; see the package documentation
	to.RetentionDuration = opts.RawRetention.Milliseconds()
	to.MinBlockDuration = blockMs
	to.MaxBlockDuration = max(blockMs, min(opts.RawRetention.Milliseconds()/10, 31*24*time.Hour.Milliseconds()))
	to.OutOfOrderTimeWindow = opts.OutOfOrderWindow.Milliseconds()
	to.EnableOverlappingCompaction = true
	to.EnableExemplarStorage = false
	logger := opts.Logger.With("component", "store")
	// The TSDB logs every compaction at info level; the store's checkpoints make that noise.
	tsdbLogger := slog.New(minLevel{logger.Handler(), slog.LevelWarn}).With("tsdb", true)
	db, err := tsdb.Open(filepath.Join(opts.Dir, "tsdb"), tsdbLogger, nil, to, nil)
	if err != nil {
		return nil, fmt.Errorf("store: open tsdb in %s: %w", opts.Dir, err)
	}
	// Head compaction runs only from the materializer's checkpoints, so that a
	// checkpoint knows which samples a new block holds (retention still runs in the
	// TSDB's own loop).
	db.DisableCompactions()
	// Derived series are not in the log, so their TSDB keeps its WAL (their volume is
	// small) and compacts on its own.
	do := tsdb.DefaultOptions()
	do.RetentionDuration = opts.DerivedRetention.Milliseconds()
	do.MinBlockDuration = blockMs
	do.MaxBlockDuration = max(blockMs, min(opts.DerivedRetention.Milliseconds()/10, 31*24*time.Hour.Milliseconds()))
	do.OutOfOrderTimeWindow = opts.OutOfOrderWindow.Milliseconds()
	derived, err := tsdb.Open(filepath.Join(opts.Dir, "derived"), tsdbLogger.With("db", "derived"), nil, do, nil)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open derived tsdb in %s: %w", opts.Dir, err)
	}
	tracker, err := promql.NewActiveQueryTracker(opts.Dir, opts.MaxConcurrency, logger)
	if err != nil {
		db.Close()
		derived.Close()
		return nil, fmt.Errorf("store: query tracker: %w", err)
	}
	engine := promql.NewEngine(promql.EngineOpts{
		Logger:               logger.With("promql", true),
		MaxSamples:           opts.MaxSamples,
		Timeout:              opts.QueryTimeout,
		ActiveQueryTracker:   tracker,
		LookbackDelta:        opts.LookbackDelta,
		EnableAtModifier:     true,
		EnableNegativeOffset: true,
		// Prometheus's default global evaluation_interval, used by subqueries without a step.
		NoStepSubqueryIntervalFn: func(int64) int64 { return time.Minute.Milliseconds() },
	})
	s := &Store{opts: opts, db: db, derived: derived, engine: engine, oooWindow: opts.OutOfOrderWindow, rawRetention: opts.RawRetention}
	s.queryable = storage.QueryableFunc(s.querier)
	set := opts.Metrics
	s.delay = set.GetOrCreateHistogram("vigil_store_ingest_to_queryable_seconds")
	s.rejected = map[string]*metrics.Counter{}
	for _, reason := range rejectReasons {
		s.rejected[reason] = set.GetOrCreateCounter(fmt.Sprintf(`vigil_store_rejected_samples_total{reason=%q}`, reason))
	}
	set.GetOrCreateGauge("vigil_store_head_series", func() float64 {
		if s.closed.Load() {
			return 0
		}
		return float64(db.Head().NumSeries())
	})
	set.GetOrCreateGauge("vigil_store_blocks", func() float64 {
		if s.closed.Load() {
			return 0
		}
		return float64(len(db.Blocks()))
	})
	set.GetOrCreateGauge("vigil_store_derived_series", func() float64 {
		if s.closed.Load() {
			return 0
		}
		return float64(derived.Head().NumSeries())
	})
	return s, nil
}

// rejectReasons label vigil_store_rejected_samples_total.
var rejectReasons = []string{"out_of_bounds", "too_old", "out_of_order", "duplicate_timestamp", "bad_histogram", "other"}

// Queryable reads the store: raw and derived series, blocks and heads alike.
func (s *Store) Queryable() storage.Queryable { return s.queryable }

// querier merges the raw and the derived TSDB, leaving the derived one out when it
// holds nothing in [mint, maxt] (a single querier need not sort its series).
func (s *Store) querier(mint, maxt int64) (storage.Querier, error) {
	raw, err := s.db.Querier(mint, maxt)
	if err != nil {
		return nil, err
	}
	if !overlaps(s.derived, mint, maxt) {
		return raw, nil
	}
	der, err := s.derived.Querier(mint, maxt)
	if err != nil {
		raw.Close()
		return nil, err
	}
	return storage.NewMergeQuerier([]storage.Querier{raw, der}, nil, storage.ChainedSeriesMerge), nil
}

// overlaps reports whether db may hold samples in [mint, maxt].
func overlaps(db *tsdb.DB, mint, maxt int64) bool {
	if h := db.Head(); h.NumSeries() > 0 && h.MinTime() <= maxt && h.MaxTime() >= mint {
		return true
	}
	for _, b := range db.Blocks() {
		if m := b.Meta(); m.MinTime <= maxt && m.MaxTime > mint {
			return true
		}
	}
	return false
}

// Appendable writes derived series (recording rules, ALERTS series, rollup outputs)
// into the derived TSDB, which keeps them for DerivedRetention. Samples are queryable
// on Commit and durable then too (that TSDB has its own WAL, since they are not in the
// log).
func (s *Store) Appendable() storage.Appendable { return s.derived }

// NotifyingAppendable is Appendable whose appenders, after a successful Commit, call
// the arrival hook with the distinct metric names they wrote, as the materializer does
// for logged samples. Rollup outputs use it so that rules over rollup series evaluate
// on arrival; writers whose outputs must not wake rules use Appendable.
func (s *Store) NotifyingAppendable() storage.Appendable { return notifyingAppendable{s} }

type notifyingAppendable struct{ s *Store }

func (n notifyingAppendable) Appender(ctx context.Context) storage.Appender {
	return &notifyingAppender{Appender: n.s.derived.Appender(ctx), s: n.s, seen: map[string]struct{}{}}
}

// notifyingAppender remembers the metric names of the series appended through it.
type notifyingAppender struct {
	storage.Appender
	s     *Store
	seen  map[string]struct{}
	names []string
}

func (a *notifyingAppender) note(l labels.Labels) {
	name := l.Get(model.MetricNameLabel)
	if _, ok := a.seen[name]; !ok && name != "" {
		a.seen[name] = struct{}{}
		a.names = append(a.names, name)
	}
}

func (a *notifyingAppender) Append(ref storage.SeriesRef, l labels.Labels, t int64, v float64) (storage.SeriesRef, error) {
	r, err := a.Appender.Append(ref, l, t, v)
	if err == nil {
		a.note(l)
	}
	return r, err
}

func (a *notifyingAppender) AppendHistogram(ref storage.SeriesRef, l labels.Labels, t int64, h *histogram.Histogram, fh *histogram.FloatHistogram) (storage.SeriesRef, error) {
	r, err := a.Appender.AppendHistogram(ref, l, t, h, fh)
	if err == nil {
		a.note(l)
	}
	return r, err
}

func (a *notifyingAppender) Commit() error {
	if err := a.Appender.Commit(); err != nil {
		return err
	}
	a.s.arrived(a.names)
	return nil
}

// Engine is the PromQL engine configured from the store's options (timeout, max samples,
// concurrency, lookback). Query it with Queryable().
func (s *Store) Engine() *promql.Engine { return s.engine }

// DB exposes the raw samples' TSDB for status pages and tests. Callers must not close
// it or compact it.
func (s *Store) DB() *tsdb.DB { return s.db }

// DerivedDB exposes the derived series' TSDB for status pages and tests.
func (s *Store) DerivedDB() *tsdb.DB { return s.derived }

// SetArrivalHook sets fn to be called after a materializer commit has made samples
// queryable, with the distinct metric names (__name__) of that commit. fn runs on the
// materializer's goroutine: it must be quick and must not keep the slice, which is
// reused. nil removes the hook.
func (s *Store) SetArrivalHook(fn func(metricNames []string)) {
	if fn == nil {
		s.hook.Store(nil)
		return
	}
	s.hook.Store(&fn)
}

func (s *Store) arrived(names []string) {
	if fn := s.hook.Load(); fn != nil && len(names) > 0 {
		(*fn)(names)
	}
}

// compactHead cuts the head into blocks if it is due and returns the head's minimum
// time after that: every sample appended in order before the call with an older
// timestamp is in a block (only a head compaction removes in-order samples from the
// head, and the head holds none older than its minimum). Out-of-order samples are
// not covered: compactOOO persists those.
func (s *Store) compactHead(ctx context.Context) (int64, error) {
	if err := s.db.Compact(ctx); err != nil {
		return math.MinInt64, fmt.Errorf("store: compact: %w", err)
	}
	return s.db.Head().MinTime(), nil
}

// compactOOO persists every out-of-order sample appended before the call.
func (s *Store) compactOOO(ctx context.Context) error {
	if err := s.db.CompactOOOHead(ctx); err != nil {
		return fmt.Errorf("store: compact out-of-order head: %w", err)
	}
	return nil
}

// flushHead persists the whole head (in-order and out-of-order samples) into blocks
// aligned to the block duration, so that everything appended so far is on disk.
func (s *Store) flushHead(ctx context.Context) error {
	if _, err := s.compactHead(ctx); err != nil {
		return err
	}
	if err := s.compactOOO(ctx); err != nil {
		return err
	}
	h := s.db.Head()
	if h.NumSeries() == 0 || h.MinTime() == math.MaxInt64 {
		return nil
	}
	rng := s.opts.BlockDuration.Milliseconds()
	mint, maxt := h.MinTime(), h.MaxTime()
	for lo := mint; lo <= maxt; {
		hi := (lo/rng+1)*rng - 1 // end of lo's aligned range
		if lo < 0 && lo%rng != 0 {
			hi = (lo/rng)*rng - 1
		}
		hi = min(hi, maxt)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("store: flush head: %w", err)
		}
		if err := s.db.CompactHead(tsdb.NewRangeHead(h, lo, hi)); err != nil {
			return fmt.Errorf("store: flush head [%d, %d]: %w", lo, hi, err)
		}
		lo = hi + 1
	}
	return nil
}

// Reconfigure changes the out-of-order window and the retentions of a running store
// (on a configuration reload). The block duration and the query limits are fixed at Open.
func (s *Store) Reconfigure(outOfOrderWindow, rawRetention, derivedRetention time.Duration) error {
	if outOfOrderWindow < 0 || rawRetention <= 0 || derivedRetention <= 0 {
		return errors.New("store: out-of-order window must not be negative, retentions must be positive")
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.oooWindow, s.rawRetention = outOfOrderWindow, rawRetention
	return errors.Join(s.applyRaw(), wrap("reconfigure derived tsdb", applyTSDB(s.derived, outOfOrderWindow, derivedRetention)))
}

// widenForReplay adds extra to the raw TSDB's out-of-order window (0 takes it away) while
// the materializer replays what it had not committed before a restart (see
// Materializer.startReplay).
func (s *Store) widenForReplay(extra time.Duration) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.replayExtra = extra
	return s.applyRaw()
}

// outOfOrder reports whether the raw TSDB takes out-of-order samples or holds blocks
// of them.
func (s *Store) outOfOrder() bool {
	s.wmu.Lock()
	w := s.oooWindow
	s.wmu.Unlock()
	if w > 0 {
		return true
	}
	for _, b := range s.db.Blocks() {
		if m := b.Meta(); m.Compaction.FromOutOfOrder() {
			return true
		}
	}
	return false
}

// applyRaw applies the raw TSDB's settings. The caller holds wmu.
func (s *Store) applyRaw() error {
	return wrap("reconfigure tsdb", applyTSDB(s.db, s.oooWindow+s.replayExtra, s.rawRetention))
}

func applyTSDB(db *tsdb.DB, outOfOrderWindow, retention time.Duration) error {
	return db.ApplyConfig(&promconfig.Config{StorageConfig: promconfig.StorageConfig{TSDBConfig: &promconfig.TSDBConfig{
		OutOfOrderTimeWindow: outOfOrderWindow.Milliseconds(),
		Retention:            &promconfig.TSDBRetentionConfig{Time: model.Duration(retention)},
	}}})
}

// Close persists the raw head (so that a restart need not replay it) and closes both
// TSDBs. Stop the materializer first.
func (s *Store) Close() error {
	if s.closed.Load() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s.cmu.Lock()
	if err := s.flushHead(ctx); err != nil {
		s.opts.Logger.Error("persist the head on close; a restart replays it from the log", "err", err)
	}
	s.cmu.Unlock()
	return s.close()
}

// close closes without persisting the head, as a crash would.
func (s *Store) close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if err := s.engine.Close(); err != nil {
		s.opts.Logger.Warn("close query engine", "err", err)
	}
	return errors.Join(wrap("close tsdb", s.db.Close()), wrap("close derived tsdb", s.derived.Close()))
}

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("store: %s: %w", what, err)
}

// minLevel drops records below level.
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.level}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.level}
}
