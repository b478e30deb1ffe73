package alerting

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	amconfig "github.com/prometheus/alertmanager/config"
	"github.com/prometheus/alertmanager/dispatch"
	"github.com/prometheus/alertmanager/notify/pagerduty"
	"github.com/prometheus/alertmanager/notify/webhook"
	"github.com/prometheus/alertmanager/template"
	"github.com/prometheus/alertmanager/timeinterval"
	commoncfg "github.com/prometheus/common/config"
	"gopkg.in/yaml.v3"

	vconfig "github.com/vigilhq/vigil/config"
)

// Config is a parsed and validated alerting section: an Alertmanager configuration
// with Alertmanager's exact semantics (it is decoded by Alertmanager's own config
// package). It is immutable once returned and safe to share between goroutines.
type Config struct {
	am         *amconfig.Config
	route      *dispatch.Route
	intervals  *timeinterval.Intervener
	receivers  map[string][]*integration
	inhibitors []*inhibitRule
	// tmpl holds Alertmanager's default templates and the config's templates files.
	tmpl *template.Template
	// resolveTimeout is global.resolve_timeout: a firing alert not re-sent within it
	// resolves, as in Alertmanager.
	resolveTimeout time.Duration
}

// integration is one pagerduty_configs or webhook_configs entry of a receiver.
type integration struct {
	receiver string
	kind     string // "pagerduty" or "webhook"
	idx      int    // index among the receiver's integrations of the same kind
	pd       *pagerduty.PagerdutyConfig
	wh       *webhook.WebhookConfig
	// client is built from the integration's http_config (proxy, TLS, authorization).
	client *http.Client
}

// id names the integration in the outbox and the notification state:
// "<receiver>/<kind>/<idx>".
func (in *integration) id() string {
	return in.receiver + "/" + in.kind + "/" + strconv.Itoa(in.idx)
}

func (in *integration) sendResolved() bool {
	if in.pd != nil {
		return in.pd.SendResolved()
	}
	return in.wh.SendResolved()
}

// timeout is the integration's own `timeout` setting (0: none).
func (in *integration) timeout() time.Duration {
	if in.pd != nil {
		return in.pd.Timeout
	}
	return in.wh.Timeout
}

// httpClient builds the client of an integration's http_config, as Alertmanager does.
func httpClient(hc *commoncfg.HTTPClientConfig, name string) (*http.Client, error) {
	if hc == nil {
		def := commoncfg.DefaultHTTPClientConfig
		hc = &def
	}
	return commoncfg.NewClientFromConfig(*hc, "vigil_"+name)
}

// DefaultConfig is used when vigil.yaml has no alerting section: every alert is
// routed to a receiver without integrations, so nothing is sent.
const DefaultConfig = "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n"

// ParseConfig decodes an alerting section given as a YAML document (the section's
// content, in Alertmanager's format). Unknown keys are errors naming the key and its
// line. A nil or empty document gives the DefaultConfig.
func ParseConfig(doc []byte) (*Config, error) {
	if len(bytes.TrimSpace(doc)) == 0 {
		doc = []byte(DefaultConfig)
	}
	am, err := amconfig.Load(string(doc))
	if err != nil {
		return nil, friendlyAMError(err, nil)
	}
	return newConfig(am)
}

// ParseSection decodes the alerting section of vigil.yaml. Line numbers in errors
// refer to vigil.yaml itself.
func ParseSection(s *vconfig.AlertingSection) (*Config, error) {
	if s == nil || s.IsZero() {
		return ParseConfig(nil)
	}
	doc, err := s.YAML()
	if err != nil {
		return nil, fmt.Errorf("alerting: re-encode section: %w", err)
	}
	am, err := amconfig.Load(string(doc))
	if err != nil {
		return nil, friendlyAMError(err, lineMap(doc, &s.Node))
	}
	return newConfig(am)
}

func newConfig(am *amconfig.Config) (*Config, error) {
	c := &Config{am: am, route: dispatch.NewRoute(am.Route, nil), receivers: map[string][]*integration{}}
	if am.Global != nil {
		c.resolveTimeout = time.Duration(am.Global.ResolveTimeout)
	}
	if c.resolveTimeout <= 0 {
		c.resolveTimeout = 5 * time.Minute
	}
	// Alertmanager's default templates, with Vigil as the sender's name (PagerDuty
	// client and source), then the config's templates, which may redefine anything.
	tmpl, err := template.FromGlobs(nil)
	if err != nil {
		return nil, fmt.Errorf("alerting: templates: %w", err)
	}
	if err := tmpl.Parse(strings.NewReader(`{{ define "__alertmanager" }}Vigil{{ end }}`)); err != nil {
		return nil, fmt.Errorf("alerting: templates: %w", err)
	}
	for _, g := range am.Templates {
		if err := tmpl.FromGlob(g); err != nil {
			return nil, fmt.Errorf("alerting: templates %q: %w", g, err)
		}
	}
	tmpl.ExternalURL = &url.URL{}
	c.tmpl = tmpl
	ti := make(map[string][]timeinterval.TimeInterval, len(am.TimeIntervals)+len(am.MuteTimeIntervals))
	for _, t := range am.MuteTimeIntervals {
		ti[t.Name] = t.TimeIntervals
	}
	for _, t := range am.TimeIntervals {
		ti[t.Name] = t.TimeIntervals
	}
	c.intervals = timeinterval.NewIntervener(ti)
	var unsupported []string
	for _, r := range am.Receivers {
		var ins []*integration
		for i, pd := range r.PagerdutyConfigs {
			if pd.ServiceKey != "" || pd.ServiceKeyFile != "" {
				return nil, fmt.Errorf("alerting: receiver %q pagerduty_configs[%d]: service_key (Events API v1) is not supported; use routing_key", r.Name, i)
			}
			if sev := pd.Severity; sev != "" && !strings.Contains(sev, "{{") && !validSeverity(sev) {
				return nil, fmt.Errorf("alerting: receiver %q pagerduty_configs[%d]: severity %q is not one of critical, error, warning, info", r.Name, i, sev)
			}
			if pd.URL != nil && pd.URL.URL != nil {
				if _, err := eventsBaseURL(pd.URL.String()); err != nil {
					return nil, fmt.Errorf("alerting: receiver %q pagerduty_configs[%d]: %w", r.Name, i, err)
				}
			}
			client, err := httpClient(pd.HTTPConfig, "pagerduty")
			if err != nil {
				return nil, fmt.Errorf("alerting: receiver %q pagerduty_configs[%d]: http_config: %w", r.Name, i, err)
			}
			ins = append(ins, &integration{receiver: r.Name, kind: "pagerduty", idx: i, pd: pd, client: client})
		}
		for i, wh := range r.WebhookConfigs {
			if wh.Payload != nil {
				return nil, fmt.Errorf("alerting: receiver %q webhook_configs[%d]: payload (a custom body) is not supported", r.Name, i)
			}
			client, err := httpClient(wh.HTTPConfig, "webhook")
			if err != nil {
				return nil, fmt.Errorf("alerting: receiver %q webhook_configs[%d]: http_config: %w", r.Name, i, err)
			}
			ins = append(ins, &integration{receiver: r.Name, kind: "webhook", idx: i, wh: wh, client: client})
		}
		if n := len(r.EmailConfigs) + len(r.SlackConfigs) + len(r.OpsGenieConfigs) + len(r.WechatConfigs) +
			len(r.PushoverConfigs) + len(r.VictorOpsConfigs) + len(r.SNSConfigs) + len(r.TelegramConfigs) +
			len(r.WebexConfigs) + len(r.MSTeamsConfigs) + len(r.MSTeamsV2Configs) + len(r.JiraConfigs) +
			len(r.RocketchatConfigs) + len(r.DiscordConfigs) + len(r.IncidentioConfigs) + len(r.MattermostConfigs); n > 0 {
			unsupported = append(unsupported, r.Name)
		}
		c.receivers[r.Name] = ins
	}
	if len(unsupported) > 0 {
		return nil, fmt.Errorf("alerting: receivers %q use integrations other than pagerduty_configs and webhook_configs, which Vigil does not send", unsupported)
	}
	for _, ir := range am.InhibitRules {
		c.inhibitors = append(c.inhibitors, newInhibitRule(ir))
	}
	return c, nil
}

// String returns the configuration as YAML with secrets hidden.
func (c *Config) String() string { return c.am.String() }

var (
	amLine       = regexp.MustCompile(`line (\d+)`)
	amUnknownKey = regexp.MustCompile(`line (\d+): field (\S+) not found in type \S+`)
)

// friendlyAMError rewrites Alertmanager's yaml.v2 errors ("line 3: field foo not found
// in type config.plain") into Vigil's form ("line 12: unknown key "foo" in alerting"),
// translating line numbers with lines (from re-encoded to vigil.yaml lines) if given.
func friendlyAMError(err error, lines map[int]int) error {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: unmarshal errors:\n")
	msg = amUnknownKey.ReplaceAllString(msg, `line $1: unknown key "$2" in alerting`)
	msg = amLine.ReplaceAllStringFunc(msg, func(s string) string {
		n, _ := strconv.Atoi(s[len("line "):])
		if lines != nil {
			if orig, ok := lines[n]; ok {
				n = orig
			}
		}
		return "line " + strconv.Itoa(n)
	})
	var parts []string
	for _, p := range strings.Split(msg, "\n") {
		if p = strings.TrimSpace(p); p != "" {
			parts = append(parts, p)
		}
	}
	return errors.New("alerting: " + strings.Join(parts, "; "))
}

// lineMap maps the line numbers of doc (orig re-encoded) to orig's line numbers by
// walking both trees, which have the same shape.
func lineMap(doc []byte, orig *yaml.Node) map[int]int {
	var re yaml.Node
	if err := yaml.Unmarshal(doc, &re); err != nil {
		return nil
	}
	m := map[int]int{}
	var walk func(a, b *yaml.Node)
	walk = func(a, b *yaml.Node) {
		if a == nil || b == nil {
			return
		}
		if _, ok := m[a.Line]; !ok {
			m[a.Line] = b.Line
		}
		for i := 0; i < len(a.Content) && i < len(b.Content); i++ {
			walk(a.Content[i], b.Content[i])
		}
	}
	root := &re
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	o := orig
	if o.Kind == yaml.DocumentNode && len(o.Content) == 1 {
		o = o.Content[0]
	}
	walk(root, o)
	return m
}

func validSeverity(s string) bool {
	switch s {
	case "critical", "error", "warning", "info":
		return true
	}
	return false
}

// eventsBaseURL converts an Alertmanager PagerDuty url (the full enqueue URL,
// https://events.pagerduty.com/v2/enqueue) into the base URL go-pagerduty's
// WithV2EventsAPIEndpoint expects (it appends /v2/enqueue).
func eventsBaseURL(full string) (string, error) {
	if full == "" {
		return "https://events.pagerduty.com", nil
	}
	base, ok := strings.CutSuffix(strings.TrimRight(full, "/"), "/v2/enqueue")
	if !ok {
		return "", fmt.Errorf("url %q: a PagerDuty Events API v2 URL must end in /v2/enqueue", full)
	}
	return base, nil
}
