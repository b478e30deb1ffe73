package logcore

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"golang.org/x/sys/unix"
)

// Options configures a FileLog. Zero values take the defaults documented on each field.
type Options struct {
	// Fsync is the durability policy of appends (default FsyncAlways).
	Fsync FsyncPolicy
	// FsyncInterval is the sync period under FsyncInterval (default 100ms).
	FsyncInterval time.Duration
	// Defaults fill the zero fields of every TopicConfig: Partitions 1, SegmentBytes
	// 128 MiB, SegmentAge 1h when unset here.
	Defaults TopicConfig
	// IndexIntervalBytes is how many bytes of log lie at most between two index
	// entries (default 4 KiB).
	IndexIntervalBytes int64
	// MaintenanceInterval is how often retention and compaction run (default 10s).
	MaintenanceInterval time.Duration
	// Metrics receives the log's vigil_log_* metrics (default: a private set).
	Metrics *metrics.Set
	// Logger receives recovery and failure reports (default: discarded).
	Logger *slog.Logger
	// Now is the clock for record timestamps, segment ages and retention (default time.Now).
	Now func() time.Time
	// JournalBytes is the size past which the commit journal moves to a new file and
	// has the segments it covers synced, so that it can drop the old one (default 64
	// MiB). It bounds what a start after a crash may have to write back.
	JournalBytes int64
}

func (o *Options) setDefaults() {
	if o.FsyncInterval <= 0 {
		o.FsyncInterval = 100 * time.Millisecond
	}
	if o.IndexIntervalBytes <= 0 {
		o.IndexIntervalBytes = 4 << 10
	}
	if o.MaintenanceInterval <= 0 {
		o.MaintenanceInterval = 10 * time.Second
	}
	if o.Metrics == nil {
		o.Metrics = metrics.NewSet()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.JournalBytes <= 0 {
		o.JournalBytes = 64 << 20
	}
	if o.Defaults.Partitions <= 0 {
		o.Defaults.Partitions = 1
	}
	if o.Defaults.SegmentBytes <= 0 {
		o.Defaults.SegmentBytes = 128 << 20
	}
	if o.Defaults.SegmentAge <= 0 {
		o.Defaults.SegmentAge = time.Hour
	}
	if o.Defaults.TombstoneRetention <= 0 {
		o.Defaults.TombstoneRetention = 24 * time.Hour
	}
}

// logMetrics are the counters the partitions bump on their hot paths.
type logMetrics struct {
	appendedBytes   *metrics.Counter
	appendedRecords *metrics.Counter
	fsyncs          *metrics.Counter
	fsyncSeconds    *metrics.Summary
	appendErrors    *metrics.Counter
	deletedSegments *metrics.Counter
	compactions     *metrics.Counter
	// recoveryScannedBytes counts the segment bytes open scanned batch by batch.
	recoveryScannedBytes *metrics.Counter
	set                  *metrics.Set
}

func newLogMetrics(set *metrics.Set) *logMetrics {
	return &logMetrics{
		appendedBytes:        set.GetOrCreateCounter("vigil_log_appended_bytes_total"),
		appendedRecords:      set.GetOrCreateCounter("vigil_log_appended_records_total"),
		fsyncs:               set.GetOrCreateCounter("vigil_log_fsyncs_total"),
		fsyncSeconds:         set.GetOrCreateSummary("vigil_log_fsync_duration_seconds"),
		appendErrors:         set.GetOrCreateCounter("vigil_log_append_errors_total"),
		deletedSegments:      set.GetOrCreateCounter("vigil_log_retention_deleted_segments_total"),
		compactions:          set.GetOrCreateCounter("vigil_log_compactions_total"),
		recoveryScannedBytes: set.GetOrCreateCounter("vigil_log_recovery_scanned_bytes_total"),
		set:                  set,
	}
}

// FileLog is the embedded file-backed Log: one directory, one flock, topics as
// subdirectories (see the package doc for the layout). It is safe for concurrent use.
type FileLog struct {
	dir     string
	opts    Options
	metrics *logMetrics
	lock    *os.File

	mu      sync.Mutex
	topics  map[string]*fileTopic
	closed  bool
	offsets *offsetStore
	journal *journal // commit journal of FsyncAlways partitions

	stop chan struct{}
	done chan struct{}

	testHooks testHooks
}

// testHooks let tests stop the log at points where a crash leaves interesting files.
type testHooks struct {
	// beforeSwapRename runs in compaction after <base>.cleaned is written and synced
	// and the old indexes are removed, before the rename; an error aborts the swap.
	beforeSwapRename func() error
	// writeFault and syncFault, when they return an error, make the next segment
	// write (after writing half its bytes) or fdatasync fail with it.
	writeFault func() error
	syncFault  func() error
	// journalWriteFault, when it returns an error, makes the next journal write fail
	// with it (after writing half its bytes).
	journalWriteFault func() error
	// synced, when set, learns the size of each segment or journal file that an
	// fdatasync has just made durable (power-loss tests keep only those bytes).
	synced func(path string, size int64)
}

var _ Log = (*FileLog)(nil)

// offsetsTopic is the internal compacted topic holding consumer-group offsets.
const offsetsTopic = "__consumer_offsets"

var topicName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,200}$`)

// Open opens the log in dir, creating it if needed, and recovers every existing topic
// (see "Durability and recovery" in the package doc). Only one process may have a
// directory open: a second Open fails while the first holds the lock.
func Open(dir string, opts Options) (*FileLog, error) {
	opts.setDefaults()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open log %s: %w", dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", dir, err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("open log %s: another process has it open (%w)", dir, err)
	}
	l := &FileLog{
		dir:     dir,
		opts:    opts,
		metrics: newLogMetrics(opts.Metrics),
		lock:    lock,
		topics:  map[string]*fileTopic{},
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	seq, err := replayJournal(l)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("open log %s: %w", dir, err)
	}
	if l.journal, err = openJournal(l, seq); err != nil {
		lock.Close()
		return nil, fmt.Errorf("open log %s: %w", dir, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		l.journal.close()
		lock.Close()
		return nil, fmt.Errorf("open log %s: %w", dir, err)
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, e.Name(), topicFile)); err != nil {
			continue
		}
		if _, err := l.openTopic(e.Name(), TopicConfig{}, true); err != nil {
			l.closeTopics()
			lock.Close()
			return nil, fmt.Errorf("open log %s: %w", dir, err)
		}
	}
	ot, err := l.openTopic(offsetsTopic, TopicConfig{Partitions: 1, Compacted: true, SegmentBytes: 4 << 20, TombstoneRetention: time.Hour}, false)
	if err != nil {
		l.closeTopics()
		lock.Close()
		return nil, fmt.Errorf("open log %s: %w", dir, err)
	}
	if l.offsets, err = loadOffsetStore(l, ot); err != nil {
		l.closeTopics()
		lock.Close()
		return nil, fmt.Errorf("open log %s: %w", dir, err)
	}
	go l.maintain()
	return l, nil
}

func (l *FileLog) nowMs() int64 { return l.opts.Now().UnixMilli() }

// Dir returns the log's directory.
func (l *FileLog) Dir() string { return l.dir }

// Topic opens the named topic, creating it with cfg (zero fields from Options.Defaults)
// if it does not exist. An existing topic keeps its partition count: a different
// non-zero cfg.Partitions is an error. Its other settings take cfg's non-zero values.
func (l *FileLog) Topic(name string, cfg TopicConfig) (Topic, error) {
	if !topicName.MatchString(name) || strings.HasPrefix(name, "__") || name == "." || name == ".." {
		return nil, fmt.Errorf("topic %q: names are 1-200 of [A-Za-z0-9._-], not . or .., and do not start with __ (reserved for the log's own files)", name)
	}
	t, err := l.openTopic(name, cfg, false)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// openTopic returns the open topic or opens/creates it. existing means: opened from
// disk at start, cfg comes from topic.json.
func (l *FileLog) openTopic(name string, cfg TopicConfig, existing bool) (*fileTopic, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if t, ok := l.topics[name]; ok {
		if !existing {
			if err := t.reconfigure(cfg); err != nil {
				return nil, err
			}
		}
		return t, nil
	}
	t, err := openFileTopic(l, name, cfg)
	if err != nil {
		return nil, err
	}
	l.topics[name] = t
	return t, nil
}

// Topics lists the open topics sorted by name, without the internal offsets topic.
func (l *FileLog) Topics() []Topic {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Topic, 0, len(l.topics))
	for name, t := range l.topics {
		if name != offsetsTopic {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

// Offsets returns the durable store of consumer-group offsets.
func (l *FileLog) Offsets() OffsetStore { return l.offsets }

// Close stops retention and compaction, lets every partition write what is queued,
// syncs and closes every file and releases the directory lock. It is idempotent.
func (l *FileLog) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	l.closeTopics()
	return l.lock.Close()
}

// closeTopics closes every partition, then the journal they write to.
func (l *FileLog) closeTopics() {
	defer l.journal.close()
	l.mu.Lock()
	ts := make([]*fileTopic, 0, len(l.topics))
	for _, t := range l.topics {
		ts = append(ts, t)
	}
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, t := range ts {
		for _, pt := range t.parts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pt.close()
			}()
		}
	}
	wg.Wait()
}

// maintain runs retention and compaction every MaintenanceInterval until Close.
func (l *FileLog) maintain() {
	defer close(l.done)
	t := time.NewTicker(l.opts.MaintenanceInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.RunMaintenance()
		}
	}
}

// RunMaintenance applies retention and compaction to every topic once, now. The log
// also runs it every Options.MaintenanceInterval; tests and tools call it directly.
func (l *FileLog) RunMaintenance() {
	l.mu.Lock()
	ts := make([]*fileTopic, 0, len(l.topics))
	for _, t := range l.topics {
		ts = append(ts, t)
	}
	l.mu.Unlock()
	for _, t := range ts {
		cfg := t.config()
		for _, pt := range t.parts {
			if err := pt.applyRetention(cfg); err != nil {
				pt.logger().Error("retention", "err", err)
			}
			if cfg.Compacted {
				if err := pt.compact(cfg); err != nil {
					pt.logger().Error("compaction", "err", err)
				}
			}
		}
	}
}

// topicFile holds a topic's TopicConfig as JSON.
const topicFile = "topic.json"

// writeFileAtomic writes b to path through a synced temporary file and a rename, then
// syncs the directory.
func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

func readTopicConfig(dir string) (TopicConfig, error) {
	var cfg TopicConfig
	b, err := os.ReadFile(filepath.Join(dir, topicFile))
	if err != nil {
		return cfg, err
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("%s: %w", topicFile, err)
	}
	if cfg.Partitions <= 0 {
		return cfg, errors.New(topicFile + ": no partitions")
	}
	return cfg, nil
}
