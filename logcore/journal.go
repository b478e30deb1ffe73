package logcore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The commit journal makes FsyncAlways appends durable with one write and one
// fdatasync per round for every partition of every topic, instead of one fdatasync per
// partition: a partition writes its batches to its segment without syncing it, the
// journal writes the same bytes (with their segment and position) to its current file
// and syncs that file once for all the partitions waiting, and only then do the appends
// return. Segments are synced later: when their partition rolls or closes, and when
// the journal file passes Options.JournalBytes, after which the journal moves to a new
// file and, once every partition that wrote to the old one has synced, removes it.
// Opening the log first writes back every journal entry that is missing from its
// segment (see "Durability and recovery" in the package doc).

const (
	// journalDir holds the journal files, in the log's directory; topic names
	// starting with "__" are reserved, so no topic can take it.
	journalDir = "__journal"
	journalExt = ".wal"
	// journalMagic starts every journal file; its 4th byte is the format version.
	journalMagic      = "VGJ\x01"
	journalHeaderSize = 8
	// journalEntryHeader is length (4) and CRC32C (4) in front of each entry's body:
	// topic length (2), topic, partition (4), segment base (8), position (8), bytes.
	journalEntryHeader = 8
	journalBodyFixed   = 2 + 4 + 8 + 8
)

// journal is the log's commit journal; one goroutine writes it.
type journal struct {
	l      *FileLog
	dir    string
	limit  int64
	q      chan *journalEntry
	exited chan struct{}

	// Owned by the journal goroutine.
	f       *os.File
	seq     uint64
	size    int64
	writers map[*partition]struct{} // partitions with entries in the current file
	// spoilt holds, for each partition whose round failed, that round's epoch: its
	// later rounds of the same epoch were written after the failed one and fail
	// unwritten, so that no journal entry ever covers bytes its partition cut away.
	spoilt   map[*partition]uint64
	reqs     []*appendReq // fail's copy of a failed round's appends
	buf      []byte
	retiring sync.WaitGroup
	// failed is set when a write failed and no new file could be made: every later
	// round fails with it until the log is reopened.
	failed error
}

// journalEntry is one partition's round: batches written to its segment, waiting to be
// journaled. Once the round is durable the journal publishes it (see partition.publish);
// either way it hands the entry back on the partition's landed channel, in the order
// the partition submitted its rounds.
type journalEntry struct {
	pt    *partition
	seg   *segment
	pos   int64 // where the bytes start in the segment
	next  int64 // the offset after the round's last record
	epoch uint64
	b     []byte
	reqs  []*appendReq // the round's appends, answered when it lands
	err   error
}

var journalEntryPool = sync.Pool{New: func() any { return new(journalEntry) }}

// openJournal starts a journal on a new file after the highest sequence in use (replay
// has emptied the folder by then).
func openJournal(l *FileLog, firstSeq uint64) (*journal, error) {
	j := &journal{
		l:       l,
		dir:     filepath.Join(l.dir, journalDir),
		limit:   l.opts.JournalBytes,
		q:       make(chan *journalEntry, queueLen),
		exited:  make(chan struct{}),
		writers: map[*partition]struct{}{},
		spoilt:  map[*partition]uint64{},
	}
	if err := os.MkdirAll(j.dir, 0o755); err != nil {
		return nil, fmt.Errorf("create journal folder: %w", err)
	}
	if err := j.create(firstSeq); err != nil {
		return nil, err
	}
	go j.run()
	return j, nil
}

func journalPath(dir string, seq uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%020d%s", seq, journalExt))
}

// create makes file seq the current one, durably (header synced, folder synced).
func (j *journal) create(seq uint64) error {
	path := journalPath(j.dir, seq)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("create journal file: %w", err)
	}
	var hdr [journalHeaderSize]byte
	copy(hdr[:], journalMagic)
	_, err = f.WriteAt(hdr[:], 0)
	if err == nil {
		err = fdatasync(int(f.Fd()))
	}
	if err == nil {
		err = syncDir(j.dir)
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("create journal file %s: %w", path, err)
	}
	j.f, j.seq, j.size = f, seq, journalHeaderSize
	return nil
}

// submit queues e (e.err nil), a round its partition has just written, without
// waiting: the journal hands e back on the partition's landed channel once e is
// durable (e.err still nil) or has failed. Rounds land in the order each partition
// submits them.
func (j *journal) submit(e *journalEntry) {
	j.q <- e
}

// run writes each group of queued entries with one write and one fdatasync, until the
// queue is closed (after every partition has closed).
func (j *journal) run() {
	defer close(j.exited)
	group := make([]*journalEntry, 0, 64)
	for e := range j.q {
		group, _ = drain(j.q, append(group[:0], e), func(e *journalEntry) int { return len(e.b) })
		group = j.failSpoilt(group)
		if len(group) > 0 {
			j.write(group)
		}
		for _, e := range group {
			if e.err != nil {
				ep, ok := j.spoilt[e.pt]
				j.spoilt[e.pt] = e.epoch
				j.fail(e, !ok || ep != e.epoch)
				continue
			}
			// Published here rather than by the partition's writer: the appends are
			// answered without waiting for it to be scheduled.
			e.pt.publish(e.seg, e.pos, e.next, e.reqs, e.b)
			e.pt.landed <- e // never blocks: see maxRoundsInFlight
		}
		clear(group)
		if j.size >= j.limit {
			j.rotate()
		}
	}
	j.retiring.Wait()
	if j.f == nil {
		return
	}
	j.f.Close()
	// Every partition has closed (syncing its segment): the last file is spent too.
	j.retire(j.seq, j.writers)
}

// failSpoilt answers, failed, the entries of group that follow a failed round of their
// partition (same epoch), and returns the others.
func (j *journal) failSpoilt(group []*journalEntry) []*journalEntry {
	if len(j.spoilt) == 0 {
		return group
	}
	keep := group[:0]
	for _, e := range group {
		if ep, ok := j.spoilt[e.pt]; ok && ep == e.epoch {
			e.err = fmt.Errorf("%w: an earlier round of the partition failed", errJournalWrite)
			j.fail(e, false)
			continue
		}
		delete(j.spoilt, e.pt)
		keep = append(keep, e)
	}
	clear(group[len(keep):])
	return keep
}

// fail hands a failed round back to its partition and then answers its appends, in that
// order, so that the partition's writer knows of the failure before an appender can try
// again (see partition.land). The first failed round of an epoch (first) is also cut
// from the segment, so that no failed batch is found there after a crash.
func (j *journal) fail(e *journalEntry, first bool) {
	pt := e.pt
	err := fmt.Errorf("append to %s at offset %d: %w", pt.name, e.reqs[0].base, e.err)
	if first {
		if terr := e.seg.f.Truncate(e.pos); terr != nil {
			pt.logger().Error("cannot truncate a failed round", "err", terr)
		}
	}
	j.reqs = append(j.reqs[:0], e.reqs...)
	e.err = err
	pt.landed <- e // e is the writer's from here on
	for _, r := range j.reqs {
		r.finish(-1, err)
	}
	clear(j.reqs)
}

// write appends group's entries to the current file and syncs it, setting each entry's
// error. A write that fails is truncated away and fails only its round (wrapping
// errJournalWrite). After a failed sync (or a write that cannot be truncated away)
// the round is truncated away and the file abandoned (the page cache may hold bytes
// that never reach the disk): the journal goes on in a new one, and the failed file,
// whose earlier rounds' segments may not be synced, is left for the next open to
// replay.
func (j *journal) write(group []*journalEntry) {
	if j.failed != nil {
		for _, e := range group {
			e.err = j.failed
		}
		return
	}
	j.buf = j.buf[:0]
	for _, e := range group {
		j.buf = appendJournalEntry(j.buf, e.pt.topic.name, e.pt.id, e.seg.base, e.pos, e.b)
	}
	start := time.Now()
	var err error
	if hook := j.l.testHooks.journalWriteFault; hook != nil {
		if err = hook(); err != nil {
			j.f.WriteAt(j.buf[:len(j.buf)/2], j.size) // a fault after a partial write
		}
	}
	if err == nil {
		_, err = j.f.WriteAt(j.buf, j.size)
	}
	if err != nil && j.f.Truncate(j.size) == nil {
		// Nothing was synced: like a failed segment write (a full disk, say), the
		// round fails and its partitions go on; so does the journal, in this file.
		err = fmt.Errorf("journal %s: %w: %w", journalPath(j.dir, j.seq), errJournalWrite, err)
		for _, e := range group {
			e.err = err
		}
		return
	}
	if err == nil {
		err = fdatasync(int(j.f.Fd()))
		j.l.metrics.fsyncSeconds.UpdateDuration(start)
		if hook := j.l.testHooks.syncFault; hook != nil && err == nil {
			err = hook()
		}
	}
	if err != nil {
		err = fmt.Errorf("journal %s: %w", journalPath(j.dir, j.seq), err)
		for _, e := range group {
			e.err = err
		}
		j.l.opts.Logger.Error("journal write failed; going on in a new file", "err", err)
		// The round failed: its entries must not come back at the next open (the
		// partitions truncate their segments too). Best effort, as theirs.
		if terr := j.f.Truncate(j.size); terr == nil {
			fdatasync(int(j.f.Fd()))
		}
		j.f.Close()
		j.f = nil
		j.writers = map[*partition]struct{}{}
		if cerr := j.create(j.seq + 1); cerr != nil {
			j.failed = fmt.Errorf("%w (and no new journal file: %v)", err, cerr)
		}
		return
	}
	j.l.metrics.fsyncs.Inc()
	j.size += int64(len(j.buf))
	if hook := j.l.testHooks.synced; hook != nil {
		hook(journalPath(j.dir, j.seq), j.size)
	}
	for _, e := range group {
		j.writers[e.pt] = struct{}{}
	}
}

// rotate starts the next file and retires the current one in the background. If the
// next file cannot be made, the journal stays in the current one and tries again
// after another JournalBytes.
func (j *journal) rotate() {
	old, oldSeq, writers := j.f, j.seq, j.writers
	if err := j.create(j.seq + 1); err != nil {
		j.l.opts.Logger.Warn("cannot start a new journal file; going on in the current one", "err", err)
		j.limit += j.l.opts.JournalBytes
		return
	}
	j.limit = j.l.opts.JournalBytes
	j.writers = map[*partition]struct{}{}
	old.Close()
	j.retiring.Add(1)
	go func() {
		defer j.retiring.Done()
		j.retire(oldSeq, writers)
	}()
}

// retire removes file seq once every partition that wrote to it has synced its segment.
// A partition that cannot sync keeps the file for the next open to replay.
func (j *journal) retire(seq uint64, writers map[*partition]struct{}) {
	for pt := range writers {
		if err := pt.syncForJournal(); err != nil {
			j.l.opts.Logger.Error("keeping a journal file: a partition cannot sync its segment", "file", journalPath(j.dir, seq), "partition", pt.name, "err", err)
			return
		}
	}
	if err := os.Remove(journalPath(j.dir, seq)); err != nil {
		j.l.opts.Logger.Warn("cannot remove a spent journal file", "err", err)
		return
	}
	// Not needed for safety (replaying a spent file changes nothing), only so that a
	// restart does not read it again.
	syncDir(j.dir)
}

// close stops the journal after every partition has closed.
func (j *journal) close() {
	close(j.q)
	<-j.exited
}

// appendJournalEntry frames one entry.
func appendJournalEntry(dst []byte, topic string, part int, base, pos int64, b []byte) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, journalEntryHeader)...)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(topic)))
	dst = append(dst, topic...)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(part))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(base))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(pos))
	dst = append(dst, b...)
	body := dst[start+journalEntryHeader:]
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(body)))
	binary.LittleEndian.PutUint32(dst[start+4:], crc32.Checksum(body, castagnoli))
	return dst
}

// journalRecord is one decoded journal entry.
type journalRecord struct {
	topic     string
	partition int
	base, pos int64
	b         []byte
}

// errJournalWrite marks a journal round whose write failed before anything was synced:
// the partitions undo their writes as after a failed segment write and go on.
var errJournalWrite = errors.New("write failed")

// errJournalMagic is a journal file that does not start with the journal's magic.
var errJournalMagic = errors.New("not a journal file (bad magic)")

// parseJournal decodes the entries of one journal file. A torn or damaged entry ends
// the file: nothing after it was acknowledged (a round is acknowledged only after its
// whole write is synced, and rounds are written in order). It returns the entries
// and how many bytes it ignored at the end.
func parseJournal(b []byte) ([]journalRecord, int, error) {
	if len(b) < journalHeaderSize {
		return nil, len(b), nil // created, but the header never reached the disk
	}
	if string(b[:4]) != journalMagic {
		return nil, 0, errJournalMagic
	}
	var out []journalRecord
	p := journalHeaderSize
	for p < len(b) {
		if len(b)-p < journalEntryHeader {
			break
		}
		n := int(binary.LittleEndian.Uint32(b[p:]))
		if n < journalBodyFixed || n > len(b)-p-journalEntryHeader {
			break
		}
		body := b[p+journalEntryHeader : p+journalEntryHeader+n]
		if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(b[p+4:]) {
			break
		}
		tl := int(binary.LittleEndian.Uint16(body))
		if journalBodyFixed+tl > n {
			break
		}
		r := journalRecord{topic: string(body[2 : 2+tl])}
		f := body[2+tl:]
		r.partition = int(binary.LittleEndian.Uint32(f))
		r.base = int64(binary.LittleEndian.Uint64(f[4:]))
		r.pos = int64(binary.LittleEndian.Uint64(f[12:]))
		r.b = f[20:]
		if r.base < 0 || r.pos < segmentHeaderSize {
			break
		}
		out = append(out, r)
		p += journalEntryHeader + n
	}
	return out, len(b) - p, nil
}

// replayJournal writes back into their segments the journal entries whose bytes are
// missing there, syncs those segments and removes the journal files. It runs in Open
// before any partition loads. An entry for a segment that is not its partition's
// newest was synced when that segment was closed and is skipped; so are bytes already
// in place. It returns the sequence for the next journal file.
func replayJournal(l *FileLog) (uint64, error) {
	dir := filepath.Join(l.dir, journalDir)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return 1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("list journal: %w", err)
	}
	var seqs []uint64
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, journalExt) {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(name, journalExt), 10, 64)
		if err != nil {
			continue
		}
		seqs = append(seqs, seq)
	}
	sort.Slice(seqs, func(a, b int) bool { return seqs[a] < seqs[b] })
	newest := map[string]int64{} // partition folder -> newest segment base
	open := map[string]*os.File{}
	defer func() {
		for _, f := range open {
			f.Close()
		}
	}()
	var written, entries int
	var have []byte // a segment's bytes where an entry goes
	for _, seq := range seqs {
		path := journalPath(dir, seq)
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, fmt.Errorf("read journal %s: %w", path, err)
		}
		recs, torn, err := parseJournal(b)
		if err != nil {
			return 0, fmt.Errorf("journal %s: %w", path, err)
		}
		if torn > 0 {
			l.opts.Logger.Warn("journal file ends in an entry that was never acknowledged", "file", path, "ignored_bytes", torn)
		}
		for _, r := range recs {
			entries++
			if !topicName.MatchString(r.topic) {
				return 0, fmt.Errorf("journal %s: entry for topic %q, not a topic name", path, r.topic)
			}
			pdir := filepath.Join(l.dir, r.topic, strconv.Itoa(r.partition))
			last, ok := newest[pdir]
			if !ok {
				if last, err = newestSegment(pdir); err != nil {
					return 0, fmt.Errorf("journal %s: entry for %s/%d: %w", path, r.topic, r.partition, err)
				}
				newest[pdir] = last
			}
			switch {
			case r.base < last:
				continue // synced when it was closed
			case r.base > last:
				return 0, fmt.Errorf("journal %s: entry for segment %d of %s/%d, whose newest segment is %d", path, r.base, r.topic, r.partition, last)
			}
			seg := segmentPath(pdir, r.base, logExt)
			f := open[seg]
			if f == nil {
				if f, err = os.OpenFile(seg, os.O_RDWR, 0); err != nil {
					return 0, fmt.Errorf("journal %s: %w", path, err)
				}
				open[seg] = f
			}
			have = slices.Grow(have[:0], len(r.b))[:len(r.b)]
			if n, err := f.ReadAt(have, r.pos); n == len(have) && string(have) == string(r.b) {
				continue
			} else if err != nil && !errors.Is(err, io.EOF) {
				return 0, fmt.Errorf("journal %s: read %s: %w", path, seg, err)
			}
			if _, err := f.WriteAt(r.b, r.pos); err != nil {
				return 0, fmt.Errorf("journal %s: write back into %s: %w", path, seg, err)
			}
			written++
		}
	}
	for seg, f := range open {
		if err := fdatasync(int(f.Fd())); err != nil {
			return 0, fmt.Errorf("journal: sync %s: %w", seg, err)
		}
	}
	for _, seq := range seqs {
		if err := os.Remove(journalPath(dir, seq)); err != nil {
			return 0, fmt.Errorf("remove replayed journal: %w", err)
		}
	}
	if len(seqs) > 0 {
		if err := syncDir(dir); err != nil {
			return 0, err
		}
		if written > 0 {
			l.opts.Logger.Warn("journal entries missing from their segments were written back", "entries", entries, "written_back", written)
		}
		return seqs[len(seqs)-1] + 1, nil
	}
	return 1, nil
}

// newestSegment is the highest base among a partition folder's segment files.
func newestSegment(pdir string) (int64, error) {
	ents, err := os.ReadDir(pdir)
	if err != nil {
		return 0, err
	}
	newest := int64(-1)
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, logExt) {
			continue
		}
		if base, err := strconv.ParseInt(strings.TrimSuffix(name, logExt), 10, 64); err == nil && base > newest {
			newest = base
		}
	}
	if newest < 0 {
		return 0, errors.New("no segment")
	}
	return newest, nil
}
