package alerting

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/alertmanager/notify/webhook"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/vigilhq/vigil/logcore"
)

// testRoutingKey is a well-formed (32 characters) PagerDuty routing key.
const testRoutingKey = "0123456789abcdef0123456789abcdef"

func openTestLog(t testing.TB, dir string) *logcore.FileLog {
	t.Helper()
	l, err := logcore.Open(dir, logcore.Options{Fsync: logcore.FsyncAlways})
	if err != nil {
		t.Fatalf("open log: %v", err)
	}
	return l
}

// noSyncLog is a log that never fsyncs, for tests of timing semantics (the
// Alertmanager differential tests): under a loaded disk, synced outbox appends could
// shift flushes past the moments the test compares, which says nothing about routing.
func noSyncLog(t testing.TB) *logcore.FileLog {
	t.Helper()
	l, err := logcore.Open(t.TempDir(), logcore.Options{Fsync: logcore.FsyncNever})
	if err != nil {
		t.Fatalf("open log: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func mustConfig(t testing.TB, doc string) *Config {
	t.Helper()
	c, err := ParseConfig([]byte(doc))
	if err != nil {
		t.Fatalf("parse config: %v\n%s", err, doc)
	}
	return c
}

// newTestPipeline starts a pipeline on a fresh log in a temp dir, closed at cleanup.
func newTestPipeline(t testing.TB, doc string, mod func(*Options)) (*Pipeline, *logcore.FileLog) {
	t.Helper()
	l := openTestLog(t, t.TempDir())
	opts := Options{Config: mustConfig(t, doc), Log: l, Metrics: metrics.NewSet(), ExternalURL: "http://vigil.example:9201",
		BackoffInitial: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond, RequestTimeout: 10 * time.Second}
	if mod != nil {
		mod(&opts)
	}
	p, err := New(opts)
	if err != nil {
		t.Fatalf("new pipeline: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p.Close(ctx)
		l.Close()
	})
	return p, l
}

// alert makes a firing alert (resolved when endsAt is non-zero) from "k=v" pairs.
func alert(startsAt, endsAt time.Time, kv ...string) Alert {
	b := labels.NewScratchBuilder(len(kv))
	for _, p := range kv {
		k, v, _ := strings.Cut(p, "=")
		b.Add(k, v)
	}
	b.Sort()
	return Alert{Labels: b.Labels(), Annotations: labels.FromStrings("summary", "it broke"), StartsAt: startsAt, EndsAt: endsAt, GeneratorURL: "http://vigil.example:9201/graph?g0.expr=up"}
}

func send(t testing.TB, p *Pipeline, as ...Alert) {
	t.Helper()
	if err := p.Send(context.Background(), as); err != nil {
		t.Fatalf("send: %v", err)
	}
}

func waitCtx(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func writeKeyFile(t testing.TB) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "pd.key")
	if err := os.WriteFile(f, []byte(testRoutingKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// webhookSink records Alertmanager webhook messages.
type webhookSink struct {
	srv     *httptest.Server
	mu      sync.Mutex
	msgs    []webhook.Message
	times   []time.Time
	changed chan struct{}
}

func newWebhookSink(t testing.TB) *webhookSink {
	s := &webhookSink{changed: make(chan struct{})}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var m webhook.Message
		if err := json.Unmarshal(b, &m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.msgs = append(s.msgs, m)
		s.times = append(s.times, time.Now())
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *webhookSink) messages() []webhook.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]webhook.Message(nil), s.msgs...)
}

func (s *webhookSink) wait(ctx context.Context, n int) ([]webhook.Message, error) {
	for {
		s.mu.Lock()
		if len(s.msgs) >= n {
			m := append([]webhook.Message(nil), s.msgs...)
			s.mu.Unlock()
			return m, nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return s.messages(), ctx.Err()
		}
	}
}

func labelsFrom(kv ...string) labels.Labels { return labels.FromStrings(kv...) }
