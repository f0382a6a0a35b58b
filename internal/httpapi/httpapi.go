// Package httpapi is Spool's HTTP surface: the RunPod client API under /v2/{endpoint}/ (run,
// runsync, status, status-sync, stream, cancel, retry, purge-queue, health), the worker protocol
// (mounted from workerapi), the admin API under /api/, and /healthz and /readyz. It decodes
// requests, calls the engine (jobs, endpoints) and the fleet (workers) and encodes answers; it
// never touches the store.
package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/auth"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/fleet"
	"github.com/spool-run/spool/internal/joblog"
	"github.com/spool-run/spool/internal/jobstats"
	"github.com/spool-run/spool/internal/wire"
	"github.com/spool-run/spool/internal/workerapi"
)

// Config configures the HTTP handler.
type Config struct {
	// Engine runs the jobs. Required.
	Engine *engine.Engine
	// Fleet records the workers (/api/workers, /health, wait reasons). Required.
	Fleet *fleet.Fleet
	// Keys authenticates every /v2 and /api request. Required.
	Keys *auth.Keyring
	// Logger defaults to slog.Default(). Each request is logged at debug level.
	Logger *slog.Logger
	// Clock defaults to the engine's clock.
	Clock clock.Clock

	// RunLimit bounds a /run body. Defaults to DefaultRunLimit.
	RunLimit int64
	// RunSyncLimit bounds a /runsync body. Defaults to 20 MB.
	RunSyncLimit int64
	// ResultLimit bounds a worker's job-done body. Defaults to 20 MB.
	ResultLimit int64
	// ChunkLimit bounds a worker's job-stream body. Defaults to 1 MB.
	ChunkLimit int64
	// AdminLimit bounds an /api body. Defaults to 1 MB.
	AdminLimit int64

	// TakeWait is how long job-take and job-stop long-polls wait before answering 204; under 90 s.
	// Defaults to 30 s.
	TakeWait time.Duration
	// RunSyncWait is the default of /runsync?wait=. Defaults to 90 s.
	RunSyncWait time.Duration
	// StatusSyncWait is the default of /status-sync?wait=. Defaults to 90 s.
	StatusSyncWait time.Duration
	// SSEKeepAlive is how often a Server-Sent Events stream with nothing new sends a comment to
	// keep proxies from closing it. Defaults to 15 s.
	SSEKeepAlive time.Duration
	// JobLog, when set, is the per-job log of worker lines and progress updates
	// (GET /api/jobs/{id}/logs); without it that route answers an empty log.
	JobLog *joblog.Index
	// Sessions, when set, lets the dashboard's signed-in browsers use /api and the client API
	// without an Authorization header.
	Sessions Sessions
	// QueueDepth, when set, splits GET /api/overview's queue by priority; without it every
	// queued job counts as normal.
	QueueDepth func(ctx context.Context, endpoint string) (spool.QueueDepth, error)
	// Stats, when set, gives GET /api/overview each endpoint's last hour.
	Stats *jobstats.Recorder
	// EventsEvery paces GET /api/events. Defaults to 2 s.
	EventsEvery time.Duration
	// OnRequest, when set, is told of each answered request: the route pattern that served it
	// ("" when none did), its status and how long it took (metrics).
	OnRequest func(route string, code int, d time.Duration)

	// Ready reports whether the server takes traffic; /readyz answers 503 once it reports false
	// (a draining server). Nil means always ready.
	Ready func() bool
	// Mounts are extra handlers on the same mux, by ServeMux pattern (e.g. "GET /metrics",
	// "/dashboard/"). They do their own authentication.
	Mounts map[string]http.Handler
}

// Default body limits (docs/contract.md §2).
const (
	DefaultRunLimit     = 10 << 20
	DefaultRunSyncLimit = 20 << 20
	DefaultResultLimit  = 20 << 20
	DefaultChunkLimit   = 1 << 20
	DefaultAdminLimit   = 1 << 20
)

// Wait bounds, in milliseconds (docs/contract.md §2).
const (
	MinRunSyncWaitMs = 1000
	MaxWaitMs        = 300000
)

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil && c.Engine != nil {
		c.Clock = c.Engine.Config().Clock
	}
	if c.RunLimit == 0 {
		c.RunLimit = DefaultRunLimit
	}
	if c.RunSyncLimit == 0 {
		c.RunSyncLimit = DefaultRunSyncLimit
	}
	if c.ResultLimit == 0 {
		c.ResultLimit = DefaultResultLimit
	}
	if c.ChunkLimit == 0 {
		c.ChunkLimit = DefaultChunkLimit
	}
	if c.AdminLimit == 0 {
		c.AdminLimit = DefaultAdminLimit
	}
	if c.TakeWait == 0 {
		c.TakeWait = 30 * time.Second
	}
	if c.RunSyncWait == 0 {
		c.RunSyncWait = 90 * time.Second
	}
	if c.StatusSyncWait == 0 {
		c.StatusSyncWait = 90 * time.Second
	}
	if c.SSEKeepAlive == 0 {
		c.SSEKeepAlive = 15 * time.Second
	}
	if c.EventsEvery == 0 {
		c.EventsEvery = eventsEveryDefault
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Engine == nil || c.Fleet == nil:
		return errors.New("httpapi: Engine and Fleet are required")
	case c.Keys == nil:
		return errors.New("httpapi: Keys is required")
	case c.RunLimit < 0 || c.RunSyncLimit < 0 || c.ResultLimit < 0 || c.ChunkLimit < 0 || c.AdminLimit < 0:
		return errors.New("httpapi: body limits must not be negative")
	case c.RunSyncWait < time.Duration(MinRunSyncWaitMs)*time.Millisecond || c.RunSyncWait > time.Duration(MaxWaitMs)*time.Millisecond:
		return errors.New("httpapi: RunSyncWait must be between 1 s and 300 s")
	case c.StatusSyncWait < 0 || c.StatusSyncWait > time.Duration(MaxWaitMs)*time.Millisecond:
		return errors.New("httpapi: StatusSyncWait must be between 0 and 300 s")
	case c.SSEKeepAlive < 0 || c.EventsEvery < 0:
		return errors.New("httpapi: SSEKeepAlive and EventsEvery must not be negative")
	}
	return nil
}

type server struct {
	cfg   Config
	eng   *engine.Engine
	fleet *fleet.Fleet
	keys  *auth.Keyring
	log   *slog.Logger
}

// New returns the handler of every Spool route. Paths with doubled slashes (the RunPod Go SDK
// sends /v2//{endpoint}/run) are collapsed before routing; unknown routes get a JSON 404 and a
// wrong method a JSON 405.
func New(cfg Config) (http.Handler, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &server{cfg: cfg, eng: cfg.Engine, fleet: cfg.Fleet, keys: cfg.Keys, log: cfg.Logger}
	mux := http.NewServeMux()
	s.routesClient(mux)
	s.routesOpenAI(mux)
	err := workerapi.Register(mux, workerapi.Config{
		Engine: cfg.Engine, Fleet: cfg.Fleet, Keys: cfg.Keys, Logger: cfg.Logger,
		TakeWait: cfg.TakeWait, ResultLimit: cfg.ResultLimit, ChunkLimit: cfg.ChunkLimit,
		OnProgress: cfg.JobLog.Progress,
	})
	if err != nil {
		return nil, err
	}
	s.routesAdmin(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		wire.WriteJSON(w, http.StatusOK, okStatus)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Ready != nil && !s.cfg.Ready() {
			wire.WriteError(w, &spool.Error{Code: spool.CodeUnavailable, Message: "server is not ready"})
			return
		}
		wire.WriteJSON(w, http.StatusOK, okStatus)
	})
	for pattern, h := range cfg.Mounts {
		mux.Handle(pattern, h)
	}
	return s.middleware(mux), nil
}

var okStatus = []byte(`{"status":"ok"}`)

// fail renders err, logging internal errors with the request's method and path.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	wire.WriteErrorLog(w, s.log.With("method", r.Method, "path", r.URL.Path), err)
}

// middleware collapses doubled slashes, turns the mux's plain-text 404 and 405 into JSON errors,
// recovers panics and logs each request at debug level (never headers or bodies).
func (s *server) middleware(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		if strings.Contains(r.URL.Path, "//") {
			r.URL.Path = collapseSlashes(r.URL.Path)
			if r.URL.RawPath != "" {
				r.URL.RawPath = collapseSlashes(r.URL.RawPath)
			}
		}
		rec := &recorder{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic in handler", "method", r.Method, "path", r.URL.Path, "panic", v)
				if !rec.wrote {
					wire.WriteJSON(rec, http.StatusInternalServerError, []byte(`{"error":"internal error"}`))
				}
			}
			status := rec.status
			if status == 0 {
				status = http.StatusOK
			}
			d := time.Since(start)
			if id := r.PathValue("id"); id != "" {
				// The job the request is about, so that its requests can be found by its id.
				s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", status, "duration", d, "job", id)
			} else {
				s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", status, "duration", d)
			}
			if s.cfg.OnRequest != nil {
				s.cfg.OnRequest(r.Pattern, status, d)
			}
		}()
		mux.ServeHTTP(rec, r)
	})
}

func collapseSlashes(p string) string {
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		if p[i] == '/' && i > 0 && p[i-1] == '/' {
			continue
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// recorder notes the status for the request log and replaces the mux's own plain-text 404 and
// 405 answers (handlers here never answer text/plain) with JSON error bodies.
type recorder struct {
	http.ResponseWriter
	status  int
	wrote   bool
	swallow bool
}

func (r *recorder) WriteHeader(code int) {
	if r.wrote {
		return
	}
	r.wrote = true
	r.status = code
	h := r.Header()
	if (code == http.StatusNotFound || code == http.StatusMethodNotAllowed) &&
		strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		msg := "no such route"
		if code == http.StatusMethodNotAllowed {
			msg = "method not allowed; allowed: " + h.Get("Allow")
		}
		body := wire.NewObject().String("error", msg).Bytes()
		h.Del("Content-Length")
		h.Del("X-Content-Type-Options")
		h.Set("Content-Type", "application/json")
		r.ResponseWriter.WriteHeader(code)
		_, _ = r.ResponseWriter.Write(body)
		r.swallow = true
		return
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if !r.wrote {
		r.WriteHeader(http.StatusOK)
	}
	if r.swallow {
		return len(b), nil
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (Flush, deadlines).
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
