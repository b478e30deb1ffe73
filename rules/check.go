package rules

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// CheckOptions are the flags of `vigil rules check` (promtool check rules's).
type CheckOptions struct {
	// Lint is a comma-separated list of lint checks: "all", "duplicate-rules" (the
	// default when empty is given by the command) or "none".
	Lint string
	// LintFatal makes lint findings exit with code 3.
	LintFatal bool
	// IgnoreUnknownFields accepts rule files with fields rulefmt does not know.
	IgnoreUnknownFields bool
	// Parser parses the expressions; nil means the default PromQL parser.
	Parser parser.Parser
	// Stdin is read when no file is given.
	Stdin io.Reader
}

// errLint marks findings of the linter, which fail a check only with LintFatal.
var errLint = errors.New("lint error")

// The exit codes of promtool check rules.
const (
	exitSuccess   = 0
	exitFailure   = 1
	exitLintError = 3
)

// CheckRuleFiles validates rule files as promtool check rules does: rulefmt's parsing
// and validation (expressions, templates, durations, names), then the lint checks. It
// writes "Checking FILE" and "  SUCCESS: N rules found" to stdout and failures to
// stderr, and returns promtool's exit code: 0 valid (lint findings without LintFatal
// included), 1 invalid, 3 only lint findings with LintFatal. With no files it reads
// o.Stdin.
func CheckRuleFiles(stdout, stderr io.Writer, o CheckOptions, files ...string) int {
	if o.Parser == nil {
		o.Parser = parser.NewParser(parser.Options{})
	}
	lintAll, lintDup := false, false
	if o.Lint != "" {
		for setting := range strings.SplitSeq(o.Lint, ",") {
			switch setting {
			case "all":
				lintAll = true
			case "duplicate-rules":
				lintDup = true
			case "none":
			default:
				fmt.Fprintf(stdout, "WARNING: unknown lint option: %q\n", setting)
			}
		}
	}
	lintDuplicates := lintAll || lintDup
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	failed, hasErrors := false, false
	checkOne := func(rgs *rulefmt.RuleGroups, errs []error) {
		if errs != nil {
			failed = true
			fmt.Fprintln(stderr, "  FAILED:")
			for _, e := range errs {
				fmt.Fprintln(stderr, e.Error())
				hasErrors = hasErrors || !errors.Is(e, errLint)
			}
			if hasErrors {
				return
			}
		}
		if n, errs := checkRuleGroups(rgs, lintDuplicates); errs != nil {
			fmt.Fprintln(stderr, "  FAILED:")
			for _, e := range errs {
				fmt.Fprintln(stderr, e.Error())
			}
			failed = true
			for _, e := range errs {
				hasErrors = hasErrors || !errors.Is(e, errLint)
			}
		} else {
			fmt.Fprintf(stdout, "  SUCCESS: %d rules found\n", n)
		}
		fmt.Fprintln(stdout)
	}

	if len(files) == 0 {
		fmt.Fprintln(stdout, "Checking standard input")
		in := o.Stdin
		if in == nil {
			in = os.Stdin
		}
		data, err := io.ReadAll(in)
		if err != nil {
			fmt.Fprintln(stderr, "  FAILED:", err)
			return exitFailure
		}
		checkOne(rulefmt.Parse(data, o.IgnoreUnknownFields, model.UTF8Validation, o.Parser, logger))
	} else {
		for _, f := range files {
			fmt.Fprintln(stdout, "Checking", f)
			checkOne(rulefmt.ParseFile(f, o.IgnoreUnknownFields, model.UTF8Validation, o.Parser, logger))
		}
	}
	switch {
	case failed && hasErrors:
		return exitFailure
	case failed && o.LintFatal:
		return exitLintError
	}
	return exitSuccess
}

// checkRuleGroups counts the rules and runs the lint checks.
func checkRuleGroups(rgs *rulefmt.RuleGroups, lintDuplicates bool) (int, []error) {
	n := 0
	for _, rg := range rgs.Groups {
		n += len(rg.Rules)
	}
	if lintDuplicates {
		if dups := duplicateRules(rgs.Groups); len(dups) != 0 {
			var sb strings.Builder
			fmt.Fprintf(&sb, "%d duplicate rule(s) found.\n", len(dups))
			for _, d := range dups {
				fmt.Fprintf(&sb, "Metric: %s\nLabel(s):\n", d.metric)
				d.labels.Range(func(l labels.Label) { fmt.Fprintf(&sb, "\t%s: %s\n", l.Name, l.Value) })
			}
			sb.WriteString("Might cause inconsistency while recording expressions")
			return 0, []error{fmt.Errorf("%w %s", errLint, sb.String())}
		}
	}
	return n, nil
}

type ruleIdentity struct {
	metric string
	labels labels.Labels
}

func compareIdentity(a, b ruleIdentity) int {
	if c := strings.Compare(a.metric, b.metric); c != 0 {
		return c
	}
	return labels.Compare(a.labels, b.labels)
}

// duplicateRules returns one entry per set of rules with the same name and labels.
func duplicateRules(groups []rulefmt.RuleGroup) []ruleIdentity {
	var ids []ruleIdentity
	for _, g := range groups {
		for _, r := range g.Rules {
			name := r.Alert
			if name == "" {
				name = r.Record
			}
			ids = append(ids, ruleIdentity{metric: name, labels: fromMaps(g.Labels, r.Labels)})
		}
	}
	if len(ids) < 2 {
		return nil
	}
	sort.Slice(ids, func(i, j int) bool { return compareIdentity(ids[i], ids[j]) < 0 })
	var dups []ruleIdentity
	last := ids[0]
	for _, id := range ids[1:] {
		if compareIdentity(last, id) == 0 && (len(dups) == 0 || compareIdentity(last, dups[len(dups)-1]) != 0) {
			dups = append(dups, id)
		}
		last = id
	}
	return dups
}
