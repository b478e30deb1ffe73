package config

import (
	"errors"
	"time"
)

// RulesConfig is how rule files are evaluated.
type RulesConfig struct {
	// EvaluationInterval is the default interval of rule groups that set none.
	EvaluationInterval Duration `yaml:"evaluation_interval"`
	// ExternalLabels are added to alerts, as Prometheus's global.external_labels.
	ExternalLabels map[string]string `yaml:"external_labels"`
	// OnArrival re-evaluates a group as soon as new samples of the metrics it reads are
	// queryable, at most once per OnArrivalMinInterval.
	OnArrival            bool     `yaml:"on_arrival"`
	OnArrivalMinInterval Duration `yaml:"on_arrival_min_interval"`
}

func defaultRules() RulesConfig {
	return RulesConfig{
		EvaluationInterval:   Duration(time.Minute),
		OnArrival:            true,
		OnArrivalMinInterval: Duration(20 * time.Millisecond),
	}
}

func (r *RulesConfig) validate() error {
	if r.EvaluationInterval <= 0 {
		return errors.New("rules.evaluation_interval: must be positive")
	}
	return nil
}
