package alerting

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/vigilhq/vigil/alerting/pagerdutyfake"
)

// BenchmarkPagingLatency measures the pipeline's share of paging latency: from Send
// of a new firing alert (group_wait 0s) to the fake PagerDuty accepting the trigger,
// and from Send of its resolution (the group's last alert, so flushed at once) to the
// resolve, through the durable outbox (fsync always). It reports p50 and p99 of each.
func BenchmarkPagingLatency(b *testing.B) {
	fake := pagerdutyfake.New()
	defer fake.Close()
	doc := fmt.Sprintf(`
route:
  receiver: oncall
  group_by: [alertname]
  group_wait: 0s
  group_interval: 5ms
receivers:
  - name: oncall
    pagerduty_configs: [{routing_key: %s, url: %s}]
`, testRoutingKey, fake.EnqueueURL())
	p, _ := newTestPipeline(b, doc, func(o *Options) { o.RateLimit = 1 << 30 })
	ctx := waitCtx(b, 10*time.Minute)
	trig := make([]time.Duration, 0, b.N)
	res := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("alertname=Bench%d", i)
		start := time.Now()
		send(b, p, alert(start, time.Time{}, name, "severity=critical"))
		if _, err := fake.WaitEvents(ctx, 2*i+1); err != nil {
			b.Fatal(err)
		}
		trig = append(trig, time.Since(start))
		start = time.Now()
		send(b, p, alert(start.Add(-time.Second), start, name, "severity=critical"))
		if _, err := fake.WaitEvents(ctx, 2*i+2); err != nil {
			b.Fatal(err)
		}
		res = append(res, time.Since(start))
	}
	b.StopTimer()
	report := func(name string, d []time.Duration) {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, name+"-p50-ms")
		b.ReportMetric(float64(d[(len(d)*99)/100].Microseconds())/1000, name+"-p99-ms")
	}
	report("trigger", trig)
	report("resolve", res)
}

// BenchmarkSendResend measures Send on its hot path: the rules re-sending 1000
// firing alerts that are already known (merge and routing, no notification).
func BenchmarkSendResend(b *testing.B) {
	sink := newWebhookSink(b)
	p, _ := newTestPipeline(b, hookConfig(sink.srv.URL, "  group_wait: 1h\n  group_by: [alertname, instance]", ""), nil)
	start := time.Now()
	as := make([]Alert, 1000)
	for i := range as {
		as[i] = alert(start, time.Time{}, "alertname=Resend", fmt.Sprintf("instance=%d", i), "job=bench")
	}
	send(b, p, as...)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		send(b, p, as...)
	}
	b.ReportMetric(float64(b.N*len(as))/b.Elapsed().Seconds(), "alerts/s")
}
