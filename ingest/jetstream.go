package ingest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/internal/wait"
	"github.com/vigilhq/vigil/logcore"
)

// jsStateTopic is the compacted topic holding, per stream and consumer, the stream
// sequences of messages whose series are (wholly or partly) in the log but whose ack is
// not known to have reached the server. A redelivery of such a message is acked
// without appending again, or only appends the partitions still missing.
//
// Record: key "<stream>/<consumer>", value = version byte 2, nends:uvarint, then the
// samples topic's partition end offsets when the record was written (uvarint each),
// then per entry seq:uvarint complete:byte [nparts:uvarint part:uvarint*] (parts only
// when not complete). Version 1 records, written before, have no end offsets.
//
// The state is appended after the samples and before the acks. The samples records
// that the consumer appends carry its messages' sequences in their key (jsRecordKey),
// so a crash between the two appends loses nothing of the state: on start the consumer
// reads the samples appended after the end offsets of its last state record and takes
// from their keys which messages' series are in which partitions. Every failure
// (append error, lost ack, crash, restart) lands each message exactly once.
const jsStateTopic = "ingest-jetstream"

type jsEntry struct {
	complete bool
	parts    map[int]bool
}

type jsConsumer struct {
	n         *NATSIngest
	cons      jetstream.Consumer
	key       []byte
	topic     logcore.Topic
	samples   logcore.Topic
	keyPrefix []byte // of the samples records' keys (jsRecordKey)
	state     map[uint64]*jsEntry
	persisted time.Time
	dirty     bool
	batch     int
	fetchWait time.Duration
	backoff   time.Duration
	dropAck   func(seq uint64) bool // NATSOptions.dropAck
}

func newJSConsumer(ctx context.Context, n *NATSIngest) (*jsConsumer, error) {
	cfg := n.opts.Config.JetStream
	if n.opts.Log == nil {
		return nil, errors.New("ingest: NATSOptions.Log is needed for JetStream")
	}
	js, err := jetstream.New(n.opts.Conn)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	inflight := cfg.MaxInFlight
	if inflight <= 0 {
		inflight = 1024
	}
	ackWait := cfg.AckWait.D()
	if ackWait <= 0 {
		ackWait = 30 * time.Second
	}
	name := cfg.Consumer
	if name == "" {
		name = "vigil"
	}
	cons, err := js.CreateOrUpdateConsumer(cctx, cfg.Stream, jetstream.ConsumerConfig{
		Durable:       name,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxAckPending: inflight,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("jetstream consumer %q on stream %q (nats.jetstream): %w", name, cfg.Stream, err)
	}
	topic, err := n.opts.Log.Topic(jsStateTopic, logcore.TopicConfig{Partitions: 1, Compacted: true})
	if err != nil {
		return nil, fmt.Errorf("open topic %s: %w", jsStateTopic, err)
	}
	c := &jsConsumer{
		n: n, cons: cons, topic: topic, samples: n.opts.Writer.topic,
		key:       []byte(cfg.Stream + "/" + name),
		keyPrefix: []byte(jsKeyMagic + cfg.Stream + "/" + name + "\x00"),
		state:     map[uint64]*jsEntry{},
		batch:     min(inflight, natsBatchMessages),
		dropAck:   n.opts.dropAck,
		fetchWait: min(time.Second, ackWait/4),
	}
	ends, err := c.load()
	if err != nil {
		return nil, err
	}
	if err := c.scanSamples(ends); err != nil {
		return nil, err
	}
	// A state record at once, so that the next start reads the samples from here on.
	c.dirty = true
	if info, err := cons.Info(cctx); err == nil {
		for seq := range c.state {
			if seq <= info.AckFloor.Stream {
				delete(c.state, seq) // acked: can never come back
				c.dirty = true
			}
		}
	}
	if err := c.persist(ctx); err != nil {
		return nil, fmt.Errorf("append to %s: %w", jsStateTopic, err)
	}
	return c, nil
}

// jsKeyMagic starts the key of the samples records the JetStream consumer appends.
const jsKeyMagic = "vigil-jetstream\x00"

// jsRecordKey appends to dst the key of samples records holding the series of msgs:
// prefix (jsKeyMagic, stream/consumer, NUL), then the count and the stream sequences
// of msgs as uvarints.
func jsRecordKey(dst, prefix []byte, msgs []*inMsg) []byte {
	dst = append(dst, prefix...)
	dst = binary.AppendUvarint(dst, uint64(len(msgs)))
	for _, m := range msgs {
		dst = binary.AppendUvarint(dst, m.seq)
	}
	return dst
}

// parseJSRecordKey returns the sequences of a key made by jsRecordKey with prefix, or
// false when the key is not one.
func parseJSRecordKey(key, prefix []byte) ([]uint64, bool) {
	if !bytes.HasPrefix(key, prefix) {
		return nil, false
	}
	b := key[len(prefix):]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return nil, false
	}
	b = b[k:]
	seqs := make([]uint64, 0, n)
	for i := uint64(0); i < n; i++ {
		s, k := binary.Uvarint(b)
		if k <= 0 {
			return nil, false
		}
		seqs = append(seqs, s)
		b = b[k:]
	}
	return seqs, len(b) == 0
}

// scanSamples reads the samples appended since the last state record (its end
// offsets, ends) and notes, from their keys, which partitions hold which of our messages'
// series: the appends a crash kept from the state. Without a version 2 state record
// there is nothing to start from, and nothing is read.
func (c *jsConsumer) scanSamples(ends []int64) error {
	for p, from := range ends {
		if p >= c.samples.Partitions() {
			break
		}
		st := c.samples.Stats(p)
		for off := max(from, st.StartOffset); off < st.EndOffset; {
			recs, err := c.samples.Read(p, off, 1<<20, nil)
			if err != nil {
				return fmt.Errorf("read samples partition %d at offset %d: %w", p, off, err)
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				off = r.Offset + 1
				seqs, ok := parseJSRecordKey(r.Key, c.keyPrefix)
				if !ok {
					continue
				}
				for _, seq := range seqs {
					e := c.state[seq]
					if e == nil {
						e = &jsEntry{parts: map[int]bool{}}
						c.state[seq] = e
					}
					if !e.complete {
						e.parts[p] = true
					}
				}
			}
		}
	}
	return nil
}

// load rebuilds the state from the compacted topic, the latest record for our key
// winning, and returns the samples end offsets that record noted (nil: none).
func (c *jsConsumer) load() ([]int64, error) {
	st := c.topic.Stats(0)
	var last []byte
	for off := st.StartOffset; off < st.EndOffset; {
		recs, err := c.topic.Read(0, off, 1<<20, nil)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", jsStateTopic, err)
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			if string(r.Key) == string(c.key) {
				last = append(last[:0], r.Value...)
			}
			off = r.Offset + 1
		}
	}
	if len(last) == 0 {
		return nil, nil
	}
	state, ends, err := decodeJSState(last)
	if err != nil {
		return nil, fmt.Errorf("%s record for %s: %w", jsStateTopic, c.key, err)
	}
	c.state = state
	return ends, nil
}

func encodeJSState(state map[uint64]*jsEntry, ends []int64) []byte {
	seqs := make([]uint64, 0, len(state))
	for s := range state {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	b := []byte{2}
	b = binary.AppendUvarint(b, uint64(len(ends)))
	for _, e := range ends {
		b = binary.AppendUvarint(b, uint64(e))
	}
	for _, s := range seqs {
		e := state[s]
		b = binary.AppendUvarint(b, s)
		if e.complete {
			b = append(b, 1)
			continue
		}
		b = append(b, 0)
		parts := make([]int, 0, len(e.parts))
		for p := range e.parts {
			parts = append(parts, p)
		}
		slices.Sort(parts)
		b = binary.AppendUvarint(b, uint64(len(parts)))
		for _, p := range parts {
			b = binary.AppendUvarint(b, uint64(p))
		}
	}
	return b
}

func decodeJSState(b []byte) (map[uint64]*jsEntry, []int64, error) {
	if len(b) == 0 || (b[0] != 1 && b[0] != 2) {
		return nil, nil, errors.New("unknown version")
	}
	version := b[0]
	b = b[1:]
	state := map[uint64]*jsEntry{}
	next := func() (uint64, error) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, errors.New("truncated")
		}
		b = b[n:]
		return v, nil
	}
	var ends []int64
	if version == 2 {
		n, err := next()
		if err != nil || n > uint64(len(b)) {
			return nil, nil, errors.New("truncated")
		}
		ends = make([]int64, n)
		for i := range ends {
			v, err := next()
			if err != nil || v > math.MaxInt64 {
				return nil, nil, errors.New("truncated end offsets")
			}
			ends[i] = int64(v)
		}
	}
	for len(b) > 0 {
		seq, err := next()
		if err != nil || len(b) == 0 {
			return nil, nil, errors.New("truncated")
		}
		e := &jsEntry{complete: b[0] == 1}
		b = b[1:]
		if !e.complete {
			np, err := next()
			if err != nil || np > uint64(len(b)) {
				return nil, nil, errors.New("truncated")
			}
			e.parts = make(map[int]bool, np)
			for i := uint64(0); i < np; i++ {
				p, err := next()
				if err != nil {
					return nil, nil, err
				}
				e.parts[int(p)] = true
			}
		}
		state[seq] = e
	}
	return state, ends, nil
}

func (c *jsConsumer) persist(ctx context.Context) error {
	if !c.dirty {
		return nil
	}
	if f := c.n.opts.persistFault; f != nil {
		if err := f(); err != nil {
			return err
		}
	}
	ends := make([]int64, c.samples.Partitions())
	for p := range ends {
		ends[p] = c.samples.Stats(p).EndOffset
	}
	_, err := c.topic.Append(ctx, 0, []logcore.Record{{Timestamp: time.Now().UnixMilli(), Key: c.key, Value: encodeJSState(c.state, ends)}})
	if err == nil {
		c.dirty, c.persisted = false, time.Now()
	}
	return err
}

// jsStateRefresh is how often an idle consumer writes its state record again, so that
// the end offsets in it follow the samples topic and a start never reads more than that
// much of other writers' samples (scanSamples).
var jsStateRefresh = 10 * time.Second // a variable for tests

// refresh writes the state record again when the last one is older than
// jsStateRefresh. The state in memory reflects every append the consumer made, so
// the current end offsets may go with it.
func (c *jsConsumer) refresh(ctx context.Context) {
	if time.Since(c.persisted) < jsStateRefresh {
		return
	}
	c.dirty = true
	if err := c.persist(ctx); err != nil {
		c.n.logger.Warn("persist jetstream dedupe state", "err", err)
	}
}

func (c *jsConsumer) run(ctx context.Context) {
	nb := natsBatch{keyPrefix: c.keyPrefix}
	c.backoff = 100 * time.Millisecond
	for ctx.Err() == nil {
		select {
		case <-c.n.stopping:
			return
		default:
		}
		batch, err := c.cons.Fetch(c.batch, jetstream.FetchMaxWait(c.fetchWait))
		if err != nil {
			if ctx.Err() == nil {
				c.n.logger.Warn("jetstream fetch", "err", err)
				wait.Sleep(ctx, time.Second)
			}
			continue
		}
		var msgs []*inMsg
		seen := map[uint64]int{}
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				m.Term()
				continue
			}
			im := &inMsg{subject: m.Subject(), data: m.Data(), header: m.Headers(), js: m, seq: meta.Sequence.Stream}
			// A message redelivered (ack wait passed) within one fetch: keep only the
			// latest delivery, the one an ack must answer.
			if i, ok := seen[im.seq]; ok {
				msgs[i] = im
				continue
			}
			seen[im.seq] = len(msgs)
			msgs = append(msgs, im)
		}
		if len(msgs) == 0 {
			c.refresh(ctx)
			continue
		}
		c.handle(ctx, &nb, msgs)
		c.refresh(ctx)
	}
}

// handle appends a fetched batch and then acks it; on failure it naks it.
func (c *jsConsumer) handle(ctx context.Context, nb *natsBatch, msgs []*inMsg) {
	// Redeliveries of messages already wholly appended: only ack.
	todo := msgs[:0:0]
	for _, m := range msgs {
		if e := c.state[m.seq]; e != nil {
			if e.complete {
				c.ack(ctx, m)
				continue
			}
			m.parts = e.parts
		}
		todo = append(todo, m)
	}
	if len(todo) == 0 {
		c.persist(ctx)
		return
	}
	err := c.n.processAll(ctx, nb, todo)
	if err != nil {
		// Remember what did land, so that the redelivery completes it without duplicates.
		for _, m := range todo {
			if len(m.parts) > 0 {
				c.state[m.seq] = &jsEntry{parts: m.parts}
				c.dirty = true
			}
		}
		if perr := c.persist(ctx); perr != nil {
			c.n.logger.Warn("persist jetstream dedupe state", "err", perr)
		}
		c.n.logger.Warn("jetstream batch not appended; messages will be redelivered", "messages", len(todo), "err", err, "retry_in", c.backoff)
		for _, m := range todo {
			m.js.NakWithDelay(c.backoff)
		}
		c.backoff = min(2*c.backoff, 5*time.Second)
		return
	}
	c.backoff = 100 * time.Millisecond
	for _, m := range todo {
		c.state[m.seq] = &jsEntry{complete: true}
	}
	c.dirty = true
	if err := c.persist(ctx); err != nil {
		c.n.logger.Warn("persist jetstream dedupe state", "err", err)
	}
	for _, m := range todo {
		if m.err != nil {
			c.n.deadLetter(m)
		} else {
			c.n.good.Inc()
		}
		c.ack(ctx, m)
	}
	// The entries dropped by confirmed acks are persisted with the next batch's state
	// (and entries at or below the ack floor are dropped on start).
}

// ack acks m and waits for the server's confirmation; once confirmed, m cannot be
// redelivered and its dedupe entry is dropped.
func (c *jsConsumer) ack(ctx context.Context, m *inMsg) {
	if c.dropAck != nil && c.dropAck(m.seq) {
		return
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var err error
	if m.err != nil && len(m.parts) == 0 && m.rejected == 0 {
		err = m.js.Term() // nothing of it decoded: do not redeliver
	} else {
		err = m.js.DoubleAck(actx)
	}
	if err == nil {
		delete(c.state, m.seq)
		c.dirty = true
	}
}
