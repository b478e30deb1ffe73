package logcore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// TestRecoveryScansOnlyTheTail checks that Open reads the active segment batch by batch
// only after its last index entry (vigil_log_recovery_scanned_bytes_total), that this
// does not grow with the number of closed segments, and that closed segments are not
// scanned at all: garbage written into the middle of every closed segment goes
// unnoticed by Open (a scan would have cut the segment there).
func TestRecoveryScansOnlyTheTail(t *testing.T) {
	dir := t.TempDir()
	const interval = 1024
	opts := Options{Fsync: FsyncNever, IndexIntervalBytes: interval, MaintenanceInterval: time.Hour}
	cfg := TopicConfig{Partitions: 1, SegmentBytes: 64 << 10}
	value := func(i int) []byte { return []byte(fmt.Sprintf("%06d-%s", i, bytes.Repeat([]byte("r"), 200+i%100))) }
	n := 0
	appendN := func(tp Topic, count int) {
		t.Helper()
		for i := 0; i < count; i++ {
			if _, err := tp.Append(context.Background(), 0, []Record{{Value: value(n)}}); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	scannedAtOpen := func() (int64, *FileLog, Topic) {
		t.Helper()
		o := opts
		o.Metrics = metrics.NewSet()
		l := openTest(t, dir, o)
		tp, err := l.Topic("t", cfg)
		if err != nil {
			t.Fatal(err)
		}
		return int64(o.Metrics.GetOrCreateCounter("vigil_log_recovery_scanned_bytes_total").Get()), l, tp
	}
	pdir := filepath.Join(dir, "t", "0")
	activeFiles := func() (size int64, idx []indexEntry) {
		bases := segmentBases(t, pdir)
		s, size, err := openSegmentFile(pdir, bases[len(bases)-1])
		if err != nil {
			t.Fatal(err)
		}
		defer s.closeFiles()
		idx, _, err = s.readIndexFiles(size)
		if err != nil {
			t.Fatal(err)
		}
		return size, idx
	}

	l := openTest(t, dir, opts)
	tp, _ := l.Topic("t", cfg)
	appendN(tp, 1000) // about 4 closed segments
	l.Close()

	// After a clean close the index ends at the last batch: only it is scanned.
	scanned, l, tp := scannedAtOpen()
	size, idx := activeFiles()
	if want := size - int64(idx[len(idx)-1].pos); scanned != want {
		t.Fatalf("clean reopen scanned %d bytes, want the last batch's %d", scanned, want)
	}

	// Lose the last index entries, as a crash before the index writes reached the
	// page cache would: open scans from the last entry left, and no further back.
	appendN(tp, 30)
	l.Close()
	size, idx = activeFiles()
	keep := len(idx) - 4
	for _, f := range []struct {
		ext  string
		size int
	}{{indexExt, indexEntrySize}, {timeIndexExt, timeIndexEntrySize}} {
		bases := segmentBases(t, pdir)
		if err := os.Truncate(segmentPath(pdir, bases[len(bases)-1], f.ext), int64(keep*f.size)); err != nil {
			t.Fatal(err)
		}
	}
	tail := size - int64(idx[keep-1].pos)
	scanned, l, tp = scannedAtOpen()
	if scanned != tail {
		t.Fatalf("reopen without the last index entries scanned %d bytes, want the tail's %d", scanned, tail)
	}
	if got := len(readAll(t, tp, 0)); got != n {
		t.Fatalf("%d records after recovery, want %d", got, n)
	}

	// Three times the closed segments, same tail: the same scan.
	closedBefore := len(segmentBases(t, pdir)) - 1
	appendN(tp, 2000)
	l.Close()
	if closed := len(segmentBases(t, pdir)) - 1; closed < 3*closedBefore {
		t.Fatalf("only %d closed segments (had %d)", closed, closedBefore)
	}
	size, idx = activeFiles()
	scanned, l, _ = scannedAtOpen()
	l.Close()
	if want := size - int64(idx[len(idx)-1].pos); scanned != want {
		t.Fatalf("reopen of a larger log scanned %d bytes, want the last batch's %d", scanned, want)
	}

	// Closed segments are not read: garbage in their middles does not change Open.
	bases := segmentBases(t, pdir)
	for _, base := range bases[:len(bases)-1] {
		f, err := os.OpenFile(segmentPath(pdir, base, logExt), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xEE}, 512), st.Size()/2); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	scanned, l, tp = scannedAtOpen()
	if st := tp.Stats(0); st.EndOffset != int64(n) || st.StartOffset != 0 {
		t.Fatalf("open scanned closed segments: bounds %+v, want [0, %d)", st, n)
	}
	if want := size - int64(idx[len(idx)-1].pos); scanned != want {
		t.Fatalf("scanned %d bytes, want %d", scanned, want)
	}
	// The damage is found when it is read, and reported as corruption.
	if err := readAllErr(tp); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("reading across the garbage: %v, want ErrCorrupt", err)
	}
	l.Close()

	// Nor is the active segment before its last index entry: garbage there goes
	// unnoticed by Open too.
	size, idx = activeFiles()
	if len(idx) < 3 {
		t.Fatalf("active segment has only %d index entries", len(idx))
	}
	f, err := os.OpenFile(segmentPath(pdir, bases[len(bases)-1], logExt), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xEE}, 64), int64(idx[len(idx)/2].pos)+10); err != nil {
		t.Fatal(err)
	}
	f.Close()
	scanned, l, tp = scannedAtOpen()
	defer l.Close()
	if st := tp.Stats(0); st.EndOffset != int64(n) {
		t.Fatalf("open scanned the active segment before its tail: end %d, want %d", st.EndOffset, n)
	}
	if want := size - int64(idx[len(idx)-1].pos); scanned != want {
		t.Fatalf("scanned %d bytes, want %d", scanned, want)
	}
}

// readAllErr reads the whole partition 0 and returns the error that stopped it, or nil.
func readAllErr(tp Topic) error {
	off, end := tp.Stats(0).StartOffset, tp.Stats(0).EndOffset
	for off < end {
		recs, err := tp.Read(0, off, 1<<20, nil)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			return nil
		}
		off = recs[len(recs)-1].Offset + 1
	}
	return nil
}
