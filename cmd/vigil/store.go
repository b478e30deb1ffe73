package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/vigilhq/vigil/api"
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
	m, err := st.StartMaterializer(store.MaterializerOptions{Log: s.log, Topic: s.samples, Group: "materializer"})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("start materializer: %w", err)
	}
	s.store = st
	api.New(api.Options{
		Queryable: st.Queryable(),
		Engine:    st.Engine(),
		BuildInfo: api.BuildInfo{Version: version, Revision: "unknown", Branch: "unknown", BuildUser: "unknown", BuildDate: "unknown"},
	}).Register(s.mux)
	return func(ctx context.Context) error {
		return errors.Join(m.Stop(ctx), st.Close())
	}, nil
}
