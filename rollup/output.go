package rollup

import (
	"fmt"
	"strconv"
	"strings"
)

// need is a set of the state fields that a rule's outputs read. The engine keeps, per
// group and window, only the fields some output of the rule needs.
type need uint16

const (
	needCount   need = 1 << iota // number of samples
	needSum                      // sum of values
	needMin                      // smallest value
	needMax                      // largest value
	needLast                     // value with the newest timestamp
	needStd                      // count, mean and sum of squared deviations (Welford)
	needSeries                   // the set of distinct series
	needCounter                  // per-series samples for increase, total and rates
	needSketch                   // log-bucketed quantile sketch
	needHist                     // VictoriaMetrics vmrange buckets
)

// output is one aggregate function of a rollup, named as VictoriaMetrics stream
// aggregation names it. Each output is a tiny type in its own file: needs says what it
// reads (the engine pushes every sample into those fields), flush turns one group's
// merged state of one window into output values.
type output interface {
	// suffix is the output's name, the last part of its series names.
	suffix() string
	// needs is the state the output reads.
	needs() need
	// flush emits the output's values for group g: extraName/extraValue is an extra
	// label ("quantile", "vmrange") or empty. flush does not emit for a group that
	// has no value (for example rate_sum of a group with only new series).
	flush(g *merged, emit func(extraName, extraValue string, v float64))
}

// parseOutput parses one output spec such as "rate_sum" or "quantiles(0.5, 0.99)".
func parseOutput(spec string) (output, error) {
	s := strings.TrimSpace(spec)
	if strings.HasPrefix(s, "quantiles(") {
		if !strings.HasSuffix(s, ")") {
			return nil, fmt.Errorf("output %q: missing closing parenthesis", spec)
		}
		args := strings.Split(s[len("quantiles("):len(s)-1], ",")
		var phis []float64
		for _, a := range args {
			phi, err := strconv.ParseFloat(strings.TrimSpace(a), 64)
			if err != nil || phi < 0 || phi > 1 {
				return nil, fmt.Errorf("output %q: quantile %q must be a number in [0, 1]", spec, strings.TrimSpace(a))
			}
			phis = append(phis, phi)
		}
		return quantiles{phis: phis}, nil
	}
	switch s {
	case "total":
		return total{}, nil
	case "total_prometheus":
		return total{name: "total_prometheus"}, nil
	case "increase":
		return increase{}, nil
	case "increase_prometheus":
		return increase{name: "increase_prometheus"}, nil
	case "rate_sum":
		return rateSum{}, nil
	case "rate_avg":
		return rateAvg{}, nil
	case "count_samples":
		return countSamples{}, nil
	case "count_series":
		return countSeries{}, nil
	case "sum_samples":
		return sumSamples{}, nil
	case "avg":
		return avg{}, nil
	case "min":
		return minOutput{}, nil
	case "max":
		return maxOutput{}, nil
	case "last":
		return last{}, nil
	case "stddev":
		return stddev{}, nil
	case "stdvar":
		return stdvar{}, nil
	case "histogram_bucket":
		return histogramBucket{}, nil
	}
	return nil, fmt.Errorf("unknown output %q (known: total, increase, rate_sum, rate_avg, count_samples, count_series, sum_samples, avg, min, max, last, stddev, stdvar, quantiles(phi...), histogram_bucket)", spec)
}
