package rollup

import (
	"math"
	"slices"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/vigilhq/vigil/sample"
)

// partition is the aggregation state of one input partition: the series it has seen,
// and per rule the open windows and counter carries. It is owned by one goroutine (no
// locks); the coordinator only ever sees what it sends.
type partition struct {
	id     int
	rules  []*ruleShard
	series map[uint64]seriesEntry
	// offset is the next input offset to process; maxT the newest sample timestamp
	// seen (noWatermark before the first).
	offset int64
	maxT   int64
	// staleMax is how long a series may be silent before its cache entry is dropped.
	staleMax int64
	sweepAt  int64
	appendMs int64 // append time of the record being processed

	dec     sample.Decoder
	sb      labels.ScratchBuilder
	lb      *labels.Builder
	keyBuf  []byte
	metrics *engineMetrics
}

// seriesEntry caches which groups of which rules a series feeds: the first match
// inline (most series feed one rollup), the others in more. Stored by value.
type seriesEntry struct {
	lastT int64
	n     int32 // number of matches
	first seriesMatch
	more  []seriesMatch
}

// match returns the i-th match.
func (e *seriesEntry) match(i int) *seriesMatch {
	if i == 0 {
		return &e.first
	}
	return &e.more[i-1]
}

type seriesMatch struct {
	rule  int32
	group int32
	hint  slotHint
}

// ruleShard is one rule's state in one partition.
type ruleShard struct {
	r *rule
	// sealed is the end of the newest window this partition has finished: samples of
	// windows ending at or before it are late. sent is the boundary last reported.
	sealed, sent int64
	windows      []*window // open windows, sorted by start
	spare        []*window
	groupIDs     groupIndex
	groups       []groupInfo
	freeIDs      []int32
	carries      map[uint64]carry
	// forced are seals the first run made at these offsets (from the rollups topic),
	// re-applied during the replay after a crash, sorted by offset.
	forced []sealMark
}

// groupInfo is one interned group; an empty key marks a free id.
type groupInfo struct {
	key   string
	lastT int64
}

// window is one open window of one rule in one partition: accumulators indexed by
// group id (in pages of accPage, so growth wastes at most one page), and the ids that
// have samples in the window, in first-arrival order.
type window struct {
	start   int64
	pages   [][]acc
	touched []int32
}

const accPageBits = 10

// acc returns group g's accumulator, allocating its page if needed.
func (w *window) acc(g int32) *acc {
	pi := int(g) >> accPageBits
	for pi >= len(w.pages) {
		w.pages = append(w.pages, nil)
	}
	pg := w.pages[pi]
	if pg == nil {
		pg = make([]acc, 1<<accPageBits)
		w.pages[pi] = pg
	}
	return &pg[int(g)&(1<<accPageBits-1)]
}

// has reports whether group g has samples in the window.
func (w *window) has(g int32) bool {
	pi := int(g) >> accPageBits
	return pi < len(w.pages) && w.pages[pi] != nil && w.pages[pi][int(g)&(1<<accPageBits-1)].Count > 0
}

func newPartition(id int, rules []*rule, m *engineMetrics) *partition {
	p := &partition{id: id, series: map[uint64]seriesEntry{}, maxT: noWatermark, metrics: m,
		sb: labels.NewScratchBuilder(16), lb: labels.NewBuilder(labels.EmptyLabels())}
	p.setRules(rules, nil)
	return p
}

// setRules installs a new rule set, keeping the shard of every rule whose fingerprint
// is unchanged (old[i] is the shard of the rule of the same name and fingerprint).
func (p *partition) setRules(rules []*rule, old map[string]*ruleShard) {
	p.rules = p.rules[:0]
	p.staleMax = 0
	for _, r := range rules {
		rs := old[r.name]
		if rs == nil || rs.r.fingerprint != r.fingerprint {
			rs = p.newShard(r)
		}
		rs.r = r
		p.rules = append(p.rules, rs)
		p.staleMax = max(p.staleMax, r.staleness+r.interval+r.lateness)
	}
	clear(p.series) // group ids of dropped shards are gone; the cache refills itself
}

// shard returns the shard of the named rule, or nil.
func (p *partition) shard(name string) *ruleShard {
	for _, rs := range p.rules {
		if rs.r.name == name {
			return rs
		}
	}
	return nil
}

// newShard returns an empty shard for r whose watermark starts at the partition's:
// a rollup added at a reload treats input as late exactly as the others do.
func (p *partition) newShard(r *rule) *ruleShard {
	rs := &ruleShard{r: r, sealed: noWatermark, sent: noWatermark, groupIDs: newGroupIndex(), carries: map[uint64]carry{}}
	if p.maxT != noWatermark {
		rs.sealed = r.sealedBoundary(p.maxT - r.lateness)
	}
	return rs
}

// processBatch aggregates one record value (a sample batch) at input offset off,
// appended to the log at appendMs (0: unknown). A batch that does not decode is
// counted and skipped.
//
// A sample moves the watermark by at most its record's append time, so a sample from
// the future (a skewed client clock) is aggregated but does not make the real samples
// after it late. The append time is in the log, so a replay decides the same.
func (p *partition) processBatch(off, appendMs int64, value []byte) {
	p.applyForced(off)
	p.offset = off + 1
	p.appendMs = appendMs
	if len(p.rules) == 0 {
		// No rollup configured: nothing to aggregate, and no watermark to keep.
		return
	}
	if err := p.dec.Reset(value); err != nil {
		p.metrics.badBatches.Inc()
		return
	}
	for p.dec.Next() {
		s := p.dec.Series()
		if len(s.Samples) == 0 {
			continue
		}
		h := hashLabels(s.Labels)
		e, ok := p.series[h]
		if !ok {
			e = p.newSeries(h, s.Labels)
		}
		for _, smp := range s.Samples {
			p.push(&e, h, smp.T, smp.V)
		}
		p.series[h] = e
	}
	if p.dec.Err() != nil {
		p.metrics.badBatches.Inc()
	}
}

// push aggregates one sample of a cached series.
func (p *partition) push(e *seriesEntry, h uint64, t int64, v float64) {
	if isNaN(v) {
		return
	}
	e.lastT = max(e.lastT, t)
	for i := 0; i < int(e.n); i++ {
		m := e.match(i)
		rs := p.rules[m.rule]
		if !rs.push(m.group, h, t, v, &m.hint) {
			p.metrics.late.Inc()
		}
	}
	if p.appendMs > 0 && t > p.appendMs {
		t = p.appendMs
	}
	if t > p.maxT {
		p.maxT = t
		for _, rs := range p.rules {
			if b := rs.r.sealedBoundary(t - rs.r.lateness); b > rs.sealed {
				rs.sealed = b
			}
		}
	}
}

// applyForced applies the recorded seals made before input offset off.
func (p *partition) applyForced(off int64) {
	for _, rs := range p.rules {
		for len(rs.forced) > 0 && rs.forced[0].Offset <= off {
			rs.sealed = max(rs.sealed, rs.forced[0].Sealed)
			rs.forced = rs.forced[1:]
		}
	}
}

// advanceIdle moves the watermark of an idle partition (no unread input) to the wall
// clock: windows ending more than lateness before now close even without new samples.
func (p *partition) advanceIdle(nowMs int64) {
	for _, rs := range p.rules {
		if b := rs.r.sealedBoundary(nowMs - rs.r.lateness); b > rs.sealed {
			rs.sealed = b
		}
	}
}

func (p *partition) newSeries(h uint64, ls []sample.Label) seriesEntry {
	any := false
	for _, rs := range p.rules {
		if rs.r.matchesRaw(ls) {
			any = true
			break
		}
	}
	if !any {
		// The common case for most series: cache the miss without building labels.
		e := seriesEntry{lastT: math.MinInt64}
		p.series[h] = e
		return e
	}
	p.sb.Reset()
	for _, l := range ls {
		p.sb.Add(string(l.Name), string(l.Value))
	}
	p.sb.Sort()
	lset := p.sb.Labels()
	e := seriesEntry{lastT: math.MinInt64}
	for i, rs := range p.rules {
		if !rs.r.matches(lset) {
			continue
		}
		g := rs.r.groupLabels(p.lb, lset)
		p.keyBuf = encodeKey(p.keyBuf[:0], g)
		m := seriesMatch{rule: int32(i), group: rs.groupID(p.keyBuf), hint: slotHint{win: noWatermark}}
		if e.n == 0 {
			e.first = m
		} else {
			e.more = append(e.more, m)
		}
		e.n++
	}
	p.series[h] = e
	return e
}

// groupID interns a group key.
func (rs *ruleShard) groupID(key []byte) int32 {
	if id, ok := rs.groupIDs.get(key, rs.groups); ok {
		return id
	}
	k := string(key)
	var id int32
	if n := len(rs.freeIDs); n > 0 {
		id = rs.freeIDs[n-1]
		rs.freeIDs = rs.freeIDs[:n-1]
		rs.groups[id] = groupInfo{key: k, lastT: math.MinInt64}
	} else {
		id = int32(len(rs.groups))
		rs.groups = append(rs.groups, groupInfo{key: k, lastT: math.MinInt64})
	}
	rs.groupIDs.put(k, id)
	return id
}

// push adds a sample to group g's window; it returns false for a late sample.
func (rs *ruleShard) push(g int32, h uint64, t int64, v float64, hint *slotHint) bool {
	r := rs.r
	start := r.windowStart(t)
	if start+r.interval <= rs.sealed {
		return false
	}
	w := rs.window(start)
	a := w.acc(g)
	if a.Count == 0 {
		w.touched = append(w.touched, g)
	}
	a.push(r.need, h, t, v, start, hint)
	gi := &rs.groups[g]
	gi.lastT = max(gi.lastT, t)
	return true
}

// window returns the open window starting at start, opening it if needed.
func (rs *ruleShard) window(start int64) *window {
	n := len(rs.windows)
	for i := n - 1; i >= 0; i-- {
		w := rs.windows[i]
		if w.start == start {
			return w
		}
		if w.start < start {
			nw := rs.newWindow(start)
			rs.windows = slices.Insert(rs.windows, i+1, nw)
			return nw
		}
	}
	nw := rs.newWindow(start)
	rs.windows = slices.Insert(rs.windows, 0, nw)
	return nw
}

func (rs *ruleShard) newWindow(start int64) *window {
	if n := len(rs.spare); n > 0 {
		w := rs.spare[n-1]
		rs.spare = rs.spare[:n-1]
		w.start = start
		return w
	}
	return &window{start: start}
}

// windowPartial is one partition's sealed window.
type windowPartial struct {
	Start  int64
	Groups []groupPartial
}

// sealMsg reports that a partition has sealed a rule up to Sealed, with the windows it
// sealed since its last report.
type sealMsg struct {
	part    int
	rule    int
	sealed  int64
	offset  int64 // the partition's next input offset when it reported
	windows []windowPartial
}

// sealMark is one observation of a partition: about to read input offset Offset, it
// had sealed a rule up to Sealed. Emitted results record the marks they depended on,
// and a replay re-applies them at the same offsets (see doc.go, Exactly once).
type sealMark struct {
	Offset int64
	Sealed int64
}

// seal finishes every window of the shard that ends at or before rs.sealed and
// returns them, oldest first.
func (rs *ruleShard) seal() []windowPartial {
	var out []windowPartial
	r := rs.r
	for len(rs.windows) > 0 && rs.windows[0].start+r.interval <= rs.sealed {
		w := rs.windows[0]
		rs.windows = rs.windows[1:]
		wp := windowPartial{Start: w.start, Groups: make([]groupPartial, 0, len(w.touched))}
		for _, g := range w.touched {
			a := w.acc(g)
			wp.Groups = append(wp.Groups, a.seal(r.need, rs.groups[g].key, rs.carries, r.staleness))
			x := a.Ext
			if x != nil {
				x.reset()
			}
			*a = acc{Ext: x}
		}
		w.touched = w.touched[:0]
		out = append(out, wp)
		rs.spare = append(rs.spare, w)
	}
	// Carries older than any sample that can still be accepted are stale anyway.
	if len(rs.carries) > 0 && len(out) > 0 {
		limit := rs.sealed - r.interval - r.staleness
		for h, c := range rs.carries {
			if c.T < limit {
				delete(rs.carries, h)
			}
		}
	}
	return out
}

// collect seals every shard whose boundary moved and returns the reports to send.
func (p *partition) collect(dst []sealMsg) []sealMsg {
	for i, rs := range p.rules {
		if rs.sealed == rs.sent {
			continue
		}
		dst = append(dst, sealMsg{part: p.id, rule: i, sealed: rs.sealed, offset: p.offset, windows: rs.seal()})
		rs.sent = rs.sealed
	}
	if p.maxT != noWatermark && p.maxT >= p.sweepAt {
		p.sweep()
		p.sweepAt = p.maxT + p.staleMax/4 + 1
	}
	return dst
}

// sweep drops series and groups that have been silent for longer than any rule keeps
// state (series churn), so memory follows the active series.
func (p *partition) sweep() {
	limit := p.maxT - p.staleMax
	for h, e := range p.series {
		if e.lastT < limit {
			delete(p.series, h)
		}
	}
	for _, rs := range p.rules {
		for id := range rs.groups {
			gi := &rs.groups[id]
			if gi.key != "" && gi.lastT < limit && !rs.inOpenWindow(int32(id)) {
				rs.groupIDs.remove(gi.key, int32(id))
				*gi = groupInfo{}
				rs.freeIDs = append(rs.freeIDs, int32(id))
			}
		}
	}
	p.metrics.setGroups(p.id, p.activeGroups(), len(p.series))
}

func (rs *ruleShard) inOpenWindow(id int32) bool {
	for _, w := range rs.windows {
		if w.has(id) {
			return true
		}
	}
	return false
}

func (p *partition) activeGroups() int {
	n := 0
	for _, rs := range p.rules {
		n += rs.groupIDs.len()
	}
	return n
}

// hashLabels is the series id: xxhash of the labels as sent (sorted by name). It is
// stored in checkpoints, so it must stay the same across versions.
func hashLabels(ls []sample.Label) uint64 {
	var d xxhash.Digest
	d.Reset()
	sep := []byte{0xff}
	for _, l := range ls {
		d.Write(l.Name)
		d.Write(sep)
		d.Write(l.Value)
		d.Write(sep)
	}
	return d.Sum64()
}
