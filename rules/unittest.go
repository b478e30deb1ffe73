package rules

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/promqltest"
	promrules "github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/junitxml"
	"go.yaml.in/yaml/v2"
)

// UnitTestOptions are the flags of `vigil rules test` (promtool test rules's).
type UnitTestOptions struct {
	// Run, if not empty, runs only the test groups whose name matches one of these
	// regular expressions.
	Run []string
	// IgnoreUnknownFields accepts rule files with fields rulefmt does not know.
	IgnoreUnknownFields bool
	// Debug prints each test's duration and a dump of all series at the end.
	Debug bool
	// Parser parses rule expressions and expected labels; nil means the default.
	Parser parser.Parser
	// DelayedNameRemoval enables PromQL's delayed __name__ removal.
	DelayedNameRemoval bool
	// JUnit, if set, receives a JUnit XML report.
	JUnit io.Writer
}

// RunUnitTests runs rule unit test files in promtool's format (rule_files,
// evaluation_interval, group_eval_order, tests with input_series, alert_rule_test and
// promql_expr_test) with Vigil's rule evaluation, and writes promtool's report:
// progress to stdout, failures to stderr. It returns promtool's exit code: 0 when every
// file passes, 1 otherwise.
func RunUnitTests(stdout, stderr io.Writer, o UnitTestOptions, files ...string) int {
	if o.Parser == nil {
		o.Parser = parser.NewParser(parser.Options{})
	}
	var run *regexp.Regexp
	if len(o.Run) > 0 {
		re, err := regexp.Compile(strings.Join(o.Run, "|"))
		if err != nil {
			fmt.Fprintf(stderr, "invalid --run expression: %v\n", err)
			return 1
		}
		run = re
	}
	junit := &junitxml.JUnitXML{}
	failed := false
	for _, f := range files {
		fmt.Fprintf(stdout, "Processing test file: %s\n", f)
		suite := junit.Suite(f)
		if errs := runUnitTestFile(stdout, stderr, f, o, run, suite); errs != nil {
			fmt.Fprintln(stderr, "  FAILED:")
			for _, e := range errs {
				fmt.Fprintln(stderr, e.Error())
				fmt.Fprintln(stdout)
			}
			failed = true
		} else {
			fmt.Fprintln(stdout, "  SUCCESS")
		}
		fmt.Fprintln(stdout)
	}
	if o.JUnit != nil {
		if err := junit.WriteXML(o.JUnit); err != nil {
			fmt.Fprintf(stderr, "failed to write JUnit XML: %s\n", err)
		}
	}
	if failed {
		return 1
	}
	return 0
}

// unitTestFile is one unit test file.
type unitTestFile struct {
	RuleFiles          []string       `yaml:"rule_files"`
	EvaluationInterval model.Duration `yaml:"evaluation_interval,omitempty"`
	GroupEvalOrder     []string       `yaml:"group_eval_order"`
	Tests              []testGroup    `yaml:"tests"`
	FuzzyCompare       bool           `yaml:"fuzzy_compare,omitempty"`
}

// testStartTimestamp is a start_timestamp: RFC 3339 or Unix seconds.
type testStartTimestamp struct {
	time.Time
}

// UnmarshalYAML accepts RFC 3339 timestamps and (fractional) Unix seconds.
func (t *testStartTimestamp) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err != nil {
		return err
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		sec, ns := math.Modf(f)
		t.Time = time.Unix(int64(sec), int64(ns*float64(time.Second))).UTC()
		return nil
	}
	parsed, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("cannot parse %q to a valid timestamp", s)
	}
	t.Time = parsed
	return nil
}

// testGroup is one entry of tests: input series and the checks on them.
type testGroup struct {
	Interval        model.Duration     `yaml:"interval"`
	InputSeries     []inputSeries      `yaml:"input_series"`
	AlertRuleTests  []alertTestCase    `yaml:"alert_rule_test,omitempty"`
	PromqlExprTests []promqlTestCase   `yaml:"promql_expr_test,omitempty"`
	ExternalLabels  labels.Labels      `yaml:"external_labels,omitempty"`
	ExternalURL     string             `yaml:"external_url,omitempty"`
	TestGroupName   string             `yaml:"name,omitempty"`
	StartTimestamp  testStartTimestamp `yaml:"start_timestamp,omitempty"`
}

type inputSeries struct {
	Series string `yaml:"series"`
	Values string `yaml:"values"`
}

type alertTestCase struct {
	EvalTime  model.Duration `yaml:"eval_time"`
	Alertname string         `yaml:"alertname"`
	ExpAlerts []expAlert     `yaml:"exp_alerts"`
}

type expAlert struct {
	ExpLabels      map[string]string `yaml:"exp_labels"`
	ExpAnnotations map[string]string `yaml:"exp_annotations"`
}

type promqlTestCase struct {
	Expr       string         `yaml:"expr"`
	EvalTime   model.Duration `yaml:"eval_time"`
	ExpSamples []expSample    `yaml:"exp_samples"`
}

type expSample struct {
	Labels    string  `yaml:"labels"`
	Value     float64 `yaml:"value"`
	Histogram string  `yaml:"histogram"` // Non-empty: Value is ignored.
}

func runUnitTestFile(stdout, stderr io.Writer, filename string, o UnitTestOptions, run *regexp.Regexp, js *junitxml.TestSuite) []error {
	b, err := os.ReadFile(filename)
	if err != nil {
		js.Abort(err)
		return []error{err}
	}
	var utf unitTestFile
	if err := yaml.UnmarshalStrict(b, &utf); err != nil {
		js.Abort(err)
		return []error{err}
	}
	if err := resolveRuleFiles(stderr, filepath.Dir(filename), &utf); err != nil {
		js.Abort(err)
		return []error{err}
	}
	js.Settime(time.Now().Format("2006-01-02T15:04:05"))
	if utf.EvaluationInterval == 0 {
		utf.EvaluationInterval = model.Duration(time.Minute)
	}
	evalInterval := time.Duration(utf.EvaluationInterval)
	groupOrder := map[string]int{}
	for i, gn := range utf.GroupEvalOrder {
		if _, ok := groupOrder[gn]; ok {
			err := fmt.Errorf("group name repeated in evaluation order: %s", gn)
			js.Abort(err)
			return []error{err}
		}
		groupOrder[gn] = i
	}

	var errs []error
	for i, tg := range utf.Tests {
		if run != nil && !run.MatchString(tg.TestGroupName) {
			continue
		}
		name := tg.TestGroupName
		if name == "" {
			name = fmt.Sprintf("unnamed#%d", i)
		}
		tc := js.Case(name)
		if tg.Interval == 0 {
			tg.Interval = utf.EvaluationInterval
		}
		start := time.Now()
		if o.Debug {
			fmt.Fprintf(stderr, "DEBUG: Starting test %s\n", name)
		}
		ers := tg.test(stderr, evalInterval, groupOrder, o, utf.FuzzyCompare, utf.RuleFiles)
		if o.Debug {
			fmt.Fprintf(stderr, "DEBUG: Test %s finished, took %v\n", name, time.Since(start))
		}
		for _, e := range ers {
			tc.Fail(e.Error())
		}
		errs = append(errs, ers...)
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// resolveRuleFiles makes relative rule file paths relative to the test file's folder
// and expands globs.
func resolveRuleFiles(stderr io.Writer, baseDir string, utf *unitTestFile) error {
	var globbed []string
	for _, rf := range utf.RuleFiles {
		if rf != "" && !filepath.IsAbs(rf) {
			rf = filepath.Join(baseDir, rf)
		}
		m, err := filepath.Glob(rf)
		if err != nil {
			return err
		}
		if len(m) == 0 {
			fmt.Fprintln(stderr, "  WARNING: no file match pattern", rf)
		}
		globbed = append(globbed, m...)
	}
	utf.RuleFiles = globbed
	return nil
}

// seriesLoadingString returns the input series as a promqltest load command.
func (tg *testGroup) seriesLoadingString() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "load %v\n", shortDuration(tg.Interval))
	for _, is := range tg.InputSeries {
		fmt.Fprintf(&sb, "  %v %v\n", is.Series, is.Values)
	}
	return sb.String()
}

func shortDuration(d model.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// maxEvalTime is the latest eval_time of the group's checks.
func (tg *testGroup) maxEvalTime() time.Duration {
	var m model.Duration
	for _, a := range tg.AlertRuleTests {
		m = max(m, a.EvalTime)
	}
	for _, p := range tg.PromqlExprTests {
		m = max(m, p.EvalTime)
	}
	return time.Duration(m)
}

// test runs one test group: it loads the input series step by step, evaluates the
// rule groups at every evaluation interval from the start, and checks the firing
// alerts at each alert test's eval_time, then the PromQL expression tests.
func (tg *testGroup) test(stderr io.Writer, evalInterval time.Duration, groupOrder map[string]int, o UnitTestOptions, fuzzy bool, ruleFiles []string) (outErr []error) {
	suite, err := promqltest.NewLazyLoader(tg.seriesLoadingString(), promqltest.LazyLoaderOpts{
		EnableAtModifier:         true,
		EnableNegativeOffset:     true,
		EnableDelayedNameRemoval: o.DelayedNameRemoval,
		StartTime:                tg.StartTimestamp.Time,
		Parser:                   o.Parser,
	})
	if err != nil {
		return []error{err}
	}
	defer func() {
		if err := suite.Close(); err != nil {
			outErr = append(outErr, err)
		}
	}()
	suite.SubqueryInterval = evalInterval

	groups, ers := LoadFiles(ruleFiles, LoadOptions{
		Interval:            time.Duration(tg.Interval),
		ExternalLabels:      tg.ExternalLabels,
		ExternalURL:         tg.ExternalURL,
		IgnoreUnknownFields: o.IgnoreUnknownFields,
		Parser:              o.Parser,
	})
	if ers != nil {
		return ers
	}
	sort.SliceStable(groups, func(i, j int) bool { return groupOrder[groups[i].Name()] < groupOrder[groups[j].Name()] })
	env := &Env{
		Query:      promrules.EngineQueryFunc(suite.QueryEngine(), suite.Storage()),
		Appendable: suite.Storage(),
	}

	mint := time.Unix(0, 0).UTC()
	if !tg.StartTimestamp.IsZero() {
		mint = tg.StartTimestamp.Time
	}
	maxt := mint.Add(tg.maxEvalTime())

	floatEqual := func(x, y float64) bool { return x == y }
	if fuzzy {
		floatEqual = func(x, y float64) bool {
			return x == y || math.Nextafter(x, math.Inf(-1)) == y || math.Nextafter(x, math.Inf(1)) == y
		}
	}

	alertsInTest := map[model.Duration]map[string]struct{}{}
	alertTests := map[model.Duration][]alertTestCase{}
	var alertEvalTimes []model.Duration
	for _, a := range tg.AlertRuleTests {
		if a.Alertname == "" {
			var inGroup string
			if tg.TestGroupName != "" {
				inGroup = fmt.Sprintf(" (in TestGroup %s)", tg.TestGroupName)
			}
			return []error{fmt.Errorf("an item under alert_rule_test misses required attribute alertname at eval_time %v%s", a.EvalTime, inGroup)}
		}
		if _, ok := alertsInTest[a.EvalTime]; !ok {
			alertsInTest[a.EvalTime] = map[string]struct{}{}
			alertEvalTimes = append(alertEvalTimes, a.EvalTime)
		}
		alertsInTest[a.EvalTime][a.Alertname] = struct{}{}
		alertTests[a.EvalTime] = append(alertTests[a.EvalTime], a)
	}
	slices.Sort(alertEvalTimes)

	curr := 0
	var errs []error
	for ts := mint; !ts.After(maxt); ts = ts.Add(evalInterval) {
		var evalErrs []error
		suite.WithSamplesTill(ts, func(err error) {
			if err != nil {
				errs = append(errs, err)
				return
			}
			for _, g := range groups {
				g.Eval(suite.Context(), env, ts)
				for _, r := range g.Rules() {
					if e := r.Status().EvalError; e != nil {
						evalErrs = append(evalErrs, fmt.Errorf("    rule: %s, time: %s, err: %w",
							r.Name(), ts.Sub(time.Unix(0, 0).UTC()), e))
					}
				}
			}
		})
		errs = append(errs, evalErrs...)
		if len(evalErrs) > 0 {
			return errs
		}

		for curr < len(alertEvalTimes) && ts.Sub(mint) <= time.Duration(alertEvalTimes[curr]) &&
			time.Duration(alertEvalTimes[curr]) < ts.Add(evalInterval).Sub(mint) {
			t := alertEvalTimes[curr]
			present := alertsInTest[t]
			got := map[string]labelsAndAnnotations{}
			for _, g := range groups {
				for _, r := range g.Rules() {
					ar, ok := r.(*AlertingRule)
					if !ok {
						continue
					}
					if _, ok := present[ar.Name()]; !ok {
						continue
					}
					var as labelsAndAnnotations
					for _, a := range ar.ActiveAlerts() {
						if a.State == StateFiring {
							as = append(as, labelAndAnnotation{Labels: a.Labels.Copy(), Annotations: a.Annotations.Copy()})
						}
					}
					got[ar.Name()] = append(got[ar.Name()], as...)
				}
			}
			for _, tc := range alertTests[t] {
				gotAlerts := got[tc.Alertname]
				var expAlerts labelsAndAnnotations
				for _, a := range tc.ExpAlerts {
					if a.ExpLabels == nil {
						a.ExpLabels = map[string]string{}
					}
					a.ExpLabels[labels.AlertName] = tc.Alertname
					expAlerts = append(expAlerts, labelAndAnnotation{
						Labels:      labels.FromMap(a.ExpLabels),
						Annotations: labels.FromMap(a.ExpAnnotations),
					})
				}
				sort.Sort(gotAlerts)
				sort.Sort(expAlerts)
				if !expAlerts.equal(gotAlerts) {
					var testName string
					if tg.TestGroupName != "" {
						testName = fmt.Sprintf("    name: %s,\n", tg.TestGroupName)
					}
					errs = append(errs, fmt.Errorf("%s    alertname: %s, time: %s, \n        exp:%v, \n        got:%v",
						testName, tc.Alertname, tc.EvalTime.String(),
						indentLines(expAlerts.String(), "            "), indentLines(gotAlerts.String(), "            ")))
				}
			}
			curr++
		}
	}

outer:
	for _, tc := range tg.PromqlExprTests {
		got, err := instantQuery(suite.Context(), tc.Expr, mint.Add(time.Duration(tc.EvalTime)), suite.QueryEngine(), suite.Queryable())
		if err != nil {
			errs = append(errs, fmt.Errorf("    expr: %q, time: %s, err: %s", tc.Expr, tc.EvalTime.String(), err.Error()))
			continue
		}
		var gotSamples []parsedSample
		for _, s := range got {
			gotSamples = append(gotSamples, parsedSample{Labels: s.Metric.Copy(), Value: s.F, Histogram: promqltest.HistogramTestExpression(s.H)})
		}
		var expSamples []parsedSample
		for _, s := range tc.ExpSamples {
			lb, err := o.Parser.ParseMetric(s.Labels)
			var hist *histogram.FloatHistogram
			if err == nil && s.Histogram != "" {
				_, values, perr := o.Parser.ParseSeriesDesc("{} " + s.Histogram)
				switch {
				case perr != nil:
					err = perr
				case len(values) != 1:
					err = fmt.Errorf("expected 1 value, got %d", len(values))
				case values[0].Histogram == nil:
					err = fmt.Errorf("expected histogram, got %v", values[0])
				default:
					hist = values[0].Histogram
				}
			}
			if err != nil {
				err = fmt.Errorf("labels %q: %w", s.Labels, err)
				errs = append(errs, fmt.Errorf("    expr: %q, time: %s, err: %w", tc.Expr, tc.EvalTime.String(), err))
				continue outer
			}
			expSamples = append(expSamples, parsedSample{Labels: lb, Value: s.Value, Histogram: promqltest.HistogramTestExpression(hist)})
		}
		sort.Slice(expSamples, func(i, j int) bool { return labels.Compare(expSamples[i].Labels, expSamples[j].Labels) <= 0 })
		sort.Slice(gotSamples, func(i, j int) bool { return labels.Compare(gotSamples[i].Labels, gotSamples[j].Labels) <= 0 })
		if !samplesEqual(expSamples, gotSamples, floatEqual) {
			errs = append(errs, fmt.Errorf("    expr: %q, time: %s,\n        exp: %v\n        got: %v", tc.Expr,
				tc.EvalTime.String(), parsedSamplesString(expSamples), parsedSamplesString(gotSamples)))
		}
	}

	if o.Debug {
		tg.debugDump(stderr, suite, mint)
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// debugDump prints every series of the test storage, as promtool --debug does.
func (tg *testGroup) debugDump(stderr io.Writer, suite *promqltest.LazyLoader, mint time.Time) {
	ts := (tg.maxEvalTime() + time.Second).Truncate(time.Second)
	expr := fmt.Sprintf(`{__name__=~".+"}[%v]`, ts)
	q, err := suite.QueryEngine().NewInstantQuery(context.Background(), suite.Queryable(), nil, expr, mint.Add(ts))
	if err != nil {
		fmt.Fprintf(stderr, "DEBUG: Failed querying, expr: %q, err: %v\n", expr, err)
		return
	}
	res := q.Exec(suite.Context())
	if res.Err != nil {
		fmt.Fprintf(stderr, "DEBUG: Failed query exec, expr: %q, err: %v\n", expr, res.Err)
		return
	}
	if m, ok := res.Value.(promql.Matrix); ok {
		fmt.Fprintf(stderr, "DEBUG: Dump of all data (input_series and rules) at %v:\n", ts)
		fmt.Fprintln(stderr, m.String())
		return
	}
	fmt.Fprintf(stderr, "DEBUG: Got unexpected type %T\n", res.Value)
}

// instantQuery runs an expression test's query; a scalar becomes a one-sample vector.
func instantQuery(ctx context.Context, qs string, t time.Time, engine *promql.Engine, qu storage.Queryable) (promql.Vector, error) {
	q, err := engine.NewInstantQuery(ctx, qu, nil, qs, t)
	if err != nil {
		return nil, err
	}
	res := q.Exec(ctx)
	if res.Err != nil {
		return nil, res.Err
	}
	switch v := res.Value.(type) {
	case promql.Vector:
		return v, nil
	case promql.Scalar:
		return promql.Vector{promql.Sample{T: v.T, F: v.V, Metric: labels.Labels{}}}, nil
	default:
		return nil, errors.New("rule result is not a vector or scalar")
	}
}

// indentLines prefixes every line but the first with indent.
func indentLines(lines, indent string) string {
	var sb strings.Builder
	n := strings.Split(lines, "\n")
	for i, l := range n {
		if i > 0 {
			sb.WriteString(indent)
		}
		sb.WriteString(l)
		if i != len(n)-1 {
			sb.WriteRune('\n')
		}
	}
	return sb.String()
}

type labelAndAnnotation struct {
	Labels      labels.Labels
	Annotations labels.Labels
}

func (la *labelAndAnnotation) String() string {
	return "Labels:" + la.Labels.String() + "\nAnnotations:" + la.Annotations.String()
}

type labelsAndAnnotations []labelAndAnnotation

func (la labelsAndAnnotations) Len() int      { return len(la) }
func (la labelsAndAnnotations) Swap(i, j int) { la[i], la[j] = la[j], la[i] }
func (la labelsAndAnnotations) Less(i, j int) bool {
	if d := labels.Compare(la[i].Labels, la[j].Labels); d != 0 {
		return d < 0
	}
	return labels.Compare(la[i].Annotations, la[j].Annotations) < 0
}

func (la labelsAndAnnotations) equal(other labelsAndAnnotations) bool {
	if len(la) != len(other) {
		return false
	}
	for i := range la {
		if !labels.Equal(la[i].Labels, other[i].Labels) || !labels.Equal(la[i].Annotations, other[i].Annotations) {
			return false
		}
	}
	return true
}

func (la labelsAndAnnotations) String() string {
	if len(la) == 0 {
		return "[]"
	}
	var sb strings.Builder
	sb.WriteString("[\n0:" + indentLines("\n"+la[0].String(), "  "))
	for i, l := range la[1:] {
		sb.WriteString(",\n" + strconv.Itoa(i+1) + ":" + indentLines("\n"+l.String(), "  "))
	}
	sb.WriteString("\n]")
	return sb.String()
}

// parsedSample is an expected or returned sample of an expression test.
type parsedSample struct {
	Labels    labels.Labels
	Value     float64
	Histogram string // histogram.FloatHistogram's test expression
}

func (ps *parsedSample) String() string {
	if ps.Histogram != "" {
		return ps.Labels.String() + " " + ps.Histogram
	}
	return ps.Labels.String() + " " + strconv.FormatFloat(ps.Value, 'E', -1, 64)
}

func parsedSamplesString(pss []parsedSample) string {
	if len(pss) == 0 {
		return "nil"
	}
	var sb strings.Builder
	sb.WriteString(pss[0].String())
	for _, ps := range pss[1:] {
		sb.WriteString(", " + ps.String())
	}
	return sb.String()
}

// samplesEqual compares as promtool's cmp.Equal does: a nil and an empty slice are
// different, floats compare with eq.
func samplesEqual(a, b []parsedSample, eq func(x, y float64) bool) bool {
	if (a == nil) != (b == nil) || len(a) != len(b) {
		return false
	}
	for i := range a {
		if !labels.Equal(a[i].Labels, b[i].Labels) || !eq(a[i].Value, b[i].Value) || a[i].Histogram != b[i].Histogram {
			return false
		}
	}
	return true
}
