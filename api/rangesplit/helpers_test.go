package rangesplit

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/tsdbutil"
)

// base is the first sample's time (ms): an hour boundary. The test data span 4h at a
// 15s interval; the first 2h are also compacted into a block, so that queries read a
// block and the head, whose series orders differ (label order vs creation order).
const (
	base     = int64(1_699_999_200_000)
	interval = int64(15_000)
	span     = 4 * 3600_000
)

func at(ms int64) time.Time { return time.UnixMilli(ms) }

// newEngine is the engine as store.Open builds it, with the given sample limit and
// timeout.
func newEngine(maxSamples int, timeout time.Duration) *promql.Engine {
	return promql.NewEngine(promql.EngineOpts{
		MaxSamples:               maxSamples,
		Timeout:                  timeout,
		LookbackDelta:            5 * time.Minute,
		EnableAtModifier:         true,
		EnableNegativeOffset:     true,
		NoStepSubqueryIntervalFn: func(int64) int64 { return time.Minute.Milliseconds() },
	})
}

// openTestDB writes the test data into a TSDB in a temporary directory.
func openTestDB(t testing.TB) *tsdb.DB {
	t.Helper()
	opts := tsdb.DefaultOptions()
	opts.OutOfOrderTimeWindow = 0
	db, err := tsdb.Open(t.TempDir(), nil, nil, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	app := db.Appender(context.Background())
	add := func(l labels.Labels, ts int64, v float64) {
		if _, err := app.Append(0, l, ts, v); err != nil {
			t.Fatalf("append %s %d: %v", l, ts, err)
		}
	}
	// Series are created in an order unlike their label order, so that a single
	// head's order (creation) and a merged querier's (labels) differ.
	for _, i := range []string{"9", "3", "7", "1", "5", "0", "8", "2", "6", "4"} {
		n := int(i[0] - '0')
		l := labels.FromStrings("__name__", "precise", "i", i)
		for ts := base; ts <= base+span; ts += interval {
			// Magnitudes far apart: a sum's value depends on the order of the terms.
			v := []float64{1e17, 1, -1e17, 3.3, 1e-3, 7e16, -7e16, 0.1, 2.5e15, -1}[n] * (1 + float64((ts-base)/interval%5)/7)
			add(l, ts, v)
		}
	}
	for j, job := range []string{"web", "api"} {
		for k, inst := range []string{"c", "a", "b"} {
			for c, code := range []string{"500", "200"} {
				l := labels.FromStrings("__name__", "http_requests_total", "job", job, "instance", inst, "code", code)
				cnt := 0.0
				for ts := base; ts <= base+span; ts += interval {
					cnt += float64(1 + (j+k+c)%4 + int((ts/interval)%3))
					if j == 1 && k == 0 && c == 0 && ts == base+90*60_000 {
						cnt = 2 // a counter reset
					}
					add(l, ts, cnt)
				}
			}
		}
	}
	for r, room := range []string{"kitchen", "attic", "cellar"} {
		l := labels.FromStrings("__name__", "temperature", "room", room)
		for ts := base; ts <= base+span; ts += interval {
			add(l, ts, 20+5*math.Sin(float64(ts-base)/600_000+float64(r)))
		}
	}
	// Classic histograms; the "web" le="0.5" bucket dips below le="0.1" at times, for
	// histogram_quantile's forced-monotonicity info.
	for j, job := range []string{"web", "api"} {
		les := []string{"0.1", "0.5", "1", "+Inf"}
		for ts := base; ts <= base+span; ts += interval {
			step := float64((ts - base) / interval)
			for b, le := range les {
				v := step * float64(b+1+j)
				if j == 0 && b == 1 && int(step)%40 == 7 {
					v = step*float64(b+1+j) - 3*step
				}
				add(labels.FromStrings("__name__", "request_duration_seconds_bucket", "job", job, "le", le), ts, v)
			}
			add(labels.FromStrings("__name__", "request_duration_seconds_sum", "job", job), ts, step*0.3*float64(j+1))
			add(labels.FromStrings("__name__", "request_duration_seconds_count", "job", job), ts, step*float64(4+j))
		}
	}
	// Series with gaps longer than the lookback, and one stale marker.
	for k := range 3 {
		l := labels.FromStrings("__name__", "sparse", "k", fmt.Sprint(k))
		for ts := base; ts <= base+span; ts += interval {
			if (ts-base)/(20*60_000)%3 == int64(k) {
				add(l, ts, float64(ts-base)/1000)
			}
		}
	}
	add(labels.FromStrings("__name__", "flappy"), base+100*60_000, 1)
	add(labels.FromStrings("__name__", "flappy"), base+101*60_000, math.Float64frombits(value.StaleNaN))
	// Series from 3h on only, whose label_replace collide: an error in the last part.
	for _, inst := range []string{"x", "y"} {
		l := labels.FromStrings("__name__", "late", "instance", inst)
		for ts := base + 3*3600_000; ts <= base+span; ts += interval {
			add(l, ts, 1)
		}
	}
	// Native histograms, as counters.
	for s, svc := range []string{"a", "b"} {
		l := labels.FromStrings("__name__", "rpc_latency_seconds", "service", svc)
		for ts, i := base, int64(0); ts <= base+span; ts, i = ts+interval, i+1 {
			h := tsdbutil.GenerateTestHistogram(i*int64(s+1) + 1)
			h.CounterResetHint = histogram.UnknownCounterReset
			if _, err := app.AppendHistogram(0, l, ts, h, nil); err != nil {
				t.Fatalf("append histogram: %v", err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := db.CompactHead(tsdb.NewRangeHead(db.Head(), base, base+2*3600_000-1)); err != nil {
		t.Fatal(err)
	}
	if len(db.Blocks()) == 0 {
		t.Fatal("no block was cut")
	}
	return db
}

// result is what a query gives: an error building it, or Exec's result.
type result struct {
	buildErr error
	res      *promql.Result
}

func runRange(t testing.TB, e promql.QueryEngine, q storage.Queryable, qs string, start, end time.Time, step time.Duration) (promql.Query, result) {
	t.Helper()
	qry, err := e.NewRangeQuery(context.Background(), q, nil, qs, start, end, step)
	if err != nil {
		return nil, result{buildErr: err}
	}
	return qry, result{res: qry.Exec(context.Background())}
}

// diffResults describes how got differs from want ("" if it does not): errors by
// type and message, values exactly (labels, order, timestamps, float bits,
// histograms), annotations as sets.
func diffResults(qs string, got, want result) string {
	if (got.buildErr == nil) != (want.buildErr == nil) || got.buildErr != nil && got.buildErr.Error() != want.buildErr.Error() {
		return fmt.Sprintf("building: got error %v, want %v", got.buildErr, want.buildErr)
	}
	if got.buildErr != nil {
		return ""
	}
	g, w := got.res, want.res
	if (g.Err == nil) != (w.Err == nil) || g.Err != nil && (g.Err.Error() != w.Err.Error() || fmt.Sprintf("%T", g.Err) != fmt.Sprintf("%T", w.Err)) {
		return fmt.Sprintf("got error %T %v, want %T %v", g.Err, g.Err, w.Err, w.Err)
	}
	if g.Err == nil {
		if d := diffValues(g.Value, w.Value); d != "" {
			return d
		}
	}
	gw, gi := g.Warnings.AsStrings(qs, 0, 0)
	ww, wi := w.Warnings.AsStrings(qs, 0, 0)
	slices.Sort(gw)
	slices.Sort(gi)
	slices.Sort(ww)
	slices.Sort(wi)
	if !slices.Equal(gw, ww) || !slices.Equal(gi, wi) {
		return fmt.Sprintf("annotations: got warnings %q infos %q, want %q %q", gw, gi, ww, wi)
	}
	return ""
}

func diffValues(got, want any) string {
	gm, ok1 := got.(promql.Matrix)
	wm, ok2 := want.(promql.Matrix)
	if !ok1 || !ok2 {
		return fmt.Sprintf("got a %T, want a %T", got, want)
	}
	if (gm == nil) != (wm == nil) {
		return fmt.Sprintf("got matrix nil=%v, want nil=%v", gm == nil, wm == nil)
	}
	if len(gm) != len(wm) {
		return fmt.Sprintf("got %d series, want %d:\ngot %v\nwant %v", len(gm), len(wm), gm, wm)
	}
	for i := range gm {
		g, w := gm[i], wm[i]
		if !labels.Equal(g.Metric, w.Metric) || g.DropName != w.DropName {
			return fmt.Sprintf("series %d: got %s, want %s", i, g.Metric, w.Metric)
		}
		if len(g.Floats) != len(w.Floats) || len(g.Histograms) != len(w.Histograms) {
			return fmt.Sprintf("series %s: got %d floats %d histograms, want %d %d", g.Metric, len(g.Floats), len(g.Histograms), len(w.Floats), len(w.Histograms))
		}
		for j := range g.Floats {
			if g.Floats[j].T != w.Floats[j].T || math.Float64bits(g.Floats[j].F) != math.Float64bits(w.Floats[j].F) {
				return fmt.Sprintf("series %s point %d: got %v, want %v", g.Metric, j, g.Floats[j], w.Floats[j])
			}
		}
		for j := range g.Histograms {
			if g.Histograms[j].T != w.Histograms[j].T || !g.Histograms[j].H.Equals(w.Histograms[j].H) {
				return fmt.Sprintf("series %s histogram %d: got %v, want %v", g.Metric, j, g.Histograms[j], w.Histograms[j])
			}
		}
	}
	return ""
}
