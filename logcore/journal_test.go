package logcore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// durableSizes records, through the synced hook, how many bytes of each segment and
// journal file an fdatasync has made durable.
type durableSizes struct {
	mu    sync.Mutex
	sizes map[string]int64
}

func watchSyncs(l *FileLog) *durableSizes {
	d := &durableSizes{sizes: map[string]int64{}}
	l.testHooks.synced = func(path string, size int64) {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.sizes[path] = max(d.sizes[path], size)
	}
	return d
}

// powerCutChecked checks that tp holds exactly acked, cuts the power on the log in dir
// (see powerLoss), closes it, and checks that the log left by the cut holds acked too.
func powerCutChecked(t *testing.T, l *FileLog, d *durableSizes, tp Topic, dir string, acked [][]string) {
	t.Helper()
	checkAcked(t, tp, acked)
	cut := t.TempDir()
	d.powerLoss(t, dir, cut, true)
	l.Close()
	l2, _ := reopenChecked(t, cut, acked)
	l2.Close()
}

// openWatched opens a FsyncAlways log in dir whose syncs are watched, with a topic
// "samples" of the given partitions.
func openWatched(t *testing.T, dir string, partitions int) (*FileLog, *durableSizes, Topic) {
	t.Helper()
	l := openTest(t, dir, Options{Fsync: FsyncAlways})
	d := watchSyncs(l)
	tp, err := l.Topic("samples", TopicConfig{Partitions: partitions})
	if err != nil {
		t.Fatal(err)
	}
	return l, d, tp
}

// powerLoss copies the log in src to dst as a power cut would leave it: of each segment
// and journal file only the bytes an fdatasync made durable (a segment never synced
// after its creation keeps its header), every other file whole. withJournal false also
// drops the journal files.
func (d *durableSizes) powerLoss(t *testing.T, src, dst string, withJournal bool) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	err := filepath.WalkDir(src, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		out := filepath.Join(dst, rel)
		if e.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		switch {
		case strings.HasSuffix(path, journalExt):
			if !withJournal {
				return nil
			}
			b = b[:min(int64(len(b)), max(journalHeaderSize, d.sizes[path]))]
		case strings.HasSuffix(path, logExt):
			b = b[:min(int64(len(b)), max(segmentHeaderSize, d.sizes[path]))]
		}
		return os.WriteFile(out, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// appendConcurrently appends n single-record batches to each of tp's partitions, the
// partitions in parallel, and returns the values each partition acknowledged in order.
func appendConcurrently(t *testing.T, tp Topic, n int) [][]string {
	t.Helper()
	acked := make([][]string, tp.Partitions())
	var wg sync.WaitGroup
	errs := make(chan error, tp.Partitions())
	for p := range acked {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n; i++ {
				v := fmt.Sprintf("p%d-%04d-%s", p, i, strings.Repeat("x", i%97))
				if _, err := tp.Append(context.Background(), p, []Record{rec("", v, 0)}); err != nil {
					errs <- err
					return
				}
				acked[p] = append(acked[p], v)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return acked
}

// checkAcked fails unless partition p of tp holds exactly acked[p], for every p.
func checkAcked(t *testing.T, tp Topic, acked [][]string) {
	t.Helper()
	for p, want := range acked {
		recs := readAll(t, tp, p)
		if len(recs) != len(want) {
			t.Fatalf("partition %d: %d records, want the %d acknowledged", p, len(recs), len(want))
		}
		for i, r := range recs {
			if string(r.Value) != want[i] {
				t.Fatalf("partition %d record %d: %q, want %q", p, i, r.Value, want[i])
			}
		}
	}
}

// reopenChecked opens the log in dir and checks that its samples topic holds acked;
// the caller closes the log.
func reopenChecked(t *testing.T, dir string, acked [][]string) (*FileLog, Topic) {
	t.Helper()
	l := openTest(t, dir, Options{})
	tp, err := l.Topic("samples", TopicConfig{})
	if err != nil {
		t.Fatal(err)
	}
	checkAcked(t, tp, acked)
	return l, tp
}

// countRecords is how many records the topic's partitions hold together.
func countRecords(t *testing.T, tp Topic) int {
	n := 0
	for p := 0; p < tp.Partitions(); p++ {
		n += len(readAll(t, tp, p))
	}
	return n
}

// TestJournalPowerLoss cuts the power (keeping only what fdatasync made durable) after
// appends with fsync always were acknowledged: the segments were not synced, the journal
// was, and the reopened log has every acknowledged record, in order. Without the
// journal files the same cut loses records, so the journal is what kept them.
func TestJournalPowerLoss(t *testing.T) {
	dir := t.TempDir()
	l, d, tp := openWatched(t, dir, 4)
	acked := appendConcurrently(t, tp, 200)

	cut := t.TempDir()
	d.powerLoss(t, dir, cut, true)
	noJournal := t.TempDir()
	d.powerLoss(t, dir, noJournal, false)
	l.Close()

	l2 := openTest(t, noJournal, Options{})
	tp2, _ := l2.Topic("samples", TopicConfig{})
	if n := countRecords(t, tp2); n >= 4*200 {
		t.Fatalf("without the journal the cut kept all %d records: the segments were synced, so the test shows nothing", n)
	}
	l2.Close()

	l3, tp3 := reopenChecked(t, cut, acked)
	// The log goes on after the replay, and the replayed journal is gone.
	if _, err := tp3.Append(context.Background(), 0, []Record{rec("", "after", 0)}); err != nil {
		t.Fatal(err)
	}
	acked[0] = append(acked[0], "after")
	l3.Close()
	l4, _ := reopenChecked(t, cut, acked)
	l4.Close()
}

// TestJournalRotation: with a small JournalBytes the journal moves to new files, has the
// segments synced and removes the old files; a power cut then still loses nothing, and
// segments that rolled in between (synced when closed) are skipped by the replay.
func TestJournalRotation(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, Options{Fsync: FsyncAlways, JournalBytes: 4 << 10, Defaults: TopicConfig{SegmentBytes: 16 << 10}})
	d := watchSyncs(l)
	tp, err := l.Topic("samples", TopicConfig{Partitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	acked := appendConcurrently(t, tp, 300)
	jdir := filepath.Join(dir, journalDir)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ents, err := os.ReadDir(jdir)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d journal files after the rotations, want the current one only", len(ents))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if segs, _ := filepath.Glob(filepath.Join(dir, "samples", "0", "*"+logExt)); len(segs) < 2 {
		t.Fatalf("%d segments in partition 0, want rolls", len(segs))
	}
	cut := t.TempDir()
	d.powerLoss(t, dir, cut, true)
	l.Close()
	// A clean close syncs everything and leaves no journal entry behind.
	if ents, _ := os.ReadDir(jdir); len(ents) != 0 {
		t.Fatalf("%d journal files after a clean close, want 0", len(ents))
	}

	l2, _ := reopenChecked(t, cut, acked)
	l2.Close()
}

// TestJournalEntryForMissingSegment: an entry for a segment newer than any on disk
// means the segment's creation was lost, which the log never lets happen before an
// append to it; Open refuses rather than guess.
func TestJournalEntryForMissingSegment(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, Options{})
	if _, err := l.Topic("t", TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	body, _, err := encodeBatch(nil, []Record{rec("", "v", 0)}, batchMeta{dense: true})
	if err != nil {
		t.Fatal(err)
	}
	b := append([]byte(journalMagic+"\x00\x00\x00\x00"), appendJournalEntry(nil, "t", 0, 500, segmentHeaderSize, body)...)
	if err := os.WriteFile(journalPath(filepath.Join(dir, journalDir), 7), b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "segment 500 of t/0, whose newest segment is 0") {
		t.Fatalf("open with an entry for a missing segment: %v", err)
	}
}

// TestJournalReservedNames: topic names starting with __ belong to the log.
func TestJournalReservedNames(t *testing.T) {
	l := openTest(t, t.TempDir(), Options{})
	defer l.Close()
	for _, name := range []string{journalDir, offsetsTopic, "__x", ".", ".."} {
		if _, err := l.Topic(name, TopicConfig{}); err == nil {
			t.Errorf("topic %q was accepted", name)
		}
	}
}

// FuzzJournal: parseJournal never panics, and what it decodes encodes back to the bytes
// it read.
func FuzzJournal(f *testing.F) {
	hdr := journalMagic + "\x00\x00\x00\x00"
	f.Add([]byte(hdr))
	f.Add(append([]byte(hdr), appendJournalEntry(nil, "samples", 3, 0, segmentHeaderSize, []byte("batch"))...))
	two := appendJournalEntry([]byte(hdr), "a", 0, 10, 100, []byte{1, 2, 3})
	f.Add(appendJournalEntry(two, "b", 1, 20, 200, nil))
	f.Add([]byte("VGJ\x02xxxx"))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, torn, err := parseJournal(b)
		if err != nil {
			if !errors.Is(err, errJournalMagic) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(b) < journalHeaderSize {
			return
		}
		out := append([]byte(nil), b[:journalHeaderSize]...)
		for _, r := range recs {
			out = appendJournalEntry(out, r.topic, r.partition, r.base, r.pos, r.b)
		}
		if string(out) != string(b[:len(b)-torn]) {
			t.Fatalf("re-encoded entries differ from the %d bytes read", len(b)-torn)
		}
	})
}

// TestJournalWriteFault: a journal write that fails (ENOSPC, after a partial write)
// fails only the appends of its round, as a failed segment write does: nothing of them
// becomes visible, the next append takes the same offset, the partition is not failed,
// and after a power cut and a reopen the acknowledged records are there and the failed
// one is not.
func TestJournalWriteFault(t *testing.T) {
	dir := t.TempDir()
	l, d, tp := openWatched(t, dir, 1)
	var fault sync.Mutex
	var next error
	l.testHooks.journalWriteFault = func() error { fault.Lock(); defer fault.Unlock(); e := next; next = nil; return e }
	app := func(v string) (int64, error) {
		return tp.Append(context.Background(), 0, []Record{rec("", v, 0)})
	}
	acked := [][]string{nil}
	for i := 0; i < 3; i++ {
		v := fmt.Sprintf("ok-%d", i)
		if _, err := app(v); err != nil {
			t.Fatal(err)
		}
		acked[0] = append(acked[0], v)
	}
	fault.Lock()
	next = syscall.ENOSPC
	fault.Unlock()
	if _, err := app("lost"); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append with a failing journal write: %v, want ENOSPC", err)
	}
	checkAcked(t, tp, acked)
	off, err := app("after")
	if err != nil || off != 3 {
		t.Fatalf("append after a failed journal write: %d, %v; want offset 3", off, err)
	}
	acked[0] = append(acked[0], "after")
	powerCutChecked(t, l, d, tp, dir, acked)
}

// TestJournalWriteFaultInFlight fails journal writes while a partition has several
// rounds in flight (the journal is slowed so that they pile up): a failed round fails
// every round written after it, the partition goes on, and exactly the acknowledged
// records are in the log, in offset order, before and after a power cut.
func TestJournalWriteFaultInFlight(t *testing.T) {
	dir := t.TempDir()
	l, d, tp := openWatched(t, dir, 1)
	var writes atomic.Int64
	l.testHooks.journalWriteFault = func() error {
		time.Sleep(200 * time.Microsecond)
		if writes.Add(1)%7 == 3 {
			return syscall.ENOSPC
		}
		return nil
	}
	type ack struct {
		off int64
		v   string
	}
	var (
		mu     sync.Mutex
		acks   []ack
		failed int
		wg     sync.WaitGroup
	)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 60; i++ {
				v := fmt.Sprintf("w%d-%d", w, i)
				off, err := tp.Append(context.Background(), 0, []Record{rec("", v, 0)})
				mu.Lock()
				if err != nil {
					if !errors.Is(err, errJournalWrite) {
						t.Errorf("append %s: %v, want a failed journal write", v, err)
					}
					failed++
				} else {
					acks = append(acks, ack{off, v})
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if failed == 0 || len(acks) == 0 {
		t.Fatalf("%d appends failed and %d succeeded; want some of each", failed, len(acks))
	}
	sort.Slice(acks, func(i, j int) bool { return acks[i].off < acks[j].off })
	acked := [][]string{nil}
	for i, a := range acks {
		if a.off != int64(i) {
			t.Fatalf("acknowledged offsets %d: %d, want %d (a gap or a repeat)", i, a.off, i)
		}
		acked[0] = append(acked[0], a.v)
	}
	checkAcked(t, tp, acked)

	// Last, a failed round with two rounds behind it and nothing after them: the two
	// must fail unjournaled, or the next open would write them back.
	entered, release := make(chan struct{}), make(chan error)
	var calls atomic.Int64
	l.testHooks.journalWriteFault = func() error {
		if calls.Add(1) > 1 {
			return nil
		}
		entered <- struct{}{}
		return <-release
	}
	errs := make(chan error, 3)
	for i, v := range []string{"held", "behind-1", "behind-2"} {
		go func() {
			_, err := tp.Append(context.Background(), 0, []Record{rec("", v, 0)})
			errs <- err
		}()
		if i == 0 {
			<-entered
			continue
		}
		for len(l.journal.q) < i {
			time.Sleep(time.Millisecond)
		}
	}
	release <- syscall.ENOSPC
	for range 3 {
		if err := <-errs; !errors.Is(err, errJournalWrite) {
			t.Fatalf("append in or behind a failed round: %v, want a failed journal write", err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d journal writes; the rounds behind the failed one must not be written", n)
	}
	powerCutChecked(t, l, d, tp, dir, acked)
}

// TestAppendWhileWriterBusy covers both ways a FsyncAlways round is written: by its
// appender when the partition's writer is free, and by the writer goroutine from the
// queue when it is not (here the test holds it). Both are acknowledged in order and
// survive a power cut.
func TestAppendWhileWriterBusy(t *testing.T) {
	dir := t.TempDir()
	l, d, tp := openWatched(t, dir, 1)
	app := func(v string) (int64, error) {
		return tp.Append(context.Background(), 0, []Record{rec("", v, 0)})
	}
	if off, err := app("free"); err != nil || off != 0 {
		t.Fatalf("append with the writer free: %d, %v", off, err)
	}
	pt, err := tp.(*fileTopic).partition(0)
	if err != nil {
		t.Fatal(err)
	}
	pt.wmu.Lock()
	done := make(chan error, 1)
	go func() {
		off, err := app("queued")
		if err == nil && off != 1 {
			err = fmt.Errorf("offset %d, want 1", off)
		}
		done <- err
	}()
	// The writer goroutine takes the request from the queue and waits for the lock.
	select {
	case err := <-done:
		t.Fatalf("append answered while its partition's writer was held: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	pt.wmu.Unlock()
	if err := <-done; err != nil {
		t.Fatalf("append through the writer goroutine: %v", err)
	}
	if off, err := app("free-again"); err != nil || off != 2 {
		t.Fatalf("append after: %d, %v", off, err)
	}
	acked := [][]string{{"free", "queued", "free-again"}}
	powerCutChecked(t, l, d, tp, dir, acked)
}

// TestRoundsInFlightBounded holds the journal in its first write while more appends
// arrive one round at a time than a partition may have in flight: the writer stops at
// maxRoundsInFlight, so that the journal, once released, never waits to hand a round
// back, and every append is acknowledged in order.
func TestRoundsInFlightBounded(t *testing.T) {
	dir := t.TempDir()
	l, _, tp := openWatched(t, dir, 1)
	entered, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int64
	l.testHooks.journalWriteFault = func() error {
		if calls.Add(1) == 1 {
			close(entered)
			<-release
		}
		return nil
	}
	const n = maxRoundsInFlight + 4
	offs := make(chan int64, n)
	for i := 0; i < n; i++ {
		go func() {
			off, err := tp.Append(context.Background(), 0, []Record{rec("", fmt.Sprint(i), 0)})
			if err != nil {
				t.Errorf("append %d: %v", i, err)
			}
			offs <- off
		}()
		switch {
		case i == 0:
			<-entered
		case i < maxRoundsInFlight:
			for len(l.journal.q) < i { // round i queued alone: the rounds pile up
				time.Sleep(time.Millisecond)
			}
		}
	}
	time.Sleep(20 * time.Millisecond) // the appends past the bound reach the writer
	if q := len(l.journal.q); q != maxRoundsInFlight-1 {
		t.Fatalf("%d rounds queued for the journal behind the one it holds, want %d", q, maxRoundsInFlight-1)
	}
	close(release)
	got := map[int64]bool{}
	for i := 0; i < n; i++ {
		select {
		case off := <-offs:
			got[off] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d appends answered: the journal is stuck", i, n)
		}
	}
	for off := int64(0); off < n; off++ {
		if !got[off] {
			t.Fatalf("offsets %v: %d missing", got, off)
		}
	}
	if countRecords(t, tp) != n {
		t.Fatalf("%d records, want %d", countRecords(t, tp), n)
	}
	l.Close()
}
