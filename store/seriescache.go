package store

import (
	"bytes"
	"hash/maphash"
	"math"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
)

// seriesCache maps a series' encoded labels, as a sample batch holds them
// (sample.Series.RawLabels), to the series' TSDB labels and reference, so that a known
// series costs neither decoding its labels nor the TSDB's lookup by labels. Batches
// tend to repeat their series in the same order (one scrape after another), so it
// first tries the series that followed the previous one last time, which costs one
// bytes.Equal on memory read in sequence; otherwise a hash of the encoded labels and one
// map lookup (a random memory access) find the series. The bytes are always verified,
// so a hash collision is a miss, never another series; two encodings of the same labels
// (a writer using longer varints than needed) are two entries of one series. A
// reference the head has dropped is the TSDB's business: Append looks the series up by
// the labels again and returns the new reference, which the caller stores with put.
//
// It holds a copy of every cached series' encoded labels (about the size of the labels
// themselves; the TSDB labels share the head's copy) and is cleared by trim once it
// reaches maxCachedSeries. Not safe for concurrent use.
type seriesCache struct {
	seed    maphash.Seed
	index   map[uint64]uint32 // hash of the encoded labels → entries index
	entries []cachedSeries
	names   map[string]*metricName // interned __name__ values of the entries
	arena   []byte                 // the entries' encoded labels, in chunks of cacheArenaChunk
	prev    uint32                 // the entry found last, or noEntry
	limit   int                    // maxCachedSeries (tests lower it)
}

// cachedSeries is one series of the cache. Pointers to it are valid until the next put.
type cachedSeries struct {
	raw  []byte // the encoded labels, in the arena
	lset labels.Labels
	ref  storage.SeriesRef
	name *metricName // nil if the series has no __name__
	next uint32      // the entry found after this one last time, or noEntry
}

// noEntry is the index of no entry.
const noEntry = math.MaxUint32

// metricName is an interned metric name with the number of the last write that
// reported it, so that reporting a write's distinct names needs no lookup by name.
type metricName struct {
	name  string
	write uint64
}

// maxCachedSeries bounds a partition's series cache; it is cleared when full (between
// writes, so a write may take it past this by the series of one poll).
const maxCachedSeries = 1 << 21

// cacheArenaChunk is the size of the chunks the cache copies encoded labels into.
const cacheArenaChunk = 64 << 10

func newSeriesCache() *seriesCache {
	return &seriesCache{seed: maphash.MakeSeed(), index: map[uint64]uint32{}, names: map[string]*metricName{}, prev: noEntry, limit: maxCachedSeries}
}

// get returns the series whose encoded labels are raw, or nil and raw's hash for put.
func (c *seriesCache) get(raw []byte) (*cachedSeries, uint64) {
	if g := c.guess(); g != nil && bytes.Equal(g.raw, raw) {
		c.confirm()
		return g, 0
	}
	return c.lookup(raw)
}

// guess returns the series that followed the one found last, last time, or nil. If it
// is the next one (its raw is the series' encoded labels), the caller says so with
// confirm; otherwise it calls lookup.
func (c *seriesCache) guess() *cachedSeries {
	if c.prev == noEntry {
		return nil
	}
	if i := c.entries[c.prev].next; i < uint32(len(c.entries)) {
		return &c.entries[i]
	}
	return nil
}

// confirm notes that the series guess returned was found.
func (c *seriesCache) confirm() { c.prev = c.entries[c.prev].next }

// lookup is get without the guess: by hash.
func (c *seriesCache) lookup(raw []byte) (*cachedSeries, uint64) {
	h := c.hash(raw)
	if i, ok := c.index[h]; ok && bytes.Equal(c.entries[i].raw, raw) {
		c.follow(i)
		return &c.entries[i], h
	}
	return nil, h
}

// hash is the key of encoded labels raw in the index.
func (c *seriesCache) hash(raw []byte) uint64 { return maphash.Bytes(c.seed, raw) }

// follow notes that entry i is found after the previous one.
func (c *seriesCache) follow(i uint32) {
	if c.prev != noEntry && c.entries[c.prev].next != i {
		c.entries[c.prev].next = i
	}
	c.prev = i
}

// put caches the series of encoded labels raw (of hash h, from get), replacing what
// hash h held.
// name must come from c.name since the last clear (trim).
func (c *seriesCache) put(h uint64, raw []byte, lset labels.Labels, ref storage.SeriesRef, name *metricName) {
	if i, ok := c.index[h]; ok {
		e := &c.entries[i]
		if !bytes.Equal(e.raw, raw) {
			e.raw = c.copy(raw)
		}
		e.lset, e.ref, e.name = lset, ref, name
		c.follow(i)
		return
	}
	i := uint32(len(c.entries))
	c.index[h] = i
	c.entries = append(c.entries, cachedSeries{raw: c.copy(raw), lset: lset, ref: ref, name: name, next: noEntry})
	c.follow(i)
}

// name interns metric name n.
func (c *seriesCache) name(n []byte) *metricName {
	if mn, ok := c.names[string(n)]; ok {
		return mn
	}
	mn := &metricName{name: string(n)}
	c.names[mn.name] = mn
	return mn
}

// trim clears the cache if it holds maxCachedSeries series or names. The writer calls it
// between writes only, so that within one write a name has one metricName.
func (c *seriesCache) trim() {
	if len(c.entries) >= c.limit || len(c.names) >= c.limit {
		c.clear()
	}
}

func (c *seriesCache) clear() {
	clear(c.index)
	clear(c.names)
	clear(c.entries) // drop the references to the labels and the arena
	c.entries = c.entries[:0]
	c.arena = nil
	c.prev = noEntry
}

// copy copies raw into the arena.
func (c *seriesCache) copy(raw []byte) []byte {
	if len(raw) > cap(c.arena)-len(c.arena) {
		c.arena = make([]byte, 0, max(cacheArenaChunk, len(raw)))
	}
	n := len(c.arena)
	c.arena = append(c.arena, raw...)
	return c.arena[n:len(c.arena):len(c.arena)]
}
