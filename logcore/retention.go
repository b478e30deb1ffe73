package logcore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// applyRetention deletes the oldest closed segments of the partition while it holds
// more than cfg.RetentionBytes, and every closed segment whose newest record is older
// than cfg.RetentionAge. The active segment is never deleted. Readers holding a
// deleted segment finish their read from the still-open file.
func (pt *partition) applyRetention(cfg TopicConfig) error {
	if cfg.RetentionBytes <= 0 && cfg.RetentionAge <= 0 {
		return nil
	}
	pt.maintain.Lock()
	defer pt.maintain.Unlock()
	now := pt.log.nowMs()
	for {
		pt.mu.RLock()
		if pt.closed || len(pt.segs) < 2 {
			pt.mu.RUnlock()
			return nil
		}
		oldest := pt.segs[0]
		var total int64
		for _, s := range pt.segs {
			total += s.size.Load()
		}
		pt.mu.RUnlock()
		bySize := cfg.RetentionBytes > 0 && total > cfg.RetentionBytes
		byAge := cfg.RetentionAge > 0 && oldest.maxTS.Load() < now-cfg.RetentionAge.Milliseconds()
		if !bySize && !byAge {
			return nil
		}
		if err := pt.deleteOldest(oldest); err != nil {
			return err
		}
	}
}

// deleteOldest removes the first segment s from the partition and deletes its files.
// The caller holds pt.maintain.
func (pt *partition) deleteOldest(s *segment) error { return pt.deleteSegment(s, true) }

// deleteSegment removes the closed segment s from the partition (only if it is the
// first one, with onlyFirst) and deletes its files. The active segment is never
// removed. The caller holds pt.maintain.
func (pt *partition) deleteSegment(s *segment, onlyFirst bool) error {
	pt.mu.Lock()
	i := -1
	for j, cur := range pt.segs[:max(0, len(pt.segs)-1)] {
		if cur == s {
			i = j
		}
	}
	if pt.closed || i < 0 || (onlyFirst && i != 0) {
		pt.mu.Unlock()
		return nil
	}
	pt.segs = append(pt.segs[:i:i], pt.segs[i+1:]...)
	pt.mu.Unlock()
	pt.logger().Info("deleted a segment", "base", s.base, "next", s.next.Load(), "bytes", s.size.Load())
	s.release()
	if onlyFirst {
		pt.log.metrics.deletedSegments.Inc() // retention's deletions
	}
	// The log file goes first: a segment without its .log is not loaded, and its
	// leftover index files are removed at the next open.
	var errs []error
	for _, ext := range []string{logExt, indexExt, timeIndexExt} {
		if err := os.Remove(segmentPath(pt.dir, s.base, ext)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := syncDir(pt.dir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete segment %d of %s: %w", s.base, pt.name, err)
	}
	return nil
}

// removeOrphanIndexes deletes index files whose segment file is gone (a deletion that
// crashed half-way).
func removeOrphanIndexes(dir string, bases map[int64]bool) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		name := e.Name()
		for _, ext := range []string{indexExt, timeIndexExt} {
			if !strings.HasSuffix(name, ext) {
				continue
			}
			base, err := strconv.ParseInt(strings.TrimSuffix(name, ext), 10, 64)
			if err == nil && !bases[base] {
				os.Remove(filepath.Join(dir, name))
			}
		}
	}
}
