package rollup

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
)

// acc is the state of one group in one window in one partition: 56 bytes, plus an
// extension only for the outputs that need per-series state, a sketch, buckets or
// the running variance.
// Fields are exported for the checkpoint encoding (gob); acc is not part of the API.
type acc struct {
	Count    float64
	Sum      float64
	Min, Max float64
	LastT    int64
	LastV    float64
	Ext      *accExt
}

// accExt is the part of an acc that only some outputs need.
type accExt struct {
	// Series are the group's series in the window in first-arrival order, with their
	// samples when a counter output needs them. Index maps a series hash to its slot.
	Series []seriesWin
	Index  map[uint64]int32
	Sketch *sketch
	Hist   *vmHist
	// Mean and M2 are Welford's running mean and sum of squared deviations (needStd).
	Mean, M2 float64
}

// seriesWin is one series' samples in one window, in arrival order.
type seriesWin struct {
	H       uint64
	Samples []tv
}

// tv is one sample.
type tv struct {
	T int64
	V float64
}

// slotHint remembers where a series' samples went in the window it last fed, so that
// its next sample in the same window skips the index lookup. It is only a hint: it is
// checked against the slot's series.
type slotHint struct {
	win  int64
	slot int32
}

// push adds sample (t, v) of series h to the accumulator of the window starting at
// win; hint is the series' slot hint for this rule.
func (a *acc) push(nd need, h uint64, t int64, v float64, win int64, hint *slotHint) {
	if a.Count == 0 {
		a.Min, a.Max, a.LastT, a.LastV = v, v, t, v
	} else {
		a.Min = min(a.Min, v)
		a.Max = max(a.Max, v)
		if t > a.LastT || (t == a.LastT && v > a.LastV) {
			a.LastT, a.LastV = t, v
		}
	}
	a.Count++
	a.Sum += v
	if nd&(needSeries|needCounter|needSketch|needHist|needStd) == 0 {
		return
	}
	if a.Ext == nil {
		a.Ext = &accExt{}
	}
	x := a.Ext
	if nd&needStd != 0 {
		d := v - x.Mean
		x.Mean += d / a.Count
		x.M2 += d * (v - x.Mean)
	}
	if nd&(needSeries|needCounter) != 0 {
		if x.Index == nil {
			x.Index = make(map[uint64]int32, 4)
		}
		i, ok := hint.slot, hint.win == win && int(hint.slot) < len(x.Series) && x.Series[hint.slot].H == h
		if !ok {
			i, ok = x.Index[h]
		}
		if !ok {
			i = int32(len(x.Series))
			x.Index[h] = i
			if len(x.Series) < cap(x.Series) {
				// Reuse the slot and its sample buffer from an earlier window.
				x.Series = x.Series[:i+1]
				x.Series[i].H = h
				x.Series[i].Samples = x.Series[i].Samples[:0]
			} else {
				x.Series = append(x.Series, seriesWin{H: h})
			}
		}
		hint.win, hint.slot = win, i
		if nd&needCounter != 0 {
			x.Series[i].Samples = append(x.Series[i].Samples, tv{t, v})
		}
	}
	if nd&needSketch != 0 {
		if x.Sketch == nil {
			x.Sketch = &sketch{}
		}
		x.Sketch.add(v)
	}
	if nd&needHist != 0 {
		if x.Hist == nil {
			x.Hist = &vmHist{}
		}
		x.Hist.add(v)
	}
}

// reset empties the extension for the next window, keeping its map and buffers.
// The sketch and buckets were handed to a partial and are not reused.
func (x *accExt) reset() {
	clear(x.Index)
	x.Series = x.Series[:0]
	x.Sketch, x.Hist = nil, nil
	x.Mean, x.M2 = 0, 0
}

// carry is the last sample of a series before the open windows: counter outputs count
// a window's increase from it.
type carry struct {
	T int64
	V float64
}

// groupPartial is one partition's final contribution to one group of one window, sent
// to the coordinator when the partition seals the window.
type groupPartial struct {
	Key     string  // encoded group labels (encodeKey)
	A       acc     // A.Ext is nil
	Mean    float64 // Welford state, needStd
	M2      float64
	Inc     float64
	RateSum float64
	RateN   int
	Series  []uint64 // sorted series hashes, for count_series
	Sketch  *sketch
	Hist    *vmHist
}

// seal turns the accumulator into a partial, computing counter increases and rates
// from the series' carries, which it updates. Series are visited in arrival order so
// the float sums are the same on every run over the same log.
func (a *acc) seal(nd need, key string, carries map[uint64]carry, staleness int64) groupPartial {
	gp := groupPartial{Key: key, A: *a}
	gp.A.Ext = nil
	x := a.Ext
	if x == nil {
		return gp
	}
	gp.Sketch, gp.Hist = x.Sketch, x.Hist
	gp.Mean, gp.M2 = x.Mean, x.M2
	if nd&needSeries != 0 {
		gp.Series = make([]uint64, len(x.Series))
		for i := range x.Series {
			gp.Series[i] = x.Series[i].H
		}
		slices.Sort(gp.Series)
	}
	if nd&needCounter == 0 {
		return gp
	}
	for i := range x.Series {
		sw := &x.Series[i]
		ss := sortDedupe(sw.Samples)
		first := 0
		prev, ok := carries[sw.H]
		if !ok || ss[0].T-prev.T > staleness {
			prev = carry{ss[0].T, ss[0].V} // a new series: its first sample is the baseline
			first = 1
		}
		prevT := prev.T
		inc := 0.0
		pv := prev.V
		for _, s := range ss[first:] {
			if s.V >= pv {
				inc += s.V - pv
			} else {
				inc += s.V // counter reset
			}
			pv = s.V
		}
		lastS := ss[len(ss)-1]
		gp.Inc += inc
		if d := float64(lastS.T-prevT) / 1000; d > 0 {
			gp.RateSum += inc / d
			gp.RateN++
		}
		carries[sw.H] = carry(lastS)
	}
	return gp
}

// sortDedupe sorts samples by time; of samples with the same timestamp it keeps the
// largest value, so the result does not depend on arrival order.
func sortDedupe(ss []tv) []tv {
	if !slices.IsSortedFunc(ss, cmpTV) {
		slices.SortFunc(ss, cmpTV)
	}
	out := ss[:1]
	for _, s := range ss[1:] {
		if s.T == out[len(out)-1].T {
			out[len(out)-1].V = s.V // sorted by value within a timestamp: the larger wins
			continue
		}
		out = append(out, s)
	}
	return out
}

func cmpTV(a, b tv) int {
	switch {
	case a.T < b.T:
		return -1
	case a.T > b.T:
		return 1
	case a.V < b.V:
		return -1
	case a.V > b.V:
		return 1
	}
	return 0
}

// merged is one group's state of one window merged over all partitions, plus the
// group's running state across windows; outputs flush from it.
type merged struct {
	acc
	StdN       float64
	Mean, M2   float64
	increase   float64
	total      float64
	rateSum    float64
	rateSeries int
	series     []uint64
	sketch     *sketch
	winHist    *vmHist
	histCum    *vmHist
}

// add merges one partition's partial into m. Partials are added in partition order.
func (m *merged) add(gp *groupPartial) {
	a, b := &m.acc, &gp.A
	if a.Count == 0 {
		*a = *b
		m.Mean, m.M2 = gp.Mean, gp.M2
	} else if b.Count > 0 {
		a.Min = min(a.Min, b.Min)
		a.Max = max(a.Max, b.Max)
		if b.LastT > a.LastT || (b.LastT == a.LastT && b.LastV > a.LastV) {
			a.LastT, a.LastV = b.LastT, b.LastV
		}
		n := a.Count + b.Count
		d := gp.Mean - m.Mean
		m.M2 += gp.M2 + d*d*a.Count*b.Count/n
		m.Mean += d * b.Count / n
		a.Count = n
		a.Sum += b.Sum
	}
	m.StdN = a.Count
	m.increase += gp.Inc
	m.rateSum += gp.RateSum
	m.rateSeries += gp.RateN
	if len(gp.Series) > 0 {
		if len(m.series) == 0 {
			m.series = gp.Series
		} else {
			m.series = append(m.series, gp.Series...)
			slices.Sort(m.series)
			m.series = slices.Compact(m.series)
		}
	}
	if gp.Sketch != nil {
		if m.sketch == nil {
			m.sketch = &sketch{}
		}
		m.sketch.merge(gp.Sketch)
	}
	if gp.Hist != nil {
		if m.winHist == nil {
			m.winHist = &vmHist{}
		}
		m.winHist.merge(gp.Hist)
	}
}

// cumState is a group's running state across windows (total, histogram_bucket).
type cumState struct {
	Total   float64
	Hist    *vmHist
	LastEnd int64 // end of the newest window the group had samples in
}

// encodeKey encodes a label set as a map key: uvarint-length-prefixed names and values.
func encodeKey(dst []byte, ls labels.Labels) []byte {
	ls.Range(func(l labels.Label) {
		dst = binary.AppendUvarint(dst, uint64(len(l.Name)))
		dst = append(dst, l.Name...)
		dst = binary.AppendUvarint(dst, uint64(len(l.Value)))
		dst = append(dst, l.Value...)
	})
	return dst
}

// decodeKey is the inverse of encodeKey.
func decodeKey(key string) (labels.Labels, error) {
	b := labels.NewScratchBuilder(8)
	for len(key) > 0 {
		var parts [2]string
		for i := range parts {
			n, k := binary.Uvarint([]byte(key[:min(len(key), 10)]))
			if k <= 0 || n > uint64(len(key)-k) {
				return labels.EmptyLabels(), fmt.Errorf("rollup: corrupt group key")
			}
			parts[i] = key[k : k+int(n)]
			key = key[k+int(n):]
		}
		b.Add(parts[0], parts[1])
	}
	return b.Labels(), nil
}

// isNaN reports whether v should be skipped: NaN samples (including Prometheus staleness
// markers) are not aggregated.
func isNaN(v float64) bool { return math.IsNaN(v) }
