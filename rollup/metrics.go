package rollup

import (
	"sync/atomic"

	"github.com/VictoriaMetrics/metrics"
)

// engineMetrics are the engine's self-metrics, created at zero.
type engineMetrics struct {
	late       *metrics.Counter
	badBatches *metrics.Counter
	windows    *metrics.Counter
	series     *metrics.Counter
	suppressed *metrics.Counter
	ckpts      *metrics.Counter
	// storeRejected counts output samples the query store refused as duplicates or out
	// of its time bounds.
	storeRejected *metrics.Counter
	ckptErrs      *metrics.Counter
	closeLat      *metrics.Histogram
	ckptDur       *metrics.Histogram

	groups    []atomic.Int64 // active groups per partition
	cached    []atomic.Int64 // cached input series per partition
	ckptBytes atomic.Int64   // size of the last checkpoint
}

func newEngineMetrics(set *metrics.Set, partitions int) *engineMetrics {
	m := &engineMetrics{
		late:          set.GetOrCreateCounter(`vigil_rollup_late_samples_total`),
		badBatches:    set.GetOrCreateCounter(`vigil_rollup_bad_batches_total`),
		windows:       set.GetOrCreateCounter(`vigil_rollup_windows_emitted_total`),
		series:        set.GetOrCreateCounter(`vigil_rollup_series_emitted_total`),
		suppressed:    set.GetOrCreateCounter(`vigil_rollup_windows_deduplicated_total`),
		ckpts:         set.GetOrCreateCounter(`vigil_rollup_checkpoints_total`),
		storeRejected: set.GetOrCreateCounter(`vigil_rollup_store_rejected_samples_total`),
		ckptErrs:      set.GetOrCreateCounter(`vigil_rollup_checkpoint_errors_total`),
		closeLat:      set.GetOrCreateHistogram(`vigil_rollup_emit_duration_seconds`),
		ckptDur:       set.GetOrCreateHistogram(`vigil_rollup_checkpoint_duration_seconds`),
		groups:        make([]atomic.Int64, partitions),
		cached:        make([]atomic.Int64, partitions),
	}
	set.GetOrCreateGauge(`vigil_rollup_active_series`, func() float64 {
		var n int64
		for i := range m.cached {
			n += m.cached[i].Load()
		}
		return float64(n)
	})
	set.GetOrCreateGauge(`vigil_rollup_checkpoint_bytes`, func() float64 { return float64(m.ckptBytes.Load()) })
	set.GetOrCreateGauge(`vigil_rollup_active_groups`, func() float64 {
		var n int64
		for i := range m.groups {
			n += m.groups[i].Load()
		}
		return float64(n)
	})
	return m
}

func (m *engineMetrics) setGroups(p, groups, series int) {
	if p < len(m.groups) {
		m.groups[p].Store(int64(groups))
		m.cached[p].Store(int64(series))
	}
}
