package ingest

import (
	"sync"
	"sync/atomic"
	"time"
)

const activeShards = 64

// activeSeries tracks the distinct series seen within a time window, to enforce
// limits.max_active_series. Each shard is a map from series hash to the last time
// (unix seconds) the series was written; a sweep forgets series idle for longer than
// the window. Memory is bounded by the limit: a new series past it is refused and not
// tracked. Safe for concurrent use.
type activeSeries struct {
	limit  int64
	window int64 // seconds
	count  atomic.Int64
	shards [activeShards]activeShard
}

type activeShard struct {
	mu sync.Mutex
	m  map[uint64]int64
	_  [40]byte // keep shards on separate cache lines
}

func newActiveSeries(limit int, window time.Duration) *activeSeries {
	a := &activeSeries{limit: int64(limit), window: int64(window / time.Second)}
	if a.window <= 0 {
		a.window = 3600
	}
	for i := range a.shards {
		a.shards[i].m = make(map[uint64]int64)
	}
	return a
}

// admit records that series h was written at now (unix seconds) and reports whether
// it may be: a known series always may; a new one only while under the limit.
func (a *activeSeries) admit(h uint64, now int64) bool {
	s := &a.shards[h%activeShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[h]; ok {
		s.m[h] = now
		return true
	}
	if a.count.Load() >= a.limit {
		return false
	}
	a.count.Add(1)
	s.m[h] = now
	return true
}

// sweep forgets series not written since now-window.
func (a *activeSeries) sweep(now int64) {
	cutoff := now - a.window
	for i := range a.shards {
		s := &a.shards[i]
		s.mu.Lock()
		for h, t := range s.m {
			if t < cutoff {
				delete(s.m, h)
				a.count.Add(-1)
			}
		}
		s.mu.Unlock()
	}
}
