package rollup

import (
	"math"
	"slices"
)

// sketchRelativeError is the quantile sketch's bound: a quantile it returns is within
// this fraction of the exact sample value of that rank.
const sketchRelativeError = 0.01

var (
	sketchGamma    = (1 + sketchRelativeError) / (1 - sketchRelativeError)
	sketchLogGamma = math.Log(sketchGamma)
)

// sketch is a log-bucketed quantile sketch (the DDSketch idea): a value v > 0 falls in
// bucket ⌈log_γ v⌉, whose representative 2γ^i/(γ+1) is within sketchRelativeError of
// every value in it. Counts are order-independent, so equal inputs give equal sketches
// whatever the arrival order, and sketches merge by adding counts. Values with
// |v| < 1e-300 count as zero; ±Inf have their own buckets.
type sketch struct {
	Pos, Neg map[int32]uint64
	Zero     uint64
	PosInf   uint64
	NegInf   uint64
	N        uint64
}

func sketchIndex(v float64) int32 { return int32(math.Ceil(math.Log(v) / sketchLogGamma)) }

func sketchValue(i int32) float64 { return 2 * math.Pow(sketchGamma, float64(i)) / (sketchGamma + 1) }

func (s *sketch) count() uint64 { return s.N }

func (s *sketch) add(v float64) {
	s.N++
	switch {
	case math.IsInf(v, 1):
		s.PosInf++
	case math.IsInf(v, -1):
		s.NegInf++
	case math.Abs(v) < 1e-300:
		s.Zero++
	case v > 0:
		if s.Pos == nil {
			s.Pos = make(map[int32]uint64)
		}
		s.Pos[sketchIndex(v)]++
	default:
		if s.Neg == nil {
			s.Neg = make(map[int32]uint64)
		}
		s.Neg[sketchIndex(-v)]++
	}
}

func (s *sketch) merge(o *sketch) {
	s.N += o.N
	s.Zero += o.Zero
	s.PosInf += o.PosInf
	s.NegInf += o.NegInf
	for i, n := range o.Pos {
		if s.Pos == nil {
			s.Pos = make(map[int32]uint64)
		}
		s.Pos[i] += n
	}
	for i, n := range o.Neg {
		if s.Neg == nil {
			s.Neg = make(map[int32]uint64)
		}
		s.Neg[i] += n
	}
}

// quantile returns the approximate value of rank ⌊phi·(n−1)⌋ (0-based).
func (s *sketch) quantile(phi float64) float64 {
	if s.N == 0 {
		return math.NaN()
	}
	rank := uint64(phi * float64(s.N-1))
	if rank < s.NegInf {
		return math.Inf(-1)
	}
	seen := s.NegInf
	neg := sortedKeys(s.Neg)
	for j := len(neg) - 1; j >= 0; j-- { // the most negative values first
		seen += s.Neg[neg[j]]
		if rank < seen {
			return -sketchValue(neg[j])
		}
	}
	seen += s.Zero
	if rank < seen {
		return 0
	}
	for _, i := range sortedKeys(s.Pos) {
		seen += s.Pos[i]
		if rank < seen {
			return sketchValue(i)
		}
	}
	return math.Inf(1)
}

func sortedKeys(m map[int32]uint64) []int32 {
	ks := make([]int32, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
