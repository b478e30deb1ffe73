package ingest

import (
	"testing"
	"time"
)

// TestBusyMeter drives the meter with a fake clock: a saturating stream of overlapping
// requests makes ingest busy within about a time constant and keeps it busy through
// short gaps; requests that seldom overlap, or one at a time back to back, never do;
// after the stream stops it is idle again within a few time constants.
func TestBusyMeter(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	// A phase runs `requests` requests for dur, each working for work out of every
	// period (staggered evenly), and checks busy at its end.
	type phase struct {
		dur                time.Duration
		requests           int
		work, period       time.Duration
		wantBusyAfter      bool
		wantBusyThroughout bool // busy at every step of the phase after its first 2 time constants
	}
	tests := []struct {
		name   string
		phases []phase
	}{
		{"saturating burst", []phase{{dur: ms(1000), requests: 4, work: ms(3), period: ms(4), wantBusyAfter: true, wantBusyThroughout: true}}},
		{"burst with a 30 ms gap", []phase{
			{dur: ms(500), requests: 4, work: ms(3), period: ms(4), wantBusyAfter: true},
			{dur: ms(30), requests: 0, wantBusyAfter: true},
			{dur: ms(500), requests: 4, work: ms(3), period: ms(4), wantBusyAfter: true, wantBusyThroughout: true},
		}},
		{"one request at a time", []phase{{dur: ms(1000), requests: 1, work: ms(4), period: ms(4), wantBusyAfter: false}}},
		{"seldom overlapping", []phase{{dur: ms(2000), requests: 2, work: ms(1), period: ms(20), wantBusyAfter: false}}},
		{"burst then quiet", []phase{
			{dur: ms(500), requests: 4, work: ms(3), period: ms(4), wantBusyAfter: true},
			{dur: ms(300), requests: 0, wantBusyAfter: false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b busyMeter
			now := time.Unix(0, 0)
			const step = 250 * time.Microsecond
			for _, ph := range tt.phases {
				start := now
				working := make([]bool, ph.requests)
				for ; now.Sub(start) < ph.dur; now = now.Add(step) {
					for i := range working {
						// Request i works during [offset, offset+work) of each period.
						offset := time.Duration(i) * ph.period / time.Duration(max(ph.requests, 1))
						in := (now.Sub(start)+ph.period-offset)%ph.period < ph.work
						if in != working[i] {
							d := 1
							if !in {
								d = -1
							}
							b.add(now, d)
							working[i] = in
						}
					}
					if ph.wantBusyThroughout && now.Sub(start) > 2*busyTau && !b.busy(now) {
						t.Fatalf("not busy %v into a saturating phase", now.Sub(start))
					}
				}
				for i, in := range working {
					if in {
						b.add(now, -1)
						working[i] = false
					}
				}
				if got := b.busy(now); got != ph.wantBusyAfter {
					t.Fatalf("busy %v after a phase of %v, want %v (share %.2f)", got, ph.dur, ph.wantBusyAfter, b.share)
				}
			}
		})
	}
}

// TestWriterBusy: Busy, beginWork and endWork on a real Writer and clock.
func TestWriterBusy(t *testing.T) {
	_, tp := testLog(t, 1, 0)
	w, _ := testWriter(t, tp, nil)
	if w.Busy() {
		t.Fatal("busy before any request")
	}
	w.beginWork()
	w.beginWork()
	time.Sleep(3 * busyTau)
	if !w.Busy() {
		t.Fatalf("not busy after two requests worked for %v", 3*busyTau)
	}
	w.endWork()
	w.endWork()
	time.Sleep(3 * busyTau)
	if w.Busy() {
		t.Fatalf("still busy %v after the requests", 3*busyTau)
	}
}
