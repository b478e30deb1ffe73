package ingest

import (
	"encoding/binary"

	"github.com/vigilhq/vigil/sample"
)

// Batch is a reusable set of decoded series on their way to the log. Decoders fill it
// with BeginSeries, AddLabel, AddSample, AddHistogram and AddExemplar; the Writer
// validates, partitions and appends it.
//
// Labels, histogram protos and exemplar labels are not copied: they alias whatever
// buffer the decoder gave (usually the decompressed request body), which must stay
// unchanged until the Write that takes the batch returns. After Reset, a Batch keeps
// its capacity, so a pooled Batch decodes without allocating in steady state.
// A Batch is not safe for concurrent use.
type Batch struct {
	// Series are the decoded series, in input order. Their slices point into the
	// batch's flat buffers; they are valid until the next Reset.
	Series []sample.Series
	// Source optionally tags each series with the index of the message it came from
	// (NATS/JetStream); decoders that use it append one entry per series.
	Source []int32
	// RecordKey, when set, is the key of every record the Write of this batch appends
	// (the JetStream consumer names in it the messages the records hold).
	RecordKey []byte

	labels    []sample.Label
	samples   []sample.Sample
	hists     []sample.Histogram
	exemplars []sample.Exemplar
	exLabels  []sample.Label

	// ascii[i] tells that every label name and value of Series[i] is ASCII (so valid
	// UTF-8), as a decoder found in one pass over their bytes; curASCII is the open
	// series' flag, set by MarkLabelsASCII.
	ascii    []bool
	curASCII bool

	// cursor, when set (useCache), lets the 1.0 decoder look series up among those the
	// Writer accepted before (see knownSeries): keys[i] is series i's label fields as
	// sent (nil when they are not one leading run), hits[i] its entry when it was found
	// (its Labels are then left empty). curKey and curHit are the open series'.
	cursor knownCursor
	// deriveKeys makes the Writer key series by their labels as decoded (2.0, whose
	// label fields are symbol references that change from request to request).
	deriveKeys bool
	keys       [][]byte
	hits       []knownHit
	curKey     []byte
	curHit     knownHit

	// Start indexes of the open series in the flat buffers.
	open                           bool
	lab0, smp0, hst0, exm0, exLab0 int
	partition                      []int32
	decodedBytes                   int
}

// Reset empties the batch and keeps its buffers.
func (b *Batch) Reset() {
	clear(b.labels) // drop references to the previous request's buffer
	clear(b.exLabels)
	clear(b.hists)
	b.Series = b.Series[:0]
	b.Source = b.Source[:0]
	b.RecordKey = nil
	b.ascii = b.ascii[:0]
	b.curASCII = false
	clear(b.keys)
	clear(b.hits)
	b.keys, b.hits = b.keys[:0], b.hits[:0]
	b.curKey, b.curHit = nil, knownHit{}
	b.cursor, b.deriveKeys = knownCursor{}, false
	b.labels = b.labels[:0]
	b.samples = b.samples[:0]
	b.hists = b.hists[:0]
	b.exemplars = b.exemplars[:0]
	b.exLabels = b.exLabels[:0]
	b.partition = b.partition[:0]
	b.open = false
	b.decodedBytes = 0
}

// Len is the number of series.
func (b *Batch) Len() int { return len(b.Series) }

// BeginSeries starts a new series; what is added until the next BeginSeries or
// EndSeries belongs to it. An open series is ended first.
func (b *Batch) BeginSeries() {
	if b.open {
		b.EndSeries()
	}
	b.open = true
	b.lab0, b.smp0, b.hst0, b.exm0 = len(b.labels), len(b.samples), len(b.hists), len(b.exemplars)
}

// MarkLabelsASCII tells that every label name and value of the open series is ASCII,
// which lets the Writer skip their UTF-8 checks. A decoder calls it only after checking
// the bytes (isASCII); a wrong mark would let invalid UTF-8 into the log.
func (b *Batch) MarkLabelsASCII() { b.curASCII = true }

// labelsASCII reports whether series i was marked by MarkLabelsASCII.
func (b *Batch) labelsASCII(i int) bool { return i < len(b.ascii) && b.ascii[i] }

// isASCII reports whether every byte of p is below 0x80, eight bytes at a time.
func isASCII(p []byte) bool {
	var acc uint64
	for len(p) >= 8 {
		acc |= binary.LittleEndian.Uint64(p)
		p = p[8:]
	}
	for _, c := range p {
		acc |= uint64(c)
	}
	return acc&0x8080808080808080 == 0
}

// AddLabel adds a label to the open series. name and value are aliased, not copied.
func (b *Batch) AddLabel(name, value []byte) {
	b.labels = append(b.labels, sample.Label{Name: name, Value: value})
}

// AddSample adds a float sample (t in ms) to the open series.
func (b *Batch) AddSample(t int64, v float64) {
	b.samples = append(b.samples, sample.Sample{T: t, V: v})
}

// AddHistogram adds a native histogram sample, proto being its prompb.Histogram
// encoding (aliased, not copied).
func (b *Batch) AddHistogram(t int64, proto []byte) {
	b.hists = append(b.hists, sample.Histogram{T: t, Proto: proto})
}

// BeginExemplar starts an exemplar of the open series; AddExemplarLabel adds its labels.
func (b *Batch) BeginExemplar(t int64, v float64) {
	b.exLab0 = len(b.exLabels)
	b.exemplars = append(b.exemplars, sample.Exemplar{T: t, V: v})
}

// AddExemplarLabel adds a label to the exemplar begun last (aliased, not copied).
func (b *Batch) AddExemplarLabel(name, value []byte) {
	b.exLabels = append(b.exLabels, sample.Label{Name: name, Value: value})
	ex := &b.exemplars[len(b.exemplars)-1]
	ex.Labels = b.exLabels[b.exLab0:len(b.exLabels):len(b.exLabels)]
}

// EndSeries closes the open series, making it visible in Series. It is a no-op when
// no series is open.
func (b *Batch) EndSeries() {
	if !b.open {
		return
	}
	b.open = false
	b.ascii = append(b.ascii, b.curASCII)
	b.curASCII = false
	b.keys = append(b.keys, b.curKey)
	b.hits = append(b.hits, b.curHit)
	b.curKey, b.curHit = nil, knownHit{}
	b.Series = append(b.Series, sample.Series{
		Labels:     b.labels[b.lab0:len(b.labels):len(b.labels)],
		Samples:    b.samples[b.smp0:len(b.samples):len(b.samples)],
		Histograms: b.hists[b.hst0:len(b.hists):len(b.hists)],
		Exemplars:  b.exemplars[b.exm0:len(b.exemplars):len(b.exemplars)],
	})
}

// DropSeries discards the open series (for a decoder that finds it broken midway).
func (b *Batch) DropSeries() {
	if !b.open {
		return
	}
	b.open = false
	b.curASCII = false
	b.curKey, b.curHit = nil, knownHit{}
	b.labels = b.labels[:b.lab0]
	b.samples = b.samples[:b.smp0]
	b.hists = b.hists[:b.hst0]
	b.exemplars = b.exemplars[:b.exm0]
}

// truncate drops the series from n on (closed ones; an open series is left alone).
func (b *Batch) truncate(n int) {
	b.Series = b.Series[:n]
	b.ascii = b.ascii[:n]
	b.keys = b.keys[:n]
	b.hits = b.hits[:n]
	if len(b.Source) > n {
		b.Source = b.Source[:n]
	}
}

// known returns series i's entry among the Writer's known series, if it was found.
func (b *Batch) known(i int) (knownHit, bool) {
	if i < len(b.hits) && b.hits[i].encoded != nil {
		return b.hits[i], true
	}
	return knownHit{}, false
}

// useCache makes the decoders look series up in k until the next Reset.
func (b *Batch) useCache(k *knownSeries) { b.cursor = k.cursor() }

// cached reports whether useCache was called since the last Reset.
func (b *Batch) cached() bool { return b.cursor.gen != nil }

// key returns series i's label fields as sent, or nil.
func (b *Batch) key(i int) []byte {
	if i < len(b.keys) {
		return b.keys[i]
	}
	return nil
}

// SetDecodedBytes records the size of the decoded input, used for the bytes metrics.
func (b *Batch) SetDecodedBytes(n int) { b.decodedBytes = n }

// partitionSkipped marks a series that Write left out without rejecting it.
const partitionSkipped = -2

// Partition returns the partition series i was appended to by the last Write: -1 if
// it was rejected (or its partition's append failed), -2 if it was left out without
// being rejected (nothing to store, or skipped by WriteSkipping).
func (b *Batch) Partition(i int) int {
	if i >= len(b.partition) {
		return -1
	}
	return int(b.partition[i])
}
