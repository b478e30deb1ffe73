package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/logcore"
	"github.com/vigilhq/vigil/rollup"
)

// rollupSubjectPrefix is the NATS subject prefix of live rollup results:
// vigil.rollups.<rollup name>, one message per closed window (rollupMessage JSON).
const rollupSubjectPrefix = "vigil.rollups."

// rollupMessage is the JSON published on NATS for each closed window. Values are
// strings in Prometheus's form ("1.5", "NaN", "+Inf") so that every float survives JSON.
type rollupMessage struct {
	Rollup  string                `json:"rollup"`
	StartMs int64                 `json:"start_ms"`
	EndMs   int64                 `json:"end_ms"`
	Series  []rollupMessageSeries `json:"series"`
}

type rollupMessageSeries struct {
	Labels map[string]string `json:"labels"`
	Value  string            `json:"value"`
}

// startRollup runs the rollup engine over the samples topic (consumer group "rollup",
// checkpoints in <data_dir>/rollup): each closed window goes to the "rollups" log topic,
// to the query store, to NATS vigil.rollups.<name>, and to the rules (which evaluate
// the groups reading those metrics at once). The rollups reload with the config.
func startRollup(s *server, ctx context.Context) (func(context.Context) error, error) {
	if s.store == nil {
		return nil, errors.New("the rollups need the query store, which has not started")
	}
	logger := s.logger.With("component", "rollup")
	results, err := s.log.Topic("rollups", logcore.TopicConfig{Partitions: 1})
	if err != nil {
		return nil, fmt.Errorf("open topic rollups: %w", err)
	}
	e, err := rollup.New(rollup.Options{
		Rollups:    s.cfg.Rollups,
		Log:        s.log,
		Samples:    s.samples,
		Results:    results,
		Group:      "rollup",
		Appendable: s.store.Appendable(),
		OnResult: func(r *rollup.Result) {
			if s.nc == nil {
				return
			}
			b, err := json.Marshal(toRollupMessage(r))
			if err == nil {
				err = s.nc.Publish(rollupSubjectPrefix+r.Rollup, b)
			}
			if err != nil {
				logger.Warn("publish rollup window on NATS", "rollup", r.Rollup, "window_end", r.End, "err", err)
			}
		},
		OnWindowClosed: func(_ string, metricNames []string, _ time.Time) {
			s.ruleArrivals(metricNames)
		},
		CheckpointDir: filepath.Join(s.cfg.DataDir, "rollup"),
		Metrics:       s.metrics,
		Logger:        logger,
	})
	if err != nil {
		return nil, err
	}
	s.rollups = e
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		err := e.Run(rctx)
		if err != nil {
			logger.Error("rollup engine stopped", "err", err)
		}
		done <- err
	}()
	s.onReload("rollup", func(cfg *config.Config) error {
		rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer rcancel()
		return e.Reload(rctx, cfg.Rollups)
	})
	return func(ctx context.Context) error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			return fmt.Errorf("rollup engine did not stop: %w", ctx.Err())
		}
	}, nil
}

func toRollupMessage(r *rollup.Result) rollupMessage {
	m := rollupMessage{Rollup: r.Rollup, StartMs: r.Start, EndMs: r.End, Series: make([]rollupMessageSeries, 0, len(r.Series))}
	for _, rs := range r.Series {
		m.Series = append(m.Series, rollupMessageSeries{Labels: rs.Labels.Map(), Value: strconv.FormatFloat(rs.Value, 'f', -1, 64)})
	}
	return m
}
