package alerting

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestAlertsAPI: /api/v2/alerts and /api/v2/alerts/groups show the alerts with their
// receivers and silenced/inhibited status, in Alertmanager's JSON, and amtool reads
// them (and the silences).
func TestAlertsAPI(t *testing.T) {
	sink := newWebhookSink(t)
	doc := hookConfig(sink.srv.URL, "  group_wait: 1h\n  group_by: [alertname]", "") + `inhibit_rules:
  - source_matchers: [severity="critical"]
    target_matchers: [severity="warning"]
`
	p, _ := newTestPipeline(t, doc, nil)
	mux := http.NewServeMux()
	p.RegisterRoutes(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	now := time.Now()
	sid, err := p.Silences().Set(context.Background(), Silence{Matchers: []SilenceMatcher{{Name: "alertname", Value: "Quiet"}}, EndsAt: now.Add(time.Hour), CreatedBy: "t", Comment: "c"}, now)
	if err != nil {
		t.Fatal(err)
	}
	send(t, p,
		alert(now, time.Time{}, "alertname=Crit", "severity=critical"),
		alert(now, time.Time{}, "alertname=Warn", "severity=warning"),
		alert(now, time.Time{}, "alertname=Quiet"),
		alert(now, now, "alertname=Gone"))

	code, body := apiCall(t, srv, "GET", "/api/v2/alerts", "")
	var as []APIAlert
	if err := json.Unmarshal([]byte(body), &as); err != nil || code != 200 {
		t.Fatalf("GET /api/v2/alerts: %d %s %v", code, body, err)
	}
	state := map[string]APIAlertStatus{}
	for _, a := range as {
		state[string(a.Labels["alertname"])] = a.Status
		if len(a.Receivers) != 1 || a.Receivers[0].Name != "hook" {
			t.Errorf("receivers %v", a.Receivers)
		}
	}
	if len(as) != 3 {
		t.Errorf("%d alerts, want 3 (the resolved one is not listed)", len(as))
	}
	if s := state["Crit"]; s.State != "active" {
		t.Errorf("Crit %+v", s)
	}
	if s := state["Warn"]; s.State != "suppressed" || len(s.InhibitedBy) != 1 {
		t.Errorf("Warn %+v, want inhibited", s)
	}
	if s := state["Quiet"]; s.State != "suppressed" || len(s.SilencedBy) != 1 || s.SilencedBy[0] != sid {
		t.Errorf("Quiet %+v, want silenced by %s", s, sid)
	}
	code, body = apiCall(t, srv, "GET", "/api/v2/alerts/groups", "")
	var gs []APIAlertGroup
	if err := json.Unmarshal([]byte(body), &gs); err != nil || code != 200 || len(gs) != 3 {
		t.Fatalf("GET /api/v2/alerts/groups: %d %s %v", code, body, err)
	}
	if gs[0].Receiver.Name != "hook" || len(gs[0].Alerts) != 1 {
		t.Errorf("group %+v", gs[0])
	}

	amtool := "/usr/bin/amtool"
	if _, err := os.Stat(amtool); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("amtool is not installed (prometheus-alertmanager package)")
		}
		t.Skip("amtool is not installed")
	}
	for _, args := range [][]string{{"alert", "query"}, {"silence", "query"}} {
		out, err := exec.Command(amtool, append([]string{"--alertmanager.url=" + srv.URL}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("amtool %v: %v\n%s", args, err, out)
		}
		want := "Crit"
		if args[0] == "silence" {
			want = sid
		}
		if !strings.Contains(string(out), want) {
			t.Errorf("amtool %v output lacks %s:\n%s", args, want, out)
		}
	}
}
