package logcore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// updateSeeds rewrites the committed seed corpora under testdata/fuzz from
// fuzzSeedBatches and fuzzSeedIndexes: go test ./logcore -run TestWriteFuzzSeeds -update-fuzz-seeds
var updateSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite testdata/fuzz seed corpora")

// fuzzSeedBatches returns named batch encodings: valid plain, S2-compressed and
// compacted (gapped) batches, and torn and bit-flipped copies of them.
func fuzzSeedBatches(t testing.TB) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	mk := func(name string, recs []Record, m batchMeta, base int64) []byte {
		b, crc, err := encodeBatch(nil, recs, m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if m.dense {
			sealBatch(b, base, crc)
		}
		out[name] = b
		return b
	}
	plain := mk("plain", []Record{rec("", "hello", 1000), rec("k", "world", 1001), {Key: []byte{}, Value: nil, Timestamp: 999}}, batchMeta{dense: true, now: 1}, 42)
	var big []Record
	for i := 0; i < 50; i++ {
		big = append(big, rec(fmt.Sprintf("key-%d", i%5), string(bytes.Repeat([]byte("abcdefgh"), 20)), int64(5000+i)))
	}
	s2b := mk("s2", big, batchMeta{dense: true, now: 1, codec: CompressionS2}, 1<<40)
	if binary.LittleEndian.Uint16(s2b[40:])&codecMask != uint16(CompressionS2) {
		t.Fatal("s2 seed is not compressed")
	}
	compacted := []Record{{Offset: 100, Key: []byte("a"), Value: []byte("1"), Timestamp: 7}, {Offset: 105, Key: []byte("b"), Value: nil, Timestamp: 9}, {Offset: 109, Key: []byte("c"), Value: []byte("3"), Timestamp: 8}}
	mk("compacted", compacted, batchMeta{base: 100, lastDelta: 12}, 100)
	mk("compacted-s2", append(compacted[:0:0], Record{Offset: 3, Key: []byte("x"), Value: bytes.Repeat([]byte("z"), 300), Timestamp: 1}), batchMeta{base: 0, lastDelta: 9, codec: CompressionS2}, 0)
	mk("single-empty", []Record{{}}, batchMeta{dense: true, now: 5}, 0)
	for _, name := range []string{"plain", "s2", "compacted"} {
		b := out[name]
		out[name+"-torn-header"] = bytes.Clone(b[:batchHeaderSize-3])
		out[name+"-torn-body"] = bytes.Clone(b[:len(b)-2])
		for _, bit := range []int{3, 9 * 8, 22 * 8, 41 * 8, 8 * (len(b) - 1)} {
			f := bytes.Clone(b)
			f[bit/8] ^= 1 << (bit % 8)
			out[fmt.Sprintf("%s-flip-%d", name, bit)] = f
		}
	}
	// Checksum-valid batches with lying fields: they must be rejected by the decoder's
	// own checks, not by the CRC.
	lie := func(name string, src []byte, edit func(b []byte)) {
		b := bytes.Clone(src)
		edit(b)
		binary.LittleEndian.PutUint32(b[4:], batchCRC(b))
		out[name] = b
	}
	lie("lie-count", plain, func(b []byte) { binary.LittleEndian.PutUint32(b[20:], 2) })
	lie("lie-rawlen", plain, func(b []byte) { binary.LittleEndian.PutUint32(b[44:], 1<<20) })
	lie("lie-s2-rawlen", s2b, func(b []byte) { binary.LittleEndian.PutUint32(b[44:], 17) })
	lie("lie-codec", plain, func(b []byte) { binary.LittleEndian.PutUint16(b[40:], 1) })
	lie("lie-delta", plain, func(b []byte) { b[batchHeaderSize] = 5 })
	out["two-batches"] = append(bytes.Clone(plain), out["compacted"]...)
	out["empty"] = nil
	return out
}

// fuzzSeedIndexes returns named index-file contents with the limit (segment size, or
// the maximum relative offset for time indexes) to parse them against.
func fuzzSeedIndexes() map[string]struct {
	b     []byte
	limit int64
} {
	type seed = struct {
		b     []byte
		limit int64
	}
	out := map[string]seed{}
	var idx, tidx []byte
	for i := 0; i < 6; i++ {
		idx = appendIndexEntry(idx, indexEntry{rel: uint32(10 * i), pos: uint32(segmentHeaderSize + 4096*i)})
		tidx = appendTimeEntry(tidx, timeEntry{ts: int64(1000 + i), rel: uint32(10 * i)})
	}
	out["index"] = seed{idx, 30000}
	out["index-short-limit"] = seed{idx, 9000}
	out["index-torn"] = seed{idx[:len(idx)-3], 30000}
	flip := bytes.Clone(idx)
	flip[8*3+5] ^= 0x10
	out["index-flip"] = seed{flip, 30000}
	out["index-garbage"] = seed{[]byte("this is not an index file, just garbage!"), 1 << 30}
	out["timeindex"] = seed{tidx, math.MaxUint32}
	out["timeindex-torn"] = seed{tidx[:len(tidx)-5], 45}
	back := bytes.Clone(tidx)
	binary.LittleEndian.PutUint64(back[12*4:], 3) // time goes backwards
	out["timeindex-backwards"] = seed{back, math.MaxUint32}
	out["empty"] = seed{nil, 0}
	return out
}

// TestWriteFuzzSeeds writes the seed corpora when -update-fuzz-seeds is given, and
// otherwise checks that the committed corpora hold every seed.
func TestWriteFuzzSeeds(t *testing.T) {
	write := func(target, name string, vals ...any) {
		t.Helper()
		var b bytes.Buffer
		b.WriteString("go test fuzz v1\n")
		for _, v := range vals {
			switch v := v.(type) {
			case []byte:
				fmt.Fprintf(&b, "[]byte(%q)\n", v)
			case int64:
				fmt.Fprintf(&b, "int64(%d)\n", v)
			}
		}
		path := filepath.Join("testdata", "fuzz", target, name)
		if *updateSeeds {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, b.Bytes()) {
			t.Errorf("seed %s is missing or stale (%v): run with -update-fuzz-seeds", path, err)
		}
	}
	for name, b := range fuzzSeedBatches(t) {
		write("FuzzDecodeBatch", name, b, int64(0))
	}
	for name, s := range fuzzSeedIndexes() {
		write("FuzzParseIndex", name, s.b, s.limit)
	}
}

// FuzzDecodeBatch drives decodeBatch with arbitrary bytes. It must never panic, and
// every record it returns must come from a batch that passes every check: a sane
// header, a matching CRC32C, a payload of the declared size and records that fill it.
func FuzzDecodeBatch(f *testing.F) {
	for _, b := range fuzzSeedBatches(f) {
		f.Add(b, int64(0))
	}
	f.Fuzz(func(t *testing.T, b []byte, from int64) {
		checkDecodeBatch(t, b, from)
		// The same bytes with a checksum that matches, so that the fuzzer explores the
		// checks behind the CRC (lengths, codec, varints) as well.
		if len(b) >= batchHeaderSize {
			fixed := bytes.Clone(b)
			if n := int64(binary.LittleEndian.Uint32(fixed)) + 4; n >= batchHeaderSize && n <= int64(len(fixed)) {
				binary.LittleEndian.PutUint32(fixed[4:], batchCRC(fixed[:n]))
			}
			checkDecodeBatch(t, fixed, from)
		}
	})
}

// checkDecodeBatch checks decodeBatch's promises on one input (see FuzzDecodeBatch).
func checkDecodeBatch(t *testing.T, b []byte, from int64) {
	{
		sentinel := Record{Offset: -7}
		dst, _, err := decodeBatch(b, []Record{sentinel}, from, nil)
		if len(dst) == 0 || dst[0].Offset != -7 {
			t.Fatal("decodeBatch lost the records already in dst")
		}
		recs := dst[1:]
		if err != nil {
			if len(recs) != 0 {
				t.Fatalf("error %v with %d records returned", err, len(recs))
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		// Independent checks of what the decoder accepted.
		h, herr := parseBatchHeader(b)
		if herr != nil || h.size() > int64(len(b)) {
			t.Fatalf("accepted a batch with a bad header: %v", herr)
		}
		whole := b[:h.size()]
		if batchCRC(whole) != h.crc {
			t.Fatal("accepted a batch whose checksum does not match")
		}
		all, _, err := decodeBatch(whole, nil, math.MinInt64, nil)
		if err != nil || len(all) != int(h.count) {
			t.Fatalf("accepted batch does not decode all %d records: %d, %v", h.count, len(all), err)
		}
		prev := int64(math.MinInt64)
		for _, r := range all {
			if r.Offset <= prev || r.Offset < h.baseOffset || r.Offset > h.lastOffset() {
				t.Fatalf("record offset %d outside batch [%d, %d] or not ascending", r.Offset, h.baseOffset, h.lastOffset())
			}
			prev = r.Offset
		}
		for _, r := range recs {
			if r.Offset < from {
				t.Fatalf("record %d returned for from=%d", r.Offset, from)
			}
		}
		// Re-encoding the records gives a batch that decodes to the same records.
		re, _, err := encodeBatch(nil, all, batchMeta{base: h.baseOffset, lastDelta: h.lastDelta, codec: Compression(h.attrs & codecMask)})
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		again, _, err := decodeBatch(re, nil, math.MinInt64, nil)
		if err != nil || len(again) != len(all) {
			t.Fatalf("re-encoded batch: %d records, %v", len(again), err)
		}
		for i := range all {
			a, g := all[i], again[i]
			if a.Offset != g.Offset || a.Timestamp != g.Timestamp || !bytes.Equal(a.Key, g.Key) || (a.Key == nil) != (g.Key == nil) || !bytes.Equal(a.Value, g.Value) {
				t.Fatalf("record %d changed by re-encoding: %+v vs %+v", i, a, g)
			}
		}
	}
}

// FuzzParseIndex drives the offset and time index parsers with arbitrary bytes. They
// must never panic and return only a prefix of the file's entries that satisfies the
// documented invariants.
func FuzzParseIndex(f *testing.F) {
	for _, s := range fuzzSeedIndexes() {
		f.Add(s.b, s.limit)
	}
	f.Fuzz(func(t *testing.T, b []byte, limit int64) {
		idx := parseIndex(b, limit)
		if len(idx) > len(b)/indexEntrySize {
			t.Fatalf("%d entries from %d bytes", len(idx), len(b))
		}
		for i, e := range idx {
			raw := b[i*indexEntrySize:]
			if e.rel != binary.LittleEndian.Uint32(raw) || e.pos != binary.LittleEndian.Uint32(raw[4:]) {
				t.Fatalf("entry %d is not the file's entry", i)
			}
			if int64(e.pos) < segmentHeaderSize || int64(e.pos) >= limit {
				t.Fatalf("entry %d position %d outside [%d, %d)", i, e.pos, segmentHeaderSize, limit)
			}
			if i > 0 && (e.rel <= idx[i-1].rel || e.pos <= idx[i-1].pos) {
				t.Fatalf("entry %d does not grow", i)
			}
		}
		if len(idx) > 0 {
			// Lookups land on an entry's position or the header end.
			for _, rel := range []uint32{0, idx[0].rel, idx[len(idx)-1].rel, math.MaxUint32} {
				e := lookupIndex(idx, rel)
				if pos := int64(e.pos); e.rel > rel || pos != segmentHeaderSize && (pos < int64(idx[0].pos) || pos > int64(idx[len(idx)-1].pos)) {
					t.Fatalf("lookup(%d) = %d, not an entry", rel, pos)
				}
			}
		}
		tidx := parseTimeIndex(b, limit)
		if len(tidx) > len(b)/timeIndexEntrySize {
			t.Fatalf("%d time entries from %d bytes", len(tidx), len(b))
		}
		for i, e := range tidx {
			raw := b[i*timeIndexEntrySize:]
			if e.ts != int64(binary.LittleEndian.Uint64(raw)) || e.rel != binary.LittleEndian.Uint32(raw[8:]) {
				t.Fatalf("time entry %d is not the file's entry", i)
			}
			if int64(e.rel) >= limit {
				t.Fatalf("time entry %d rel %d not below %d", i, e.rel, limit)
			}
			if i > 0 && (e.rel <= tidx[i-1].rel || e.ts < tidx[i-1].ts) {
				t.Fatalf("time entry %d does not grow", i)
			}
		}
		for _, ts := range []int64{math.MinInt64, 0, math.MaxInt64} {
			rel := lookupTimeIndex(tidx, ts)
			if rel != 0 && (len(tidx) == 0 || rel < tidx[0].rel) {
				t.Fatalf("time lookup(%d) = %d, not an entry", ts, rel)
			}
		}
	})
}

// FuzzOpenSegment writes arbitrary bytes as the only (active) segment of a partition
// and opens the log: Open must succeed, every record it then returns must be one that
// an independent decode of the (recovered) file yields, and an append must continue
// at the end offset.
func FuzzOpenSegment(f *testing.F) {
	var seg []byte
	seg = append(seg, make([]byte, segmentHeaderSize)...)
	copy(seg, segmentMagic)
	seg[4] = segmentVersion
	next := int64(0)
	for _, name := range []string{"plain", "s2", "single-empty"} {
		b := bytes.Clone(fuzzSeedBatches(f)[name])
		h, _ := parseBatchHeader(b)
		sealBatch(b, next, crc32Body(b))
		next += int64(h.lastDelta) + 1
		seg = append(seg, b...)
	}
	f.Add(seg)
	f.Add(seg[:len(seg)-7])
	f.Add(seg[:segmentHeaderSize+30])
	f.Add(seg[:10])
	flipped := bytes.Clone(seg)
	flipped[segmentHeaderSize+60] ^= 4
	f.Add(flipped)
	badHeader := bytes.Clone(seg)
	badHeader[1] = 'X'
	f.Add(badHeader)
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		opts := Options{Fsync: FsyncNever, MaintenanceInterval: time.Hour}
		l, err := Open(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Topic("f", TopicConfig{Partitions: 1}); err != nil {
			t.Fatal(err)
		}
		l.Close()
		pdir := filepath.Join(dir, "f", "0")
		if err := removeIndexFiles(pdir, 0); err != nil {
			t.Fatal(err)
		}
		path := segmentPath(pdir, 0, logExt)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		l, err = Open(dir, opts)
		if err != nil {
			t.Fatalf("open over an arbitrary active segment: %v", err)
		}
		defer l.Close()
		tp, _ := l.Topic("f", TopicConfig{})
		// What an independent decoder finds in the recovered file.
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var want []Record
		for pos := segmentHeaderSize; pos < len(raw); {
			h, err := parseBatchHeader(raw[pos:])
			if err != nil {
				t.Fatalf("recovered segment has a bad batch at %d: %v", pos, err)
			}
			if want, _, err = decodeBatch(raw[pos:], want, 0, nil); err != nil {
				t.Fatalf("recovered segment has a bad batch at %d: %v", pos, err)
			}
			pos += int(h.size())
		}
		got := readAll(t, tp, 0)
		if len(got) != len(want) || tp.Stats(0).EndOffset != int64(len(want)) {
			t.Fatalf("read %d records, end %d; the file holds %d", len(got), tp.Stats(0).EndOffset, len(want))
		}
		for i := range got {
			if !sameRecord(got[i], want[i]) || got[i].Offset != int64(i) {
				t.Fatalf("record %d differs from the file's", i)
			}
		}
		off, err := tp.Append(context.Background(), 0, []Record{{Value: []byte("next")}})
		if err != nil || off != int64(len(want)) {
			t.Fatalf("append after recovery: %d, %v; want %d", off, err, len(want))
		}
	})
}

// crc32Body is the body checksum of a batch (bytes 16 on), which sealBatch completes.
func crc32Body(b []byte) uint32 { return crc32.Checksum(b[16:], castagnoli) }
