package rollup

import (
	"fmt"
	"math"
	"slices"
	"sync"
)

// VictoriaMetrics histogram bucket layout (github.com/VictoriaMetrics/metrics): 18
// log-spaced buckets per decade from 1e-9 to 1e18, plus a lower bucket "0...1.000e-09"
// and an upper bucket "1.000e+18...+Inf". Part of the output contract: vmrange label
// values must equal VictoriaMetrics's.
const (
	vmE10Min            = -9
	vmE10Max            = 18
	vmBucketsPerDecimal = 18
	vmBucketsCount      = (vmE10Max - vmE10Min) * vmBucketsPerDecimal
	vmLowerIdx          = -1
	vmUpperIdx          = vmBucketsCount
)

// vmHist counts values per VictoriaMetrics bucket index.
type vmHist struct {
	B map[int32]uint64
}

func vmBucketIndex(v float64) int32 {
	f := (math.Log10(v) - vmE10Min) * vmBucketsPerDecimal
	switch {
	case f < 0:
		return vmLowerIdx
	case f >= vmBucketsCount:
		return vmUpperIdx
	}
	idx := uint(f)
	if f == float64(idx) && idx > 0 {
		idx-- // 10^n belongs to the lower bucket (le semantics)
	}
	return int32(idx)
}

func (h *vmHist) add(v float64) {
	if math.IsNaN(v) || v < 0 {
		return
	}
	if h.B == nil {
		h.B = make(map[int32]uint64)
	}
	h.B[vmBucketIndex(v)]++
}

func (h *vmHist) merge(o *vmHist) {
	if o == nil {
		return
	}
	for i, n := range o.B {
		if h.B == nil {
			h.B = make(map[int32]uint64)
		}
		h.B[i] += n
	}
}

// vmBucket is one non-empty bucket.
type vmBucket struct {
	Idx int32
	N   uint64
}

func (h *vmHist) sorted() []vmBucket {
	if h == nil {
		return nil
	}
	out := make([]vmBucket, 0, len(h.B))
	for i, n := range h.B {
		if n > 0 {
			out = append(out, vmBucket{i, n})
		}
	}
	slices.SortFunc(out, func(a, b vmBucket) int { return int(a.Idx) - int(b.Idx) })
	return out
}

var (
	vmRangesOnce sync.Once
	vmRanges     [vmBucketsCount]string
)

// vmRange is the vmrange label value of bucket idx, computed as VictoriaMetrics does
// (repeated multiplication, %.3e) so that the strings match exactly.
func vmRange(idx int32) string {
	switch idx {
	case vmLowerIdx:
		return fmt.Sprintf("0...%.3e", math.Pow10(vmE10Min))
	case vmUpperIdx:
		return fmt.Sprintf("%.3e...+Inf", math.Pow10(vmE10Max))
	}
	vmRangesOnce.Do(func() {
		mult := math.Pow(10, 1.0/vmBucketsPerDecimal)
		v := math.Pow10(vmE10Min)
		start := fmt.Sprintf("%.3e", v)
		for i := range vmBucketsCount {
			v *= mult
			end := fmt.Sprintf("%.3e", v)
			vmRanges[i] = start + "..." + end
			start = end
		}
	})
	return vmRanges[idx]
}
