package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/vigilhq/vigil/logcore"
	"github.com/vigilhq/vigil/sample"
)

// BenchmarkMaterializer measures how fast the materializer turns logged sample batches
// into queryable samples: b.N records of 1,000 series with one sample each (a typical
// remote-write request), over 20,000 distinct series, on 4 partitions. It reports
// samples/s and the lag left when the timer stops (zero: Sync waits for all).
func BenchmarkMaterializer(b *testing.B) {
	const partitions, perRecord, distinct = 4, 1000, 20000
	dir := b.TempDir()
	l, err := logcore.Open(filepath.Join(dir, "log"), logcore.Options{Fsync: logcore.FsyncNever})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	topic, err := l.Topic("samples", logcore.TopicConfig{Partitions: partitions})
	if err != nil {
		b.Fatal(err)
	}
	labelSets := make([][]sample.Label, distinct)
	for i := range labelSets {
		labelSets[i] = lbls("__name__", fmt.Sprintf("metric_%d", i%50), "instance", fmt.Sprintf("host-%d", i/50), "job", "bench")
	}
	start := time.Now().Add(-time.Hour).UnixMilli()
	var enc sample.Encoder
	for i := 0; i < b.N; i++ {
		enc.Reset()
		p := i % partitions
		ts := start + int64(i/partitions)*1000
		for k := 0; k < perRecord; k++ {
			// Partition p holds the series whose index is p modulo partitions.
			idx := ((i/partitions)*perRecord + k) % (distinct / partitions)
			enc.AppendSeries(&sample.Series{Labels: labelSets[idx*partitions+p], Samples: []sample.Sample{{T: ts, V: float64(i)}}})
		}
		if _, err := topic.Append(context.Background(), p, []logcore.Record{{Value: enc.Bytes()}}); err != nil {
			b.Fatal(err)
		}
	}
	s, err := Open(Options{Dir: filepath.Join(dir, "store"), Metrics: metrics.NewSet()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ReportAllocs()
	b.ResetTimer()
	t0 := time.Now()
	m, err := s.StartMaterializer(MaterializerOptions{Log: l, Topic: topic, CheckpointInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := m.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(t0)
	b.StopTimer()
	b.ReportMetric(float64(b.N*perRecord)/elapsed.Seconds(), "samples/s")
	b.ReportMetric(float64(m.Lag()), "lag_records")
	m.Stop(context.Background())
}
