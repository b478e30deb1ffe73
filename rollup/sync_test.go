package rollup

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/sample"
)

// syncEngine drives partitions and the coordinator directly, in one goroutine, for
// table tests of the aggregation semantics.
type syncEngine struct {
	t       testing.TB
	parts   []*partition
	coord   *coordinator
	results []*Result
	set     *metrics.Set
	m       *engineMetrics
	off     []int64
	enc     sample.Encoder
}

func newSyncEngine(t testing.TB, parts int, cfgs ...config.RollupConfig) *syncEngine {
	t.Helper()
	rules, err := compileRules(cfgs)
	if err != nil {
		t.Fatal(err)
	}
	se := &syncEngine{t: t, set: metrics.NewSet(), off: make([]int64, parts)}
	se.m = newEngineMetrics(se.set, parts)
	se.coord = newCoordinator(rules, parts, func(r *Result) error { se.results = append(se.results, r); return nil }, se.m)
	for p := 0; p < parts; p++ {
		se.parts = append(se.parts, newPartition(p, rules, se.m))
	}
	return se
}

// push sends one batch with one sample of the series written as {a="b",...} text
// ("name{l="v"}") to partition p, then delivers the partition's reports.
func (se *syncEngine) push(p int, series string, t int64, v float64) {
	se.t.Helper()
	se.pushAppended(p, series, t, v, 0)
}

// pushAppended is push for a record appended to the log at appendMs.
func (se *syncEngine) pushAppended(p int, series string, t int64, v float64, appendMs int64) {
	se.t.Helper()
	ls, err := parseSeries(series)
	if err != nil {
		se.t.Fatal(err)
	}
	var s sample.Series
	ls.Range(func(l labels.Label) {
		s.Labels = append(s.Labels, sample.Label{Name: []byte(l.Name), Value: []byte(l.Value)})
	})
	s.Samples = []sample.Sample{{T: t, V: v}}
	se.enc.Reset()
	se.enc.AppendSeries(&s)
	se.parts[p].processBatch(se.off[p], appendMs, se.enc.Bytes())
	se.off[p]++
	se.deliver(p)
}

func (se *syncEngine) deliver(p int) {
	se.t.Helper()
	for _, m := range se.parts[p].collect(nil) {
		if err := se.coord.handle(&m); err != nil {
			se.t.Fatal(err)
		}
	}
}

// idle moves every partition's watermark to the wall clock nowMs.
func (se *syncEngine) idle(nowMs int64) {
	for p := range se.parts {
		se.parts[p].advanceIdle(nowMs)
		se.deliver(p)
	}
}

// out renders the results as "name{labels} value @end" lines.
func (se *syncEngine) out() string {
	var b strings.Builder
	for _, r := range se.results {
		for _, s := range r.Series {
			fmt.Fprintf(&b, "%s %s @%d\n", s.Labels, formatValue(s.Value), r.End)
		}
	}
	return b.String()
}

func formatValue(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return fmt.Sprintf("%d", int64(v))
	}
	return fmt.Sprintf("%.6g", v)
}

func parseSeries(s string) (labels.Labels, error) {
	name, rest, _ := strings.Cut(s, "{")
	b := labels.NewScratchBuilder(4)
	b.Add("__name__", name)
	rest = strings.TrimSuffix(rest, "}")
	if rest != "" {
		for _, kv := range strings.Split(rest, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return labels.EmptyLabels(), fmt.Errorf("bad label %q", kv)
			}
			b.Add(strings.TrimSpace(k), strings.Trim(strings.TrimSpace(v), `"`))
		}
	}
	b.Sort()
	return b.Labels(), nil
}
