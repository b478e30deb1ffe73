package ingest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/logcore"
	"github.com/vigilhq/vigil/sample"
)

// Protocol names where a batch came from; it is the protocol label of
// vigil_ingest_samples_total.
type Protocol uint8

// Protocols.
const (
	ProtocolRemoteWrite Protocol = iota
	ProtocolNATS
	numProtocols
)

var protocolNames = [numProtocols]string{"remote_write", "nats"}

// String is the protocol label value: "remote_write" or "nats".
func (p Protocol) String() string {
	if p < numProtocols {
		return protocolNames[p]
	}
	return fmt.Sprintf("protocol(%d)", p)
}

// Errors the receivers branch on to choose their answer.
var (
	// ErrOverloaded means the bound on bytes in flight is reached: retry later (HTTP 429).
	ErrOverloaded = errors.New("ingest: overloaded: too many bytes in flight, retry later")
	// ErrLogUnavailable wraps a failed log append: nothing acknowledged, retry later (HTTP 503).
	ErrLogUnavailable = errors.New("ingest: the log did not accept the append, retry later")
)

// maxRecordBytes is the size at which a partition's encoded series are cut into
// another record of the same Append (records stay small for readers; the Append is
// still one batch, so all-or-nothing per partition).
const maxRecordBytes = 1 << 20

// Options configure a Writer.
type Options struct {
	// Topic is the samples topic the Writer appends to.
	Topic logcore.Topic
	// Limits bound what a Write accepts; see config.LimitsConfig.
	Limits config.LimitsConfig
	// Metrics receives the vigil_ingest_* metrics; nil makes a private set.
	Metrics *metrics.Set
	// Logger; nil discards.
	Logger *slog.Logger
	// Now is the wall clock, for the timestamp limits; nil is time.Now.
	Now func() time.Time
	// KnownSeriesBytes bounds the memory that remembers accepted remote-write series
	// (see knownSeries); 0 is DefaultKnownSeriesBytes.
	KnownSeriesBytes int
}

// Writer validates decoded batches and appends them to the samples topic: labels
// sorted, series hashed to their partition, one sample batch encoded per partition and
// one Topic.Append per partition, concurrently across partitions. A series is either
// wholly in the log or rejected, never half-appended. It also holds the bound on bytes
// in flight that gives receivers their backpressure. Safe for concurrent use.
type Writer struct {
	topic      logcore.Topic
	limits     config.LimitsConfig
	validation NameValidation
	now        func() time.Time
	logger     *slog.Logger
	active     *activeSeries
	lastSweep  atomic.Int64
	known      *knownSeries

	inflight     atomic.Int64
	busy         busyMeter
	maxInflight  int64
	backpressure atomic.Pointer[func() error]

	encoders sync.Pool // *partitionEncoders

	samplesTotal  [numProtocols]*metrics.Counter
	histsTotal    [numProtocols]*metrics.Counter
	exemplarTotal [numProtocols]*metrics.Counter
	decodedBytes  [numProtocols]*metrics.Counter
	rejected      [numReasons]*metrics.Counter
	appendErrors  *metrics.Counter
}

// NewWriter makes a Writer; it fails on a bad limits.name_validation.
func NewWriter(opts Options) (*Writer, error) {
	if opts.Topic == nil {
		return nil, errors.New("ingest: Options.Topic is nil")
	}
	v, err := ParseNameValidation(opts.Limits.NameValidation)
	if err != nil {
		return nil, fmt.Errorf("limits.name_validation: %w", err)
	}
	set := opts.Metrics
	if set == nil {
		set = metrics.NewSet()
	}
	w := &Writer{
		topic:       opts.Topic,
		limits:      opts.Limits,
		validation:  v,
		now:         opts.Now,
		logger:      opts.Logger,
		maxInflight: int64(opts.Limits.MaxInflightBytes),
		known:       newKnownSeries(cmp.Or(opts.KnownSeriesBytes, DefaultKnownSeriesBytes)),
	}
	if w.now == nil {
		w.now = time.Now
	}
	if w.logger == nil {
		w.logger = slog.New(slog.DiscardHandler)
	}
	if opts.Limits.MaxActiveSeries > 0 {
		w.active = newActiveSeries(opts.Limits.MaxActiveSeries, opts.Limits.ActiveSeriesWindow.D())
	}
	for p := range numProtocols {
		w.samplesTotal[p] = set.GetOrCreateCounter(fmt.Sprintf(`vigil_ingest_samples_total{protocol=%q}`, p))
		w.histsTotal[p] = set.GetOrCreateCounter(fmt.Sprintf(`vigil_ingest_histograms_total{protocol=%q}`, p))
		w.exemplarTotal[p] = set.GetOrCreateCounter(fmt.Sprintf(`vigil_ingest_exemplars_total{protocol=%q}`, p))
		w.decodedBytes[p] = set.GetOrCreateCounter(fmt.Sprintf(`vigil_ingest_decoded_bytes_total{protocol=%q}`, p))
	}
	for r := range numReasons {
		w.rejected[r] = set.GetOrCreateCounter(fmt.Sprintf(`vigil_ingest_rejected_total{reason=%q}`, r))
	}
	w.appendErrors = set.GetOrCreateCounter(`vigil_ingest_append_errors_total`)
	set.GetOrCreateGauge(`vigil_ingest_inflight_bytes`, func() float64 { return float64(w.inflight.Load()) })
	n := opts.Topic.Partitions()
	w.encoders.New = func() any {
		return &partitionEncoders{parts: make([]partEnc, n)}
	}
	return w, nil
}

// Limits returns the limits the Writer was made with.
func (w *Writer) Limits() config.LimitsConfig { return w.limits }

// SetBackpressure installs fn, which Acquire calls before admitting a request: while
// fn returns an error (a downstream stage is too far behind), Acquire refuses with an
// error wrapping ErrOverloaded. fn must be cheap and safe for concurrent use; nil
// removes it.
func (w *Writer) SetBackpressure(fn func() error) {
	if fn == nil {
		w.backpressure.Store(nil)
		return
	}
	w.backpressure.Store(&fn)
}

// Acquire reserves n bytes of the in-flight budget (limits.max_inflight_bytes) for a
// request about to be read or decoded; it returns ErrOverloaded when the budget is
// spent. A request larger than the whole budget is admitted only when nothing else is
// in flight, so it can never starve. Every successful Acquire must be paired with a
// Release of the same n.
func (w *Writer) Acquire(n int64) error {
	if fn := w.backpressure.Load(); fn != nil {
		if err := (*fn)(); err != nil {
			return fmt.Errorf("%w: %v", ErrOverloaded, err)
		}
	}
	if w.maxInflight <= 0 {
		w.inflight.Add(n)
		return nil
	}
	for {
		cur := w.inflight.Load()
		if cur+n > w.maxInflight && cur > 0 {
			return ErrOverloaded
		}
		if w.inflight.CompareAndSwap(cur, cur+n) {
			return nil
		}
	}
}

// Release returns n bytes to the in-flight budget.
func (w *Writer) Release(n int64) { w.inflight.Add(-n) }

// Reject counts a request-level rejection in vigil_ingest_rejected_total; receivers
// call it for what never reaches Write (bad encoding, body too large, auth).
func (w *Writer) Reject(r Reason) { w.rejected[r].Inc() }

// Result is what one Write did.
type Result struct {
	// Samples, Histograms and Exemplars count what was appended.
	Samples, Histograms, Exemplars int
	// Rejected lists the series refused, by reason.
	Rejected Rejections
	// FailedPartitions lists the partitions whose append failed (with an
	// ErrLogUnavailable error); the series of the other partitions are in the log, and
	// Batch.Partition still reports them.
	FailedPartitions []int
}

// SkipFunc tells Write to leave out series i of the batch, which would go to
// partition p (used to finish a partly appended redelivery without duplicates).
type SkipFunc func(i, p int) bool

// Write validates b, then appends its valid series to the log; it returns once they
// are durable under the log's fsync policy. Rejected series are counted in the Result
// and are not appended; the others are. A request-level problem (too many series) is a
// *RequestError and nothing is appended. A failed append is ErrLogUnavailable (wrapped):
// partitions whose append succeeded keep their series, so a retry may duplicate them,
// but no series is ever split. b must not be used concurrently; b.Partition reports
// where each series went.
func (w *Writer) Write(ctx context.Context, b *Batch, proto Protocol) (Result, error) {
	return w.WriteSkipping(ctx, b, proto, nil)
}

// WriteSkipping is Write, leaving out the valid series for which skip (if not nil)
// returns true; those count neither as written nor as rejected, and their
// Batch.Partition is -2.
func (w *Writer) WriteSkipping(ctx context.Context, b *Batch, proto Protocol, skip SkipFunc) (Result, error) {
	var res Result
	b.EndSeries()
	if max := w.limits.MaxSeriesPerRequest; max > 0 && len(b.Series) > max {
		w.rejected[ReasonTooManySeries].Inc()
		return res, Reject(ReasonTooManySeries, "%d series in one request, more than the limit of %d", len(b.Series), max)
	}
	now := w.now()
	nowMs := now.UnixMilli()
	minT, maxT := int64(math.MinInt64), int64(math.MaxInt64)
	if d := w.limits.MaxPast.D(); d > 0 {
		minT = nowMs - d.Milliseconds()
	}
	if d := w.limits.MaxFuture.D(); d > 0 {
		maxT = nowMs + d.Milliseconds()
	}
	if w.active != nil {
		w.maybeSweep(now.Unix())
	}
	nparts := w.topic.Partitions()
	pe := w.encoders.Get().(*partitionEncoders)
	defer w.encoders.Put(pe)
	pe.reset()
	if cap(b.partition) < len(b.Series) {
		b.partition = make([]int32, len(b.Series))
	}
	b.partition = b.partition[:len(b.Series)]
	for i := range b.Series {
		s := &b.Series[i]
		b.partition[i] = -1
		var h uint64
		var reason Reason
		var msg func() string
		e, ok := b.known(i)
		key := b.key(i)
		if !ok && b.deriveKeys && len(s.Labels) > 0 {
			// The key is the labels as sent, encoded after a byte no 1.0 key starts with.
			pe.keyBuf = sample.AppendLabels(append(pe.keyBuf[:0], 0), s.Labels)
			key = pe.keyBuf
			e, ok = b.cursor.lookup(key)
		}
		if ok {
			// Accepted before: its labels are valid, normalized and hashed already.
			s.Labels, s.RawLabels, h = nil, e.encoded, e.hash
		} else {
			var ls []sample.Label
			ls, reason, msg = w.checkLabels(s.Labels, b.labelsASCII(i))
			s.Labels = ls
			if msg == nil {
				h, pe.hashBuf = seriesHash(pe.hashBuf, ls)
				if key != nil {
					w.known.add(key, ls, h)
				}
			}
		}
		if msg == nil {
			reason, msg = checkTimes(s, minT, maxT)
		}
		if msg != nil {
			res.Rejected.add(reason, msg)
			w.rejected[reason].Inc()
			continue
		}
		if len(s.Samples)+len(s.Histograms)+len(s.Exemplars) == 0 {
			b.partition[i] = partitionSkipped
			continue // nothing to store (e.g. a metadata-only series)
		}
		if w.active != nil && !w.active.admit(h, now.Unix()) {
			ls := seriesLabels(s)
			res.Rejected.add(ReasonActiveSeriesLimit, func() string {
				return fmt.Sprintf("series %s is new and the active-series limit of %d is reached", seriesString(ls), w.limits.MaxActiveSeries)
			})
			w.rejected[ReasonActiveSeriesLimit].Inc()
			continue
		}
		p := PartitionOf(h, nparts)
		if skip != nil && skip(i, p) {
			b.partition[i] = partitionSkipped
			continue
		}
		b.partition[i] = int32(p)
		pe.parts[p].add(s, nowMs)
		res.Samples += len(s.Samples)
		res.Histograms += len(s.Histograms)
		res.Exemplars += len(s.Exemplars)
	}
	if failed, err := w.appendAll(ctx, pe, b.RecordKey); err != nil {
		bad := make(map[int32]bool, len(failed))
		for _, p := range failed {
			bad[int32(p)] = true
		}
		for i, p := range b.partition {
			if bad[p] {
				b.partition[i] = -1
			}
		}
		w.appendErrors.Inc()
		return Result{Rejected: res.Rejected, FailedPartitions: failed}, err
	}
	w.samplesTotal[proto].Add(res.Samples)
	w.histsTotal[proto].Add(res.Histograms)
	w.exemplarTotal[proto].Add(res.Exemplars)
	w.decodedBytes[proto].Add(b.decodedBytes)
	return res, nil
}

// seriesLabels returns s's labels, decoding them when only RawLabels are set (a
// series the Writer knew); used for error messages.
func seriesLabels(s *sample.Series) []sample.Label {
	if len(s.Labels) == 0 && len(s.RawLabels) != 0 {
		ls, _ := sample.DecodeLabels(nil, s.RawLabels)
		return ls
	}
	return s.Labels
}

// checkTimes rejects a series with a sample, histogram or exemplar outside [minT, maxT].
func checkTimes(s *sample.Series, minT, maxT int64) (Reason, func() string) {
	bad := func(t int64) (Reason, func() string) {
		ls := seriesLabels(s)
		if t < minT {
			return ReasonTooFarInPast, func() string {
				return fmt.Sprintf("series %s has a sample at %s, older than limits.max_past allows", seriesString(ls), time.UnixMilli(t).UTC().Format(time.RFC3339))
			}
		}
		return ReasonTooFarInFuture, func() string {
			return fmt.Sprintf("series %s has a sample at %s, further in the future than limits.max_future allows", seriesString(ls), time.UnixMilli(t).UTC().Format(time.RFC3339))
		}
	}
	for _, x := range s.Samples {
		if x.T < minT || x.T > maxT {
			return bad(x.T)
		}
	}
	for _, x := range s.Histograms {
		if x.T < minT || x.T > maxT {
			return bad(x.T)
		}
	}
	return 0, nil
}

func (w *Writer) maybeSweep(now int64) {
	last := w.lastSweep.Load()
	every := w.active.window / 8
	if every < 1 {
		every = 1
	}
	if now-last < every || !w.lastSweep.CompareAndSwap(last, now) {
		return
	}
	go w.active.sweep(now)
}

// appendAll does one Append per non-empty partition, all at once, its records keyed
// key; it returns the partitions that failed and the first error.
func (w *Writer) appendAll(ctx context.Context, pe *partitionEncoders, key []byte) ([]int, error) {
	n := len(pe.parts)
	if cap(pe.recs) < n {
		pe.recs, pe.bases, pe.errs = make([][]logcore.Record, n), make([]int64, n), make([]error, n)
	}
	recs, errs := pe.recs[:n], pe.errs[:n]
	some := false
	for p := range pe.parts {
		part := &pe.parts[p]
		part.recs = part.recs[:0]
		for _, e := range part.encs[:part.used] {
			part.recs = append(part.recs, logcore.Record{Timestamp: part.ts, Key: key, Value: e.Bytes()})
		}
		recs[p], errs[p] = part.recs, nil
		some = some || len(part.recs) > 0
	}
	if !some {
		return nil, nil
	}
	logcore.AppendPartitions(ctx, w.topic, recs, pe.bases[:n], errs)
	var failed []int
	var first error
	for p, err := range errs {
		if err != nil {
			w.logger.Warn("append to the samples topic failed", "partition", p, "err", err)
			failed = append(failed, p)
			if first == nil {
				first = fmt.Errorf("%w: partition %d: %v", ErrLogUnavailable, p, err)
			}
		}
	}
	clear(recs)
	return failed, first
}

// partitionEncoders is the pooled per-Write state: for each partition, the sample
// batches being encoded.
type partitionEncoders struct {
	parts   []partEnc
	recs    [][]logcore.Record // per partition, for AppendPartitions
	bases   []int64
	errs    []error
	hashBuf []byte
	keyBuf  []byte
}

type partEnc struct {
	encs []*sample.Encoder // encs[:used] hold this Write's records
	used int
	n    int // series
	ts   int64
	recs []logcore.Record
}

func (pe *partitionEncoders) reset() {
	for i := range pe.parts {
		p := &pe.parts[i]
		p.used, p.n, p.ts = 0, 0, 0
		clear(p.recs[:cap(p.recs)])
	}
}

// add encodes s into the partition's current record, starting another past maxRecordBytes.
func (p *partEnc) add(s *sample.Series, nowMs int64) {
	if p.used == 0 || len(p.encs[p.used-1].Bytes()) >= maxRecordBytes {
		if p.used == len(p.encs) {
			p.encs = append(p.encs, new(sample.Encoder))
		}
		p.encs[p.used].Reset()
		p.used++
	}
	p.encs[p.used-1].AppendSeries(s)
	p.n++
	if p.ts == 0 {
		p.ts = nowMs
	}
}
