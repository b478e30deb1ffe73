package ingest

import (
	"math"
	"sync"
	"time"
)

const (
	// busyRequests is how many requests decoded or appended at once count as ingest
	// using the CPUs.
	busyRequests = 2
	// busyTau is the time constant of the busy meter's moving average.
	busyTau = 100 * time.Millisecond
	// busyShare is the share of recent time with busyRequests at work above which
	// ingest is busy.
	busyShare = 0.5
)

// busyMeter tracks the share of recent time during which at least busyRequests
// requests were being decoded or appended, as an exponentially weighted moving average
// with time constant busyTau. A saturating stream of writes keeps it near 1 through
// short gaps; requests that only now and then overlap keep it near 0. It is safe for
// concurrent use.
type busyMeter struct {
	mu    sync.Mutex
	n     int       // requests at work
	last  time.Time // when share was last brought up to date
	share float64
}

// update brings share up to now; mu must be held.
func (b *busyMeter) update(now time.Time) {
	if b.last.IsZero() {
		b.last = now
		return
	}
	dt := now.Sub(b.last)
	if dt <= 0 {
		return
	}
	target := 0.0
	if b.n >= busyRequests {
		target = 1
	}
	b.share += (target - b.share) * (1 - math.Exp(-float64(dt)/float64(busyTau)))
	b.last = now
}

// add notes at now that a request started (+1) or finished (-1) its work.
func (b *busyMeter) add(now time.Time, d int) {
	b.mu.Lock()
	b.update(now)
	b.n += d
	b.mu.Unlock()
}

// busy reports whether the share at now is above busyShare.
func (b *busyMeter) busy(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.update(now)
	return b.share > busyShare
}

// Busy reports whether ingest has lately been using the CPUs: for more than half of
// the last ~100 ms (a moving average), several requests were being decoded or
// appended at once. Stages that can catch up later (the query store's materializer)
// hold back while it is true. It is cheap and safe for concurrent use.
func (w *Writer) Busy() bool { return w.busy.busy(time.Now()) }

// beginWork marks a request as being decoded or appended, until endWork.
func (w *Writer) beginWork() { w.busy.add(time.Now(), 1) }

// endWork ends what beginWork began.
func (w *Writer) endWork() { w.busy.add(time.Now(), -1) }
