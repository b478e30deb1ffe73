package rules

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/vigilhq/vigil/logcore"
)

func TestAlertStateRoundTrip(t *testing.T) {
	at := time.Unix(1_700_000_000, 123456789).UTC()
	f := func(a Alert) {
		t.Helper()
		b, err := encodeAlert(&a)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeAlert(b)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != a.State || !labels.Equal(got.Labels, a.Labels) || !labels.Equal(got.Annotations, a.Annotations) ||
			!got.ActiveAt.Equal(a.ActiveAt) || !got.FiredAt.Equal(a.FiredAt) || !got.ResolvedAt.Equal(a.ResolvedAt) ||
			!got.LastSentAt.Equal(a.LastSentAt) || !got.KeepFiringSince.Equal(a.KeepFiringSince) || got.Value != a.Value {
			t.Errorf("round trip of %+v gave %+v", a, got)
		}
	}
	f(Alert{State: StatePending, Labels: labels.FromStrings("alertname", "A"), ActiveAt: at, Value: 1.5})
	f(Alert{State: StateFiring, Labels: labels.FromStrings("alertname", "A", "job", "x"), Annotations: labels.FromStrings("summary", "s"),
		ActiveAt: at, FiredAt: at.Add(time.Minute), LastSentAt: at.Add(time.Minute), KeepFiringSince: at.Add(2 * time.Minute)})
	f(Alert{State: StateInactive, Labels: labels.FromStrings("alertname", "A"), ActiveAt: at, FiredAt: at, ResolvedAt: at.Add(time.Hour)})

	for _, bad := range []string{"", "{", `{"v":2,"state":"firing"}`, `{"v":1,"state":"nope"}`, `[]`} {
		if _, err := decodeAlert([]byte(bad)); err == nil {
			t.Errorf("decodeAlert(%q) succeeded", bad)
		}
	}
}

func FuzzDecodeAlert(f *testing.F) {
	a := Alert{State: StateFiring, Labels: labels.FromStrings("alertname", "A"), ActiveAt: time.Unix(1, 0)}
	b, _ := encodeAlert(&a)
	f.Add(b)
	f.Add([]byte(`{"v":1,"state":"pending","labels":{"a":"b"},"active_at":-1}`))
	f.Add([]byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := decodeAlert(data)
		if err != nil {
			return
		}
		b, err := encodeAlert(&a)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeAlert(b); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

// TestStateStoreTombstones checks that deleted alerts and the state of removed rules
// are gone after a reopen.
func TestStateStoreTombstones(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "log")
	l, err := logcore.Open(dir, logcore.Options{Fsync: logcore.FsyncNever})
	if err != nil {
		t.Fatal(err)
	}
	s, _, err := openStateStore(l)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a1 := Alert{State: StatePending, Labels: labels.FromStrings("alertname", "A", "i", "1"), ActiveAt: time.Unix(10, 0)}
	a2 := Alert{State: StatePending, Labels: labels.FromStrings("alertname", "A", "i", "2"), ActiveAt: time.Unix(20, 0)}
	b1 := Alert{State: StateFiring, Labels: labels.FromStrings("alertname", "B"), ActiveAt: time.Unix(30, 0)}
	pa, pb := stateKeyPrefix("f;g", "A{}"), stateKeyPrefix("f;g", "B{}")
	if err := s.write(ctx, pa, []Alert{a1, a2}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.write(ctx, pb, []Alert{b1}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.write(ctx, pa, nil, []labels.Labels{a1.Labels}); err != nil {
		t.Fatal(err)
	}
	if err := s.dropExcept(ctx, map[string]struct{}{pa: {}}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err = logcore.Open(dir, logcore.Options{Fsync: logcore.FsyncNever})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, bad, err := openStateStore(l)
	if err != nil || bad != 0 {
		t.Fatal(err, bad)
	}
	got := s.take(pa)
	if len(got) != 1 || !labels.Equal(got[0].Labels, a2.Labels) || !got[0].ActiveAt.Equal(a2.ActiveAt) {
		t.Errorf("rule A state after reopen: %+v", got)
	}
	if got := s.take(pb); len(got) != 0 {
		t.Errorf("state of the removed rule B survived: %+v", got)
	}
}
