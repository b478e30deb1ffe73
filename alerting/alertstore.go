package alerting

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"time"

	amalert "github.com/prometheus/alertmanager/alert"
	"github.com/prometheus/common/model"

	"github.com/vigilhq/vigil/logcore"
)

// AlertsTopic is the compacted topic holding the alerts the pipeline knows: key =
// the alert's fingerprint (16 hex digits), value = the alert as JSON (Alertmanager's
// fields plus UpdatedAt and Timeout); a tombstone once it is forgotten. It lets a
// restarted pipeline rebuild its groups and inhibitions before the rules re-send.
const AlertsTopic = "alerts"

// alertStore persists the pipeline's alerts.
type alertStore struct {
	topic logcore.Topic
}

func openAlertStore(l logcore.Log) (*alertStore, map[model.Fingerprint]*amalert.Alert, []error, error) {
	t, err := l.Topic(AlertsTopic, logcore.TopicConfig{Partitions: 1, Compacted: true, SegmentBytes: 8 << 20, TombstoneRetention: 24 * time.Hour, RetentionBytes: 1 << 50})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("alerting: open topic %s: %w", AlertsTopic, err)
	}
	alerts := map[model.Fingerprint]*amalert.Alert{}
	skipped, err := replay(t, func(key, value []byte) error {
		fp, err := model.FingerprintFromString(string(key))
		if err != nil {
			return fmt.Errorf("alert key %q: %w", key, err)
		}
		if len(value) == 0 {
			delete(alerts, fp)
			return nil
		}
		var a amalert.Alert
		if err := json.Unmarshal(value, &a); err != nil {
			return fmt.Errorf("alert %s: %w", fp, err)
		}
		alerts[fp] = &a
		return nil
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("alerting: replay %s: %w", AlertsTopic, err)
	}
	return &alertStore{topic: t}, alerts, skipped, nil
}

// changed reports whether new differs from old in what a restart must know: its
// existence, firing or resolved, start, annotations, generator URL.
func changed(old, new *amalert.Alert) bool {
	if old == nil {
		return true
	}
	oldResolved := !old.EndsAt.After(old.UpdatedAt)
	newResolved := !new.EndsAt.After(new.UpdatedAt)
	return oldResolved != newResolved || !old.StartsAt.Equal(new.StartsAt) ||
		old.GeneratorURL != new.GeneratorURL || !reflect.DeepEqual(old.Annotations, new.Annotations) ||
		(newResolved && !old.EndsAt.Equal(new.EndsAt))
}

// write persists the alerts (nil value: forget the fingerprint).
func (s *alertStore) write(ctx context.Context, alerts map[model.Fingerprint]*amalert.Alert) error {
	if len(alerts) == 0 {
		return nil
	}
	recs := make([]logcore.Record, 0, len(alerts))
	now := time.Now().UnixMilli()
	for fp, a := range alerts {
		r := logcore.Record{Timestamp: now, Key: []byte(fp.String())}
		if a != nil {
			b, err := json.Marshal(a)
			if err != nil {
				return fmt.Errorf("encode alert %s: %w", fp, err)
			}
			r.Value = b
		}
		recs = append(recs, r)
	}
	if _, err := s.topic.Append(ctx, 0, recs); err != nil {
		return fmt.Errorf("alerting: store alerts: %w", err)
	}
	return nil
}

// restored prepares an alert read back at start: one that was firing when last
// received stays firing for at least a resolve_timeout, so that the rules (which
// re-send firing alerts) can confirm it before it times out.
func restored(a *amalert.Alert, now time.Time, resolveTimeout time.Duration) *amalert.Alert {
	if a.EndsAt.After(a.UpdatedAt) {
		if min := now.Add(resolveTimeout); a.EndsAt.Before(min) {
			a.EndsAt = min
			a.Timeout = true
		}
	}
	return a
}
