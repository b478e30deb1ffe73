package ingest

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Purpose-built decoders of the remote-write protobuf messages. They fill a Batch whose
// labels, histogram protos and exemplar labels alias the decompressed body: nothing is
// copied and, once the pooled Batch has grown, nothing is allocated per sample or per
// series. The body must stay unchanged until the Write that takes the batch returns.
//
// A request that does not parse is rejected as a whole (a *RequestError with
// ReasonDecode); the batch then holds an unspecified prefix and must be Reset.

// DecodeStats counts what a decoder saw besides series.
type DecodeStats struct {
	// Metadata is the number of metadata entries (1.0) or series metadata (2.0) accepted.
	// The samples topic does not carry metadata; it is checked and counted only.
	Metadata int
}

// DecodeWriteV1 decodes a remote-write 1.0 prometheus.WriteRequest into b.
func DecodeWriteV1(b *Batch, buf []byte) (DecodeStats, error) {
	var st DecodeStats
	r := pbReader{b: buf}
	for !r.done() {
		field, wt, _, data, err := r.next()
		if err != nil {
			return st, decodeErr("WriteRequest", err)
		}
		switch field {
		case 1: // timeseries
			if err := wantType(field, wt, wireLen); err != nil {
				return st, decodeErr("WriteRequest", err)
			}
			err := decodeSeriesV1(b, data, b.cached())
			if err == errLabelsSplit {
				b.DropSeries()
				err = decodeSeriesV1(b, data, false)
			}
			if err != nil {
				b.DropSeries()
				return st, decodeErr(fmt.Sprintf("WriteRequest.timeseries[%d]", b.Len()), err)
			}
		case 3: // metadata
			if err := wantType(field, wt, wireLen); err != nil {
				return st, decodeErr("WriteRequest", err)
			}
			if err := checkMetadataV1(data); err != nil {
				return st, decodeErr("WriteRequest.metadata", err)
			}
			st.Metadata++
		}
	}
	b.SetDecodedBytes(len(buf))
	return st, nil
}

func decodeErr(where string, err error) *RequestError {
	return Reject(ReasonDecode, "cannot parse protobuf %s: %v", where, err)
}

// checkMetadataV1 checks a prompb.MetricMetadata: type (1) a varint; family name (2),
// help (4) and unit (5) length-delimited.
func checkMetadataV1(b []byte) error {
	r := pbReader{b: b}
	for !r.done() {
		field, wt, _, _, err := r.next()
		if err != nil {
			return err
		}
		switch field {
		case 1:
			err = wantType(field, wt, wireVarint)
		case 2, 4, 5:
			err = wantType(field, wt, wireLen)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// errLabelsSplit tells that a series found by its leading label fields has another
// label field further on: it is not the series cached, and is decoded again without
// the cache.
var errLabelsSplit = errors.New("label fields split")

// decodeSeriesV1 decodes a prompb.TimeSeries into b. With useCache, a series whose
// leading label fields are those of a series the Writer accepted before (useCache) is
// taken from the cache: its labels are not decoded, and its key and entry are
// recorded in b.
func decodeSeriesV1(b *Batch, buf []byte, useCache bool) error {
	b.BeginSeries()
	r := pbReader{b: buf}
	if useCache {
		if n := labelRunV1(buf); n > 0 {
			b.curKey = buf[:n]
			if hit, ok := b.cursor.lookup(b.curKey); ok {
				b.curHit = hit
				r.b = buf[n:]
			}
		}
	}
	// The label fields, as senders write them, are one run of bytes: when that run is
	// ASCII (tags and short lengths are), so is every name and value in it.
	labStart, labEnd, labRun := -1, -1, true
	for !r.done() {
		pos := len(buf) - len(r.b)
		field, wt, _, data, err := r.next()
		if err != nil {
			return err
		}
		if field == 1 {
			if b.curHit.encoded != nil {
				return errLabelsSplit
			}
			switch {
			case labStart < 0:
				labStart = pos
			case labEnd != pos:
				labRun = false
			}
			labEnd = len(buf) - len(r.b)
		}
		if field >= 1 && field <= 4 {
			if err := wantType(field, wt, wireLen); err != nil {
				return err
			}
		}
		switch field {
		case 1:
			name, value, err := decodeLabel(data)
			if err != nil {
				return fmt.Errorf("label: %w", err)
			}
			b.AddLabel(name, value)
		case 2:
			t, v, err := decodeSample(data)
			if err != nil {
				return fmt.Errorf("sample: %w", err)
			}
			b.AddSample(t, v)
		case 3:
			if err := decodeExemplarV1(b, data); err != nil {
				return fmt.Errorf("exemplar: %w", err)
			}
		case 4:
			t, err := histogramTimestamp(data)
			if err != nil {
				return fmt.Errorf("histogram: %w", err)
			}
			b.AddHistogram(t, data)
		}
	}
	if labStart >= 0 && labRun && isASCII(buf[labStart:labEnd]) {
		b.MarkLabelsASCII()
	}
	if !labRun || labStart > 0 {
		b.curKey = nil // not one leading run: the key would not cover every label
	}
	b.EndSeries()
	return nil
}

// labelRunV1 returns the length of the run of label fields (field 1, length-delimited)
// that buf, a prompb.TimeSeries, starts with; 0 if it starts otherwise or the run does
// not parse (the full decoder then reports why).
func labelRunV1(buf []byte) int {
	i := 0
	for i < len(buf) && buf[i] == 0x0a {
		n, k := binary.Uvarint(buf[i+1:])
		if k <= 0 || n > uint64(len(buf)-i-1-k) {
			return 0
		}
		i += 1 + k + int(n)
	}
	return i
}

func decodeLabel(buf []byte) (name, value []byte, err error) {
	// Fast path: what every sender writes, name (field 1) then value (field 2), each
	// shorter than 128 bytes.
	if len(buf) >= 4 && buf[0] == 0x0a && buf[1] < 0x80 {
		n := int(buf[1])
		if 2+n+2 <= len(buf) && buf[2+n] == 0x12 && buf[3+n] < 0x80 {
			m := int(buf[3+n])
			if 4+n+m == len(buf) {
				return buf[2 : 2+n : 2+n], buf[4+n : 4+n+m : 4+n+m], nil
			}
		}
	}
	r := pbReader{b: buf}
	for !r.done() {
		field, wt, _, data, err := r.next()
		if err != nil {
			return nil, nil, err
		}
		switch field {
		case 1, 2:
			if err := wantType(field, wt, wireLen); err != nil {
				return nil, nil, err
			}
			if field == 1 {
				name = data
			} else {
				value = data
			}
		}
	}
	return name, value, nil
}

// decodeSample decodes a prompb.Sample (1.0) or writev2.Sample (2.0): value is field 1,
// timestamp field 2 in both (2.0's start_timestamp, field 3, is skipped).
func decodeSample(buf []byte) (t int64, v float64, err error) {
	// Fast path: what senders write, value (fixed64, tag 0x09) then timestamp (varint,
	// tag 0x10) and nothing else.
	if len(buf) >= 11 && buf[0] == 0x09 && buf[9] == 0x10 {
		if x, n := binary.Uvarint(buf[10:]); n > 0 && 10+n == len(buf) {
			return int64(x), f64(binary.LittleEndian.Uint64(buf[1:])), nil
		}
	}
	r := pbReader{b: buf}
	for !r.done() {
		field, wt, x, _, err := r.next()
		if err != nil {
			return 0, 0, err
		}
		switch field {
		case 1:
			if err := wantType(field, wt, wireI64); err != nil {
				return 0, 0, err
			}
			v = f64(x)
		case 2:
			if err := wantType(field, wt, wireVarint); err != nil {
				return 0, 0, err
			}
			t = int64(x)
		}
	}
	return t, v, nil
}

func decodeExemplarV1(b *Batch, buf []byte) error {
	var t int64
	var v float64
	r := pbReader{b: buf}
	for !r.done() { // first pass: value and timestamp
		field, wt, x, _, err := r.next()
		if err != nil {
			return err
		}
		switch field {
		case 1:
			if err := wantType(field, wt, wireLen); err != nil {
				return err
			}
		case 2:
			if err := wantType(field, wt, wireI64); err != nil {
				return err
			}
			v = f64(x)
		case 3:
			if err := wantType(field, wt, wireVarint); err != nil {
				return err
			}
			t = int64(x)
		}
	}
	b.BeginExemplar(t, v)
	r = pbReader{b: buf}
	for !r.done() { // second pass: labels (already checked)
		field, _, _, data, _ := r.next()
		if field == 1 {
			name, value, err := decodeLabel(data)
			if err != nil {
				return fmt.Errorf("label: %w", err)
			}
			b.AddExemplarLabel(name, value)
		}
	}
	return nil
}

// V2Decoder decodes remote-write 2.0 io.prometheus.write.v2.Request messages. It
// keeps the symbol table and series offsets between calls, so a pooled V2Decoder does
// not allocate in steady state. Not safe for concurrent use.
type V2Decoder struct {
	symbols [][]byte
	series  [][]byte
	ascii   bool // every symbol is ASCII
}

// Decode decodes a 2.0 request into b. Label names and values alias buf's symbols.
func (d *V2Decoder) Decode(b *Batch, buf []byte) (DecodeStats, error) {
	var st DecodeStats
	clear(d.symbols)
	clear(d.series)
	d.symbols, d.series = d.symbols[:0], d.series[:0]
	d.ascii = true
	r := pbReader{b: buf}
	for !r.done() {
		field, wt, _, data, err := r.next()
		if err != nil {
			return st, decodeErr("Request", err)
		}
		switch field {
		case 4:
			if err := wantType(field, wt, wireLen); err != nil {
				return st, decodeErr("Request", err)
			}
			d.symbols = append(d.symbols, data)
			d.ascii = d.ascii && isASCII(data)
		case 5:
			if err := wantType(field, wt, wireLen); err != nil {
				return st, decodeErr("Request", err)
			}
			d.series = append(d.series, data)
		}
	}
	if len(d.symbols) > 0 && len(d.symbols[0]) != 0 {
		return st, Reject(ReasonDecode, "Request.symbols[0] must be the empty string, got %.64q", d.symbols[0])
	}
	for i, s := range d.series {
		hasMeta, err := d.decodeSeries(b, s)
		if err != nil {
			b.DropSeries()
			return st, decodeErr(fmt.Sprintf("Request.timeseries[%d]", i), err)
		}
		if hasMeta {
			st.Metadata++
		}
	}
	b.SetDecodedBytes(len(buf))
	return st, nil
}

// symbol resolves a symbol reference.
func (d *V2Decoder) symbol(ref uint64) ([]byte, error) {
	if ref >= uint64(len(d.symbols)) {
		return nil, fmt.Errorf("symbol reference %d out of range (%d symbols)", ref, len(d.symbols))
	}
	return d.symbols[ref], nil
}

// labelRefs adds the label pairs of a packed (or single unpacked) labels_refs field;
// add is b.AddLabel or b.AddExemplarLabel. pending carries an unpaired name ref across
// unpacked fields (-1: none).
func (d *V2Decoder) labelRefs(b *Batch, exemplar bool, wt uint8, v uint64, data []byte, pending *int64) error {
	add := func(ref uint64) error {
		if *pending < 0 {
			*pending = int64(ref)
			if ref >= uint64(len(d.symbols)) {
				return fmt.Errorf("symbol reference %d out of range (%d symbols)", ref, len(d.symbols))
			}
			return nil
		}
		name := d.symbols[*pending]
		value, err := d.symbol(ref)
		if err != nil {
			return err
		}
		*pending = -1
		if exemplar {
			b.AddExemplarLabel(name, value)
		} else {
			b.AddLabel(name, value)
		}
		return nil
	}
	if wt == wireVarint {
		return add(v)
	}
	if wt != wireLen {
		return fmt.Errorf("labels_refs has wire type %d", wt)
	}
	r := pbReader{b: data}
	for !r.done() {
		ref, err := r.uvarint()
		if err != nil {
			return err
		}
		if err := add(ref); err != nil {
			return err
		}
	}
	return nil
}

func (d *V2Decoder) decodeSeries(b *Batch, buf []byte) (hasMeta bool, err error) {
	b.BeginSeries()
	pending := int64(-1)
	r := pbReader{b: buf}
	for !r.done() {
		field, wt, v, data, err := r.next()
		if err != nil {
			return false, err
		}
		switch field {
		case 1:
			if err := d.labelRefs(b, false, wt, v, data, &pending); err != nil {
				return false, fmt.Errorf("labels_refs: %w", err)
			}
		case 2:
			if err := wantType(field, wt, wireLen); err != nil {
				return false, err
			}
			t, v, err := decodeSample(data)
			if err != nil {
				return false, fmt.Errorf("sample: %w", err)
			}
			b.AddSample(t, v)
		case 3:
			if err := wantType(field, wt, wireLen); err != nil {
				return false, err
			}
			// writev2.Histogram shares fields 1-16 with prompb.Histogram and adds
			// start_timestamp (17), which a 1.0 reader skips: the bytes are stored as they are.
			t, err := histogramTimestamp(data)
			if err != nil {
				return false, fmt.Errorf("histogram: %w", err)
			}
			b.AddHistogram(t, data)
		case 4:
			if err := wantType(field, wt, wireLen); err != nil {
				return false, err
			}
			if err := d.decodeExemplar(b, data); err != nil {
				return false, fmt.Errorf("exemplar: %w", err)
			}
		case 5:
			if err := wantType(field, wt, wireLen); err != nil {
				return false, err
			}
			if err := d.checkMetadata(data); err != nil {
				return false, fmt.Errorf("metadata: %w", err)
			}
			hasMeta = len(data) > 0
		}
	}
	if pending >= 0 {
		return false, fmt.Errorf("labels_refs has an odd number of references")
	}
	if d.ascii {
		b.MarkLabelsASCII()
	}
	b.EndSeries()
	return hasMeta, nil
}

func (d *V2Decoder) decodeExemplar(b *Batch, buf []byte) error {
	var t int64
	var v float64
	r := pbReader{b: buf}
	for !r.done() {
		field, wt, x, _, err := r.next()
		if err != nil {
			return err
		}
		switch field {
		case 2:
			if err := wantType(field, wt, wireI64); err != nil {
				return err
			}
			v = f64(x)
		case 3:
			if err := wantType(field, wt, wireVarint); err != nil {
				return err
			}
			t = int64(x)
		}
	}
	b.BeginExemplar(t, v)
	pending := int64(-1)
	r = pbReader{b: buf}
	for !r.done() {
		field, wt, x, data, _ := r.next()
		if field == 1 {
			if err := d.labelRefs(b, true, wt, x, data, &pending); err != nil {
				return fmt.Errorf("labels_refs: %w", err)
			}
		}
	}
	if pending >= 0 {
		return fmt.Errorf("labels_refs has an odd number of references")
	}
	return nil
}

func (d *V2Decoder) checkMetadata(buf []byte) error {
	r := pbReader{b: buf}
	for !r.done() {
		field, wt, v, _, err := r.next()
		if err != nil {
			return err
		}
		switch field {
		case 1:
			if err := wantType(field, wt, wireVarint); err != nil {
				return err
			}
			if v > 7 {
				return fmt.Errorf("unknown metric type %d", v)
			}
		case 3, 4:
			if err := wantType(field, wt, wireVarint); err != nil {
				return err
			}
			if _, err := d.symbol(v); err != nil {
				return err
			}
		}
	}
	return nil
}
