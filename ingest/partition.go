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
	var d xxhash.Digest
	d.Reset()
	sep := [1]byte{labelSep}
	for _, l := range ls {
		d.Write(l.Name)
		d.Write(sep[:])
		d.Write(l.Value)
		d.Write(sep[:])
	}
	return d.Sum64()
}

// PartitionOf maps a series hash to one of n partitions.
func PartitionOf(hash uint64, n int) int {
	return int(hash % uint64(n))
}
