package api_test

import (
	"fmt"
	"net/url"
	"strconv"
	"testing"
	"time"
)

// Instant and range queries that the differential test asks both Vigil and the
// reference Prometheus; they cover the functions, operators and matchers dashboards
// and alert rules use.
var diffQueries = []string{
	`http_requests_total`,
	`rate(http_requests_total[5m])`,
	`increase(http_requests_total[10m])`,
	`irate(http_requests_total[1m])`,
	`sum by (job) (rate(http_requests_total[5m]))`,
	`sum without (instance) (rate(http_requests_total[5m]))`,
	`avg by (code) (rate(http_requests_total[5m]))`,
	`max by (job, method) (http_requests_total)`,
	`min(http_requests_total)`,
	`count by (job) (http_requests_total)`,
	`stddev(rate(http_requests_total[5m]))`,
	`quantile(0.9, rate(http_requests_total[5m]))`,
	`count_values("value", sparse)`,
	`histogram_quantile(0.9, sum by (le, job) (rate(request_duration_seconds_bucket[5m])))`,
	`histogram_quantile(0.5, rate(rpc_latency_seconds[5m]))`,
	`histogram_count(rate(rpc_latency_seconds[5m]))`,
	`histogram_sum(rpc_latency_seconds)`,
	`rpc_latency_seconds`,
	`rate(request_duration_seconds_sum[5m]) / rate(request_duration_seconds_count[5m])`,
	`http_requests_total offset 10m`,
	`rate(http_requests_total[5m] offset 5m)`,
	`max_over_time(rate(http_requests_total[5m])[30m:1m])`,
	`avg_over_time(temperature[10m:])`,
	`min_over_time(temperature[10m])`,
	`http_requests_total{job="api"}`,
	`http_requests_total{job!="api"}`,
	`http_requests_total{code=~"5.."}`,
	`http_requests_total{method!~"G.*"}`,
	`{__name__=~"http_.*", job="web", code="200"}`,
	`{__name__=~"temp.*|sparse"}`,
	`absent(nonexistent_metric)`,
	`absent(http_requests_total{job="nope"})`,
	`absent(http_requests_total)`,
	`absent_over_time(sparse[5m])`,
	// topk and bottomk break ties by storage order (series creation order), which
	// differs between one head and Vigil's partitions: ask them where values are unique.
	`topk(2, temperature)`,
	`topk(1, rate(request_duration_seconds_sum[5m]))`,
	`bottomk(1, request_duration_seconds_sum)`,
	`sort_desc(sum by (method) (http_requests_total))`,
	`label_replace(temperature, "floor", "$1", "room", "(.*)")`,
	`temperature > 20`,
	`temperature > bool 20`,
	`temperature * on (room) group_left () (temperature / 2)`,
	`resets(http_requests_total[30m])`,
	`changes(temperature[10m])`,
	`deriv(temperature[10m])`,
	`predict_linear(temperature[10m], 600)`,
	`delta(temperature[10m])`,
	`timestamp(temperature)`,
	`scalar(sum(sparse))`,
	`vector(1)`,
	`time()`,
	`1 + 1`,
	`"a string"`,
	`odd_labels`,
	`sum(http_requests_total) by (job) / ignoring(job) group_left sum(http_requests_total)`,
	`rate(http_requests_total[5m]) and on (job) (sum by (job) (rate(http_requests_total[5m])) > 1)`,
	`http_requests_total unless http_requests_total{code="500"}`,
	`last_over_time(sparse[30m])`,
	// Queries with annotations: infos and warnings must match too.
	`rate(temperature[5m])`,
	`histogram_quantile(0.9, temperature)`,
	`sum(rpc_latency_seconds) + sum(http_requests_total)`,
	`sparse`,
	`flappy`,
	`count_over_time(flappy[10m])`,
	`absent(flappy)`,
}

// Queries that fail, with the error type and message both must agree on.
var diffErrors = []string{
	`rate(`,
	`sum(up) by`,
	`rate(http_requests_total)`,
	`http_requests_total{job=~"("}`,
	`label_replace(temperature, "1bad", "$1", "room", "(.*)")`,
}

func TestDifferentialAgainstReferencePrometheus(t *testing.T) {
	ref := startReference(t)
	v := startVigilAny(t, 4)
	base := (time.Now().Add(-70*time.Minute).UnixMilli() / 60000) * 60000
	data := testData(base)
	remoteWrite(t, ref, data, 7)
	remoteWrite(t, v.url, data, 7)
	v.sync(t)
	sec := func(ms int64) string { return strconv.FormatFloat(float64(ms)/1000, 'f', -1, 64) }
	times := []int64{base + 30*60000, base + 60*60000, base + 63*60000 + 7500, base + 20*60000 + 1}
	for _, q := range diffQueries {
		for _, ts := range times {
			compare(t, v.url, ref, "/api/v1/query", url.Values{"query": {q}, "time": {sec(ts)}}, false)
		}
		compare(t, v.url, ref, "/api/v1/query_range", url.Values{"query": {q}, "start": {sec(base)}, "end": {sec(base + 60*60000)}, "step": {"60"}}, true)
	}
	// Range queries with other steps and unaligned bounds.
	for _, q := range []string{`rate(http_requests_total[5m])`, `sum by (job) (increase(http_requests_total[2m]))`, `temperature`, `sparse`, `histogram_quantile(0.99, sum by (le) (rate(request_duration_seconds_bucket[1m])))`} {
		compare(t, v.url, ref, "/api/v1/query_range", url.Values{"query": {q}, "start": {sec(base + 1234)}, "end": {sec(base + 45*60000 + 999)}, "step": {"15s"}}, false)
		compare(t, v.url, ref, "/api/v1/query_range", url.Values{"query": {q}, "start": {time.UnixMilli(base).UTC().Format(time.RFC3339)}, "end": {time.UnixMilli(base + 3600000).UTC().Format(time.RFC3339Nano)}, "step": {"7"}}, true)
	}
	for _, q := range diffErrors {
		compare(t, v.url, ref, "/api/v1/query", url.Values{"query": {q}, "time": {sec(times[0])}}, false)
		compare(t, v.url, ref, "/api/v1/query_range", url.Values{"query": {q}, "start": {sec(base)}, "end": {sec(base + 60000)}, "step": {"15"}}, true)
	}
	// Bad parameters.
	for _, p := range []url.Values{
		{"query": {"up"}, "start": {"x"}, "end": {"1"}, "step": {"1"}},
		{"query": {"up"}, "start": {"10"}, "end": {"1"}, "step": {"1"}},
		{"query": {"up"}, "start": {"1"}, "end": {"10"}, "step": {"0"}},
		{"query": {"up"}, "start": {"1"}, "end": {"100000"}, "step": {"1"}},
		{"query": {"up"}, "start": {"1"}, "end": {"10"}, "step": {"1"}, "timeout": {"-1s"}},
		{"query": {"up"}, "start": {"1"}, "end": {"10"}, "step": {"1"}, "limit": {"-1"}},
	} {
		compare(t, v.url, ref, "/api/v1/query_range", p, false)
	}
	compare(t, v.url, ref, "/api/v1/query", url.Values{"query": {"topk(2, request_duration_seconds_sum)"}, "time": {sec(times[0])}, "limit": {"1"}}, false)
	compare(t, v.url, ref, "/api/v1/query", url.Values{"query": {"up"}, "time": {"yesterday"}}, false)

	// Metadata look-ups, with and without match[] and time bounds.
	start, end := sec(base), sec(base+60*60000)
	for _, p := range []url.Values{
		{},
		{"start": {start}, "end": {end}},
		{"match[]": {`http_requests_total`}, "start": {start}, "end": {end}},
		{"match[]": {`{job="api"}`, `temperature`}},
		{"match[]": {`{__name__=~".+"}`}, "limit": {"3"}},
		{"match[]": {`{job=""}`}},
		{"match[]": {`{job=`}},
		{"start": {"x"}},
	} {
		compare(t, v.url, ref, "/api/v1/labels", p, false)
		compare(t, v.url, ref, "/api/v1/labels", p, true)
		for _, name := range []string{"__name__", "job", "le", "room", "nonexistent", "U__job"} {
			compare(t, v.url, ref, "/api/v1/label/"+name+"/values", p, false)
		}
		compare(t, v.url, ref, "/api/v1/series", p, false)
		compare(t, v.url, ref, "/api/v1/series", p, true)
	}
	compare(t, v.url, ref, "/api/v1/label/1bad/values", url.Values{}, false)
	for _, q := range []string{`sum by (job) (rate(http_requests_total{code=~"5.."}[5m])) / ignoring(code) sum by (job) (rate(http_requests_total[5m]))`, `up`, `rate(`} {
		compare(t, v.url, ref, "/api/v1/format_query", url.Values{"query": {q}}, true)
	}
	if t.Failed() {
		return
	}
	// The comparison must not pass by both being empty.
	_, got := get(t, v.url, "/api/v1/query_range", url.Values{"query": {"rate(http_requests_total[5m])"}, "start": {start}, "end": {end}, "step": {"60"}}, false)
	if !nonEmpty(got) {
		t.Fatalf("vigil returned no data: %v", got)
	}
	_, got = get(t, v.url, "/api/v1/query", url.Values{"query": {"rate(temperature[5m])"}, "time": {sec(times[1])}}, false)
	if m, _ := got.(map[string]any); m["infos"] == nil {
		t.Fatalf("no infos for rate() over a gauge: %v", got)
	}
	_, got = get(t, v.url, "/api/v1/query", url.Values{"query": {"histogram_quantile(0.9, temperature)"}, "time": {sec(times[1])}}, false)
	if m, _ := got.(map[string]any); m["warnings"] == nil {
		t.Fatalf("no warnings for histogram_quantile() without le: %v", got)
	}
	t.Logf("compared %d queries", len(diffQueries)*(len(times)+1)+len(diffErrors)*2)
	_ = fmt.Sprint
}
