package ingest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/logcore"
	"github.com/vigilhq/vigil/sample"
)

func startNATSServer(t *testing.T) *nats.Conn {
	t.Helper()
	srv, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func natsConfig() config.NATSConfig {
	c := config.Default().NATS
	c.JetStream.AckWait = config.Duration(time.Second)
	return c
}

// waitFor polls cond until it holds or 20 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func logNames(t *testing.T, tp logcore.Topic) map[string]int {
	out := map[string]int{}
	for _, s := range readLog(t, tp) {
		out[s.Labels] += len(s.Samples)
	}
	return out
}

func TestNATSCore(t *testing.T) {
	nc := startNATSServer(t)
	l, tp := testLog(t, 4, logcore.FsyncAlways)
	w, set := testWriter(t, tp, nil)
	cfg := natsConfig()
	cfg.Formats = map[string]string{"metrics.telegraf.*": "influx"}
	dl, err := nc.SubscribeSync(cfg.DeadLetterSubject)
	if err != nil {
		t.Fatal(err)
	}
	ni, err := StartNATS(context.Background(), NATSOptions{Conn: nc, Config: cfg, Writer: w, Log: l, Metrics: set})
	if err != nil {
		t.Fatal(err)
	}
	defer ni.Stop(context.Background())
	pub := func(subj, ct, data string) {
		m := nats.NewMsg(subj)
		if ct != "" {
			m.Header.Set("Content-Type", ct)
		}
		m.Data = []byte(data)
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	pub("metrics.app", "", `{"name":"jobs_done","labels":{"app":"a"},"value":3}`)
	pub("metrics.app", "application/json", `[{"name":"q_len","value":1},{"name":"q_len","labels":{"q":"b"},"value":2}]`)
	pub("metrics.telegraf.h1", "", "cpu,host=h1 usage_idle=99,usage_user=1")
	pub("metrics.other", "text/plain; charset=utf-8", "mem,host=h1 used=5i")
	pub("metrics.bad", "", `{"name":"x"}`)
	pub("metrics.bad", "application/xml", `<x/>`)
	pub("metrics.bad", "", `{"name":"bad name","value":1}`) // fine under utf8: accepted
	pub("metrics.app", "", `{"name":"after_bad","value":1}`)
	want := []string{
		`{__name__="jobs_done", app="a"}`, `{__name__="q_len"}`, `{__name__="q_len", q="b"}`,
		`{__name__="cpu_usage_idle", host="h1"}`, `{__name__="cpu_usage_user", host="h1"}`,
		`{__name__="mem_used", host="h1"}`, `{__name__="bad name"}`, `{__name__="after_bad"}`,
	}
	waitFor(t, "all good series in the log", func() bool { return len(logNames(t, tp)) == len(want) })
	got := logNames(t, tp)
	for _, s := range want {
		if got[s] != 1 {
			t.Fatalf("series %s: %d samples in the log; log: %v", s, got[s], got)
		}
	}
	for _, wantErr := range []string{"no value", `Content-Type "application/xml" is not supported`} {
		m, err := dl.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("dead letter for %q: %v", wantErr, err)
		}
		if !strings.Contains(m.Header.Get(HeaderError), wantErr) || m.Header.Get(HeaderSubject) != "metrics.bad" {
			t.Fatalf("dead letter %q headers %v, want %q", m.Data, m.Header, wantErr)
		}
	}
	if n := counterValue(set, `vigil_ingest_nats_messages_total{result="bad"}`); n != 2 {
		t.Fatalf("bad messages %d", n)
	}
	if n := counterValue(set, `vigil_ingest_samples_total{protocol="nats"}`); n != uint64(len(want)) {
		t.Fatalf("nats samples %d", n)
	}
}

func TestSubjectMatches(t *testing.T) {
	f := func(pat, subj string, want bool) {
		t.Helper()
		if subjectMatches(pat, subj) != want {
			t.Fatalf("%q ~ %q: want %v", pat, subj, want)
		}
	}
	f("metrics.>", "metrics.a.b", true)
	f("metrics.>", "metrics", false)
	f("metrics.*", "metrics.a", true)
	f("metrics.*", "metrics.a.b", false)
	f("telegraf", "telegraf", true)
	f("a.*.c", "a.b.c", true)
	f("a.*.c", "a.b.d", false)
}

type jsFixture struct {
	t   *testing.T
	nc  *nats.Conn
	js  jetstream.JetStream
	l   *logcore.FileLog
	tp  logcore.Topic
	ft  *failingTopic
	w   *Writer
	cfg config.NATSConfig
	// lastSeq is the stream sequence of the latest message published.
	lastSeq uint64
}

func newJSFixture(t *testing.T) *jsFixture {
	nc := startNATSServer(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "METRICS", Subjects: []string{"js.>"}}); err != nil {
		t.Fatal(err)
	}
	l, tp := testLog(t, 8, logcore.FsyncAlways)
	ft := &failingTopic{Topic: tp}
	w, _ := testWriter(t, ft, nil)
	cfg := natsConfig()
	cfg.Subjects = nil
	cfg.JetStream.Stream = "METRICS"
	return &jsFixture{t: t, nc: nc, js: js, l: l, tp: tp, ft: ft, w: w, cfg: cfg}
}

func (fx *jsFixture) start(dropAck func(uint64) bool) *NATSIngest {
	fx.t.Helper()
	return fx.startWith(NATSOptions{dropAck: dropAck})
}

// startWith starts the consumer with opts' test hooks.
func (fx *jsFixture) startWith(opts NATSOptions) *NATSIngest {
	fx.t.Helper()
	opts.Conn, opts.Config, opts.Writer, opts.Log = fx.nc, fx.cfg, fx.w, fx.l
	ni, err := StartNATS(context.Background(), opts)
	if err != nil {
		fx.t.Fatal(err)
	}
	return ni
}

func (fx *jsFixture) publish(subj, data string) {
	fx.t.Helper()
	ack, err := fx.js.Publish(context.Background(), subj, []byte(data))
	if err != nil {
		fx.t.Fatal(err)
	}
	fx.lastSeq = max(fx.lastSeq, ack.Sequence)
}

func (fx *jsFixture) acked() bool {
	c, err := fx.js.Consumer(context.Background(), "METRICS", "vigil")
	if err != nil {
		return false
	}
	info, err := c.Info(context.Background())
	// The ack floor, not only the pending counts: the server may count a message just
	// published as pending a moment after the publish was acknowledged.
	return err == nil && info.AckFloor.Stream >= fx.lastSeq && info.NumAckPending == 0 && info.NumPending == 0
}

func TestJetStreamJSONAndInflux(t *testing.T) {
	fx := newJSFixture(t)
	ni := fx.start(nil)
	defer ni.Stop(context.Background())
	fx.publish("js.app", `{"name":"a","value":1}`)
	fx.publish("js.telegraf", fmt.Sprintf("cpu,host=h usage_idle=1,usage_user=2 %d", time.Now().UnixNano()))
	fx.publish("js.bad", "not json nor influx")
	waitFor(t, "3 series", func() bool { return len(logNames(t, fx.tp)) == 3 })
	waitFor(t, "all acked", fx.acked)
	got := logNames(t, fx.tp)
	for _, s := range []string{`{__name__="a"}`, `{__name__="cpu_usage_idle", host="h"}`, `{__name__="cpu_usage_user", host="h"}`} {
		if got[s] != 1 {
			t.Fatalf("%s: %v", s, got)
		}
	}
}

// manySeries is a message whose series spread over every partition.
func manySeries(tag string) string {
	var sb strings.Builder
	sb.WriteByte('[')
	for i := 0; i < 64; i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"name":"m_%s","labels":{"i":"%d"},"value":%d}`, tag, i, i)
	}
	sb.WriteByte(']')
	return sb.String()
}

func checkOnce(t *testing.T, tp logcore.Topic, n int) {
	t.Helper()
	got := logNames(t, tp)
	if len(got) != n {
		t.Fatalf("%d series in the log, want %d", len(got), n)
	}
	for s, c := range got {
		if c != 1 {
			t.Fatalf("series %s has %d samples in the log, want exactly 1", s, c)
		}
	}
}

// TestJetStreamAppendFailureRedelivered: appends fail (wholly, then for one partition
// of several); the message is nak'ed, redelivered, and each series lands exactly once.
func TestJetStreamAppendFailureRedelivered(t *testing.T) {
	fx := newJSFixture(t)
	fx.ft.setFails(3) // the first delivery loses 3 of its 8 partition appends
	ni := fx.start(nil)
	defer ni.Stop(context.Background())
	fx.publish("js.app", manySeries("x"))
	waitFor(t, "acked after redelivery", fx.acked)
	checkOnce(t, fx.tp, 64)
	if fx.ft.calls <= 8 {
		t.Fatalf("only %d appends: no redelivery happened", fx.ft.calls)
	}
}

// TestJetStreamLostAckRestart: the series are appended but the ack is lost and Vigil
// restarts; the redelivery is recognized from the state in the log and not appended again.
func TestJetStreamLostAckRestart(t *testing.T) {
	fx := newJSFixture(t)
	ni := fx.start(func(uint64) bool { return true }) // every ack lost
	fx.publish("js.app", manySeries("y"))
	waitFor(t, "series in the log", func() bool { return len(logNames(t, fx.tp)) == 64 })
	if err := ni.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fx.acked() {
		t.Fatal("acked although every ack was dropped")
	}
	ni = fx.start(nil) // a fresh consumer: only the log remembers
	defer ni.Stop(context.Background())
	waitFor(t, "acked after redelivery", fx.acked)
	checkOnce(t, fx.tp, 64)
}

// TestJetStreamCrashBeforeState: the series are appended, then the state record that
// says so is lost (as in a crash between the two appends) and so is the ack; after a
// restart the keys of the samples records tell what landed, and the redelivery lands
// nothing twice.
func TestJetStreamCrashBeforeState(t *testing.T) {
	fx := newJSFixture(t)
	var persists atomic.Int32
	ni := fx.startWith(NATSOptions{
		dropAck: func(uint64) bool { return true },
		persistFault: func() error {
			if persists.Add(1) > 1 { // the record written at start goes through
				return errors.New("injected: state record lost")
			}
			return nil
		},
	})
	fx.publish("js.app", manySeries("c"))
	waitFor(t, "series in the log", func() bool { return len(logNames(t, fx.tp)) == 64 })
	if err := ni.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if persists.Load() < 2 {
		t.Fatalf("%d state records attempted, want the one after the append too", persists.Load())
	}
	ni = fx.start(nil)
	defer ni.Stop(context.Background())
	waitFor(t, "acked after redelivery", fx.acked)
	checkOnce(t, fx.tp, 64)
}

// TestJetStreamIdleRefresh: an idle consumer writes its state record again, so that
// its end offsets follow samples that other writers append and a start reads only
// what came after them.
func TestJetStreamIdleRefresh(t *testing.T) {
	old := jsStateRefresh
	jsStateRefresh = 20 * time.Millisecond
	defer func() { jsStateRefresh = old }()
	fx := newJSFixture(t)
	ni := fx.start(nil)
	defer ni.Stop(context.Background())
	var b Batch
	addSeries(&b, []string{"__name__", "other_writer"}, sample.Sample{T: time.Now().UnixMilli(), V: 1})
	if _, err := fx.w.Write(context.Background(), &b, ProtocolRemoteWrite); err != nil {
		t.Fatal(err)
	}
	ends := make([]int64, fx.tp.Partitions())
	for p := range ends {
		ends[p] = fx.tp.Stats(p).EndOffset
	}
	waitFor(t, "a state record with the new end offsets", func() bool {
		st, err := fx.l.Topic(jsStateTopic, logcore.TopicConfig{Partitions: 1, Compacted: true})
		if err != nil {
			return false
		}
		end := st.Stats(0).EndOffset
		recs, err := st.Read(0, max(0, end-1), 1<<20, nil)
		if err != nil || len(recs) == 0 {
			return false
		}
		_, got, err := decodeJSState(recs[len(recs)-1].Value)
		return err == nil && reflect.DeepEqual(got, ends)
	})
}

// TestJSStateCodec: state records round-trip, version 1 records (without end offsets)
// still load, and damaged ones are refused.
func TestJSStateCodec(t *testing.T) {
	state := map[uint64]*jsEntry{
		3: {complete: true},
		9: {parts: map[int]bool{0: true, 5: true}},
	}
	ends := []int64{0, 17, 1 << 40}
	got, gotEnds, err := decodeJSState(encodeJSState(state, ends))
	if err != nil || !reflect.DeepEqual(got, state) || !reflect.DeepEqual(gotEnds, ends) {
		t.Fatalf("round trip: %v %v %v", got, gotEnds, err)
	}
	v1 := []byte{1, 3, 1, 9, 0, 2, 0, 5}
	got, gotEnds, err = decodeJSState(v1)
	if err != nil || !reflect.DeepEqual(got, state) || gotEnds != nil {
		t.Fatalf("version 1: %v %v %v", got, gotEnds, err)
	}
	for _, bad := range [][]byte{nil, {3}, {2}, {2, 5, 1}, {1, 3}, {1, 9, 0, 4, 1}} {
		if _, _, err := decodeJSState(bad); err == nil {
			t.Fatalf("%v accepted", bad)
		}
	}
}

// FuzzJSState: the state decoder never panics, and what it accepts encodes back to a
// record that decodes the same.
func FuzzJSState(f *testing.F) {
	f.Add(encodeJSState(map[uint64]*jsEntry{1: {complete: true}, 2: {parts: map[int]bool{3: true}}}, []int64{4, 5}))
	f.Add([]byte{1, 3, 1, 9, 0, 2, 0, 5})
	f.Fuzz(func(t *testing.T, b []byte) {
		state, ends, err := decodeJSState(b)
		if err != nil {
			return
		}
		again, ends2, err := decodeJSState(encodeJSState(state, ends))
		if err != nil || !reflect.DeepEqual(again, state) || len(ends2) != len(ends) {
			t.Fatalf("re-encoded: %v %v %v, was %v %v", again, ends2, err, state, ends)
		}
	})
}

// TestJSRecordKey: the keys of the samples records name the messages' sequences and
// are told apart from other consumers' and from other keys.
func TestJSRecordKey(t *testing.T) {
	prefix := []byte(jsKeyMagic + "S/c\x00")
	key := jsRecordKey(nil, prefix, []*inMsg{{seq: 1}, {seq: 300}})
	if seqs, ok := parseJSRecordKey(key, prefix); !ok || !reflect.DeepEqual(seqs, []uint64{1, 300}) {
		t.Fatalf("%v %v", seqs, ok)
	}
	for _, other := range [][]byte{nil, []byte("x"), []byte(jsKeyMagic + "S/d\x00\x01\x01"), append(key, 0), key[:len(key)-1]} {
		if seqs, ok := parseJSRecordKey(other, prefix); ok {
			t.Fatalf("%q parsed as %v", other, seqs)
		}
	}
}

// TestNATSReconnect: the NATS server goes away and comes back on the same address; the
// subscription is restored and messages published afterwards land in the log.
func TestNATSReconnect(t *testing.T) {
	opts := &natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true}
	srv, err := natsserver.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("not ready")
	}
	port := srv.Addr().(*net.TCPAddr).Port
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	l, tp := testLog(t, 2, logcore.FsyncNever)
	w, _ := testWriter(t, tp, nil)
	ni, err := StartNATS(context.Background(), NATSOptions{Conn: nc, Config: natsConfig(), Writer: w, Log: l})
	if err != nil {
		t.Fatal(err)
	}
	defer ni.Stop(context.Background())
	srv.Shutdown()
	srv.WaitForShutdown()
	srv2, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv2.Start()
	defer srv2.Shutdown()
	if !srv2.ReadyForConnections(10 * time.Second) {
		t.Fatal("restarted server not ready")
	}
	waitFor(t, "reconnect", nc.IsConnected)
	pub, err := nats.Connect(srv2.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	// The client re-subscribes asynchronously after reconnecting: publish until it lands.
	waitFor(t, "a message after the reconnect", func() bool {
		pub.Publish("metrics.after", []byte(`{"name":"after_reconnect","value":1}`))
		pub.Flush()
		time.Sleep(50 * time.Millisecond)
		return len(logNames(t, tp)) > 0
	})
	if _, ok := logNames(t, tp)[`{__name__="after_reconnect"}`]; !ok {
		t.Fatalf("log: %v", logNames(t, tp))
	}
}
