package alerting

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	amlabels "github.com/prometheus/alertmanager/pkg/labels"
	"github.com/prometheus/common/model"

	"github.com/vigilhq/vigil/logcore"
)

// SilencesTopic is the compacted topic holding silences: key = silence ID, value =
// the Silence as JSON (see doc.go).
const SilencesTopic = "silences"

// Silence states, as Alertmanager names them.
const (
	SilenceStateActive  = "active"
	SilenceStatePending = "pending"
	SilenceStateExpired = "expired"
)

// Silence mutes the alerts its matchers all match between StartsAt and EndsAt. Its
// JSON form is Alertmanager's (API v2 GettableSilence / PostableSilence).
type Silence struct {
	ID        string           `json:"id"`
	Matchers  []SilenceMatcher `json:"matchers"`
	StartsAt  time.Time        `json:"startsAt"`
	EndsAt    time.Time        `json:"endsAt"`
	UpdatedAt time.Time        `json:"updatedAt"`
	CreatedBy string           `json:"createdBy"`
	Comment   string           `json:"comment"`
	Status    SilenceStatus    `json:"status"`
}

// SilenceMatcher is one label matcher of a silence. IsEqual defaults to true when
// absent (Alertmanager's API default); false negates the matcher.
type SilenceMatcher struct {
	Name    string `json:"name"`
	Value   string `json:"value"`
	IsRegex bool   `json:"isRegex"`
	IsEqual *bool  `json:"isEqual,omitempty"`
}

// SilenceStatus is the silence's state at the time it was read.
type SilenceStatus struct {
	State string `json:"state"`
}

// ErrSilenceNotFound is returned for an unknown silence ID.
var ErrSilenceNotFound = errors.New("silence not found")

// ErrSilenceExpired is returned when expiring a silence that already expired.
var ErrSilenceExpired = errors.New("silence already expired")

// ValidationError is an invalid silence (HTTP 400).
type ValidationError struct{ msg string }

// Error is the message for the API client.
func (e *ValidationError) Error() string { return e.msg }

func invalid(format string, a ...any) error { return &ValidationError{fmt.Sprintf(format, a...)} }

// Silences is the durable set of silences: every change is written to the silences
// topic before it takes effect, and New rebuilds the set from the topic. Safe for
// concurrent use.
type Silences struct {
	topic     logcore.Topic
	retention time.Duration

	mu  sync.RWMutex
	all map[string]*silenceEntry
}

type silenceEntry struct {
	s        Silence
	matchers amlabels.Matchers
}

func openSilences(l logcore.Log, retention time.Duration) (*Silences, []error, error) {
	t, err := l.Topic(SilencesTopic, logcore.TopicConfig{Partitions: 1, Compacted: true, SegmentBytes: 4 << 20, TombstoneRetention: 24 * time.Hour, RetentionBytes: 1 << 50})
	if err != nil {
		return nil, nil, fmt.Errorf("alerting: open topic %s: %w", SilencesTopic, err)
	}
	s := &Silences{topic: t, retention: retention, all: map[string]*silenceEntry{}}
	skipped, err := replay(t, func(key, value []byte) error {
		if len(value) == 0 {
			delete(s.all, string(key))
			return nil
		}
		var sil Silence
		if err := json.Unmarshal(value, &sil); err != nil {
			return fmt.Errorf("silence %q: %w", key, err)
		}
		ms, err := compileMatchers(sil.Matchers)
		if err != nil {
			return fmt.Errorf("silence %q: %w", key, err)
		}
		s.all[string(key)] = &silenceEntry{s: sil, matchers: ms}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("alerting: replay %s: %w", SilencesTopic, err)
	}
	return s, skipped, nil
}

func compileMatchers(in []SilenceMatcher) (amlabels.Matchers, error) {
	if len(in) == 0 {
		return nil, invalid("at least one matcher is required")
	}
	ms := make(amlabels.Matchers, 0, len(in))
	allEmpty := true
	for _, m := range in {
		if m.Name == "" {
			return nil, invalid("matcher with an empty label name")
		}
		if !model.UTF8Validation.IsValidLabelName(m.Name) {
			return nil, invalid("invalid label name %q", m.Name)
		}
		eq := m.IsEqual == nil || *m.IsEqual
		t := amlabels.MatchEqual
		switch {
		case m.IsRegex && eq:
			t = amlabels.MatchRegexp
		case m.IsRegex:
			t = amlabels.MatchNotRegexp
		case !eq:
			t = amlabels.MatchNotEqual
		}
		mm, err := amlabels.NewMatcher(t, m.Name, m.Value)
		if err != nil {
			return nil, invalid("matcher %s: %v", m.Name, err)
		}
		if !mm.Matches("") {
			allEmpty = false
		}
		ms = append(ms, mm)
	}
	if allEmpty {
		return nil, invalid("at least one matcher must not match the empty string")
	}
	return ms, nil
}

func state(s *Silence, now time.Time) string {
	switch {
	case !now.Before(s.EndsAt):
		return SilenceStateExpired
	case now.Before(s.StartsAt):
		return SilenceStatePending
	}
	return SilenceStateActive
}

// Mutes reports whether an active silence matches lset at now.
func (s *Silences) Mutes(lset model.LabelSet, now time.Time) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, e := range s.all {
		if state(&e.s, now) == SilenceStateActive && e.matchers.Matches(lset) {
			return true
		}
	}
	return false
}

// MutedBy returns the IDs of the active silences matching lset at now, sorted.
func (s *Silences) MutedBy(lset model.LabelSet, now time.Time) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var ids []string
	for id, e := range s.all {
		if state(&e.s, now) == SilenceStateActive && e.matchers.Matches(lset) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// List returns every silence (active, pending and expired ones still retained)
// whose matchers are a superset of filter (each filter matcher equal to one of the
// silence's), active first, then pending, then expired, as Alertmanager orders them.
func (s *Silences) List(now time.Time, filter amlabels.Matchers) []Silence {
	s.mu.RLock()
	out := make([]Silence, 0, len(s.all))
	for _, e := range s.all {
		if !matchersContain(e.matchers, filter) {
			continue
		}
		out = append(out, e.view(now))
	}
	s.mu.RUnlock()
	rank := map[string]int{SilenceStateActive: 0, SilenceStatePending: 1, SilenceStateExpired: 2}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if rank[a.Status.State] != rank[b.Status.State] {
			return rank[a.Status.State] < rank[b.Status.State]
		}
		switch a.Status.State {
		case SilenceStateActive:
			return a.EndsAt.Before(b.EndsAt)
		case SilenceStatePending:
			return a.StartsAt.Before(b.StartsAt)
		}
		return a.EndsAt.After(b.EndsAt)
	})
	return out
}

func matchersContain(have, want amlabels.Matchers) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			if h.Name == w.Name && h.Type == w.Type && h.Value == w.Value {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Get returns the silence with the given ID.
func (s *Silences) Get(id string, now time.Time) (Silence, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.all[id]
	if !ok {
		return Silence{}, ErrSilenceNotFound
	}
	return e.view(now), nil
}

// view is the silence as the API shows it: its state at now, isEqual always present.
func (e *silenceEntry) view(now time.Time) Silence {
	c := e.s
	c.Status.State = state(&c, now)
	c.Matchers = make([]SilenceMatcher, len(e.s.Matchers))
	for i, m := range e.s.Matchers {
		eq := m.IsEqual == nil || *m.IsEqual
		m.IsEqual = &eq
		c.Matchers[i] = m
	}
	return c
}

// Set creates a silence, or updates the one with in.ID, as Alertmanager does: an
// active or pending silence whose matchers (and, once active, start) are unchanged
// is updated in place; otherwise the old one is expired and a new one with a new ID
// is created. A start in the past becomes now. It returns the silence's ID once the
// change is durable.
func (s *Silences) Set(ctx context.Context, in Silence, now time.Time) (string, error) {
	if _, err := compileMatchers(in.Matchers); err != nil {
		return "", err
	}
	if in.CreatedBy == "" {
		return "", invalid("createdBy is required")
	}
	if in.Comment == "" {
		return "", invalid("comment is required")
	}
	if in.StartsAt.IsZero() {
		in.StartsAt = now
	}
	if in.EndsAt.IsZero() {
		return "", invalid("endsAt is required")
	}
	if in.EndsAt.Before(in.StartsAt) {
		return "", invalid("endsAt %s is before startsAt %s", in.EndsAt.Format(time.RFC3339), in.StartsAt.Format(time.RFC3339))
	}
	if !in.EndsAt.After(now) {
		return "", invalid("endsAt %s is in the past", in.EndsAt.Format(time.RFC3339))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var writes []Silence
	if in.ID != "" {
		old, ok := s.all[in.ID]
		if !ok {
			return "", ErrSilenceNotFound
		}
		st := state(&old.s, now)
		sameMatchers := matchersEqual(old.s.Matchers, in.Matchers)
		switch {
		case st == SilenceStatePending && sameMatchers:
			if in.StartsAt.Before(now) {
				in.StartsAt = now
			}
			in.UpdatedAt = now
			writes = append(writes, in)
		case st == SilenceStateActive && sameMatchers && in.StartsAt.Equal(old.s.StartsAt):
			in.UpdatedAt = now
			writes = append(writes, in)
		default:
			if st != SilenceStateExpired {
				exp := old.s
				expireAt(&exp, now)
				writes = append(writes, exp)
			}
			in.ID = ""
		}
	}
	if in.ID == "" {
		in.ID = newSilenceID()
		if in.StartsAt.Before(now) {
			in.StartsAt = now
		}
		in.UpdatedAt = now
		writes = append(writes, in)
	}
	if err := s.writeLocked(ctx, writes, now); err != nil {
		return "", err
	}
	return in.ID, nil
}

func matchersEqual(a, b []SilenceMatcher) bool {
	if len(a) != len(b) {
		return false
	}
	key := func(m SilenceMatcher) string {
		eq := m.IsEqual == nil || *m.IsEqual
		return fmt.Sprintf("%s\x00%s\x00%t\x00%t", m.Name, m.Value, m.IsRegex, eq)
	}
	seen := map[string]int{}
	for _, m := range a {
		seen[key(m)]++
	}
	for _, m := range b {
		seen[key(m)]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}

func expireAt(s *Silence, now time.Time) {
	if now.Before(s.StartsAt) {
		s.StartsAt = now
	}
	s.EndsAt = now
	s.UpdatedAt = now
}

// Expire ends the silence now (a pending one never starts).
func (s *Silences) Expire(ctx context.Context, id string, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.all[id]
	if !ok {
		return ErrSilenceNotFound
	}
	if state(&e.s, now) == SilenceStateExpired {
		return ErrSilenceExpired
	}
	c := e.s
	expireAt(&c, now)
	return s.writeLocked(ctx, []Silence{c}, now)
}

// writeLocked persists the silences then applies them. s.mu must be held.
func (s *Silences) writeLocked(ctx context.Context, list []Silence, now time.Time) error {
	recs := make([]logcore.Record, 0, len(list))
	for i := range list {
		list[i].Status = SilenceStatus{}
		b, err := json.Marshal(&list[i])
		if err != nil {
			return fmt.Errorf("encode silence: %w", err)
		}
		recs = append(recs, logcore.Record{Timestamp: now.UnixMilli(), Key: []byte(list[i].ID), Value: b})
	}
	if _, err := s.topic.Append(ctx, 0, recs); err != nil {
		return fmt.Errorf("store silence: %w", err)
	}
	for _, sil := range list {
		ms, err := compileMatchers(sil.Matchers)
		if err != nil {
			return err
		}
		s.all[sil.ID] = &silenceEntry{s: sil, matchers: ms}
	}
	return nil
}

// gc deletes silences expired for longer than the retention.
func (s *Silences) gc(ctx context.Context, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var recs []logcore.Record
	var ids []string
	for id, e := range s.all {
		if e.s.EndsAt.Before(now.Add(-s.retention)) {
			recs = append(recs, logcore.Record{Timestamp: now.UnixMilli(), Key: []byte(id)})
			ids = append(ids, id)
		}
	}
	if len(recs) == 0 {
		return nil
	}
	if _, err := s.topic.Append(ctx, 0, recs); err != nil {
		return fmt.Errorf("delete expired silences: %w", err)
	}
	for _, id := range ids {
		delete(s.all, id)
	}
	return nil
}

// newSilenceID returns a random UUID (version 4), Alertmanager's ID form.
func newSilenceID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
