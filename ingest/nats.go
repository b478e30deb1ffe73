package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/logcore"
)

// NATS ingest: core subscriptions in a queue group, and a JetStream pull consumer.
//
// Messages are taken in batches (up to natsBatchMessages or natsBatchBytes), decoded,
// and written with one Writer.Write per batch. A message that does not decode, or whose
// series are rejected, is counted, logged (at most once per second), and copied to the
// dead-letter subject with its error in the Vigil-Error header; it never blocks the
// good messages of its batch.
//
// Core NATS is at-most-once: a message is gone once received, so a failed append is
// retried (with backoff) until it succeeds or the consumer stops. JetStream messages
// are acked only after their series are in the log; on failure they are Nak'ed and
// redelivered. Redeliveries are deduplicated with the stream sequence numbers of
// messages already appended (see jsState), so a message lands in the log once.

const (
	natsBatchMessages = 1024
	natsBatchBytes    = 8 << 20
	// HeaderError carries a dead-lettered message's error.
	HeaderError = "Vigil-Error"
	// HeaderSubject carries a dead-lettered message's original subject.
	HeaderSubject = "Vigil-Subject"
)

// Payload formats of NATS messages.
const (
	FormatJSON   = "json"
	FormatInflux = "influx"
)

// NATSOptions configure NATS ingest.
type NATSOptions struct {
	Conn   *nats.Conn
	Config config.NATSConfig
	Writer *Writer
	// Log holds the JetStream dedupe state (compacted topic "ingest-jetstream").
	// Required when Config.JetStream.Stream is set.
	Log     logcore.Log
	Logger  *slog.Logger
	Metrics *metrics.Set

	// dropAck, when set (tests), makes the JetStream consumer skip acking a message,
	// as if the ack were lost.
	dropAck func(seq uint64) bool
	// persistFault, when set (tests), is called before each JetStream state record is
	// appended; an error stands for a failed append (or a crash before it).
	persistFault func() error
}

// NATSIngest is running NATS ingest. Stop it with Stop.
type NATSIngest struct {
	opts   NATSOptions
	logger *slog.Logger
	cancel context.CancelFunc
	// stopping is closed by Stop: loops finish their batch and return.
	stopping chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	subs     []*nats.Subscription

	good, bad, deadLettered *metrics.Counter

	logMu      sync.Mutex
	lastLog    time.Time
	suppressed int

	js *jsConsumer
}

// StartNATS subscribes to the configured subjects (queue group Config.QueueGroup) and,
// when Config.JetStream.Stream is set, starts pull-consuming that stream with the
// durable consumer Config.JetStream.Consumer (created if absent).
func StartNATS(ctx context.Context, opts NATSOptions) (*NATSIngest, error) {
	if opts.Conn == nil || opts.Writer == nil {
		return nil, errors.New("ingest: NATSOptions needs Conn and Writer")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.NewSet()
	}
	for pat, f := range opts.Config.Formats {
		if f != FormatJSON && f != FormatInflux {
			return nil, fmt.Errorf("nats.formats[%q]: %q is not json or influx", pat, f)
		}
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n := &NATSIngest{
		opts:         opts,
		logger:       opts.Logger,
		cancel:       cancel,
		stopping:     make(chan struct{}),
		good:         opts.Metrics.GetOrCreateCounter(`vigil_ingest_nats_messages_total{result="ok"}`),
		bad:          opts.Metrics.GetOrCreateCounter(`vigil_ingest_nats_messages_total{result="bad"}`),
		deadLettered: opts.Metrics.GetOrCreateCounter(`vigil_ingest_nats_deadlettered_total`),
	}
	if len(opts.Config.Subjects) > 0 {
		ch := make(chan *nats.Msg, 4*natsBatchMessages)
		for _, subj := range opts.Config.Subjects {
			sub, err := opts.Conn.ChanQueueSubscribe(subj, opts.Config.QueueGroup, ch)
			if err != nil {
				n.Stop(context.Background())
				return nil, fmt.Errorf("subscribe to nats subject %q: %w", subj, err)
			}
			n.subs = append(n.subs, sub)
		}
		if err := opts.Conn.Flush(); err != nil {
			n.Stop(context.Background())
			return nil, fmt.Errorf("nats subscribe: %w", err)
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.runCore(ctx, ch)
		}()
	}
	if opts.Config.JetStream.Stream != "" {
		js, err := newJSConsumer(ctx, n)
		if err != nil {
			n.Stop(context.Background())
			return nil, err
		}
		n.js = js
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			js.run(ctx)
		}()
	}
	return n, nil
}

// Stop unsubscribes, lets the batch in progress finish (or ctx end), and returns.
func (n *NATSIngest) Stop(ctx context.Context) error {
	for _, s := range n.subs {
		s.Unsubscribe()
	}
	n.stopOnce.Do(func() { close(n.stopping) })
	done := make(chan struct{})
	go func() {
		n.wg.Wait()
		close(done)
	}()
	// Give the batch in progress time to finish before cancelling it.
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	case <-ctx.Done():
	}
	n.cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// inMsg is one message of a batch, core or JetStream.
type inMsg struct {
	subject string
	data    []byte
	header  nats.Header
	js      jetstream.Msg
	seq     uint64
	// set by processing
	err      error // decode error or rejection summary
	rejected int
	// parts are the partitions its series are known to be in the log for, from
	// earlier attempts or deliveries; process skips them and adds to them.
	parts map[int]bool
}

// natsBatch is the reusable state of one consumer loop.
type natsBatch struct {
	b      Batch
	influx InfluxDecoder
	// keyPrefix, when set (JetStream), makes process key the records it appends with
	// jsRecordKey: the prefix and the stream sequences of the messages written.
	keyPrefix []byte
	key       []byte
}

// format picks a message's payload format: its Content-Type header, else the first
// matching nats.formats pattern, else a sniff (JSON if it starts with { or [).
func (n *NATSIngest) format(m *inMsg) (string, error) {
	if ct := m.header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil {
			return "", fmt.Errorf("bad Content-Type %q: %v", ct, err)
		}
		switch mt {
		case "application/json":
			return FormatJSON, nil
		case "text/plain", "application/x-influx", "application/x-influxdb-line-protocol", "text/x-influx":
			return FormatInflux, nil
		}
		return "", fmt.Errorf("Content-Type %q is not supported; use application/json or text/plain (Influx line protocol)", ct)
	}
	for pat, f := range n.opts.Config.Formats {
		if subjectMatches(pat, m.subject) {
			return f, nil
		}
	}
	for _, c := range m.data {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{', '[':
			return FormatJSON, nil
		}
		break
	}
	return FormatInflux, nil
}

// subjectMatches matches a NATS subject against a pattern with * and > wildcards.
func subjectMatches(pattern, subject string) bool {
	pt, st := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, p := range pt {
		if p == ">" {
			return len(st) > i
		}
		if i >= len(st) || (p != "*" && p != st[i]) {
			return false
		}
	}
	return len(pt) == len(st)
}

// process decodes msgs into nb and writes them with one Write, leaving out each
// message's series in partitions already in its parts (appended by an earlier attempt
// or delivery). It sets each message's err and rejected, and adds to its parts; the
// returned error is the Write's (ErrOverloaded, ErrLogUnavailable), after which
// process may be called again with the same messages without duplicating series.
func (n *NATSIngest) process(ctx context.Context, nb *natsBatch, msgs []*inMsg) error {
	b := &nb.b
	b.Reset()
	nb.influx.Reset()
	now := time.Now().UnixMilli()
	var size int64
	for i, m := range msgs {
		m.err, m.rejected = nil, 0
		size += int64(len(m.data))
		f, err := n.format(m)
		if err == nil {
			if f == FormatJSON {
				err = DecodeJSON(b, m.data, now, int32(i))
			} else {
				err = nb.influx.Decode(b, m.data, now, int32(i))
			}
		}
		if err != nil {
			n.opts.Writer.Reject(ReasonDecode)
			m.err = fmt.Errorf("%s payload on %q: %w", f, m.subject, err)
		}
	}
	b.SetDecodedBytes(int(size))
	if nb.keyPrefix != nil {
		nb.key = jsRecordKey(nb.key[:0], nb.keyPrefix, msgs)
		b.RecordKey = nb.key
	}
	// The decoded batch is about three times the payload in memory.
	if err := n.opts.Writer.Acquire(3 * size); err != nil {
		return err
	}
	defer n.opts.Writer.Release(3 * size)
	n.opts.Writer.beginWork()
	defer n.opts.Writer.endWork()
	skip := func(i, p int) bool { return msgs[b.Source[i]].parts[p] }
	res, err := n.opts.Writer.WriteSkipping(ctx, b, ProtocolNATS, skip)
	for i := range b.Series {
		m := msgs[b.Source[i]]
		if p := b.Partition(i); p >= 0 {
			if m.parts == nil {
				m.parts = map[int]bool{}
			}
			m.parts[p] = true
		}
	}
	if err != nil {
		return err
	}
	if res.Rejected.Total() > 0 {
		for i := range b.Series {
			if b.Partition(i) == -1 {
				msgs[b.Source[i]].rejected++
			}
		}
		for _, m := range msgs {
			if m.rejected > 0 && m.err == nil {
				m.err = fmt.Errorf("%d series of the message on %q rejected; in the request: %s", m.rejected, m.subject, res.Rejected.String())
			}
		}
	}
	return nil
}

// processAll is process, falling back to one Write per message when the batch is
// refused as a whole (too many series): a message refused on its own is bad.
func (n *NATSIngest) processAll(ctx context.Context, nb *natsBatch, msgs []*inMsg) error {
	err := n.process(ctx, nb, msgs)
	var re *RequestError
	if !errors.As(err, &re) {
		return err
	}
	for _, m := range msgs {
		one := []*inMsg{m}
		if err := n.process(ctx, nb, one); err != nil {
			if !errors.As(err, &re) {
				return err
			}
			m.err = fmt.Errorf("message on %q: %w", m.subject, err)
		}
	}
	return nil
}

// deadLetter counts a bad message, logs it (rate-limited) and copies it to the
// dead-letter subject with its error.
func (n *NATSIngest) deadLetter(m *inMsg) {
	n.bad.Inc()
	n.logMu.Lock()
	if time.Since(n.lastLog) >= time.Second {
		n.logger.Warn("bad nats message", "subject", m.subject, "err", m.err, "suppressed_since_last", n.suppressed)
		n.lastLog, n.suppressed = time.Now(), 0
	} else {
		n.suppressed++
	}
	n.logMu.Unlock()
	subj := n.opts.Config.DeadLetterSubject
	if subj == "" {
		return
	}
	msg := nats.NewMsg(subj)
	for k, v := range m.header {
		msg.Header[k] = v
	}
	errText := m.err.Error()
	if len(errText) > 1024 {
		errText = errText[:1024]
	}
	msg.Header.Set(HeaderError, errText)
	msg.Header.Set(HeaderSubject, m.subject)
	msg.Data = m.data
	if err := n.opts.Conn.PublishMsg(msg); err == nil {
		n.deadLettered.Inc()
	}
}

// runCore consumes the core subscriptions' channel in batches.
func (n *NATSIngest) runCore(ctx context.Context, ch chan *nats.Msg) {
	var nb natsBatch
	var msgs []*inMsg
	var pool []inMsg
	for {
		var first *nats.Msg
		select {
		case first = <-ch:
		case <-ctx.Done():
			return
		case <-n.stopping:
			select {
			case first = <-ch: // what was received before the unsubscribe
			default:
				return
			}
		}
		msgs, pool = msgs[:0], pool[:0]
		size := 0
		add := func(m *nats.Msg) {
			pool = append(pool, inMsg{subject: m.Subject, data: m.Data, header: m.Header})
			size += len(m.Data)
		}
		add(first)
	drain:
		for len(pool) < natsBatchMessages && size < natsBatchBytes {
			select {
			case m := <-ch:
				add(m)
			default:
				break drain
			}
		}
		for i := range pool {
			msgs = append(msgs, &pool[i])
		}
		backoff := 50 * time.Millisecond
		for {
			err := n.processAll(ctx, &nb, msgs)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				n.logger.Warn("nats ingest stopped with a batch not appended", "messages", len(msgs), "err", err)
				return
			}
			// Core NATS cannot redeliver: retry the batch until the log takes it.
			n.logger.Warn("nats batch not appended; retrying", "messages", len(msgs), "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, 5*time.Second)
		}
		for _, m := range msgs {
			if m.err != nil {
				n.deadLetter(m)
			} else {
				n.good.Inc()
			}
		}
		clear(pool)
	}
}
