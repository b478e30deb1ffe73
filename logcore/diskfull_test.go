package logcore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fsizeChildEnv makes TestDiskFull run its file-size-limit variant: the parent sets it
// when it may not mount a tmpfs, and runs the test again in a child process whose
// RLIMIT_FSIZE makes writes fail with EFBIG (Go ignores SIGXFSZ).
const fsizeChildEnv = "VIGIL_LOGCORE_FSIZE_CHILD"

// mountTmpfs mounts a tmpfs of the given size (e.g. "2m") on a fresh directory and
// unmounts it at the end of the test; it reports false when mounting is not permitted.
func mountTmpfs(t *testing.T, size string) (string, bool) {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Logf("cannot mount a tmpfs (%v)", err)
		return "", false
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir, true
}

// TestDiskFull fills the disk under a log (a 2 MiB tmpfs, or else a file-size limit in
// a child process): the producer gets an error wrapping ENOSPC (or EFBIG), never a
// panic or a silent drop; a tailing reader and later reads see every committed record;
// a failed append uses no offset; and once space is freed appends work again.
func TestDiskFull(t *testing.T) {
	if os.Getenv(fsizeChildEnv) != "" {
		var old syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
			t.Fatal(err)
		}
		limit := syscall.Rlimit{Cur: 300 << 10, Max: old.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &limit); err != nil {
			t.Fatal(err)
		}
		defer syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old)
		diskFullScenario(t, t.TempDir(), 1<<20, syscall.EFBIG, func() {
			if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
				t.Fatal(err)
			}
		})
		return
	}
	dir, ok := mountTmpfs(t, "2m")
	if !ok {
		// Not allowed to mount: run the file-size-limit variant in a child.
		cmd := exec.Command(os.Args[0], "-test.run=^TestDiskFull$", "-test.v")
		cmd.Env = append(os.Environ(), fsizeChildEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("--- PASS: TestDiskFull")) {
			t.Fatalf("file-size-limit child: %v\n%s", err, out)
		}
		t.Logf("file-size-limit child passed:\n%s", out)
		return
	}
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, 768<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	diskFullScenario(t, filepath.Join(dir, "log"), 256<<10, syscall.ENOSPC, func() {
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
	})
}

func diskFullScenario(t *testing.T, dir string, segmentBytes int64, want syscall.Errno, free func()) {
	l, err := Open(dir, Options{Fsync: FsyncAlways, MaintenanceInterval: time.Hour})
	if err != nil {
		t.Fatalf("open on a small disk: %v", err)
	}
	defer func() {
		if l != nil {
			l.Close()
		}
	}()
	tp, err := l.Topic("full", TopicConfig{Partitions: 1, SegmentBytes: segmentBytes})
	if err != nil {
		t.Fatal(err)
	}
	value := func(i int) []byte {
		return bytes.Repeat([]byte{byte(i), byte(i >> 8), 'v'}, 1000+i%200)
	}
	// A tailing consumer checks every record as it is committed.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, _ := NewConsumer(l, "tail", tp, 0)
	tailed := make(chan int64, 1)
	stopTail := make(chan struct{})
	go func() {
		n := int64(0)
		defer func() { tailed <- n }()
		for {
			pctx, pcancel := context.WithCancel(ctx)
			go func() {
				select {
				case <-stopTail:
					pcancel()
				case <-pctx.Done():
				}
			}()
			recs, err := c.Poll(pctx, 0)
			pcancel()
			if err != nil {
				return
			}
			for _, r := range recs {
				if r.Offset != n || !bytes.Equal(r.Value, value(int(n))) {
					t.Errorf("tailing reader: record %d differs", r.Offset)
					return
				}
				n++
			}
		}
	}()

	var acked int
	var fullErr error
	for i := 0; i < 10000; i++ {
		off, err := tp.Append(context.Background(), 0, []Record{{Value: value(acked)}})
		if err != nil {
			fullErr = err
			break
		}
		if off != int64(acked) {
			t.Fatalf("append %d got offset %d", acked, off)
		}
		acked++
	}
	if fullErr == nil {
		t.Fatal("the disk never filled up")
	}
	if !errors.Is(fullErr, want) {
		t.Fatalf("append on a full disk: %v, want an error wrapping %v", fullErr, want)
	}
	t.Logf("disk full after %d records: %v", acked, fullErr)
	// More appends fail the same way and use no offsets.
	for i := 0; i < 3; i++ {
		if _, err := tp.Append(context.Background(), 0, []Record{{Value: value(acked)}}); err == nil {
			acked++ // an append that succeeds must be as durable as any other
		}
	}
	if end := tp.Stats(0).EndOffset; end != int64(acked) {
		t.Fatalf("end offset %d after %d acknowledged appends", end, acked)
	}
	checkAll := func(what string, n int) {
		t.Helper()
		recs := readAll(t, tp, 0)
		if len(recs) != n {
			t.Fatalf("%s: %d records readable, want %d", what, len(recs), n)
		}
		for i, r := range recs {
			if r.Offset != int64(i) || !bytes.Equal(r.Value, value(i)) {
				t.Fatalf("%s: record %d differs", what, i)
			}
		}
	}
	checkAll("while full", acked)

	free()
	off, err := tp.Append(context.Background(), 0, []Record{{Value: value(acked)}})
	if err != nil || off != int64(acked) {
		t.Fatalf("append after freeing space: offset %d, %v; want %d", off, err, acked)
	}
	acked++
	for i := 0; i < 20; i++ {
		if _, err := tp.Append(context.Background(), 0, []Record{{Value: value(acked)}}); err != nil {
			t.Fatalf("append %d after freeing space: %v", acked, err)
		}
		acked++
	}
	checkAll("after freeing space", acked)
	// From now on the reader's polls end as soon as it has caught up.
	close(stopTail)
	if n := <-tailed; n != int64(acked) {
		t.Fatalf("tailing reader saw %d records, want %d", n, acked)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	l = openTest(t, dir, Options{})
	tp, _ = l.Topic("full", TopicConfig{})
	checkAll("after reopen", acked)
}

// TestOpenReadOnly: a log directory that cannot be written fails Open with an error
// naming the directory and the cause, both for an existing log and for a directory
// that cannot be created: on a read-only mount (when mounting is permitted) and, always,
// without write permission (for root, on a thread without CAP_DAC_OVERRIDE).
func TestOpenReadOnly(t *testing.T) {
	prepare := func(dir string) string {
		logDir := filepath.Join(dir, "log")
		l := openTest(t, logDir, Options{})
		tp, _ := l.Topic("t", TopicConfig{Partitions: 1})
		tp.Append(context.Background(), 0, []Record{rec("", "x", 0)})
		l.Close()
		return logDir
	}
	check := func(what string, open func(dir string) error, dirs ...string) {
		t.Helper()
		for _, d := range dirs {
			err := open(d)
			if err == nil {
				t.Fatalf("%s: open of unwritable %s succeeded", what, d)
			}
			if !strings.Contains(err.Error(), d) || !(errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.EACCES)) {
				t.Fatalf("%s: open of unwritable %s: %q does not name the directory and the cause", what, d, err)
			}
			t.Logf("%s: %v", what, err)
		}
	}
	plainOpen := func(d string) error {
		l, err := Open(d, Options{})
		if err == nil {
			l.Close()
		}
		return err
	}

	if dir, ok := mountTmpfs(t, "1m"); ok {
		logDir := prepare(dir)
		if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
			t.Fatalf("remount read-only: %v", err)
		}
		check("read-only mount", plainOpen, logDir, filepath.Join(dir, "new"))
	}

	dir := t.TempDir()
	logDir := prepare(dir)
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := os.FileMode(0o444)
		if d.IsDir() {
			mode = 0o555
		}
		return os.Chmod(p, mode)
	})
	t.Cleanup(func() {
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error { return os.Chmod(p, 0o755) })
	})
	check("no write permission", openWithoutDACOverride, logDir, filepath.Join(dir, "new"))
}

// openWithoutDACOverride opens (and closes) the log in dir on a thread that has given
// up the capabilities that bypass file permissions, so that permissions apply even to
// root. The thread is never unlocked, so it ends with its goroutine.
func openWithoutDACOverride(dir string) error {
	res := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			res <- fmt.Errorf("capget: %w", err)
			return
		}
		drop := uint32(1<<unix.CAP_DAC_OVERRIDE | 1<<unix.CAP_DAC_READ_SEARCH | 1<<unix.CAP_FOWNER)
		data[0].Effective &^= drop
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			res <- fmt.Errorf("capset: %w", err)
			return
		}
		l, err := Open(dir, Options{})
		if err == nil {
			l.Close()
		}
		res <- err
	}()
	return <-res
}

// TestWriteAndSyncFaults injects EIO into segment writes and syncs. A failed write
// (after a partial write) fails only its appends: nothing of them becomes visible and
// the next append takes the same offset. A failed fdatasync fails the partition: every
// later append returns the error until the log is reopened, committed records stay
// readable, and after the reopen the failed batch is gone and appends continue.
func TestWriteAndSyncFaults(t *testing.T) {
	dir := t.TempDir()
	l := openTest(t, dir, Options{})
	tp, _ := l.Topic("t", TopicConfig{Partitions: 1})
	var fault sync.Mutex
	var writeErr, syncErr error
	l.testHooks.writeFault = func() error { fault.Lock(); defer fault.Unlock(); e := writeErr; writeErr = nil; return e }
	l.testHooks.syncFault = func() error { fault.Lock(); defer fault.Unlock(); e := syncErr; syncErr = nil; return e }
	inject := func(w, s error) { fault.Lock(); writeErr, syncErr = w, s; fault.Unlock() }
	app := func(v string) (int64, error) {
		return tp.Append(context.Background(), 0, []Record{rec("", v, 0)})
	}
	var committed []string
	for i := 0; i < 5; i++ {
		v := fmt.Sprintf("ok-%d", i)
		if _, err := app(v); err != nil {
			t.Fatal(err)
		}
		committed = append(committed, v)
	}
	check := func(what string, tp Topic) {
		t.Helper()
		recs := readAll(t, tp, 0)
		if len(recs) != len(committed) {
			t.Fatalf("%s: %d records, want %d", what, len(recs), len(committed))
		}
		for i, r := range recs {
			if string(r.Value) != committed[i] {
				t.Fatalf("%s: record %d is %q, want %q", what, i, r.Value, committed[i])
			}
		}
	}

	inject(syscall.EIO, nil)
	if _, err := app("lost-write"); !errors.Is(err, syscall.EIO) {
		t.Fatalf("append with a failing write: %v, want EIO", err)
	}
	check("after a failed write", tp)
	off, err := app("after-write-fault")
	if err != nil || off != int64(len(committed)) {
		t.Fatalf("append after a failed write: %d, %v; want offset %d", off, err, len(committed))
	}
	committed = append(committed, "after-write-fault")

	inject(nil, syscall.EIO)
	if _, err := app("lost-sync"); !errors.Is(err, syscall.EIO) {
		t.Fatalf("append with a failing sync: %v, want EIO", err)
	}
	for i := 0; i < 3; i++ {
		if _, err := app("refused"); !errors.Is(err, syscall.EIO) {
			t.Fatalf("append to a failed partition: %v, want the sync's EIO", err)
		}
	}
	check("failed partition", tp)
	l.Close()

	l = openTest(t, dir, Options{})
	defer l.Close()
	tp, _ = l.Topic("t", TopicConfig{})
	check("after reopen", tp)
	off, err = app("after-reopen")
	if err != nil || off != int64(len(committed)) {
		t.Fatalf("append after reopen: %d, %v; want offset %d", off, err, len(committed))
	}
}
