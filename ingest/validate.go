package ingest

import (
	"bytes"
	"fmt"
	"unicode/utf8"

	"github.com/vigilhq/vigil/sample"
)

// NameValidation is the scheme metric and label names are checked against.
type NameValidation uint8

const (
	// UTF8Validation accepts any non-empty valid UTF-8 name (Prometheus 3's default).
	UTF8Validation NameValidation = iota
	// LegacyValidation accepts metric names matching [a-zA-Z_:][a-zA-Z0-9_:]* and
	// label names matching [a-zA-Z_][a-zA-Z0-9_]*.
	LegacyValidation
)

// ParseNameValidation maps the config value ("utf8" or "legacy") to a NameValidation.
func ParseNameValidation(s string) (NameValidation, error) {
	switch s {
	case "", "utf8":
		return UTF8Validation, nil
	case "legacy":
		return LegacyValidation, nil
	}
	return 0, fmt.Errorf("name validation %q is not utf8 or legacy", s)
}

var metricNameLabel = []byte("__name__")

// legacyChars[c] is 1 for [a-zA-Z_], 2 for [0-9], 4 for ':'.
var legacyChars = func() (t [256]uint8) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = 1
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = 1
	}
	t['_'] = 1
	for c := '0'; c <= '9'; c++ {
		t[c] = 2
	}
	t[':'] = 4
	return t
}()

func isLegacyLabelName(b []byte) bool {
	if len(b) == 0 || legacyChars[b[0]] != 1 {
		return false
	}
	for _, c := range b[1:] {
		if legacyChars[c]&3 == 0 {
			return false
		}
	}
	return true
}

func isLegacyMetricName(b []byte) bool {
	if len(b) == 0 || legacyChars[b[0]]&5 == 0 {
		return false
	}
	for _, c := range b[1:] {
		if legacyChars[c] == 0 {
			return false
		}
	}
	return true
}

// sortLabels sorts ls by name in place with an insertion sort: remote-write senders
// send sorted labels, so the usual cost is one pass and no allocation.
func sortLabels(ls []sample.Label) {
	for i := 1; i < len(ls); i++ {
		if bytes.Compare(ls[i-1].Name, ls[i].Name) <= 0 {
			continue
		}
		for j := i; j > 0 && bytes.Compare(ls[j-1].Name, ls[j].Name) > 0; j-- {
			ls[j-1], ls[j] = ls[j], ls[j-1]
		}
	}
}

// checkLabels validates and normalizes a series' labels in place: it sorts them,
// drops labels with an empty value (Prometheus's meaning of an absent label), and
// checks names, values and limits; ascii (the decoder found every name and value ASCII)
// skips the UTF-8 checks. It returns the normalized labels, or the reason and a message
// builder when the series must be rejected.
func (w *Writer) checkLabels(ls []sample.Label, ascii bool) ([]sample.Label, Reason, func() string) {
	sortLabels(ls)
	// Drop empty values in place.
	n := 0
	for _, l := range ls {
		if len(l.Value) != 0 {
			ls[n] = l
			n++
		}
	}
	ls = ls[:n]
	if len(ls) > w.limits.MaxLabelsPerSeries && w.limits.MaxLabelsPerSeries > 0 {
		return ls, ReasonTooManyLabels, func() string {
			return fmt.Sprintf("series %s has %d labels, more than the limit of %d", seriesString(ls), len(ls), w.limits.MaxLabelsPerSeries)
		}
	}
	hasName := false
	for i := range ls {
		l := &ls[i]
		if len(l.Name) == 0 {
			return ls, ReasonEmptyLabelName, func() string {
				return fmt.Sprintf("series %s has a label with an empty name", seriesString(ls))
			}
		}
		if i > 0 && bytes.Equal(ls[i-1].Name, l.Name) {
			name := string(l.Name)
			return ls, ReasonDuplicateLabel, func() string {
				return fmt.Sprintf("series %s has label %q more than once", seriesString(ls), name)
			}
		}
		if max := w.limits.MaxLabelNameLength; max > 0 && len(l.Name) > max {
			name := l.Name
			return ls, ReasonLabelNameTooLong, func() string {
				return fmt.Sprintf("label name %.64q... is %d bytes long, more than the limit of %d", name, len(name), max)
			}
		}
		if max := w.limits.MaxLabelValueLength; max > 0 && len(l.Value) > max {
			name, value := l.Name, l.Value
			return ls, ReasonLabelValueTooLong, func() string {
				return fmt.Sprintf("value of label %q is %d bytes long, more than the limit of %d", name, len(value), max)
			}
		}
		if !ascii && !utf8.Valid(l.Value) {
			name := l.Name
			return ls, ReasonInvalidUTF8, func() string {
				return fmt.Sprintf("value of label %q is not valid UTF-8", name)
			}
		}
		isName := bytes.Equal(l.Name, metricNameLabel)
		if isName {
			hasName = true
			if w.validation == LegacyValidation && !isLegacyMetricName(l.Value) {
				v := l.Value
				return ls, ReasonInvalidMetricName, func() string {
					return fmt.Sprintf("metric name %q is not valid under the legacy name validation scheme", v)
				}
			}
			continue
		}
		switch w.validation {
		case LegacyValidation:
			if !isLegacyLabelName(l.Name) {
				name := l.Name
				return ls, ReasonInvalidLabelName, func() string {
					return fmt.Sprintf("label name %q of series %s is not valid under the legacy name validation scheme", name, seriesString(ls))
				}
			}
		default:
			if !ascii && !utf8.Valid(l.Name) {
				name := l.Name
				return ls, ReasonInvalidUTF8, func() string {
					return fmt.Sprintf("label name %q is not valid UTF-8", name)
				}
			}
		}
	}
	if !hasName {
		return ls, ReasonMissingMetricName, func() string {
			return fmt.Sprintf("series %s has no metric name (__name__)", seriesString(ls))
		}
	}
	return ls, 0, nil
}

// seriesString prints labels like {__name__="up", job="a"}, cut at 256 bytes; it is only
// used to build error messages.
func seriesString(ls []sample.Label) string {
	var b []byte
	b = append(b, '{')
	for i, l := range ls {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, l.Name...)
		b = append(b, '=')
		b = fmt.Appendf(b, "%q", l.Value)
		if len(b) > 256 {
			b = append(b[:256], "..."...)
			break
		}
	}
	b = append(b, '}')
	if !utf8.Valid(b) {
		return fmt.Sprintf("%q", b)
	}
	return string(b)
}
