package rules

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/vigilhq/vigil/logcore"
)

// The alert_state topic (wire format, part of Vigil's on-disk contract).
//
// One compacted partition. Each record is the latest state of one alert instance:
//
//	Key   = <group file> ";" <group name> "\x00" <rule identity> "\x00" <alert labels>
//	Value = JSON of persistedAlert (below), or empty: a tombstone (the alert is gone)
//
// The rule identity is the rule's name and labels (as Prometheus matches rules across
// reloads), with "#n" appended to the n-th (n >= 1) repetition of the same identity in
// a group. On start the topic is read from its start offset to its end and the last
// record of each key wins.
const (
	// StateTopic is the name of the compacted topic holding alert state.
	StateTopic = "alert_state"
	// stateVersion is the "v" field of every value; a reader skips other versions.
	stateVersion = 1
)

// persistedAlert is the JSON value of an alert_state record. Times are Unix
// nanoseconds (slots are not whole milliseconds), 0 meaning none.
type persistedAlert struct {
	V               int               `json:"v"`
	State           string            `json:"state"`
	Labels          map[string]string `json:"labels"`
	Annotations     map[string]string `json:"annotations,omitempty"`
	Value           float64           `json:"value"`
	ActiveAt        int64             `json:"active_at"`
	FiredAt         int64             `json:"fired_at,omitempty"`
	ResolvedAt      int64             `json:"resolved_at,omitempty"`
	LastSentAt      int64             `json:"last_sent_at,omitempty"`
	ValidUntil      int64             `json:"valid_until,omitempty"`
	KeepFiringSince int64             `json:"keep_firing_since,omitempty"`
	// ArrivalResolved: resolved by an evaluation on arrival since the last slot
	// (Alert.arrivalResolved); absent in records of older versions, meaning false.
	ArrivalResolved bool `json:"arrival_resolved,omitempty"`
}

func toNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

func encodeAlert(a *Alert) ([]byte, error) {
	p := persistedAlert{
		V: stateVersion, State: a.State.String(), Labels: a.Labels.Map(), Value: a.Value,
		ActiveAt: toNanos(a.ActiveAt), FiredAt: toNanos(a.FiredAt), ResolvedAt: toNanos(a.ResolvedAt),
		LastSentAt: toNanos(a.LastSentAt), ValidUntil: toNanos(a.ValidUntil), KeepFiringSince: toNanos(a.KeepFiringSince),
		ArrivalResolved: a.arrivalResolved,
	}
	if a.Annotations.Len() > 0 {
		p.Annotations = a.Annotations.Map()
	}
	return json.Marshal(p)
}

func decodeAlert(b []byte) (Alert, error) {
	var p persistedAlert
	if err := json.Unmarshal(b, &p); err != nil {
		return Alert{}, fmt.Errorf("decode alert state: %w", err)
	}
	if p.V != stateVersion {
		return Alert{}, fmt.Errorf("alert state version %d, want %d", p.V, stateVersion)
	}
	var st AlertState
	switch p.State {
	case "pending":
		st = StatePending
	case "firing":
		st = StateFiring
	case "inactive":
		st = StateInactive
	default:
		return Alert{}, fmt.Errorf("alert state %q unknown", p.State)
	}
	return Alert{
		State: st, Labels: labels.FromMap(p.Labels), Annotations: labels.FromMap(p.Annotations), Value: p.Value,
		ActiveAt: fromNanos(p.ActiveAt), FiredAt: fromNanos(p.FiredAt), ResolvedAt: fromNanos(p.ResolvedAt),
		LastSentAt: fromNanos(p.LastSentAt), ValidUntil: fromNanos(p.ValidUntil), KeepFiringSince: fromNanos(p.KeepFiringSince),
		arrivalResolved: p.ArrivalResolved && st == StateInactive,
	}, nil
}

// stateKeyPrefix is the key prefix of a rule's alerts: group key and rule identity.
func stateKeyPrefix(groupKey, ruleID string) string {
	return groupKey + "\x00" + ruleID + "\x00"
}

// ruleIdentities returns each rule's identity within the group.
func ruleIdentities(g *Group) []string {
	ids := make([]string, len(g.rules))
	seen := map[string]int{}
	for i, r := range g.rules {
		id := r.Name() + r.Labels().String()
		if n := seen[id]; n > 0 {
			ids[i] = fmt.Sprintf("%s#%d", id, n)
		} else {
			ids[i] = id
		}
		seen[id]++
	}
	return ids
}

// stateStore is the alert state kept in the alert_state topic, and its in-memory copy
// as read at start. It is safe for concurrent use.
type stateStore struct {
	topic logcore.Topic

	mu sync.Mutex
	// restored maps a rule's key prefix to its alerts, as read at start; entries are
	// taken by the first group that restores them.
	restored map[string][]Alert
	// keys are the keys with a live (non-tombstone) record.
	keys map[string]struct{}
}

// openStateStore opens (creating if needed) the alert_state topic of l and reads it.
// Undecodable records are skipped and counted in the returned number.
func openStateStore(l logcore.Log) (*stateStore, int, error) {
	t, err := l.Topic(StateTopic, logcore.TopicConfig{Partitions: 1, Compacted: true})
	if err != nil {
		return nil, 0, fmt.Errorf("open topic %s: %w", StateTopic, err)
	}
	s := &stateStore{topic: t, restored: map[string][]Alert{}, keys: map[string]struct{}{}}
	latest := map[string][]byte{}
	st := t.Stats(0)
	var dst []logcore.Record
	for off := st.StartOffset; off < st.EndOffset; {
		recs, err := t.Read(0, off, 1<<20, dst[:0])
		if err != nil {
			return nil, 0, fmt.Errorf("read %s at offset %d: %w", StateTopic, off, err)
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			if len(r.Value) == 0 {
				delete(latest, string(r.Key))
			} else {
				latest[string(r.Key)] = append([]byte(nil), r.Value...)
			}
		}
		off = recs[len(recs)-1].Offset + 1
		dst = recs
	}
	bad := 0
	for k, v := range latest {
		a, err := decodeAlert(v)
		i := strings.LastIndexByte(k, 0)
		if err != nil || i < 0 {
			bad++
			continue
		}
		prefix := k[:i+1]
		s.restored[prefix] = append(s.restored[prefix], a)
		s.keys[k] = struct{}{}
	}
	return s, bad, nil
}

// take returns and forgets the restored alerts of a rule.
func (s *stateStore) take(prefix string) []Alert {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.restored[prefix]
	delete(s.restored, prefix)
	return a
}

// write appends the changed alerts and tombstones for the deleted ones of one rule,
// as one batch, durable under the log's fsync policy when it returns.
func (s *stateStore) write(ctx context.Context, prefix string, changed []Alert, deleted []labels.Labels) error {
	recs := make([]logcore.Record, 0, len(changed)+len(deleted))
	now := time.Now().UnixMilli()
	var live, dead []string
	for i := range changed {
		v, err := encodeAlert(&changed[i])
		if err != nil {
			return err
		}
		k := prefix + changed[i].Labels.String()
		recs = append(recs, logcore.Record{Timestamp: now, Key: []byte(k), Value: v})
		live = append(live, k)
	}
	for _, l := range deleted {
		k := prefix + l.String()
		recs = append(recs, logcore.Record{Timestamp: now, Key: []byte(k)})
		dead = append(dead, k)
	}
	if len(recs) == 0 {
		return nil
	}
	if _, err := s.topic.Append(ctx, 0, recs); err != nil {
		return fmt.Errorf("append alert state: %w", err)
	}
	s.mu.Lock()
	for _, k := range dead {
		delete(s.keys, k)
	}
	for _, k := range live {
		s.keys[k] = struct{}{}
	}
	s.mu.Unlock()
	return nil
}

// dropExcept writes tombstones for every live key whose rule prefix is not in keep:
// the state of rules that no longer exist.
func (s *stateStore) dropExcept(ctx context.Context, keep map[string]struct{}) error {
	s.mu.Lock()
	var recs []logcore.Record
	now := time.Now().UnixMilli()
	for k := range s.keys {
		i := strings.LastIndexByte(k, 0)
		if _, ok := keep[k[:i+1]]; ok {
			continue
		}
		recs = append(recs, logcore.Record{Timestamp: now, Key: []byte(k)})
	}
	s.mu.Unlock()
	if len(recs) == 0 {
		return nil
	}
	if _, err := s.topic.Append(ctx, 0, recs); err != nil {
		return fmt.Errorf("append alert state tombstones: %w", err)
	}
	s.mu.Lock()
	for _, r := range recs {
		delete(s.keys, string(r.Key))
		i := strings.LastIndexByte(string(r.Key), 0)
		delete(s.restored, string(r.Key[:i+1]))
	}
	s.mu.Unlock()
	return nil
}
