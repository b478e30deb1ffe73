package ingest

import (
	"bytes"
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"

	"github.com/vigilhq/vigil/sample"
)

// knownSeries remembers the series a Writer has accepted, keyed by their label fields
// exactly as a remote-write 1.0 sender encoded them (the run of Label messages of a
// TimeSeries). A sender writes a series' labels the same way every time, so a series
// seen before skips parsing its labels, sorting, validating and hashing them, and
// encoding them for the log: the entry holds the outcome. Equal keys are equal label
// sets, and the outcome depends only on the labels and the Writer's limits, which do
// not change; keys are verified byte for byte, so a hash collision is never another
// series.
//
// Entries are laid out one after another in append-only slabs, in the order series
// were first accepted. Senders send their series in much the same order every time, so
// the entry after the one just found is tried first (knownCursor): a right guess costs
// one comparison of the key over memory read in order, with no hashing and no index
// lookup, which at 100k series would miss the CPU caches. Safe for concurrent use;
// bounded by its slabs (Options.KnownSeriesBytes), past which it starts over empty
// (requests in flight then still hold the old slabs until they finish).
type knownSeries struct {
	mu       sync.Mutex // serializes add
	scratch  []byte     // under mu
	maxSlabs int
	gen      atomic.Pointer[knownGen]
}

const (
	// DefaultKnownSeriesBytes bounds the slabs unless Options say otherwise (about 300
	// bytes a series of 8 labels: some 450k series).
	DefaultKnownSeriesBytes = 128 << 20
	knownSlabBytes          = 1 << 20
	knownHeader             = 16 // keyLen u32, encLen u32, hash u64
)

// knownGen is one fill of the cache; a full one is replaced by an empty one, and
// readers holding the old one go on using it.
type knownGen struct {
	mu    sync.RWMutex
	index map[uint64]knownRef         // xxhash of the key -> its entry
	slabs []atomic.Pointer[knownSlab] // maxSlabs of them
	nslab int                         // slabs in use (under knownSeries.mu)
}

// knownSlab holds entries in buf[:used]; bytes below used never change.
type knownSlab struct {
	buf  []byte
	used atomic.Int32
}

// knownRef locates an entry: slab index and offset.
type knownRef struct{ slab, off int32 }

// knownHit is a series found in the cache: its normalized labels encoded for the log
// (aliasing a slab, never modified) and its SeriesHash.
type knownHit struct {
	encoded []byte
	hash    uint64
}

// newKnownSeries makes a cache of at most maxBytes of slabs (at least one slab).
func newKnownSeries(maxBytes int) *knownSeries {
	k := &knownSeries{maxSlabs: max(1, maxBytes/knownSlabBytes)}
	k.gen.Store(k.newGen())
	return k
}

func (k *knownSeries) newGen() *knownGen {
	return &knownGen{index: map[uint64]knownRef{}, slabs: make([]atomic.Pointer[knownSlab], k.maxSlabs)}
}

// memory estimates the bytes the current generation holds: its slabs and its index.
func (k *knownSeries) memory() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	g := k.gen.Load()
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.nslab*knownSlabBytes + len(g.index)*48
}

// entry returns the entry at r if it exists and its key is key, and the ref of the
// entry after it.
func (g *knownGen) entry(r knownRef, key []byte) (knownHit, knownRef, bool) {
	if r.slab < 0 || int(r.slab) >= len(g.slabs) {
		return knownHit{}, r, false
	}
	s := g.slabs[r.slab].Load()
	if s == nil {
		return knownHit{}, r, false
	}
	used := s.used.Load()
	if r.off >= used {
		// Past the slab's end: the next entry, if any, starts the next slab.
		if r.off > 0 && int(r.slab)+1 < len(g.slabs) {
			return g.entry(knownRef{slab: r.slab + 1}, key)
		}
		return knownHit{}, r, false
	}
	b := s.buf[r.off:used]
	kl, el := int(binary.LittleEndian.Uint32(b)), int(binary.LittleEndian.Uint32(b[4:]))
	if kl != len(key) || !bytes.Equal(b[knownHeader:knownHeader+kl], key) {
		return knownHit{}, r, false
	}
	end := knownHeader + kl + el
	hit := knownHit{encoded: b[knownHeader+kl : end : end], hash: binary.LittleEndian.Uint64(b[8:])}
	return hit, knownRef{slab: r.slab, off: r.off + int32(end)}, true
}

// knownCursor looks series up in one generation of the cache, guessing that each
// comes after the one found before. Not safe for concurrent use; the zero value is
// unusable (see knownSeries.cursor).
type knownCursor struct {
	gen  *knownGen
	next knownRef
}

// cursor starts a lookup session (one request's worth).
func (k *knownSeries) cursor() knownCursor {
	return knownCursor{gen: k.gen.Load(), next: knownRef{slab: -1}}
}

// lookup returns the entry for the label fields key.
func (c *knownCursor) lookup(key []byte) (knownHit, bool) {
	if hit, next, ok := c.gen.entry(c.next, key); ok {
		c.next = next
		return hit, true
	}
	h := xxhash.Sum64(key)
	c.gen.mu.RLock()
	r, ok := c.gen.index[h]
	c.gen.mu.RUnlock()
	if !ok {
		return knownHit{}, false
	}
	hit, next, ok := c.gen.entry(r, key)
	if ok {
		c.next = next
	}
	return hit, ok
}

// add remembers that the series whose label fields are key was accepted with the
// normalized labels ls and series hash hash. A key whose hash another key holds
// replaces it in the index.
func (k *knownSeries) add(key []byte, ls []sample.Label, hash uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.scratch = sample.AppendLabels(k.scratch[:0], ls)
	enc := k.scratch
	size := knownHeader + len(key) + len(enc)
	if size > knownSlabBytes {
		return // never: label limits keep series far smaller
	}
	g := k.gen.Load()
	var s *knownSlab
	if g.nslab > 0 {
		s = g.slabs[g.nslab-1].Load()
	}
	if s == nil || int(s.used.Load())+size > knownSlabBytes {
		if g.nslab == k.maxSlabs {
			g = k.newGen()
			k.gen.Store(g)
		}
		s = &knownSlab{buf: make([]byte, knownSlabBytes)}
		g.slabs[g.nslab].Store(s)
		g.nslab++
	}
	off := s.used.Load()
	b := s.buf[off:off]
	b = binary.LittleEndian.AppendUint32(b, uint32(len(key)))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(enc)))
	b = binary.LittleEndian.AppendUint64(b, hash)
	b = append(b, key...)
	_ = append(b, enc...)
	s.used.Store(off + int32(size))
	g.mu.Lock()
	g.index[xxhash.Sum64(key)] = knownRef{slab: int32(g.nslab - 1), off: off}
	g.mu.Unlock()
}
