package api_test

import (
	"net/url"
	"strconv"
	"testing"
	"time"
)

// TestGrafanaRequests sends the requests Grafana's built-in Prometheus data source
// makes (health check, build info, metric and label pickers, series look-ups, range
// and instant panels, exemplars, metadata) with Grafana's parameter formats and HTTP
// methods, checks that Vigil answers them with data, and that the reference
// Prometheus holding the same samples answers the same.
func TestGrafanaRequests(t *testing.T) {
	ref := startReference(t)
	v := startVigilAny(t, 2)
	base := (time.Now().Add(-70*time.Minute).UnixMilli() / 60000) * 60000
	data := testData(base)
	remoteWrite(t, ref, data, 50)
	remoteWrite(t, v.url, data, 50)
	v.sync(t)

	// Grafana sends Unix seconds (integers for pickers, fractions for panels) and steps
	// in seconds.
	startS := strconv.FormatInt(base/1000, 10)
	endS := strconv.FormatInt(base/1000+3600, 10)
	now := strconv.FormatFloat(float64(base+3600000)/1000, 'f', 3, 64)
	type req struct {
		name      string
		path      string
		params    url.Values
		post      bool
		wantData  bool
		wantError bool
	}
	reqs := []req{
		{"health check", "/api/v1/query", url.Values{"query": {"1+1"}, "time": {now}}, false, true, false},
		{"build info", "/api/v1/status/buildinfo", url.Values{}, false, true, false},
		{"metric names", "/api/v1/label/__name__/values", url.Values{"start": {startS}, "end": {endS}}, false, true, false},
		{"metric names for a selector", "/api/v1/label/__name__/values", url.Values{"match[]": {`{job="api"}`}, "start": {startS}, "end": {endS}}, false, true, false},
		{"label names", "/api/v1/labels", url.Values{"start": {startS}, "end": {endS}}, true, true, false},
		{"label names for a metric", "/api/v1/labels", url.Values{"match[]": {`http_requests_total`}, "start": {startS}, "end": {endS}}, true, true, false},
		{"label values for a metric", "/api/v1/label/instance/values", url.Values{"match[]": {`http_requests_total{job="web"}`}, "start": {startS}, "end": {endS}}, false, true, false},
		{"series for the query builder", "/api/v1/series", url.Values{"match[]": {`{__name__="temperature"}`}, "start": {startS}, "end": {endS}}, true, true, false},
		{"series GET", "/api/v1/series", url.Values{"match[]": {`request_duration_seconds_bucket`}, "start": {startS}, "end": {endS}}, false, true, false},
		{"time series panel", "/api/v1/query_range", url.Values{"query": {`sum by (job) (rate(http_requests_total[$__rate_interval]))`}, "start": {startS}, "end": {endS}, "step": {"15"}}, true, false, true},
		{"time series panel, interpolated", "/api/v1/query_range", url.Values{"query": {`sum by (job) (rate(http_requests_total[1m0s]))`}, "start": {startS}, "end": {endS}, "step": {"15"}}, true, true, false},
		{"heatmap", "/api/v1/query_range", url.Values{"query": {`sum by (le) (increase(request_duration_seconds_bucket[1m]))`}, "start": {startS}, "end": {endS}, "step": {"60"}}, true, true, false},
		{"native heatmap", "/api/v1/query_range", url.Values{"query": {`sum(rate(rpc_latency_seconds[1m]))`}, "start": {startS}, "end": {endS}, "step": {"30"}}, true, true, false},
		{"stat panel", "/api/v1/query", url.Values{"query": {`sum(http_requests_total)`}, "time": {now}}, true, true, false},
		{"table panel", "/api/v1/query", url.Values{"query": {`topk(5, http_requests_total)`}, "time": {now}}, true, true, false},
		{"fractional step", "/api/v1/query_range", url.Values{"query": {`temperature`}, "start": {startS + ".5"}, "end": {endS + ".25"}, "step": {"14.5"}}, true, true, false},
		{"exemplars", "/api/v1/query_exemplars", url.Values{"query": {`http_requests_total`}, "start": {startS}, "end": {endS}}, true, false, false},
		{"metadata", "/api/v1/metadata", url.Values{}, false, false, false},
		{"metadata for a metric", "/api/v1/metadata", url.Values{"metric": {"http_requests_total"}, "limit": {"10"}}, false, false, false},
	}
	for _, r := range reqs {
		t.Run(r.name, func(t *testing.T) {
			if r.path != "/api/v1/status/buildinfo" { // the versions differ, by design
				compare(t, v.url, ref, r.path, r.params, r.post)
			}
			code, got := get(t, v.url, r.path, r.params, r.post)
			m, _ := got.(map[string]any)
			switch {
			case r.wantError:
				if code != 400 || m["errorType"] != "bad_data" {
					t.Errorf("got %d %v, want a bad_data error", code, got)
				}
			case code != 200 || m["status"] != "success":
				t.Errorf("got %d %v, want success", code, got)
			case r.wantData && !nonEmpty(got) && r.path != "/api/v1/status/buildinfo":
				t.Errorf("got no data: %v", got)
			}
		})
	}
}
