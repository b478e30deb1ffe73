package alerting

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/PagerDuty/go-pagerduty"

	"github.com/vigilhq/vigil/logcore"
)

// OutboxTopic is the compacted topic holding undelivered notifications and the
// notification log; see doc.go for its record format.
const OutboxTopic = "outbox"

// nflogRetention is how long a notification-log entry is kept after its last
// notification (Alertmanager's default --data.retention).
const nflogRetention = 120 * time.Hour

// notification is one event to deliver, as stored in the outbox (JSON). It holds no
// secret: routing keys and webhook URLs are read from the configuration at send time,
// except when they are templates, which can only be rendered when the event is made.
type notification struct {
	Seq         uint64    `json:"seq"`
	Integration string    `json:"integration"`
	Receiver    string    `json:"receiver"`
	Kind        string    `json:"kind"`
	GroupKey    string    `json:"group_key"`
	DedupKey    string    `json:"dedup_key"`
	Action      string    `json:"action"`
	CreatedAt   time.Time `json:"created_at"`
	// Event is the PagerDuty event (kind "pagerduty").
	Event *pagerduty.V2Event `json:"event,omitempty"`
	// Body is the webhook message (kind "webhook"); URL is set only when templated.
	Body json.RawMessage `json:"body,omitempty"`
	URL  string          `json:"url,omitempty"`
}

// key is the notification's outbox record key.
func (n *notification) key() []byte {
	return []byte("o\x00" + n.Integration + "\x00" + n.DedupKey + "\x00" + fmt.Sprintf("%016x", n.Seq))
}

// nflogEntry is what was last notified for a group to an integration: the hashes of
// the alerts then firing and resolved, and when.
type nflogEntry struct {
	Firing    []uint64  `json:"firing"`
	Resolved  []uint64  `json:"resolved"`
	Timestamp time.Time `json:"ts"`
}

func nflogKey(integration, groupKey string) string {
	return "n\x00" + integration + "\x00" + groupKey
}

// pendingWrite is one integration's outcome of a flush: its new notification-log
// entry and, unless nothing is to be sent, its notification.
type pendingWrite struct {
	integration *integration
	groupKey    string
	nflog       *nflogEntry
	note        *notification
}

// outbox is the durable queue between the notification stages and the senders.
type outbox struct {
	p     *Pipeline
	topic logcore.Topic

	mu      sync.Mutex
	closed  bool // no sender starts after close
	seq     uint64
	nflog   map[string]*nflogEntry
	senders map[string]*sender
}

// openOutbox opens the outbox topic and replays it: the latest record per key wins;
// notifications without a later tombstone are pending and go back to their senders
// in their original order.
func openOutbox(p *Pipeline) (*outbox, error) {
	t, err := p.opts.Log.Topic(OutboxTopic, logcore.TopicConfig{
		Partitions: 1, Compacted: true, SegmentBytes: 8 << 20, TombstoneRetention: 24 * time.Hour,
		// Never delete by size: undelivered notifications must stay.
		RetentionBytes: 1 << 50,
	})
	if err != nil {
		return nil, fmt.Errorf("alerting: open topic %s: %w", OutboxTopic, err)
	}
	o := &outbox{p: p, topic: t, nflog: map[string]*nflogEntry{}, senders: map[string]*sender{}}
	pending := map[string]*notification{}
	skipped, err := replay(t, func(key, value []byte) error {
		k := string(key)

		switch {
		case strings.HasPrefix(k, "n\x00"):
			if len(value) == 0 {
				delete(o.nflog, k)
				return nil
			}
			var e nflogEntry
			if err := json.Unmarshal(value, &e); err != nil {
				return fmt.Errorf("notification log entry %q: %w", k, err)
			}
			o.nflog[k] = &e
		case strings.HasPrefix(k, "o\x00"):
			if i := strings.LastIndexByte(k, 0); i > 0 {
				if s, err := strconv.ParseUint(k[i+1:], 16, 64); err == nil && s >= o.seq {
					o.seq = s + 1
				}
			}
			if len(value) == 0 {
				delete(pending, k)
				return nil
			}
			var n notification
			if err := json.Unmarshal(value, &n); err != nil {
				return fmt.Errorf("outbox record %q: %w", k, err)
			}
			pending[k] = &n
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("alerting: replay %s: %w", OutboxTopic, err)
	}
	reportSkipped(p, OutboxTopic, skipped)
	list := make([]*notification, 0, len(pending))
	for _, n := range pending {
		list = append(list, n)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Seq < list[j].Seq })
	for _, n := range list {
		o.senderLocked(n.Integration, nil).push(n)
	}
	return o, nil
}

// replay reads partition 0 of t from its start to its current end. A record fn
// cannot decode is skipped (its error is returned in skipped) so that one bad
// record never keeps the pipeline from starting; err is a read error.
func replay(t logcore.Topic, fn func(key, value []byte) error) (skipped []error, err error) {
	st := t.Stats(0)
	var dst []logcore.Record
	for off := st.StartOffset; off < st.EndOffset; {
		recs, err := t.Read(0, off, 1<<20, dst[:0])
		if err != nil {
			return skipped, fmt.Errorf("read offset %d: %w", off, err)
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			if r.Offset < off {
				continue
			}
			if err := fn(r.Key, r.Value); err != nil {
				skipped = append(skipped, fmt.Errorf("offset %d: %w", r.Offset, err))
			}
			off = r.Offset + 1
		}
		dst = recs
	}
	return skipped, nil
}

// reportSkipped logs records replay could not decode.
func reportSkipped(p *Pipeline, topic string, skipped []error) {
	for i, err := range skipped {
		if i == 10 {
			p.log.Error("more undecodable records skipped", "topic", topic, "count", len(skipped)-i)
			break
		}
		p.log.Error("undecodable record skipped", "topic", topic, "err", err)
	}
}

// nflogEntry returns the last notification logged for the group and integration.
func (o *outbox) nflogEntry(integration, groupKey string) *nflogEntry {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.nflog[nflogKey(integration, groupKey)]
}

// enqueue writes a flush's notifications and notification-log entries to the log
// as one batch (so after a crash either both are there or neither), then hands the
// notifications to their senders.
func (o *outbox) enqueue(ctx context.Context, batch []pendingWrite) error {
	now := time.Now()
	o.mu.Lock()
	recs := make([]logcore.Record, 0, 2*len(batch))
	for _, w := range batch {
		if n := w.note; n != nil {
			n.Seq = o.seq
			o.seq++
			n.Integration, n.Receiver, n.GroupKey, n.CreatedAt = w.integration.id(), w.integration.receiver, w.groupKey, now
		}
	}
	o.mu.Unlock()
	for _, w := range batch {
		if n := w.note; n != nil {
			v, err := json.Marshal(n)
			if err != nil {
				return fmt.Errorf("encode notification: %w", err)
			}
			recs = append(recs, logcore.Record{Timestamp: now.UnixMilli(), Key: n.key(), Value: v})
		}
		v, err := json.Marshal(w.nflog)
		if err != nil {
			return fmt.Errorf("encode notification log entry: %w", err)
		}
		recs = append(recs, logcore.Record{Timestamp: now.UnixMilli(), Key: []byte(nflogKey(w.integration.id(), w.groupKey)), Value: v})
	}
	if _, err := o.topic.Append(ctx, 0, recs); err != nil {
		return fmt.Errorf("append to %s: %w", OutboxTopic, err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, w := range batch {
		o.nflog[nflogKey(w.integration.id(), w.groupKey)] = w.nflog
		if w.note != nil {
			o.senderLocked(w.note.Integration, w.integration).push(w.note)
			o.p.metrics.enqueued(w.note.Receiver).Inc()
		}
	}
	return nil
}

// senderLocked returns the integration's sender, starting it if needed. o.mu must be held.
func (o *outbox) senderLocked(id string, in *integration) *sender {
	s, ok := o.senders[id]
	if !ok {
		s = newSender(o, id)
		o.senders[id] = s
		if !o.closed {
			o.p.wg.Add(1)
			go s.run()
		}
	}
	if in != nil {
		s.in.Store(in)
	}
	return s
}

// reconfigure points every sender at its integration in cfg and starts senders for
// new integrations (so their metrics exist from the start).
func (o *outbox) reconfigure(cfg *Config) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, ins := range cfg.receivers {
		for _, in := range ins {
			o.senderLocked(in.id(), in)
			o.p.metrics.receiver(in.receiver)
		}
	}
}

// close stops new senders from starting; the running ones end with the pipeline's context.
func (o *outbox) close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
}

// done durably records that n was delivered (or given up on): a tombstone for its key.
func (o *outbox) done(ctx context.Context, n *notification) error {
	_, err := o.topic.Append(ctx, 0, []logcore.Record{{Timestamp: time.Now().UnixMilli(), Key: n.key()}})
	if err != nil {
		return fmt.Errorf("append delivery record to %s: %w", OutboxTopic, err)
	}
	return nil
}

// gcNflog deletes notification-log entries older than the retention.
func (o *outbox) gcNflog(ctx context.Context, now time.Time) error {
	o.mu.Lock()
	var recs []logcore.Record
	for k, e := range o.nflog {
		if e.Timestamp.Before(now.Add(-nflogRetention)) {
			recs = append(recs, logcore.Record{Timestamp: now.UnixMilli(), Key: []byte(k)})
			delete(o.nflog, k)
		}
	}
	o.mu.Unlock()
	if len(recs) == 0 {
		return nil
	}
	_, err := o.topic.Append(ctx, 0, recs)
	return err
}

// pending is the number of notifications not yet delivered, over all senders.
func (o *outbox) pending() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, s := range o.senders {
		n += s.len()
	}
	return n
}
