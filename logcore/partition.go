package logcore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// maxGroupBytes bounds the bytes one group commit writes.
	maxGroupBytes = 8 << 20
	// defaultReadBytes is Read's maxBytes when the caller passes 0 or less.
	defaultReadBytes = 1 << 20
	queueLen         = 1024
	// indexFlushEntries is how many index entries the writer collects before it
	// writes them to the index files (roll and close write the rest).
	indexFlushEntries = 16
	// maxRoundsInFlight bounds the rounds a FsyncAlways partition has handed to the
	// journal and not yet seen land: its landed channel holds that many, so the journal
	// never waits for a partition.
	maxRoundsInFlight = 8
)

// partition is one partition of a topic: its segments, its writer goroutine and the
// committed end offset readers see.
type partition struct {
	topic *fileTopic
	id    int
	dir   string
	name  string // "topic/id", for errors and logs
	log   *FileLog

	mu       sync.RWMutex // guards segs, end, notify, closed
	segs     []*segment   // ascending by base; the last one is active
	end      int64        // committed end offset
	notify   chan struct{}
	closed   bool
	maintain sync.Mutex // serialises retention and compaction

	sendMu     sync.RWMutex // held for reading while sending to queue
	sendClosed bool
	queue      chan *appendReq
	exited     chan struct{}
	// syncReq carries the journal's requests to sync the active segment; shutdownErr
	// is the outcome of the sync at close, set before exited is closed.
	syncReq     chan chan error
	shutdownErr error

	// landed carries the journal's answers to this partition's rounds (FsyncAlways);
	// only a holder of wmu takes them.
	landed chan *journalEntry

	// wmu is held by whoever writes: the writer goroutine, or under FsyncAlways an
	// appender that found it free and writes its own round (see submitIn). It guards
	// what follows.
	wmu    sync.Mutex
	policy FsyncPolicy
	active *segment
	failed error
	dirty  bool // written but not synced
	wbuf   []byte
	// Under FsyncAlways a round is published when the journal has made it durable,
	// and the writer goes on writing in the meantime: inFlight rounds are written and
	// not yet landed, and the next one goes at wpos with offset wnext. epoch counts the
	// failed rounds (see journal.failSpoilt).
	inFlight    int
	wpos, wnext int64
	epoch       uint64
	nowGroup    []*appendReq // writeNow's group
}

// appendReq is one Append waiting for the writer.
type appendReq struct {
	ctx   context.Context
	buf   []byte // the encoded batch
	crc   uint32 // checksum of the batch body, completed by sealBatch
	n     int64  // records
	maxTS int64
	base  int64 // result: the batch's base offset
	err   error // result
	done  chan struct{}
	// group, when set, is told of the outcome instead of done (see appendGroup).
	group *appendGroup
}

// appendGroup lets one goroutine await several partitions' appends with a single
// wakeup: the last request to finish signals done.
type appendGroup struct {
	left atomic.Int32
	done chan struct{}
}

var groupPool = sync.Pool{New: func() any { return &appendGroup{done: make(chan struct{}, 1)} }}

// release returns a finished request to its pool.
func (r *appendReq) release() {
	r.ctx, r.err, r.group = nil, nil, nil
	if cap(r.buf) <= 1<<20 {
		reqPool.Put(r)
	}
}

var reqPool = sync.Pool{New: func() any { return &appendReq{done: make(chan struct{}, 1)} }}

// openPartition opens (recovering as needed) or creates the partition in dir and starts its writer.
func openPartition(t *fileTopic, id int, policy FsyncPolicy) (*partition, error) {
	pt := &partition{
		topic:   t,
		id:      id,
		dir:     filepath.Join(t.dir, strconv.Itoa(id)),
		name:    fmt.Sprintf("%s/%d", t.name, id),
		log:     t.log,
		notify:  make(chan struct{}),
		queue:   make(chan *appendReq, queueLen),
		exited:  make(chan struct{}),
		syncReq: make(chan chan error),
		policy:  policy,
	}
	if policy == FsyncAlways {
		pt.landed = make(chan *journalEntry, maxRoundsInFlight)
	}
	if err := os.MkdirAll(pt.dir, 0o755); err != nil {
		return nil, fmt.Errorf("open partition %s: %w", pt.name, err)
	}
	if err := pt.load(); err != nil {
		for _, s := range pt.segs {
			s.closeFiles()
		}
		return nil, fmt.Errorf("open partition %s: %w", pt.name, err)
	}
	pt.active = pt.segs[len(pt.segs)-1]
	pt.end = pt.active.next.Load()
	go pt.run()
	return pt, nil
}

func (pt *partition) logger() *slog.Logger {
	return pt.log.opts.Logger.With("partition", pt.name)
}

// load lists the partition's segments and recovers them: closed segments are checked
// through their indexes, the active one is scanned from its last good index entry.
func (pt *partition) load() error {
	ents, err := os.ReadDir(pt.dir)
	if err != nil {
		return fmt.Errorf("cannot list segments: %w", err)
	}
	var bases []int64
	for _, e := range ents {
		name := e.Name()
		if strings.HasSuffix(name, cleanedExt) || strings.HasSuffix(name, ".tmp") {
			// A compaction or write that did not finish: the original is still in place.
			os.Remove(filepath.Join(pt.dir, name))
			continue
		}
		if !strings.HasSuffix(name, logExt) {
			continue
		}
		base, err := strconv.ParseInt(strings.TrimSuffix(name, logExt), 10, 64)
		if err != nil || base < 0 {
			pt.logger().Warn("ignoring a file that is not a segment", "file", name)
			continue
		}
		bases = append(bases, base)
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	present := make(map[int64]bool, len(bases))
	for _, b := range bases {
		present[b] = true
	}
	removeOrphanIndexes(pt.dir, present)
	if len(bases) == 0 {
		s, err := createSegment(pt.dir, 0, pt.log.nowMs())
		if err != nil {
			return err
		}
		pt.segs = []*segment{s}
		return nil
	}
	for i, base := range bases {
		last := i == len(bases)-1
		s, size, err := openSegmentFile(pt.dir, base)
		if errors.Is(err, errBadHeader) {
			// A roll that crashed before its header reached the disk (nothing was
			// acknowledged in the segment), or a damaged header in front of batches that
			// carry their own checksums: write a fresh header and check the batches.
			pt.logger().Warn("rewriting a bad segment header", "base", base, "err", err)
			if err := rewriteSegmentHeader(pt.dir, base, pt.log.nowMs()); err != nil {
				return err
			}
			if err := removeIndexFiles(pt.dir, base); err != nil {
				return err
			}
			s, size, err = openSegmentFile(pt.dir, base)
		}
		if err != nil {
			return err
		}
		pt.segs = append(pt.segs, s)
		if last {
			err = pt.recoverActive(s, size)
		} else {
			err = pt.loadClosed(s, size)
		}
		if err != nil {
			return fmt.Errorf("segment %d: %w", base, err)
		}
	}
	return nil
}

// loadClosed checks a closed segment's indexes, which must end at its last batch, and
// rebuilds them by a full scan when they do not.
func (pt *partition) loadClosed(s *segment, size int64) error {
	s.sealed.Store(true)
	idx, tidx, err := s.readIndexFiles(size)
	if err != nil {
		return err
	}
	if size == segmentHeaderSize && len(idx) == 0 {
		s.size.Store(size)
		return nil
	}
	if n := len(idx); n > 0 && sameRels(idx, tidx) {
		bs := newBatchScanner(s.f, 64<<10)
		pos := int64(idx[n-1].pos)
		h, _, err := bs.next(pos, size)
		if err == nil && h.baseOffset == s.base+int64(idx[n-1].rel) && pos+h.size() == size {
			s.idx, s.tidx = idx, tidx
			s.size.Store(size)
			s.next.Store(h.lastOffset() + 1)
			s.maxTS.Store(tidx[len(tidx)-1].ts)
			s.runMax, s.lastPos, s.lastRel, s.lastIdxPos = s.maxTS.Load(), pos, idx[n-1].rel, pos
			return nil
		}
	}
	pt.logger().Info("rebuilding the indexes of a closed segment", "base", s.base)
	if err := pt.scanTail(s, segmentHeaderSize, size, s.base, false); err != nil {
		return err
	}
	s.sealIndex()
	if err := s.rewriteIndexes(); err != nil {
		return err
	}
	return s.syncAndCloseIndexes()
}

// sameRels reports whether the time index has exactly one entry per index entry, with
// the same relative offsets, as the writer makes them.
func sameRels(idx []indexEntry, tidx []timeEntry) bool {
	if len(idx) != len(tidx) {
		return false
	}
	for i := range idx {
		if idx[i].rel != tidx[i].rel {
			return false
		}
	}
	return true
}

// recoverActive finds the last index entry of the active segment that points at a
// valid batch (and has its time entry), and scans the log from there to its end,
// truncating at the first torn or corrupt batch. The entries before that one are
// checked only when a read uses them (segment.read), so that open reads nothing of the
// segment before its tail.
func (pt *partition) recoverActive(s *segment, size int64) error {
	idx, tidx, err := s.readIndexFiles(size)
	if err != nil {
		return err
	}
	start, expect := int64(segmentHeaderSize), s.base
	s.idx, s.tidx = nil, nil
	bs := newBatchScanner(s.f, 64<<10)
	for i := len(idx) - 1; i >= 0; i-- {
		e := idx[i]
		j := sort.Search(len(tidx), func(j int) bool { return tidx[j].rel >= e.rel })
		if j == len(tidx) || tidx[j].rel != e.rel {
			continue
		}
		h, _, err := bs.next(int64(e.pos), size)
		if err != nil || h.baseOffset != s.base+int64(e.rel) || tidx[j].ts < h.maxTS {
			continue
		}
		s.idx, s.tidx = idx[:i+1], tidx[:j+1]
		start, expect = int64(e.pos), h.baseOffset
		s.runMax, s.lastIdxPos = tidx[j].ts, start
		break
	}
	if err := pt.scanTail(s, start, size, expect, true); err != nil {
		return err
	}
	if err := s.openIndexFiles(false); err != nil {
		return err
	}
	return s.rewriteIndexes()
}

// scanTail scans s from pos (where a batch with base offset expect starts) to size,
// noting every good batch in the indexes. At the first bad batch, the active segment
// (truncate) is cut: its tail may be a torn write. A closed segment is not: its bytes
// were synced at its roll, so a bad batch there is damage, which is logged and left for
// reads to report as ErrCorrupt rather than silently dropped with what follows it.
func (pt *partition) scanTail(s *segment, pos, size, expect int64, truncate bool) error {
	pt.log.metrics.recoveryScannedBytes.Add(int(size - pos))
	bs := newBatchScanner(s.f, 1<<20)
	strict := !pt.topic.config().Compacted
	var bad error
	for pos < size {
		h, _, err := bs.next(pos, size)
		if err == nil && (h.baseOffset < expect || (strict && h.baseOffset != expect) || h.lastOffset()-s.base > math.MaxUint32) {
			err = fmt.Errorf("%w: batch at position %d has offset %d, want %d", ErrCorrupt, pos, h.baseOffset, expect)
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				return fmt.Errorf("cannot read at position %d: %w", pos, err)
			}
			bad = err
			break
		}
		s.noteBatch(h.baseOffset, h.maxTS, pos, pt.log.opts.IndexIntervalBytes)
		expect = h.lastOffset() + 1
		pos += h.size()
	}
	if bad != nil && !truncate {
		pt.logger().Error("a closed segment is corrupt: its records from the damage on cannot be read",
			"segment", s.base, "position", pos, "bytes", size-pos, "first_unreadable_offset", expect, "err", bad)
		s.size.Store(size)
		s.next.Store(expect)
		s.maxTS.Store(s.runMax)
		return nil
	}
	if bad != nil {
		pt.logger().Warn("truncating a torn or corrupt segment tail",
			"segment", s.base, "position", pos, "bytes_lost", size-pos, "first_lost_offset", expect, "err", bad)
		if err := s.f.Truncate(pos); err != nil {
			return fmt.Errorf("cannot truncate at %d: %w", pos, err)
		}
		// Make the cut durable before new batches overwrite the torn bytes. Under
		// FsyncNever nothing else is synced either, and this sync would have to write
		// back every dirty page the killed process left (seconds for a large tail); a
		// lost truncate only means the same torn tail is cut again at the next open.
		if pt.policy != FsyncNever {
			if err := s.f.Sync(); err != nil {
				return fmt.Errorf("cannot sync after truncate: %w", err)
			}
		}
	}
	s.size.Store(pos)
	s.next.Store(expect)
	s.maxTS.Store(s.runMax)
	return nil
}

// append queues recs for the writer and waits for the outcome.
func (pt *partition) append(ctx context.Context, recs []Record) (int64, error) {
	if len(recs) == 0 {
		pt.mu.RLock()
		defer pt.mu.RUnlock()
		return pt.end, nil
	}
	r, err := pt.submit(ctx, recs)
	if err != nil {
		return -1, err
	}
	return r.await()
}

// submit encodes recs (not empty) as one batch and queues it for the writer, without
// waiting for the outcome: the caller must await the returned request.
func (pt *partition) submit(ctx context.Context, recs []Record) (*appendReq, error) {
	return pt.submitIn(ctx, recs, nil)
}

// submitIn is submit for a request whose outcome g is told of (nil: the request's own
// done channel); g must count the request before the call.
func (pt *partition) submitIn(ctx context.Context, recs []Record, g *appendGroup) (*appendReq, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cfg := pt.topic.config()
	r := reqPool.Get().(*appendReq)
	var err error
	r.buf, r.crc, err = encodeBatch(r.buf[:0], recs, batchMeta{dense: true, now: pt.log.nowMs(), codec: cfg.Compression})
	if err == nil && int64(len(r.buf)) > cfg.SegmentBytes-segmentHeaderSize {
		err = fmt.Errorf("%w: %d bytes, segments hold %d", ErrRecordTooLarge, len(r.buf), cfg.SegmentBytes)
	}
	if err != nil {
		reqPool.Put(r)
		return nil, fmt.Errorf("append to %s: %w", pt.name, err)
	}
	r.ctx, r.n, r.group = ctx, int64(len(recs)), g
	h, _ := parseBatchHeader(r.buf)
	r.maxTS = h.maxTS
	pt.sendMu.RLock()
	if pt.sendClosed {
		pt.sendMu.RUnlock()
		reqPool.Put(r)
		return nil, ErrClosed
	}
	if pt.policy == FsyncAlways && pt.wmu.TryLock() {
		// The writer is free: write the round here rather than wake it. The answer
		// comes from the journal either way.
		pt.writeNow(r)
		pt.sendMu.RUnlock()
		return r, nil
	}
	select {
	case pt.queue <- r:
	case <-ctx.Done():
		pt.sendMu.RUnlock()
		reqPool.Put(r)
		return nil, ctx.Err()
	}
	pt.sendMu.RUnlock()
	return r, nil
}

// writeNow writes r, with whatever else is queued, on the caller's goroutine, which
// holds wmu; it releases wmu.
func (pt *partition) writeNow(r *appendReq) {
	group, _ := drain(pt.queue, append(pt.nowGroup[:0], r), reqBytes)
	pt.commit(group)
	clear(group)
	pt.nowGroup = group[:0]
	pt.wmu.Unlock()
}

func reqBytes(r *appendReq) int { return len(r.buf) }

// await waits for the outcome of a submitted request and returns the request to its pool.
func (r *appendReq) await() (int64, error) {
	<-r.done
	base, err := r.base, r.err
	r.release()
	return base, err
}

func (r *appendReq) finish(base int64, err error) {
	r.base, r.err = base, err
	if g := r.group; g != nil {
		if g.left.Add(-1) == 0 {
			g.done <- struct{}{}
		}
		return
	}
	r.done <- struct{}{}
}

// drain appends to group (not empty) what q holds at this moment, until group holds
// maxGroupBytes by size; open is false when it found q closed.
func drain[T any](q <-chan T, group []T, size func(T) int) (_ []T, open bool) {
	bytes := 0
	for _, v := range group {
		bytes += size(v)
	}
	for bytes < maxGroupBytes {
		select {
		case v, ok := <-q:
			if !ok {
				return group, false
			}
			group = append(group, v)
			bytes += size(v)
		default:
			return group, true
		}
	}
	return group, true
}

// run is the writer goroutine: it takes every queued append and writes them as one
// group under wmu, until the queue is closed.
func (pt *partition) run() {
	defer close(pt.exited)
	var tick <-chan time.Time
	if pt.policy == FsyncInterval {
		t := time.NewTicker(pt.log.opts.FsyncInterval)
		defer t.Stop()
		tick = t.C
	}
	group := make([]*appendReq, 0, 64)
	for {
		select {
		case r, ok := <-pt.queue:
			pt.wmu.Lock()
			open := ok
			if ok {
				group, open = drain(pt.queue, append(group[:0], r), reqBytes)
				pt.commit(group)
				clear(group)
			}
			if !open {
				pt.shutdown()
				pt.wmu.Unlock()
				return
			}
			pt.wmu.Unlock()
		case reply := <-pt.syncReq:
			pt.wmu.Lock()
			reply <- pt.journalSync()
			pt.wmu.Unlock()
		case <-tick:
			pt.wmu.Lock()
			if pt.dirty && pt.failed == nil {
				if err := pt.sync(); err != nil {
					pt.fail(err)
				}
			}
			pt.wmu.Unlock()
		}
	}
}

// writeEnd returns where the next round goes in the active segment: its position and
// its first offset.
func (pt *partition) writeEnd() (pos, next int64) {
	if pt.inFlight > 0 {
		return pt.wpos, pt.wnext
	}
	return pt.active.size.Load(), pt.active.next.Load()
}

// commit writes a group of appends, rolling the segment between them as needed.
func (pt *partition) commit(group []*appendReq) {
	cfg := pt.topic.config()
	pt.landReady()
	for pt.inFlight >= maxRoundsInFlight {
		pt.land(<-pt.landed)
	}
	pending := group[:0:0]
	_, next := pt.writeEnd()
	pt.wbuf = pt.wbuf[:0]
	for _, r := range group {
		if pt.failed != nil {
			r.finish(-1, pt.failed)
			continue
		}
		if err := r.ctx.Err(); err != nil {
			r.finish(-1, err)
			continue
		}
		pos, _ := pt.writeEnd()
		size := pos + int64(len(pt.wbuf))
		if size > segmentHeaderSize && (size+int64(len(r.buf)) > cfg.SegmentBytes || pt.aged(cfg)) {
			if len(pending) > 0 {
				pt.flush(pending, next)
				pending = pending[:0]
				pt.wbuf = pt.wbuf[:0]
			}
			pt.landAll()
			_, next = pt.writeEnd()
			if pt.failed == nil {
				if err := pt.roll(); err != nil {
					err = fmt.Errorf("append to %s: roll to a new segment: %w", pt.name, err)
					var re *rollError
					if !errors.As(err, &re) {
						pt.fail(err)
					}
					r.finish(-1, err)
					continue
				}
			}
			if pt.failed != nil {
				r.finish(-1, pt.failed)
				continue
			}
			next = pt.active.next.Load()
		}
		sealBatch(r.buf, next, r.crc)
		r.base = next
		next += r.n
		pt.wbuf = append(pt.wbuf, r.buf...)
		pending = append(pending, r)
	}
	if len(pending) > 0 {
		pt.flush(pending, next)
	}
}

// aged reports whether the active segment is older than the topic's SegmentAge.
func (pt *partition) aged(cfg TopicConfig) bool {
	return cfg.SegmentAge > 0 && pt.log.nowMs()-pt.active.created >= cfg.SegmentAge.Milliseconds()
}

// undoWrite fails the round of pending, whose write at pos failed with err, truncating
// the segment back to pos; the partition goes on unless the truncate fails too.
func (pt *partition) undoWrite(s *segment, pending []*appendReq, pos int64, err error) {
	err = fmt.Errorf("append to %s at offset %d: %w", pt.name, pending[0].base, err)
	pt.cutBack(s, pos, err)
	for _, r := range pending {
		r.finish(-1, err)
	}
}

// cutBack truncates s back to pos after a round failed with err, failing the partition
// if it cannot.
func (pt *partition) cutBack(s *segment, pos int64, err error) {
	if terr := s.f.Truncate(pos); terr != nil {
		pt.fail(fmt.Errorf("%w (and cannot truncate back to %d: %v)", err, pos, terr))
	}
}

// flush writes pt.wbuf (the batches of pending, ending at offset next) to the active
// segment, then publishes and answers every request: at once, or under FsyncAlways
// once the journal has made the round durable (see land).
func (pt *partition) flush(pending []*appendReq, next int64) {
	s := pt.active
	pos, _ := pt.writeEnd()
	if err := pt.writeAt(s, pt.wbuf, pos); err != nil {
		pt.undoWrite(s, pending, pos, err)
		return
	}
	pt.dirty = true
	if pt.policy == FsyncAlways {
		// One journal write and fdatasync serve every partition's round; the segment
		// is synced later (see journal.go). The writer goes on with the next round.
		e := journalEntryPool.Get().(*journalEntry)
		e.pt, e.seg, e.pos, e.next, e.epoch = pt, s, pos, next, pt.epoch
		e.b, pt.wbuf = pt.wbuf, e.b[:0]
		e.reqs = append(e.reqs[:0], pending...)
		pt.wpos, pt.wnext = pos+int64(len(e.b)), next
		pt.inFlight++
		pt.log.journal.submit(e)
		return
	}
	pt.publish(s, pos, next, pending, pt.wbuf)
}

// land takes back a round the journal has answered: published already, or failed. The
// journal answers the appends of a failed round, and of every round written after it,
// which fail with it, right after handing them back; their bytes are cut away with it
// (see journal.fail), and land cuts them again, as a write may have gone on past the
// journal's cut. An appender that tries again writes after land, so after the cut.
func (pt *partition) land(e *journalEntry) {
	pt.inFlight--
	if e.err == nil {
		pt.recycle(e)
		return
	}
	pt.cutBack(e.seg, e.pos, e.err)
	if !errors.Is(e.err, errJournalWrite) {
		pt.fail(e.err) // a failed sync: as after a failed segment sync
	}
	pt.recycle(e)
	for pt.inFlight > 0 {
		pt.inFlight--
		pt.recycle(<-pt.landed)
	}
	pt.epoch++
}

// landReady takes back the rounds that have landed, without waiting.
func (pt *partition) landReady() {
	for {
		select {
		case e := <-pt.landed:
			pt.land(e)
		default:
			return
		}
	}
}

// landAll waits for every round in flight to land.
func (pt *partition) landAll() {
	for pt.inFlight > 0 {
		pt.land(<-pt.landed)
	}
}

// recycle returns a landed entry to its pool, keeping its buffer.
func (pt *partition) recycle(e *journalEntry) {
	clear(e.reqs)
	e.pt, e.seg, e.reqs, e.err = nil, nil, e.reqs[:0], nil
	if cap(e.b) <= maxGroupBytes {
		journalEntryPool.Put(e)
	}
}

// publish makes the batches of pending, written as b at pos and ending at offset next,
// visible to readers, answers the appends and notes the batches in the indexes. It runs
// on the writer, or under FsyncAlways on the journal's goroutine, which publishes each
// partition's rounds in order; the writer then touches the indexes only when no round
// is in flight (at roll and close, after landAll).
func (pt *partition) publish(s *segment, pos, next int64, pending []*appendReq, b []byte) {
	p := pos
	var records int64
	for _, r := range pending {
		s.noteBatch(r.base, r.maxTS, p, pt.log.opts.IndexIntervalBytes)
		p += int64(len(r.buf))
		records += r.n
	}
	pt.mu.Lock()
	s.size.Store(p)
	s.next.Store(next)
	s.maxTS.Store(s.runMax)
	pt.end = next
	close(pt.notify)
	pt.notify = make(chan struct{})
	pt.mu.Unlock()
	pt.log.metrics.appendedBytes.Add(len(b))
	pt.log.metrics.appendedRecords.Add(int(records))
	for _, r := range pending {
		r.finish(r.base, nil)
	}
	// Index entries go to their files after the producers have their answers, a few
	// at a time: recovery scans from the last entry on disk, so entries not yet
	// written only lengthen that scan (by at most indexFlushEntries intervals).
	if s.pendingIndexEntries() >= indexFlushEntries {
		if err := s.flushIndexes(); err != nil {
			// Indexes only speed up lookups; recovery rebuilds what is missing.
			pt.logger().Warn("cannot write index entries", "err", err)
		}
	}
}

// sync makes the active segment's written bytes durable.
// writeAt writes b to s at pos (through the test fault hook, if set).
func (pt *partition) writeAt(s *segment, b []byte, pos int64) error {
	if hook := pt.log.testHooks.writeFault; hook != nil {
		if err := hook(); err != nil {
			s.f.WriteAt(b[:len(b)/2], pos) // a fault after a partial write
			return err
		}
	}
	_, err := s.f.WriteAt(b, pos)
	return err
}

func (pt *partition) sync() error {
	start := time.Now()
	err := fdatasync(pt.active.fd)
	pt.log.metrics.fsyncSeconds.UpdateDuration(start)
	if hook := pt.log.testHooks.syncFault; hook != nil && err == nil {
		err = hook()
	}
	if err != nil {
		return fmt.Errorf("fdatasync %s segment %d: %w", pt.name, pt.active.base, err)
	}
	pt.dirty = false
	pt.log.metrics.fsyncs.Inc()
	if hook := pt.log.testHooks.synced; hook != nil {
		if fi, err := pt.active.f.Stat(); err == nil {
			hook(segmentPath(pt.dir, pt.active.base, logExt), fi.Size())
		}
	}
	return nil
}

// journalSync syncs the active segment for the journal, which may then drop the
// entries it holds for it; it runs on the writer goroutine.
func (pt *partition) journalSync() error {
	if pt.failed != nil {
		return pt.failed
	}
	if pt.dirty {
		if err := pt.sync(); err != nil {
			pt.fail(err)
			return err
		}
	}
	return nil
}

// syncForJournal asks the writer to sync the active segment (segments closed before
// were synced when they were closed) and returns the outcome; once the writer has
// exited it returns that of the sync at close.
func (pt *partition) syncForJournal() error {
	reply := make(chan error, 1)
	select {
	case pt.syncReq <- reply:
		return <-reply
	case <-pt.exited:
		return pt.shutdownErr
	}
}

// fail puts the partition in the failed state: every later append returns err.
func (pt *partition) fail(err error) {
	if pt.failed == nil {
		pt.logger().Error("partition failed; appends fail until the log is reopened", "err", err)
		pt.failed = err
	}
}

// roll closes the active segment (syncing it and its indexes) and starts a new one.
func (pt *partition) roll() error {
	old := pt.active
	if pt.policy != FsyncNever && pt.dirty {
		if err := pt.sync(); err != nil {
			return err
		}
	}
	old.sealIndex()
	if err := old.syncAndCloseIndexes(); err != nil {
		return err
	}
	s, err := createSegment(pt.dir, old.next.Load(), pt.log.nowMs())
	if err != nil {
		// Nothing is lost: the old segment stays active and synced. Undo the new
		// segment's files and go on writing the old one's indexes.
		for _, ext := range []string{logExt, indexExt, timeIndexExt} {
			os.Remove(segmentPath(pt.dir, old.next.Load(), ext))
		}
		if ierr := old.openIndexFiles(false); ierr != nil {
			pt.logger().Warn("cannot reopen index files after a failed roll", "err", ierr)
		}
		return &rollError{err}
	}
	old.sealed.Store(true)
	pt.mu.Lock()
	pt.segs = append(pt.segs, s)
	pt.mu.Unlock()
	pt.active = s
	pt.dirty = false
	return nil
}

// rollError is a roll that failed to create the new segment: the append fails, but the
// old segment is intact and stays active, so the partition is not failed.
type rollError struct{ err error }

func (e *rollError) Error() string { return e.err.Error() }
func (e *rollError) Unwrap() error { return e.err }

// shutdown runs on the writer when the queue is closed: it syncs and closes the active
// segment's files.
func (pt *partition) shutdown() {
	pt.landAll()
	s := pt.active
	pt.shutdownErr = pt.failed
	if pt.dirty {
		if err := pt.sync(); err != nil {
			pt.logger().Error("cannot sync at close", "err", err)
			pt.shutdownErr = err
		}
	}
	s.sealIndex()
	if err := s.syncAndCloseIndexes(); err != nil {
		pt.logger().Error("cannot write indexes at close", "err", err)
	}
}

// close stops the writer after it has written every queued append, then closes the
// partition's files. Readers in Wait return ErrClosed.
func (pt *partition) close() {
	pt.sendMu.Lock()
	if pt.sendClosed {
		pt.sendMu.Unlock()
		return
	}
	pt.sendClosed = true
	close(pt.queue)
	pt.sendMu.Unlock()
	<-pt.exited
	pt.mu.Lock()
	pt.closed = true
	close(pt.notify)
	segs := pt.segs
	pt.segs = nil
	pt.mu.Unlock()
	for _, s := range segs {
		s.release()
	}
}

// stats returns the partition's bounds.
func (pt *partition) stats() PartitionStats {
	pt.mu.RLock()
	defer pt.mu.RUnlock()
	if len(pt.segs) == 0 {
		return PartitionStats{}
	}
	st := PartitionStats{StartOffset: pt.segs[0].base, EndOffset: pt.end}
	for _, s := range pt.segs {
		st.Bytes += s.size.Load()
	}
	return st
}

// wait blocks until the committed end offset is past offset.
func (pt *partition) wait(ctx context.Context, offset int64) error {
	for {
		pt.mu.RLock()
		closed, end, ch := pt.closed, pt.end, pt.notify
		pt.mu.RUnlock()
		if closed {
			return ErrClosed
		}
		if end > offset {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// segmentFor returns, acquired, the segment holding offset, or the first segment
// after the one based at after when after >= 0. The end offset is returned too.
func (pt *partition) segmentFor(offset int64) (*segment, int64, error) {
	pt.mu.RLock()
	defer pt.mu.RUnlock()
	if pt.closed {
		return nil, 0, ErrClosed
	}
	start, end := pt.segs[0].base, pt.end
	if offset < start || offset > end {
		return nil, end, fmt.Errorf("read %s at offset %d, outside [%d, %d]: %w", pt.name, offset, start, end, ErrOffsetOutOfRange)
	}
	if offset == end {
		return nil, end, nil
	}
	i := sort.Search(len(pt.segs), func(i int) bool { return pt.segs[i].base > offset }) - 1
	s := pt.segs[i]
	s.acquire()
	return s, end, nil
}

// read returns the records from offset on, whole batches of about maxBytes, decoded
// into dst with Key and Value aliasing buf (which it grows and returns). next is where
// the following read starts: after the last record, or past a gap.
func (pt *partition) read(offset int64, maxBytes int, dst []Record, buf []byte) ([]Record, []byte, int64, error) {
	dst = dst[:0]
	if maxBytes <= 0 {
		maxBytes = defaultReadBytes
	}
	for {
		s, end, err := pt.segmentFor(offset)
		if err != nil || s == nil {
			return dst, buf, end, err
		}
		var next int64
		dst, buf, next, err = s.read(offset, maxBytes, dst, buf, pt.log.opts.IndexIntervalBytes, !pt.topic.config().Compacted, pt.logger)
		segNext := s.next.Load()
		s.release()
		if err != nil {
			return dst, buf, offset, fmt.Errorf("read %s at offset %d: %w", pt.name, offset, err)
		}
		if len(dst) > 0 {
			return dst, buf, next, nil
		}
		// Nothing at or after offset in this segment (compaction gaps): go on with the
		// next one.
		if segNext <= offset {
			segNext = offset + 1
		}
		offset = max(segNext, pt.nextBase(s.base))
	}
}

// skipDamage returns where reading can go on after a batch at offset failed its
// checks: the next indexed batch of the same segment after offset, else the next
// segment's base offset, else the end offset.
func (pt *partition) skipDamage(offset int64) int64 {
	pt.mu.RLock()
	defer pt.mu.RUnlock()
	i := sort.Search(len(pt.segs), func(i int) bool { return pt.segs[i].base > offset })
	if i > 0 {
		s := pt.segs[i-1]
		s.mu.RLock()
		j := sort.Search(len(s.idx), func(j int) bool { return s.base+int64(s.idx[j].rel) > offset })
		next := int64(-1)
		if j < len(s.idx) {
			next = s.base + int64(s.idx[j].rel)
		}
		s.mu.RUnlock()
		if next >= 0 && next < pt.end {
			return next
		}
	}
	if i < len(pt.segs) {
		return pt.segs[i].base
	}
	return pt.end
}

// nextBase returns the base offset of the segment after the one based at base, or the
// end offset.
func (pt *partition) nextBase(base int64) int64 {
	pt.mu.RLock()
	defer pt.mu.RUnlock()
	i := sort.Search(len(pt.segs), func(i int) bool { return pt.segs[i].base > base })
	if i < len(pt.segs) {
		return pt.segs[i].base
	}
	return pt.end
}

// read reads the batches of s holding offsets from offset on, up to about maxBytes,
// at least one batch if there is one. Every batch it passes is checked against the
// offsets expected from the index entry it started at: in a strict (not compacted)
// topic each batch starts where the previous one ended; in a compacted one offsets only
// grow. A segment whose index entry does not match the log gets its indexes
// rebuilt and the read is retried.
func (s *segment) read(offset int64, maxBytes int, dst []Record, buf []byte, interval int64, strict bool, logger func() *slog.Logger) ([]Record, []byte, int64, error) {
	n := len(dst)
	dst, buf, next, err := s.readFrom(offset, maxBytes, dst, buf, interval, strict)
	if errors.Is(err, errIndexMismatch) {
		if rerr := s.repairIndex(interval, logger()); rerr != nil {
			return dst[:n], buf, offset, fmt.Errorf("%w: %v (%v)", ErrCorrupt, err, rerr)
		}
		dst, buf, next, err = s.readFrom(offset, maxBytes, dst[:n], buf, interval, strict)
		if errors.Is(err, errIndexMismatch) {
			err = fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
	}
	return dst, buf, next, err
}

func (s *segment) readFrom(offset int64, maxBytes int, dst []Record, buf []byte, interval int64, strict bool) (_ []Record, outBuf []byte, _ int64, _ error) {
	// need is what one buffer would have taken for this read: the bytes read plus the
	// payloads decompressed after them. A buffer that was too small is replaced for the
	// next read (the records of this one alias the old one), so that a steady reader
	// reads and decompresses without allocating.
	need := int64(0)
	defer func() {
		if int64(cap(outBuf)) < need {
			outBuf = make([]byte, 0, need+need/4)
		}
	}()
	limit := s.size.Load()
	pos, expect := s.lookup(offset)
	indexed := pos != segmentHeaderSize
	next := offset
	taken := 0
	// bad ends the read at a batch that fails its checks: the good batches before it
	// are returned without an error (the next read starts at the bad one and gets it).
	bad := func(err error) ([]Record, []byte, int64, error) {
		if len(dst) > 0 {
			return dst, buf, next, nil
		}
		return dst, buf, next, err
	}
	for pos < limit && len(dst) == 0 {
		want := min(limit-pos, int64(maxBytes)+interval+batchHeaderSize)
		if int64(cap(buf)) < want {
			buf = make([]byte, want)
		}
		chunk := buf[:want]
		if _, err := s.f.ReadAt(chunk, pos); err != nil {
			return dst, buf, next, err
		}
		scratch := buf[want:want]
		unpacked := int64(0)
		need = max(need, want)
		off := int64(0)
		for off+batchHeaderSize <= want && taken < maxBytes {
			h, err := parseBatchHeader(chunk[off:])
			if err == nil && (h.baseOffset < expect || (strict && h.baseOffset != expect)) {
				err = fmt.Errorf("%w: batch at position %d has offset %d, want %d", ErrCorrupt, pos+off, h.baseOffset, expect)
			}
			if err != nil {
				if indexed {
					return dst, buf, next, fmt.Errorf("%w: segment %d position %d: %v", errIndexMismatch, s.base, pos+off, err)
				}
				return bad(fmt.Errorf("position %d: %w", pos+off, err))
			}
			if indexed && h.baseOffset != expect {
				return dst, buf, next, fmt.Errorf("%w: segment %d position %d holds offset %d, index says %d", errIndexMismatch, s.base, pos+off, h.baseOffset, expect)
			}
			if pos+off+h.size() > limit {
				return bad(fmt.Errorf("%w: batch at position %d overruns the segment", ErrCorrupt, pos+off))
			}
			var b []byte
			if off+h.size() <= want {
				b = chunk[off : off+h.size()]
			} else if len(dst) > 0 {
				break
			} else {
				// The first batch does not fit: read it alone.
				b = make([]byte, h.size())
				if _, err := s.f.ReadAt(b, pos+off); err != nil {
					return dst, buf, next, err
				}
			}
			checked := false
			if indexed {
				// The indexed batch must check out too; after it, damage is corruption.
				if err := checkBatch(&h, b); err != nil {
					return dst, buf, next, fmt.Errorf("%w: %v", errIndexMismatch, err)
				}
				indexed, checked = false, true
			}
			expect = h.lastOffset() + 1
			if h.lastOffset() < offset {
				off += h.size()
				continue
			}
			if !checked {
				if err := checkBatch(&h, b); err != nil {
					return bad(err)
				}
			}
			var payload []byte
			payload, scratch, err = batchPayload(&h, b, scratch)
			if err != nil {
				return bad(err)
			}
			if h.attrs&codecMask != 0 {
				unpacked += int64(len(payload))
				need = max(need, want+unpacked)
			}
			n := len(dst)
			if dst, err = decodeRecords(&h, payload, dst, offset); err != nil {
				dst = dst[:n]
				return bad(err)
			}
			next = h.lastOffset() + 1
			if len(dst) > 0 {
				taken += int(h.size())
			}
			off += h.size()
		}
		if off == 0 {
			return bad(fmt.Errorf("%w: no progress at position %d", ErrCorrupt, pos))
		}
		pos += off
	}
	return dst, buf, next, nil
}

// offsetForTime returns the first offset whose record has a timestamp at or after ts.
func (pt *partition) offsetForTime(ts int64) (int64, error) {
	pt.mu.RLock()
	if pt.closed {
		pt.mu.RUnlock()
		return 0, ErrClosed
	}
	segs := append([]*segment(nil), pt.segs...)
	end := pt.end
	for _, s := range segs {
		s.acquire()
	}
	pt.mu.RUnlock()
	defer func() {
		for _, s := range segs {
			s.release()
		}
	}()
	strict := !pt.topic.config().Compacted
	for _, s := range segs {
		if s.maxTS.Load() < ts {
			continue
		}
		off, found, err := s.offsetForTime(ts, strict)
		if errors.Is(err, errIndexMismatch) {
			if err = s.repairIndex(pt.log.opts.IndexIntervalBytes, pt.logger()); err == nil {
				off, found, err = s.offsetForTime(ts, strict)
			}
			if errors.Is(err, errIndexMismatch) {
				err = fmt.Errorf("%w: %v", ErrCorrupt, err)
			}
		}
		if err != nil {
			return 0, fmt.Errorf("offset for time %d in %s: %w", ts, pt.name, err)
		}
		if found {
			return off, nil
		}
	}
	return end, nil
}

// offsetForTime returns the first offset of s whose record has a timestamp at or after
// ts, and whether there is one.
func (s *segment) offsetForTime(ts int64, strict bool) (int64, bool, error) {
	s.mu.RLock()
	rel := lookupTimeIndex(s.tidx, ts)
	entryTS := int64(math.MaxInt64)
	if i := sort.Search(len(s.tidx), func(i int) bool { return s.tidx[i].rel >= rel }); i < len(s.tidx) && s.tidx[i].rel == rel {
		entryTS = s.tidx[i].ts
	}
	s.mu.RUnlock()
	pos, expect := s.lookup(s.base + int64(rel))
	indexed := pos != segmentHeaderSize
	limit := s.size.Load()
	bs := newBatchScanner(s.f, 256<<10)
	var recs []Record
	for pos < limit {
		h, b, err := bs.next(pos, limit)
		if err == nil && (h.baseOffset < expect || (strict && h.baseOffset != expect)) {
			err = fmt.Errorf("%w: batch at position %d has offset %d, want %d", ErrCorrupt, pos, h.baseOffset, expect)
		}
		if err != nil {
			if indexed && errors.Is(err, ErrCorrupt) {
				err = fmt.Errorf("%w: %v", errIndexMismatch, err)
			}
			return 0, false, err
		}
		if indexed && h.baseOffset != expect {
			return 0, false, fmt.Errorf("%w: segment %d position %d holds offset %d, index says %d", errIndexMismatch, s.base, pos, h.baseOffset, expect)
		}
		if h.baseOffset == s.base+int64(rel) && h.maxTS > entryTS {
			// The time entry claims less than the batch it names holds.
			return 0, false, fmt.Errorf("%w: segment %d time entry %d says %d, batch holds %d", errIndexMismatch, s.base, rel, entryTS, h.maxTS)
		}
		indexed = false
		pos += h.size()
		expect = h.lastOffset() + 1
		if h.maxTS < ts {
			continue
		}
		payload, _, err := batchPayload(&h, b, nil)
		if err == nil {
			recs, err = decodeRecords(&h, payload, recs[:0], 0)
		}
		if err != nil {
			return 0, false, err
		}
		for _, r := range recs {
			if r.Timestamp >= ts {
				return r.Offset, true, nil
			}
		}
	}
	return 0, false, nil
}
