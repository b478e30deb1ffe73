package main

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"

	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/httpauth"
	"github.com/vigilhq/vigil/ingest"
)

// startIngest starts the receivers: POST /api/v1/write (remote-write 1.0 and 2.0, behind
// server.auth) and the NATS core and JetStream consumers on s.nc, all writing to
// s.samples through one ingest.Writer. Credentials reload with the configuration;
// limits are fixed at start.
func startIngest(s *server, ctx context.Context) (func(context.Context) error, error) {
	logger := s.logger.With("component", "ingest")
	w, err := ingest.NewWriter(ingest.Options{Topic: s.samples, Limits: s.cfg.Limits, Metrics: s.metrics, Logger: logger})
	if err != nil {
		return nil, err
	}
	s.ingest = w
	auth, err := httpauth.New(s.cfg.Server.Auth)
	if err != nil {
		return nil, err
	}
	var current atomic.Pointer[httpauth.Authenticator]
	current.Store(auth)
	s.onReload("ingest auth", func(c *config.Config) error {
		a, err := httpauth.New(c.Server.Auth)
		if err != nil {
			return err
		}
		current.Store(a)
		return nil
	})
	rw := ingest.NewRemoteWriteHandler(w, logger)
	reject := func() { w.Reject(ingest.ReasonUnauthorized) }
	s.mux.Handle("POST /api/v1/write", http.HandlerFunc(func(rsp http.ResponseWriter, r *http.Request) {
		current.Load().Wrap(rw, reject).ServeHTTP(rsp, r)
	}))
	if s.nc == nil {
		return nil, fmt.Errorf("no nats connection")
	}
	n, err := ingest.StartNATS(ctx, ingest.NATSOptions{
		Conn: s.nc, Config: s.cfg.NATS, Writer: w, Log: s.log, Logger: logger, Metrics: s.metrics,
	})
	if err != nil {
		return nil, err
	}
	return n.Stop, nil
}
