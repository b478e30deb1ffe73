package ingest

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// The Influx line protocol, as Telegraf's NATS output sends it (data_format = "influx"):
//
//	measurement[,tag=value...] field=value[,field=value...] [timestamp-ns]
//
// Each numeric field becomes one series named measurement_field (just measurement when
// the field is called "value", as Telegraf's Prometheus output names them), labelled
// with the tags. Integers (1i), unsigned (1u), floats and booleans (1/0) are numbers;
// string fields are skipped. The timestamp is in nanoseconds and defaults to the time
// of receipt. Escapes: `\,` `\ ` in measurements; `\,` `\=` `\ ` in tag and field keys
// and tag values; `\"` `\\` in string field values.

// InfluxDecoder decodes line-protocol payloads into a Batch. It owns the memory of
// names it has to build (measurement_field, unescaped text), which stays valid until
// Reset: call Reset only after the Write of the batch returned. Not safe for concurrent use.
type InfluxDecoder struct {
	chunks [][]byte
	cur    []byte
}

// Reset forgets every name built since the last Reset, keeping the memory.
func (d *InfluxDecoder) Reset() {
	if d.cur != nil {
		d.chunks = append(d.chunks, d.cur[:0])
	}
	d.cur = nil
}

// alloc returns n bytes that stay valid until Reset (never moved by a later alloc).
func (d *InfluxDecoder) alloc(n int) []byte {
	if cap(d.cur)-len(d.cur) < n {
		if len(d.chunks) > 0 && cap(d.chunks[len(d.chunks)-1]) >= n && d.cur == nil {
			d.cur = d.chunks[len(d.chunks)-1][:0]
			d.chunks = d.chunks[:len(d.chunks)-1]
		} else {
			size := 64 << 10
			if n > size {
				size = n
			}
			d.cur = make([]byte, 0, size)
		}
	}
	s := d.cur[len(d.cur) : len(d.cur)+n : len(d.cur)+n]
	d.cur = d.cur[:len(d.cur)+n]
	return s
}

// LineError reports the lines of a payload that did not parse; the others were decoded.
type LineError struct {
	Bad   int    // number of bad lines
	Line  int    // 1-based number of the first bad line
	Err   error  // what was wrong with it
	Input string // the first bad line, cut at 256 bytes
}

// Error summarizes the bad lines.
func (e *LineError) Error() string {
	return fmt.Sprintf("%d bad line(s); line %d: %v: %q", e.Bad, e.Line, e.Err, e.Input)
}

// Decode decodes payload into b, each series with b.Source set to src; nowMs stamps
// lines without a timestamp. Good lines are decoded even when others are bad; the bad
// ones are reported in a *LineError.
func (d *InfluxDecoder) Decode(b *Batch, payload []byte, nowMs int64, src int32) error {
	var lerr *LineError
	lineNo := 0
	for len(payload) > 0 {
		var line []byte
		if i := bytes.IndexByte(payload, '\n'); i >= 0 {
			line, payload = payload[:i], payload[i+1:]
		} else {
			line, payload = payload, nil
		}
		lineNo++
		line = bytes.TrimRight(line, "\r")
		line = bytes.TrimLeft(line, " \t")
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		n0 := len(b.Series)
		if err := d.decodeLine(b, line, nowMs, src); err != nil {
			// Undo the series of the bad line.
			b.DropSeries()
			b.truncate(n0)
			if lerr == nil {
				in := line
				if len(in) > 256 {
					in = in[:256]
				}
				lerr = &LineError{Line: lineNo, Err: err, Input: string(in)}
			}
			lerr.Bad++
		}
	}
	if lerr != nil {
		return lerr
	}
	return nil
}

// scan returns the index of the first unescaped byte of stops in s from i, or len(s).
func scan(s []byte, i int, stops string) int {
	for ; i < len(s); i++ {
		c := s[i]
		if c == '\\' && i+1 < len(s) {
			i++
			continue
		}
		if strings.IndexByte(stops, c) >= 0 {
			return i
		}
	}
	return i
}

// unescape drops the backslash of escaped bytes, copying only when there is one.
func (d *InfluxDecoder) unescape(s []byte) []byte {
	if bytes.IndexByte(s, '\\') < 0 {
		return s
	}
	out := d.alloc(len(s))[:0]
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			switch s[i+1] {
			case ',', ' ', '=', '"', '\\':
				i++
			}
		}
		out = append(out, s[i])
	}
	return out
}

func (d *InfluxDecoder) decodeLine(b *Batch, line []byte, nowMs int64, src int32) error {
	i := scan(line, 0, ", ")
	meas := d.unescape(line[:i])
	if len(meas) == 0 {
		return fmt.Errorf("missing measurement")
	}
	// Tags.
	type kv struct{ k, v []byte }
	var tagsBuf [16]kv
	tags := tagsBuf[:0]
	for i < len(line) && line[i] == ',' {
		j := scan(line, i+1, ", =")
		if j >= len(line) || line[j] != '=' {
			return fmt.Errorf("tag without '=' after %q", line[i+1:j])
		}
		k := line[i+1 : j]
		e := scan(line, j+1, ", =")
		if e < len(line) && line[e] == '=' {
			return fmt.Errorf("tag value with an unescaped '='")
		}
		v := line[j+1 : e]
		if len(k) == 0 || len(v) == 0 {
			return fmt.Errorf("empty tag key or value")
		}
		tags = append(tags, kv{d.unescape(k), d.unescape(v)})
		i = e
	}
	if i >= len(line) || line[i] != ' ' {
		return fmt.Errorf("missing fields")
	}
	for i < len(line) && line[i] == ' ' {
		i++
	}
	// Fields: find their end (an unescaped space outside quotes).
	fs := i
	inQuote := false
	for ; i < len(line); i++ {
		c := line[i]
		if c == '\\' && i+1 < len(line) {
			i++
			continue
		}
		if c == '"' {
			inQuote = !inQuote
		}
		if c == ' ' && !inQuote {
			break
		}
	}
	if inQuote {
		return fmt.Errorf("unterminated string field")
	}
	fields := line[fs:i]
	t := nowMs
	if rest := bytes.TrimSpace(line[i:]); len(rest) > 0 {
		ns, err := strconv.ParseInt(string(rest), 10, 64)
		if err != nil {
			return fmt.Errorf("bad timestamp %q", rest)
		}
		t = ns / 1e6
	}
	if len(fields) == 0 {
		return fmt.Errorf("missing fields")
	}
	for len(fields) > 0 {
		// One field: key=value up to an unescaped comma outside quotes.
		eq := scan(fields, 0, "=")
		if eq >= len(fields) || eq == 0 {
			return fmt.Errorf("field without key=value in %q", fields)
		}
		key := d.unescape(fields[:eq])
		j := eq + 1
		if j < len(fields) && fields[j] == '"' {
			j++
			for ; j < len(fields) && fields[j] != '"'; j++ {
				if fields[j] == '\\' {
					j++
				}
			}
			if j >= len(fields) {
				return fmt.Errorf("unterminated string field %q", key)
			}
			j++ // past the closing quote; string fields are not samples
			if j < len(fields) && fields[j] != ',' {
				return fmt.Errorf("junk after string field %q", key)
			}
		} else {
			end := scan(fields, j, ",")
			val, err := parseInfluxNumber(fields[j:end])
			if err != nil {
				return fmt.Errorf("field %q: %w", key, err)
			}
			j = end
			b.BeginSeries()
			name := meas
			if !bytes.Equal(key, []byte("value")) {
				name = d.alloc(len(meas) + 1 + len(key))
				copy(name, meas)
				name[len(meas)] = '_'
				copy(name[len(meas)+1:], key)
			}
			b.AddLabel(metricNameLabel, name)
			for _, tg := range tags {
				b.AddLabel(tg.k, tg.v)
			}
			b.AddSample(t, val)
			b.EndSeries()
			b.Source = append(b.Source, src)
		}
		if j < len(fields) && fields[j] == ',' {
			j++
		}
		fields = fields[j:]
	}
	return nil
}

func parseInfluxNumber(s []byte) (float64, error) {
	if len(s) == 0 {
		return 0, fmt.Errorf("empty value")
	}
	switch string(s) {
	case "t", "T", "true", "True", "TRUE":
		return 1, nil
	case "f", "F", "false", "False", "FALSE":
		return 0, nil
	}
	switch s[len(s)-1] {
	case 'i':
		v, err := strconv.ParseInt(string(s[:len(s)-1]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bad integer %q", s)
		}
		return float64(v), nil
	case 'u':
		v, err := strconv.ParseUint(string(s[:len(s)-1]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bad unsigned integer %q", s)
		}
		return float64(v), nil
	}
	v, err := strconv.ParseFloat(string(s), 64)
	if err != nil {
		return 0, fmt.Errorf("bad number %q", s)
	}
	return v, nil
}
