package ingest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
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
// Record: key "<stream>/<consumer>", value = version byte 1, then per entry
// seq:uvarint complete:byte [nparts:uvarint part:uvarint*] (parts only when not complete).
//
// The state is appended after the samples and before the acks. A crash between the
// two appends can still duplicate that batch's messages on redelivery; every other
// failure (append error, lost ack, restart) lands each message exactly once.
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
	state     map[uint64]*jsEntry
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
		n: n, cons: cons, topic: topic,
		key:       []byte(cfg.Stream + "/" + name),
		state:     map[uint64]*jsEntry{},
		batch:     min(inflight, natsBatchMessages),
		dropAck:   n.opts.dropAck,
		fetchWait: min(time.Second, ackWait/4),
	}
	if err := c.load(); err != nil {
		return nil, err
	}
	if info, err := cons.Info(cctx); err == nil {
		for seq := range c.state {
			if seq <= info.AckFloor.Stream {
				delete(c.state, seq) // acked: can never come back
				c.dirty = true
			}
		}
	}
	return c, nil
}

// load rebuilds the state from the compacted topic: the latest record for our key wins.
func (c *jsConsumer) load() error {
	st := c.topic.Stats(0)
	var last []byte
	for off := st.StartOffset; off < st.EndOffset; {
		recs, err := c.topic.Read(0, off, 1<<20, nil)
		if err != nil {
			return fmt.Errorf("read %s: %w", jsStateTopic, err)
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
		return nil
	}
	state, err := decodeJSState(last)
	if err != nil {
		return fmt.Errorf("%s record for %s: %w", jsStateTopic, c.key, err)
	}
	c.state = state
	return nil
}

func encodeJSState(state map[uint64]*jsEntry) []byte {
	seqs := make([]uint64, 0, len(state))
	for s := range state {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	b := []byte{1}
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

func decodeJSState(b []byte) (map[uint64]*jsEntry, error) {
	if len(b) == 0 || b[0] != 1 {
		return nil, errors.New("unknown version")
	}
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
	for len(b) > 0 {
		seq, err := next()
		if err != nil || len(b) == 0 {
			return nil, errors.New("truncated")
		}
		e := &jsEntry{complete: b[0] == 1}
		b = b[1:]
		if !e.complete {
			np, err := next()
			if err != nil || np > uint64(len(b)) {
				return nil, errors.New("truncated")
			}
			e.parts = make(map[int]bool, np)
			for i := uint64(0); i < np; i++ {
				p, err := next()
				if err != nil {
					return nil, err
				}
				e.parts[int(p)] = true
			}
		}
		state[seq] = e
	}
	return state, nil
}

func (c *jsConsumer) persist(ctx context.Context) error {
	if !c.dirty {
		return nil
	}
	_, err := c.topic.Append(ctx, 0, []logcore.Record{{Timestamp: time.Now().UnixMilli(), Key: c.key, Value: encodeJSState(c.state)}})
	if err == nil {
		c.dirty = false
	}
	return err
}

func (c *jsConsumer) run(ctx context.Context) {
	var nb natsBatch
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
			continue
		}
		c.handle(ctx, &nb, msgs)
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
