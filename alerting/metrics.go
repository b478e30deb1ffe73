package alerting

import (
	"fmt"

	"github.com/VictoriaMetrics/metrics"
)

// pipelineMetrics are the pipeline's self-metrics, created in the Options' set.
type pipelineMetrics struct {
	set      *metrics.Set
	received *metrics.Counter
	invalid  *metrics.Counter
}

func newPipelineMetrics(set *metrics.Set) *pipelineMetrics {
	m := &pipelineMetrics{
		set:      set,
		received: set.GetOrCreateCounter(`vigil_alerting_alerts_received_total`),
		invalid:  set.GetOrCreateCounter(`vigil_alerting_alerts_invalid_total`),
	}
	for _, r := range []string{"inhibition", "silence", "mute_time_interval", "active_time_interval"} {
		m.suppressed(r)
	}
	return m
}

// receiver creates the per-receiver metrics at zero.
func (m *pipelineMetrics) receiver(name string) {
	m.sent(name)
	m.failed(name)
	m.dropped(name)
	m.enqueued(name)
}

// sent counts notifications delivered (the receiver answered 2xx).
func (m *pipelineMetrics) sent(receiver string) *metrics.Counter {
	return m.set.GetOrCreateCounter(fmt.Sprintf(`vigil_notifications_sent_total{receiver=%q}`, receiver))
}

// failed counts failed delivery attempts (each retry counts).
func (m *pipelineMetrics) failed(receiver string) *metrics.Counter {
	return m.set.GetOrCreateCounter(fmt.Sprintf(`vigil_notifications_failed_total{receiver=%q}`, receiver))
}

// dropped counts notifications given up on (rejected with 4xx, or not renderable).
func (m *pipelineMetrics) dropped(receiver string) *metrics.Counter {
	return m.set.GetOrCreateCounter(fmt.Sprintf(`vigil_notifications_dropped_total{receiver=%q}`, receiver))
}

// enqueued counts notifications written to the outbox.
func (m *pipelineMetrics) enqueued(receiver string) *metrics.Counter {
	return m.set.GetOrCreateCounter(fmt.Sprintf(`vigil_notifications_enqueued_total{receiver=%q}`, receiver))
}

// latency is the time from a notification's outbox write to its delivery.
func (m *pipelineMetrics) latency(receiver string) *metrics.Histogram {
	return m.set.GetOrCreateHistogram(fmt.Sprintf(`vigil_notification_delivery_seconds{receiver=%q}`, receiver))
}

// suppressed counts alerts muted at a flush, by reason.
func (m *pipelineMetrics) suppressed(reason string) *metrics.Counter {
	return m.set.GetOrCreateCounter(fmt.Sprintf(`vigil_alerting_suppressed_total{reason=%q}`, reason))
}
