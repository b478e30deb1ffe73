package rollup

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vigilhq/vigil/config"
)

// TestOutputNames checks output series names against VictoriaMetrics stream
// aggregation's naming: <metric>:<interval>[_by_<sorted by>|_without_<sorted without>]_<output>.
func TestOutputNames(t *testing.T) {
	f := func(interval string, by, without []string, output, want string) {
		t.Helper()
		se := newSyncEngine(t, 1, rc("r", `{__name__="http_requests_total"}`, interval, "", by, without, output))
		se.push(0, `http_requests_total{service="api",code="200",instance="a"}`, 1000, 1)
		se.push(0, `http_requests_total{service="api",code="200",instance="a"}`, 2000, 2)
		se.idle(math.MaxInt32 * 1000)
		if len(se.results) != 1 || len(se.results[0].Series) == 0 {
			t.Fatalf("no result for %s", output)
		}
		if got := se.results[0].Series[0].Labels.String(); got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
	f("5s", []string{"service", "code"}, nil, "rate_sum", `{__name__="http_requests_total:5s_by_code_service_rate_sum", code="200", service="api"}`)
	f("5s", []string{"code", "service", "code", "__name__"}, nil, "count_samples", `{__name__="http_requests_total:5s_by_code_service_count_samples", code="200", service="api"}`)
	f("1m", nil, []string{"instance"}, "sum_samples", `{__name__="http_requests_total:1m_without_instance_sum_samples", code="200", service="api"}`)
	f("90m", nil, []string{"instance", "code"}, "max", `{__name__="http_requests_total:1h30m_without_code_instance_max", service="api"}`)
	f("10s", nil, nil, "last", `{__name__="http_requests_total:10s_last", code="200", instance="a", service="api"}`)
	// The interval as written in the config file, as VictoriaMetrics does.
	c := rc("r", `{__name__="m"}`, "60s", "", nil, nil, "max")
	c.IntervalText = "60s"
	if r, err := compileRule(c); err != nil || r.suffix != ":60s_" {
		t.Errorf("interval text: suffix %q, %v", r.suffix, err)
	}
	f("5s", []string{"service"}, nil, "quantiles(0.5)", `{__name__="http_requests_total:5s_by_service_quantiles", quantile="0.5", service="api"}`)
	f("5s", []string{"service"}, nil, "histogram_bucket", `{__name__="http_requests_total:5s_by_service_histogram_bucket", service="api", vmrange="1.896e+00...2.154e+00"}`)
	f("5s", []string{"service", "zone"}, nil, "count_series", `{__name__="http_requests_total:5s_by_service_zone_count_series", service="api"}`)
}

func TestParseOutputErrors(t *testing.T) {
	for _, spec := range []string{"summ", "quantiles(", "quantiles(1.5)", "quantiles(a)", "", "rate"} {
		if _, err := parseOutput(spec); err == nil {
			t.Errorf("parseOutput(%q) succeeded", spec)
		}
	}
	if _, err := compileRules([]config.RollupConfig{rc("a", `{`, "5s", "", nil, nil, "max")}); err == nil {
		t.Error("bad selector accepted")
	}
	if _, err := compileRules([]config.RollupConfig{rc("a", `{a="b"}`, "5s", "", nil, nil, "max", "max")}); err == nil {
		t.Error("duplicate output accepted")
	}
	if _, err := compileRules([]config.RollupConfig{rc("a", `{a="b"}`, "5s", "", nil, nil, "max"), rc("a", `{a="c"}`, "5s", "", nil, nil, "max")}); err == nil {
		t.Error("duplicate rollup name accepted")
	}
}

// TestOutputs checks each output over a small hand-computed input, counter resets
// included: the counter goes 10, 20, 5 (reset), 8 in the first window.
func TestOutputs(t *testing.T) {
	se := newSyncEngine(t, 2, rc("r", `{__name__=~"c|g"}`, "10s", "2s", []string{"job"}, nil,
		"total", "increase", "rate_sum", "rate_avg", "count_samples", "count_series", "sum_samples", "avg", "min", "max", "last", "stddev", "stdvar"))
	se.push(0, `c{job="x",i="1"}`, 1000, 10)
	se.push(0, `c{job="x",i="1"}`, 3000, 20)
	se.push(0, `c{job="x",i="1"}`, 5000, 5)
	se.push(1, `c{job="x",i="2"}`, 2000, 100)
	se.push(0, `c{job="x",i="1"}`, 9000, 8)
	se.push(1, `c{job="x",i="2"}`, 12000, 110)
	se.push(0, `c{job="x",i="1"}`, 14000, 9)
	se.idle(100_000)
	want := `{__name__="c:10s_by_job_avg", job="x"} 28.6 @10000
{__name__="c:10s_by_job_count_samples", job="x"} 5 @10000
{__name__="c:10s_by_job_count_series", job="x"} 2 @10000
{__name__="c:10s_by_job_increase", job="x"} 18 @10000
{__name__="c:10s_by_job_last", job="x"} 8 @10000
{__name__="c:10s_by_job_max", job="x"} 100 @10000
{__name__="c:10s_by_job_min", job="x"} 5 @10000
{__name__="c:10s_by_job_rate_avg", job="x"} 2.25 @10000
{__name__="c:10s_by_job_rate_sum", job="x"} 2.25 @10000
{__name__="c:10s_by_job_stddev", job="x"} 36.0533 @10000
{__name__="c:10s_by_job_stdvar", job="x"} 1299.84 @10000
{__name__="c:10s_by_job_sum_samples", job="x"} 143 @10000
{__name__="c:10s_by_job_total", job="x"} 18 @10000
{__name__="c:10s_by_job_avg", job="x"} 59.5 @20000
{__name__="c:10s_by_job_count_samples", job="x"} 2 @20000
{__name__="c:10s_by_job_count_series", job="x"} 2 @20000
{__name__="c:10s_by_job_increase", job="x"} 11 @20000
{__name__="c:10s_by_job_last", job="x"} 9 @20000
{__name__="c:10s_by_job_max", job="x"} 110 @20000
{__name__="c:10s_by_job_min", job="x"} 9 @20000
{__name__="c:10s_by_job_rate_avg", job="x"} 0.6 @20000
{__name__="c:10s_by_job_rate_sum", job="x"} 1.2 @20000
{__name__="c:10s_by_job_stddev", job="x"} 50.5 @20000
{__name__="c:10s_by_job_stdvar", job="x"} 2550.25 @20000
{__name__="c:10s_by_job_sum_samples", job="x"} 119 @20000
{__name__="c:10s_by_job_total", job="x"} 29 @20000
`
	if got := se.out(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestLateSamples: a sample whose window the partition's watermark has passed is
// counted in vigil_rollup_late_samples_total and left out.
func TestLateSamples(t *testing.T) {
	se := newSyncEngine(t, 1, rc("r", `{__name__="g"}`, "10s", "2s", nil, nil, "count_samples", "sum_samples"))
	se.push(0, `g`, 1000, 1)
	se.push(0, `g`, 11000, 2) // watermark 9s: window [0,10s) still open
	se.push(0, `g`, 9000, 4)  // in time
	se.push(0, `g`, 12500, 8) // watermark 10.5s: [0,10s) sealed
	se.push(0, `g`, 9500, 100)
	se.push(0, `g`, 3000, 100)
	se.idle(100_000)
	want := `{__name__="g:10s_count_samples"} 2 @10000
{__name__="g:10s_sum_samples"} 5 @10000
{__name__="g:10s_count_samples"} 2 @20000
{__name__="g:10s_sum_samples"} 10 @20000
`
	if got := se.out(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if n := se.m.late.Get(); n != 2 {
		t.Errorf("late samples = %d, want 2", n)
	}
}

// TestWindowWaitsForEveryPartition: a window closes only when every partition has
// passed it, and the slowest partition's samples are in it.
func TestWindowWaitsForEveryPartition(t *testing.T) {
	se := newSyncEngine(t, 2, rc("r", `{__name__="g"}`, "10s", "0s", nil, []string{"p"}, "count_samples"))
	se.push(0, `g{p="0"}`, 1000, 1)
	se.push(0, `g{p="0"}`, 25000, 1)
	if len(se.results) != 0 {
		t.Fatalf("window closed before partition 1 sealed it: %s", se.out())
	}
	se.push(1, `g{p="1"}`, 5000, 1)
	se.push(1, `g{p="1"}`, 15000, 1)
	if got, want := se.out(), "{__name__=\"g:10s_without_p_count_samples\"} 2 @10000\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestSeriesChurn: series that come and go are counted per window, and their state is
// dropped once they have been silent longer than the staleness interval.
func TestSeriesChurn(t *testing.T) {
	se := newSyncEngine(t, 1, rc("r", `{__name__="c"}`, "1s", "0s", nil, nil, "increase", "count_series"),
		rc("g", `{__name__="c"}`, "1s", "0s", []string{"job"}, nil, "count_series"))
	// Series s lives for 5 one-second steps from s seconds on; staleness is 5m.
	const life, n = 5, 1500
	for ts := int64(0); ts < n*1000; ts += 1000 {
		for s := max(0, int(ts/1000)-life+1); s <= int(ts/1000); s++ {
			se.push(0, `c{job="j",inst="`+itoa(s)+`"}`, ts, float64(ts))
		}
	}
	p := se.parts[0]
	if got := len(p.series); got > 450 {
		t.Errorf("%d series cached after churn, want those silent for over 5m dropped", got)
	}
	if got := p.rules[0].groupIDs.len(); got > 450 {
		t.Errorf("%d groups kept after churn, want those silent for over 5m dropped", got)
	}
	// Every window of the by-job rollup sees the series alive in it.
	cs := 0
	for _, r := range se.results {
		for _, s := range r.Series {
			if s.Labels.Get("__name__") == "c:1s_by_job_count_series" && r.End >= life*1000 && r.End <= (n-1)*1000 {
				cs++
				if s.Value != life {
					t.Fatalf("count_series at %d = %v, want %d", r.End, s.Value, life)
				}
			}
		}
	}
	if cs < 300 {
		t.Fatalf("only %d windows checked", cs)
	}
}

func itoa(i int) string { return strings.TrimSpace(formatValue(float64(i))) }

// TestVMRangeMatchesVictoriaMetrics compares histogram_bucket's buckets with
// github.com/VictoriaMetrics/metrics.Histogram over random values of every scale.
func TestVMRangeMatchesVictoriaMetrics(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h metrics.Histogram
	var mine vmHist
	vals := []float64{0, 1e-12, 1e-9, 1, 10, 100, 1e18, 1e19, math.Inf(1)}
	for i := 0; i < 20000; i++ {
		vals = append(vals, math.Pow(10, rng.Float64()*30-10))
	}
	for _, v := range vals {
		h.Update(v)
		mine.add(v)
	}
	want := map[string]uint64{}
	h.VisitNonZeroBuckets(func(r string, n uint64) { want[r] = n })
	got := map[string]uint64{}
	for _, b := range mine.sorted() {
		got[vmRange(b.Idx)] = b.N
	}
	if len(got) != len(want) {
		t.Fatalf("%d buckets, VictoriaMetrics has %d", len(got), len(want))
	}
	for r, n := range want {
		if got[r] != n {
			t.Errorf("bucket %s: %d, VictoriaMetrics %d", r, got[r], n)
		}
	}
}

// TestSketchBound checks the quantile sketch's stated error bound on skewed data.
func TestSketchBound(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var s sketch
	var vs []float64
	for i := 0; i < 50000; i++ {
		v := math.Exp(rng.NormFloat64() * 4)
		if i%7 == 0 {
			v = -v
		}
		vs = append(vs, v)
		s.add(v)
	}
	sortFloats(vs)
	for _, phi := range []float64{0, 0.001, 0.1, 0.25, 0.5, 0.9, 0.99, 0.999, 1} {
		exact := vs[int(phi*float64(len(vs)-1))]
		if got := s.quantile(phi); math.Abs(got-exact) > sketchRelativeError*math.Abs(exact) {
			t.Errorf("phi %v: %v, exact %v", phi, got, exact)
		}
	}
}

func sortFloats(vs []float64) { slices.Sort(vs) }

// TestSplitQuantilesOutput: the YAML flow sequence [max, quantiles(0.5, 0.99)] arrives
// split at the comma; the rollup still has two outputs.
func TestSplitQuantilesOutput(t *testing.T) {
	r, err := compileRule(rc("a", `{__name__="m"}`, "5s", "", nil, nil, "max", "quantiles(0.5", "0.99)"))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.outputs) != 2 || r.outputs[1].suffix() != "quantiles" || len(r.outputs[1].(quantiles).phis) != 2 {
		t.Fatalf("outputs %+v", r.outputs)
	}
}

// TestFutureSample: a sample stamped in the future (ahead of its record's append time)
// is aggregated, but does not move the watermark, so the samples after it are in time.
func TestFutureSample(t *testing.T) {
	se := newSyncEngine(t, 1, rc("r", `{__name__="g"}`, "10s", "2s", nil, nil, "count_samples"))
	se.pushAppended(0, `g`, 1000, 1, 1500)
	se.pushAppended(0, `g`, 600_000, 1, 1600) // ten minutes ahead
	se.pushAppended(0, `g`, 2000, 1, 2100)
	se.pushAppended(0, `g`, 15000, 1, 15100)
	se.idle(1_000_000)
	want := `{__name__="g:10s_count_samples"} 2 @10000
{__name__="g:10s_count_samples"} 1 @20000
{__name__="g:10s_count_samples"} 1 @610000
`
	if got := se.out(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if n := se.m.late.Get(); n != 0 {
		t.Errorf("%d late samples, want 0", n)
	}
}
