package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"
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
	// IntervalText is interval as written in the file ("60s", "1m"): output names use it
	// verbatim, as VictoriaMetrics does. Empty when the config was not read from YAML.
	IntervalText string `yaml:"-"`
}

var rollupKeys = map[string]bool{"name": true, "match": true, "interval": true, "by": true, "without": true, "outputs": true, "lateness": true}

// UnmarshalYAML decodes a rollup strictly (an unknown key is an error naming its line)
// and keeps the interval's text.
func (r *RollupConfig) UnmarshalYAML(n *yaml.Node) error {
	type plain RollupConfig
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if !rollupKeys[k.Value] {
				return fmt.Errorf("line %d: unknown key %q in rollups", k.Line, k.Value)
			}
			if k.Value == "interval" {
				r.IntervalText = n.Content[i+1].Value
			}
		}
	}
	text := r.IntervalText
	if err := n.Decode((*plain)(r)); err != nil {
		return err
	}
	r.IntervalText = text
	return nil
}

// JoinOutputs rejoins output specs that a YAML flow sequence split at the commas
// between quantile levels: [max, quantiles(0.5, 0.99)] reads as "max", "quantiles(0.5",
// "0.99)", and becomes "max", "quantiles(0.5, 0.99)".
func JoinOutputs(outputs []string) []string {
	var out []string
	for i := 0; i < len(outputs); i++ {
		o := strings.TrimSpace(outputs[i])
		if strings.HasPrefix(o, "quantiles(") {
			for !strings.HasSuffix(o, ")") && i+1 < len(outputs) {
				i++
				o += ", " + strings.TrimSpace(outputs[i])
			}
		}
		out = append(out, o)
	}
	return out
}

func (r *RollupConfig) validate() error {
	r.Outputs = JoinOutputs(r.Outputs)
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
	if _, err := parser.NewParser(parser.Options{}).ParseMetricSelector(r.Match); err != nil {
		return fmt.Errorf("match: %q is not a PromQL series selector: %w", r.Match, err)
	}
	for _, o := range r.Outputs {
		if err := validRollupOutput(o); err != nil {
			return fmt.Errorf("outputs: %w", err)
		}
	}
	return nil
}

// rollupOutputs are the output names the rollup engine knows (rollup/output.go; keep
// the two in step), besides quantiles(φ, ...).
var rollupOutputs = map[string]bool{
	"total": true, "total_prometheus": true, "increase": true, "increase_prometheus": true,
	"rate_sum": true, "rate_avg": true, "count_samples": true, "count_series": true,
	"sum_samples": true, "avg": true, "min": true, "max": true, "last": true,
	"stddev": true, "stdvar": true, "histogram_bucket": true,
}

func validRollupOutput(spec string) error {
	s := strings.TrimSpace(spec)
	if rollupOutputs[s] {
		return nil
	}
	if strings.HasPrefix(s, "quantiles(") && strings.HasSuffix(s, ")") {
		for _, a := range strings.Split(s[len("quantiles("):len(s)-1], ",") {
			phi, err := strconv.ParseFloat(strings.TrimSpace(a), 64)
			if err != nil || phi < 0 || phi > 1 {
				return fmt.Errorf("%q: quantile %q must be a number in [0, 1]", spec, strings.TrimSpace(a))
			}
		}
		return nil
	}
	return fmt.Errorf("unknown output %q (known: total, increase, rate_sum, rate_avg, count_samples, count_series, sum_samples, avg, min, max, last, stddev, stdvar, quantiles(phi, ...), histogram_bucket)", spec)
}
