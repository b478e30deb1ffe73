package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/vigilhq/vigil/api"
	"github.com/vigilhq/vigil/api/rangesplit"
	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/store"
)

// startStore opens the query store in <data_dir>/store, starts the materializer (consumer
// group "materializer" on the samples topic) and serves the Prometheus query API.
func startStore(s *server, ctx context.Context) (func(context.Context) error, error) {
	q := s.cfg.Query
	st, err := store.Open(store.Options{
		Dir:              filepath.Join(s.cfg.DataDir, "store"),
		RawRetention:     q.RawRetention.D(),
		DerivedRetention: q.RollupRetention.D(),
		OutOfOrderWindow: q.OutOfOrderWindow.D(),
		BlockDuration:    q.BlockDuration.D(),
		QueryTimeout:     q.Timeout.D(),
		MaxSamples:       q.MaxSamples,
		MaxConcurrency:   q.MaxConcurrency,
		LookbackDelta:    q.LookbackDelta.D(),
		Metrics:          s.metrics,
		Logger:           s.logger,
	})
	if err != nil {
		return nil, err
	}
	mo := store.MaterializerOptions{Log: s.log, Topic: s.samples, Group: "materializer"}
	if s.ingest != nil {
		// A burst of writes gets the CPUs; the store catches up after it, at most half
		// of limits.max_downstream_lag (past the whole of it writes get 429) and 5 s
		// behind.
		mo.Yield = s.ingest.Busy
		mo.MaxPollBytes = 256 << 10 // asks Yield after at most a few ms of work
		if lag := s.cfg.Limits.MaxDownstreamLag; lag > 0 {
			mo.YieldLag = max(1, int64(lag)/2)
		}
	}
	m, err := st.StartMaterializer(mo)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("start materializer: %w", err)
	}
	// Replay what the log holds past the committed offsets before the later stages
	// start (rules must not evaluate over a half-rebuilt store) and before /-/ready.
	if lag := m.Lag(); lag > 0 {
		start := time.Now()
		s.logger.Info("replaying the log into the query store", "records", lag)
		if err := m.Sync(ctx); err != nil {
			if ctx.Err() != nil {
				// Shutting down during the replay: stop cleanly, nothing is lost.
				return func(sctx context.Context) error { return errors.Join(m.Stop(sctx), st.Close()) }, nil
			}
			m.Stop(context.Background())
			st.Close()
			return nil, fmt.Errorf("replay the log into the query store: %w", err)
		}
		s.logger.Info("query store replayed", "records", lag, "duration", time.Since(start).Round(time.Millisecond).String())
	}
	s.store = st
	if max := int64(s.cfg.Limits.MaxDownstreamLag); max > 0 && s.ingest != nil {
		// Writes wait while the query store is too far behind (limits.max_downstream_lag).
		s.ingest.SetBackpressure(func() error {
			if lag := m.Lag(); lag > max {
				return fmt.Errorf("the query store is %d records behind the log (limits.max_downstream_lag %d)", lag, max)
			}
			return nil
		})
	}
	s.onReload("store", func(cfg *config.Config) error {
		q := cfg.Query
		return st.Reconfigure(q.OutOfOrderWindow.D(), q.RawRetention.D(), q.RollupRetention.D())
	})
	// Long range queries are evaluated in parts at once, on the cores that are idle.
	engine := rangesplit.New(st.Engine(), rangesplit.Options{
		Parallelism:     q.SplitParallelism,
		MinStepsPerPart: q.SplitMinSteps,
		MaxSamples:      q.MaxSamples,
		IdleCPUs:        rangesplit.LoadavgIdleCPUs,
		Metrics:         s.metrics,
	})
	api.New(api.Options{
		Queryable: st.Queryable(),
		Engine:    engine,
		BuildInfo: buildInfo(),
	}).Register(s.mux)
	return func(ctx context.Context) error {
		return errors.Join(m.Stop(ctx), st.Close())
	}, nil
}

// buildInfo answers /api/v1/status/buildinfo. Its version is the Prometheus release
// whose semantics Vigil follows (the prometheus module v0.3XY.Z is Prometheus 3.XY.Z),
// because clients such as Grafana read it to decide which API features to use; Vigil's
// own version is in the revision field.
func buildInfo() api.BuildInfo {
	bi := api.BuildInfo{Version: "3.0.0", Revision: "vigil-" + version, Branch: "vigil", BuildUser: "vigil", BuildDate: "unknown"}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			if d.Path == "github.com/prometheus/prometheus" {
				if v, ok := prometheusRelease(d.Version); ok {
					bi.Version = v
				}
			}
		}
	}
	return bi
}

// prometheusRelease maps a prometheus module version (v0.316.0) to its release (3.16.0).
func prometheusRelease(mod string) (string, bool) {
	var minor, patch int
	if n, _ := fmt.Sscanf(mod, "v0.%d.%d", &minor, &patch); n != 2 || minor < 300 {
		return "", false
	}
	return fmt.Sprintf("%d.%d.%d", minor/100, minor%100, patch), true
}
