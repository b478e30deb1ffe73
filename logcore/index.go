package logcore

import (
	"encoding/binary"
	"sort"
)

// Index entry sizes: part of the on-disk format (see doc.go).
const (
	indexEntrySize     = 8
	timeIndexEntrySize = 12
)

// indexEntry says that the batch holding offset base+rel starts at file position pos.
type indexEntry struct {
	rel uint32
	pos uint32
}

// timeEntry says that the records of a segment up to and including the batch at
// base+rel have timestamps of at most ts.
type timeEntry struct {
	ts  int64
	rel uint32
}

// parseIndex decodes an .index file and returns its longest valid prefix: entries
// with strictly growing relative offsets and positions, each position past the segment
// header and before limit (the segment's size). A partial trailing entry is dropped.
func parseIndex(b []byte, limit int64) []indexEntry {
	n := len(b) / indexEntrySize
	out := make([]indexEntry, 0, n)
	for i := 0; i < n; i++ {
		e := indexEntry{
			rel: binary.LittleEndian.Uint32(b[i*indexEntrySize:]),
			pos: binary.LittleEndian.Uint32(b[i*indexEntrySize+4:]),
		}
		if int64(e.pos) < segmentHeaderSize || int64(e.pos) >= limit {
			break
		}
		if len(out) > 0 {
			last := out[len(out)-1]
			if e.rel <= last.rel || e.pos <= last.pos {
				break
			}
		}
		out = append(out, e)
	}
	return out
}

// parseTimeIndex decodes a .timeindex file and returns its longest valid prefix:
// timestamps never falling and relative offsets strictly growing and below maxRel.
func parseTimeIndex(b []byte, maxRel int64) []timeEntry {
	n := len(b) / timeIndexEntrySize
	out := make([]timeEntry, 0, n)
	for i := 0; i < n; i++ {
		e := timeEntry{
			ts:  int64(binary.LittleEndian.Uint64(b[i*timeIndexEntrySize:])),
			rel: binary.LittleEndian.Uint32(b[i*timeIndexEntrySize+8:]),
		}
		if int64(e.rel) >= maxRel {
			break
		}
		if len(out) > 0 {
			last := out[len(out)-1]
			if e.rel <= last.rel || e.ts < last.ts {
				break
			}
		}
		out = append(out, e)
	}
	return out
}

func appendIndexEntry(b []byte, e indexEntry) []byte {
	b = binary.LittleEndian.AppendUint32(b, e.rel)
	return binary.LittleEndian.AppendUint32(b, e.pos)
}

func appendTimeEntry(b []byte, e timeEntry) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(e.ts))
	return binary.LittleEndian.AppendUint32(b, e.rel)
}

// lookupIndex returns the last index entry at or before relative offset rel, or
// {0, end of the segment header} if there is none.
func lookupIndex(idx []indexEntry, rel uint32) indexEntry {
	i := sort.Search(len(idx), func(i int) bool { return idx[i].rel > rel })
	if i == 0 {
		return indexEntry{rel: 0, pos: segmentHeaderSize}
	}
	return idx[i-1]
}

// lookupTimeIndex returns the relative offset from which a scan for the first record
// with timestamp at or after ts must start: every batch before it holds only older
// records.
func lookupTimeIndex(tidx []timeEntry, ts int64) uint32 {
	i := sort.Search(len(tidx), func(i int) bool { return tidx[i].ts >= ts })
	if i == 0 {
		return 0
	}
	return tidx[i-1].rel
}
