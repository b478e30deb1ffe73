// Package pagerdutyfake is a local stand-in for the PagerDuty Events API v2
// (POST /v2/enqueue) for tests: it checks every request against the documented
// schema (field names, types, lengths, enums, body size), answers as PagerDuty does
// (202 with {status, message, dedup_key}; 400 with the list of errors), models
// PagerDuty's deduplication into incidents, and can be told to answer 400, 429 (with
// Retry-After), 500, or to hang. It listens on the loopback interface only.
package pagerdutyfake

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Documented limits of the Events API v2.
const (
	MaxBodyBytes     = 512 * 1024
	MaxSummaryChars  = 1024
	MaxDedupKeyChars = 255
	RoutingKeyChars  = 32
)

// Mode is how the fake answers.
type Mode int

const (
	// Accept validates and answers 202 (or 400 for an invalid event): the default.
	Accept Mode = iota
	// BadRequest answers 400 to every request.
	BadRequest
	// RateLimit answers 429 with a Retry-After header.
	RateLimit
	// ServerError answers 500.
	ServerError
	// Hang never answers: the request blocks until the client gives up or Release
	// (or Close) is called.
	Hang
	// AcceptHang accepts the event (as PagerDuty would) but never answers, as when
	// the response is lost: the client must retry, and dedup_key makes it harmless.
	AcceptHang
)

// Event is an accepted event, decoded.
type Event struct {
	RoutingKey string         `json:"routing_key"`
	Action     string         `json:"event_action"`
	DedupKey   string         `json:"dedup_key"`
	Payload    *Payload       `json:"payload"`
	Images     []any          `json:"images"`
	Links      []any          `json:"links"`
	Client     string         `json:"client"`
	ClientURL  string         `json:"client_url"`
	Raw        map[string]any `json:"-"`
	Received   time.Time      `json:"-"`
}

// Payload is an event's payload.
type Payload struct {
	Summary       string         `json:"summary"`
	Source        string         `json:"source"`
	Severity      string         `json:"severity"`
	Timestamp     string         `json:"timestamp"`
	Component     string         `json:"component"`
	Group         string         `json:"group"`
	Class         string         `json:"class"`
	CustomDetails map[string]any `json:"custom_details"`
}

// Request is any request received, with how it was answered.
type Request struct {
	Status int
	Body   []byte
	// Errors are the schema violations found (for a 400 in Accept mode).
	Errors   []string
	Received time.Time
}

// Incident is PagerDuty's view of one dedup_key: triggers while it is open are
// folded into it; a resolve closes it; a trigger after that opens a new incident.
type Incident struct {
	DedupKey string
	// Triggers counts the trigger events folded into this incident.
	Triggers int
	Status   string // "triggered", "acknowledged" or "resolved"
}

// Server is a running fake. Safe for concurrent use.
type Server struct {
	srv *httptest.Server

	mu         sync.Mutex
	mode       Mode
	next       []Mode
	retryAfter time.Duration
	events     []Event
	requests   []Request
	incidents  []*Incident
	open       map[string]*Incident
	changed    chan struct{}
	release    chan struct{}
}

// New starts a fake on 127.0.0.1 with a random port.
func New() *Server {
	s := &Server{open: map[string]*Incident{}, changed: make(chan struct{}), release: make(chan struct{}), retryAfter: time.Second}
	s.srv = httptest.NewServer(http.HandlerFunc(s.handle))
	return s
}

// URL is the base URL (what go-pagerduty's WithV2EventsAPIEndpoint takes).
func (s *Server) URL() string { return s.srv.URL }

// EnqueueURL is the full events URL (what an Alertmanager config's url holds).
func (s *Server) EnqueueURL() string { return s.srv.URL + "/v2/enqueue" }

// Close releases hanging requests and stops the server.
func (s *Server) Close() {
	s.Release()
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// SetMode sets how every later request is answered.
func (s *Server) SetMode(m Mode) {
	s.mu.Lock()
	s.mode = m
	s.mu.Unlock()
	if m != Hang {
		s.Release()
	}
}

// FailNext answers the next n requests with m, then goes back to the current mode.
func (s *Server) FailNext(n int, m Mode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; i < n; i++ {
		s.next = append(s.next, m)
	}
}

// SetRetryAfter sets the Retry-After of 429 answers (whole seconds, at least 0).
func (s *Server) SetRetryAfter(d time.Duration) {
	s.mu.Lock()
	s.retryAfter = d
	s.mu.Unlock()
}

// Release lets every hanging request go (they are answered 500).
func (s *Server) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.release:
	default:
		close(s.release)
	}
	s.release = make(chan struct{})
}

// Events returns the accepted events, in the order they were received.
func (s *Server) Events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Event(nil), s.events...)
}

// Requests returns every request received, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Incidents returns the incidents created, in order.
func (s *Server) Incidents() []Incident {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Incident, len(s.incidents))
	for i, in := range s.incidents {
		out[i] = *in
	}
	return out
}

// WaitEvents waits until at least n events were accepted, or ctx ends.
func (s *Server) WaitEvents(ctx context.Context, n int) ([]Event, error) {
	for {
		s.mu.Lock()
		if len(s.events) >= n {
			ev := append([]Event(nil), s.events...)
			s.mu.Unlock()
			return ev, nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return s.Events(), fmt.Errorf("waiting for %d PagerDuty events, have %d: %w", n, len(s.Events()), ctx.Err())
		}
	}
}

// WaitRequests waits until at least n requests were received, or ctx ends.
func (s *Server) WaitRequests(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		have := len(s.requests)
		ch := s.changed
		s.mu.Unlock()
		if have >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d requests, have %d: %w", n, have, ctx.Err())
		}
	}
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Server) record(r Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r)
	s.notifyLocked()
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	if r.Method != http.MethodPost || r.URL.Path != "/v2/enqueue" {
		s.record(Request{Status: http.StatusNotFound, Received: now})
		http.NotFound(w, r)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		s.record(Request{Status: http.StatusBadRequest, Received: now, Errors: []string{err.Error()}})
		http.Error(w, "cannot read body", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	mode := s.mode
	if len(s.next) > 0 {
		mode, s.next = s.next[0], s.next[1:]
	}
	retryAfter := s.retryAfter
	release := s.release
	s.mu.Unlock()

	switch mode {
	case Hang:
		s.record(Request{Status: 0, Body: body, Received: now})
		select {
		case <-r.Context().Done():
		case <-release:
			http.Error(w, "released", http.StatusInternalServerError)
		}
		return
	case ServerError:
		s.record(Request{Status: http.StatusInternalServerError, Body: body, Received: now})
		http.Error(w, "internal server error", http.StatusInternalServerError)
		return
	case RateLimit:
		s.record(Request{Status: http.StatusTooManyRequests, Body: body, Received: now})
		w.Header().Set("Retry-After", strconv.Itoa(int(retryAfter/time.Second)))
		writeJSON(w, http.StatusTooManyRequests, map[string]any{"status": "throttle event", "message": "Requests for this service are arriving too quickly.  Please retry later."})
		return
	case BadRequest:
		s.record(Request{Status: http.StatusBadRequest, Body: body, Received: now, Errors: []string{"forced"}})
		writeJSON(w, http.StatusBadRequest, map[string]any{"status": "invalid event", "message": "Event object is invalid", "errors": []string{"forced by the test"}})
		return
	}

	ev, errs := Validate(body, r.Header.Get("Content-Type"))
	if len(errs) > 0 {
		s.record(Request{Status: http.StatusBadRequest, Body: body, Received: now, Errors: errs})
		writeJSON(w, http.StatusBadRequest, map[string]any{"status": "invalid event", "message": "Event object is invalid", "errors": errs})
		return
	}
	ev.Received = now
	s.accept(ev, body, now)
	if mode == AcceptHang {
		select {
		case <-r.Context().Done():
		case <-release:
			http.Error(w, "released", http.StatusInternalServerError)
		}
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"status": "success", "message": "Event processed", "dedup_key": ev.DedupKey})
}

// accept records an accepted event and applies it to the incidents.
func (s *Server) accept(ev *Event, body []byte, now time.Time) {
	s.mu.Lock()
	if ev.DedupKey == "" {
		ev.DedupKey = randomKey()
	}
	s.events = append(s.events, *ev)
	s.requests = append(s.requests, Request{Status: http.StatusAccepted, Body: body, Received: now})
	in := s.open[ev.DedupKey]
	switch ev.Action {
	case "trigger":
		if in == nil {
			in = &Incident{DedupKey: ev.DedupKey, Status: "triggered"}
			s.incidents = append(s.incidents, in)
			s.open[ev.DedupKey] = in
		}
		in.Triggers++
	case "acknowledge":
		if in != nil {
			in.Status = "acknowledged"
		}
	case "resolve":
		if in != nil {
			in.Status = "resolved"
			delete(s.open, ev.DedupKey)
		}
	}
	s.notifyLocked()
	s.mu.Unlock()
}

// Validate checks an Events API v2 request body against the documented schema and
// returns the decoded event or the list of violations.
func Validate(body []byte, contentType string) (*Event, []string) {
	var errs []string
	bad := func(format string, a ...any) { errs = append(errs, fmt.Sprintf(format, a...)) }
	if len(body) > MaxBodyBytes {
		return nil, []string{fmt.Sprintf("body of %d bytes is larger than %d", len(body), MaxBodyBytes)}
	}
	if contentType != "application/json" && !bytes.HasPrefix([]byte(contentType), []byte("application/json;")) {
		bad("Content-Type %q is not application/json", contentType)
	}
	var raw map[string]any
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, append(errs, "body is not a JSON object: "+err.Error())
	}
	known := map[string]bool{"routing_key": true, "event_action": true, "dedup_key": true, "payload": true, "images": true, "links": true, "client": true, "client_url": true}
	for k := range raw {
		if !known[k] {
			bad("unknown field %q", k)
		}
	}
	str := func(m map[string]any, k, where string) (string, bool) {
		v, ok := m[k]
		if !ok || v == nil {
			return "", false
		}
		s, isStr := v.(string)
		if !isStr {
			bad("%s%s must be a string", where, k)
			return "", false
		}
		return s, true
	}
	ev := &Event{Raw: raw}
	ev.RoutingKey, _ = str(raw, "routing_key", "")
	if len(ev.RoutingKey) != RoutingKeyChars {
		bad("routing_key must be %d characters, got %d", RoutingKeyChars, len(ev.RoutingKey))
	}
	ev.Action, _ = str(raw, "event_action", "")
	switch ev.Action {
	case "trigger", "acknowledge", "resolve":
	default:
		bad("event_action %q is not one of trigger, acknowledge, resolve", ev.Action)
	}
	var hasDedup bool
	ev.DedupKey, hasDedup = str(raw, "dedup_key", "")
	if utf8.RuneCountInString(ev.DedupKey) > MaxDedupKeyChars {
		bad("dedup_key longer than %d characters", MaxDedupKeyChars)
	}
	if (ev.Action == "acknowledge" || ev.Action == "resolve") && (!hasDedup || ev.DedupKey == "") {
		bad("dedup_key is required for %s", ev.Action)
	}
	ev.Client, _ = str(raw, "client", "")
	ev.ClientURL, _ = str(raw, "client_url", "")
	if v, ok := raw["payload"]; ok && v != nil {
		pm, isObj := v.(map[string]any)
		if !isObj {
			bad("payload must be an object")
		} else {
			ev.Payload = validatePayload(pm, bad, str)
		}
	} else if ev.Action == "trigger" {
		bad("payload is required for trigger")
	}
	if ev.Action == "trigger" && ev.Payload != nil {
		if ev.Payload.Summary == "" {
			bad("payload.summary is required")
		}
		if ev.Payload.Source == "" {
			bad("payload.source is required")
		}
		if ev.Payload.Severity == "" {
			bad("payload.severity is required")
		}
	}
	for _, f := range []struct{ name, required string }{{"images", "src"}, {"links", "href"}} {
		v, ok := raw[f.name]
		if !ok || v == nil {
			continue
		}
		arr, isArr := v.([]any)
		if !isArr {
			bad("%s must be an array", f.name)
			continue
		}
		for i, it := range arr {
			m, isObj := it.(map[string]any)
			if !isObj {
				bad("%s[%d] must be an object", f.name, i)
				continue
			}
			if s, _ := str(m, f.required, fmt.Sprintf("%s[%d].", f.name, i)); s == "" {
				bad("%s[%d].%s is required", f.name, i, f.required)
			}
		}
		if f.name == "images" {
			ev.Images = arr
		} else {
			ev.Links = arr
		}
	}
	return ev, errs
}

func validatePayload(pm map[string]any, bad func(string, ...any), str func(map[string]any, string, string) (string, bool)) *Payload {
	known := map[string]bool{"summary": true, "source": true, "severity": true, "timestamp": true, "component": true, "group": true, "class": true, "custom_details": true}
	for k := range pm {
		if !known[k] {
			bad("unknown field payload.%s", k)
		}
	}
	p := &Payload{}
	p.Summary, _ = str(pm, "summary", "payload.")
	if n := utf8.RuneCountInString(p.Summary); n > MaxSummaryChars {
		bad("payload.summary is %d characters, more than %d", n, MaxSummaryChars)
	}
	p.Source, _ = str(pm, "source", "payload.")
	p.Severity, _ = str(pm, "severity", "payload.")
	switch p.Severity {
	case "", "critical", "error", "warning", "info":
	default:
		bad("payload.severity %q is not one of critical, error, warning, info", p.Severity)
	}
	p.Timestamp, _ = str(pm, "timestamp", "payload.")
	if p.Timestamp != "" {
		if _, err := time.Parse(time.RFC3339Nano, p.Timestamp); err != nil {
			bad("payload.timestamp %q is not ISO 8601: %v", p.Timestamp, err)
		}
	}
	p.Component, _ = str(pm, "component", "payload.")
	p.Group, _ = str(pm, "group", "payload.")
	p.Class, _ = str(pm, "class", "payload.")
	if v, ok := pm["custom_details"]; ok && v != nil {
		cd, isObj := v.(map[string]any)
		if !isObj {
			bad("payload.custom_details must be an object")
		}
		p.CustomDetails = cd
	}
	return p
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func randomKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
