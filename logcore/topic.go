package logcore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// fileTopic is a topic of a FileLog: its settings and its partitions. The partitions
// are fixed at open; the settings other than Partitions can change (reconfigure).
type fileTopic struct {
	log   *FileLog
	name  string
	dir   string
	parts []*partition

	cfgMu sync.Mutex // serialises reconfigure
	cfg   atomic.Pointer[TopicConfig]
}

var _ Topic = (*fileTopic)(nil)

// withDefaults fills cfg's zero fields from the log's defaults.
func (l *FileLog) withDefaults(cfg TopicConfig) TopicConfig {
	d := l.opts.Defaults
	if cfg.Partitions <= 0 {
		cfg.Partitions = d.Partitions
	}
	if cfg.SegmentBytes <= 0 {
		cfg.SegmentBytes = d.SegmentBytes
	}
	if cfg.SegmentAge <= 0 {
		cfg.SegmentAge = d.SegmentAge
	}
	if cfg.RetentionBytes <= 0 {
		cfg.RetentionBytes = d.RetentionBytes
	}
	if cfg.RetentionAge <= 0 && !cfg.Compacted {
		cfg.RetentionAge = d.RetentionAge
	}
	if cfg.TombstoneRetention <= 0 {
		cfg.TombstoneRetention = d.TombstoneRetention
	}
	return cfg
}

// openFileTopic opens the topic's directory, creating it and its topic.json when it
// does not exist, and opens (recovering) every partition.
func openFileTopic(l *FileLog, name string, cfg TopicConfig) (*fileTopic, error) {
	t := &fileTopic{log: l, name: name, dir: filepath.Join(l.dir, name)}
	stored, err := readTopicConfig(t.dir)
	switch {
	case err == nil:
		if cfg.Partitions > 0 && cfg.Partitions != stored.Partitions {
			return nil, fmt.Errorf("topic %s has %d partitions, not %d: partitions are fixed once a topic exists", name, stored.Partitions, cfg.Partitions)
		}
		cfg = merge(stored, cfg)
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(t.dir, 0o755); err != nil {
			return nil, fmt.Errorf("create topic %s: %w", name, err)
		}
	default:
		return nil, fmt.Errorf("open topic %s: %w", name, err)
	}
	full := l.withDefaults(cfg)
	if full.SegmentBytes < segmentHeaderSize+batchHeaderSize+1 {
		return nil, fmt.Errorf("topic %s: segment size %d is too small", name, full.SegmentBytes)
	}
	if err == nil && full == stored {
		// Unchanged: no rewrite (and no fsync of the file and its directory) at open.
		t.cfg.Store(&full)
	} else if err := t.store(full); err != nil {
		return nil, err
	}
	policy := l.opts.Fsync
	if name == offsetsTopic {
		// A commit that returned must survive a crash, whatever the data's policy.
		policy = FsyncAlways
	}
	for i := 0; i < full.Partitions; i++ {
		pt, err := openPartition(t, i, policy)
		if err != nil {
			for _, p := range t.parts {
				p.close()
			}
			return nil, fmt.Errorf("open topic %s: %w", name, err)
		}
		t.parts = append(t.parts, pt)
	}
	return t, nil
}

// store makes cfg the topic's settings, writing topic.json when it changed.
func (t *fileTopic) store(cfg TopicConfig) error {
	if old := t.cfg.Load(); old != nil && *old == cfg {
		return nil
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("topic %s: %w", t.name, err)
	}
	if err := writeFileAtomic(filepath.Join(t.dir, topicFile), append(b, '\n')); err != nil {
		return fmt.Errorf("write %s config: %w", t.name, err)
	}
	t.cfg.Store(&cfg)
	return nil
}

// reconfigure applies cfg's non-zero settings to an open topic (see merge).
func (t *fileTopic) reconfigure(cfg TopicConfig) error {
	t.cfgMu.Lock()
	defer t.cfgMu.Unlock()
	cur := t.config()
	if cfg.Partitions > 0 && cfg.Partitions != cur.Partitions {
		return fmt.Errorf("topic %s has %d partitions, not %d: partitions are fixed once a topic exists", t.name, cur.Partitions, cfg.Partitions)
	}
	return t.store(t.log.withDefaults(merge(cur, cfg)))
}

// merge returns cur with the non-zero settings of cfg applied; Partitions stays.
func merge(cur, cfg TopicConfig) TopicConfig {
	if cfg.SegmentBytes > 0 {
		cur.SegmentBytes = cfg.SegmentBytes
	}
	if cfg.SegmentAge > 0 {
		cur.SegmentAge = cfg.SegmentAge
	}
	if cfg.RetentionBytes > 0 {
		cur.RetentionBytes = cfg.RetentionBytes
	}
	if cfg.RetentionAge > 0 {
		cur.RetentionAge = cfg.RetentionAge
	}
	if cfg.TombstoneRetention > 0 {
		cur.TombstoneRetention = cfg.TombstoneRetention
	}
	if cfg.Compression != CompressionNone {
		cur.Compression = cfg.Compression
	}
	cur.Compacted = cur.Compacted || cfg.Compacted
	return cur
}

func (t *fileTopic) config() TopicConfig { return *t.cfg.Load() }

// Name returns the topic's name.
func (t *fileTopic) Name() string { return t.name }

// Partitions returns the number of partitions.
func (t *fileTopic) Partitions() int { return len(t.parts) }

// Config returns the topic's current settings.
func (t *fileTopic) Config() TopicConfig { return t.config() }

func (t *fileTopic) partition(p int) (*partition, error) {
	if p < 0 || p >= len(t.parts) {
		return nil, fmt.Errorf("topic %s partition %d: %w", t.name, p, ErrNoPartition)
	}
	return t.parts[p], nil
}

// Append writes recs to partition p as one batch; see Topic.
func (t *fileTopic) Append(ctx context.Context, p int, recs []Record) (int64, error) {
	pt, err := t.partition(p)
	if err != nil {
		return -1, err
	}
	off, err := pt.append(ctx, recs)
	if err != nil {
		t.log.metrics.appendErrors.Inc()
	}
	return off, err
}

// AppendPartitions appends recs[p] to partition p for every non-empty recs[p]; see
// the package function AppendPartitions. Every batch is queued before the outcomes
// are awaited, so the partitions' writers sync them at the same time; no goroutine is
// started, and the caller is woken once, by the last partition to answer.
func (t *fileTopic) AppendPartitions(ctx context.Context, recs [][]Record, bases []int64, errs []error) {
	var reqs [64]*appendReq
	rs := reqs[:0]
	if len(recs) > len(reqs) {
		rs = make([]*appendReq, 0, len(recs))
	}
	// The group counts one extra until every batch is queued, so that it cannot
	// signal while some are still being submitted.
	g := groupPool.Get().(*appendGroup)
	g.left.Store(1)
	for p, b := range recs {
		rs = append(rs, nil)
		if len(b) == 0 {
			continue
		}
		pt, err := t.partition(p)
		if err == nil {
			g.left.Add(1)
			if rs[p], err = pt.submitIn(ctx, b, g); err != nil {
				g.left.Add(-1)
			}
		}
		if err != nil {
			bases[p], errs[p] = -1, err
			t.log.metrics.appendErrors.Inc()
		}
	}
	if g.left.Add(-1) != 0 {
		<-g.done
	}
	groupPool.Put(g)
	for p, r := range rs {
		if r == nil {
			continue
		}
		bases[p], errs[p] = r.base, r.err
		r.release()
		if errs[p] != nil {
			t.log.metrics.appendErrors.Inc()
		}
	}
}

// Read returns records of partition p from offset on; see Topic. Key and Value of the
// records are freshly allocated per call.
func (t *fileTopic) Read(p int, offset int64, maxBytes int, dst []Record) ([]Record, error) {
	pt, err := t.partition(p)
	if err != nil {
		return dst[:0], err
	}
	recs, _, _, err := pt.read(offset, maxBytes, dst, nil)
	return recs, err
}

// readInto is Read with a caller-owned buffer that the records alias; it also returns
// the offset the next read starts at (past compaction gaps).
func (t *fileTopic) readInto(p int, offset int64, maxBytes int, dst []Record, buf []byte) ([]Record, []byte, int64, error) {
	pt, err := t.partition(p)
	if err != nil {
		return dst[:0], buf, offset, err
	}
	return pt.read(offset, maxBytes, dst, buf)
}

// Wait blocks until partition p's end offset is greater than offset or ctx ends.
func (t *fileTopic) Wait(ctx context.Context, p int, offset int64) error {
	pt, err := t.partition(p)
	if err != nil {
		return err
	}
	return pt.wait(ctx, offset)
}

// OffsetForTime returns the first offset of partition p with a timestamp at or after ts.
func (t *fileTopic) OffsetForTime(p int, ts int64) (int64, error) {
	pt, err := t.partition(p)
	if err != nil {
		return 0, err
	}
	return pt.offsetForTime(ts)
}

// Stats returns partition p's bounds (zero for a partition that does not exist).
func (t *fileTopic) Stats(p int) PartitionStats {
	pt, err := t.partition(p)
	if err != nil {
		return PartitionStats{}
	}
	return pt.stats()
}
