package rangesplit

import (
	"context"
	"runtime"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
)

// DefaultMinStepsPerPart is Options.MinStepsPerPart's default: a 1h range at a 15s
// step (241 steps) is split in 2 or more, at a 1m step (61 steps) it is not.
const DefaultMinStepsPerPart = 60

// Options configure an Engine. Zero values take the defaults noted on each field.
type Options struct {
	// Parallelism is the most parts a range query is split into; they are evaluated
	// at once (default runtime.NumCPU, the cores, not the scheduler's Ps, which vigil
	// serve may raise; 1 never splits).
	Parallelism int
	// MinStepsPerPart is the fewest steps of a part: a range query of n steps is
	// split into min(Parallelism, n/MinStepsPerPart) parts, so one shorter than
	// 2 × MinStepsPerPart is not split (default DefaultMinStepsPerPart; at least 2).
	MinStepsPerPart int
	// MaxSamples is the engine's limit of samples one query may hold (its
	// EngineOpts.MaxSamples): a split query whose parts together peaked above it is
	// evaluated again whole, so the limit holds for the query as the engine sees it.
	// 0 skips that check.
	MaxSamples int
	// Parser parses queries to decide whether they may be split; give the engine's
	// parser if it was built with options (default: parser.NewParser with no
	// options, the engine's default). A query it does not parse is not split.
	Parser parser.Parser
	// IdleCPUs, when set, is asked before a query is split how many CPUs are idle
	// now; the query is split into at most that many parts, since on a machine busy
	// with other work the parts cannot run at once and splitting only adds work
	// (LoadavgIdleCPUs on Linux; nil: never busy).
	IdleCPUs func() int
	// Metrics receives the vigil_query_range_split_* counters; nil makes a private set.
	Metrics *metrics.Set
}

// Engine is a promql.QueryEngine that splits long range queries into parts evaluated
// at once by the engine it wraps (see the package documentation). Instant queries,
// short range queries and queries that may not be split go to that engine unchanged.
// It is safe for concurrent use.
type Engine struct {
	inner       promql.QueryEngine
	parallelism int
	minSteps    int64
	maxSamples  int
	parser      parser.Parser
	idleCPUs    func() int

	split        *metrics.Counter
	fallbacks    *metrics.Counter
	skippedShort *metrics.Counter
	skippedExpr  *metrics.Counter
	skippedBusy  *metrics.Counter
}

var _ promql.QueryEngine = (*Engine)(nil)

// New returns an Engine over inner.
func New(inner promql.QueryEngine, opts Options) *Engine {
	if opts.Parallelism <= 0 {
		opts.Parallelism = runtime.NumCPU()
	}
	if opts.MinStepsPerPart <= 0 {
		opts.MinStepsPerPart = DefaultMinStepsPerPart
	}
	// A part of one step would fold step() to 0 and lose the infos the engine adds
	// only to range evaluations (sort() is ineffective, ...).
	opts.MinStepsPerPart = max(opts.MinStepsPerPart, 2)
	if opts.Parser == nil {
		opts.Parser = parser.NewParser(parser.Options{})
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.NewSet()
	}
	set := opts.Metrics
	return &Engine{
		inner:        inner,
		parallelism:  opts.Parallelism,
		minSteps:     int64(opts.MinStepsPerPart),
		maxSamples:   opts.MaxSamples,
		parser:       opts.Parser,
		idleCPUs:     opts.IdleCPUs,
		split:        set.GetOrCreateCounter(`vigil_query_range_split_total`),
		fallbacks:    set.GetOrCreateCounter(`vigil_query_range_split_fallbacks_total`),
		skippedShort: set.GetOrCreateCounter(`vigil_query_range_split_skipped_total{reason="short"}`),
		skippedExpr:  set.GetOrCreateCounter(`vigil_query_range_split_skipped_total{reason="expression"}`),
		skippedBusy:  set.GetOrCreateCounter(`vigil_query_range_split_skipped_total{reason="busy"}`),
	}
}

// NewInstantQuery is the wrapped engine's.
func (e *Engine) NewInstantQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, ts time.Time) (promql.Query, error) {
	return e.inner.NewInstantQuery(ctx, q, opts, qs, ts)
}

// NewRangeQuery returns the wrapped engine's range query, or, when the range has
// enough steps and the expression may be split, a query that evaluates it in parts
// at once. Errors building the query are the wrapped engine's.
func (e *Engine) NewRangeQuery(ctx context.Context, q storage.Queryable, opts promql.QueryOpts, qs string, start, end time.Time, interval time.Duration) (promql.Query, error) {
	whole, err := e.inner.NewRangeQuery(ctx, q, opts, qs, start, end, interval)
	if err != nil {
		return nil, err
	}
	bounds := e.partBounds(start, end, interval)
	if len(bounds) < 2 {
		e.skippedShort.Inc()
		return whole, nil
	}
	if e.idleCPUs != nil {
		if idle := e.idleCPUs(); idle < len(bounds) {
			if idle < 2 {
				e.skippedBusy.Inc()
				return whole, nil
			}
			bounds = e.partBoundsOf(start, end, interval, idle)
		}
	}
	stmt, ok := whole.Statement().(*parser.EvalStmt)
	if !ok || !e.splittable(qs) {
		e.skippedExpr.Inc()
		return whole, nil
	}
	// Every part reads through a querier over the whole query's range, so that it
	// sees the series in the whole query's order (see the package documentation).
	mint, maxt := promql.FindMinMaxTime(stmt)
	pq := wholeRangeQueryable{q: q, mint: mint, maxt: maxt}
	wholeExpr := stmt.Expr.String()
	parts := make([]promql.Query, 0, len(bounds))
	closeParts := func() {
		for _, p := range parts {
			p.Close()
		}
	}
	for _, b := range bounds {
		p, err := e.inner.NewRangeQuery(ctx, pq, opts, qs, b.start, b.end, interval)
		if err != nil {
			// The whole query was built, so this is a lost race with ctx or a limit:
			// leave it to the whole query to report.
			closeParts()
			return whole, nil
		}
		parts = append(parts, p)
		ps, ok := p.Statement().(*parser.EvalStmt)
		if !ok || ps.Expr.String() != wholeExpr {
			closeParts()
			e.skippedExpr.Inc()
			return whole, nil
		}
	}
	e.split.Inc()
	return newSplitQuery(e, whole, parts), nil
}

// bound is one part's evaluation range.
type bound struct{ start, end time.Time }

// partBounds splits the steps of a range query into contiguous parts of at least
// e.minSteps steps, at most e.parallelism of them; fewer than two means no split. The
// first part starts at start and the last ends at end, so that together they evaluate
// exactly the whole query's steps.
func (e *Engine) partBounds(start, end time.Time, interval time.Duration) []bound {
	return e.partBoundsOf(start, end, interval, e.parallelism)
}

// partBoundsOf is partBounds with at most parts parts.
func (e *Engine) partBoundsOf(start, end time.Time, interval time.Duration, parts int) []bound {
	// Milliseconds as the engine counts them.
	startMs, endMs, stepMs := start.UnixNano()/int64(time.Millisecond), end.UnixNano()/int64(time.Millisecond), interval.Milliseconds()
	if stepMs <= 0 || startMs < 0 || endMs <= startMs || timestamp.FromTime(start) != startMs {
		// Sub-millisecond steps and times before 1970 round differently between
		// time.Time and the engine's milliseconds: not worth the doubt.
		return nil
	}
	steps := (endMs-startMs)/stepMs + 1
	n := min(int64(parts), steps/e.minSteps)
	if n < 2 {
		return nil
	}
	bounds := make([]bound, n)
	for j := range n {
		first, last := j*steps/n, (j+1)*steps/n-1
		b := bound{start: time.UnixMilli(startMs + first*stepMs), end: time.UnixMilli(startMs + last*stepMs)}
		if j == 0 {
			b.start = start
		}
		if j == n-1 {
			b.end = end
		}
		bounds[j] = b
	}
	return bounds
}

// wholeRangeQueryable opens every querier over [mint, maxt], whatever range is asked.
type wholeRangeQueryable struct {
	q          storage.Queryable
	mint, maxt int64
}

func (w wholeRangeQueryable) Querier(_, _ int64) (storage.Querier, error) {
	return w.q.Querier(w.mint, w.maxt)
}
