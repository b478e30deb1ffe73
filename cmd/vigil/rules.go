package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/prometheus/prometheus/promql/parser"

	"github.com/vigilhq/vigil/rules"
)

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
