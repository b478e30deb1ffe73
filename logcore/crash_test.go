package logcore

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The crash test re-executes the test binary as a child (see TestMain) that appends
// with FsyncAlways and prints every acknowledged record; the parent kills it with
// SIGKILL at random moments and checks the log after each reopen.
const (
	crashChildEnv   = "VIGIL_LOGCORE_CRASH_CHILD" // the log directory; set only in the child
	crashRunEnv     = "VIGIL_LOGCORE_CRASH_RUN"   // the child's run number
	crashPartitions = 2
	crashProducers  = 8
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		run, _ := strconv.Atoi(os.Getenv(crashRunEnv))
		if err := crashChild(dir, run); err != nil {
			fmt.Fprintln(os.Stderr, "crash child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	if dir := os.Getenv(benchFillEnv); dir != "" {
		if err := benchFillChild(dir); err != nil {
			fmt.Fprintln(os.Stderr, "bench fill child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashOptions are the log options of the crash child and of the parent's reopens:
// small segments and a dense index, so that kills land in rolls and index writes.
func crashOptions() Options {
	return Options{Fsync: FsyncAlways, IndexIntervalBytes: 512, MaintenanceInterval: time.Hour}
}

const crashSegmentBytes = 24 << 10

// crashPayload is the deterministic value of record i of batch seq of producer g in
// run: an identity header followed by pseudo-random bytes derived from it.
func crashPayload(run, g, seq, i int) []byte {
	r := rand.New(rand.NewPCG(uint64(run)<<32|uint64(g), uint64(seq)<<8|uint64(i)))
	n := 24 + r.IntN(1500)
	b := make([]byte, n)
	binary.LittleEndian.PutUint32(b[0:], uint32(run))
	binary.LittleEndian.PutUint32(b[4:], uint32(g))
	binary.LittleEndian.PutUint64(b[8:], uint64(seq))
	binary.LittleEndian.PutUint32(b[16:], uint32(i))
	binary.LittleEndian.PutUint32(b[20:], uint32(n))
	for j := 24; j < n; j++ {
		b[j] = byte(r.Uint32())
	}
	return b
}

func crashKey(i int) []byte {
	if i%2 == 0 {
		return nil
	}
	return []byte("key-" + strconv.Itoa(i))
}

// crashIdentity regenerates the record a payload claims to be and reports whether
// the value and key are exactly that record.
func crashIdentity(r Record) (string, bool) {
	if len(r.Value) < 24 {
		return "", false
	}
	run := int(int32(binary.LittleEndian.Uint32(r.Value[0:])))
	g := int(binary.LittleEndian.Uint32(r.Value[4:]))
	seq := int(binary.LittleEndian.Uint64(r.Value[8:]))
	i := int(binary.LittleEndian.Uint32(r.Value[16:]))
	want := crashPayload(run, g, seq, i)
	id := fmt.Sprintf("%d/%d/%d/%d", run, g, seq, i)
	return id, bytes.Equal(want, r.Value) && bytes.Equal(crashKey(i), r.Key) && (r.Key == nil) == (crashKey(i) == nil)
}

func hashOf(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// crashChild appends from several goroutines until it is killed, printing one line
// "ack <partition> <offset> <hash>" per record of every acknowledged batch.
func crashChild(dir string, run int) error {
	l, err := Open(dir, crashOptions())
	if err != nil {
		return err
	}
	tp, err := l.Topic("crash", TopicConfig{Partitions: crashPartitions, SegmentBytes: crashSegmentBytes})
	if err != nil {
		return err
	}
	if _, err := os.Stdout.WriteString("ready\n"); err != nil {
		return err
	}
	var outMu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, crashProducers)
	for g := 0; g < crashProducers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; ; seq++ {
				n := 1 + (seq+g)%4
				recs := make([]Record, n)
				for i := range recs {
					recs[i] = Record{Key: crashKey(i), Value: crashPayload(run, g, seq, i)}
				}
				p := (g + seq) % crashPartitions
				base, err := tp.Append(context.Background(), p, recs)
				if err != nil {
					errs <- err
					return
				}
				var line bytes.Buffer
				for i, r := range recs {
					fmt.Fprintf(&line, "ack %d %d %s\n", p, base+int64(i), hashOf(r.Value))
				}
				outMu.Lock()
				_, err = os.Stdout.Write(line.Bytes())
				outMu.Unlock()
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	return <-errs
}

type ackKey struct {
	p   int
	off int64
}

func TestCrashRecovery(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	acked := map[ackKey]string{} // every acknowledged record: its value's hash
	maxAcked := make([]int64, crashPartitions)
	for i := range maxAcked {
		maxAcked[i] = -1
	}
	const kills = 24
	for run := 0; run < kills; run++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashRecovery$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashRunEnv+"="+strconv.Itoa(run))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill at a random moment: mostly while the producers are appending, rolling
		// and writing indexes; every fifth run during open and recovery.
		delay := time.Duration(rng.IntN(150)) * time.Millisecond
		var killer *time.Timer
		kill := func() { killer = time.AfterFunc(delay, func() { cmd.Process.Signal(syscall.SIGKILL) }) }
		early := run%5 == 4
		if early {
			delay = time.Duration(rng.IntN(30)) * time.Millisecond
			kill()
		}
		sc := bufio.NewScanner(out)
		lines := 0
		for sc.Scan() {
			if sc.Text() == "ready" {
				if !early {
					kill()
				}
				continue
			}
			f := strings.Fields(sc.Text())
			if len(f) != 4 || f[0] != "ack" {
				continue // a line torn by the kill
			}
			p, _ := strconv.Atoi(f[1])
			off, _ := strconv.ParseInt(f[2], 10, 64)
			k := ackKey{p, off}
			if prev, ok := acked[k]; ok && prev != f[3] {
				t.Fatalf("run %d: offset %d of partition %d acknowledged twice with different values", run, off, p)
			}
			acked[k] = f[3]
			maxAcked[p] = max(maxAcked[p], off)
			lines++
		}
		if killer == nil {
			t.Fatalf("run %d: child exited before it was ready: %s", run, stderr.String())
		}
		killer.Stop()
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("run %d: child did not die by SIGKILL: %v\n%s", run, err, stderr.String())
		}
		t.Logf("run %d: killed %v after start=%v, %d acks", run, delay, early, lines)
		verifyCrashLog(t, dir, run, acked, maxAcked)
	}
	if len(acked) == 0 {
		t.Fatal("no child ever acknowledged a record")
	}
}

// verifyCrashLog reopens the log and checks that every acknowledged record is there
// byte for byte, that every record is one that was appended (once), that offsets are
// dense, and that an append continues at the end offset.
func verifyCrashLog(t *testing.T, dir string, run int, acked map[ackKey]string, maxAcked []int64) {
	t.Helper()
	l, err := Open(dir, crashOptions())
	if err != nil {
		t.Fatalf("run %d: reopen: %v", run, err)
	}
	defer l.Close()
	tp, err := l.Topic("crash", TopicConfig{Partitions: crashPartitions, SegmentBytes: crashSegmentBytes})
	if err != nil {
		t.Fatalf("run %d: topic: %v", run, err)
	}
	seen := map[string]bool{}
	for p := 0; p < crashPartitions; p++ {
		st := tp.Stats(p)
		if st.StartOffset != 0 {
			t.Fatalf("run %d: partition %d starts at %d", run, p, st.StartOffset)
		}
		if st.EndOffset < maxAcked[p]+1 {
			t.Fatalf("run %d: partition %d ends at %d, but offset %d was acknowledged", run, p, st.EndOffset, maxAcked[p])
		}
		recs := readAll(t, tp, p)
		if int64(len(recs)) != st.EndOffset {
			t.Fatalf("run %d: partition %d: %d records for end offset %d", run, p, len(recs), st.EndOffset)
		}
		for i, r := range recs {
			if r.Offset != int64(i) {
				t.Fatalf("run %d: partition %d: record %d has offset %d (offsets not dense)", run, p, i, r.Offset)
			}
			id, ok := crashIdentity(r)
			if !ok {
				t.Fatalf("run %d: partition %d offset %d holds a record that was never appended", run, p, r.Offset)
			}
			if seen[id] {
				t.Fatalf("run %d: record %s appears twice (partition %d offset %d)", run, id, p, r.Offset)
			}
			seen[id] = true
			if h, ok := acked[ackKey{p, r.Offset}]; ok && h != hashOf(r.Value) {
				t.Fatalf("run %d: partition %d offset %d differs from the acknowledged record", run, p, r.Offset)
			}
		}
	}
	// Every acknowledged offset lies below the end offset checked above, and the
	// record there matched its hash: acknowledged records are present byte for byte.
	for p := 0; p < crashPartitions; p++ {
		end := tp.Stats(p).EndOffset
		v := crashPayload(-1, p, run, 0)
		off, err := tp.Append(context.Background(), p, []Record{{Value: v}})
		if err != nil || off != end {
			t.Fatalf("run %d: append after reopen to partition %d: offset %d, %v; want %d", run, p, off, err, end)
		}
		acked[ackKey{p, off}] = hashOf(v)
		maxAcked[p] = off
	}
}
