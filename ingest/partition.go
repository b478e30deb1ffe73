package ingest

import (
	"github.com/cespare/xxhash/v2"

	"github.com/vigilhq/vigil/sample"
)

// labelSep separates names and values in the series hash; it is the separator
// Prometheus's labels use (with the slicelabels build tag, labels.Labels.Hash is this
// same hash; the default stringlabels build hashes its own encoding instead).
const labelSep = 0xff

// SeriesHash is the stable 64-bit hash of a series: xxhash64 over name, 0xff, value,
// 0xff for each label in sorted order. It is part of Vigil's contract: the same
// series always lands in the same partition, PartitionOf(hash, n) = hash % n, across
// restarts and versions. ls must be sorted by name (the Writer sorts them).
func SeriesHash(ls []sample.Label) uint64 {
	var stack [512]byte
	h, _ := seriesHash(stack[:0], ls)
	return h
}

// seriesHash is SeriesHash using buf as scratch (returned, possibly grown, for reuse):
// one xxhash over contiguous bytes is several times faster than a Digest fed per label.
func seriesHash(buf []byte, ls []sample.Label) (uint64, []byte) {
	buf = buf[:0]
	for _, l := range ls {
		buf = append(buf, l.Name...)
		buf = append(buf, labelSep)
		buf = append(buf, l.Value...)
		buf = append(buf, labelSep)
	}
	return xxhash.Sum64(buf), buf
}

// PartitionOf maps a series hash to one of n partitions.
func PartitionOf(hash uint64, n int) int {
	return int(hash % uint64(n))
}
