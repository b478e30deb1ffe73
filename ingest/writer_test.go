package ingest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/model/value"

	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/logcore"
	"github.com/vigilhq/vigil/sample"
)

func TestWriterValidation(t *testing.T) {
	now := time.Now().UnixMilli()
	good := []string{"__name__", "up", "job", "ok"}
	f := func(validation string, bad []string, ts int64, want Reason, wantMsg string) {
		t.Helper()
		_, tp := testLog(t, 4, logcore.FsyncNever)
		w, set := testWriter(t, tp, func(l *config.LimitsConfig) {
			l.NameValidation = validation
			l.MaxLabelsPerSeries = 4
			l.MaxLabelNameLength = 16
			l.MaxLabelValueLength = 32
		})
		var b Batch
		addSeries(&b, good, sample.Sample{T: now, V: 1})
		addSeries(&b, bad, sample.Sample{T: ts, V: 2})
		res, err := w.Write(context.Background(), &b, ProtocolRemoteWrite)
		if err != nil {
			t.Fatal(err)
		}
		if res.Rejected.Total() != 1 || res.Rejected.Count[want] != 1 {
			t.Fatalf("%q: rejections %s, want one %s", bad, res.Rejected.String(), want)
		}
		if msg := res.Rejected.String(); !strings.Contains(msg, wantMsg) {
			t.Fatalf("%q: message %q lacks %q", bad, msg, wantMsg)
		}
		if res.Samples != 1 {
			t.Fatalf("%q: %d samples written, want 1", bad, res.Samples)
		}
		got := readLog(t, tp)
		if len(got) != 1 || got[0].Labels != `{__name__="up", job="ok"}` {
			t.Fatalf("%q: log holds %+v, want only the good series", bad, got)
		}
		if n := counterValue(set, fmt.Sprintf(`vigil_ingest_rejected_total{reason=%q}`, want)); n != 1 {
			t.Fatalf("rejected_total{reason=%q} = %d", want, n)
		}
		if b.Partition(0) < 0 || b.Partition(1) != -1 {
			t.Fatalf("partitions %d %d", b.Partition(0), b.Partition(1))
		}
	}
	f("utf8", []string{"job", "x"}, now, ReasonMissingMetricName, "no metric name")
	f("utf8", []string{"__name__", "a", "", "x"}, now, ReasonEmptyLabelName, "empty name")
	f("utf8", []string{"__name__", "a", "b", "x", "b", "y"}, now, ReasonDuplicateLabel, `label "b" more than once`)
	f("utf8", []string{"__name__", "a", "b", "\xff"}, now, ReasonInvalidUTF8, "not valid UTF-8")
	f("utf8", []string{"__name__", "a", "\xfe", "x"}, now, ReasonInvalidUTF8, "not valid UTF-8")
	f("utf8", []string{"__name__", "a", "a", "1", "b", "1", "c", "1", "d", "1"}, now, ReasonTooManyLabels, "more than the limit of 4")
	f("utf8", []string{"__name__", "a", strings.Repeat("n", 17), "1"}, now, ReasonLabelNameTooLong, "limit of 16")
	f("utf8", []string{"__name__", "a", "b", strings.Repeat("v", 33)}, now, ReasonLabelValueTooLong, "limit of 32")
	f("utf8", []string{"__name__", "a"}, now+time.Hour.Milliseconds(), ReasonTooFarInFuture, "max_future")
	f("utf8", []string{"__name__", "a"}, now-48*time.Hour.Milliseconds(), ReasonTooFarInPast, "max_past")
	f("legacy", []string{"__name__", "a.b"}, now, ReasonInvalidMetricName, "legacy")
	f("legacy", []string{"__name__", "a", "b.c", "x"}, now, ReasonInvalidLabelName, "legacy")
	f("legacy", []string{"__name__", "1a"}, now, ReasonInvalidMetricName, "legacy")
}

// TestWriterUTF8NamesAccepted: under utf8 validation, dotted names are fine, and an
// empty value drops its label (as in Prometheus).
func TestWriterUTF8NamesAccepted(t *testing.T) {
	_, tp := testLog(t, 2, logcore.FsyncNever)
	w, _ := testWriter(t, tp, nil)
	now := time.Now().UnixMilli()
	var b Batch
	addSeries(&b, []string{"zone", "é", "__name__", "http.requests", "empty", "", "a.b", "c"}, sample.Sample{T: now, V: 1})
	// A staleness marker is a valid sample.
	addSeries(&b, []string{"__name__", "up"}, sample.Sample{T: now, V: math.Float64frombits(value.StaleNaN)})
	res, err := w.Write(context.Background(), &b, ProtocolRemoteWrite)
	if err != nil || res.Rejected.Total() != 0 {
		t.Fatalf("err %v, rejected %s", err, res.Rejected.String())
	}
	got := readLog(t, tp)
	if len(got) != 2 || got[0].Labels != `{__name__="http.requests", a.b="c", zone="é"}` {
		t.Fatalf("log: %+v", got)
	}
	if !value.IsStaleNaN(got[1].Samples[0].V) {
		t.Fatalf("staleness marker lost: %v", got[1].Samples)
	}
}

// TestSeriesHashStable pins SeriesHash (xxhash64 of name 0xff value 0xff ...) and the
// partition of fixed series: they are part of the on-disk contract, so a change fails loudly.
func TestSeriesHashStable(t *testing.T) {
	f := func(want uint64, wantPart int, kv ...string) {
		t.Helper()
		var ls []sample.Label
		var raw []byte
		for i := 0; i < len(kv); i += 2 {
			ls = append(ls, sample.Label{Name: []byte(kv[i]), Value: []byte(kv[i+1])})
			raw = append(append(append(append(raw, kv[i]...), 0xff), kv[i+1]...), 0xff)
		}
		if got := SeriesHash(ls); got != want || got != xxhash.Sum64(raw) {
			t.Fatalf("SeriesHash(%v) = %#x, want %#x", kv, got, want)
		}
		if p := PartitionOf(want, 8); p != wantPart {
			t.Fatalf("PartitionOf(%v, 8) = %d, want %d", kv, p, wantPart)
		}
	}
	f(0x1585e2399cc2df6, 6, "__name__", "up", "job", "node")
	f(xxhash.Sum64(nil), int(xxhash.Sum64(nil)%8))
}

func TestWriterTooManySeries(t *testing.T) {
	_, tp := testLog(t, 2, logcore.FsyncNever)
	w, _ := testWriter(t, tp, func(l *config.LimitsConfig) { l.MaxSeriesPerRequest = 2 })
	var b Batch
	for i := 0; i < 3; i++ {
		addSeries(&b, []string{"__name__", fmt.Sprint("m", i)}, sample.Sample{T: time.Now().UnixMilli(), V: 1})
	}
	_, err := w.Write(context.Background(), &b, ProtocolRemoteWrite)
	var re *RequestError
	if !errors.As(err, &re) || re.Reason != ReasonTooManySeries {
		t.Fatalf("err = %v", err)
	}
	if got := readLog(t, tp); len(got) != 0 {
		t.Fatalf("log not empty: %v", got)
	}
}

func TestWriterActiveSeriesLimit(t *testing.T) {
	_, tp := testLog(t, 2, logcore.FsyncNever)
	w, _ := testWriter(t, tp, func(l *config.LimitsConfig) { l.MaxActiveSeries = 2 })
	now := time.Now().UnixMilli()
	write := func(names ...string) Result {
		var b Batch
		for _, n := range names {
			addSeries(&b, []string{"__name__", n}, sample.Sample{T: now, V: 1})
		}
		res, err := w.Write(context.Background(), &b, ProtocolRemoteWrite)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if r := write("a", "b"); r.Rejected.Total() != 0 {
		t.Fatal(r.Rejected.String())
	}
	r := write("a", "c", "b")
	if r.Rejected.Count[ReasonActiveSeriesLimit] != 1 || !strings.Contains(r.Rejected.String(), `"c"`) {
		t.Fatalf("want c refused: %s", r.Rejected.String())
	}
}

// TestWriterAppendFailure: a failed append is ErrLogUnavailable, and no series is split:
// each series is either wholly in the log or not at all.
func TestWriterAppendFailure(t *testing.T) {
	_, tp := testLog(t, 4, logcore.FsyncNever)
	ft := &failingTopic{Topic: tp}
	w, set := testWriter(t, ft, nil)
	ft.setFails(1)
	now := time.Now().UnixMilli()
	var b Batch
	for i := 0; i < 50; i++ {
		addSeries(&b, []string{"__name__", "m", "i", fmt.Sprint(i)}, sample.Sample{T: now, V: 1}, sample.Sample{T: now + 1, V: 2})
	}
	_, err := w.Write(context.Background(), &b, ProtocolRemoteWrite)
	if !errors.Is(err, ErrLogUnavailable) {
		t.Fatalf("err = %v", err)
	}
	got := readLog(t, tp)
	if len(got) == 50 {
		t.Fatal("every partition appended despite the failure")
	}
	for _, s := range got {
		if len(s.Samples) != 2 {
			t.Fatalf("series %s half-appended: %v", s.Labels, s.Samples)
		}
	}
	if counterValue(set, `vigil_ingest_samples_total{protocol="remote_write"}`) != 0 {
		t.Fatal("samples counted for a failed write")
	}
}

// TestWriterOnePerPartition: a request makes exactly one Append per partition used.
func TestWriterOnePerPartition(t *testing.T) {
	_, tp := testLog(t, 4, logcore.FsyncNever)
	ft := &failingTopic{Topic: tp}
	w, set := testWriter(t, ft, nil)
	now := time.Now().UnixMilli()
	var b Batch
	for i := 0; i < 1000; i++ {
		addSeries(&b, []string{"__name__", "m", "i", fmt.Sprint(i)}, sample.Sample{T: now, V: float64(i)})
	}
	res, err := w.Write(context.Background(), &b, ProtocolNATS)
	if err != nil || res.Samples != 1000 {
		t.Fatal(err, res.Samples)
	}
	if ft.calls != 4 {
		t.Fatalf("%d appends, want 4", ft.calls)
	}
	for p := 0; p < 4; p++ {
		if st := tp.Stats(p); st.EndOffset == 0 {
			t.Fatalf("partition %d empty", p)
		}
	}
	if got := readLog(t, tp); len(got) != 1000 {
		t.Fatalf("%d series in log", len(got))
	}
	if counterValue(set, `vigil_ingest_samples_total{protocol="nats"}`) != 1000 {
		t.Fatal("nats samples not counted")
	}
}

func TestWriterAcquire(t *testing.T) {
	_, tp := testLog(t, 1, logcore.FsyncNever)
	w, _ := testWriter(t, tp, func(l *config.LimitsConfig) { l.MaxInflightBytes = 100 })
	if err := w.Acquire(60); err != nil {
		t.Fatal(err)
	}
	if err := w.Acquire(60); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("second acquire: %v", err)
	}
	w.Release(60)
	if err := w.Acquire(1000); err != nil { // bigger than the budget, alone: admitted
		t.Fatal(err)
	}
	w.Release(1000)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 1000; j++ {
				if w.Acquire(10) == nil {
					w.Release(10)
				}
			}
		}()
	}
	wg.Wait()
	if w.inflight.Load() != 0 {
		t.Fatalf("in flight %d after all releases", w.inflight.Load())
	}
}

func TestWriterBackpressureFromDownstream(t *testing.T) {
	_, tp := testLog(t, 1, logcore.FsyncNever)
	w, _ := testWriter(t, tp, nil)
	var behind atomic.Bool
	w.SetBackpressure(func() error {
		if behind.Load() {
			return errors.New("store behind")
		}
		return nil
	})
	if err := w.Acquire(10); err != nil {
		t.Fatalf("acquire while caught up: %v", err)
	}
	w.Release(10)
	behind.Store(true)
	err := w.Acquire(10)
	if !errors.Is(err, ErrOverloaded) || !strings.Contains(err.Error(), "store behind") {
		t.Fatalf("acquire while behind: %v, want ErrOverloaded naming the stage", err)
	}
	behind.Store(false)
	if err := w.Acquire(10); err != nil {
		t.Fatalf("acquire after catching up: %v", err)
	}
	w.Release(10)
	w.SetBackpressure(nil)
	behind.Store(true)
	if err := w.Acquire(10); err != nil {
		t.Fatalf("acquire with backpressure removed: %v", err)
	}
}
