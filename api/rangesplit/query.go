package rangesplit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/prometheus/prometheus/util/stats"
)

// splitQuery is a range query evaluated as parts, consecutive in time, at once. whole
// is the same query unsplit: it answers Statement and String, and it is evaluated
// instead when a part fails other than by a timeout or cancellation (see Exec).
//
// As with the engine's queries, Exec may be called once; Cancel may be called from
// any goroutine at any time; the result stays valid until Close.
type splitQuery struct {
	e     *Engine
	whole promql.Query
	parts []promql.Query

	mu          sync.Mutex
	cancel      context.CancelFunc // of the running Exec; nil before
	wholeRan    bool               // Exec evaluated whole instead of the parts
	partsClosed bool
	stats       *stats.Statistics // of the parts, merged; nil before Exec
}

func newSplitQuery(e *Engine, whole promql.Query, parts []promql.Query) *splitQuery {
	return &splitQuery{e: e, whole: whole, parts: parts}
}

// Exec evaluates the parts at once and merges their matrices, annotations and
// statistics. A part's timeout or cancellation is the query's error. Any other error
// of a part, or parts that together held more than Options.MaxSamples samples, make
// Exec evaluate the whole query instead and return its result as it is.
func (q *splitQuery) Exec(ctx context.Context) *promql.Result {
	timers := stats.NewQueryTimers()
	execTimer, ctx := timers.GetSpanTimer(ctx, stats.ExecTotalTime)
	defer execTimer.Finish()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	q.mu.Lock()
	q.cancel = cancel
	q.mu.Unlock()

	evalTimer, _ := timers.GetSpanTimer(ctx, stats.EvalTotalTime)
	results, failed := q.execParts(ctx)
	evalTimer.Finish()
	if failed >= 0 {
		if err := results[failed].Err; isContextError(err) {
			return &promql.Result{Err: err, Warnings: results[failed].Warnings}
		}
		return q.execWhole(ctx)
	}

	mergeTimer, _ := timers.GetSpanTimer(ctx, stats.ResultSortTime)
	mats := make([]promql.Matrix, len(results))
	for i, r := range results {
		m, ok := r.Value.(promql.Matrix)
		if !ok {
			// A range query always gives a matrix; if not, let the engine answer.
			return q.execWhole(ctx)
		}
		mats[i] = m
	}
	st := mergeStats(q.parts, timers)
	if q.e.maxSamples > 0 && st.Samples.PeakSamples > q.e.maxSamples {
		// The parts held more than the limit between them: whether the whole query
		// exceeds it is the engine's to say.
		return q.execWhole(ctx)
	}
	var warnings annotations.Annotations
	for _, r := range results {
		warnings.Merge(r.Warnings)
	}
	for _, w := range warnings {
		if errors.Is(w, annotations.HistogramQuantileForcedMonotonicityInfo) {
			// This info counts its occurrences, but the engine's count depends on how
			// often the evaluation merged it (it doubles when merged with itself), not
			// on the data alone: only the whole query gives the engine's text.
			return q.execWhole(ctx)
		}
	}
	value := mergeMatrices(mats)
	mergeTimer.Finish()
	q.mu.Lock()
	q.stats = st
	q.mu.Unlock()
	return &promql.Result{Value: value, Warnings: warnings}
}

// execParts runs the parts on up to e.parallelism goroutines, the caller's among
// them, and returns their results and the index of the first part to fail (-1: none).
// Each goroutine takes the next part not yet taken until none is left, and Exec waits
// only for the parts taken: when the machine is busy and a helper goroutine does not
// get a core soon, the caller evaluates the parts itself instead of waiting for it.
// Once a part fails, the others are canceled and no more are taken.
func (q *splitQuery) execParts(ctx context.Context) ([]*promql.Result, int) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := len(q.parts)
	results := make([]*promql.Result, n)
	done := make([]chan struct{}, n)
	for i := range done {
		done[i] = make(chan struct{})
	}
	var (
		next   atomic.Int64
		once   sync.Once
		failed atomic.Int64
	)
	failed.Store(-1)
	work := func() {
		for {
			i := int(next.Add(1) - 1)
			if i >= n {
				return
			}
			if failed.Load() >= 0 {
				results[i] = &promql.Result{Err: context.Canceled}
			} else {
				results[i] = q.parts[i].Exec(ctx)
				if results[i].Err != nil {
					once.Do(func() { failed.Store(int64(i)); cancel() })
				}
			}
			close(done[i])
		}
	}
	for range min(q.e.parallelism, n) - 1 {
		go work()
	}
	work()
	for _, d := range done {
		<-d
	}
	return results, int(failed.Load())
}

// execWhole evaluates the whole query, freeing the parts' results first.
func (q *splitQuery) execWhole(ctx context.Context) *promql.Result {
	q.e.fallbacks.Inc()
	q.closeParts()
	q.mu.Lock()
	q.wholeRan = true
	q.mu.Unlock()
	return q.whole.Exec(ctx)
}

// isContextError reports whether err is a timeout or cancellation, as the engine
// reports them (ErrQueryTimeout, ErrQueryCanceled) or as a context error waiting for
// a concurrency slot.
func isContextError(err error) bool {
	var timeout promql.ErrQueryTimeout
	var canceled promql.ErrQueryCanceled
	return errors.As(err, &timeout) || errors.As(err, &canceled) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

func (q *splitQuery) closeParts() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.partsClosed {
		return
	}
	q.partsClosed = true
	for _, p := range q.parts {
		p.Close()
	}
}

// Close returns the memory of the result (the parts' or the whole query's) to the
// engine; the result must not be used after.
func (q *splitQuery) Close() {
	q.closeParts()
	q.whole.Close()
}

// Statement is the whole query's.
func (q *splitQuery) Statement() parser.Statement { return q.whole.Statement() }

// Stats returns the whole query's statistics if Exec evaluated it, else the parts'
// merged by mergeStats (empty before Exec).
func (q *splitQuery) Stats() *stats.Statistics {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.wholeRan {
		return q.whole.Stats()
	}
	if q.stats != nil {
		return q.stats
	}
	return &stats.Statistics{Timers: stats.NewQueryTimers(), Samples: stats.NewQuerySamples(false)}
}

// Cancel aborts a running Exec (the parts, or the whole query evaluated instead);
// before Exec and after it, it does nothing, as the engine's Cancel.
func (q *splitQuery) Cancel() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.cancel != nil {
		q.cancel()
	}
}

// String is the query's text.
func (q *splitQuery) String() string { return q.whole.String() }
