package config

import (
	"fmt"
	"time"
)

// QueryConfig is the query store and the PromQL engine.
type QueryConfig struct {
	// RawRetention keeps raw samples this long in the query store.
	RawRetention Duration `yaml:"raw_retention"`
	// RollupRetention keeps rollup series this long.
	RollupRetention Duration `yaml:"rollup_retention"`
	// OutOfOrderWindow accepts samples this far behind a series' newest one.
	OutOfOrderWindow Duration `yaml:"out_of_order_window"`
	// BlockDuration is the time range of the store's blocks cut from memory to disk; the
	// materializer's offsets advance as blocks are cut, so a restart after a crash
	// replays up to about 1.5 block durations of the log.
	BlockDuration  Duration `yaml:"block_duration"`
	Timeout        Duration `yaml:"timeout"`
	MaxSamples     int      `yaml:"max_samples"`
	MaxConcurrency int      `yaml:"max_concurrency"`
	LookbackDelta  Duration `yaml:"lookback_delta"`
	// SplitParallelism is the most parts a range query is split into, evaluated at
	// once on as many cores (0: one per CPU; 1: never split).
	SplitParallelism int `yaml:"split_parallelism"`
	// SplitMinSteps is the fewest steps of a part: a range query with fewer than twice
	// as many steps is evaluated whole.
	SplitMinSteps int `yaml:"split_min_steps"`
}

func defaultQuery() QueryConfig {
	return QueryConfig{
		RawRetention:     Duration(24 * time.Hour),
		RollupRetention:  Duration(30 * 24 * time.Hour),
		OutOfOrderWindow: Duration(10 * time.Minute),
		BlockDuration:    Duration(2 * time.Hour),
		Timeout:          Duration(2 * time.Minute),
		MaxSamples:       50000000,
		MaxConcurrency:   20,
		LookbackDelta:    Duration(5 * time.Minute),
		SplitMinSteps:    60,
	}
}

func (q *QueryConfig) validate() error {
	if q.RawRetention <= 0 || q.RollupRetention <= 0 {
		return fmt.Errorf("query: raw_retention and rollup_retention must be positive")
	}
	if q.BlockDuration < Duration(time.Minute) || q.BlockDuration%Duration(time.Minute) != 0 {
		return fmt.Errorf("query: block_duration must be a whole number of minutes, at least 1m")
	}
	if q.OutOfOrderWindow < 0 {
		return fmt.Errorf("query: out_of_order_window must not be negative")
	}
	if q.MaxConcurrency <= 0 || q.MaxSamples <= 0 || q.Timeout <= 0 {
		return fmt.Errorf("query: timeout, max_samples and max_concurrency must be positive")
	}
	if q.SplitParallelism < 0 || q.SplitMinSteps < 2 {
		return fmt.Errorf("query: split_parallelism must not be negative and split_min_steps must be at least 2")
	}
	return nil
}
