package api

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/timestamp"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/annotations"
)

// BuildInfo is the data of /api/v1/status/buildinfo (Prometheus's field names).
type BuildInfo struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	Branch    string `json:"branch"`
	BuildUser string `json:"buildUser"`
	BuildDate string `json:"buildDate"`
	GoVersion string `json:"goVersion"`
}

// Options configure the query API.
type Options struct {
	// Queryable is read by every endpoint.
	Queryable storage.Queryable
	// Engine runs PromQL over Queryable.
	Engine promql.QueryEngine
	// BuildInfo answers /api/v1/status/buildinfo; GoVersion defaults to the runtime's.
	BuildInfo BuildInfo
	// Now is the clock for queries without a time (default time.Now).
	Now func() time.Time
}

// API is the query part of the Prometheus HTTP API. It holds no state of its own and
// is safe for concurrent use.
type API struct {
	opts   Options
	parser parser.Parser
}

// New returns the API over opts.Queryable and opts.Engine.
func New(opts Options) *API {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.BuildInfo.GoVersion == "" {
		opts.BuildInfo.GoVersion = runtime.Version()
	}
	return &API{opts: opts, parser: parser.NewParser(parser.Options{})}
}

// Register adds the query endpoints to mux, for GET and POST (form-encoded) alike:
// /api/v1/query, /api/v1/query_range, /api/v1/series, /api/v1/labels,
// /api/v1/label/{name}/values and /api/v1/status/buildinfo; and, because Grafana's
// Prometheus data source asks for them, /api/v1/metadata and /api/v1/query_exemplars,
// answered as Prometheus answers with no metric metadata and no exemplar storage, and
// /api/v1/format_query (the query editor's "format query").
func (a *API) Register(mux *http.ServeMux) {
	for path, f := range map[string]Func{
		"/api/v1/query":               a.query,
		"/api/v1/query_range":         a.queryRange,
		"/api/v1/series":              a.series,
		"/api/v1/labels":              a.labelNames,
		"/api/v1/label/{name}/values": a.labelValues,
		"/api/v1/status/buildinfo":    a.buildInfo,
		"/api/v1/metadata":            a.metadata,
		"/api/v1/query_exemplars":     a.queryExemplars,
		"/api/v1/format_query":        a.formatQuery,
	} {
		h := Handler(f)
		mux.Handle("GET "+path, h)
		mux.Handle("POST "+path, h)
	}
}

// The default bounds of optional time ranges, as Prometheus has them.
var (
	minTime = time.Unix(math.MinInt64/1000+62135596801, 0).UTC()
	maxTime = time.Unix(math.MaxInt64/1000-62135596801, 999999999).UTC()

	minTimeFormatted = minTime.Format(time.RFC3339Nano)
	maxTimeFormatted = maxTime.Format(time.RFC3339Nano)
)

func (a *API) query(r *http.Request) (any, annotations.Annotations, error) {
	limit, err := parseLimit(r.FormValue("limit"))
	if err != nil {
		return nil, nil, BadParam(err, "limit")
	}
	ts, err := parseTimeParam(r, "time", a.opts.Now())
	if err != nil {
		return nil, nil, BadParam(err, "time")
	}
	ctx, cancel, err := a.withTimeout(r)
	if err != nil {
		return nil, nil, err
	}
	defer cancel()
	opts, err := queryOpts(r)
	if err != nil {
		return nil, nil, err
	}
	q, err := a.opts.Engine.NewInstantQuery(ctx, a.opts.Queryable, opts, r.FormValue("query"), ts)
	if err != nil {
		return nil, nil, constructionError(err)
	}
	return runQuery(ctx, q, limit)
}

func (a *API) queryRange(r *http.Request) (any, annotations.Annotations, error) {
	limit, err := parseLimit(r.FormValue("limit"))
	if err != nil {
		return nil, nil, BadParam(err, "limit")
	}
	start, err := ParseTime(r.FormValue("start"))
	if err != nil {
		return nil, nil, BadParam(err, "start")
	}
	end, err := ParseTime(r.FormValue("end"))
	if err != nil {
		return nil, nil, BadParam(err, "end")
	}
	if end.Before(start) {
		return nil, nil, BadParam(errors.New("end timestamp must not be before start time"), "end")
	}
	step, err := ParseDuration(r.FormValue("step"))
	if err != nil {
		return nil, nil, BadParam(err, "step")
	}
	if step <= 0 {
		return nil, nil, BadParam(errors.New("zero or negative query resolution step widths are not accepted. Try a positive integer"), "step")
	}
	// For safety, limit the number of returned points per timeseries, as Prometheus does.
	if end.Sub(start)/step > 11000 {
		return nil, nil, Errorf(ErrBadData, "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)")
	}
	ctx, cancel, err := a.withTimeout(r)
	if err != nil {
		return nil, nil, err
	}
	defer cancel()
	opts, err := queryOpts(r)
	if err != nil {
		return nil, nil, err
	}
	q, err := a.opts.Engine.NewRangeQuery(ctx, a.opts.Queryable, opts, r.FormValue("query"), start, end, step)
	if err != nil {
		return nil, nil, constructionError(err)
	}
	return runQuery(ctx, q, limit)
}

// runQuery executes q. On success q stays open until WriteSuccess has encoded the
// result (closingData); on error it is closed here.
func runQuery(ctx context.Context, q promql.Query, limit int) (any, annotations.Annotations, error) {
	res := q.Exec(ctx)
	if res.Err != nil {
		q.Close()
		return nil, res.Warnings, Classify(res.Err)
	}
	warnings := res.Warnings
	if limit > 0 {
		truncated := false
		switch v := res.Value.(type) {
		case promql.Matrix:
			if len(v) > limit {
				res.Value, truncated = v[:limit], true
			}
		case promql.Vector:
			if len(v) > limit {
				res.Value, truncated = v[:limit], true
			}
		}
		if truncated {
			warnings = warnings.Add(errors.New("results truncated due to limit"))
		}
	}
	return &closingData{QueryData: QueryData{ResultType: res.Value.Type(), Result: res.Value}, close: q.Close}, warnings, nil
}

// closingData is a query result whose query is closed once the result is written
// (the engine pools the result's memory).
type closingData struct {
	QueryData
	close func()
}

func (a *API) withTimeout(r *http.Request) (context.Context, context.CancelFunc, error) {
	ctx := r.Context()
	v := r.FormValue("timeout")
	if v == "" {
		return ctx, func() {}, nil
	}
	timeout, err := ParseDuration(v)
	if err != nil {
		return nil, nil, BadParam(err, "timeout")
	}
	if timeout <= 0 {
		return nil, nil, BadParam(fmt.Errorf("timeout must be positive, got %s", timeout), "timeout")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	return ctx, cancel, nil
}

func queryOpts(r *http.Request) (promql.QueryOpts, error) {
	var lookback time.Duration
	if s := r.FormValue("lookback_delta"); s != "" {
		d, err := ParseDuration(s)
		if err != nil {
			return nil, Errorf(ErrBadData, "error parsing lookback delta duration: %v", err)
		}
		lookback = d
	}
	return promql.NewPrometheusQueryOpts(r.FormValue("stats") == "all", lookback, nil), nil
}

// constructionError maps an error building a query as Prometheus does: a timeout or
// cancellation while waiting for a slot keeps its type, anything else is a bad query.
func constructionError(err error) error {
	var eqt promql.ErrQueryTimeout
	var eqc promql.ErrQueryCanceled
	if errors.As(err, &eqt) || errors.As(err, &eqc) {
		return Classify(err)
	}
	return BadParam(err, "query")
}

func (a *API) series(r *http.Request) (any, annotations.Annotations, error) {
	if len(r.Form["match[]"]) == 0 {
		return nil, nil, Errorf(ErrBadData, "no match[] parameter provided")
	}
	limit, err := parseLimit(r.FormValue("limit"))
	if err != nil {
		return nil, nil, BadParam(err, "limit")
	}
	start, end, err := parseRange(r)
	if err != nil {
		return nil, nil, err
	}
	sets, err := a.parseMatchers(r.Form["match[]"])
	if err != nil {
		return nil, nil, BadParam(err, "match[]")
	}
	q, err := a.opts.Queryable.Querier(timestamp.FromTime(start), timestamp.FromTime(end))
	if err != nil {
		return nil, nil, Classify(err)
	}
	defer q.Close()
	ctx := r.Context()
	hints := &storage.SelectHints{
		Start: timestamp.FromTime(start),
		End:   timestamp.FromTime(end),
		Func:  "series", // no samples needed
		Limit: hintLimit(limit),
	}
	var set storage.SeriesSet
	if len(sets) > 1 {
		var ss []storage.SeriesSet
		for _, ms := range sets {
			ss = append(ss, q.Select(ctx, true, hints, ms...))
		}
		set = storage.NewMergeSeriesSet(ss, 0, storage.ChainedSeriesMerge)
	} else {
		set = q.Select(ctx, false, hints, sets[0]...)
	}
	out := []labels.Labels{}
	warnings := set.Warnings()
	for i := 1; set.Next(); i++ {
		if i%128 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, warnings, Classify(err)
			}
		}
		// Copy: the labels may point into memory the querier frees on Close.
		out = append(out, set.At().Labels().Copy())
		if limit > 0 && len(out) > limit {
			out = out[:limit]
			warnings.Add(errors.New("results truncated due to limit"))
			return out, warnings, nil
		}
	}
	if err := set.Err(); err != nil {
		return nil, warnings, Classify(err)
	}
	return out, warnings, nil
}

func (a *API) labelNames(r *http.Request) (any, annotations.Annotations, error) {
	limit, err := parseLimit(r.FormValue("limit"))
	if err != nil {
		return nil, nil, BadParam(err, "limit")
	}
	start, end, err := parseRange(r)
	if err != nil {
		return nil, nil, err
	}
	sets, err := a.parseMatchers(r.Form["match[]"])
	if err != nil {
		return nil, nil, &Error{ErrBadData, err}
	}
	q, err := a.opts.Queryable.Querier(timestamp.FromTime(start), timestamp.FromTime(end))
	if err != nil {
		return nil, nil, Classify(err)
	}
	defer q.Close()
	hints := &storage.LabelHints{Limit: hintLimit(limit)}
	var names []string
	var warnings annotations.Annotations
	if len(sets) > 1 {
		seen := map[string]struct{}{}
		for _, ms := range sets {
			vals, w, err := q.LabelNames(r.Context(), hints, ms...)
			if err != nil {
				return nil, warnings, Classify(err)
			}
			warnings.Merge(w)
			for _, v := range vals {
				seen[v] = struct{}{}
			}
		}
		names = make([]string, 0, len(seen))
		for k := range seen {
			names = append(names, k)
		}
		slices.Sort(names)
	} else {
		var ms []*labels.Matcher
		if len(sets) == 1 {
			ms = sets[0]
		}
		names, warnings, err = q.LabelNames(r.Context(), hints, ms...)
		if err != nil {
			return nil, warnings, &Error{ErrExec, err}
		}
	}
	if names == nil {
		names = []string{}
	}
	if limit > 0 && len(names) > limit {
		names = names[:limit]
		warnings = warnings.Add(errors.New("results truncated due to limit"))
	}
	return cloneStrings(names), warnings, nil
}

func (a *API) labelValues(r *http.Request) (any, annotations.Annotations, error) {
	name := r.PathValue("name")
	if strings.HasPrefix(name, "U__") {
		name = model.UnescapeName(name, model.ValueEncodingEscaping)
	}
	if !model.UTF8Validation.IsValidLabelName(name) {
		return nil, nil, Errorf(ErrBadData, "invalid label name: %q", name)
	}
	limit, err := parseLimit(r.FormValue("limit"))
	if err != nil {
		return nil, nil, BadParam(err, "limit")
	}
	start, end, err := parseRange(r)
	if err != nil {
		return nil, nil, err
	}
	sets, err := a.parseMatchers(r.Form["match[]"])
	if err != nil {
		return nil, nil, &Error{ErrBadData, err}
	}
	q, err := a.opts.Queryable.Querier(timestamp.FromTime(start), timestamp.FromTime(end))
	if err != nil {
		return nil, nil, &Error{ErrExec, err}
	}
	defer q.Close()
	ctx := r.Context()
	hints := &storage.LabelHints{Limit: hintLimit(limit)}
	var vals []string
	var warnings annotations.Annotations
	if len(sets) > 1 {
		seen := map[string]struct{}{}
		for _, ms := range sets {
			vs, w, err := q.LabelValues(ctx, name, hints, ms...)
			if err != nil {
				return nil, warnings, &Error{ErrExec, err}
			}
			warnings.Merge(w)
			for _, v := range vs {
				seen[v] = struct{}{}
			}
		}
		vals = make([]string, 0, len(seen))
		for v := range seen {
			vals = append(vals, v)
		}
	} else {
		var ms []*labels.Matcher
		if len(sets) == 1 {
			ms = sets[0]
		}
		vals, warnings, err = q.LabelValues(ctx, name, hints, ms...)
		if err != nil {
			return nil, warnings, &Error{ErrExec, err}
		}
		if vals == nil {
			vals = []string{}
		}
	}
	slices.Sort(vals)
	if limit > 0 && len(vals) > limit {
		vals = vals[:limit]
		warnings = warnings.Add(errors.New("results truncated due to limit"))
	}
	return cloneStrings(vals), warnings, nil
}

func (a *API) metadata(r *http.Request) (any, annotations.Annotations, error) {
	for _, p := range []string{"limit", "limit_per_metric"} {
		if v := r.FormValue(p); v != "" {
			if _, err := strconv.Atoi(v); err != nil {
				return nil, nil, Errorf(ErrBadData, "%s must be a number", p)
			}
		}
	}
	return map[string]any{}, nil, nil
}

func (a *API) queryExemplars(r *http.Request) (any, annotations.Annotations, error) {
	start, end, err := parseRange(r)
	if err != nil {
		return nil, nil, err
	}
	if end.Before(start) {
		return nil, nil, Errorf(ErrBadData, "end timestamp must not be before start timestamp")
	}
	expr, err := a.parser.ParseExpr(r.FormValue("query"))
	if err != nil {
		return nil, nil, &Error{ErrBadData, err}
	}
	if len(parser.ExtractSelectors(expr)) == 0 {
		return nil, nil, nil
	}
	return []any{}, nil, nil
}

func (a *API) formatQuery(r *http.Request) (any, annotations.Annotations, error) {
	expr, err := a.parser.ParseExpr(r.FormValue("query"))
	if err != nil {
		return nil, nil, BadParam(err, "query")
	}
	return expr.Pretty(0), nil, nil
}

func (a *API) buildInfo(*http.Request) (any, annotations.Annotations, error) {
	return a.opts.BuildInfo, nil, nil
}

// parseMatchers parses match[] selectors; each must have a matcher that does not
// match the empty string, as Prometheus requires.
func (a *API) parseMatchers(ms []string) ([][]*labels.Matcher, error) {
	sets, err := a.parser.ParseMetricSelectors(ms)
	if err != nil {
		return nil, err
	}
outer:
	for _, set := range sets {
		for _, m := range set {
			if m != nil && !m.Matches("") {
				continue outer
			}
		}
		return nil, errors.New("match[] must contain at least one non-empty matcher")
	}
	return sets, nil
}

func parseRange(r *http.Request) (time.Time, time.Time, error) {
	start, err := parseTimeParam(r, "start", minTime)
	if err != nil {
		return time.Time{}, time.Time{}, BadParam(err, "start")
	}
	end, err := parseTimeParam(r, "end", maxTime)
	if err != nil {
		return time.Time{}, time.Time{}, BadParam(err, "end")
	}
	return start, end, nil
}

func parseTimeParam(r *http.Request, name string, def time.Time) (time.Time, error) {
	v := r.FormValue(name)
	if v == "" {
		return def, nil
	}
	t, err := ParseTime(v)
	if err != nil {
		return time.Time{}, fmt.Errorf("invalid time value for '%s': %w", name, err)
	}
	return t, nil
}

// ParseTime parses a Prometheus API time: Unix seconds with an optional fraction, or
// RFC 3339.
func ParseTime(s string) (time.Time, error) {
	if t, err := strconv.ParseFloat(s, 64); err == nil {
		s, ns := math.Modf(t)
		ns = math.Round(ns*1000) / 1000
		return time.Unix(int64(s), int64(ns*float64(time.Second))).UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	switch s {
	case minTimeFormatted:
		return minTime, nil
	case maxTimeFormatted:
		return maxTime, nil
	}
	return time.Time{}, fmt.Errorf("cannot parse %q to a valid timestamp", s)
}

// ParseDuration parses a Prometheus API duration: seconds as a float, or a PromQL
// duration such as 5m or 1h30m.
func ParseDuration(s string) (time.Duration, error) {
	if d, err := strconv.ParseFloat(s, 64); err == nil {
		ts := d * float64(time.Second)
		if math.IsNaN(ts) || ts >= float64(math.MaxInt64) || ts < float64(math.MinInt64) {
			return 0, fmt.Errorf("cannot parse %q to a valid duration. It overflows int64", s)
		}
		return time.Duration(ts), nil
	}
	if d, err := model.ParseDuration(s); err == nil {
		return time.Duration(d), nil
	}
	return 0, fmt.Errorf("cannot parse %q to a valid duration", s)
}

func parseLimit(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, errors.New("limit must be non-negative")
	}
	return n, nil
}

// cloneStrings deep-copies ss: label names and values may point into block files
// that the querier stops protecting when it is closed, before the answer is written.
func cloneStrings(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.Clone(s)
	}
	return out
}

// hintLimit asks the storage for one more than limit, so truncation can be reported.
func hintLimit(limit int) int {
	if limit > 0 && limit < math.MaxInt {
		return limit + 1
	}
	return limit
}
