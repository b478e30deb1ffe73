package config

import (
	"errors"
	"time"
)

// RollupConfig is one streaming aggregation (see DESIGN.md "Rollups").
type RollupConfig struct {
	Name string `yaml:"name"`
	// Match is a PromQL series selector.
	Match    string   `yaml:"match"`
	Interval Duration `yaml:"interval"`
	By       []string `yaml:"by"`
	Without  []string `yaml:"without"`
	// Outputs such as rate_sum, count_samples, max, quantiles(0.5, 0.99).
	Outputs  []string `yaml:"outputs"`
	Lateness Duration `yaml:"lateness"`
}

func (r *RollupConfig) validate() error {
	switch {
	case r.Name == "":
		return errors.New("name: must not be empty")
	case r.Match == "":
		return errors.New("match: must not be empty")
	case r.Interval.D() < time.Second:
		return errors.New("interval: must be at least 1s")
	case len(r.By) > 0 && len(r.Without) > 0:
		return errors.New("set by or without, not both")
	case len(r.Outputs) == 0:
		return errors.New("outputs: must not be empty")
	case r.Lateness < 0:
		return errors.New("lateness: must not be negative")
	}
	return nil
}
