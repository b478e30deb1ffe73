package logcore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// corruptionFixture is a closed log with several segments whose records the test
// knows, and the batch layout of every segment file.
type corruptionFixture struct {
	dir     string
	recs    []Record // by offset
	bases   []int64  // segment bases, ascending; the last is the active segment
	batches map[int64][]batchSpan
}

// batchSpan is one batch of a segment file: its file range and first offset.
type batchSpan struct {
	pos, end int64
	base     int64
}

const corruptionTopic = "c"

func corruptionOptions() Options {
	return Options{Fsync: FsyncNever, IndexIntervalBytes: 256, MaintenanceInterval: 1 << 40}
}

func corruptionConfig() TopicConfig {
	return TopicConfig{Partitions: 1, SegmentBytes: 16 << 10}
}

func newCorruptionFixture(t *testing.T) *corruptionFixture {
	t.Helper()
	fx := &corruptionFixture{dir: t.TempDir(), batches: map[int64][]batchSpan{}}
	l := openTest(t, fx.dir, corruptionOptions())
	tp, err := l.Topic(corruptionTopic, corruptionConfig())
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	pdir := filepath.Join(fx.dir, corruptionTopic, "0")
	for i := 0; ; i++ {
		n := 1 + rng.IntN(3)
		batch := make([]Record, n)
		for j := range batch {
			v := make([]byte, 10+rng.IntN(300))
			for k := range v {
				v[k] = byte(rng.Uint32())
			}
			batch[j] = Record{Value: v, Timestamp: int64(1000 + len(fx.recs) + j)}
			if rng.IntN(2) == 0 {
				batch[j].Key = []byte(fmt.Sprintf("key-%d", rng.IntN(10)))
			}
		}
		off, err := tp.Append(context.Background(), 0, batch)
		if err != nil {
			t.Fatal(err)
		}
		for j := range batch {
			batch[j].Offset = off + int64(j)
		}
		fx.recs = append(fx.recs, batch...)
		bases := segmentBases(t, pdir)
		if st, _ := os.Stat(segmentPath(pdir, bases[len(bases)-1], logExt)); len(bases) >= 5 && st.Size() > 12<<10 {
			break
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	fx.bases = segmentBases(t, pdir)
	for _, base := range fx.bases {
		b, err := os.ReadFile(segmentPath(pdir, base, logExt))
		if err != nil {
			t.Fatal(err)
		}
		for pos := int64(segmentHeaderSize); pos < int64(len(b)); {
			h, err := parseBatchHeader(b[pos:])
			if err != nil {
				t.Fatalf("fixture segment %d at %d: %v", base, pos, err)
			}
			fx.batches[base] = append(fx.batches[base], batchSpan{pos, pos + h.size(), h.baseOffset})
			pos += h.size()
		}
	}
	return fx
}

func segmentBases(t testing.TB, dir string) []int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var bases []int64
	for _, e := range ents {
		if name, ok := strings.CutSuffix(e.Name(), logExt); ok {
			b, err := strconv.ParseInt(name, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			bases = append(bases, b)
		}
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	return bases
}

// clone copies the fixture's log directory to a fresh one and returns the copy's
// partition directory.
func (fx *corruptionFixture) clone(t *testing.T) (string, string) {
	t.Helper()
	dst := t.TempDir()
	if err := os.CopyFS(dst, os.DirFS(fx.dir)); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dst, "LOCK"))
	return dst, filepath.Join(dst, corruptionTopic, "0")
}

// firstOffsetAt returns the first offset of the batch of segment base that holds file
// position pos or starts after it; the segment's end when there is none (the header).
func (fx *corruptionFixture) firstOffsetAt(base, pos int64) int64 {
	if pos < segmentHeaderSize {
		return base
	}
	for _, b := range fx.batches[base] {
		if pos < b.end {
			return b.base
		}
	}
	return int64(len(fx.recs))
}

func sameRecord(a, b Record) bool {
	return a.Offset == b.Offset && a.Timestamp == b.Timestamp && bytes.Equal(a.Key, b.Key) &&
		(a.Key == nil) == (b.Key == nil) && bytes.Equal(a.Value, b.Value)
}

// checkDamagedLog opens the damaged copy and checks: open succeeds; every record before
// intact (the first offset touched by the damage) reads back identical; nothing else
// read differs from what was written (reads fail with ErrCorrupt or stop instead); the
// end offset is at least intact; and an append continues at the end offset.
func (fx *corruptionFixture) checkDamagedLog(t *testing.T, dir string, intact int64, what string) {
	t.Helper()
	l, err := Open(dir, corruptionOptions())
	if err != nil {
		t.Fatalf("%s: open: %v", what, err)
	}
	defer l.Close()
	tp, err := l.Topic(corruptionTopic, TopicConfig{})
	if err != nil {
		t.Fatalf("%s: topic: %v", what, err)
	}
	end := tp.Stats(0).EndOffset
	if end < intact || end > int64(len(fx.recs)) {
		t.Fatalf("%s: end offset %d, want in [%d, %d]", what, end, intact, len(fx.recs))
	}
	for off := int64(0); off < int64(len(fx.recs)); off++ {
		recs, err := tp.Read(0, off, 1, nil)
		if off < intact && (err != nil || len(recs) == 0 || recs[0].Offset != off) {
			t.Fatalf("%s: read of intact offset %d: %d records, %v", what, off, len(recs), err)
		}
		if err != nil && !errors.Is(err, ErrCorrupt) && !(off > end && errors.Is(err, ErrOffsetOutOfRange)) {
			t.Fatalf("%s: read at %d: unexpected error %v", what, off, err)
		}
		for _, r := range recs {
			if r.Offset >= end || !sameRecord(r, fx.recs[r.Offset]) {
				t.Fatalf("%s: read at %d returned record %d that differs from the one written", what, off, r.Offset)
			}
		}
	}
	// Reading on in big chunks returns every intact record, then stops at the damage.
	for off := int64(0); off < end; {
		recs, err := tp.Read(0, off, 1<<20, nil)
		if err != nil {
			if off < intact || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s: sequential read at %d: %v (intact up to %d)", what, off, err, intact)
			}
			break
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			if r.Offset != off || !sameRecord(r, fx.recs[off]) {
				t.Fatalf("%s: sequential read returned offset %d, want %d intact", what, r.Offset, off)
			}
			off++
		}
	}
	v := []byte("after-" + what)
	off, err := tp.Append(context.Background(), 0, []Record{{Value: v}})
	if err != nil || off != end {
		t.Fatalf("%s: append after recovery: %d, %v; want offset %d", what, off, err, end)
	}
	recs, err := tp.Read(0, off, 0, nil)
	if err != nil || len(recs) != 1 || !bytes.Equal(recs[0].Value, v) {
		t.Fatalf("%s: read back the new record: %v %v", what, recs, err)
	}
}

// TestCorruptActiveSegment truncates the active segment and flips bits in it at
// random places, and checks recovery after each (checkDamagedLog).
func TestCorruptActiveSegment(t *testing.T) {
	fx := newCorruptionFixture(t)
	active := fx.bases[len(fx.bases)-1]
	path := func(pdir string) string { return segmentPath(pdir, active, logExt) }
	st, err := os.Stat(path(fx.dir + "/" + corruptionTopic + "/0"))
	if err != nil {
		t.Fatal(err)
	}
	size := st.Size()
	seed := uint64(os.Getpid())
	rng := rand.New(rand.NewPCG(seed, 99))
	t.Logf("seed %d, active segment %d of %d bytes, %d records", seed, active, size, len(fx.recs))

	cases := []struct {
		name   string
		damage func(pdir string) int64 // returns the first damaged offset
	}{}
	truncate := func(at int64) func(string) int64 {
		return func(pdir string) int64 {
			if err := os.Truncate(path(pdir), at); err != nil {
				t.Fatal(err)
			}
			return fx.firstOffsetAt(active, at)
		}
	}
	flip := func(at int64, bits int) func(string) int64 {
		return func(pdir string) int64 {
			b, err := os.ReadFile(path(pdir))
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < bits; i++ {
				p := min(at+int64(i*3), size-1)
				b[p] ^= 1 << (i % 8)
			}
			if err := os.WriteFile(path(pdir), b, 0o644); err != nil {
				t.Fatal(err)
			}
			if at < segmentHeaderSize {
				return int64(len(fx.recs)) // a repaired header loses nothing
			}
			return fx.firstOffsetAt(active, at)
		}
	}
	last := fx.batches[active][len(fx.batches[active])-1]
	add := func(name string, f func(string) int64) {
		cases = append(cases, struct {
			name   string
			damage func(string) int64
		}{name, f})
	}
	add("truncate-empty-file", truncate(0))
	add("truncate-in-header", truncate(10))
	add("truncate-at-header", truncate(segmentHeaderSize))
	add("truncate-torn-last-header", truncate(last.pos+20))
	add("truncate-torn-last-body", truncate(last.end-1))
	add("flip-magic", flip(0, 1))
	add("flip-last-length", flip(last.pos, 1))
	add("flip-last-crc", flip(last.pos+5, 1))
	add("flip-last-value", flip(last.end-3, 1))
	add("flip-first-batch", flip(segmentHeaderSize+30, 2))
	for i := 0; i < 25; i++ {
		at := segmentHeaderSize + rng.Int64N(size-segmentHeaderSize)
		add(fmt.Sprintf("random-truncate-%d", at), truncate(at))
		at = rng.Int64N(size)
		add(fmt.Sprintf("random-flip-%d", at), flip(at, 1+rng.IntN(3)))
	}
	for _, tc := range cases {
		dir, pdir := fx.clone(t)
		intact := tc.damage(pdir)
		fx.checkDamagedLog(t, dir, intact, tc.name)
	}
}

// TestCorruptIndexes damages the index files of the active segment and of a closed
// segment (deleted, truncated, garbage, bit flips, zeroed): no record may be lost, reads
// and time lookups stay right, and after the reads the index files on disk match the
// log again (rebuilt at open or when a read met a mismatched entry).
func TestCorruptIndexes(t *testing.T) {
	fx := newCorruptionFixture(t)
	seed := uint64(os.Getpid())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 5))
	type damage func(b []byte) []byte
	kinds := map[string]damage{
		"missing":  nil,
		"empty":    func(b []byte) []byte { return nil },
		"truncate": func(b []byte) []byte { return b[:rng.IntN(len(b)+1)] },
		"garbage": func(b []byte) []byte {
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			return b
		},
		"zeroed": func(b []byte) []byte { clear(b); return b },
		"flip": func(b []byte) []byte {
			if len(b) > 0 {
				i := rng.IntN(len(b))
				b[i] ^= 1 << rng.IntN(8)
			}
			return b
		},
		"shift": func(b []byte) []byte { // every position off by one batch-header's worth
			for i := 4; i+4 <= len(b); i += indexEntrySize {
				b[i] += 16
			}
			return b
		},
	}
	segs := map[string]int64{"active": fx.bases[len(fx.bases)-1], "closed": fx.bases[1], "first": fx.bases[0]}
	for segName, base := range segs {
		for _, ext := range []string{indexExt, timeIndexExt} {
			for kind, f := range kinds {
				for rep := 0; rep < 3; rep++ {
					if (kind == "missing" || kind == "empty" || kind == "zeroed" || (kind == "shift" && ext == indexExt)) && rep > 0 {
						continue
					}
					if kind == "shift" && ext == timeIndexExt {
						continue
					}
					name := fmt.Sprintf("%s%s-%s-%d", segName, ext, kind, rep)
					dir, pdir := fx.clone(t)
					p := segmentPath(pdir, base, ext)
					if f == nil {
						os.Remove(p)
					} else {
						b, err := os.ReadFile(p)
						if err != nil {
							t.Fatal(err)
						}
						if err := os.WriteFile(p, f(b), 0o644); err != nil {
							t.Fatal(err)
						}
					}
					fx.checkDamagedLog(t, dir, int64(len(fx.recs)), name)
					fx.checkTimeLookups(t, dir, name)
					if !(kind == "flip" && ext == timeIndexExt) {
						// A time entry whose timestamp is flipped is found (and the
						// index rebuilt) only by a time lookup that starts at it;
						// nothing else reads the batches to check it.
						checkIndexesOnDisk(t, pdir, name)
					}
				}
			}
		}
	}
}

// checkTimeLookups reopens the log and checks OffsetForTime against the records.
func (fx *corruptionFixture) checkTimeLookups(t *testing.T, dir, what string) {
	t.Helper()
	l := openTest(t, dir, corruptionOptions())
	defer l.Close()
	tp, _ := l.Topic(corruptionTopic, TopicConfig{})
	for _, i := range []int{0, 1, len(fx.recs) / 3, len(fx.recs) / 2, len(fx.recs) - 1} {
		got, err := tp.OffsetForTime(0, fx.recs[i].Timestamp)
		if err != nil || got != int64(i) {
			t.Fatalf("%s: OffsetForTime(%d) = %d, %v; want %d", what, fx.recs[i].Timestamp, got, err, i)
		}
	}
}

// checkIndexesOnDisk checks every segment's index files of a closed log: each entry
// names the batch at its position, with its time entry, and the last entry is the
// segment's last batch.
func checkIndexesOnDisk(t *testing.T, pdir, what string) {
	t.Helper()
	for _, base := range segmentBases(t, pdir) {
		s, size, err := openSegmentFile(pdir, base)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		idx, tidx, err := s.readIndexFiles(size)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := os.ReadFile(segmentPath(pdir, base, indexExt))
		good, goodT, err := checkIndexEntries(s, idx, tidx, size)
		s.closeFiles()
		if err != nil {
			t.Fatal(err)
		}
		if len(raw) != len(idx)*indexEntrySize || len(good) != len(idx) || len(goodT) != len(tidx) || len(idx) != len(tidx) {
			t.Fatalf("%s: segment %d: index on disk does not match the log (%d bytes, %d parsed, %d checked; %d/%d time entries)",
				what, base, len(raw), len(idx), len(good), len(goodT), len(tidx))
		}
		if size > segmentHeaderSize {
			lastPos := int64(idx[len(idx)-1].pos)
			b := make([]byte, batchHeaderSize)
			f, _ := os.Open(segmentPath(pdir, base, logExt))
			f.ReadAt(b, lastPos)
			f.Close()
			h, _ := parseBatchHeader(b)
			if lastPos+h.size() != size {
				t.Fatalf("%s: segment %d: last index entry at %d does not end the segment (%d)", what, base, lastPos, size)
			}
		}
	}
}

// TestCorruptClosedSegment flips bits in the middle of a closed segment, with its
// indexes intact or removed (so that open rescans it): open succeeds and does not cut
// the closed segment, records before the damage and in later segments read back, and
// reads of the damaged records fail with ErrCorrupt instead of skipping them.
func TestCorruptClosedSegment(t *testing.T) {
	fx := newCorruptionFixture(t)
	base := fx.bases[1]
	spans := fx.batches[base]
	mid := spans[len(spans)/2]
	for _, dropIndex := range []bool{false, true} {
		name := fmt.Sprintf("closed-flip-drop-index=%v", dropIndex)
		dir, pdir := fx.clone(t)
		path := segmentPath(pdir, base, logExt)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[mid.pos+batchHeaderSize+3] ^= 0x40
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if dropIndex {
			removeIndexFiles(pdir, base)
		}
		fx.checkDamagedLog(t, dir, mid.base, name)
		l := openTest(t, dir, corruptionOptions())
		tp, _ := l.Topic(corruptionTopic, TopicConfig{})
		if st, err := os.Stat(path); err != nil || st.Size() != int64(len(b)) {
			t.Fatalf("%s: the closed segment was cut: %v", name, err)
		}
		if _, err := tp.Read(0, mid.base, 0, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: read of the damaged batch: %v, want ErrCorrupt", name, err)
		}
		// A consumer gets every record up to the damage, then the error, and stays.
		c, _ := NewConsumer(l, "g", tp, 0)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var n int64
		var perr error
		for perr == nil {
			var recs []Record
			recs, perr = c.Poll(ctx, 1<<20)
			for _, r := range recs {
				if r.Offset != n || !sameRecord(r, fx.recs[n]) {
					t.Fatalf("%s: consumer got offset %d, want %d intact", name, r.Offset, n)
				}
				n++
			}
		}
		cancel()
		if n != mid.base || !errors.Is(perr, ErrCorrupt) || c.Position() != mid.base {
			t.Fatalf("%s: consumer read %d records, then %v at %d; want %d records, ErrCorrupt", name, n, perr, c.Position(), mid.base)
		}
		next := fx.bases[2]
		recs, err := tp.Read(0, next, 0, nil)
		if err != nil || len(recs) == 0 || !sameRecord(recs[0], fx.recs[next]) {
			t.Fatalf("%s: read of the next segment: %v", name, err)
		}
		l.Close()
	}
}

// checkIndexEntries returns the longest prefix of the index whose every entry points
// at a batch header naming the entry's offset, and the time entries that name those
// entries' batches (with a timestamp no lower than the batch's own maximum).
func checkIndexEntries(s *segment, idx []indexEntry, tidx []timeEntry, size int64) ([]indexEntry, []timeEntry, error) {
	var hb [batchHeaderSize]byte
	maxTS := make(map[uint32]int64, len(idx))
	for i, e := range idx {
		if int64(e.pos)+batchHeaderSize > size {
			idx = idx[:i]
			break
		}
		if _, err := s.f.ReadAt(hb[:], int64(e.pos)); err != nil {
			return nil, nil, fmt.Errorf("cannot read batch header at %d: %w", e.pos, err)
		}
		h, err := parseBatchHeader(hb[:])
		if err != nil || h.baseOffset != s.base+int64(e.rel) || int64(e.pos)+h.size() > size {
			idx = idx[:i]
			break
		}
		maxTS[e.rel] = h.maxTS
	}
	for j, e := range tidx {
		m, ok := maxTS[e.rel]
		if !ok || e.ts < m {
			tidx = tidx[:j]
			break
		}
	}
	return idx, tidx, nil
}

// TestActiveIndexRepairWhileAppending damages the active segment's index so that
// reads rebuild it while producers keep appending to the same segment: every read
// returns the right records, and after close the index files match the log.
func TestActiveIndexRepairWhileAppending(t *testing.T) {
	fx := newCorruptionFixture(t)
	active := fx.bases[len(fx.bases)-1]
	dir, pdir := fx.clone(t)
	p := segmentPath(pdir, active, indexExt)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for i := 4; i+4 <= len(b)-indexEntrySize; i += indexEntrySize { // all but the last entry
		b[i] += 8
	}
	os.WriteFile(p, b, 0o644)
	opts := corruptionOptions()
	var logBuf syncBuffer
	opts.Logger = slog.New(slog.NewTextHandler(&logBuf, nil))
	l := openTest(t, dir, opts)
	tp, _ := l.Topic(corruptionTopic, TopicConfig{SegmentBytes: 1 << 20})
	n := int64(len(fx.recs))
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 300; i++ {
			if _, err := tp.Append(context.Background(), 0, []Record{{Value: bytes.Repeat([]byte{byte(i)}, 100+i)}}); err != nil {
				t.Error(err)
				return
			}
		}
		close(done)
	}()
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 3))
			// At least one read each, however soon the appends are done: the first read
			// of the damaged index is what must rebuild it.
			for i := 0; ; i++ {
				if i > 0 {
					select {
					case <-done:
						return
					default:
					}
				}
				off := active + rng.Int64N(n-active)
				if i == 0 {
					off = active + (n-active)*int64(r+1)/3 // inside the damaged entries' range
				}
				recs, err := tp.Read(0, off, 512, nil)
				if err != nil || len(recs) == 0 || !sameRecord(recs[0], fx.recs[off]) {
					t.Errorf("read at %d: %d records, %v", off, len(recs), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := len(readAll(t, tp, 0)); got != int(n)+300 {
		t.Fatalf("%d records, want %d", got, n+300)
	}
	l.Close()
	if !strings.Contains(logBuf.String(), "rebuilt an index") {
		t.Fatalf("no read rebuilt the damaged index:\n%s", logBuf.String())
	}
	checkIndexesOnDisk(t, pdir, "active index repaired while appending")
}

// syncBuffer is a bytes.Buffer safe for concurrent writers (a test logger's sink).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
