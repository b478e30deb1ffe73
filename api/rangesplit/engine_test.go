package rangesplit

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
)

// TestDifferentialAgainstEngine runs range queries through the splitting Engine and
// through the plain engine over the same TSDB (a block and the head) and requires
// identical results: values bit for bit, series order, errors and annotations.
func TestDifferentialAgainstEngine(t *testing.T) {
	db := openTestDB(t)
	plain := newEngine(50_000_000, time.Minute)
	split := New(plain, Options{Parallelism: 4, MinStepsPerPart: 10})
	// Experimental functions, for the queries at the end.
	xparser := parser.NewParser(parser.Options{EnableExperimentalFunctions: true})
	xplain := promql.NewEngine(promql.EngineOpts{
		MaxSamples: 50_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute,
		EnableAtModifier: true, EnableNegativeOffset: true, Parser: xparser,
		NoStepSubqueryIntervalFn: func(int64) int64 { return time.Minute.Milliseconds() },
	})
	xsplit := New(xplain, Options{Parallelism: 4, MinStepsPerPart: 10, Parser: xparser})

	// wantSplit: whether the query must be evaluated in parts over the default range.
	f := func(qs string, wantSplit bool) {
		t.Helper()
		ranges := []struct {
			start, end int64
			step       time.Duration
		}{
			{base + 30*60_000, base + span, 15 * time.Second}, // 841 steps, 4 parts, the last in the head only
			{base + 1234, base + 3*3600_000 + 999, 7 * time.Second},
			{base + 3*3600_000 + 1, base + span - 1, time.Minute}, // 59 steps, 4 parts of ~15
			{base - 3600_000, base + 3600_000, 2 * time.Minute},   // half before the data
			{base + span - 20*60_000, base + span + 20*60_000, 30 * time.Second},
		}
		for i, r := range ranges {
			start, end := at(r.start), at(r.end)
			_, want := runRange(t, plain, db, qs, start, end, r.step)
			q, got := runRange(t, split, db, qs, start, end, r.step)
			if d := diffResults(qs, got, want); d != "" {
				t.Errorf("%s (range %d): %s", qs, i, d)
			}
			if i == 0 && wantSplit && got.buildErr != nil {
				t.Errorf("%s: %v", qs, got.buildErr)
			}
			if i == 0 && got.buildErr == nil {
				if _, isSplit := q.(*splitQuery); isSplit != wantSplit {
					t.Errorf("%s: split %v, want %v", qs, isSplit, wantSplit)
				}
			}
			if q != nil {
				q.Close()
			}
		}
	}
	// Counters, rates and aggregations.
	f(`http_requests_total`, true)
	f(`rate(http_requests_total[5m])`, true)
	f(`increase(http_requests_total[10m])`, true)
	f(`irate(http_requests_total[1m])`, true)
	f(`resets(http_requests_total[30m])`, true)
	f(`sum by (job, code) (rate(http_requests_total[5m]))`, true)
	f(`sum without (instance) (rate(http_requests_total[5m]))`, true)
	f(`sum by (job) (rate(http_requests_total{code="500"}[5m])) / sum by (job) (rate(http_requests_total[5m]))`, true)
	f(`avg(http_requests_total) by (code)`, true)
	f(`count by (job) (http_requests_total)`, true)
	f(`stddev(rate(http_requests_total[5m]))`, true)
	f(`quantile(0.9, rate(http_requests_total[5m]))`, true)
	f(`count_values("value", sparse)`, true)
	f(`group by (job) (http_requests_total)`, true)
	// Float sums whose value depends on the order of the terms.
	f(`sum(precise)`, true)
	f(`avg(precise)`, true)
	f(`sum(rate(precise[5m]))`, true)
	f(`topk(3, precise)`, true)
	f(`bottomk(2, rate(http_requests_total[5m]))`, true)
	f(`topk(1, http_requests_total)`, true)
	// Histograms, classic and native.
	f(`histogram_quantile(0.9, sum by (le, job) (rate(request_duration_seconds_bucket[5m])))`, true)
	f(`histogram_quantile(0.5, request_duration_seconds_bucket)`, true)
	f(`histogram_quantile(0.9, rate(rpc_latency_seconds[5m]))`, true)
	f(`histogram_count(rate(rpc_latency_seconds[5m]))`, true)
	f(`sum(rate(rpc_latency_seconds[5m]))`, true)
	f(`rpc_latency_seconds`, true)
	f(`histogram_fraction(0, 4, rpc_latency_seconds)`, true)
	f(`rate(request_duration_seconds_sum[5m]) / rate(request_duration_seconds_count[5m])`, true)
	// Gauges and functions.
	f(`deriv(temperature[10m])`, true)
	f(`predict_linear(temperature[10m], 600)`, true)
	f(`delta(temperature[10m])`, true)
	f(`changes(temperature[10m])`, true)
	f(`max_over_time(temperature[7m])`, true)
	f(`quantile_over_time(0.3, temperature[13m])`, true)
	f(`timestamp(temperature)`, true)
	f(`timestamp(sparse)`, true)
	f(`time()`, true)
	f(`time() - timestamp(http_requests_total)`, true)
	f(`hour()`, true)
	f(`minute(timestamp(temperature))`, true)
	f(`vector(time())`, true)
	f(`scalar(sum(sparse))`, true)
	f(`1 + 1`, true)
	f(`vector(1)`, true)
	f(`label_replace(temperature, "floor", "$1", "room", "(.*)")`, true)
	f(`sort_desc(sum by (job) (http_requests_total))`, true)
	f(`temperature > 22`, true)
	f(`temperature > bool 22`, true)
	f(`clamp(temperature, 18, 22)`, true)
	f(`round(temperature, 0.5)`, true)
	// Absent, sparse and stale series.
	f(`absent(nonexistent)`, true)
	f(`absent(http_requests_total)`, true)
	f(`absent(sparse{k="1"})`, true)
	f(`absent_over_time(sparse{k="2"}[5m])`, true)
	f(`last_over_time(sparse[30m])`, true)
	f(`sparse`, true)
	f(`flappy`, true)
	f(`count_over_time(flappy[10m])`, true)
	f(`nonexistent`, true)
	f(`rate(nonexistent[5m])`, true)
	f(`sum(nonexistent)`, true)
	// Offsets, subqueries and fixed @ timestamps.
	f(`http_requests_total offset 10m`, true)
	f(`rate(http_requests_total[5m] offset 5m)`, true)
	f(`rate(http_requests_total[5m] offset -5m)`, true)
	f(`max_over_time(rate(http_requests_total[5m])[30m:1m])`, true)
	f(`avg_over_time(temperature[10m:])`, true)
	f(`min_over_time(temperature[17m:45s] offset 3m)`, true)
	f(`rate(http_requests_total[5m:20s])`, true)
	f(`max_over_time(max_over_time(sum(rate(http_requests_total[1m]))[15m:1m])[5m:30s])`, true)
	f(`temperature @ 1700003000`, true)
	f(`rate(http_requests_total[5m] @ 1700004000)`, true)
	f(`max_over_time(temperature[10m:1m] @ 1700005000)`, true)
	f(`temperature - temperature @ 1700003000`, true)
	f(`timestamp(temperature @ 1700003000)`, true)
	f(`rate(http_requests_total[step()])`, true)
	f(`rate(http_requests_total[5m] offset step())`, true)
	f(`rate(http_requests_total[2 * step()])`, true)
	// Matching and set operators.
	f(`temperature * on (room) group_left () (temperature / 2)`, true)
	f(`http_requests_total and on (job) (sum by (job) (rate(http_requests_total[5m])) > 1)`, true)
	f(`http_requests_total unless http_requests_total{code="500"}`, true)
	f(`http_requests_total or temperature`, true)
	// Annotations.
	f(`rate(temperature[5m])`, true)
	f(`histogram_quantile(0.9, temperature)`, true)
	f(`sum(rpc_latency_seconds) + sum(http_requests_total)`, true)
	f(`sort(temperature)`, true)
	f(`quantile(2, temperature)`, true)
	// Errors while evaluating: in every part, or in the last part only.
	f(`http_requests_total + on (job) http_requests_total`, true)
	f(`label_replace(http_requests_total, "instance", "x", "", "")`, true)
	f(`label_replace(late, "instance", "z", "", "")`, true)
	f(`sum(late) + on () group_left late`, true)
	// Errors building the query: the engine's.
	f(`rate(`, false)
	f(`rate(http_requests_total)`, false)
	f(`"a string"`, false)
	f(`http_requests_total[5m]`, false)
	f(`http_requests_total{job=~"("}`, false)
	// Depends on the query's start or end: not split, and the engine's answer.
	f(`temperature @ start()`, false)
	f(`temperature @ end()`, false)
	f(`rate(http_requests_total[5m] @ end())`, false)
	f(`max_over_time(temperature[10m:1m] @ start())`, false)
	f(`temperature - temperature @ start()`, false)
	f(`rate(http_requests_total[range()])`, false)
	f(`http_requests_total offset (range() / 4)`, false)
	f(`max_over_time(temperature[5m:range() / 100])`, false)

	// Experimental functions.
	plain, split = xplain, xsplit
	f(`limitk(2, http_requests_total)`, true)
	f(`limit_ratio(0.5, http_requests_total)`, true)
	f(`limit_ratio(-0.3, precise)`, true)
	f(`sort_by_label(temperature, "room")`, true)
	f(`mad_over_time(temperature[10m])`, true)
	f(`ts_of_max_over_time(temperature[10m])`, true)
	f(`double_exponential_smoothing(temperature[10m], 0.5, 0.5)`, true)
	f(`vector(start())`, false)
	f(`vector(end())`, false)
	f(`vector(range())`, false)
	f(`temperature > bool vector(end() - 600)`, false)
	f(`info(http_requests_total)`, false)
}

// TestNotSplit lists the expressions Splittable refuses and some it accepts.
func TestNotSplit(t *testing.T) {
	p := parser.NewParser(parser.Options{EnableExperimentalFunctions: true})
	f := func(qs string, want bool) {
		t.Helper()
		expr, err := p.ParseExpr(qs)
		if err != nil {
			t.Fatalf("%s: %v", qs, err)
		}
		if got := Splittable(expr); got != want {
			t.Errorf("Splittable(%s) = %v, want %v", qs, got, want)
		}
	}
	f(`foo @ start()`, false)
	f(`foo @ end()`, false)
	f(`sum(rate(foo[5m] @ start()))`, false)
	f(`foo[10m:1m] @ end()`, false)
	f(`max_over_time((foo @ start())[10m:1m])`, false)
	f(`rate(foo[range()])`, false)
	f(`foo offset (range() / 2)`, false)
	f(`foo[1h:range()]`, false)
	f(`min_of(range(), 1h)`, false)
	f(`vector(start())`, false)
	f(`vector(end())`, false)
	f(`foo > bool vector(range())`, false)
	f(`info(foo)`, false)
	f(`foo @ 100`, true)
	f(`rate(foo[step()])`, true)
	f(`rate(foo[max_of(step(), 1m)])`, true)
	f(`foo offset step()`, true)
	f(`vector(step())`, true)
	f(`time()`, true)
	f(`sum by (a) (rate(foo{b="c"}[5m] offset 1h))`, true)
	f(`foo[30m:1m] @ 1000`, true)
}

// TestAtStartIsNotSplit shows why: `@ start()` of a part is not the query's start.
func TestAtStartIsNotSplit(t *testing.T) {
	db := openTestDB(t)
	plain := newEngine(50_000_000, time.Minute)
	split := New(plain, Options{Parallelism: 4, MinStepsPerPart: 10})
	start, end := at(base+30*60_000), at(base+span)
	for _, qs := range []string{`temperature @ start()`, `temperature @ end()`, `rate(temperature[5m] @ end())`} {
		q, err := split.NewRangeQuery(context.Background(), db, nil, qs, start, end, 15*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := q.(*splitQuery); ok {
			t.Errorf("%s was split", qs)
		}
		q.Close()
	}
	// Evaluated in parts regardless, the answers would differ from the engine's.
	qs := `temperature @ start()`
	_, want := runRange(t, plain, db, qs, start, end, 15*time.Second)
	bounds := split.partBounds(start, end, 15*time.Second)
	parts := make([]promql.Query, len(bounds))
	for i, b := range bounds {
		var err error
		if parts[i], err = plain.NewRangeQuery(context.Background(), db, nil, qs, b.start, b.end, 15*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	forced := newSplitQuery(split, nil, parts)
	got := result{res: forced.Exec(context.Background())}
	if diffResults(qs, got, want) == "" {
		t.Errorf("%s evaluated in parts gives the engine's answer; the test shows nothing", qs)
	}
	forced.closeParts()
}

// TestPartBounds checks that the parts are contiguous, step-aligned and evaluate the
// whole query's steps exactly.
func TestPartBounds(t *testing.T) {
	e := New(nil, Options{Parallelism: 4, MinStepsPerPart: 30})
	f := func(start, end time.Time, step time.Duration, wantParts int) {
		t.Helper()
		bounds := e.partBounds(start, end, step)
		if len(bounds) != wantParts && !(wantParts == 1 && len(bounds) == 0) {
			t.Fatalf("%s..%s/%s: %d parts, want %d", start, end, step, len(bounds), wantParts)
		}
		if len(bounds) == 0 {
			return
		}
		ms := func(t time.Time) int64 { return t.UnixNano() / 1e6 }
		var steps []int64
		for ts := ms(start); ts <= ms(end); ts += step.Milliseconds() {
			steps = append(steps, ts)
		}
		var got []int64
		for _, b := range bounds {
			n := 0
			for ts := ms(b.start); ts <= ms(b.end); ts += step.Milliseconds() {
				got = append(got, ts)
				n++
			}
			if n < 30 {
				t.Errorf("a part of %d steps", n)
			}
		}
		if len(got) != len(steps) {
			t.Fatalf("parts evaluate %d steps, want %d", len(got), len(steps))
		}
		for i := range got {
			if got[i] != steps[i] {
				t.Fatalf("step %d: %d, want %d", i, got[i], steps[i])
			}
		}
		if !bounds[0].start.Equal(start) || !bounds[len(bounds)-1].end.Equal(end) {
			t.Errorf("parts span %s..%s, want %s..%s", bounds[0].start, bounds[len(bounds)-1].end, start, end)
		}
	}
	t0 := time.Unix(1_700_000_000, 0)
	f(t0, t0.Add(time.Hour), 15*time.Second, 4)                                    // 241 steps
	f(t0, t0.Add(time.Hour), time.Minute, 2)                                       // 61 steps
	f(t0, t0.Add(59*time.Minute), time.Minute, 2)                                  // 60 steps: 2 of 30
	f(t0, t0.Add(58*time.Minute), time.Minute, 1)                                  // 59 steps
	f(t0.Add(123456789), t0.Add(time.Hour+999*time.Millisecond), 7*time.Second, 4) // unaligned
	f(t0, t0.Add(time.Second), 1500*time.Microsecond, 4)                           // a step in ms as the engine truncates it
	f(t0, t0.Add(time.Second), 500*time.Microsecond, 1)                            // under 1ms: not split
	f(time.Unix(-3600, 0), time.Unix(0, 0), 15*time.Second, 1)                     // before 1970: not split
	f(t0, t0, 15*time.Second, 1)
}

// TestInstantQueriesPassThrough checks that instant queries are the engine's own.
func TestInstantQueriesPassThrough(t *testing.T) {
	db := openTestDB(t)
	plain := newEngine(50_000_000, time.Minute)
	split := New(plain, Options{Parallelism: 4, MinStepsPerPart: 2})
	for _, qs := range []string{`sum(rate(http_requests_total[5m]))`, `"a string"`, `1 + 1`, `rpc_latency_seconds[5m]`} {
		q, err := split.NewInstantQuery(context.Background(), db, nil, qs, at(base+span/2))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := q.(*splitQuery); ok {
			t.Fatalf("%s: instant query split", qs)
		}
		want, err := plain.NewInstantQuery(context.Background(), db, nil, qs, at(base+span/2))
		if err != nil {
			t.Fatal(err)
		}
		g, w := q.Exec(context.Background()), want.Exec(context.Background())
		if g.Err != nil || w.Err != nil || g.Value.String() != w.Value.String() {
			t.Errorf("%s: got %v (%v), want %v (%v)", qs, g.Value, g.Err, w.Value, w.Err)
		}
		q.Close()
		want.Close()
	}
}

// TestMaxSamples checks the engine's sample limit: a query that holds too many
// samples fails split as it fails whole, also when each part alone stays under it.
func TestMaxSamples(t *testing.T) {
	db := openTestDB(t)
	start, end := at(base+30*60_000), at(base+span)
	qs := `http_requests_total` // 12 series x 841 steps = 10,092 samples held at the end
	for _, limit := range []int{100, 8000, 11000} {
		plain := newEngine(limit, time.Minute)
		split := New(plain, Options{Parallelism: 4, MinStepsPerPart: 10, MaxSamples: limit})
		_, want := runRange(t, plain, db, qs, start, end, 15*time.Second)
		q, got := runRange(t, split, db, qs, start, end, 15*time.Second)
		if d := diffResults(qs, got, want); d != "" {
			t.Errorf("max samples %d: %s", limit, d)
		}
		var tooMany promql.ErrTooManySamples
		if wantErr := limit < 10092; errors.As(got.res.Err, &tooMany) != wantErr {
			t.Errorf("max samples %d: error %v", limit, got.res.Err)
		}
		if _, ok := q.(*splitQuery); !ok {
			t.Errorf("max samples %d: not split", limit)
		}
		q.Close()
	}
}

// TestStats checks the merged sample statistics of a split query.
func TestStats(t *testing.T) {
	db := openTestDB(t)
	plain := newEngine(50_000_000, time.Minute)
	split := New(plain, Options{Parallelism: 4, MinStepsPerPart: 10})
	start, end := at(base+30*60_000), at(base+span)
	qs := `sum(rate(http_requests_total[5m]))`
	whole, _ := runRange(t, plain, db, qs, start, end, 15*time.Second)
	q, res := runRange(t, split, db, qs, start, end, 15*time.Second)
	if res.res.Err != nil {
		t.Fatal(res.res.Err)
	}
	got, want := q.Stats().Samples, whole.Stats().Samples
	if got.TotalSamples != want.TotalSamples {
		t.Errorf("total samples %d, want %d (each step counts its whole window)", got.TotalSamples, want.TotalSamples)
	}
	if got.SamplesRead < want.SamplesRead || got.SamplesRead > want.SamplesRead+4*12*20 {
		t.Errorf("samples read %d, want %d plus at most a window per part and series", got.SamplesRead, want.SamplesRead)
	}
	if got.PeakSamples < want.PeakSamples {
		t.Errorf("peak samples %d, want at least %d", got.PeakSamples, want.PeakSamples)
	}
	if got.TotalSeries != 4*want.TotalSeries {
		t.Errorf("series touched %d, want 4 x %d", got.TotalSeries, want.TotalSeries)
	}
	if q.Stats().Timers == nil {
		t.Error("no timers")
	}
	if q.String() != qs || q.Statement().String() != whole.Statement().String() {
		t.Errorf("String %q, Statement %q", q.String(), q.Statement())
	}
	q.Close()
	whole.Close()
}

// blockingQueryable's series sets block until their Select's context is done; it
// signals entered once per Select.
type blockingQueryable struct{ entered chan struct{} }

func (b blockingQueryable) Querier(_, _ int64) (storage.Querier, error) {
	return blockingQuerier(b), nil
}

type blockingQuerier struct{ entered chan struct{} }

func (b blockingQuerier) Select(ctx context.Context, _ bool, _ *storage.SelectHints, _ ...*labels.Matcher) storage.SeriesSet {
	return &blockingSeriesSet{ctx: ctx, entered: b.entered}
}
func (blockingQuerier) LabelValues(context.Context, string, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}
func (blockingQuerier) LabelNames(context.Context, *storage.LabelHints, ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	return nil, nil, nil
}
func (blockingQuerier) Close() error { return nil }

type blockingSeriesSet struct {
	ctx     context.Context
	entered chan struct{}
}

func (s *blockingSeriesSet) Next() bool {
	s.entered <- struct{}{}
	<-s.ctx.Done()
	return false
}
func (*blockingSeriesSet) At() storage.Series                { return nil }
func (s *blockingSeriesSet) Err() error                      { return s.ctx.Err() }
func (*blockingSeriesSet) Warnings() annotations.Annotations { return nil }

// TestCancelAndTimeout checks that a split query is canceled (Cancel, a canceled
// context) and times out (the engine's timeout) with the engine's errors.
func TestCancelAndTimeout(t *testing.T) {
	start, end := at(base), at(base+span)
	qs := `sum(rate(http_requests_total[5m]))`
	// exec runs qs on e over storage whose reads block until canceled, calls stop
	// once `wait` reads have started, and returns Exec's error.
	exec := func(e promql.QueryEngine, wantSplit bool, wait int, ctx context.Context, stop func(promql.Query)) error {
		t.Helper()
		bq := blockingQueryable{entered: make(chan struct{}, 16)}
		q, err := e.NewRangeQuery(context.Background(), bq, nil, qs, start, end, 15*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := q.(*splitQuery); ok != wantSplit {
			t.Fatalf("%T: split %v, want %v", e, ok, wantSplit)
		}
		done := make(chan *promql.Result)
		go func() { done <- q.Exec(ctx) }()
		for range wait {
			<-bq.entered
		}
		stop(q)
		res := <-done
		q.Close()
		if res.Err == nil {
			t.Fatalf("%T: no error", e)
		}
		return res.Err
	}
	same := func(what string, got, want error) {
		t.Helper()
		if g, w := fmt.Sprintf("%T %v", got, got), fmt.Sprintf("%T %v", want, want); g != w {
			t.Errorf("%s: got %s, want %s", what, g, w)
		}
	}

	plain := newEngine(50_000_000, time.Hour)
	split := New(plain, Options{Parallelism: 2, MinStepsPerPart: 10})
	cancelQuery := func(q promql.Query) { q.Cancel() }
	got := exec(split, true, 2, context.Background(), cancelQuery)
	same("Cancel", got, exec(plain, false, 1, context.Background(), cancelQuery))
	if !errors.Is(got, context.Canceled) {
		t.Errorf("Cancel: %T %v, want a cancellation", got, got)
	}

	ctxErr := func(e promql.QueryEngine, wantSplit bool, wait int) error {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		return exec(e, wantSplit, wait, ctx, func(promql.Query) { cancel() })
	}
	same("context canceled", ctxErr(split, true, 2), ctxErr(plain, false, 1))
	// Canceled before Exec.
	canceledCtx, cancel := context.WithCancel(context.Background())
	cancel()
	nop := func(promql.Query) {}
	same("context canceled before Exec", exec(split, true, 0, canceledCtx, nop), exec(plain, false, 0, canceledCtx, nop))

	// The engine's own timeout; waits for it to pass (no assertion on time).
	plain = newEngine(50_000_000, 500*time.Millisecond)
	split = New(plain, Options{Parallelism: 2, MinStepsPerPart: 10})
	got = exec(split, true, 0, context.Background(), nop)
	same("timeout", got, exec(plain, false, 0, context.Background(), nop))
	if !errors.Is(got, context.DeadlineExceeded) {
		t.Errorf("timeout: %T %v, want a deadline", got, got)
	}

	// Cancel before and after Exec does nothing, as the engine's.
	db := openTestDB(t)
	split = New(newEngine(50_000_000, time.Minute), Options{Parallelism: 2, MinStepsPerPart: 10})
	q, err := split.NewRangeQuery(context.Background(), db, nil, qs, start, end, 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	q.Cancel()
	if res := q.Exec(context.Background()); res.Err != nil {
		t.Errorf("after an early Cancel: %v", res.Err)
	}
	q.Cancel()
	q.Close()
}

// TestBusyMachine checks that a query is split into no more parts than Options.IdleCPUs
// reports idle CPUs, and not at all under 2.
func TestBusyMachine(t *testing.T) {
	db := openTestDB(t)
	plain := newEngine(50_000_000, time.Minute)
	start, end := at(base+30*60_000), at(base+span)
	qs := `sum(rate(http_requests_total[5m]))`
	_, want := runRange(t, plain, db, qs, start, end, 15*time.Second)
	for idle, wantParts := range []int{0, 0, 2, 3, 4, 4} {
		split := New(plain, Options{Parallelism: 4, MinStepsPerPart: 10, IdleCPUs: func() int { return idle }})
		q, got := runRange(t, split, db, qs, start, end, 15*time.Second)
		parts := 0
		if sq, ok := q.(*splitQuery); ok {
			parts = len(sq.parts)
		}
		if parts != wantParts {
			t.Errorf("%d idle CPUs: %d parts, want %d", idle, parts, wantParts)
		}
		if d := diffResults(qs, got, want); d != "" {
			t.Errorf("%d idle CPUs: %s", idle, d)
		}
		q.Close()
	}
}

func TestParseLoadavg(t *testing.T) {
	f := func(in string, want int, wantOK bool) {
		t.Helper()
		if got, ok := parseLoadavgRunning([]byte(in)); got != want || ok != wantOK {
			t.Errorf("parseLoadavgRunning(%q) = %d, %v, want %d, %v", in, got, ok, want, wantOK)
		}
	}
	f("0.52 0.58 0.59 3/467 12345\n", 3, true)
	f("6.95 6.17 4.45 1/122 12113", 1, true)
	f("0.52 0.58 0.59", 0, false)
	f("0.52 0.58 0.59 x/467 1", 0, false)
	f("0.52 0.58 0.59 0/467 1", 0, false)
	f("", 0, false)
	if n := LoadavgIdleCPUs(); n < 0 || n > runtime.NumCPU() {
		t.Errorf("LoadavgIdleCPUs() = %d", n)
	}
}
