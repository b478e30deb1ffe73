package pagerdutyfake

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/PagerDuty/go-pagerduty"
)

const key = "0123456789abcdef0123456789abcdef"

func TestValidate(t *testing.T) {
	f := func(body string, wantErr string) {
		t.Helper()
		_, errs := Validate([]byte(body), "application/json")
		got := strings.Join(errs, "; ")
		if wantErr == "" && got != "" {
			t.Errorf("%s: unexpected errors %s", body, got)
		}
		if wantErr != "" && !strings.Contains(got, wantErr) {
			t.Errorf("%s: errors %q, want one containing %q", body, got, wantErr)
		}
	}
	ok := `"routing_key":"` + key + `"`
	f(`{`+ok+`,"event_action":"trigger","payload":{"summary":"s","source":"h","severity":"critical"}}`, "")
	f(`{`+ok+`,"event_action":"trigger","dedup_key":"k","payload":{"summary":"s","source":"h","severity":"info","timestamp":"2024-01-02T03:04:05.123Z","custom_details":{"a":1}},"links":[{"href":"http://x","text":"t"}],"images":[{"src":"http://i"}],"client":"c","client_url":"http://c"}`, "")
	f(`{`+ok+`,"event_action":"resolve","dedup_key":"k"}`, "")
	f(`{"routing_key":"short","event_action":"resolve","dedup_key":"k"}`, "routing_key must be 32 characters")
	f(`{`+ok+`,"event_action":"fire"}`, "event_action")
	f(`{`+ok+`,"event_action":"resolve"}`, "dedup_key is required")
	f(`{`+ok+`,"event_action":"resolve","dedup_key":"`+strings.Repeat("k", 256)+`"}`, "dedup_key longer than 255")
	f(`{`+ok+`,"event_action":"trigger"}`, "payload is required")
	f(`{`+ok+`,"event_action":"trigger","payload":{"source":"h","severity":"error"}}`, "payload.summary is required")
	f(`{`+ok+`,"event_action":"trigger","payload":{"summary":"`+strings.Repeat("é", 1025)+`","source":"h","severity":"error"}}`, "more than 1024")
	f(`{`+ok+`,"event_action":"trigger","payload":{"summary":"s","severity":"error"}}`, "payload.source is required")
	f(`{`+ok+`,"event_action":"trigger","payload":{"summary":"s","source":"h","severity":"high"}}`, "payload.severity")
	f(`{`+ok+`,"event_action":"trigger","payload":{"summary":"s","source":"h","severity":"info","timestamp":"yesterday"}}`, "ISO 8601")
	f(`{`+ok+`,"event_action":"trigger","payload":{"summary":"s","source":"h","severity":"info","custom_details":"x"}}`, "custom_details must be an object")
	f(`{`+ok+`,"event_action":"trigger","payload":{"summary":"s","source":"h","severity":"info","details":{}}}`, "unknown field payload.details")
	f(`{`+ok+`,"event_action":"trigger","payload":{"summary":"s","source":"h","severity":"info"},"links":{"href":"x"}}`, "links must be an array")
	f(`{`+ok+`,"event_action":"trigger","payload":{"summary":"s","source":"h","severity":"info"},"images":[{"alt":"x"}]}`, "images[0].src is required")
	f(`{`+ok+`,"event_action":"trigger","payload":{"summary":1,"source":"h","severity":"info"}}`, "payload.summary must be a string")
	f(`{`+ok+`,"event_action":"trigger","service_key":"x","payload":{"summary":"s","source":"h","severity":"info"}}`, `unknown field "service_key"`)
	f(`[1,2]`, "not a JSON object")
	f(`{"routing_key":"`+key+`","event_action":"resolve","dedup_key":"k","pad":"`+strings.Repeat("x", MaxBodyBytes)+`"}`, "larger than")
	if _, errs := Validate([]byte(`{}`), "text/plain"); !strings.Contains(strings.Join(errs, ";"), "Content-Type") {
		t.Error("wrong Content-Type accepted")
	}
}

// TestServerModes drives the fake through go-pagerduty, the client Vigil uses.
func TestServerModes(t *testing.T) {
	s := New()
	defer s.Close()
	c := pagerduty.NewClient("", pagerduty.WithV2EventsAPIEndpoint(s.URL()))
	ctx := context.Background()
	trigger := &pagerduty.V2Event{RoutingKey: key, Action: "trigger", DedupKey: "d1", Payload: &pagerduty.V2Payload{Summary: "s", Source: "h", Severity: "error"}}
	resp, err := c.ManageEventWithContext(ctx, trigger)
	if err != nil || resp.Status != "success" || resp.DedupKey != "d1" || resp.Message == "" {
		t.Fatalf("trigger: %+v %v", resp, err)
	}
	if _, err := c.ManageEventWithContext(ctx, trigger); err != nil {
		t.Fatal(err)
	}
	if inc := s.Incidents(); len(inc) != 1 || inc[0].Triggers != 2 {
		t.Errorf("two triggers of one dedup_key: incidents %+v, want one with 2 triggers", inc)
	}
	for _, tc := range []struct {
		mode   Mode
		status int
	}{{BadRequest, 400}, {RateLimit, 429}, {ServerError, 500}} {
		s.FailNext(1, tc.mode)
		_, err := c.ManageEventWithContext(ctx, trigger)
		var apiErr pagerduty.APIError
		if err == nil || !asAPIError(err, &apiErr) || apiErr.StatusCode != tc.status {
			t.Errorf("mode %d: err %v, want status %d", tc.mode, err, tc.status)
		}
	}
	rs := s.Requests()
	if rs[3].Status != 429 {
		t.Errorf("request 4 answered %d", rs[3].Status)
	}
	// An invalid event is answered 400 with the errors.
	_, err = c.ManageEventWithContext(ctx, &pagerduty.V2Event{RoutingKey: "short", Action: "trigger"})
	if err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("invalid event: %v", err)
	}
	// Hang: the client's deadline ends the request; nothing is accepted.
	s.SetMode(Hang)
	hctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := c.ManageEventWithContext(hctx, trigger); err == nil {
		t.Error("hanging request succeeded")
	}
	s.SetMode(Accept)
	resolve := &pagerduty.V2Event{RoutingKey: key, Action: "resolve", DedupKey: "d1"}
	if _, err := c.ManageEventWithContext(ctx, resolve); err != nil {
		t.Fatal(err)
	}
	if inc := s.Incidents(); inc[0].Status != "resolved" {
		t.Errorf("incident %+v, want resolved", inc[0])
	}
	if n := len(s.Events()); n != 3 {
		t.Errorf("%d accepted events, want 3", n)
	}
	r, err := http.Get(s.URL() + "/v2/enqueue")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 404 {
		t.Errorf("GET answered %d", r.StatusCode)
	}
}

func asAPIError(err error, target *pagerduty.APIError) bool {
	for err != nil {
		if e, ok := err.(pagerduty.APIError); ok {
			*target = e
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

func FuzzValidate(f *testing.F) {
	f.Add([]byte(`{"routing_key":"` + key + `","event_action":"trigger","payload":{"summary":"s","source":"h","severity":"critical"}}`))
	f.Add([]byte(`{"routing_key":"` + key + `","event_action":"resolve","dedup_key":"k","links":[{"href":"x"}],"images":[1]}`))
	f.Add([]byte(`{"payload":{"custom_details":[],"timestamp":5}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, errs := Validate(b, "application/json")
		if len(errs) == 0 && ev == nil {
			t.Fatal("no errors and no event")
		}
		if len(errs) == 0 && ev.Action == "trigger" && (ev.Payload == nil || ev.Payload.Summary == "") {
			t.Fatal("trigger without summary accepted")
		}
	})
}
