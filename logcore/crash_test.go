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

// Producers of the compacted "state" topic are numbered from stateProducerBase, the
// producer of the "ret" topic (size retention) is retProducer.
const (
	stateProducerBase = 100
	stateProducers    = 2
	stateKeys         = 8
	retProducer       = 200
)

// crashKey is the key of record i of batch seq of producer g: on the crash topic every
// other record has one; on the state topic it cycles through stateKeys keys; records
// of the ret topic have none.
func crashKey(g, seq, i int) []byte {
	switch {
	case g >= retProducer:
		return nil
	case g >= stateProducerBase:
		return []byte("k" + strconv.Itoa(seq%stateKeys))
	case i%2 == 0:
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
	key := crashKey(g, seq, i)
	id := fmt.Sprintf("%d/%d/%d/%d", run, g, seq, i)
	return id, bytes.Equal(want, r.Value) && bytes.Equal(key, r.Key) && (r.Key == nil) == (key == nil)
}

func hashOf(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

func stateConfig() TopicConfig {
	return TopicConfig{Partitions: 1, SegmentBytes: 4 << 10, Compacted: true}
}

func retConfig() TopicConfig {
	return TopicConfig{Partitions: 1, SegmentBytes: 8 << 10, RetentionBytes: 24 << 10}
}

// crashChild appends from several goroutines until it is killed, printing one line
// "ack <topic> <partition> <offset> <hash> [key]" per record of every acknowledged
// batch. Besides the main topic it writes a compacted topic and a topic with size
// retention, and runs maintenance every few milliseconds, so that kills also land in
// compaction rewrites and segment deletions.
func crashChild(dir string, run int) error {
	opts := crashOptions()
	opts.MaintenanceInterval = 15 * time.Millisecond
	l, err := Open(dir, opts)
	if err != nil {
		return err
	}
	topics := map[string]Topic{}
	for name, cfg := range map[string]TopicConfig{
		"crash": {Partitions: crashPartitions, SegmentBytes: crashSegmentBytes},
		"state": stateConfig(),
		"ret":   retConfig(),
	} {
		if topics[name], err = l.Topic(name, cfg); err != nil {
			return err
		}
	}
	if _, err := os.Stdout.WriteString("ready\n"); err != nil {
		return err
	}
	var outMu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, crashProducers+stateProducers+1)
	producer := func(g int) {
		defer wg.Done()
		for seq := 0; ; seq++ {
			topic, p, n := "crash", (g+seq)%crashPartitions, 1+(seq+g)%4
			switch {
			case g >= retProducer:
				topic, p, n = "ret", 0, 2
			case g >= stateProducerBase:
				topic, p, n = "state", 0, 1
			}
			recs := make([]Record, n)
			for i := range recs {
				recs[i] = Record{Key: crashKey(g, seq, i), Value: crashPayload(run, g, seq, i)}
			}
			base, err := topics[topic].Append(context.Background(), p, recs)
			if err != nil {
				errs <- err
				return
			}
			var line bytes.Buffer
			for i, r := range recs {
				fmt.Fprintf(&line, "ack %s %d %d %s %s\n", topic, p, base+int64(i), hashOf(r.Value), r.Key)
			}
			outMu.Lock()
			_, err = os.Stdout.Write(line.Bytes())
			outMu.Unlock()
			if err != nil {
				errs <- err
				return
			}
		}
	}
	for g := 0; g < crashProducers; g++ {
		wg.Add(1)
		go producer(g)
	}
	for g := stateProducerBase; g < stateProducerBase+stateProducers; g++ {
		wg.Add(1)
		go producer(g)
	}
	wg.Add(1)
	go producer(retProducer)
	wg.Wait()
	return <-errs
}

type ackKey struct {
	topic string
	p     int
	off   int64
}

// crashAcks is what the parent learned from the children's acknowledgements.
type crashAcks struct {
	hash        map[ackKey]string // every acknowledged record: its value's hash
	maxAcked    map[ackKey]int64  // per topic and partition (off unused): the largest acknowledged offset
	stateLatest map[string]int64  // state topic: the last acknowledged offset of each key
}

func (a *crashAcks) add(t *testing.T, run int, k ackKey, hash, key string) {
	if prev, ok := a.hash[k]; ok && prev != hash {
		t.Fatalf("run %d: offset %d of %s/%d acknowledged twice with different values", run, k.off, k.topic, k.p)
	}
	a.hash[k] = hash
	pk := ackKey{k.topic, k.p, 0}
	if cur, ok := a.maxAcked[pk]; !ok || k.off > cur {
		a.maxAcked[pk] = k.off
	}
	if k.topic == "state" {
		if cur, ok := a.stateLatest[key]; !ok || k.off > cur {
			a.stateLatest[key] = k.off
		}
	}
}

func TestCrashRecovery(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	acks := &crashAcks{hash: map[ackKey]string{}, maxAcked: map[ackKey]int64{}, stateLatest: map[string]int64{}}
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
		// Kill at a random moment: mostly while the producers are appending, rolling,
		// writing indexes, compacting and deleting; every fifth run during open and
		// recovery.
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
			if len(f) < 5 || f[0] != "ack" || (f[1] == "state") != (len(f) == 6) {
				continue // a line torn by the kill
			}
			p, _ := strconv.Atoi(f[2])
			off, _ := strconv.ParseInt(f[3], 10, 64)
			key := ""
			if len(f) == 6 {
				key = f[5]
			}
			acks.add(t, run, ackKey{f[1], p, off}, f[4], key)
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
		verifyCrashLog(t, dir, run, acks)
	}
	if len(acks.hash) == 0 {
		t.Fatal("no child ever acknowledged a record")
	}
	// The kills must have met retention and compaction at work, not just appends.
	l := openTest(t, dir, crashOptions())
	defer l.Close()
	ret, _ := l.Topic("ret", TopicConfig{})
	state, _ := l.Topic("state", TopicConfig{})
	rs, ss := ret.Stats(0), state.Stats(0)
	kept := len(readAll(t, state, 0))
	t.Logf("ret: offsets [%d, %d); state: %d records kept of offsets [%d, %d)", rs.StartOffset, rs.EndOffset, kept, ss.StartOffset, ss.EndOffset)
	if rs.StartOffset == 0 || int64(kept) >= ss.EndOffset {
		t.Fatal("the children never applied retention or compaction")
	}
}

// verifyCrashLog reopens the log and checks, for each topic, that every acknowledged
// record that the topic's policy keeps is there byte for byte, that every record is
// one that was appended (once), that offsets are dense (or, compacted, ascending), and
// that an append continues at the end offset.
func verifyCrashLog(t *testing.T, dir string, run int, acks *crashAcks) {
	t.Helper()
	l, err := Open(dir, crashOptions())
	if err != nil {
		t.Fatalf("run %d: reopen: %v", run, err)
	}
	defer l.Close()
	seen := map[string]bool{}
	check := func(topic string, cfg TopicConfig, retained bool) {
		tp, err := l.Topic(topic, cfg)
		if err != nil {
			t.Fatalf("run %d: topic %s: %v", run, topic, err)
		}
		for p := 0; p < tp.Partitions(); p++ {
			st := tp.Stats(p)
			what := fmt.Sprintf("run %d: %s/%d", run, topic, p)
			if !retained && !cfg.Compacted && st.StartOffset != 0 {
				t.Fatalf("%s starts at %d", what, st.StartOffset)
			}
			if maxAck, ok := acks.maxAcked[ackKey{topic, p, 0}]; ok && st.EndOffset < maxAck+1 {
				t.Fatalf("%s ends at %d, but offset %d was acknowledged", what, st.EndOffset, maxAck)
			}
			recs := readAll(t, tp, p)
			latest := map[string]int64{}
			prev := st.StartOffset - 1
			for i, r := range recs {
				if cfg.Compacted && r.Offset <= prev || !cfg.Compacted && r.Offset != st.StartOffset+int64(i) {
					t.Fatalf("%s: record %d has offset %d after %d (offsets not dense or not ascending)", what, i, r.Offset, prev)
				}
				prev = r.Offset
				id, ok := crashIdentity(r)
				if !ok {
					t.Fatalf("%s: offset %d holds a record that was never appended", what, r.Offset)
				}
				if seen[id] {
					t.Fatalf("%s: record %s appears twice (offset %d)", what, id, r.Offset)
				}
				seen[id] = true
				if h, ok := acks.hash[ackKey{topic, p, r.Offset}]; ok && h != hashOf(r.Value) {
					t.Fatalf("%s: offset %d differs from the acknowledged record", what, r.Offset)
				}
				latest[string(r.Key)] = r.Offset
			}
			if !cfg.Compacted && int64(len(recs)) != st.EndOffset-st.StartOffset {
				t.Fatalf("%s: %d records in [%d, %d)", what, len(recs), st.StartOffset, st.EndOffset)
			}
			if cfg.Compacted {
				// Compaction may drop superseded records, never a key's latest one.
				for key, off := range acks.stateLatest {
					if latest[key] < off {
						t.Fatalf("%s: key %s's acknowledged record at offset %d is gone (latest in the log %d)", what, key, off, latest[key])
					}
				}
			}
			// Appends continue at the end offset.
			v := crashPayload(-1, p, run, 0)
			var key []byte
			if retained {
				v = crashPayload(-1, retProducer+1, run, 0)
			}
			if cfg.Compacted {
				v = crashPayload(-1, stateProducerBase, run, 0)
				key = crashKey(stateProducerBase, run, 0)
			}
			off, err := tp.Append(context.Background(), p, []Record{{Key: key, Value: v}})
			if err != nil || off != st.EndOffset {
				t.Fatalf("%s: append after reopen: offset %d, %v; want %d", what, off, err, st.EndOffset)
			}
			acks.add(t, run, ackKey{topic, p, off}, hashOf(v), string(key))
		}
	}
	// Acknowledged offsets lie below the end offsets checked here, offsets are dense
	// from the start offset, and the records there match their hashes: acknowledged
	// records are present byte for byte (where retention or compaction keeps them).
	check("crash", TopicConfig{Partitions: crashPartitions, SegmentBytes: crashSegmentBytes}, false)
	check("ret", retConfig(), true)
	check("state", stateConfig(), false)
}
