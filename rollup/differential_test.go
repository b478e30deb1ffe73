package rollup

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"

	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/logcore"
)

// genInput builds random series (counters with resets, gauges with negative values and
// zeros, series that start and stop, a gap longer than the staleness interval) and
// their samples, then per partition an arrival order shuffled within lateness: each
// sample arrives at t+jitter with jitter in [0, lateness), so none is late.
func genInput(rng *rand.Rand, partitions int, lateness int64) ([]inSeries, [][]inSample, []inSample) {
	base := int64(1_700_000_000_000)
	var series []inSeries
	var all []inSample
	services := []string{"api", "db", "web"}
	codes := []string{"200", "500"}
	nSeries := 20 + rng.IntN(20)
	for i := 0; i < nSeries; i++ {
		counter := rng.IntN(2) == 0
		name := "lat_seconds"
		if counter {
			name = "req_total"
		}
		ls := labels.FromStrings("__name__", name, "service", services[rng.IntN(3)], "code", codes[rng.IntN(2)],
			"instance", fmt.Sprintf("i%d", i))
		if rng.IntN(5) == 0 {
			ls = labels.FromStrings("__name__", name, "service", services[rng.IntN(3)], "instance", fmt.Sprintf("i%d", i)) // no code label
		}
		sid := len(series)
		series = append(series, inSeries{labels: ls, part: rng.IntN(partitions)})
		// Two phases, the second after a gap longer than the 5m staleness interval.
		for phase := 0; phase < 2; phase++ {
			if phase == 1 && rng.IntN(2) == 0 {
				continue
			}
			start := base + int64(phase)*int64(8*time.Minute/time.Millisecond) + rng.Int64N(60_000)
			end := start + 30_000 + rng.Int64N(150_000)
			step := 500 + rng.Int64N(3500)
			v := rng.Float64() * 100
			for t := start; t < end; t += step + rng.Int64N(300) {
				if counter {
					if rng.IntN(30) == 0 {
						v = rng.Float64() * 5 // reset
					} else {
						v += float64(rng.IntN(20))
					}
				} else {
					switch rng.IntN(10) {
					case 0:
						v = 0
					case 1:
						v = -rng.Float64() * 50
					default:
						v = rng.NormFloat64()*20 + 40
					}
				}
				val := v
				if rng.IntN(200) == 0 {
					val = math.Float64frombits(value.StaleNaN)
				}
				all = append(all, inSample{series: sid, t: t, v: val})
			}
		}
	}
	perPart := make([][]inSample, partitions)
	type arr struct {
		s   inSample
		key int64
	}
	byPart := make([][]arr, partitions)
	for _, s := range all {
		p := series[s.series].part
		byPart[p] = append(byPart[p], arr{s, s.t + rng.Int64N(max(lateness, 1))})
	}
	for p := range byPart {
		sort.SliceStable(byPart[p], func(i, j int) bool { return byPart[p][i].key < byPart[p][j].key })
		for _, a := range byPart[p] {
			perPart[p] = append(perPart[p], a.s)
		}
	}
	return series, perPart, all
}

// reference computes every rollup window from the full, sorted input, independently of
// the engine's code paths. Values are "labels@end".
func reference(t *testing.T, rollups []config.RollupConfig, series []inSeries, all []inSample) map[string]float64 {
	out := map[string]float64{}
	sorted := slices.Clone(all)
	slices.SortStableFunc(sorted, func(a, b inSample) int { return int(a.t - b.t) })
	for _, c := range rollups {
		I := c.Interval.D().Milliseconds()
		stale := max(2*I, int64(5*60*1000))
		var lists []string
		mode := ""
		switch {
		case len(c.By) > 0:
			lists, mode = slices.Sorted(slices.Values(c.By)), "_by_"
		case len(c.Without) > 0:
			lists, mode = slices.Sorted(slices.Values(c.Without)), "_without_"
		}
		suffix := ":" + model.Duration(c.Interval.D()).String()
		if mode != "" {
			suffix += mode + strings.Join(lists, "_")
		}
		suffix += "_"
		ms := mustSelector(t, c.Match)
		groupOf := func(ls labels.Labels) labels.Labels {
			b := labels.NewBuilder(ls)
			switch mode {
			case "_by_":
				keep := append([]string{"__name__"}, c.By...)
				b.Keep(keep...)
			case "_without_":
				b.Del(c.Without...)
			}
			return b.Labels()
		}
		type win struct {
			vals    []float64
			lastT   int64
			lastV   float64
			series  map[int]bool
			inc     float64
			rateSum float64
			rateN   int
		}
		type gw struct {
			g labels.Labels
			w int64
		}
		wins := map[string]*win{}
		keyOf := func(g labels.Labels, w int64) string { return fmt.Sprintf("%s|%d", g, w) }
		gws := map[string]gw{}
		perSeries := map[int][]inSample{}
		for _, s := range sorted {
			ls := series[s.series].labels
			if !matchAll(ms, ls) || math.IsNaN(s.v) {
				continue
			}
			perSeries[s.series] = append(perSeries[s.series], s)
		}
		for sid, ss := range perSeries {
			g := groupOf(series[sid].labels)
			var carryT int64
			var carryV float64
			hasCarry := false
			for i := 0; i < len(ss); {
				w := ss[i].t - ss[i].t%I
				j := i
				for j < len(ss) && ss[j].t-ss[j].t%I == w {
					j++
				}
				k := keyOf(g, w)
				wn := wins[k]
				if wn == nil {
					wn = &win{series: map[int]bool{}, lastT: math.MinInt64}
					wins[k] = wn
					gws[k] = gw{g, w}
				}
				wn.series[sid] = true
				for _, s := range ss[i:j] {
					wn.vals = append(wn.vals, s.v)
					if s.t > wn.lastT || (s.t == wn.lastT && s.v > wn.lastV) {
						wn.lastT, wn.lastV = s.t, s.v
					}
				}
				first := i
				prevT, prevV := carryT, carryV
				if !hasCarry || ss[i].t-carryT > stale {
					prevT, prevV = ss[i].t, ss[i].v
					first = i + 1
				}
				inc := 0.0
				for _, s := range ss[first:j] {
					if s.v >= prevV {
						inc += s.v - prevV
					} else {
						inc += s.v
					}
					prevV = s.v
				}
				wn.inc += inc
				if d := float64(ss[j-1].t-prevT) / 1000; d > 0 {
					wn.rateSum += inc / d
					wn.rateN++
				}
				carryT, carryV, hasCarry = ss[j-1].t, ss[j-1].v, true
				i = j
			}
		}
		// Running totals and histograms per group, in window order.
		keys := make([]string, 0, len(wins))
		for k := range wins {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b string) int { return int(gws[a].w - gws[b].w) })
		type cum struct {
			total   float64
			h       *metrics.Histogram
			lastEnd int64
		}
		cums := map[string]*cum{}
		for _, k := range keys {
			g, w := gws[k].g, gws[k].w
			wn := wins[k]
			end := w + I
			gk := g.String()
			cm := cums[gk]
			if cm == nil || w-cm.lastEnd >= stale {
				cm = &cum{h: &metrics.Histogram{}}
				cums[gk] = cm
			}
			cm.total += wn.inc
			for _, v := range wn.vals {
				cm.h.Update(v)
			}
			cm.lastEnd = end
			emit := func(out_ string, extra []string, v float64) {
				b := labels.NewBuilder(g)
				b.Set("__name__", g.Get("__name__")+suffix+out_)
				for i := 0; i < len(extra); i += 2 {
					b.Set(extra[i], extra[i+1])
				}
				out[fmt.Sprintf("%s@%d", b.Labels(), end)] = v
			}
			n := float64(len(wn.vals))
			sum, mn, mx := 0.0, math.Inf(1), math.Inf(-1)
			for _, v := range wn.vals {
				sum += v
				mn, mx = math.Min(mn, v), math.Max(mx, v)
			}
			mean := sum / n
			m2 := 0.0
			for _, v := range wn.vals {
				m2 += (v - mean) * (v - mean)
			}
			for _, o := range c.Outputs {
				switch {
				case o == "total":
					emit(o, nil, cm.total)
				case o == "increase":
					emit(o, nil, wn.inc)
				case o == "rate_sum" && wn.rateN > 0:
					emit(o, nil, wn.rateSum)
				case o == "rate_avg" && wn.rateN > 0:
					emit(o, nil, wn.rateSum/float64(wn.rateN))
				case o == "count_samples":
					emit(o, nil, n)
				case o == "count_series":
					emit(o, nil, float64(len(wn.series)))
				case o == "sum_samples":
					emit(o, nil, sum)
				case o == "avg":
					emit(o, nil, mean)
				case o == "min":
					emit(o, nil, mn)
				case o == "max":
					emit(o, nil, mx)
				case o == "last":
					emit(o, nil, wn.lastV)
				case o == "stddev":
					emit(o, nil, math.Sqrt(m2/n))
				case o == "stdvar":
					emit(o, nil, m2/n)
				case o == "histogram_bucket":
					cm.h.VisitNonZeroBuckets(func(vmrange string, count uint64) {
						emit(o, []string{"vmrange", vmrange}, float64(count))
					})
				case strings.HasPrefix(o, "quantiles("):
					vs := slices.Sorted(slices.Values(wn.vals))
					for _, a := range strings.Split(strings.TrimSuffix(strings.TrimPrefix(o, "quantiles("), ")"), ",") {
						var phi float64
						fmt.Sscanf(strings.TrimSpace(a), "%g", &phi)
						emit("quantiles", []string{"quantile", formatPhi(phi)}, vs[int(phi*float64(len(vs)-1))])
					}
				}
			}
		}
	}
	return out
}

func mustSelector(t *testing.T, s string) []*labels.Matcher {
	t.Helper()
	r, err := compileRule(rc("x", s, "1s", "", nil, nil, "count_samples"))
	if err != nil {
		t.Fatal(err)
	}
	return r.matchers
}

func matchAll(ms []*labels.Matcher, ls labels.Labels) bool {
	for _, m := range ms {
		if !m.Matches(ls.Get(m.Name)) {
			return false
		}
	}
	return true
}

var diffRollups = []config.RollupConfig{
	rc("req_5s", `{__name__="req_total"}`, "5s", "3s", []string{"service", "code"}, nil,
		"total", "increase", "rate_sum", "rate_avg", "count_series", "count_samples"),
	rc("lat_5s", `{__name__="lat_seconds", service=~"api|web"}`, "5s", "3s", nil, []string{"instance"},
		"sum_samples", "avg", "min", "max", "last", "stddev", "stdvar", "quantiles(0, 0.1, 0.5, 0.9, 1)", "histogram_bucket", "count_samples"),
	rc("all_10s", `{__name__=~".+"}`, "10s", "3s", nil, nil, "count_samples", "last", "increase", "total"),
}

// TestDifferential runs random inputs through the engine and through reference and
// requires the same windows and values: exact for counts, min, max and last, within
// 1e-9 relative for float sums (their order differs), within the sketch's 1% for
// quantiles.
func TestDifferential(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 99))
			const parts = 3
			series, perPart, all := genInput(rng, parts, 3000)
			tl := openTestLog(t, t.TempDir(), parts, logcore.FsyncNever)
			defer tl.log.Close()
			tl.writeInput(t, series, perPart, 1+rng.IntN(20))
			want := reference(t, diffRollups, series, all)

			col := newCollector()
			_, stop := startEngine(t, tl, diffRollups, t.TempDir(), func(o *Options) { o.OnResult = col.onResult })
			col.waitFor(t, "all reference values", func(rs []*Result) bool { return len(flatten(rs)) >= len(want) })
			time.Sleep(100 * time.Millisecond) // let any extra (wrong) window show up
			stop()
			got := flatten(col.results)
			compareOutputs(t, got, want)
		})
	}
}

func compareOutputs(t *testing.T, got, want map[string]float64) {
	t.Helper()
	bad := 0
	for _, k := range sortedKeysOf(want) {
		w := want[k]
		g, ok := got[k]
		tol := 1e-9
		if strings.Contains(k, "_quantiles") {
			tol = sketchRelativeError
		}
		if strings.Contains(k, "_stddev") || strings.Contains(k, "_stdvar") {
			tol = 1e-6
		}
		switch {
		case !ok:
			t.Errorf("missing %s (want %v)", k, w)
			bad++
		case strings.Contains(k, "_quantiles") && !(math.Abs(g-w) <= tol*math.Abs(w)+1e-12):
			t.Errorf("%s = %v, want %v within %v", k, g, w, tol)
			bad++
		case !approxEqual(g, w, tol):
			t.Errorf("%s = %v, want %v", k, g, w)
			bad++
		}
		if bad > 20 {
			t.Fatal("too many differences")
		}
	}
	for _, k := range sortedKeysOf(got) {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected %s = %v", k, got[k])
			bad++
			if bad > 20 {
				t.Fatal("too many differences")
			}
		}
	}
	if len(want) == 0 {
		t.Fatal("reference produced no values")
	}
	t.Logf("%d output values compared", len(want))
}
