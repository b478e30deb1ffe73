package ingest

import (
	"fmt"
	"strings"
)

// Reason is why input was rejected. Its String is the value of the reason label of
// vigil_ingest_rejected_total.
type Reason uint8

// Rejection reasons. Series-level reasons reject one series and let the others of the
// request through; request-level reasons reject the whole request or message.
const (
	// Series-level.
	ReasonMissingMetricName Reason = iota
	ReasonInvalidMetricName
	ReasonInvalidLabelName
	ReasonEmptyLabelName
	ReasonDuplicateLabel
	ReasonInvalidUTF8
	ReasonTooManyLabels
	ReasonLabelNameTooLong
	ReasonLabelValueTooLong
	ReasonTooFarInFuture
	ReasonTooFarInPast
	ReasonActiveSeriesLimit
	ReasonInvalidHistogram
	// Request-level.
	ReasonDecode
	ReasonBodyTooLarge
	ReasonTooManySeries
	ReasonUnsupportedMediaType
	ReasonOverloaded
	ReasonUnauthorized
	numReasons
)

var reasonNames = [numReasons]string{
	ReasonMissingMetricName:    "missing_metric_name",
	ReasonInvalidMetricName:    "invalid_metric_name",
	ReasonInvalidLabelName:     "invalid_label_name",
	ReasonEmptyLabelName:       "empty_label_name",
	ReasonDuplicateLabel:       "duplicate_label",
	ReasonInvalidUTF8:          "invalid_utf8",
	ReasonTooManyLabels:        "too_many_labels",
	ReasonLabelNameTooLong:     "label_name_too_long",
	ReasonLabelValueTooLong:    "label_value_too_long",
	ReasonTooFarInFuture:       "too_far_in_future",
	ReasonTooFarInPast:         "too_far_in_past",
	ReasonActiveSeriesLimit:    "active_series_limit",
	ReasonInvalidHistogram:     "invalid_histogram",
	ReasonDecode:               "decode",
	ReasonBodyTooLarge:         "body_too_large",
	ReasonTooManySeries:        "too_many_series",
	ReasonUnsupportedMediaType: "unsupported_media_type",
	ReasonOverloaded:           "overloaded",
	ReasonUnauthorized:         "unauthorized",
}

// String is the reason label value, e.g. "duplicate_label".
func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", r)
}

// Rejections counts the series of one Write that were rejected, by reason, with the
// first message seen for each reason. The zero value is empty.
type Rejections struct {
	Count [numReasons]int
	First [numReasons]string
}

// Total is the number of rejected series.
func (r *Rejections) Total() int {
	n := 0
	for _, c := range r.Count {
		n += c
	}
	return n
}

func (r *Rejections) add(reason Reason, msg func() string) {
	if r.Count[reason] == 0 {
		r.First[reason] = msg()
	}
	r.Count[reason]++
}

// String summarizes the rejections for an HTTP answer or a log line, e.g.
// `2 series rejected: 1 invalid_label_name (first: ...), 1 duplicate_label (first: ...)`.
func (r *Rejections) String() string {
	total := r.Total()
	if total == 0 {
		return ""
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d series rejected:", total)
	sep := " "
	for i, c := range r.Count {
		if c == 0 {
			continue
		}
		fmt.Fprintf(&sb, "%s%d %s (first: %s)", sep, c, Reason(i), r.First[i])
		sep = "; "
	}
	return sb.String()
}

// RequestError is a rejection of a whole request or message: Reason says why, Err
// gives the details.
type RequestError struct {
	Reason Reason
	Err    error
}

// Error is "<reason>: <details>".
func (e *RequestError) Error() string { return e.Reason.String() + ": " + e.Err.Error() }

// Unwrap returns the details.
func (e *RequestError) Unwrap() error { return e.Err }

// Reject builds a RequestError.
func Reject(reason Reason, format string, args ...any) *RequestError {
	return &RequestError{Reason: reason, Err: fmt.Errorf(format, args...)}
}
