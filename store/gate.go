package store

import (
	"context"
	"math"
	"sync"
)

// gate keeps partitions that replay a backlog in step: a partition may append a record
// only while its time (its first sample's timestamp) is at most slack ahead of the
// oldest record any other partition has not appended yet. A partition that has appended everything there is
// (waiting for new records) holds no one back. Without it one partition racing ahead would move the TSDB head's
// newest time so far that the others' samples fall outside the appendable window.
type gate struct {
	mu    sync.Mutex
	cond  *sync.Cond
	ts    []int64 // per partition: time of its oldest record not yet appended (or of the last appended); unknown before the first
	idles []bool  // per partition: waiting for records
	slack int64
	// pending reports whether partition q has records it has not appended yet; an idle
	// partition without any holds no one back.
	pending func(q int) bool
}

// unknown is the time of a partition that has not looked at a record yet.
const unknown = math.MinInt64

func newGate(n int, slack int64, pending func(q int) bool) *gate {
	g := &gate{ts: make([]int64, n), idles: make([]bool, n), slack: slack, pending: pending}
	for i := range g.ts {
		g.ts[i], g.idles[i] = unknown, true
	}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// idle marks partition p as waiting for records.
func (g *gate) idle(p int) {
	g.mu.Lock()
	g.idles[p] = true
	g.cond.Broadcast()
	g.mu.Unlock()
}

// leave marks partition p as gone for good.
func (g *gate) leave(p int) {
	g.mu.Lock()
	g.idles[p] = true
	g.ts[p] = math.MaxInt64
	g.cond.Broadcast()
	g.mu.Unlock()
}

// wait announces that p's oldest record not yet appended has time ts and blocks until
// that is at most slack ahead of every other busy partition. It returns false if ctx
// ended.
func (g *gate) wait(ctx context.Context, p int, ts int64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ts[p], g.idles[p] = ts, false
	g.cond.Broadcast()
	if !g.blocked(p, ts) {
		return true
	}
	stop := context.AfterFunc(ctx, func() {
		g.mu.Lock()
		g.cond.Broadcast()
		g.mu.Unlock()
	})
	defer stop()
	for g.blocked(p, ts) {
		if ctx.Err() != nil {
			return false
		}
		g.cond.Wait()
	}
	return ctx.Err() == nil
}

// allows reports whether p, whose oldest record not yet appended was announced by wait,
// may append a later record of time ts in the same transaction. It announces nothing:
// until that transaction commits, the others are held to p's oldest record.
func (g *gate) allows(p int, ts int64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.blocked(p, ts)
}

func (g *gate) blocked(p int, ts int64) bool {
	for i, t := range g.ts {
		if i == p || t == math.MaxInt64 || (g.idles[i] && !g.pending(i)) {
			continue
		}
		// A partition with records whose time is not known yet holds everyone back
		// until it has looked at its first record.
		if t == unknown || ts > t+g.slack {
			return true
		}
	}
	return false
}
