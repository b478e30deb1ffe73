package config

import (
	"fmt"
	"time"
)

// LimitsConfig bounds what one request or the whole appliance accepts.
type LimitsConfig struct {
	MaxRequestBytes      ByteSize `yaml:"max_request_bytes"`
	MaxDecompressedBytes ByteSize `yaml:"max_decompressed_bytes"`
	MaxSeriesPerRequest  int      `yaml:"max_series_per_request"`
	MaxLabelsPerSeries   int      `yaml:"max_labels_per_series"`
	MaxLabelNameLength   int      `yaml:"max_label_name_length"`
	MaxLabelValueLength  int      `yaml:"max_label_value_length"`
	// MaxFuture and MaxPast reject samples this far ahead of or behind the wall clock.
	MaxFuture Duration `yaml:"max_future"`
	MaxPast   Duration `yaml:"max_past"`
	// MaxActiveSeries caps distinct series seen in the last ActiveSeriesWindow; 0 is unlimited.
	MaxActiveSeries    int      `yaml:"max_active_series"`
	ActiveSeriesWindow Duration `yaml:"active_series_window"`
	// MaxInflightBytes bounds the memory held by writes in flight: each remote-write
	// request is charged its compressed size plus 4x its decompressed size (the body,
	// the decoded batch and the encoded log records), each NATS batch 3x its payloads.
	// Past it, remote-write answers 429 with Retry-After and NATS consumers wait (core)
	// or nak (JetStream).
	MaxInflightBytes ByteSize `yaml:"max_inflight_bytes"`
	// NameValidation is "utf8" (Prometheus 3's default) or "legacy".
	NameValidation string `yaml:"name_validation"`
	// MaxDownstreamLag is how many records of the samples topic the query store may
	// have left to materialize before writes are refused with 429 and Retry-After (and
	// NATS consumers wait); 0 is unlimited. Everything acknowledged is in the log either way.
	// While ingest is saturated the query store holds back up to half of it (50,000
	// records when unlimited).
	MaxDownstreamLag int `yaml:"max_downstream_lag"`
}

func defaultLimits() LimitsConfig {
	return LimitsConfig{
		MaxRequestBytes:      32 << 20,
		MaxDecompressedBytes: 256 << 20,
		MaxSeriesPerRequest:  100000,
		MaxLabelsPerSeries:   64,
		MaxLabelNameLength:   1024,
		MaxLabelValueLength:  4096,
		MaxFuture:            Duration(10 * time.Minute),
		MaxPast:              Duration(24 * time.Hour),
		ActiveSeriesWindow:   Duration(time.Hour),
		MaxInflightBytes:     512 << 20,
		NameValidation:       "utf8",
		MaxDownstreamLag:     100000,
	}
}

func (l *LimitsConfig) validate() error {
	if l.NameValidation != "utf8" && l.NameValidation != "legacy" {
		return fmt.Errorf("limits.name_validation: %q is not utf8 or legacy", l.NameValidation)
	}
	if l.MaxDownstreamLag < 0 {
		return fmt.Errorf("limits.max_downstream_lag: %d is negative", l.MaxDownstreamLag)
	}
	if l.MaxRequestBytes <= 0 || l.MaxDecompressedBytes <= 0 {
		return fmt.Errorf("limits: max_request_bytes and max_decompressed_bytes must be positive")
	}
	return nil
}
