package logcore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/klauspost/compress/s2"
)

// Wire format constants: changing any of them changes the on-disk format (see doc.go).
const (
	segmentMagic      = "VGLS"
	segmentVersion    = 1
	segmentHeaderSize = 24
	batchHeaderSize   = 48
	// maxBatchBytes bounds a batch's length field, so that a corrupt length is never
	// used to allocate gigabytes.
	maxBatchBytes = 256 << 20

	codecMask = 0x7
)

// Compression is the codec of a topic's batch payloads.
type Compression uint8

const (
	// CompressionNone stores payloads as they are.
	CompressionNone Compression = 0
	// CompressionS2 compresses each batch payload with S2 (klauspost/compress/s2).
	CompressionS2 Compression = 1
)

// castagnoli is the CRC32C table, made once; it is never written after init.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is returned by reads that meet a batch failing its checks. Data that fails
// its checks is never returned.
var ErrCorrupt = errors.New("logcore: corrupt batch")

// batchHeader is the decoded fixed part of a record batch.
type batchHeader struct {
	length     uint32 // bytes after the length field
	crc        uint32
	baseOffset int64
	lastDelta  uint32
	count      uint32
	firstTS    int64
	maxTS      int64
	attrs      uint16
	rawLen     uint32
}

// size is the whole batch's size on disk.
func (h *batchHeader) size() int64 { return 4 + int64(h.length) }

// lastOffset is the offset of the batch's last record (before any compaction).
func (h *batchHeader) lastOffset() int64 { return h.baseOffset + int64(h.lastDelta) }

// parseBatchHeader decodes and sanity-checks the 48-byte header at the start of b.
func parseBatchHeader(b []byte) (batchHeader, error) {
	var h batchHeader
	if len(b) < batchHeaderSize {
		return h, fmt.Errorf("%w: %d bytes is too short for a batch header", ErrCorrupt, len(b))
	}
	h.length = binary.LittleEndian.Uint32(b[0:])
	h.crc = binary.LittleEndian.Uint32(b[4:])
	h.baseOffset = int64(binary.LittleEndian.Uint64(b[8:]))
	h.lastDelta = binary.LittleEndian.Uint32(b[16:])
	h.count = binary.LittleEndian.Uint32(b[20:])
	h.firstTS = int64(binary.LittleEndian.Uint64(b[24:]))
	h.maxTS = int64(binary.LittleEndian.Uint64(b[32:]))
	h.attrs = binary.LittleEndian.Uint16(b[40:])
	h.rawLen = binary.LittleEndian.Uint32(b[44:])
	switch {
	case h.length < batchHeaderSize-4 || h.length > maxBatchBytes:
		return h, fmt.Errorf("%w: batch length %d out of range", ErrCorrupt, h.length)
	case h.baseOffset < 0:
		return h, fmt.Errorf("%w: negative base offset %d", ErrCorrupt, h.baseOffset)
	case h.count > h.lastDelta+1 || h.count == 0:
		return h, fmt.Errorf("%w: %d records for %d offsets", ErrCorrupt, h.count, h.lastDelta+1)
	case Compression(h.attrs&codecMask) > CompressionS2 || h.attrs&^codecMask != 0:
		return h, fmt.Errorf("%w: unknown attributes %#x", ErrCorrupt, h.attrs)
	case h.rawLen > maxBatchBytes:
		return h, fmt.Errorf("%w: raw length %d out of range", ErrCorrupt, h.rawLen)
	}
	return h, nil
}

// batchCRC computes the checksum of a whole batch as the header's crc field defines it.
func batchCRC(b []byte) uint32 {
	return crc32.Update(crc32.Checksum(b[16:], castagnoli), castagnoli, b[8:16])
}

// checkBatch verifies a whole batch b (exactly h.size() bytes) against its checksum.
func checkBatch(h *batchHeader, b []byte) error {
	if int64(len(b)) != h.size() {
		return fmt.Errorf("%w: batch at offset %d has %d of %d bytes", ErrCorrupt, h.baseOffset, len(b), h.size())
	}
	if got := batchCRC(b); got != h.crc {
		return fmt.Errorf("%w: batch at offset %d: crc %08x, want %08x", ErrCorrupt, h.baseOffset, got, h.crc)
	}
	return nil
}

// encodeBatch appends to buf a batch holding recs. With dense, record i gets offset
// delta i and the base offset is left zero for sealBatch to fill; otherwise recs keep
// their Offset fields (which must be ascending), base is recs' batch base offset and
// lastDelta the batch's last delta (compaction's rewrite). Zero timestamps become now.
// It returns the new buf and the checksum of the body, which sealBatch completes.
func encodeBatch(buf []byte, recs []Record, b batchMeta) ([]byte, uint32, error) {
	start := len(buf)
	buf = append(buf, make([]byte, batchHeaderSize)...)
	firstTS := recs[0].Timestamp
	if firstTS == 0 {
		firstTS = b.now
	}
	maxTS := firstTS
	for i := range recs {
		r := &recs[i]
		ts := r.Timestamp
		if ts == 0 {
			ts = b.now
		}
		if ts > maxTS {
			maxTS = ts
		}
		delta := uint64(i)
		if !b.dense {
			delta = uint64(r.Offset - b.base)
		}
		buf = binary.AppendUvarint(buf, delta)
		buf = binary.AppendVarint(buf, ts-firstTS)
		if r.Key == nil {
			buf = append(buf, 0)
		} else {
			buf = binary.AppendUvarint(buf, uint64(len(r.Key))+1)
		}
		buf = binary.AppendUvarint(buf, uint64(len(r.Value)))
		buf = append(buf, r.Key...)
		buf = append(buf, r.Value...)
	}
	rawLen := len(buf) - start - batchHeaderSize
	if rawLen > maxBatchBytes-batchHeaderSize {
		return buf[:start], 0, fmt.Errorf("%w: %d bytes", ErrRecordTooLarge, rawLen)
	}
	attrs := uint16(0)
	if b.codec == CompressionS2 && rawLen > 64 {
		// Compress into buf's own spare capacity, past the raw payload, then move the
		// result down over it: no buffer per batch (the caller's buf is reused).
		body := start + batchHeaderSize
		need := len(buf) + s2.MaxEncodedLen(rawLen)
		if cap(buf) < need {
			grown := make([]byte, len(buf), need)
			copy(grown, buf)
			buf = grown
		}
		comp := s2.Encode(buf[len(buf):need], buf[body:])
		if len(comp) < rawLen {
			buf = buf[:body+copy(buf[body:], comp)]
			attrs = uint16(CompressionS2)
		}
	}
	lastDelta := uint32(len(recs) - 1)
	if !b.dense {
		lastDelta = b.lastDelta
	}
	h := buf[start:]
	binary.LittleEndian.PutUint32(h[0:], uint32(len(h)-4))
	binary.LittleEndian.PutUint64(h[8:], uint64(b.base))
	binary.LittleEndian.PutUint32(h[16:], lastDelta)
	binary.LittleEndian.PutUint32(h[20:], uint32(len(recs)))
	binary.LittleEndian.PutUint64(h[24:], uint64(firstTS))
	binary.LittleEndian.PutUint64(h[32:], uint64(maxTS))
	binary.LittleEndian.PutUint16(h[40:], attrs)
	binary.LittleEndian.PutUint32(h[44:], uint32(rawLen))
	bodyCRC := crc32.Checksum(h[16:], castagnoli)
	if !b.dense {
		sealBatch(h, b.base, bodyCRC)
	}
	return buf, bodyCRC, nil
}

// batchMeta says how encodeBatch numbers and compresses a batch.
type batchMeta struct {
	dense     bool
	base      int64
	lastDelta uint32
	now       int64
	codec     Compression
}

// sealBatch writes base into the batch b and completes its checksum from bodyCRC.
func sealBatch(b []byte, base int64, bodyCRC uint32) {
	binary.LittleEndian.PutUint64(b[8:], uint64(base))
	binary.LittleEndian.PutUint32(b[4:], crc32.Update(bodyCRC, castagnoli, b[8:16]))
}

// batchPayload returns the uncompressed payload of a checked batch b, decompressing
// into scratch's spare capacity when the batch is compressed. The result aliases b or
// scratch. When scratch has too little room it is replaced by a larger buffer, not
// grown: earlier payloads in it stay where they are (records alias them), and nothing
// is copied.
func batchPayload(h *batchHeader, b []byte, scratch []byte) (payload, newScratch []byte, err error) {
	body := b[batchHeaderSize:]
	switch Compression(h.attrs & codecMask) {
	case CompressionNone:
		if uint32(len(body)) != h.rawLen {
			return nil, scratch, fmt.Errorf("%w: batch at offset %d: payload %d bytes, header says %d", ErrCorrupt, h.baseOffset, len(body), h.rawLen)
		}
		return body, scratch, nil
	case CompressionS2:
		n, err := s2.DecodedLen(body)
		if err != nil || n != int(h.rawLen) {
			return nil, scratch, fmt.Errorf("%w: batch at offset %d: bad s2 payload", ErrCorrupt, h.baseOffset)
		}
		if cap(scratch)-len(scratch) < n {
			scratch = make([]byte, 0, max(n, 2*cap(scratch)))
		}
		out, err := s2.Decode(scratch[len(scratch):len(scratch)+n], body)
		if err != nil {
			return nil, scratch, fmt.Errorf("%w: batch at offset %d: %v", ErrCorrupt, h.baseOffset, err)
		}
		return out, scratch[:len(scratch)+n], nil
	}
	return nil, scratch, fmt.Errorf("%w: batch at offset %d: unknown codec", ErrCorrupt, h.baseOffset)
}

// decodeRecords appends to dst the records of payload (the uncompressed payload of the
// batch h) whose offset is at least from. Key and Value alias payload.
func decodeRecords(h *batchHeader, payload []byte, dst []Record, from int64) ([]Record, error) {
	p := payload
	prev := int64(-1)
	for i := uint32(0); i < h.count; i++ {
		delta, n := binary.Uvarint(p)
		if n <= 0 || delta > uint64(h.lastDelta) || int64(delta) <= prev {
			return dst, fmt.Errorf("%w: batch at offset %d: bad offset delta in record %d", ErrCorrupt, h.baseOffset, i)
		}
		prev = int64(delta)
		p = p[n:]
		tsDelta, n := binary.Varint(p)
		if n <= 0 {
			return dst, fmt.Errorf("%w: batch at offset %d: bad timestamp in record %d", ErrCorrupt, h.baseOffset, i)
		}
		p = p[n:]
		keyLen, n := binary.Uvarint(p)
		if n <= 0 {
			return dst, fmt.Errorf("%w: batch at offset %d: bad key length in record %d", ErrCorrupt, h.baseOffset, i)
		}
		p = p[n:]
		valLen, n := binary.Uvarint(p)
		if n <= 0 {
			return dst, fmt.Errorf("%w: batch at offset %d: bad value length in record %d", ErrCorrupt, h.baseOffset, i)
		}
		p = p[n:]
		var key []byte
		if keyLen > 0 {
			keyLen--
			if keyLen > uint64(len(p)) {
				return dst, fmt.Errorf("%w: batch at offset %d: key of record %d overruns the batch", ErrCorrupt, h.baseOffset, i)
			}
			key = p[:keyLen:keyLen]
			p = p[keyLen:]
		}
		if valLen > uint64(len(p)) {
			return dst, fmt.Errorf("%w: batch at offset %d: value of record %d overruns the batch", ErrCorrupt, h.baseOffset, i)
		}
		val := p[:valLen:valLen]
		p = p[valLen:]
		off := h.baseOffset + int64(delta)
		if off < from {
			continue
		}
		dst = append(dst, Record{Offset: off, Timestamp: h.firstTS + tsDelta, Key: key, Value: val})
	}
	if len(p) != 0 {
		return dst, fmt.Errorf("%w: batch at offset %d: %d bytes after the last record", ErrCorrupt, h.baseOffset, len(p))
	}
	return dst, nil
}

// decodeBatch checks the whole batch b and appends its records from offset from on to
// dst. It is the decoder the fuzz target drives; Key and Value alias b or scratch.
func decodeBatch(b []byte, dst []Record, from int64, scratch []byte) ([]Record, []byte, error) {
	h, err := parseBatchHeader(b)
	if err != nil {
		return dst, scratch, err
	}
	if h.size() > int64(len(b)) {
		return dst, scratch, fmt.Errorf("%w: batch at offset %d needs %d bytes, have %d", ErrCorrupt, h.baseOffset, h.size(), len(b))
	}
	b = b[:h.size()]
	if err := checkBatch(&h, b); err != nil {
		return dst, scratch, err
	}
	payload, scratch, err := batchPayload(&h, b, scratch)
	if err != nil {
		return dst, scratch, err
	}
	n := len(dst)
	dst, err = decodeRecords(&h, payload, dst, from)
	if err != nil {
		return dst[:n], scratch, err
	}
	return dst, scratch, nil
}
