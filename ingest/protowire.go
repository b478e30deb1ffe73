package ingest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Minimal protobuf wire-format reading for the remote-write decoders: no reflection,
// no allocation, every length checked against the bytes left before it is used.

const (
	wireVarint = 0
	wireI64    = 1
	wireLen    = 2
	wireI32    = 5
)

var errTruncated = errors.New("truncated message")

// pbReader walks the fields of one protobuf message held in b.
type pbReader struct {
	b []byte
}

// next reads the next field's tag. For wireLen fields data is the payload; for
// varint fields v is the value; for fixed fields v holds the raw bits.
func (r *pbReader) next() (field uint32, wt uint8, v uint64, data []byte, err error) {
	tag, err := r.uvarint()
	if err != nil {
		return 0, 0, 0, nil, err
	}
	if tag>>3 == 0 || tag>>3 > 1<<29-1 {
		return 0, 0, 0, nil, fmt.Errorf("field number %d out of range", tag>>3)
	}
	field, wt = uint32(tag>>3), uint8(tag&7)
	switch wt {
	case wireVarint:
		v, err = r.uvarint()
	case wireI64:
		if len(r.b) < 8 {
			return 0, 0, 0, nil, errTruncated
		}
		v = binary.LittleEndian.Uint64(r.b)
		r.b = r.b[8:]
	case wireLen:
		var n uint64
		if n, err = r.uvarint(); err != nil {
			return
		}
		if n > uint64(len(r.b)) {
			return 0, 0, 0, nil, fmt.Errorf("field %d: length %d exceeds the %d bytes left", field, n, len(r.b))
		}
		data = r.b[:n:n]
		r.b = r.b[n:]
	case wireI32:
		if len(r.b) < 4 {
			return 0, 0, 0, nil, errTruncated
		}
		v = uint64(binary.LittleEndian.Uint32(r.b))
		r.b = r.b[4:]
	default:
		return 0, 0, 0, nil, fmt.Errorf("field %d: unsupported wire type %d", field, wt)
	}
	return field, wt, v, data, err
}

func (r *pbReader) uvarint() (uint64, error) {
	if len(r.b) > 0 && r.b[0] < 0x80 { // fast path: one byte
		v := uint64(r.b[0])
		r.b = r.b[1:]
		return v, nil
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		if n == 0 {
			return 0, errTruncated
		}
		return 0, errors.New("varint overflows 64 bits")
	}
	r.b = r.b[n:]
	return v, nil
}

func (r *pbReader) done() bool { return len(r.b) == 0 }

// wantType checks a field's wire type.
func wantType(field uint32, got, want uint8) error {
	if got != want {
		return fmt.Errorf("field %d has wire type %d, want %d", field, got, want)
	}
	return nil
}

func f64(v uint64) float64 { return math.Float64frombits(v) }

// histogramTimestamp returns field 15 (timestamp) of a prompb.Histogram (or
// writev2.Histogram, which shares fields 1-16) and checks that the message is well formed.
func histogramTimestamp(b []byte) (int64, error) {
	r := pbReader{b: b}
	var t int64
	for !r.done() {
		field, wt, v, _, err := r.next()
		if err != nil {
			return 0, err
		}
		if field == 15 {
			if err := wantType(field, wt, wireVarint); err != nil {
				return 0, err
			}
			t = int64(v)
		}
	}
	return t, nil
}
