package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unsafe"
)

// JSON payloads (NATS): one object or an array of objects
//
//	{"name": "cpu_usage", "labels": {"host": "a"}, "value": 1.5, "timestamp_ms": 1700000000000}
//
// name is the metric name (or labels.__name__); value is a number, or a string that
// strconv.ParseFloat reads ("NaN", "+Inf", "1e3"); timestamp_ms is optional and
// defaults to the time of receipt. Unknown fields are ignored.

type jsonSample struct {
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels"`
	Value       *jsonValue        `json:"value"`
	TimestampMs *int64            `json:"timestamp_ms"`
}

type jsonValue float64

// UnmarshalJSON reads a number, or a string strconv.ParseFloat accepts.
func (v *jsonValue) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("value %q is not a number", s)
		}
		*v = jsonValue(f)
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("value %s is not a number", b)
	}
	*v = jsonValue(f)
	return nil
}

// strBytes aliases an immutable string as a byte slice; the Batch never writes into
// label bytes, so this is safe and saves a copy per label.
func strBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// DecodeJSON decodes a JSON payload into b, one series per object, each with
// b.Source set to src. nowMs stamps samples without timestamp_ms. On error nothing of
// the payload is left in b.
func DecodeJSON(b *Batch, data []byte, nowMs int64, src int32) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return errors.New("empty JSON payload")
	}
	var items []jsonSample
	switch data[0] {
	case '[':
		if err := json.Unmarshal(data, &items); err != nil {
			return fmt.Errorf("invalid JSON array: %w", err)
		}
	case '{':
		items = make([]jsonSample, 1)
		if err := json.Unmarshal(data, &items[0]); err != nil {
			return fmt.Errorf("invalid JSON object: %w", err)
		}
	default:
		return fmt.Errorf("JSON payload must be an object or an array, starts with %q", data[0])
	}
	for i := range items {
		it := &items[i]
		name := it.Name
		if n, ok := it.Labels["__name__"]; ok {
			if name != "" && name != n {
				return fmt.Errorf("item %d: name %q and labels.__name__ %q differ", i, name, n)
			}
			name = n
		}
		if name == "" {
			return fmt.Errorf("item %d: no name", i)
		}
		if it.Value == nil {
			return fmt.Errorf("item %d (%s): no value", i, name)
		}
	}
	for i := range items {
		it := &items[i]
		b.BeginSeries()
		name := it.Name
		if name == "" {
			name = it.Labels["__name__"]
		}
		b.AddLabel(metricNameLabel, strBytes(name))
		for k, v := range it.Labels {
			if k == "__name__" {
				continue
			}
			b.AddLabel(strBytes(k), strBytes(v))
		}
		t := nowMs
		if it.TimestampMs != nil {
			t = *it.TimestampMs
		}
		b.AddSample(t, float64(*it.Value))
		b.EndSeries()
		b.Source = append(b.Source, src)
	}
	return nil
}
