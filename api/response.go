// Package api serves Vigil's Prometheus-compatible HTTP API: the query endpoints
// (/api/v1/query, query_range, series, labels, label/<name>/values, status/buildinfo)
// with Prometheus's exact JSON envelope and error types, so that Grafana's Prometheus
// data source and Prometheus clients work unchanged.
//
// Other stages register their own routes (rules, alerts, silences) and answer with
// WriteSuccess and WriteError, or wrap a function with Handler, so that every endpoint
// shares the envelope:
//
//	{"status":"success","data":...,"warnings":[...],"infos":[...]}
//	{"status":"error","errorType":"bad_data","error":"..."}
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/util/annotations"
)

// ErrorType is Prometheus's errorType field; each has its HTTP status (StatusCode).
type ErrorType string

// The error types of Prometheus's HTTP API.
const (
	ErrBadData       ErrorType = "bad_data"       // 400: the request will never succeed
	ErrExec          ErrorType = "execution"      // 422: the query failed while running
	ErrTimeout       ErrorType = "timeout"        // 503: the query ran out of time
	ErrCanceled      ErrorType = "canceled"       // 499: the client went away
	ErrInternal      ErrorType = "internal"       // 500
	ErrUnavailable   ErrorType = "unavailable"    // 503
	ErrNotFound      ErrorType = "not_found"      // 404
	ErrNotAcceptable ErrorType = "not_acceptable" // 406
	ErrCostLimit     ErrorType = "cost_limit"     // 422: over a query cost limit
)

// statusClientClosedConnection is nginx's (and Prometheus's) status for a canceled request.
const statusClientClosedConnection = 499

// StatusCode is the HTTP status Prometheus answers an error of type t with.
func StatusCode(t ErrorType) int {
	switch t {
	case ErrBadData:
		return http.StatusBadRequest
	case ErrExec, ErrCostLimit:
		return http.StatusUnprocessableEntity
	case ErrCanceled:
		return statusClientClosedConnection
	case ErrTimeout, ErrUnavailable:
		return http.StatusServiceUnavailable
	case ErrNotFound:
		return http.StatusNotFound
	case ErrNotAcceptable:
		return http.StatusNotAcceptable
	default:
		return http.StatusInternalServerError
	}
}

// Error is an API error: its type picks the errorType field and the HTTP status.
type Error struct {
	Type ErrorType
	Err  error
}

// Error implements error as "type: message".
func (e *Error) Error() string { return fmt.Sprintf("%s: %v", e.Type, e.Err) }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Errorf makes an *Error of type t.
func Errorf(t ErrorType, format string, args ...any) *Error {
	return &Error{Type: t, Err: fmt.Errorf(format, args...)}
}

// BadParam is Prometheus's error for an invalid request parameter.
func BadParam(err error, name string) *Error {
	return &Error{Type: ErrBadData, Err: fmt.Errorf("invalid parameter %q: %w", name, err)}
}

// Classify maps an error from the query engine or the storage to its API error, as
// Prometheus does: an *Error keeps its type; timeouts, cancellations, cost limits and
// storage failures have theirs; anything else is an execution error.
func Classify(err error) *Error {
	if err == nil {
		return nil
	}
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	var (
		eqc   promql.ErrQueryCanceled
		eqt   promql.ErrQueryTimeout
		es    promql.ErrStorage
		etms  promql.ErrTooManySeries
		etmsr promql.ErrTooManySamplesRead
	)
	switch {
	case errors.As(err, &eqc):
		return &Error{ErrCanceled, err}
	case errors.As(err, &eqt):
		return &Error{ErrTimeout, err}
	case errors.As(err, &etms), errors.As(err, &etmsr):
		return &Error{ErrCostLimit, err}
	case errors.As(err, &es):
		return &Error{ErrInternal, err}
	case errors.Is(err, context.Canceled):
		return &Error{ErrCanceled, err}
	}
	return &Error{ErrExec, err}
}

// response is the envelope; field order and omissions are Prometheus's.
type response struct {
	Status    string   `json:"status"`
	Data      any      `json:"data,omitempty"`
	ErrorType string   `json:"errorType,omitempty"`
	Error     string   `json:"error,omitempty"`
	Warnings  []string `json:"warnings,omitempty"`
	Infos     []string `json:"infos,omitempty"`
}

// WriteSuccess writes {"status":"success","data":data} with status 200; warnings and
// infos are added when not empty. data is encoded with encoding/json, except query
// results (*QueryData), which take a faster path with the same output.
func WriteSuccess(w http.ResponseWriter, data any, warnings, infos []string) {
	var b []byte
	switch d := data.(type) {
	case *closingData:
		b = appendQueryResponse(make([]byte, 0, 4096), &d.QueryData, warnings, infos)
		d.close()
	case *QueryData:
		b = appendQueryResponse(make([]byte, 0, 4096), d, warnings, infos)
	default:
		var err error
		b, err = json.Marshal(&response{Status: "success", Data: data, Warnings: warnings, Infos: infos})
		if err != nil {
			WriteError(w, &Error{ErrInternal, fmt.Errorf("encode response: %w", err)}, nil)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

// WriteError writes {"status":"error","errorType":...,"error":...} with the status of
// err's type (Classify picks the type of a plain error). data, if not nil, is added as
// Prometheus does for some errors.
func WriteError(w http.ResponseWriter, err error, data any) {
	ae := Classify(err)
	if ae == nil {
		ae = &Error{ErrInternal, errors.New("unknown error")}
	}
	b, merr := json.Marshal(&response{Status: "error", ErrorType: string(ae.Type), Error: ae.Err.Error(), Data: data})
	if merr != nil {
		http.Error(w, merr.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(StatusCode(ae.Type))
	w.Write(b)
}

// Func is an API endpoint: it returns the data of a success, or an error (an *Error
// or one Classify maps), and the annotations to report as warnings and infos.
type Func func(r *http.Request) (data any, warnings annotations.Annotations, err error)

// Handler turns f into an http.Handler that writes Prometheus's envelope, compressed
// (gzip or deflate) when the client accepts it, as Prometheus does (at a faster level:
// see compressHandler). Form values (URL
// query and form-encoded POST bodies) are parsed before f runs.
func Handler(f Func) http.Handler {
	return compressHandler{http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			WriteError(w, Errorf(ErrBadData, "error parsing form values: %v", err), nil)
			return
		}
		data, annos, err := f(r)
		if err != nil {
			WriteError(w, err, data)
			return
		}
		warn, info := annos.AsStrings(r.FormValue("query"), 10, 10)
		WriteSuccess(w, data, warn, info)
	})}
}
