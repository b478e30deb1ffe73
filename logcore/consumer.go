package logcore

import (
	"context"
	"errors"
	"fmt"

	"github.com/VictoriaMetrics/metrics"
)

// Consumer reads one partition of a topic for a consumer group: it starts at the
// group's committed offset (or the partition's start offset when there is none), tails
// the partition, and commits offsets durably. A consumer that finds its position
// deleted by retention resumes at the start offset and counts the records it skipped
// in vigil_log_consumer_skipped_records_total (not in compacted topics, where those
// records were superseded). A Consumer is not safe for concurrent use; give each
// goroutine its own.
type Consumer struct {
	log     Log
	group   string
	topic   Topic
	p       int
	pos     int64
	recs    []Record
	buf     []byte
	skipped *metrics.Counter
}

// reader is the fast read path of the file log: records alias a caller-owned buffer.
type reader interface {
	readInto(p int, offset int64, maxBytes int, dst []Record, buf []byte) ([]Record, []byte, int64, error)
}

// NewConsumer returns a consumer of t's partition p for group, positioned at the
// group's committed offset.
func NewConsumer(l Log, group string, t Topic, p int) (*Consumer, error) {
	if p < 0 || p >= t.Partitions() {
		return nil, fmt.Errorf("consumer %s of %s/%d: %w", group, t.Name(), p, ErrNoPartition)
	}
	c := &Consumer{log: l, group: group, topic: t, p: p}
	if off, ok := l.Offsets().Committed(group, t.Name(), p); ok {
		c.pos = off
	} else {
		c.pos = t.Stats(p).StartOffset
	}
	set := metrics.NewSet()
	if fl, ok := l.(*FileLog); ok {
		set = fl.metrics.set
	}
	c.skipped = set.GetOrCreateCounter(fmt.Sprintf(`vigil_log_consumer_skipped_records_total{group=%q,topic=%q}`, group, t.Name()))
	return c, nil
}

// Position returns the offset of the next record Poll returns.
func (c *Consumer) Position() int64 { return c.pos }

// Partition returns the partition the consumer reads.
func (c *Consumer) Partition() int { return c.p }

// SeekTo moves the consumer to offset; the next Poll reads from there.
func (c *Consumer) SeekTo(offset int64) { c.pos = offset }

// Poll returns the next records, whole batches of up to about maxBytes (0 means 1 MiB),
// blocking until there is at least one or ctx ends. The records stay valid until the
// next Poll. Poll does not commit. At a batch that fails its checks Poll returns an
// error wrapping ErrCorrupt and keeps the position; it never returns damaged records.
func (c *Consumer) Poll(ctx context.Context, maxBytes int) ([]Record, error) {
	for {
		recs, next, err := c.read(maxBytes)
		if errors.Is(err, ErrOffsetOutOfRange) {
			st := c.topic.Stats(c.p)
			switch {
			case c.pos < st.StartOffset:
				if !c.compacted() {
					// In a compacted topic the records before the start offset were
					// superseded, not lost: nothing is counted.
					c.skipped.Add(int(st.StartOffset - c.pos))
				}
				c.pos = st.StartOffset
				continue
			case c.pos > st.EndOffset:
				return nil, fmt.Errorf("consumer %s of %s/%d at offset %d, past the end offset %d: %w", c.group, c.topic.Name(), c.p, c.pos, st.EndOffset, err)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if len(recs) > 0 {
			c.pos = recs[len(recs)-1].Offset + 1
			return recs, nil
		}
		if next > c.pos {
			// Everything between was removed by compaction.
			c.pos = next
			continue
		}
		if err := c.topic.Wait(ctx, c.p, c.pos); err != nil {
			return nil, err
		}
	}
}

// compacted reports whether the consumer's topic is a compacted file-log topic.
func (c *Consumer) compacted() bool {
	ft, ok := c.topic.(*fileTopic)
	return ok && ft.config().Compacted
}

func (c *Consumer) read(maxBytes int) ([]Record, int64, error) {
	if r, ok := c.topic.(reader); ok {
		var recs []Record
		var next int64
		var err error
		recs, c.buf, next, err = r.readInto(c.p, c.pos, maxBytes, c.recs[:0], c.buf)
		c.recs = recs
		return recs, next, err
	}
	recs, err := c.topic.Read(c.p, c.pos, maxBytes, c.recs[:0])
	c.recs = recs
	return recs, c.pos, err
}

// Commit durably records that the group has processed the partition up to, not
// including, offset.
func (c *Consumer) Commit(offset int64) error {
	return c.log.Offsets().Commit(c.group, c.topic.Name(), c.p, offset)
}
