package rules

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/promql"
	promrules "github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/vigilhq/vigil/alerting"
)

// testStore is a real TSDB in a temporary folder with a PromQL engine over it.
type testStore struct {
	db     *tsdb.DB
	engine *promql.Engine
}

func openTestStore(dir string) (*testStore, error) {
	opts := tsdb.DefaultOptions()
	opts.OutOfOrderTimeWindow = 0
	db, err := tsdb.Open(dir, nil, nil, opts, nil)
	if err != nil {
		return nil, err
	}
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 50_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	return &testStore{db: db, engine: engine}, nil
}

func newTestStore(t testing.TB) *testStore {
	t.Helper()
	s, err := openTestStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.db.Close() })
	return s
}

// add appends one sample per series (labels as name/value pairs, __name__ first).
func (s *testStore) add(t testing.TB, ts time.Time, v float64, lv ...string) {
	t.Helper()
	if err := s.addErr(ts, v, lv...); err != nil {
		t.Fatal(err)
	}
}

func (s *testStore) addErr(ts time.Time, v float64, lv ...string) error {
	app := s.db.Appender(context.Background())
	if _, err := app.Append(0, labels.FromStrings(lv...), timestamp.FromTime(ts), v); err != nil {
		app.Rollback()
		return err
	}
	return app.Commit()
}

// query runs an instant query and returns its vector.
func (s *testStore) query(t testing.TB, q string, ts time.Time) promql.Vector {
	t.Helper()
	v, err := instantQuery(context.Background(), q, ts, s.engine, s.db)
	if err != nil {
		t.Fatalf("query %q: %v", q, err)
	}
	return v
}

// writeFile writes a rule file into dir and returns its path.
func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// notifications records what a Manager hands to Notify.
type notifications struct {
	mu     sync.Mutex
	alerts []alerting.Alert
	ch     chan struct{}
}

func newNotifications() *notifications { return &notifications{ch: make(chan struct{}, 1000)} }

func (n *notifications) notify(_ context.Context, as []alerting.Alert) {
	n.mu.Lock()
	n.alerts = append(n.alerts, as...)
	n.mu.Unlock()
	select {
	case n.ch <- struct{}{}:
	default:
	}
}

func (n *notifications) all() []alerting.Alert {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]alerting.Alert(nil), n.alerts...)
}

// waitFor polls cond until it holds or a generous timeout passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// captureAppendable records appended samples in memory.
type captureAppendable struct {
	mu      sync.Mutex
	samples []capturedSample
}

type capturedSample struct {
	Labels labels.Labels
	T      int64
	V      float64
}

func (c *captureAppendable) Appender(context.Context) storage.Appender { return &captureAppender{c: c} }

type captureAppender struct {
	storage.Appender // not implemented beyond what the rules use
	c                *captureAppendable
	pending          []capturedSample
}

func (a *captureAppender) SetOptions(*storage.AppendOptions) {}

func (a *captureAppender) Append(_ storage.SeriesRef, l labels.Labels, t int64, v float64) (storage.SeriesRef, error) {
	a.pending = append(a.pending, capturedSample{l.Copy(), t, v})
	return 0, nil
}

func (a *captureAppender) Commit() error {
	a.c.mu.Lock()
	a.c.samples = append(a.c.samples, a.pending...)
	a.c.mu.Unlock()
	return nil
}

func (a *captureAppender) Rollback() error { return nil }

func (c *captureAppendable) byName(name string) []capturedSample {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []capturedSample
	for _, s := range c.samples {
		if s.Labels.Get(model.MetricNameLabel) == name {
			out = append(out, s)
		}
	}
	return out
}

func queryFunc(s *testStore) promrules.QueryFunc { return promrules.EngineQueryFunc(s.engine, s.db) }
