package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/nats-io/nats.go"

	"github.com/vigilhq/vigil/config"
	"github.com/vigilhq/vigil/httpauth"
	"github.com/vigilhq/vigil/ingest"
	"github.com/vigilhq/vigil/logcore"
	"github.com/vigilhq/vigil/rollup"
	"github.com/vigilhq/vigil/rules"
	"github.com/vigilhq/vigil/store"
)

// server is one running `vigil serve`: the shared parts every component uses, and the
// components themselves, started in order and stopped in reverse.
type server struct {
	cfg        *config.Config
	configFile string
	logger     *slog.Logger
	metrics    *metrics.Set
	mux        *http.ServeMux

	log     *logcore.FileLog
	samples logcore.Topic
	nc      *nats.Conn
	nats    *embeddedNATS
	// natsClosed is closed when nc has closed (after a drain).
	natsClosed chan struct{}
	ingest     *ingest.Writer // the ingest writer (ingest.go), shared by every receiver
	store      *store.Store   // the query store (store.go): Queryable, Appendable, Engine, arrival hook
	rollups    *rollup.Engine // the rollup engine (rollup.go)
	alerts     alertsHandle   // the alerting pipeline (alerting.go); Send works before it starts
	rules      *rules.Manager // the rules (rules.go): groups, alert state, rules and alerts API
	// rulesArrived is the running rules manager for s.ruleArrivals (rules.go), nil before it starts.
	rulesArrived atomic.Pointer[rules.Manager]

	ready     atomic.Bool
	reloadMu  sync.Mutex
	reloaders []reloader
	stops     []namedStop
}

type reloader struct {
	name string
	fn   func(*config.Config) error
}

type namedStop struct {
	name string
	fn   func(context.Context) error
}

// component is one stage of the pipeline started by serve.
type component struct {
	name  string
	start func(s *server, ctx context.Context) (func(context.Context) error, error)
}

// components lists the pipeline's stages in start order: each may use what the ones
// before it set on the server; they stop in reverse order.
func (s *server) components() []component {
	return []component{
		{"ingest", startIngest},
		{"store", startStore},
		{"rollup", startRollup},
		{"rules", startRules},
		{"alerting", startAlerting},
	}
}

// onReload registers fn to be called with the new configuration on SIGHUP and
// POST /-/reload. An error from fn is reported; the component keeps its old state.
func (s *server) onReload(name string, fn func(*config.Config) error) {
	s.reloaders = append(s.reloaders, reloader{name, fn})
}

const serveUsage = `Usage: vigil serve [flags]

Runs the whole pipeline. With no flags and no config it runs on the embedded defaults:
data in ./data, HTTP on 127.0.0.1:9201, an embedded NATS server (JetStream) on
127.0.0.1:4222, 8 partitions, fsync always with group commit, rules from rules/*.yml.
A flag wins over the config file.

Flags:
`

// printServeUsage prints the serve usage with flags in their documented --name form.
func printServeUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, serveUsage)
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, usage)
		if f.DefValue != "" && f.DefValue != "0" {
			fmt.Fprintf(w, " (default %q)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}

func serveCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	helpOut := stderr
	fs.Usage = func() { printServeUsage(helpOut, fs) }
	def := config.Default()
	configFile := fs.String("config", "", "configuration `FILE` (vigil.yaml); see vigil.example.yaml")
	dataDir := fs.String("data-dir", def.DataDir, "`DIR` for the log, the query store and all state (config: data_dir)")
	listen := fs.String("listen", def.Server.Listen, "HTTP listen `ADDR` (config: server.listen)")
	natsListen := fs.String("nats-listen", def.NATS.Listen, "embedded NATS server `ADDR` (config: nats.listen)")
	natsURL := fs.String("nats-url", "", "external NATS server `URL`; no embedded server is started (config: nats.url)")
	partitions := fs.Int("partitions", def.Log.Partitions, "`N` partitions of the samples topic (config: log.partitions)")
	fsync := fs.String("fsync", def.Log.Fsync, "fsync `POLICY`: always, interval or never (config: log.fsync)")
	logLevel := fs.String("log-level", "info", "log `LEVEL`: debug, info, warn or error")
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" {
			helpOut = stdout // asked for: the usage is the output, not an error
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "vigil serve: unexpected arguments %q\n", fs.Args())
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "vigil serve: --log-level: %v\n", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	cfg := def
	if *configFile != "" {
		var err error
		if cfg, err = config.Load(*configFile); err != nil {
			fmt.Fprintf(stderr, "vigil serve: %v\n", err)
			return 2
		}
	}
	overrides := map[string]func(){
		"data-dir":    func() { cfg.DataDir = *dataDir },
		"listen":      func() { cfg.Server.Listen = *listen },
		"nats-listen": func() { cfg.NATS.Listen = *natsListen },
		"nats-url":    func() { cfg.NATS.URL = *natsURL },
		"partitions":  func() { cfg.Log.Partitions = *partitions },
		"fsync":       func() { cfg.Log.Fsync = *fsync },
	}
	fs.Visit(func(f *flag.Flag) {
		if o, ok := overrides[f.Name]; ok {
			o()
		}
	})
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "vigil serve: %v\n", err)
		return 2
	}

	setProcs(cfg.Log.Fsync, logger)
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	s := &server{cfg: cfg, configFile: *configFile, logger: logger, metrics: metrics.NewSet(), mux: http.NewServeMux()}
	if err := s.run(ctx); err != nil {
		logger.Error("vigil serve failed", "err", err)
		fmt.Fprintf(stderr, "vigil serve: %v\n", err)
		return 1
	}
	return 0
}

// setProcs gives the Go scheduler twice as many Ps as CPUs under fsync always, unless
// the GOMAXPROCS environment variable sets them: a log writer returning from fdatasync
// otherwise waits for a P behind the goroutines decoding requests, and every
// acknowledgement waits with it (BenchmarkSustainedPeers: about 1.2M samples/s instead of
// 0.9-1.1M on 2 cores). The other policies do not wait on the disk and keep the default.
func setProcs(fsync string, logger *slog.Logger) {
	if fsync != "always" || os.Getenv("GOMAXPROCS") != "" {
		return
	}
	n := 2 * runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(n)
	logger.Debug("GOMAXPROCS raised for fsync always", "gomaxprocs", n)
}

// run starts everything, serves until ctx ends, then shuts down within the configured
// shutdown timeout: stop accepting, stop components in reverse order, sync and close the log.
func (s *server) run(ctx context.Context) error {
	if err := os.MkdirAll(s.cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	// Bind the ports first so that a port in use fails fast, before any state is opened.
	httpLn, err := listenTCP(s.cfg.Server.Listen, "--listen (server.listen)")
	if err != nil {
		return err
	}
	defer httpLn.Close()

	if err := s.startNATS(); err != nil {
		return err
	}
	defer s.stopNATS()

	if err := s.openLog(); err != nil {
		return err
	}
	defer func() {
		if err := s.log.Close(); err != nil {
			s.logger.Error("close log", "err", err)
		}
	}()

	s.registerCoreRoutes()
	handler, err := s.guardedHandler()
	if err != nil {
		return err
	}
	tlsCfg, err := httpauth.TLSConfig(s.cfg.Server.TLS)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler, TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn)}
	serveErr := make(chan error, 1)
	go func() {
		if tlsCfg != nil {
			serveErr <- srv.ServeTLS(httpLn, "", "")
		} else {
			serveErr <- srv.Serve(httpLn)
		}
	}()

	startErr := s.startComponents(ctx)
	if startErr == nil {
		s.ready.Store(true)
		s.logger.Info("vigil is ready", "listen", s.cfg.Server.Listen, "data_dir", s.cfg.DataDir,
			"nats", s.natsURL(), "partitions", s.samples.Partitions(), "fsync", s.cfg.Log.Fsync)
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	wait:
		for {
			select {
			case <-ctx.Done():
				break wait
			case err := <-serveErr:
				startErr = fmt.Errorf("http server: %w", err)
				break wait
			case <-hup:
				if err := s.reload(); err != nil {
					s.logger.Error("reload failed; the old configuration stays in force", "err", err)
				}
			}
		}
	}
	s.ready.Store(false)
	s.logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.Server.ShutdownTimeout.D())
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		s.logger.Warn("http shutdown", "err", err)
	}
	for i := len(s.stops) - 1; i >= 0; i-- {
		if err := s.stops[i].fn(sctx); err != nil {
			s.logger.Error("stop component", "component", s.stops[i].name, "err", err)
		}
	}
	return startErr
}

func (s *server) startComponents(ctx context.Context) error {
	for _, c := range s.components() {
		stop, err := c.start(s, ctx)
		if err != nil {
			return fmt.Errorf("start %s: %w", c.name, err)
		}
		if stop != nil {
			s.stops = append(s.stops, namedStop{c.name, stop})
		}
	}
	return nil
}

// reload re-reads the config file and hands it to every component that reloads. A
// config that does not load changes nothing.
func (s *server) reload() error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	cfg := s.cfg
	if s.configFile != "" {
		var err error
		if cfg, err = config.Load(s.configFile); err != nil {
			reloadFailures.Inc()
			return err
		}
		// Settings fixed at start (addresses, data dir, partitions) keep their running values.
		cfg.DataDir, cfg.Server.Listen, cfg.NATS, cfg.Log = s.cfg.DataDir, s.cfg.Server.Listen, s.cfg.NATS, s.cfg.Log
	}
	var errs []error
	for _, r := range s.reloaders {
		if err := r.fn(cfg); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		reloadFailures.Inc()
		return err
	}
	s.cfg = cfg
	reloadSuccess.Inc()
	return nil
}

var (
	reloadSuccess  = metrics.NewCounter(`vigil_config_reloads_total{result="success"}`)
	reloadFailures = metrics.NewCounter(`vigil_config_reloads_total{result="failure"}`)
)

func (s *server) openLog() error {
	policy := map[string]logcore.FsyncPolicy{"always": logcore.FsyncAlways, "interval": logcore.FsyncInterval, "never": logcore.FsyncNever}[s.cfg.Log.Fsync]
	l, err := logcore.Open(filepath.Join(s.cfg.DataDir, "log"), logcore.Options{
		Fsync:         policy,
		FsyncInterval: s.cfg.Log.FsyncInterval.D(),
		Defaults: logcore.TopicConfig{
			Partitions:     s.cfg.Log.Partitions,
			SegmentBytes:   int64(s.cfg.Log.SegmentBytes),
			SegmentAge:     s.cfg.Log.SegmentAge.D(),
			RetentionBytes: int64(s.cfg.Log.RetentionBytes),
			RetentionAge:   s.cfg.Log.RetentionAge.D(),
		},
		Metrics: s.metrics,
		Logger:  s.logger.With("component", "log"),
	})
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	s.log = l
	codec := logcore.CompressionS2
	if s.cfg.Log.Compression == "none" {
		codec = logcore.CompressionNone
	}
	s.samples, err = l.Topic("samples", logcore.TopicConfig{Partitions: s.cfg.Log.Partitions, Compression: codec})
	if err != nil {
		l.Close()
		return fmt.Errorf("open topic samples: %w", err)
	}
	return nil
}

// listenTCP binds addr, turning "address already in use" into an error that names the
// port and the flag that changes it.
func listenTCP(addr, flagName string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			_, port, _ := net.SplitHostPort(addr)
			return nil, fmt.Errorf("port %s is already in use (address %s); choose another with %s", port, addr, flagName)
		}
		return nil, fmt.Errorf("listen on %s (set with %s): %w", addr, flagName, err)
	}
	return ln, nil
}

func (s *server) registerCoreRoutes() {
	s.mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		s.metrics.WritePrometheus(w)
		metrics.WritePrometheus(w, true)
	})
	s.mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "Vigil is Healthy.\n")
	})
	s.mux.HandleFunc("/-/ready", func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "Service Unavailable", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "Vigil is Ready.\n")
	})
	s.mux.HandleFunc("POST /-/reload", func(w http.ResponseWriter, r *http.Request) {
		if err := s.reload(); err != nil {
			http.Error(w, "failed to reload config: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	// Go's profiles, as Prometheus serves them (behind server.auth like the rest).
	s.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	s.mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	s.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	s.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	s.mux.HandleFunc("GET /api/v1/status/log", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, logcore.StatusOf(s.log))
	})
}

// guardedHandler is s.mux behind server.auth (reloaded with the config): every
// endpoint but the health and readiness probes needs the credentials when auth is set.
func (s *server) guardedHandler() (http.Handler, error) {
	auth, err := httpauth.New(s.cfg.Server.Auth)
	if err != nil {
		return nil, err
	}
	// The guarded mux is built once per configuration, not per request.
	var guarded atomic.Pointer[http.Handler]
	set := func(a *httpauth.Authenticator) {
		h := a.Wrap(s.mux, nil)
		guarded.Store(&h)
	}
	set(auth)
	s.onReload("server auth", func(c *config.Config) error {
		a, err := httpauth.New(c.Server.Auth)
		if err != nil {
			return err
		}
		set(a)
		return nil
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/-/healthy", "/-/ready", "/api/v1/write":
			// Probes stay open; the ingest stage guards writes itself, counting
			// rejections in vigil_ingest_rejected_total{reason="unauthorized"}.
			s.mux.ServeHTTP(w, r)
		default:
			(*guarded.Load()).ServeHTTP(w, r)
		}
	}), nil
}

func (s *server) natsURL() string {
	if s.cfg.NATS.URL != "" {
		return s.cfg.NATS.URL
	}
	return "nats://" + s.cfg.NATS.Listen
}
