package store

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vigilhq/vigil/logcore"
	"github.com/vigilhq/vigil/sample"
)

// FuzzBatchWriter feeds arbitrary record values to the materializer's writer: corrupt
// batches and bad histogram protos are counted and skipped, never a panic or an error
// that would stall the partition.
func FuzzBatchWriter(f *testing.F) {
	var enc sample.Encoder
	enc.Reset()
	enc.AppendSeries(&sample.Series{Labels: lbls("__name__", "x", "a", "b"), Samples: []sample.Sample{{T: 1000, V: 1}, {T: 2000, V: 2}}})
	enc.AppendSeries(&sample.Series{Labels: lbls("b", "1", "__name__", "y"), Histograms: []sample.Histogram{{T: 1000, Proto: []byte{0x08, 0x01}}}})
	f.Add(append([]byte(nil), enc.Bytes()...))
	f.Add([]byte{1, 0x81, 0x80, 0x80, 0x80, 0})
	f.Add([]byte{1, 1, 0, 0, 0, 0})
	f.Add([]byte{})
	s, err := Open(Options{Dir: filepath.Join(f.TempDir(), "store"), Metrics: metrics.NewSet()})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	m := &Materializer{s: s, log: s.opts.Logger, corruptTotal: metrics.NewSet().NewCounter("corrupt"), samplesTotal: &metrics.Counter{}, histsTotal: &metrics.Counter{}}
	w := newBatchWriter(m)
	f.Fuzz(func(t *testing.T, value []byte) {
		if _, err := w.write(context.Background(), []logcore.Record{{Value: value}}); err != nil {
			t.Fatalf("write: %v", err)
		}
	})
}
