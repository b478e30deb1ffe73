package logcore

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Record is one entry of a partition. Offset is assigned by Append and is dense and
// monotonic per partition; Timestamp is milliseconds since the Unix epoch. Key is
// optional (nil means no key); in a compacted topic an empty Value is a tombstone.
type Record struct {
	Offset    int64
	Timestamp int64
	Key       []byte
	Value     []byte
}

// FsyncPolicy says when appended bytes are made durable with fdatasync.
type FsyncPolicy int

const (
	// FsyncAlways makes Append return only after its bytes are synced (group commit:
	// one write and one sync serve every append waiting at that moment).
	FsyncAlways FsyncPolicy = iota
	// FsyncInterval syncs every Options.FsyncInterval; Append returns after the write.
	FsyncInterval
	// FsyncNever leaves syncing to the operating system (and to Close).
	FsyncNever
)

// TopicConfig describes a topic. Zero values mean the Options defaults.
type TopicConfig struct {
	// Partitions is the number of partitions; fixed once the topic exists.
	Partitions int
	// SegmentBytes rolls the active segment when it would grow past this size.
	SegmentBytes int64
	// SegmentAge rolls the active segment when its first record is this old.
	SegmentAge time.Duration
	// RetentionBytes deletes the oldest closed segments of a partition while it holds
	// more than this many bytes; 0 keeps everything.
	RetentionBytes int64
	// RetentionAge deletes closed segments whose newest record is older than this; 0 keeps everything.
	RetentionAge time.Duration
	// Compacted keeps only the latest record per key in closed segments.
	Compacted bool
	// TombstoneRetention is how long a tombstone (empty value) of a compacted topic is
	// kept before compaction removes it.
	TombstoneRetention time.Duration
	// Compression is the codec of batch payloads written from now on; batches already
	// written keep theirs.
	Compression Compression
}

// Log is the seam between Vigil and its durable log: the embedded file log implements
// it, and a JetStream-backed log can later implement it too and pass the same tests.
// All methods are safe for concurrent use.
type Log interface {
	// Topic opens the named topic, creating it with cfg if it does not exist yet. An
	// existing topic keeps its partition count; a different cfg.Partitions is an error.
	Topic(name string, cfg TopicConfig) (Topic, error)
	// Topics lists the open topics, sorted by name.
	Topics() []Topic
	// Offsets is the durable store of consumer-group offsets.
	Offsets() OffsetStore
	// Close stops background work, syncs and closes every file. Appends after Close fail with ErrClosed.
	Close() error
}

// Topic is a named set of partitions. All methods are safe for concurrent use.
type Topic interface {
	Name() string
	// Partitions is the number of partitions, numbered 0..Partitions()-1.
	Partitions() int
	// Append writes recs to partition p as one batch and returns the offset given to
	// recs[0]. It returns once the batch is durable under the log's fsync policy; on
	// error nothing of the batch is visible to readers. Record offsets in recs are ignored.
	Append(ctx context.Context, p int, recs []Record) (int64, error)
	// Read returns records of partition p from offset on, whole batches of up to about
	// maxBytes (at least one batch if any). It does not block: at the end offset it
	// returns no records. Offsets before the start offset give ErrOffsetOutOfRange.
	// The returned records' Key and Value stay valid until the next call with the same dst.
	Read(p int, offset int64, maxBytes int, dst []Record) ([]Record, error)
	// Wait blocks until partition p's end offset is greater than offset, or ctx ends.
	Wait(ctx context.Context, p int, offset int64) error
	// OffsetForTime returns the first offset of partition p whose timestamp is at or
	// after ts (milliseconds), or the end offset if there is none.
	OffsetForTime(p int, ts int64) (int64, error)
	// Stats returns partition p's start offset, end offset (the next offset to be
	// written) and size on disk.
	Stats(p int) PartitionStats
}

// MultiAppender is a Topic that appends to several partitions in one call more cheaply
// than concurrent Appends (the file log does: no goroutine per partition, and the
// partitions' syncs happen together). AppendPartitions uses it when a topic has it.
type MultiAppender interface {
	AppendPartitions(ctx context.Context, recs [][]Record, bases []int64, errs []error)
}

// AppendPartitions appends recs[p] to partition p of t, as one batch per partition, for
// every non-empty recs[p], all partitions at once, and returns when each batch is
// durable under the fsync policy or has failed: bases[p] is the offset given to
// recs[p][0] and errs[p] the outcome, as Append returns them (entries of empty recs[p]
// are left alone). A failed partition does not undo the others. bases and errs must
// be at least as long as recs.
func AppendPartitions(ctx context.Context, t Topic, recs [][]Record, bases []int64, errs []error) {
	if m, ok := t.(MultiAppender); ok {
		m.AppendPartitions(ctx, recs, bases, errs)
		return
	}
	var wg sync.WaitGroup
	for p, rs := range recs {
		if len(rs) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			bases[p], errs[p] = t.Append(ctx, p, rs)
		}()
	}
	wg.Wait()
}

// PartitionStats is a snapshot of one partition's bounds.
type PartitionStats struct {
	StartOffset int64
	EndOffset   int64
	Bytes       int64
}

// OffsetStore keeps the committed offsets of consumer groups durably: a Commit that
// returned is still there after a crash and restart.
type OffsetStore interface {
	// Commit records that group has processed topic's partition p up to, not
	// including, offset.
	Commit(group, topic string, p int, offset int64) error
	// Committed returns the offset last committed, and false if there is none.
	Committed(group, topic string, p int) (int64, bool)
	// Groups lists every (group, topic) pair with a commit, sorted.
	Groups() []GroupTopic
}

// GroupTopic names a consumer group's subscription to a topic.
type GroupTopic struct {
	Group string
	Topic string
}

// Errors that callers branch on.
var (
	ErrClosed           = errors.New("logcore: log is closed")
	ErrOffsetOutOfRange = errors.New("logcore: offset out of range")
	ErrNoPartition      = errors.New("logcore: no such partition")
	ErrRecordTooLarge   = errors.New("logcore: batch larger than the segment size")
)
