package rules

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
)

// emptyQueryable is a storage with no series.
type emptyQueryable struct{}

func (emptyQueryable) Querier(int64, int64) (storage.Querier, error) {
	return storage.NoopQuerier(), nil
}

// TestRunLoop drives a Manager's group loop in a synctest bubble: evaluations happen
// exactly at the group's slots, arrivals between slots are coalesced to one extra
// evaluation per OnArrivalMinInterval, and an arrival when the slot is due leaves the
// work to the slot.
func TestRunLoop(t *testing.T) {
	f := writeFile(t, t.TempDir(), "r.yml", `
groups:
  - name: loop
    interval: 10s
    rules:
      - alert: Missing
        expr: absent(vigil_loop_metric)
`)
	synctest.Test(t, func(t *testing.T) {
		set := metrics.NewSet()
		var capture captureAppendable
		m, err := NewManager(Options{
			Queryable: emptyQueryable{}, Engine: promql.NewEngine(promql.EngineOpts{MaxSamples: 1000, Timeout: time.Minute}),
			Appendable: &capture, OnArrival: true, OnArrivalMinInterval: 100 * time.Millisecond, Metrics: set,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Update([]string{f}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		m.Start(ctx)
		defer m.Stop()
		g := m.Groups()[0]
		first := g.slotAtOrAfter(time.Now())
		lastSlot := func() time.Time { _, _, s := g.lastTimes(); return s }
		arrivals := func() uint64 { return counterValue(set, "vigil_rule_group_arrival_evaluations_total") }

		for k := range 3 {
			slot := first.Add(time.Duration(k) * 10 * time.Second)
			time.Sleep(time.Until(slot) + time.Millisecond)
			synctest.Wait()
			if got := lastSlot(); !got.Equal(slot) {
				t.Fatalf("slot %d: last evaluated slot %v, want %v", k, got, slot)
			}
		}
		if n := len(capture.byName("ALERTS")); n != 3 {
			t.Errorf("%d ALERTS samples after 3 slots, want 3", n)
		}

		// Between slots: ten arrivals now make one evaluation now and one after 100ms.
		time.Sleep(2 * time.Second)
		for range 10 {
			m.Arrived([]string{"vigil_loop_metric"})
			synctest.Wait()
		}
		if got := arrivals(); got != 1 {
			t.Fatalf("arrival evaluations right away: %d, want 1", got)
		}
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		if got := arrivals(); got != 2 {
			t.Fatalf("arrival evaluations after the coalescing delay: %d, want 2", got)
		}
		// Arrivals of metrics the group does not read do nothing.
		time.Sleep(time.Second)
		m.Arrived([]string{"other_metric"})
		synctest.Wait()
		if got := arrivals(); got != 2 {
			t.Fatalf("an unrelated arrival was evaluated: %d", got)
		}
		// Arrival evaluations write nothing.
		if n := len(capture.byName("ALERTS")); n != 3 {
			t.Errorf("%d ALERTS samples after arrivals, want still 3", n)
		}
		// The next slot still comes on time.
		next := first.Add(30 * time.Second)
		time.Sleep(time.Until(next) + time.Millisecond)
		synctest.Wait()
		if got := lastSlot(); !got.Equal(next) {
			t.Fatalf("last evaluated slot %v, want %v", got, next)
		}
		if counterValue(set, "vigil_rule_group_iterations_missed_total") != 0 {
			t.Errorf("missed iterations counted")
		}
	})
}
