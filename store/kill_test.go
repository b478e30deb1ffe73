package store

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vigilhq/vigil/logcore"
	"github.com/vigilhq/vigil/sample"
)

const (
	killPartitions = 3
	killSeries     = 9
)

// killStart is the simulated time of the first sample: every record moves it on by a
// second, so that the child cuts many one-minute blocks and commits often.
func killStart() int64 { return (time.Now().Add(-3*time.Hour).UnixMilli() / 60000) * 60000 }

// TestMain runs the kill test's child when asked to, and the tests otherwise.
func TestMain(m *testing.M) {
	if dir := os.Getenv("VIGIL_KILL_CHILD_DIR"); dir != "" {
		if err := killChild(dir); err != nil {
			fmt.Fprintln(os.Stderr, "kill child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// killChild is the child of TestKill9LosesNothingCountsNothingTwice: it appends sample
// records to the log (printing "ack" once each is durable) while a materializer with
// one-minute blocks checkpoints every few milliseconds, until it is killed.
func killChild(dir string) error {
	l, err := logcore.Open(filepath.Join(dir, "log"), logcore.Options{Fsync: logcore.FsyncAlways})
	if err != nil {
		return err
	}
	topic, err := l.Topic("samples", logcore.TopicConfig{Partitions: killPartitions})
	if err != nil {
		return err
	}
	s, err := Open(Options{Dir: filepath.Join(dir, "store"), BlockDuration: time.Minute, OutOfOrderWindow: time.Minute})
	if err != nil {
		return err
	}
	m, err := s.StartMaterializer(MaterializerOptions{Log: l, Topic: topic, CheckpointInterval: 5 * time.Millisecond})
	if err != nil {
		return err
	}
	// Continue the simulated clock where the previous child stopped.
	next := killStart()
	for p := 0; p < killPartitions; p++ {
		next = max(next, killStart()+topic.Stats(p).EndOffset*1000)
	}
	var enc sample.Encoder
	for i := int64(0); ; i++ {
		ts := next + i*1000
		for p := 0; p < killPartitions; p++ {
			enc.Reset()
			for k := p; k < killSeries; k += killPartitions {
				enc.AppendSeries(&sample.Series{Labels: lbls("__name__", "k", "s", fmt.Sprint(k)), Samples: []sample.Sample{{T: ts, V: float64(ts)}}})
			}
			// 45s behind the newest sample: past the in-order window (half the one-minute
			// block), inside the out-of-order window, so it goes to the out-of-order head.
			enc.AppendSeries(&sample.Series{Labels: lbls("__name__", "kooo", "s", fmt.Sprint(p)), Samples: []sample.Sample{{T: ts - 45000, V: 1}}})
			off, err := topic.Append(context.Background(), p, []logcore.Record{{Value: enc.Bytes()}})
			if err != nil {
				return err
			}
			fmt.Printf("ack %d %d\n", p, off)
		}
		if i%50 == 0 {
			fmt.Printf("committed %d\n", m.Committed(0))
		}
	}
}

func TestKill9LosesNothingCountsNothingTwice(t *testing.T) {
	dir := t.TempDir()
	acked := make([]int64, killPartitions)
	for p := range acked {
		acked[p] = -1
	}
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "VIGIL_KILL_CHILD_DIR="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		acks, commits := 0, 0
		// Kill after some acknowledged records and at least two commits that moved.
		deadline := time.Now().Add(90 * time.Second)
		lastCommit := ""
		for sc.Scan() && time.Now().Before(deadline) {
			line := sc.Text()
			var p int
			var off int64
			if n, _ := fmt.Sscanf(line, "ack %d %d", &p, &off); n == 2 {
				acked[p] = max(acked[p], off)
				acks++
			}
			if strings.HasPrefix(line, "committed ") && line != lastCommit && line != "committed 0" {
				lastCommit = line
				commits++
			}
			if acks > 600*(round+1) && commits >= 2 {
				break
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if commits < 2 {
			t.Fatalf("round %d: the child committed no offsets (%d acks)", round, acks)
		}
		t.Logf("round %d: killed after %d acks, %d commits seen", round, acks, commits)
	}

	// Restart: replay from the committed offsets.
	l, err := logcore.Open(filepath.Join(dir, "log"), logcore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	topic, err := l.Topic("samples", logcore.TopicConfig{Partitions: killPartitions})
	if err != nil {
		t.Fatal(err)
	}
	// What the log holds: every acknowledged record, and per series the samples.
	want := map[string]int{}
	where := map[string]map[int64]string{} // series -> timestamp -> partition/offset
	var dec sample.Decoder
	for p := 0; p < killPartitions; p++ {
		st := topic.Stats(p)
		if st.EndOffset <= acked[p] {
			t.Fatalf("partition %d: acknowledged offset %d is not in the log (end %d)", p, acked[p], st.EndOffset)
		}
		for off := st.StartOffset; off < st.EndOffset; {
			recs, err := topic.Read(p, off, 1<<20, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				if err := dec.Reset(r.Value); err != nil {
					t.Fatal(err)
				}
				for dec.Next() {
					ls := dec.Series().Labels
					key := string(ls[0].Value) + "/" + string(ls[1].Value)
					want[key] += len(dec.Series().Samples)
					if where[key] == nil {
						where[key] = map[int64]string{}
					}
					for _, smp := range dec.Series().Samples {
						where[key][smp.T] = fmt.Sprintf("partition %d offset %d", p, r.Offset)
					}
				}
				off = r.Offset + 1
			}
		}
	}
	s, err := Open(Options{Dir: filepath.Join(dir, "store"), BlockDuration: time.Minute, OutOfOrderWindow: time.Minute, Metrics: metrics.NewSet()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m, err := s.StartMaterializer(MaterializerOptions{Log: l, Topic: topic, CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	e := &testEnv{t: t, store: s}
	end := killStart() + 24*3600*1000
	got := map[string]int{}
	for _, name := range []string{"k", "kooo"} {
		for _, smp := range e.instant(`count_over_time(`+name+`[2d])`, end) {
			got[name+"/"+smp.Metric.Get("s")] = int(smp.F)
		}
	}
	if len(got) != killSeries+killPartitions {
		t.Fatalf("got %d series after restart, want %d", len(got), killSeries+killPartitions)
	}
	total := 0
	for k, n := range want {
		total += n
		if got[k] != n {
			t.Errorf("series %s: %d samples queryable after kill -9 and restart, the log holds %d; missing: %s", k, got[k], n, e.missing(k, where[k], end))
		}
	}
	if !t.Failed() {
		t.Logf("%d samples in the log, all queryable exactly once; %d blocks", total, len(s.DB().Blocks()))
	}
}

// missing names up to five of the samples of series key ("name/s") that the log holds
// (at the timestamps of logged) and the store does not.
func (e *testEnv) missing(key string, logged map[int64]string, end int64) string {
	name, s, _ := strings.Cut(key, "/")
	qry, err := e.store.Engine().NewInstantQuery(context.Background(), e.store.Queryable(), nil, fmt.Sprintf(`%s{s=%q}[2d]`, name, s), time.UnixMilli(end))
	if err != nil {
		return err.Error()
	}
	defer qry.Close()
	m, err := qry.Exec(context.Background()).Matrix()
	if err != nil {
		return err.Error()
	}
	have := map[int64]bool{}
	for _, series := range m {
		for _, p := range series.Floats {
			have[p.T] = true
		}
	}
	var ts []int64
	for t := range logged {
		if !have[t] {
			ts = append(ts, t)
		}
	}
	slices.Sort(ts)
	var out []string
	for _, t := range ts[:min(len(ts), 5)] {
		out = append(out, fmt.Sprintf("t=%d (%s)", t, logged[t]))
	}
	return strings.Join(out, ", ")
}
