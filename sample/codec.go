// Package sample is the encoding of metric samples in the log's "samples" topic: ingest
// writes it, and the materializer and the rollup engine read it. One log record value
// holds one batch of series.
//
// Wire format (all integers are Go binary varints/uvarints; part of the on-disk format):
//
//	batch     := version:byte(=1) nseries:uvarint series*
//	series    := nlabels:uvarint (name:bytes value:bytes)*
//	             nfloats:uvarint (t:varint v:float64-LE)*
//	             nhists:uvarint  (t:varint proto:bytes)*
//	             nexemplars:uvarint (t:varint v:float64-LE nlabels:uvarint (name:bytes value:bytes)*)*
//	bytes     := len:uvarint data
//
// Float timestamps after the first of a series are deltas from the previous one.
// Histogram protos are prompb.Histogram (remote-write 1.0 message) encodings.
// Labels are written in the order given; writers give them sorted by name.
package sample

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Version is the first byte of every batch.
const Version = 1

// ErrCorrupt reports a batch that does not follow the wire format.
var ErrCorrupt = errors.New("sample: corrupt batch")

// Label is one name/value pair. Decoded labels alias the batch's buffer.
type Label struct {
	Name, Value []byte
}

// Sample is one float sample; T is milliseconds since the Unix epoch.
type Sample struct {
	T int64
	V float64
}

// Histogram is one native histogram sample as a prompb.Histogram encoding.
type Histogram struct {
	T     int64
	Proto []byte
}

// Exemplar is one exemplar with its own labels.
type Exemplar struct {
	T      int64
	V      float64
	Labels []Label
}

// Series is one series of a batch. The decoder reuses its slices: a Series is valid
// until the next call to Decoder.Next.
type Series struct {
	// Labels are the series' labels; a Decoder with SkipLabels set leaves them empty.
	Labels []Label
	// RawLabels is the wire encoding of Labels (their count and the name/value pairs),
	// set by the Decoder, aliasing the batch; the Encoder writes it only when Labels is
	// empty (see AppendSeries). Equal RawLabels
	// decode to equal Labels (the converse need not hold: a varint may be written in
	// more bytes than needed), so they can key a cache verified with bytes.Equal.
	// DecodeLabels decodes them.
	RawLabels  []byte
	Samples    []Sample
	Histograms []Histogram
	Exemplars  []Exemplar
}

// Encoder appends series to a batch. It does not allocate once its buffer has grown.
// Use: Reset, then for each series AppendSeries. Not safe for concurrent use.
type Encoder struct {
	buf     []byte
	nseries int
}

// Reset starts a new batch, keeping the buffer.
func (e *Encoder) Reset() {
	e.buf = append(e.buf[:0], Version, 0, 0, 0, 0, 0)
	e.nseries = 0
}

// Len is the number of series in the batch.
func (e *Encoder) Len() int { return e.nseries }

// AppendSeries adds one series to the batch. It writes s.Labels, or, when s.Labels is
// empty and s.RawLabels is not, s.RawLabels verbatim: RawLabels must then be a label
// encoding as the Decoder and AppendLabels make them.
func (e *Encoder) AppendSeries(s *Series) {
	if len(e.buf) == 0 {
		e.Reset()
	}
	b := e.buf
	if len(s.Labels) == 0 && len(s.RawLabels) != 0 {
		b = append(b, s.RawLabels...)
	} else {
		b = appendLabels(b, s.Labels)
	}
	b = binary.AppendUvarint(b, uint64(len(s.Samples)))
	var prev int64
	for i, smp := range s.Samples {
		if i == 0 {
			b = binary.AppendVarint(b, smp.T)
		} else {
			b = binary.AppendVarint(b, smp.T-prev)
		}
		prev = smp.T
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(smp.V))
	}
	b = binary.AppendUvarint(b, uint64(len(s.Histograms)))
	for _, h := range s.Histograms {
		b = binary.AppendVarint(b, h.T)
		b = appendBytes(b, h.Proto)
	}
	b = binary.AppendUvarint(b, uint64(len(s.Exemplars)))
	for _, ex := range s.Exemplars {
		b = binary.AppendVarint(b, ex.T)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(ex.V))
		b = appendLabels(b, ex.Labels)
	}
	e.buf = b
	e.nseries++
}

// Bytes returns the encoded batch. It is valid until the next Reset or AppendSeries.
// The series count lives in a fixed 5-byte uvarint slot after the version byte, so that
// series can be appended without knowing their number in advance.
func (e *Encoder) Bytes() []byte {
	if len(e.buf) == 0 {
		e.Reset()
	}
	putFixedUvarint5(e.buf[1:6], uint64(e.nseries))
	return e.buf
}

// putFixedUvarint5 writes v as a uvarint padded to exactly 5 bytes (valid for v < 2^35).
func putFixedUvarint5(dst []byte, v uint64) {
	for i := 0; i < 4; i++ {
		dst[i] = byte(v&0x7f) | 0x80
		v >>= 7
	}
	dst[4] = byte(v & 0x7f)
}

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// AppendLabels appends ls to dst in the batch encoding of a series' labels, the form of
// Series.RawLabels.
func AppendLabels(dst []byte, ls []Label) []byte { return appendLabels(dst, ls) }

func appendLabels(b []byte, ls []Label) []byte {
	b = binary.AppendUvarint(b, uint64(len(ls)))
	for _, l := range ls {
		b = appendBytes(b, l.Name)
		b = appendBytes(b, l.Value)
	}
	return b
}

// Decoder iterates over the series of a batch without copying: decoded labels and
// histogram protos alias the buffer given to Reset. Not safe for concurrent use.
type Decoder struct {
	// SkipLabels makes Next check the structure of a series' labels and set only
	// Series.RawLabels, leaving Series.Labels empty, for callers that decode labels only
	// when they need them (DecodeLabels). Exemplar labels are decoded either way.
	SkipLabels bool

	expect  []byte // see Expect
	matched bool

	buf    []byte
	left   uint64
	series Series
	err    error
}

// Reset starts decoding batch b. It fails if b does not start with a known version.
func (d *Decoder) Reset(b []byte) error {
	d.err = nil
	d.left = 0
	if len(b) < 1 || b[0] != Version {
		d.err = fmt.Errorf("%w: unknown version", ErrCorrupt)
		return d.err
	}
	n, k := binary.Uvarint(b[1:])
	if k <= 0 {
		d.err = fmt.Errorf("%w: bad series count", ErrCorrupt)
		return d.err
	}
	d.buf = b[1+k:]
	d.left = n
	d.expect, d.matched = nil, false
	return nil
}

// Next decodes the next series; it returns false at the end of the batch or on error
// (see Err).
func (d *Decoder) Next() bool {
	if d.err != nil || d.left == 0 {
		return false
	}
	d.left--
	s := &d.series
	start := d.buf
	var err error
	d.matched = false
	if d.SkipLabels && len(d.expect) > 0 && bytes.HasPrefix(d.buf, d.expect) {
		// The encoding is prefix-free: a valid encoding at the start of the buffer is
		// exactly what reading the lengths one by one would consume.
		s.Labels, d.buf, d.matched = s.Labels[:0], d.buf[len(d.expect):], true
	} else if d.SkipLabels {
		s.Labels, err = s.Labels[:0], d.skipLabels()
	} else {
		s.Labels, err = d.labels(s.Labels[:0])
	}
	if err != nil {
		return d.fail(err)
	}
	d.expect = nil
	n := len(start) - len(d.buf)
	s.RawLabels = start[:n:n]
	n, err = d.count(9)
	if err != nil {
		return d.fail(err)
	}
	s.Samples = s.Samples[:0]
	var t int64
	for i := 0; i < n; i++ {
		dt, err := d.varint()
		if err != nil {
			return d.fail(err)
		}
		if i == 0 {
			t = dt
		} else {
			t += dt
		}
		if len(d.buf) < 8 {
			return d.fail(fmt.Errorf("%w: short sample value", ErrCorrupt))
		}
		v := math.Float64frombits(binary.LittleEndian.Uint64(d.buf))
		d.buf = d.buf[8:]
		s.Samples = append(s.Samples, Sample{T: t, V: v})
	}
	if n, err = d.count(2); err != nil {
		return d.fail(err)
	}
	s.Histograms = s.Histograms[:0]
	for i := 0; i < n; i++ {
		ht, err := d.varint()
		if err != nil {
			return d.fail(err)
		}
		p, err := d.bytes()
		if err != nil {
			return d.fail(err)
		}
		s.Histograms = append(s.Histograms, Histogram{T: ht, Proto: p})
	}
	if n, err = d.count(10); err != nil {
		return d.fail(err)
	}
	s.Exemplars = s.Exemplars[:0]
	for i := 0; i < n; i++ {
		et, err := d.varint()
		if err != nil {
			return d.fail(err)
		}
		if len(d.buf) < 8 {
			return d.fail(fmt.Errorf("%w: short exemplar value", ErrCorrupt))
		}
		v := math.Float64frombits(binary.LittleEndian.Uint64(d.buf))
		d.buf = d.buf[8:]
		ls, err := d.labels(nil)
		if err != nil {
			return d.fail(err)
		}
		s.Exemplars = append(s.Exemplars, Exemplar{T: et, V: v, Labels: ls})
	}
	return true
}

// Expect tells the next call to Next, with SkipLabels set, what the next series' labels
// probably are: raw must be a Series.RawLabels this package decoded (or a copy of one).
// If the series' encoded labels are exactly raw, Next skips them with one comparison
// instead of reading each length, and Matched reports true. Next forgets raw.
func (d *Decoder) Expect(raw []byte) { d.expect = raw }

// Matched reports whether the series of the last Next had the labels given to Expect.
func (d *Decoder) Matched() bool { return d.matched }

// Series returns the series decoded by the last successful Next.
func (d *Decoder) Series() *Series { return &d.series }

// Err returns the first decoding error, if any.
func (d *Decoder) Err() error { return d.err }

func (d *Decoder) fail(err error) bool {
	d.err = err
	return false
}

// count reads a uvarint count whose items take at least minSize bytes each, refusing
// counts that cannot fit in what is left (so a corrupt count never drives a huge allocation).
func (d *Decoder) count(minSize int) (int, error) {
	var n uint64
	if len(d.buf) > 0 && d.buf[0] < 0x80 {
		n, d.buf = uint64(d.buf[0]), d.buf[1:]
	} else {
		var k int
		n, k = binary.Uvarint(d.buf)
		if k <= 0 {
			return 0, fmt.Errorf("%w: bad count", ErrCorrupt)
		}
		d.buf = d.buf[k:]
	}
	// n*minSize > len(d.buf) without a division; it cannot overflow once n <= len(d.buf).
	if n > uint64(len(d.buf)) || n*uint64(minSize) > uint64(len(d.buf)) {
		return 0, fmt.Errorf("%w: count %d larger than the batch", ErrCorrupt, n)
	}
	return int(n), nil
}

func (d *Decoder) varint() (int64, error) {
	v, k := binary.Varint(d.buf)
	if k <= 0 {
		return 0, fmt.Errorf("%w: bad varint", ErrCorrupt)
	}
	d.buf = d.buf[k:]
	return v, nil
}

func (d *Decoder) bytes() ([]byte, error) {
	if len(d.buf) > 0 && d.buf[0] < 0x80 && int(d.buf[0]) < len(d.buf) {
		// The common case: a length below 128 in one byte.
		end := 1 + int(d.buf[0])
		b := d.buf[1:end:end]
		d.buf = d.buf[end:]
		return b, nil
	}
	n, k := binary.Uvarint(d.buf)
	if k <= 0 || n > uint64(len(d.buf)-k) {
		return nil, fmt.Errorf("%w: bad length", ErrCorrupt)
	}
	b := d.buf[k : k+int(n) : k+int(n)]
	d.buf = d.buf[k+int(n):]
	return b, nil
}

func (d *Decoder) labels(dst []Label) ([]Label, error) {
	n, err := d.count(2)
	if err != nil {
		return nil, err
	}
	for i := 0; i < n; i++ {
		name, err := d.bytes()
		if err != nil {
			return nil, err
		}
		value, err := d.bytes()
		if err != nil {
			return nil, err
		}
		dst = append(dst, Label{Name: name, Value: value})
	}
	return dst, nil
}

// skipLabels moves past a series' labels, checking that every length fits the batch.
func (d *Decoder) skipLabels() error {
	n, err := d.count(2)
	if err != nil {
		return err
	}
	b, p := d.buf, 0
	for i := 0; i < 2*n; i++ {
		if p < len(b) && b[p] < 0x80 {
			// A length below 128 in one byte; p past the end is caught below.
			p += 1 + int(b[p])
			continue
		}
		if p >= len(b) {
			return fmt.Errorf("%w: bad length", ErrCorrupt)
		}
		m, k := binary.Uvarint(b[p:])
		if k <= 0 || m > uint64(len(b)-p-k) {
			return fmt.Errorf("%w: bad length", ErrCorrupt)
		}
		p += k + int(m)
	}
	if p > len(b) {
		return fmt.Errorf("%w: bad length", ErrCorrupt)
	}
	d.buf = b[p:]
	return nil
}

// DecodeLabels appends to dst the labels encoded in raw (a Series.RawLabels) and
// returns the extended slice. The labels alias raw.
func DecodeLabels(dst []Label, raw []byte) ([]Label, error) {
	d := Decoder{buf: raw}
	dst, err := d.labels(dst)
	if err != nil {
		return dst, err
	}
	if len(d.buf) != 0 {
		return dst, fmt.Errorf("%w: %d bytes after the labels", ErrCorrupt, len(d.buf))
	}
	return dst, nil
}
