package alerting

import (
	"strings"
	"testing"

	vconfig "github.com/vigilhq/vigil/config"
)

func TestParseConfigErrors(t *testing.T) {
	f := func(doc, wantErr string) {
		t.Helper()
		_, err := ParseConfig([]byte(doc))
		if wantErr == "" {
			if err != nil {
				t.Errorf("unexpected error %v for\n%s", err, doc)
			}
			return
		}
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("error %v, want one containing %q for\n%s", err, wantErr, doc)
		}
	}
	pd := func(fields string) string {
		return "route: {receiver: r}\nreceivers:\n  - name: r\n    pagerduty_configs:\n      - {" + fields + "}\n"
	}
	f("", "")
	f(pd("routing_key: "+testRoutingKey), "")
	f(pd("routing_key: "+testRoutingKey+", url: 'http://127.0.0.1:1/v2/enqueue', severity: warning, class: c, component: x, group: g, client: c, client_url: 'http://c', details: {a: b}, links: [{href: 'http://l', text: t}], images: [{src: 'http://i'}]"), "")
	f(pd("service_key: abc"), "service_key (Events API v1) is not supported")
	f(pd("routing_key: k, severity: high"), `severity "high" is not one of`)
	f(pd("routing_key: k, url: 'http://x/other'"), "must end in /v2/enqueue")
	f("route: {receiver: r}\nreceivers:\n  - name: r\n    slack_configs: [{api_url: 'http://x', channel: c}]\n", "other than pagerduty_configs and webhook_configs")
	f("route: {receiver: r}\nreceivers:\n  - name: r\n    webhook_configs: [{url: 'http://x', payload: {a: b}}]\n", "payload (a custom body) is not supported")
	f("route: {receiver: r}\nreceivers:\n  - name: r\n    bogus: 1\n", `unknown key "bogus"`)
	f("route: {receiver: missing}\nreceivers:\n  - name: r\n", "missing")
}

func TestEventsBaseURL(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		got, err := eventsBaseURL(in)
		if err != nil || got != want {
			t.Errorf("eventsBaseURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	f("", "https://events.pagerduty.com")
	f("https://events.pagerduty.com/v2/enqueue", "https://events.pagerduty.com")
	f("https://events.eu.pagerduty.com/v2/enqueue/", "https://events.eu.pagerduty.com")
	f("http://127.0.0.1:8080/proxy/v2/enqueue", "http://127.0.0.1:8080/proxy")
}

// TestParseSectionLines: an error in vigil.yaml's alerting section names the line of
// vigil.yaml, and the example config's alerting section parses.
func TestParseSectionLines(t *testing.T) {
	doc := "data_dir: x\nalerting:\n  route:\n    receiver: r\n  receivers:\n    - name: r\n      nope: 1\n"
	c, err := vconfig.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	_, err = ParseSection(&c.Alerting)
	if err == nil || !strings.Contains(err.Error(), "line 7") || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("error %v, want one naming line 7 and key nope", err)
	}
	ex, err := vconfig.Load("../vigil.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseSection(&ex.Alerting); err != nil {
		t.Errorf("vigil.example.yaml alerting: %v", err)
	}
}
