package api

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
)

// QueryData is the data of a query or query_range success: {"resultType":...,"result":...}.
type QueryData struct {
	ResultType parser.ValueType `json:"resultType"`
	Result     parser.Value     `json:"result"`
}

// appendQueryResponse writes the whole success envelope of a query result, byte for
// byte as Prometheus's JSON codec does (timestamps as seconds with up to three
// decimals, values as strings, labels as objects).
func appendQueryResponse(b []byte, qd *QueryData, warnings, infos []string) []byte {
	b = append(b, `{"status":"success","data":{"resultType":`...)
	b = appendString(b, string(qd.ResultType))
	b = append(b, `,"result":`...)
	b = appendValue(b, qd.Result)
	b = append(b, '}')
	b = appendStrings(b, "warnings", warnings)
	b = appendStrings(b, "infos", infos)
	return append(b, '}')
}

func appendStrings(b []byte, key string, ss []string) []byte {
	if len(ss) == 0 {
		return b
	}
	b = append(b, `,"`...)
	b = append(b, key...)
	b = append(b, `":[`...)
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

func appendValue(b []byte, v parser.Value) []byte {
	switch v := v.(type) {
	case promql.Matrix:
		if v == nil {
			return append(b, "null"...)
		}
		b = append(b, '[')
		for i, s := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"metric":`...)
			b = appendLabels(b, s.Metric)
			if len(s.Floats) > 0 {
				b = append(b, `,"values":[`...)
				for j, p := range s.Floats {
					if j > 0 {
						b = append(b, ',')
					}
					b = appendFPoint(b, p.T, p.F)
				}
				b = append(b, ']')
			}
			if len(s.Histograms) > 0 {
				b = append(b, `,"histograms":[`...)
				for j, p := range s.Histograms {
					if j > 0 {
						b = append(b, ',')
					}
					b = appendHPoint(b, p)
				}
				b = append(b, ']')
			}
			b = append(b, '}')
		}
		return append(b, ']')
	case promql.Vector:
		if v == nil {
			return append(b, "null"...)
		}
		b = append(b, '[')
		for i, s := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"metric":`...)
			b = appendLabels(b, s.Metric)
			if s.H == nil {
				b = append(b, `,"value":`...)
				b = appendFPoint(b, s.T, s.F)
			} else {
				b = append(b, `,"histogram":`...)
				b = appendHPoint(b, promql.HPoint{T: s.T, H: s.H})
			}
			b = append(b, '}')
		}
		return append(b, ']')
	case promql.Scalar:
		return appendFPoint(b, v.T, v.V)
	case promql.String:
		b = append(b, '[')
		b = appendTimestamp(b, v.T)
		b = append(b, ',')
		b = appendString(b, v.V)
		return append(b, ']')
	default:
		j, err := json.Marshal(v)
		if err != nil {
			return append(b, "null"...)
		}
		return append(b, j...)
	}
}

func appendFPoint(b []byte, t int64, f float64) []byte {
	b = append(b, '[')
	b = appendTimestamp(b, t)
	b = append(b, `,"`...)
	b = strconv.AppendFloat(b, f, 'f', -1, 64)
	return append(b, `"]`...)
}

func appendHPoint(b []byte, p promql.HPoint) []byte {
	j, err := p.MarshalJSON()
	if err != nil {
		return append(b, "null"...)
	}
	// HPoint.MarshalJSON writes the timestamp as a float; rewrite it as Prometheus's
	// codec does (the histogram object follows the first comma).
	for i, c := range j {
		if c == ',' {
			b = append(b, '[')
			b = appendTimestamp(b, p.T)
			return append(b, j[i:]...)
		}
	}
	return append(b, j...)
}

// appendTimestamp writes milliseconds t as seconds, with the fraction's digits as
// Prometheus's jsonutil.MarshalTimestamp writes them.
func appendTimestamp(b []byte, t int64) []byte {
	if t < 0 {
		b = append(b, '-')
		t = -t
	}
	b = strconv.AppendInt(b, t/1000, 10)
	if frac := t % 1000; frac != 0 {
		b = append(b, '.')
		if frac < 100 {
			b = append(b, '0')
		}
		if frac < 10 {
			b = append(b, '0')
		}
		b = strconv.AppendInt(b, frac, 10)
	}
	return b
}

func appendLabels(b []byte, ls labels.Labels) []byte {
	b = append(b, '{')
	first := true
	ls.Range(func(l labels.Label) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendString(b, l.Name)
		b = append(b, ':')
		b = appendString(b, l.Value)
	})
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string the way encoding/json does (HTML-safe).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
