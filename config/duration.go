package config

import (
	"fmt"
	"time"

	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration written as Prometheus writes durations ("15s", "1h30m",
// "7d", "2w").
type Duration time.Duration

// UnmarshalYAML parses a Prometheus-style duration.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := model.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: bad duration %q: %w", n.Line, s, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration in Prometheus's form.
func (d Duration) MarshalYAML() (any, error) { return model.Duration(d).String(), nil }

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Secret is a string that never appears in logs or API output: it marshals as <secret>.
type Secret string

// MarshalYAML hides the value.
func (s Secret) MarshalYAML() (any, error) {
	if s == "" {
		return "", nil
	}
	return "<secret>", nil
}

// String hides the value.
func (s Secret) String() string { return "<secret>" }
