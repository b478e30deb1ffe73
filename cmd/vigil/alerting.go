package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/vigilhq/vigil/alerting"
	"github.com/vigilhq/vigil/config"
)

// closeGrace bounds how long shutdown waits for notifications in flight.
const closeGrace = 2 * time.Second

// maxEarlyAlerts bounds the alerts kept for the pipeline before it has started.
const maxEarlyAlerts = 10000

// alertsHandle is how other stages reach the alerting pipeline. The rules start
// before the alerting stage, so Send may be called before the pipeline exists: such
// alerts are kept (up to maxEarlyAlerts; the rules re-send firing alerts anyway) and
// handed over when it starts. Safe for concurrent use.
type alertsHandle struct {
	mu    sync.Mutex
	p     *alerting.Pipeline
	early []alerting.Alert
}

// Send hands alerts to the pipeline (the rules' Notify).
func (h *alertsHandle) Send(ctx context.Context, as []alerting.Alert) error {
	h.mu.Lock()
	p := h.p
	if p == nil {
		if len(h.early)+len(as) <= maxEarlyAlerts {
			h.early = append(h.early, as...)
		}
		h.mu.Unlock()
		return nil
	}
	h.mu.Unlock()
	return p.Send(ctx, as)
}

// Pipeline returns the running pipeline, or nil before the alerting stage started.
func (h *alertsHandle) Pipeline() *alerting.Pipeline {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.p
}

func (h *alertsHandle) set(ctx context.Context, p *alerting.Pipeline) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.p = p
	early := h.early
	h.early = nil
	if p == nil || len(early) == 0 {
		return nil
	}
	return p.Send(ctx, early)
}

// startAlerting builds the alerting pipeline from cfg.Alerting on the log (topics
// outbox and silences), registers the silences API, and reloads the route tree and
// receivers on SIGHUP and POST /-/reload.
func startAlerting(s *server, ctx context.Context) (func(context.Context) error, error) {
	cfg, err := alerting.ParseSection(&s.cfg.Alerting)
	if err != nil {
		return nil, err
	}
	ext := s.cfg.Server.ExternalURL
	if ext == "" {
		scheme := "http"
		if s.cfg.Server.TLS.CertFile != "" {
			scheme = "https"
		}
		ext = scheme + "://" + s.cfg.Server.Listen
	}
	p, err := alerting.New(alerting.Options{
		Config:      cfg,
		Log:         s.log,
		Metrics:     s.metrics,
		Logger:      s.logger.With("component", "alerting"),
		ExternalURL: strings.TrimRight(ext, "/"),
		GrafanaURL:  s.cfg.Server.GrafanaURL,
	})
	if err != nil {
		return nil, fmt.Errorf("alerting: %w", err)
	}
	p.RegisterRoutes(s.mux)
	s.onReload("alerting", func(c *config.Config) error {
		nc, err := alerting.ParseSection(&c.Alerting)
		if err != nil {
			return err
		}
		return p.Reload(nc)
	})
	if err := s.alerts.set(ctx, p); err != nil {
		s.logger.Warn("alerts sent before the alerting stage started were rejected", "err", err)
	}
	return func(ctx context.Context) error {
		_ = s.alerts.set(ctx, nil)
		// Deliveries in flight get a little time to finish and be recorded; the rest
		// of the shutdown budget is for the stages after this one. What is cut off
		// stays in the outbox and is sent after the restart.
		cctx, cancel := context.WithTimeout(ctx, closeGrace)
		defer cancel()
		return p.Close(cctx)
	}, nil
}
