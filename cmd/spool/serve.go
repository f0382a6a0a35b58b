package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/auth"
	"github.com/spool-run/spool/internal/autoscale"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/dashboard"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/fleet"
	"github.com/spool-run/spool/internal/httpapi"
	"github.com/spool-run/spool/internal/httplimit"
	"github.com/spool-run/spool/internal/joblog"
	"github.com/spool-run/spool/internal/jobstats"
	"github.com/spool-run/spool/internal/metrics"
	"github.com/spool-run/spool/internal/notify"
	"github.com/spool-run/spool/internal/webhook"
	"github.com/spool-run/spool/internal/wire"
	"github.com/spool-run/spool/store"
)

func newServeCmd(getenv func(string) string) *cobra.Command {
	var (
		cfgPath     string
		addr, data  string
		storeURL    string
		tlsCert     string
		tlsKey      string
		logFormat   string
		checkConfig bool
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the Spool server",
		Long: `Run the Spool server, on the embedded store in --data or on PostgreSQL (--store). Settings
come from the config file (--config, $SPOOL_CONFIG, or ./spool.yaml if present), then the
environment, then flags. The environment it reads:

  SPOOL_CONFIG               the config file
  SPOOL_ADDR                 the listen address (addr)
  SPOOL_DATA                 the data directory (data)
  SPOOL_STORE                sqlite or a postgres:// URL (store); PGPASSWORD and PGPASSFILE apply
  SPOOL_LOG_LEVEL            debug, info, warn or error (logLevel)
  SPOOL_LOG_FORMAT           text or json (logFormat)
  SPOOL_ADMIN_KEY            an admin key's plaintext, kept only as a hash
  SPOOL_SECRET_KEY           the base64 key that seals s3Configs and webhook secrets (secrets.keyFile)
  SPOOL_WEBHOOK_ALLOW_CIDRS  networks webhooks may reach, comma-separated (webhooks.allowCIDRs)
  SPOOL_PPROF_ADDR           an admin-only /debug/pprof/ listener (debug.pprofAddr)
  SPOOL_TLS_CERT             the PEM certificate chain to serve HTTPS with (tls.certFile)
  SPOOL_TLS_KEY              its PEM private key (tls.keyFile)
  DOCKER_HOST                the Docker daemon of workers with an image (workers.docker.host)

With a certificate, Spool serves HTTPS only; SIGHUP loads the certificate and key files again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cfgPath, getenv)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("addr") {
				cfg.Addr = addr
			}
			if cmd.Flags().Changed("data") {
				cfg.Data = data
			}
			if cmd.Flags().Changed("log-format") {
				cfg.LogFormat = logFormat
				if err := cfg.validate(); err != nil {
					return err
				}
			}
			if cmd.Flags().Changed("tls-cert") {
				cfg.TLS.CertFile = tlsCert
			}
			if cmd.Flags().Changed("tls-key") {
				cfg.TLS.KeyFile = tlsKey
			}
			if err := checkTLSSetting(cfg.TLS.CertFile, cfg.TLS.KeyFile); err != nil {
				return err
			}
			if cmd.Flags().Changed("store") {
				cfg.Store = storeURL
				if err := checkStoreSetting(cfg.Store); err != nil {
					return err
				}
			}
			if checkConfig {
				if err := checkSurroundings(cfg); err != nil {
					return err
				}
				if cfg.TLS.CertFile != "" {
					if _, err := loadCertificate(cfg.TLS.CertFile, cfg.TLS.KeyFile); err != nil {
						return err
					}
				}
				src := cfg.Path
				if src == "" {
					src = "(no config file; defaults)"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "config OK: %s: addr %s, store %s, %d endpoints, %d keys\n",
					src, cfg.Addr, describeStore(cfg), len(cfg.Endpoints), len(cfg.Keys))
				return nil
			}
			return serve(cmd.Context(), cfg, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgPath, "config", "", "config file (default ./spool.yaml if present)")
	f.StringVar(&addr, "addr", "127.0.0.1:8080", "listen address")
	f.StringVar(&data, "data", "./spool-data", "data directory")
	f.StringVar(&storeURL, "store", "", "sqlite (the default, in --data) or a postgres:// URL shared by several replicas")
	f.StringVar(&logFormat, "log-format", "text", "log lines as text (key=value) or json (one object per line)")
	f.StringVar(&tlsCert, "tls-cert", "", "serve HTTPS with this PEM certificate chain (with --tls-key; reloaded on SIGHUP)")
	f.StringVar(&tlsKey, "tls-key", "", "the PEM private key of --tls-cert")
	f.BoolVar(&checkConfig, "check-config", false, "validate the configuration and exit")
	return cmd
}

// serve runs the server until ctx ends, then shuts it down in order.
func serve(ctx context.Context, cfg *config, stdout, stderr io.Writer) error {
	srv, err := openServer(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	if err := firstStartKeys(ctx, srv.keys, stdout); err != nil {
		srv.abort()
		return err
	}
	return srv.run(ctx, nil)
}

// server is a Spool server with everything open and its listener bound, not yet serving. serve
// and dev share it.
type server struct {
	cfg      *config
	log      *slog.Logger
	store    *openedStore
	eng      *engine.Engine
	keys     *auth.Keyring
	http     *http.Server
	ln       net.Listener
	fleet    *fleet.Fleet
	webhooks *webhook.Dispatcher
	draining atomic.Bool
	scaler   *autoscale.Autoscaler // runs the workers of endpoints with a worker spec
	tokens   *auth.WorkerTokens    // the keys of the workers the autoscaler starts
	cert     *certificate          // nil: plain HTTP
	jobLog   *joblog.Index         // what workers wrote about each job
}

// openServer opens the store, starts the engine, applies the config's endpoints, starts the
// webhook dispatcher and binds the listener. On error everything opened so far is closed again.
func openServer(ctx context.Context, cfg *config, stderr io.Writer) (_ *server, err error) {
	s := &server{cfg: cfg, log: newLogger(cfg, stderr), jobLog: joblog.New(joblog.Config{})}
	defer func() {
		if err != nil {
			s.abort()
		}
	}()
	if err := prepareDataDir(cfg, s.log); err != nil {
		return nil, err
	}
	sealer, err := openSealer(cfg, s.log)
	if err != nil {
		return nil, err
	}
	if s.store, err = openStore(ctx, cfg, s.log); err != nil {
		return nil, err
	}
	m := metrics.New(metrics.Config{
		Store: s.store,
		Endpoints: func() []string {
			var names []string
			for _, ep := range s.eng.Endpoints() {
				names = append(names, ep.Name)
			}
			return names
		},
		StoreStats: s.store.stats,
		Workers: func(ctx context.Context, endpoint string) (map[spool.WorkerState]int, error) {
			c, err := s.fleet.Counts(ctx, endpoint)
			return map[spool.WorkerState]int{spool.WorkerIdle: c.Idle, spool.WorkerRunning: c.Running,
				spool.WorkerInitializing: c.Initializing, spool.WorkerThrottled: c.Throttled, spool.WorkerUnhealthy: c.Unhealthy}, err
		},
		Logger: s.log,
	})
	if s.store.onCommit != nil {
		s.store.onCommit(m.StoreCommit)
	}
	stats := jobstats.New(s.store.clock) // the dashboard's last hour
	// One notifier for everything in this process that waits for a change (and, on PostgreSQL,
	// in the other replicas).
	hub := s.store.notifier
	s.webhooks, err = webhook.New(webhook.Config{
		Store:    s.store,
		Logger:   s.log,
		Observer: m,
		Notifier: hub,
		Clock:    s.store.clock,
		Leader:   s.store.leader,
		Endpoint: func(name string) (spool.Endpoint, bool) {
			ep, err := s.eng.Endpoint(name)
			return ep, err == nil
		},
		Concurrency:   cfg.Webhooks.Concurrency,
		PerHost:       cfg.Webhooks.PerHost,
		Retention:     cfg.Webhooks.Retention,
		AllowCIDRs:    cfg.WebhookAllowCIDRs,
		AllowLoopback: cfg.WebhookAllowLoopback,
	})
	if err != nil {
		return nil, err
	}
	eng, err := engine.New(engine.Config{
		Store:          s.store,
		Notifier:       hub,
		Clock:          s.store.clock,
		Leader:         s.store.leader,
		Observer:       engine.Observers(m, stats),
		Logger:         s.log,
		Retention:      spool.Retention{Run: cfg.Retention.Run, Sync: cfg.Retention.Runsync},
		MaxRetries:     cfg.Workers.MaxRetries,
		WebhookPayload: webhook.Payload,
		Sealer:         sealer,
	})
	if err != nil {
		return nil, err
	}
	if err := eng.Start(ctx); err != nil {
		return nil, err
	}
	s.eng = eng
	if s.fleet, err = fleet.New(fleet.Config{Engine: eng, Store: s.store, Logger: s.log, LostAfter: cfg.Workers.LostAfter,
		Leader: s.store.leader, OnColdStart: m.ColdStart}); err != nil {
		return nil, err
	}
	if err := s.fleet.Start(ctx); err != nil {
		return nil, err
	}
	for _, ep := range cfg.Endpoints {
		if _, _, err := eng.PutEndpoint(ctx, ep); err != nil {
			return nil, fmt.Errorf("endpoint %s from config: %w", ep.Name, err)
		}
	}
	// Under the server's secret, so that every replica takes the tokens of the workers the leader
	// starts (pods reach any replica through their Service).
	s.tokens = auth.NewWorkerTokensWithKey(sealer.Derive("worker tokens v1"))
	if s.keys, err = newKeyring(ctx, cfg, s.store, hub, s.store.clock, s.tokens); err != nil {
		return nil, err
	}
	// Deliveries left pending by the previous run (a crash, a restart) go out from here on.
	if err := s.webhooks.Start(ctx); err != nil {
		return nil, err
	}
	sessions, ok := s.store.Store.(store.SessionStore)
	if !ok {
		return nil, fmt.Errorf("the %T store keeps no dashboard sessions", s.store.Store)
	}
	dash, err := dashboard.New(dashboard.Config{Keys: s.keys, Sessions: sessions, Clock: s.store.clock, Logger: s.log})
	if err != nil {
		return nil, err
	}
	mounts := dash.Routes()
	mounts["GET /metrics"] = m.Handler()
	handler, err := httpapi.New(httpapi.Config{
		Engine:       eng,
		Fleet:        s.fleet,
		Keys:         s.keys,
		Logger:       s.log,
		TakeWait:     cfg.Workers.TakeWait,
		RunLimit:     cfg.Limits.Run,
		RunSyncLimit: cfg.Limits.Runsync,
		ResultLimit:  cfg.Limits.Result,
		ChunkLimit:   cfg.Limits.Chunk,
		Ready:        func() bool { return !s.draining.Load() },
		Mounts:       mounts,
		OnRequest:    m.Request,
		JobLog:       s.jobLog,
		Sessions:     dash,
		QueueDepth:   s.store.QueueDepth,
		Stats:        stats,
	})
	if err != nil {
		return nil, err
	}
	// What a client can hold before it is authenticated is bounded: connections (the cap closes
	// those that have not sent a whole request first), the time to send headers and body, and
	// the memory of bodies being received.
	conns := httplimit.NewConns(cfg.Limits.Connections, s.log)
	bodies, err := httplimit.NewBodies(httplimit.BodiesConfig{
		MaxBody: cfg.maxBody(), Memory: cfg.Limits.BodyMemory, Timeout: cfg.Limits.BodyTimeout, MinRate: cfg.Limits.BodyMinRate,
		Crowded: conns.Crowded,
	})
	if err != nil {
		return nil, err
	}
	m.ObserveLimits(func() metrics.LimitStats {
		c, b, f := conns.Stats(), bodies.Stats(), s.fleet.Bounds()
		return metrics.LimitStats{Conns: c.Open, MaxConns: conns.Max(), ConnsEvicted: c.Evicted, ConnsRefused: c.Refused,
			BodyBytes: b.InFlight, BodyMemory: b.Memory, BodiesRefused: b.Refused, BodiesSlow: b.TimedOut,
			StopSignals: f.StopSignals, MaxStopSignals: f.MaxStopSignals, Sightings: f.Sightings, MaxSightings: f.MaxSightings}
	})
	if cfg.TLS.CertFile != "" {
		if s.cert, err = loadCertificate(cfg.TLS.CertFile, cfg.TLS.KeyFile); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	s.ln = conns.Listener(ln)
	s.http = &http.Server{
		Handler:           bodies.Handler(handler),
		ConnState:         conns.ConnState,
		ReadHeaderTimeout: 10 * time.Second,
		// A ping listing fleet.MaxPingedJobs ids fits; the default (1 MB) per connection does
		// not need to.
		MaxHeaderBytes: 128 << 10,
		IdleTimeout:    2 * time.Minute,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	if s.cert != nil {
		s.http.TLSConfig = s.cert.config()
	}
	if err := s.openAutoscaler(ctx, m.WorkerRestart); err != nil {
		return nil, err
	}
	return s, nil
}

// URL is the server's base URL, e.g. http://127.0.0.1:8080 (https with a certificate).
func (s *server) URL() string {
	if s.cert != nil {
		return "https://" + s.ln.Addr().String()
	}
	return "http://" + s.ln.Addr().String()
}

// reloadOnHangup loads the TLS certificate again at each SIGHUP, until the returned function is
// called.
func (s *server) reloadOnHangup() func() {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-hup:
				s.cert.reloadAndLog(s.log)
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
	}
}

// abort closes whatever openServer opened, for error paths before run.
func (s *server) abort() {
	if s.ln != nil {
		_ = s.ln.Close()
	}
	if s.scaler != nil {
		s.scaler.Stop()
	}
	if s.fleet != nil {
		s.fleet.Stop()
	}
	if s.eng != nil {
		s.eng.Stop()
	}
	if s.webhooks != nil {
		s.webhooks.Stop()
	}
	if s.store != nil {
		_ = s.store.Close()
	}
}

// run serves until ctx ends, then shuts down in order: beforeStop (dev stops its in-process
// workers there, while the server can still take their results), stop handing out jobs
// (long-polls answer at once), let in-flight requests finish within the grace period, stop the
// sweeper, stop the webhook dispatcher, close the store.
func (s *server) run(ctx context.Context, beforeStop func()) error {
	serveErr := make(chan error, 1)
	if s.cert != nil {
		go func() { serveErr <- s.http.ServeTLS(s.ln, "", "") }()
		stopReload := s.reloadOnHangup()
		defer stopReload()
	} else {
		go func() { serveErr <- s.http.Serve(s.ln) }()
	}
	s.log.Info("spool listening", "url", s.URL(), "store", describeStore(s.cfg), "endpoints", len(s.eng.Endpoints()))
	if s.cfg.Debug.PprofAddr != "" {
		stopPprof, err := s.servePprof(s.cfg.Debug.PprofAddr)
		if err != nil {
			s.abort()
			return err
		}
		defer stopPprof()
	}
	if err := s.scaler.Start(ctx); err != nil {
		s.log.Error("the autoscaler did not start; endpoints with a worker spec get no workers", "err", err)
	}

	select {
	case err := <-serveErr:
		s.abort()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down; a second signal exits at once", "grace", s.cfg.ShutdownGrace)
	if beforeStop != nil {
		beforeStop()
	}
	// Spool's own workers drain first (SIGTERM, SIGKILL after workers.stopGrace), while the server
	// still takes their results.
	s.scaler.Stop()
	s.draining.Store(true)
	s.eng.Drain()
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownGrace)
	defer cancel()
	if err := s.http.Shutdown(shutCtx); err != nil {
		s.log.Warn("requests still running after the grace period were cut off", "err", err)
		_ = s.http.Close()
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Warn("serve", "err", err)
	}
	s.fleet.Stop()
	s.eng.Stop()
	// Webhooks stop after the requests drained and the sweeper stopped (no more terminal
	// transitions), before the store closes: attempts in flight get a grace, then their claims
	// are given back for the next start.
	s.webhooks.Stop()
	if err := s.store.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	s.log.Info("stopped cleanly")
	return nil
}

// servePprof serves Go's profiles on their own listener, to admin keys only, until the returned
// stop is called.
func (s *server) servePprof(addr string) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("debug.pprofAddr: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := s.keys.Check(r, auth.Admin, "", false); err != nil {
				wire.WriteError(w, err)
				return
			}
			mux.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(ln) }()
	s.log.Info("pprof listening (admin keys only)", "url", "http://"+ln.Addr().String()+"/debug/pprof/")
	return func() { _ = srv.Close() }, nil
}

// newKeyring combines the config file's keys, SPOOL_ADMIN_KEY and the stored keys.
func newKeyring(ctx context.Context, cfg *config, st store.Store, n notify.Notifier, clk clock.Clock, tokens *auth.WorkerTokens) (*auth.Keyring, error) {
	static := append([]spool.Key(nil), cfg.Keys...)
	if cfg.AdminKey != "" {
		static = append(static, auth.EnvAdminKey(cfg.AdminKey))
	}
	return auth.NewKeyring(ctx, auth.Config{Store: st, Static: static, Clock: clk, Notifier: n, Tokens: tokens})
}

// firstStartKeys creates an admin and a worker key when no admin key exists anywhere (config,
// SPOOL_ADMIN_KEY, the store), and prints them once: without an admin key nobody could make
// endpoints or keys, and only the hashes are kept.
func firstStartKeys(ctx context.Context, keys *auth.Keyring, out io.Writer) error {
	all, err := keys.List(ctx)
	if err != nil {
		return err
	}
	for _, k := range all {
		if k.Scope == spool.ScopeAdmin {
			return nil
		}
	}
	admin, _, err := keys.Create(ctx, spool.Key{Name: "admin", Scope: spool.ScopeAdmin})
	if err != nil {
		return err
	}
	worker, _, err := keys.Create(ctx, spool.Key{Name: "worker", Scope: spool.ScopeWorker})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, `
Spool created two API keys. They are shown only now; only their hashes are stored.

  admin key:   %s
  worker key:  %s

Use the admin key for the client API and /api, and give the worker key to workers
(RUNPOD_AI_API_KEY). Create more with POST /api/keys.

`, admin, worker)
	return nil
}
