package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage"

	"github.com/vigilhq/vigil/internal/wait"
	"github.com/vigilhq/vigil/logcore"
	"github.com/vigilhq/vigil/sample"
)

// MaterializerOptions configure a Materializer. Zero values take the defaults noted.
type MaterializerOptions struct {
	// Log holds the consumer group's offsets.
	Log logcore.Log
	// Topic is the samples topic whose records are sample batches.
	Topic logcore.Topic
	// Group is the consumer group (default "materializer").
	Group string
	// MaxPollBytes bounds one read of a partition (default 1 MiB).
	MaxPollBytes int
	// CheckpointInterval is how often the head is checked for a block to cut and the
	// offsets it covers committed (default 15s).
	CheckpointInterval time.Duration
	// Yield, when set, reports whether ingest is using the CPUs (several requests being
	// decoded and appended at once). While it does, the materializer holds back the
	// records it has read, so that a burst goes into the log at full speed and the store
	// catches up after it; but only while its lag is under YieldLag records and for at
	// most YieldFor at a stretch, after which it does not hold back again until it has
	// caught up. It must be cheap and safe for concurrent use.
	Yield func() bool
	// YieldLag bounds the lag, in records, up to which Yield holds the materializer
	// back (default 50,000).
	YieldLag int64
	// YieldFor bounds how long Yield holds a partition back at a stretch (default 5s).
	YieldFor time.Duration
	// Metrics receives vigil_materializer_* metrics; nil uses the store's set.
	Metrics *metrics.Set
	// Logger; nil uses the store's.
	Logger *slog.Logger
}

// Materializer consumes the samples topic into the store, one goroutine per partition,
// and commits the consumer group's offsets under the durability rule of the package
// documentation. Start it with Store.StartMaterializer; Stop it before closing the store.
type Materializer struct {
	s      *Store
	opts   MaterializerOptions
	log    *slog.Logger
	cancel context.CancelFunc
	wg     sync.WaitGroup
	ckDone chan struct{}
	gate   *gate

	mu    sync.Mutex
	parts []*partState

	samplesTotal   *metrics.Counter
	histsTotal     *metrics.Counter
	recordsTotal   *metrics.Counter
	corruptTotal   *metrics.Counter
	appendErrTotal *metrics.Counter
	commitsTotal   *metrics.Counter
	checkpointErrs *metrics.Counter
	yieldSeconds   *metrics.FloatCounter
	// replaying counts the partitions still replaying what was in the log at start.
	replaying atomic.Int32
}

// partState is one partition's progress. marks and committed are guarded by
// Materializer.mu; processed is read without it.
type partState struct {
	p         int
	consumer  *logcore.Consumer
	processed atomic.Int64 // next offset not yet in the store
	// replayEnd is the partition's end offset when the materializer started, while it
	// replays the records before it; -1 once it has (only the partition's worker uses it).
	replayEnd int64
	committed int64
	marks     []mark
	// yieldSince is when the partition's worker started holding records back for
	// ingest (zero when it is not); unyielding is set when a bound stopped it, until
	// it has caught up. Only the worker uses them.
	yieldSince time.Time
	unyielding bool
	// frozen marks (the first frozen ones) belong to a running checkpoint's snapshot:
	// addMark must not merge later records into them.
	frozen int
}

// mark says: records before offset are in the store, and the newest sample accepted
// from the records since the previous mark has timestamp maxT (MinInt64 if none).
type mark struct {
	offset int64
	maxT   int64
}

// markBucket is the width of the time buckets within which consecutive marks are
// merged. Block boundaries are multiples of it, so merging never delays a commit past
// the block that covers it.
const markBucket = int64(time.Minute / time.Millisecond)

// StartMaterializer starts consuming opts.Topic from the group's committed offsets.
func (s *Store) StartMaterializer(opts MaterializerOptions) (*Materializer, error) {
	if opts.Log == nil || opts.Topic == nil {
		return nil, errors.New("store: materializer needs a log and a topic")
	}
	if opts.Group == "" {
		opts.Group = "materializer"
	}
	if opts.MaxPollBytes <= 0 {
		opts.MaxPollBytes = 1 << 20
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = 15 * time.Second
	}
	if opts.YieldLag <= 0 {
		opts.YieldLag = 50000
	}
	if opts.YieldFor <= 0 {
		opts.YieldFor = 5 * time.Second
	}
	if opts.Metrics == nil {
		opts.Metrics = s.opts.Metrics
	}
	if opts.Logger == nil {
		opts.Logger = s.opts.Logger
	}
	set := opts.Metrics
	m := &Materializer{
		s:              s,
		opts:           opts,
		log:            opts.Logger.With("component", "materializer"),
		ckDone:         make(chan struct{}),
		samplesTotal:   set.GetOrCreateCounter(`vigil_materializer_samples_total{type="float"}`),
		histsTotal:     set.GetOrCreateCounter(`vigil_materializer_samples_total{type="histogram"}`),
		recordsTotal:   set.GetOrCreateCounter(`vigil_materializer_records_total`),
		corruptTotal:   set.GetOrCreateCounter(`vigil_materializer_corrupt_records_total`),
		appendErrTotal: set.GetOrCreateCounter(`vigil_materializer_append_errors_total`),
		commitsTotal:   set.GetOrCreateCounter(`vigil_materializer_offset_commits_total`),
		checkpointErrs: set.GetOrCreateCounter(`vigil_materializer_checkpoint_errors_total`),
		yieldSeconds:   set.GetOrCreateFloatCounter(`vigil_materializer_yield_seconds_total`),
	}
	n := opts.Topic.Partitions()
	// Partitions replaying a backlog advance together within a quarter block duration
	// of each other (see gate): half of the TSDB's in-order window behind the newest
	// sample, which is half a block duration.
	m.gate = newGate(n, max(s.opts.BlockDuration.Milliseconds()/4, 1), func(q int) bool {
		return m.parts[q].processed.Load() < opts.Topic.Stats(q).EndOffset
	})
	for p := 0; p < n; p++ {
		c, err := logcore.NewConsumer(opts.Log, opts.Group, opts.Topic, p)
		if err != nil {
			return nil, fmt.Errorf("store: materializer consumer for partition %d: %w", p, err)
		}
		ps := &partState{p: p, consumer: c, committed: c.Position()}
		ps.processed.Store(c.Position())
		m.parts = append(m.parts, ps)
	}
	set.GetOrCreateGauge(`vigil_materializer_lag_records`, func() float64 { return float64(m.Lag()) })
	set.GetOrCreateGauge(`vigil_materializer_uncommitted_records`, func() float64 { return float64(m.uncommitted()) })
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	if err := m.startReplay(); err != nil {
		cancel()
		return nil, err
	}
	for _, ps := range m.parts {
		m.wg.Add(1)
		go m.run(ctx, ps)
	}
	go m.checkpointLoop(ctx)
	return m, nil
}

// startReplay notes each partition's end offset and, if records after the committed
// offsets wait to be replayed, widens the TSDB's out-of-order window for the replay.
//
// The restarted TSDB's head starts at the newest in-order block's end, which may lie
// well past the oldest replayed record: blocks are cut before the offsets they cover are
// committed. Replayed out-of-order samples older than that end minus the window would be
// refused as too old, though after a kill -9 between the in-order cut and the
// out-of-order compaction that follows it they are in no block: the window is widened
// by the distance from the oldest replayed record to that end, and half a block duration
// more for the quarter block the gate lets partitions drift apart and for the spread of
// a record's samples around its first one. What is already in a block is stored again
// with the same timestamp and value (queries merge it); a replay may so also accept a
// few samples that the live store had refused as too old. A store without an
// out-of-order window (and no out-of-order blocks from when it had one) needs none.
func (m *Materializer) startReplay() error {
	oldest := int64(math.MaxInt64)
	w := batchWriter{dec: sample.Decoder{SkipLabels: true}} // for firstTime only
	for _, ps := range m.parts {
		ps.replayEnd = m.opts.Topic.Stats(ps.p).EndOffset
		pos := ps.processed.Load()
		if pos >= ps.replayEnd {
			ps.replayEnd = -1
			continue
		}
		m.replaying.Add(1)
		recs, err := m.opts.Topic.Read(ps.p, pos, 1, nil)
		if err != nil {
			return fmt.Errorf("store: read partition %d at its committed offset %d: %w", ps.p, pos, err)
		}
		for _, r := range recs {
			if r.Offset >= pos {
				oldest = min(oldest, w.firstTime(r))
				break
			}
		}
	}
	h := m.s.db.Head()
	if m.replaying.Load() == 0 || oldest == math.MaxInt64 || h.MinTime() == math.MaxInt64 {
		return nil // nothing to replay, or an empty store: nothing can be refused as too old
	}
	if !m.s.outOfOrder() {
		// Without out-of-order samples every block is in order, and a replayed sample
		// older than the newest block's end is in a block already.
		return nil
	}
	extra := time.Duration(max(0, h.MaxTime()-oldest))*time.Millisecond + m.s.opts.BlockDuration/2
	m.log.Info("replaying the records not committed before the restart", "partitions", m.replaying.Load(), "widened_out_of_order_window", extra)
	return m.s.widenForReplay(extra)
}

// Lag is the number of records appended to the topic that are not yet queryable.
func (m *Materializer) Lag() int64 {
	var lag int64
	for _, ps := range m.parts {
		lag += max(0, m.opts.Topic.Stats(ps.p).EndOffset-ps.processed.Load())
	}
	return lag
}

func (m *Materializer) uncommitted() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for _, ps := range m.parts {
		n += ps.processed.Load() - ps.committed
	}
	return n
}

// Sync waits until every record appended to the topic before the call is queryable,
// or ctx ends.
func (m *Materializer) Sync(ctx context.Context) error {
	ends := make([]int64, len(m.parts))
	for i, ps := range m.parts {
		ends[i] = m.opts.Topic.Stats(ps.p).EndOffset
	}
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for {
		done := true
		for i, ps := range m.parts {
			if ps.processed.Load() < ends[i] {
				done = false
				break
			}
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("store: materializer sync: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// Committed returns partition p's committed offset (for status pages and tests).
func (m *Materializer) Committed(p int) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.parts[p].committed
}

// Stop stops consuming, persists the whole head into blocks and commits every
// partition's position. If ctx ends first, or the flush fails, the offsets stay where
// the last checkpoint left them and a restart replays the rest (nothing is lost).
func (m *Materializer) Stop(ctx context.Context) error {
	m.cancel()
	m.wg.Wait()
	<-m.ckDone
	m.s.cmu.Lock()
	defer m.s.cmu.Unlock()
	if err := m.s.flushHead(ctx); err != nil {
		return fmt.Errorf("store: materializer stop: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for _, ps := range m.parts {
		pos := ps.processed.Load()
		if pos == ps.committed {
			continue
		}
		if err := m.opts.Log.Offsets().Commit(m.opts.Group, m.opts.Topic.Name(), ps.p, pos); err != nil {
			errs = append(errs, fmt.Errorf("commit partition %d at %d: %w", ps.p, pos, err))
			continue
		}
		ps.committed, ps.marks = pos, ps.marks[:0]
		m.commitsTotal.Inc()
	}
	return errors.Join(errs...)
}

func (m *Materializer) checkpointLoop(ctx context.Context) {
	defer close(m.ckDone)
	t := time.NewTicker(m.opts.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := m.Checkpoint(ctx); err != nil && ctx.Err() == nil {
			m.checkpointErrs.Inc()
			m.log.Error("checkpoint failed; offsets stay where they are", "err", err)
		}
	}
}

// Checkpoint cuts the head into a block if it is due and commits the offsets that the
// persisted blocks now cover. It runs every CheckpointInterval; tests call it directly.
func (m *Materializer) Checkpoint(ctx context.Context) error {
	m.s.cmu.Lock()
	defer m.s.cmu.Unlock()
	// Take the marks first: only samples appended before the compactions start count.
	m.mu.Lock()
	snap := make([]int, len(m.parts))
	for i, ps := range m.parts {
		snap[i] = len(ps.marks)
		ps.frozen = snap[i]
	}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		for _, ps := range m.parts {
			ps.frozen = 0
		}
		m.mu.Unlock()
	}()
	// In-order samples older than bound are now in blocks.
	bound, err := m.s.compactHead(ctx)
	if err != nil {
		return err
	}
	m.mu.Lock()
	ks := make([]int, len(m.parts))
	any := false
	for i, ps := range m.parts {
		for ks[i] < snap[i] && ps.marks[ks[i]].maxT < bound {
			ks[i]++
		}
		any = any || ks[i] > 0
	}
	m.mu.Unlock()
	if !any {
		return nil
	}
	// The marks' samples may also have gone to the out-of-order head: persist it too.
	if err := m.s.compactOOO(ctx); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for i, ps := range m.parts {
		k := ks[i]
		if k == 0 {
			continue
		}
		off := ps.marks[k-1].offset
		if err := m.opts.Log.Offsets().Commit(m.opts.Group, m.opts.Topic.Name(), ps.p, off); err != nil {
			errs = append(errs, fmt.Errorf("store: commit partition %d at %d: %w", ps.p, off, err))
			continue
		}
		ps.committed = off
		ps.marks = append(ps.marks[:0], ps.marks[k:]...)
		m.commitsTotal.Inc()
	}
	return errors.Join(errs...)
}

// addMark notes that everything before offset is in the store.
func (m *Materializer) addMark(ps *partState, offset, maxT int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := len(ps.marks); n > ps.frozen {
		last := &ps.marks[n-1]
		if last.maxT == math.MinInt64 || maxT == math.MinInt64 || floorDiv(last.maxT, markBucket) == floorDiv(maxT, markBucket) {
			last.offset = offset
			last.maxT = max(last.maxT, maxT)
			return
		}
	}
	ps.marks = append(ps.marks, mark{offset: offset, maxT: maxT})
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// run is one partition's loop: poll, append, commit the appender, note a mark.
func (m *Materializer) run(ctx context.Context, ps *partState) {
	defer m.wg.Done()
	defer m.gate.leave(ps.p)
	w := newBatchWriter(m)
	for {
		m.gate.idle(ps.p)
		recs, err := ps.consumer.Poll(ctx, m.opts.MaxPollBytes)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			m.log.Error("read samples topic", "partition", ps.p, "err", err)
			m.gate.leave(ps.p) // a broken partition must not hold the others back
			if !wait.Sleep(ctx, time.Second) {
				return
			}
			continue
		}
		if len(recs) == 0 {
			continue
		}
		if !m.yield(ctx, ps) || !m.writeAll(ctx, ps, w, recs) {
			return
		}
		if (ps.unyielding || !ps.yieldSince.IsZero()) && ps.processed.Load() >= m.opts.Topic.Stats(ps.p).EndOffset {
			ps.yieldSince, ps.unyielding = time.Time{}, false // caught up: may hold back again
		}
	}
}

// yieldPause is how long a held-back partition waits before it asks Yield again.
const yieldPause = 2 * time.Millisecond

// yield holds the partition's worker back while opts.Yield says ingest is busy, within
// the bounds of YieldLag and YieldFor. It returns false when ctx ended.
func (m *Materializer) yield(ctx context.Context, ps *partState) bool {
	if m.opts.Yield == nil || ps.unyielding {
		return true
	}
	for m.opts.Yield() {
		now := time.Now()
		if ps.yieldSince.IsZero() {
			ps.yieldSince = now
		}
		if now.Sub(ps.yieldSince) >= m.opts.YieldFor || m.Lag() >= m.opts.YieldLag {
			ps.unyielding = true
			return true
		}
		if !wait.Sleep(ctx, yieldPause) {
			return false
		}
		m.yieldSeconds.Add(time.Since(now).Seconds())
	}
	return true
}

// writeAll appends recs in as few transactions as the gate allows: each transaction
// starts at the oldest record not yet appended, which the gate has let pass, and takes
// the records after it that the gate allows too. The gate holds the other partitions to
// that oldest record until the transaction commits: a partition that announced its later
// records before appending them would let the others push the head's newest time so far
// that the out-of-order samples of its own oldest records fall outside the window. It
// returns false when ctx ended.
func (m *Materializer) writeAll(ctx context.Context, ps *partState, w *batchWriter, recs []logcore.Record) bool {
	for i := 0; i < len(recs); {
		if !m.gate.wait(ctx, ps.p, w.firstTime(recs[i])) {
			return false
		}
		j := i + 1
		for j < len(recs) && m.gate.allows(ps.p, w.firstTime(recs[j])) {
			j++
		}
		maxT, err := w.write(ctx, recs[i:j])
		if err != nil {
			// Nothing of this chunk is in the store: read it again.
			m.appendErrTotal.Inc()
			m.log.Error("append samples to the store; retrying", "partition", ps.p, "offset", recs[i].Offset, "err", err)
			ps.consumer.SeekTo(recs[i].Offset)
			return wait.Sleep(ctx, time.Second)
		}
		pos := recs[j-1].Offset + 1
		if j == len(recs) {
			pos = ps.consumer.Position()
		}
		m.addMark(ps, pos, maxT)
		ps.processed.Store(pos)
		if ps.replayEnd >= 0 && pos >= ps.replayEnd {
			ps.replayEnd = -1
			if m.replaying.Add(-1) == 0 {
				if err := m.s.widenForReplay(0); err != nil {
					m.log.Error("restore the out-of-order window after the replay", "err", err)
				}
			}
		}
		now := time.Now().UnixMilli()
		for k := i; k < j; k++ {
			m.s.delay.Update(float64(max(0, now-recs[k].Timestamp)) / 1000)
		}
		m.recordsTotal.Add(j - i)
		m.s.arrived(w.names)
		i = j
	}
	return true
}

// batchWriter turns sample batches into TSDB appends. Not safe for concurrent use.
type batchWriter struct {
	m   *Materializer
	dec sample.Decoder // with SkipLabels: labels are decoded on a cache miss only
	b   labels.ScratchBuilder
	ls  []sample.Label // a missed series' decoded labels
	hp  prompb.Histogram
	// names are the distinct metric names of the last write, for Store.arrived.
	names []string
	// writes numbers the writes, for metricName.write.
	writes uint64
	cache  *seriesCache
}

func newBatchWriter(m *Materializer) *batchWriter {
	return &batchWriter{m: m, dec: sample.Decoder{SkipLabels: true}, b: labels.NewScratchBuilder(16), cache: newSeriesCache()}
}

// buildLabels makes the TSDB labels of a batch series, sorting them if the writer
// did not.
func (w *batchWriter) buildLabels(ls []sample.Label) labels.Labels {
	w.b.Reset()
	sorted := true
	for j, l := range ls {
		if j > 0 && string(l.Name) <= string(ls[j-1].Name) {
			sorted = false
		}
		w.b.Add(yolo(l.Name), yolo(l.Value))
	}
	if !sorted {
		w.b.Sort()
	}
	return w.b.Labels()
}

// firstTime is the timestamp of the first sample of rec's first series, or the
// record's log time if it has none.
func (w *batchWriter) firstTime(rec logcore.Record) int64 {
	if w.dec.Reset(rec.Value) == nil && w.dec.Next() {
		s := w.dec.Series()
		switch {
		case len(s.Samples) > 0:
			return s.Samples[0].T
		case len(s.Histograms) > 0:
			return s.Histograms[0].T
		}
	}
	return rec.Timestamp
}

// yolo views b as a string without copying; the ScratchBuilder copies when it builds.
func yolo(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// write appends every sample of recs in one appender transaction and returns the
// newest accepted sample timestamp. Samples the TSDB refuses (too old, duplicate
// timestamp with another value, ...) are counted and skipped; corrupt records are
// counted and skipped. An error means nothing was committed.
func (w *batchWriter) write(ctx context.Context, recs []logcore.Record) (int64, error) {
	app := w.m.s.db.Appender(ctx)
	maxT := int64(math.MinInt64)
	w.cache.trim()
	w.writes++
	w.names = w.names[:0]
	var floats, hists int
	for i := range recs {
		if err := w.dec.Reset(recs[i].Value); err != nil {
			w.m.corruptTotal.Inc()
			w.m.log.Warn("corrupt sample batch skipped", "offset", recs[i].Offset, "err", err)
			continue
		}
		for {
			// The series that followed the previous one last time is probably next: the
			// decoder then skips its labels with one comparison.
			guess := w.cache.guess()
			if guess != nil {
				w.dec.Expect(guess.raw)
			}
			if !w.dec.Next() {
				break
			}
			s := w.dec.Series()
			var ref storage.SeriesRef
			var lset labels.Labels
			var name *metricName
			var ce *cachedSeries
			var key uint64
			if w.dec.Matched() {
				ce = guess
				w.cache.confirm()
			} else {
				ce, key = w.cache.lookup(s.RawLabels)
			}
			if ce != nil {
				ref, lset, name = ce.ref, ce.lset, ce.name
			} else {
				// The decoder checked the labels' structure: decoding them cannot fail.
				w.ls, _ = sample.DecodeLabels(w.ls[:0], s.RawLabels)
				lset = w.buildLabels(w.ls)
				for _, l := range w.ls {
					if string(l.Name) == model.MetricNameLabel {
						name = w.cache.name(l.Value)
						break
					}
				}
			}
			if name != nil && name.write != w.writes {
				name.write = w.writes
				w.names = append(w.names, name.name)
			}
			for _, smp := range s.Samples {
				r, err := app.Append(ref, lset, smp.T, smp.V)
				if err != nil {
					w.reject(err)
					continue
				}
				ref = r
				maxT = max(maxT, smp.T)
				floats++
			}
			for _, h := range s.Histograms {
				w.hp.Reset()
				if err := w.hp.Unmarshal(h.Proto); err != nil {
					w.m.s.rejected["bad_histogram"].Inc()
					continue
				}
				var ih *histogram.Histogram
				var fh *histogram.FloatHistogram
				if w.hp.IsFloatHistogram() {
					fh = w.hp.ToFloatHistogram()
				} else {
					ih = w.hp.ToIntHistogram()
				}
				r, err := app.AppendHistogram(ref, lset, h.T, ih, fh)
				if err != nil {
					w.reject(err)
					continue
				}
				ref = r
				maxT = max(maxT, h.T)
				hists++
			}
			switch {
			case ce != nil && ref != ce.ref:
				ce.ref = ref // the head had dropped the series and made it again
			case ce == nil && ref != 0:
				w.cache.put(key, s.RawLabels, lset, ref, name)
			}
		}
		if err := w.dec.Err(); err != nil {
			// The series before the corrupt one are appended; the rest of the record is lost.
			w.m.corruptTotal.Inc()
			w.m.log.Warn("corrupt sample batch, rest skipped", "offset", recs[i].Offset, "err", err)
		}
	}
	if err := app.Commit(); err != nil {
		return 0, fmt.Errorf("commit appender: %w", err)
	}
	w.m.samplesTotal.Add(floats)
	w.m.histsTotal.Add(hists)
	return maxT, nil
}

func (w *batchWriter) reject(err error) {
	reason := "other"
	switch {
	case errors.Is(err, storage.ErrOutOfBounds):
		reason = "out_of_bounds"
	case errors.Is(err, storage.ErrTooOldSample):
		reason = "too_old"
	case errors.Is(err, storage.ErrOutOfOrderSample):
		reason = "out_of_order"
	case errors.Is(err, storage.ErrDuplicateSampleForTimestamp):
		reason = "duplicate_timestamp"
	}
	w.m.s.rejected[reason].Inc()
}
