package rollup

import (
	"testing"

	"github.com/prometheus/prometheus/model/labels"
)

// FuzzDecodeResult: records of the rollups topic never panic the decoder, and what
// decodes re-encodes to the same record.
func FuzzDecodeResult(f *testing.F) {
	k, v := encodeResult(&Result{Rollup: "http_5s", Start: 1000, End: 6000, Series: []ResultSeries{
		{Labels: labels.FromStrings("__name__", "m:5s_max", "a", "b"), Value: 1.5},
		{Labels: labels.FromStrings("__name__", "m:5s_min"), Value: -2},
	}})
	f.Add(k, v)
	f.Add([]byte("rollup/v1/x/5"), []byte{1, 0x80, 0x80, 0x80, 0x80, 0})
	f.Add([]byte("other"), []byte{})
	f.Fuzz(func(t *testing.T, key, value []byte) {
		r, err := decodeResult(key, value)
		if err != nil {
			return
		}
		k2, v2 := encodeResult(r)
		r2, err := decodeResult(k2, v2)
		if err != nil {
			t.Fatalf("re-encoded result does not decode: %v", err)
		}
		if describe([]*Result{r}) != describe([]*Result{r2}) {
			t.Fatalf("round trip changed the result")
		}
	})
}

// FuzzDecodeCheckpoint: damaged checkpoint files give an error, never a panic.
func FuzzDecodeCheckpoint(f *testing.F) {
	f.Add([]byte(checkpointMagic + "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Add([]byte("VGRLCKP1garbage-garbage-garbage"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeCheckpoint(b)
	})
}

// FuzzDecodeKey: group keys decode without panics and round-trip.
func FuzzDecodeKey(f *testing.F) {
	f.Add(string(encodeKey(nil, labels.FromStrings("__name__", "m", "job", "x"))))
	f.Add("\x05ab")
	f.Fuzz(func(t *testing.T, key string) {
		ls, err := decodeKey(key)
		if err != nil {
			return
		}
		again, err := decodeKey(string(encodeKey(nil, ls)))
		if err != nil || labels.Compare(again, ls) != 0 {
			t.Fatalf("re-encoded key decodes to %v (%v), want %v", again, err, ls)
		}
	})
}
