package rollup

import (
	"testing"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/vigilhq/vigil/config"

	"github.com/vigilhq/vigil/logcore"
)

func TestEngineSmoke(t *testing.T) {
	tl := openTestLog(t, t.TempDir(), 2, logcore.FsyncNever)
	defer tl.log.Close()
	series := []inSeries{
		{labels.FromStrings("__name__", "http_requests_total", "code", "200", "instance", "a", "service", "api"), 0},
		{labels.FromStrings("__name__", "http_requests_total", "code", "200", "instance", "b", "service", "api"), 1},
	}
	base := int64(1_700_000_000_000)
	perPart := [][]inSample{
		{{0, base, 10}, {0, base + 1000, 20}, {0, base + 6000, 30}},
		{{1, base + 500, 5}, {1, base + 2000, 7}, {1, base + 7000, 8}},
	}
	tl.writeInput(t, series, perPart, 2)
	col := newCollector()
	_, stop := startEngine(t, tl, []config.RollupConfig{
		rc("http_5s", `{__name__="http_requests_total"}`, "5s", "1s", []string{"service", "code"}, nil,
			"rate_sum", "count_samples", "max", "quantiles(0.5, 0.99)", "increase", "total", "count_series", "sum_samples", "histogram_bucket"),
	}, t.TempDir(), func(o *Options) { o.OnResult = col.onResult; o.OnWindowClosed = col.onClosed })
	col.waitFor(t, "two windows", func(rs []*Result) bool { return len(rs) == 2 })
	stop()
	got := describe(col.results)
	t.Log(got)
	m := flatten(col.results)
	want := map[string]float64{
		`{__name__="http_requests_total:5s_by_code_service_count_samples", code="200", service="api"}@1700000005000`: 4,
		`{__name__="http_requests_total:5s_by_code_service_max", code="200", service="api"}@1700000005000`:           20,
		`{__name__="http_requests_total:5s_by_code_service_increase", code="200", service="api"}@1700000005000`:      12,
		`{__name__="http_requests_total:5s_by_code_service_rate_sum", code="200", service="api"}@1700000005000`:      10 + 2/1.5,
		`{__name__="http_requests_total:5s_by_code_service_count_series", code="200", service="api"}@1700000005000`:  2,
		`{__name__="http_requests_total:5s_by_code_service_increase", code="200", service="api"}@1700000010000`:      11,
		`{__name__="http_requests_total:5s_by_code_service_total", code="200", service="api"}@1700000010000`:         23,
	}
	for k, v := range want {
		if g, ok := m[k]; !ok || !approxEqual(g, v, 1e-12) {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
}
