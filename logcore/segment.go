package logcore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// File name extensions of a segment's files.
const (
	logExt       = ".log"
	indexExt     = ".index"
	timeIndexExt = ".timeindex"
	cleanedExt   = ".cleaned" // a compacted rewrite not yet swapped in
)

func segmentPath(dir string, base int64, ext string) string {
	return filepath.Join(dir, fmt.Sprintf("%020d%s", base, ext))
}

// segment is one file of a partition with its in-memory indexes. Readers may use a
// segment concurrently with the writer: they read below size, which only grows while
// the segment is active, and take mu to read the indexes.
type segment struct {
	base    int64
	dir     string
	created int64 // ms since the epoch, from the header
	f       *os.File
	fd      int

	size  atomic.Int64 // committed bytes, header included
	next  atomic.Int64 // offset after the last committed record
	maxTS atomic.Int64 // largest committed timestamp; math.MinInt64 when empty

	mu   sync.RWMutex // guards idx, tidx and idxRewrite
	idx  []indexEntry
	tidx []timeEntry
	// idxRewrite tells the writer that a reader replaced idx and tidx (repairIndex):
	// its next flushIndexes rewrites the files from the start.
	idxRewrite bool

	// sealed is set once the segment is closed (no longer written): from then on a
	// reader that rebuilds its indexes (repairIndex, serialised by repairMu) writes
	// the index files itself.
	sealed   atomic.Bool
	repairMu sync.Mutex

	// refs counts the partition's own reference plus readers in flight; the file is
	// closed when it drops to zero.
	refs atomic.Int32

	// Index building state, owned by the writer of the active segment (or by whoever
	// builds a segment during recovery or compaction).
	runMax      int64 // running max timestamp up to the last batch
	lastPos     int64 // position of the last batch, -1 if none
	lastRel     uint32
	lastIdxPos  int64 // position of the last indexed batch, header end if none
	idxFile     *os.File
	tidxFile    *os.File
	idxWritten  int
	tidxWritten int
}

func newSegment(dir string, base int64) *segment {
	s := &segment{base: base, dir: dir, runMax: math.MinInt64, lastPos: -1, lastIdxPos: segmentHeaderSize}
	s.maxTS.Store(math.MinInt64)
	s.next.Store(base)
	s.refs.Store(1)
	return s
}

// createSegment creates an empty segment file with its header and empty index files,
// syncs the file and then the directory.
func createSegment(dir string, base, createdMs int64) (*segment, error) {
	s := newSegment(dir, base)
	s.created = createdMs
	path := segmentPath(dir, base, logExt)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot create segment: %w", err)
	}
	s.f, s.fd = f, int(f.Fd())
	var hdr [segmentHeaderSize]byte
	copy(hdr[:], segmentMagic)
	hdr[4] = segmentVersion
	binary.LittleEndian.PutUint64(hdr[8:], uint64(base))
	binary.LittleEndian.PutUint64(hdr[16:], uint64(createdMs))
	if _, err := f.WriteAt(hdr[:], 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("cannot write header of %s: %w", path, err)
	}
	if err := fdatasync(s.fd); err != nil {
		f.Close()
		return nil, fmt.Errorf("cannot sync %s: %w", path, err)
	}
	s.size.Store(segmentHeaderSize)
	if err := s.openIndexFiles(true); err != nil {
		f.Close()
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		s.closeFiles()
		return nil, err
	}
	return s, nil
}

// openSegmentFile opens an existing segment file and checks its header. It returns the
// segment and the file's size.
func openSegmentFile(dir string, base int64) (*segment, int64, error) {
	s := newSegment(dir, base)
	path := segmentPath(dir, base, logExt)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("cannot open segment: %w", err)
	}
	s.f, s.fd = f, int(f.Fd())
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("cannot stat %s: %w", path, err)
	}
	var hdr [segmentHeaderSize]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("%w: %s: cannot read header: %v", errBadHeader, path, err)
	}
	if string(hdr[:4]) != segmentMagic || hdr[4] != segmentVersion || int64(binary.LittleEndian.Uint64(hdr[8:])) != base {
		f.Close()
		return nil, 0, fmt.Errorf("%w: %s: bad magic, version or base offset", errBadHeader, path)
	}
	s.created = int64(binary.LittleEndian.Uint64(hdr[16:]))
	return s, st.Size(), nil
}

var errBadHeader = errors.New("bad segment header")

// rewriteSegmentHeader writes a fresh header (magic, version, base from the file name,
// created at createdMs) over the first bytes of a segment file and syncs it.
func rewriteSegmentHeader(dir string, base, createdMs int64) error {
	path := segmentPath(dir, base, logExt)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("cannot repair header: %w", err)
	}
	defer f.Close()
	var hdr [segmentHeaderSize]byte
	copy(hdr[:], segmentMagic)
	hdr[4] = segmentVersion
	binary.LittleEndian.PutUint64(hdr[8:], uint64(base))
	binary.LittleEndian.PutUint64(hdr[16:], uint64(createdMs))
	if _, err := f.WriteAt(hdr[:], 0); err != nil {
		return fmt.Errorf("cannot repair header of %s: %w", path, err)
	}
	if err := fdatasync(int(f.Fd())); err != nil {
		return fmt.Errorf("cannot sync %s: %w", path, err)
	}
	return nil
}

// removeIndexFiles deletes a segment's index files, so that open rebuilds them.
func removeIndexFiles(dir string, base int64) error {
	for _, ext := range []string{indexExt, timeIndexExt} {
		if err := os.Remove(segmentPath(dir, base, ext)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cannot remove index: %w", err)
		}
	}
	return nil
}

func (s *segment) openIndexFiles(truncate bool) error {
	flags := os.O_RDWR | os.O_CREATE
	if truncate {
		flags |= os.O_TRUNC
	}
	var err error
	if s.idxFile, err = os.OpenFile(segmentPath(s.dir, s.base, indexExt), flags, 0o644); err != nil {
		return fmt.Errorf("cannot open index: %w", err)
	}
	if s.tidxFile, err = os.OpenFile(segmentPath(s.dir, s.base, timeIndexExt), flags, 0o644); err != nil {
		s.idxFile.Close()
		s.idxFile = nil
		return fmt.Errorf("cannot open time index: %w", err)
	}
	return nil
}

// readIndexFiles reads the segment's index files as they are on disk (missing files
// read as empty).
func (s *segment) readIndexFiles(limit int64) ([]indexEntry, []timeEntry, error) {
	ib, err := os.ReadFile(segmentPath(s.dir, s.base, indexExt))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("cannot read index: %w", err)
	}
	tb, err := os.ReadFile(segmentPath(s.dir, s.base, timeIndexExt))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("cannot read time index: %w", err)
	}
	return parseIndex(ib, limit), parseTimeIndex(tb, math.MaxUint32), nil
}

// noteBatch records a committed batch at pos in the running index state, adding index
// entries every interval bytes. The caller owns the segment's index building.
func (s *segment) noteBatch(base, maxTS, pos, interval int64) {
	if maxTS > s.runMax {
		s.runMax = maxTS
	}
	s.lastPos = pos
	s.lastRel = uint32(base - s.base)
	if pos-s.lastIdxPos >= interval {
		s.addIndexEntry()
	}
}

// addIndexEntry indexes the last noted batch in both indexes.
func (s *segment) addIndexEntry() {
	s.mu.Lock()
	s.idx = append(s.idx, indexEntry{rel: s.lastRel, pos: uint32(s.lastPos)})
	s.tidx = append(s.tidx, timeEntry{ts: s.runMax, rel: s.lastRel})
	s.mu.Unlock()
	s.lastIdxPos = s.lastPos
}

// sealIndex indexes the last batch if it is not yet, so that a closed segment's
// indexes end at its last batch (which open checks).
func (s *segment) sealIndex() {
	if s.lastPos > s.lastIdxPos || (s.lastPos >= 0 && len(s.idx) == 0) {
		s.addIndexEntry()
	}
}

// pendingIndexEntries returns how many index entries are not yet in the index files.
// The caller owns the segment's index building.
func (s *segment) pendingIndexEntries() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.idxRewrite {
		return len(s.idx)
	}
	return len(s.idx) - s.idxWritten
}

// flushIndexes appends the index entries not yet written to the index files. The time
// index is written first: recovery trusts an index entry only with its time entry.
func (s *segment) flushIndexes() error {
	if s.idxFile == nil {
		return nil
	}
	s.mu.Lock()
	rewrite := s.idxRewrite
	s.idxRewrite = false
	if rewrite {
		s.idxWritten, s.tidxWritten = 0, 0
	}
	tidx, idx := s.tidx[s.tidxWritten:], s.idx[s.idxWritten:]
	s.mu.Unlock()
	if rewrite {
		// A reader rebuilt the indexes (repairIndex): the files start over.
		if err := s.idxFile.Truncate(0); err != nil {
			return fmt.Errorf("cannot truncate index: %w", err)
		}
		if err := s.tidxFile.Truncate(0); err != nil {
			return fmt.Errorf("cannot truncate time index: %w", err)
		}
	}
	if len(idx) == 0 && len(tidx) == 0 {
		return nil
	}
	var buf []byte
	for _, e := range tidx {
		buf = appendTimeEntry(buf, e)
	}
	if _, err := s.tidxFile.WriteAt(buf, int64(s.tidxWritten)*timeIndexEntrySize); err != nil {
		return fmt.Errorf("cannot write time index: %w", err)
	}
	s.tidxWritten += len(tidx)
	buf = buf[:0]
	for _, e := range idx {
		buf = appendIndexEntry(buf, e)
	}
	if _, err := s.idxFile.WriteAt(buf, int64(s.idxWritten)*indexEntrySize); err != nil {
		return fmt.Errorf("cannot write index: %w", err)
	}
	s.idxWritten += len(idx)
	return nil
}

// rewriteIndexes replaces the index files with the in-memory indexes.
func (s *segment) rewriteIndexes() error {
	if s.idxFile == nil {
		if err := s.openIndexFiles(true); err != nil {
			return err
		}
	} else {
		if err := s.idxFile.Truncate(0); err != nil {
			return fmt.Errorf("cannot truncate index: %w", err)
		}
		if err := s.tidxFile.Truncate(0); err != nil {
			return fmt.Errorf("cannot truncate time index: %w", err)
		}
	}
	s.idxWritten, s.tidxWritten = 0, 0
	return s.flushIndexes()
}

// syncAndCloseIndexes makes the index files durable and closes them (at roll and close).
func (s *segment) syncAndCloseIndexes() error {
	if s.idxFile == nil {
		return nil
	}
	err := s.flushIndexes()
	for _, f := range []*os.File{s.idxFile, s.tidxFile} {
		if e := f.Sync(); e != nil && err == nil {
			err = fmt.Errorf("cannot sync index %s: %w", f.Name(), e)
		}
		if e := f.Close(); e != nil && err == nil {
			err = fmt.Errorf("cannot close index %s: %w", f.Name(), e)
		}
	}
	s.idxFile, s.tidxFile = nil, nil
	return err
}

// closeFiles closes every file of the segment, ignoring errors (error paths only).
func (s *segment) closeFiles() {
	if s.idxFile != nil {
		s.idxFile.Close()
		s.tidxFile.Close()
		s.idxFile, s.tidxFile = nil, nil
	}
	s.f.Close()
}

func (s *segment) acquire() { s.refs.Add(1) }

// release drops a reference; the last one closes the log file.
func (s *segment) release() {
	if s.refs.Add(-1) == 0 {
		s.f.Close()
	}
}

// lookup returns the position of the batch to start scanning from for offset off, and
// the base offset the index says that batch has (the segment's base at the header end).
func (s *segment) lookup(off int64) (pos, batchBase int64) {
	rel := off - s.base
	if rel <= 0 {
		return segmentHeaderSize, s.base
	}
	if rel > math.MaxUint32 {
		rel = math.MaxUint32
	}
	s.mu.RLock()
	e := lookupIndex(s.idx, uint32(rel))
	s.mu.RUnlock()
	return int64(e.pos), s.base + int64(e.rel)
}

// errIndexMismatch says that an index entry does not point at the batch it names.
var errIndexMismatch = errors.New("index entry does not match the log")

// repairIndex rebuilds the in-memory indexes of the segment by scanning it, after a
// lookup found an entry that does not match the log, and rewrites its index files.
// Entries loaded from disk are checked only when a read uses them (see doc.go), so
// this serves the active segment too: there the entries the writer added past the
// scanned range are kept, and the writer rewrites its index files at its next flush.
func (s *segment) repairIndex(interval int64, logger interface{ Warn(string, ...any) }) error {
	s.repairMu.Lock()
	defer s.repairMu.Unlock()
	limit := s.size.Load()
	idx, tidx, err := buildIndexes(s.f, s.base, limit, interval)
	if err != nil {
		return fmt.Errorf("rebuild index of segment %d: %w", s.base, err)
	}
	logger.Warn("rebuilt an index that did not match its segment", "segment", s.base, "entries", len(idx))
	sealed := s.sealed.Load()
	s.mu.Lock()
	if !sealed {
		// Keep the entries the writer made for batches committed after the scan
		// (past limit); it adds an index and a time entry together for each.
		for i, e := range s.idx {
			if int64(e.pos) >= limit {
				idx = append(idx, s.idx[i:]...)
				for _, te := range s.tidx {
					if te.rel >= e.rel {
						tidx = append(tidx, te)
					}
				}
				break
			}
		}
		s.idxRewrite = true
	}
	s.idx, s.tidx = idx, tidx
	s.mu.Unlock()
	if !sealed {
		return nil
	}
	var ib, tb []byte
	for _, e := range idx {
		ib = appendIndexEntry(ib, e)
	}
	for _, e := range tidx {
		tb = appendTimeEntry(tb, e)
	}
	// The files only speed up the next open; a failure here is not a read failure.
	// Write them only while s is still the segment on disk: compaction or retention
	// may have replaced or deleted it while this reader held it.
	cur, err1 := os.Stat(segmentPath(s.dir, s.base, logExt))
	mine, err2 := s.f.Stat()
	if err1 != nil || err2 != nil || !os.SameFile(cur, mine) {
		return nil
	}
	if err := writeFileAtomic(segmentPath(s.dir, s.base, timeIndexExt), tb); err != nil {
		logger.Warn("cannot rewrite time index", "segment", s.base, "err", err)
	} else if err := writeFileAtomic(segmentPath(s.dir, s.base, indexExt), ib); err != nil {
		logger.Warn("cannot rewrite index", "segment", s.base, "err", err)
	}
	return nil
}

// buildIndexes scans the batches of a segment file from its header to limit and
// returns indexes with an entry at least every interval bytes and one for the last
// batch. It stops quietly at the first batch that does not check out.
func buildIndexes(f *os.File, base, limit, interval int64) ([]indexEntry, []timeEntry, error) {
	var idx []indexEntry
	var tidx []timeEntry
	bs := newBatchScanner(f, 1<<20)
	runMax := int64(math.MinInt64)
	lastIdxPos := int64(segmentHeaderSize)
	for pos := int64(segmentHeaderSize); pos < limit; {
		h, _, err := bs.next(pos, limit)
		if err != nil {
			if errors.Is(err, ErrCorrupt) {
				break
			}
			return nil, nil, err
		}
		if h.lastOffset()-base > math.MaxUint32 || h.baseOffset < base {
			break
		}
		runMax = max(runMax, h.maxTS)
		end := pos + h.size()
		if pos-lastIdxPos >= interval || len(idx) == 0 || end >= limit {
			e := indexEntry{rel: uint32(h.baseOffset - base), pos: uint32(pos)}
			if len(idx) == 0 || e.rel > idx[len(idx)-1].rel {
				idx = append(idx, e)
				tidx = append(tidx, timeEntry{ts: runMax, rel: e.rel})
				lastIdxPos = pos
			}
		}
		pos = end
	}
	return idx, tidx, nil
}

// batchScanner reads the batches of a segment in order through a reused buffer. The
// batch bytes it returns are valid until the next call of next.
type batchScanner struct {
	f          *os.File
	buf        []byte
	start, end int64 // file range held in buf
}

func newBatchScanner(f *os.File, bufSize int) *batchScanner {
	return &batchScanner{f: f, buf: make([]byte, bufSize)}
}

// fill makes [pos, pos+n) available in the buffer, reading at most up to limit.
func (bs *batchScanner) fill(pos int64, n int, limit int64) ([]byte, error) {
	if pos >= bs.start && pos+int64(n) <= bs.end {
		return bs.buf[pos-bs.start : pos-bs.start+int64(n)], nil
	}
	if pos+int64(n) > limit {
		return nil, io.ErrUnexpectedEOF
	}
	if n > len(bs.buf) {
		bs.buf = make([]byte, n)
	}
	want := min(int64(len(bs.buf)), limit-pos)
	got, err := bs.f.ReadAt(bs.buf[:want], pos)
	bs.start, bs.end = pos, pos+int64(got)
	if got < n {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return bs.buf[:n], nil
}

// next reads and fully checks the batch at pos, which must end by limit. I/O errors
// are returned as they are; bad data as an error wrapping ErrCorrupt.
func (bs *batchScanner) next(pos, limit int64) (batchHeader, []byte, error) {
	hb, err := bs.fill(pos, batchHeaderSize, limit)
	if err == io.ErrUnexpectedEOF {
		return batchHeader{}, nil, fmt.Errorf("%w: torn batch header at position %d", ErrCorrupt, pos)
	}
	if err != nil {
		return batchHeader{}, nil, err
	}
	h, err := parseBatchHeader(hb)
	if err != nil {
		return h, nil, err
	}
	b, err := bs.fill(pos, int(h.size()), limit)
	if err == io.ErrUnexpectedEOF {
		return h, nil, fmt.Errorf("%w: torn batch at position %d (offset %d)", ErrCorrupt, pos, h.baseOffset)
	}
	if err != nil {
		return h, nil, err
	}
	return h, b, checkBatch(&h, b)
}

// fdatasync flushes a file's data (and the metadata needed to read it) to the disk.
func fdatasync(fd int) error {
	for {
		err := unix.Fdatasync(fd)
		if err != unix.EINTR {
			return err
		}
	}
}

// syncDir fsyncs a directory so that entries created, renamed or removed in it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("cannot open directory for sync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("cannot sync directory %s: %w", dir, err)
	}
	return nil
}
