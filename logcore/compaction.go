package logcore

import (
	"encoding/binary"
	"fmt"
	"os"
)

// compact rewrites the closed segments of a compacted partition so that they keep only
// the latest record of each key (records without a key are kept), and tombstones
// (empty values) only while they are younger than cfg.TombstoneRetention. Offsets do
// not change; removed records leave gaps, and a closed segment left with no record is
// deleted. A rewrite goes to <base>.cleaned, is synced,
// and replaces the segment by a rename; a crash at any point leaves either the old or
// the new segment, both valid. The active segment is never rewritten.
func (pt *partition) compact(cfg TopicConfig) error {
	pt.maintain.Lock()
	defer pt.maintain.Unlock()
	pt.mu.RLock()
	if pt.closed || len(pt.segs) < 2 {
		pt.mu.RUnlock()
		return nil
	}
	closed := append([]*segment(nil), pt.segs[:len(pt.segs)-1]...)
	start, end := pt.segs[0].base, pt.end
	pt.mu.RUnlock()

	// Pass 1: the latest offset of every key, over the whole partition.
	latest := map[string]int64{}
	var recs []Record
	var buf []byte
	for off := start; off < end; {
		var next int64
		var err error
		recs, buf, next, err = pt.read(off, 1<<20, recs, buf)
		if err != nil {
			return fmt.Errorf("compact %s: %w", pt.name, err)
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			if r.Key != nil {
				latest[string(r.Key)] = r.Offset
			}
		}
		off = next
	}

	// Pass 2: rewrite the closed segments that lose records.
	tombstoneLimit := pt.log.nowMs() - cfg.TombstoneRetention.Milliseconds()
	for _, s := range closed {
		rewritten, empty, err := pt.compactSegment(s, latest, tombstoneLimit)
		if err != nil {
			return fmt.Errorf("compact %s segment %d: %w", pt.name, s.base, err)
		}
		if rewritten {
			pt.log.metrics.compactions.Inc()
		}
		if empty {
			// Nothing of the segment is kept: delete it rather than keep an empty
			// file. Reads step over the gap to the next segment.
			if err := pt.deleteSegment(s, false); err != nil {
				return err
			}
			pt.log.metrics.compactions.Inc()
		}
	}
	return nil
}

// compactSegment rewrites s without its superseded records. It reports whether it
// rewrote the segment and whether the segment now holds no record.
func (pt *partition) compactSegment(s *segment, latest map[string]int64, tombstoneLimit int64) (rewritten, empty bool, err error) {
	limit := s.size.Load()
	bs := newBatchScanner(s.f, 1<<20)
	out := make([]byte, segmentHeaderSize, 1<<16)
	copy(out, segmentMagic)
	out[4] = segmentVersion
	binary.LittleEndian.PutUint64(out[8:], uint64(s.base))
	binary.LittleEndian.PutUint64(out[16:], uint64(s.created))
	changed := false
	kept := 0
	var recs, keep []Record
	var scratch []byte
	for pos := int64(segmentHeaderSize); pos < limit; {
		h, b, err := bs.next(pos, limit)
		if err != nil {
			return false, false, err
		}
		pos += h.size()
		var payload []byte
		payload, scratch, err = batchPayload(&h, b, scratch[:0])
		if err != nil {
			return false, false, err
		}
		if recs, err = decodeRecords(&h, payload, recs[:0], 0); err != nil {
			return false, false, err
		}
		keep = keep[:0]
		for _, r := range recs {
			switch {
			case r.Key == nil:
			case latest[string(r.Key)] != r.Offset:
				continue
			case len(r.Value) == 0 && r.Timestamp < tombstoneLimit:
				continue
			}
			keep = append(keep, r)
		}
		kept += len(keep)
		if len(keep) == len(recs) {
			out = append(out, b...)
			continue
		}
		changed = true
		if len(keep) == 0 {
			continue
		}
		codec := Compression(h.attrs & codecMask)
		out, _, err = encodeBatch(out, keep, batchMeta{base: h.baseOffset, lastDelta: h.lastDelta, codec: codec})
		if err != nil {
			return false, false, err
		}
	}
	if !changed || kept == 0 {
		return false, kept == 0, nil
	}
	if err := pt.swapSegment(s, out); err != nil {
		return false, false, err
	}
	return true, kept == 0, nil
}

// swapSegment replaces segment s by the segment file contents b: it writes and syncs
// <base>.cleaned, removes the old indexes, renames the file over the old one, syncs
// the directory and loads the new segment with fresh indexes.
func (pt *partition) swapSegment(s *segment, b []byte) error {
	cleaned := segmentPath(pt.dir, s.base, cleanedExt)
	f, err := os.OpenFile(cleaned, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, werr := f.Write(b)
	if werr == nil {
		werr = fdatasync(int(f.Fd()))
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(cleaned)
		return fmt.Errorf("write %s: %w", cleaned, werr)
	}
	for _, ext := range []string{indexExt, timeIndexExt} {
		if err := os.Remove(segmentPath(pt.dir, s.base, ext)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	if hook := pt.log.testHooks.beforeSwapRename; hook != nil {
		if err := hook(); err != nil {
			return err
		}
	}
	if err := os.Rename(cleaned, segmentPath(pt.dir, s.base, logExt)); err != nil {
		return err
	}
	if err := syncDir(pt.dir); err != nil {
		return err
	}
	ns, size, err := openSegmentFile(pt.dir, s.base)
	if err != nil {
		return err
	}
	if err := pt.loadClosed(ns, size); err != nil {
		ns.closeFiles()
		return err
	}
	if next := s.next.Load(); ns.next.Load() < next {
		// The segment's last records were removed: it still covers its old range.
		ns.next.Store(next)
	}
	pt.mu.Lock()
	for i, cur := range pt.segs {
		if cur == s {
			pt.segs[i] = ns
		}
	}
	pt.mu.Unlock()
	s.release()
	return nil
}
