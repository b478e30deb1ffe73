package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// embeddedNATS is the NATS server (with JetStream) that Vigil runs when no external
// nats.url is configured.
type embeddedNATS struct {
	srv *natsserver.Server
}

// startNATS starts the embedded server unless nats.url is set, then connects s.nc.
func (s *server) startNATS() error {
	url := s.cfg.NATS.URL
	if url == "" {
		host, portStr, err := net.SplitHostPort(s.cfg.NATS.Listen)
		if err != nil {
			return fmt.Errorf("nats.listen %q: %w", s.cfg.NATS.Listen, err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil {
			return fmt.Errorf("nats.listen %q: bad port: %w", s.cfg.NATS.Listen, err)
		}
		// Check the port ourselves: the NATS server reports a busy port only in its log.
		ln, err := listenTCP(s.cfg.NATS.Listen, "--nats-listen (nats.listen)")
		if err != nil {
			return err
		}
		ln.Close()
		opts := &natsserver.Options{
			ServerName: "vigil",
			Host:       host,
			Port:       port,
			JetStream:  true,
			StoreDir:   filepath.Join(s.cfg.DataDir, "nats"),
			NoSigs:     true,
			MaxPayload: 8 << 20,
		}
		srv, err := natsserver.NewServer(opts)
		if err != nil {
			return fmt.Errorf("embedded nats server: %w", err)
		}
		srv.Start()
		if !srv.ReadyForConnections(10 * time.Second) {
			srv.Shutdown()
			return fmt.Errorf("embedded nats server on %s did not start (is the port in use? change it with --nats-listen)", s.cfg.NATS.Listen)
		}
		s.nats = &embeddedNATS{srv: srv}
		url = srv.ClientURL()
	}
	s.natsClosed = make(chan struct{})
	opts := []nats.Option{
		nats.Name("vigil"),
		nats.ClosedHandler(func(*nats.Conn) { close(s.natsClosed) }),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				s.logger.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { s.logger.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }),
	}
	if s.cfg.NATS.CredentialsFile != "" {
		opts = append(opts, nats.UserCredentials(s.cfg.NATS.CredentialsFile))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		s.stopNATS()
		return fmt.Errorf("connect to nats %s (set with --nats-url): %w", url, err)
	}
	s.nc = nc
	return nil
}

// stopNATS drains the client connection and shuts the embedded server down.
func (s *server) stopNATS() {
	if s.nc != nil {
		if err := s.nc.Drain(); err == nil {
			select {
			case <-s.natsClosed:
			case <-time.After(5 * time.Second):
			}
		}
		s.nc.Close()
		s.nc = nil
	}
	if s.nats != nil {
		s.nats.srv.Shutdown()
		s.nats.srv.WaitForShutdown()
		s.nats = nil
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	if err := enc.Encode(v); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}
