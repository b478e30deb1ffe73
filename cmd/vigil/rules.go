package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/util/annotations"

	"github.com/vigilhq/vigil/alerting"
	"github.com/vigilhq/vigil/api"
	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/rules"
)

// startRules loads cfg.rule_files into the rules manager, evaluates them over the query
// store (on each group's interval and on arrival of the metrics they read, through the
// store's arrival hook), keeps alert state in the log's alert_state topic, and hands
// alerts to the alerting stage. A rule file that does not load at start is reported
// (log, metric, /api/v1/status/rules) and Vigil runs without those rules until a reload
// succeeds. Routes: GET /api/v1/rules, GET /api/v1/alerts, GET /api/v1/status/rules.
func startRules(s *server, ctx context.Context) (func(context.Context) error, error) {
	if s.store == nil {
		return nil, errors.New("the rules need the query store, which has not started")
	}
	rc := s.cfg.Rules
	logger := s.logger.With("component", "rules")
	m, err := rules.NewManager(rules.Options{
		Queryable:  s.store.Queryable(),
		Engine:     s.store.Engine(),
		Appendable: s.store.Appendable(),
		Log:        s.log,
		Notify: func(ctx context.Context, as []alerting.Alert) {
			if err := s.alerts.Send(ctx, as); err != nil {
				logger.Error("hand alerts to the alerting stage", "alerts", len(as), "err", err)
			}
		},
		Interval:             rc.EvaluationInterval.D(),
		ExternalLabels:       labels.FromMap(rc.ExternalLabels),
		ExternalURL:          s.externalURL(),
		OnArrival:            rc.OnArrival,
		OnArrivalMinInterval: rc.OnArrivalMinInterval.D(),
		Metrics:              s.metrics,
		Logger:               logger,
	})
	if err != nil {
		return nil, err
	}
	if err := m.Update(s.ruleGlobs(s.cfg)); err != nil {
		logger.Error("rule files did not load; running without them until a reload succeeds", "err", err)
	}
	s.rules = m
	s.rulesArrived.Store(m)
	s.store.SetArrivalHook(m.Arrived)
	m.Start(ctx)

	s.mux.Handle("GET /api/v1/rules", api.Handler(func(r *http.Request) (any, annotations.Annotations, error) {
		f := rules.RulesFilter{
			RuleNames:     r.Form["rule_name[]"],
			RuleGroups:    r.Form["rule_group[]"],
			Files:         r.Form["file[]"],
			ExcludeAlerts: r.FormValue("exclude_alerts") == "true",
		}
		switch t := strings.ToLower(r.FormValue("type")); t {
		case "", "alert", "record":
			f.Type = t
		default:
			return nil, nil, api.Errorf(api.ErrBadData, "invalid query parameter type='%s'", r.FormValue("type"))
		}
		return m.RulesAPI(f), nil, nil
	}))
	s.mux.Handle("GET /api/v1/alerts", api.Handler(func(*http.Request) (any, annotations.Annotations, error) {
		return m.AlertsAPI(), nil, nil
	}))
	s.mux.Handle("GET /api/v1/status/rules", api.Handler(func(*http.Request) (any, annotations.Annotations, error) {
		at, lerr := m.LastReload()
		st := struct {
			Files             []string  `json:"files"`
			LastReload        time.Time `json:"lastReload"`
			LastReloadSuccess bool      `json:"lastReloadSuccess"`
			LastReloadError   string    `json:"lastReloadError,omitempty"`
		}{Files: m.Files(), LastReload: at, LastReloadSuccess: lerr == nil}
		if lerr != nil {
			st.LastReloadError = lerr.Error()
		}
		return st, nil, nil
	}))
	s.onReload("rules", func(c *config.Config) error {
		m.SetSettings(rules.Settings{
			Interval:             c.Rules.EvaluationInterval.D(),
			ExternalLabels:       labels.FromMap(c.Rules.ExternalLabels),
			OnArrival:            c.Rules.OnArrival,
			OnArrivalMinInterval: c.Rules.OnArrivalMinInterval.D(),
		})
		return m.Update(s.ruleGlobs(c))
	})
	return func(context.Context) error {
		s.rulesArrived.Store(nil)
		m.Stop()
		return nil
	}, nil
}

// ruleGlobs returns cfg.rule_files with relative patterns resolved against the config
// file's folder (as Prometheus does), or the working directory without a config file.
func (s *server) ruleGlobs(c *config.Config) []string {
	out := make([]string, 0, len(c.RuleFiles))
	for _, g := range c.RuleFiles {
		if s.configFile != "" && !filepath.IsAbs(g) {
			g = filepath.Join(filepath.Dir(s.configFile), g)
		}
		out = append(out, g)
	}
	return out
}

// externalURL is server.external_url, or http(s)://<listen>.
func (s *server) externalURL() string {
	if u := s.cfg.Server.ExternalURL; u != "" {
		return strings.TrimRight(u, "/")
	}
	scheme := "http"
	if s.cfg.Server.TLS.CertFile != "" {
		scheme = "https"
	}
	return scheme + "://" + s.cfg.Server.Listen
}

// ruleArrivals tells the rules that samples of these metrics are queryable, for stages
// that start before the rules (the rollup engine's OnWindowClosed): before the rules
// start, and after they stop, it does nothing. Safe for concurrent use.
func (s *server) ruleArrivals(metricNames []string) {
	if m := s.rulesArrived.Load(); m != nil {
		m.Arrived(metricNames)
	}
}

const rulesUsage = `Usage:
  vigil rules check [flags] [FILE...]   check rule files (standard input if none), as promtool check rules
  vigil rules test [flags] FILE...      run rule unit tests, as promtool test rules

check flags:
  --lint=LIST               lint checks: all, duplicate-rules (default), none
  --lint-fatal              exit with code 3 on lint findings
  --ignore-unknown-fields   accept unknown fields in rule files

test flags:
  --run=REGEXP              run only test groups whose name matches (repeatable)
  --junit=FILE              write a JUnit XML report
  --debug                   print test durations and a dump of all series
  --diff                    accepted for promtool compatibility (plain output)
  --ignore-unknown-fields   accept unknown fields in rule files

common flags:
  --enable-feature=LIST     promql-experimental-functions, promql-delayed-name-removal,
                            promql-unquoted-utf8-names, promql-binop-fill-modifiers

Exit codes are promtool's: 0 success, 1 failure, 3 lint findings with --lint-fatal.
`

// rulesCommand runs `vigil rules check|test`, with promtool's flags, output and exit codes.
func rulesCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, rulesUsage)
		return 1
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "check", "test":
	case "help", "-h", "--help":
		fmt.Fprint(stdout, rulesUsage)
		return 0
	default:
		fmt.Fprintf(stderr, "vigil rules: unknown command %q\n\n%s", sub, rulesUsage)
		return 1
	}
	f, err := parseRulesFlags(sub, args)
	if err != nil {
		fmt.Fprintf(stderr, "vigil rules %s: error: %v, try --help\n", sub, err)
		return 1
	}
	if f.help {
		fmt.Fprint(stdout, rulesUsage)
		return 0
	}
	for _, fn := range f.files {
		if _, err := os.Stat(fn); err != nil {
			fmt.Fprintf(stderr, "vigil rules %s: error: path '%s' does not exist, try --help\n", sub, fn)
			return 1
		}
	}
	popts := parser.Options{}
	delayedNameRemoval := false
	for _, feat := range f.features {
		for o := range strings.SplitSeq(feat, ",") {
			switch o {
			case "promql-unquoted-utf8-names":
				popts.EnableUnquotedUTF8Names = true
			case "promql-experimental-functions":
				popts.EnableExperimentalFunctions = true
			case "promql-delayed-name-removal":
				delayedNameRemoval = true
			case "promql-binop-fill-modifiers":
				popts.EnableBinopFillModifiers = true
			case "promql-duration-expr", "promql-extended-range-selectors", "":
			default:
				fmt.Fprintf(stdout, "  WARNING: Unknown feature passed to --enable-feature: %s", o)
			}
		}
	}
	p := parser.NewParser(popts)

	if sub == "check" {
		return rules.CheckRuleFiles(stdout, stderr, rules.CheckOptions{
			Lint:                f.lint,
			LintFatal:           f.lintFatal,
			IgnoreUnknownFields: f.ignoreUnknown,
			Parser:              p,
			Stdin:               os.Stdin,
		}, f.files...)
	}
	if len(f.files) == 0 {
		fmt.Fprintln(stderr, "vigil rules test: error: required argument 'test-rule-file' not provided, try --help")
		return 1
	}
	o := rules.UnitTestOptions{
		Run:                 f.run,
		IgnoreUnknownFields: f.ignoreUnknown,
		Debug:               f.debug,
		Parser:              p,
		DelayedNameRemoval:  delayedNameRemoval,
	}
	if f.junit != "" {
		jf, err := os.OpenFile(f.junit, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			fmt.Fprintf(stderr, "vigil rules test: error: open --junit file: %v\n", err)
			return 1
		}
		defer jf.Close()
		o.JUnit = jf
	}
	return rules.RunUnitTests(stdout, stderr, o, f.files...)
}

// rulesFlags are the parsed flags of `vigil rules check|test`.
type rulesFlags struct {
	lint          string
	lintFatal     bool
	ignoreUnknown bool
	run           []string
	junit         string
	debug         bool
	help          bool
	features      []string
	files         []string
}

// parseRulesFlags parses flags anywhere among the file arguments, as promtool's
// kingpin does: --name=value, --name value, and boolean --name / --no-name.
func parseRulesFlags(sub string, args []string) (*rulesFlags, error) {
	f := &rulesFlags{lint: "duplicate-rules"}
	type flagDef struct {
		value  func(string)
		isBool bool
		set    func(bool)
	}
	defs := map[string]flagDef{
		"enable-feature":        {value: func(v string) { f.features = append(f.features, v) }},
		"ignore-unknown-fields": {isBool: true, set: func(b bool) { f.ignoreUnknown = b }},
		"help":                  {isBool: true, set: func(b bool) { f.help = b }},
		"h":                     {isBool: true, set: func(b bool) { f.help = b }},
	}
	if sub == "check" {
		defs["lint"] = flagDef{value: func(v string) { f.lint = v }}
		defs["lint-fatal"] = flagDef{isBool: true, set: func(b bool) { f.lintFatal = b }}
		defs["query.lookback-delta"] = flagDef{value: func(string) {}}
	} else {
		defs["run"] = flagDef{value: func(v string) { f.run = append(f.run, v) }}
		defs["junit"] = flagDef{value: func(v string) { f.junit = v }}
		defs["debug"] = flagDef{isBool: true, set: func(b bool) { f.debug = b }}
		defs["diff"] = flagDef{isBool: true, set: func(bool) {}}
	}
	onlyFiles := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		if onlyFiles || !strings.HasPrefix(a, "-") || a == "-" {
			f.files = append(f.files, a)
			continue
		}
		if a == "--" {
			onlyFiles = true
			continue
		}
		name := strings.TrimLeft(a, "-")
		value, hasValue := "", false
		if k, v, ok := strings.Cut(name, "="); ok {
			name, value, hasValue = k, v, true
		}
		d, ok := defs[name]
		if !ok && strings.HasPrefix(name, "no-") {
			if nd, nok := defs[strings.TrimPrefix(name, "no-")]; nok && nd.isBool && !hasValue {
				nd.set(false)
				continue
			}
		}
		if !ok {
			return nil, fmt.Errorf("unknown long flag '%s'", a)
		}
		if d.isBool {
			if hasValue {
				return nil, fmt.Errorf("flag '--%s' takes no value", name)
			}
			d.set(true)
			continue
		}
		if !hasValue {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("expected argument for flag '--%s'", name)
			}
			i++
			value = args[i]
		}
		d.value(value)
	}
	return f, nil
}
