// Package spooltest starts a real Spool server in-process, for tests only: SQLite on a temp dir,
// the engine and its fleet, a keyring with a static admin key, the HTTP API on an httptest server.
// It is not part of any binary.
package spooltest

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/auth"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/fleet"
	"github.com/spool-run/spool/internal/httpapi"
	"github.com/spool-run/spool/store/sqlitestore"
)

// Start is the time the tests' fake clocks start at.
var Start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// DefaultAdminSecret is the admin key secret when Options.AdminSecret is empty.
const DefaultAdminSecret = "spool_admin_for_tests"

// Options are what the tests vary. The zero value is a server on the wall clock with no endpoints.
type Options struct {
	// Clock is the engine's and the keyring's clock; nil runs them on the wall clock.
	Clock *clock.Fake
	// AdminSecret is the static admin key (auth.EnvAdminKey). Defaults to DefaultAdminSecret.
	AdminSecret string
	// Endpoints are created before the keys.
	Endpoints []spool.Endpoint
	// Keys are created in order; their secrets are in Server.Secrets under their names.
	Keys []spool.Key
	// Engine changes the engine config (Store, Clock, a discarding Logger and an hourly sweep set).
	Engine func(*engine.Config)
	// Fleet changes the fleet config (Engine, Store and a discarding Logger set).
	Fleet func(*fleet.Config)
	// API changes the httpapi config (Engine, Fleet, Keys and a discarding Logger set).
	API func(*httpapi.Config)
	// Handler, if set, builds the served handler instead of httpapi.New (API is then unused).
	Handler func(*engine.Engine, *fleet.Fleet, *auth.Keyring) (http.Handler, error)
}

// Server is a started server. Its cleanups are registered on the test: the engine stops first
// (long-polls answer at once), then the HTTP server closes, then the store. The fleet's sweep is
// not started: tests call Fleet.Sweep.
type Server struct {
	Store    *sqlitestore.Store
	Engine   *engine.Engine
	Fleet    *fleet.Fleet
	Keys     *auth.Keyring
	Tokens   *auth.WorkerTokens // the keyring's per-worker tokens
	Clock    *clock.Fake        // nil on the wall clock
	HTTP     *httptest.Server
	URL      string
	AdminKey string            // the admin key's raw secret
	Secrets  map[string]string // raw secrets of Options.Keys, by key name
}

// NewServer starts a server for t. With a fake clock it returns once the engine's sweeper has set
// its timer, so that tests counting timers start from one.
func NewServer(t testing.TB, o Options) *Server {
	t.Helper()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "spool.db"))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, st.Close()) })
	s := &Server{Store: st, Clock: o.Clock, AdminKey: o.AdminSecret, Secrets: map[string]string{}}
	if s.AdminKey == "" {
		s.AdminKey = DefaultAdminSecret
	}
	var clk clock.Clock = clock.Real{}
	if o.Clock != nil {
		clk = o.Clock
	}
	quiet := slog.New(slog.DiscardHandler)
	ecfg := engine.Config{Store: st, Clock: clk, SweepInterval: time.Hour, Logger: quiet}
	if o.Engine != nil {
		o.Engine(&ecfg)
	}
	s.Engine, err = engine.New(ecfg)
	require.NoError(t, err)
	require.NoError(t, s.Engine.Start(ctx))
	stopEngine := true
	defer func() {
		if stopEngine { // a failed require above: do not leak the engine's goroutines
			s.Engine.Stop()
		}
	}()
	fcfg := fleet.Config{Engine: s.Engine, Store: st, Logger: quiet}
	if o.Fleet != nil {
		o.Fleet(&fcfg)
	}
	s.Fleet, err = fleet.New(fcfg)
	require.NoError(t, err)
	for _, ep := range o.Endpoints {
		_, _, err := s.Engine.PutEndpoint(ctx, ep)
		require.NoError(t, err)
	}
	s.Tokens = auth.NewWorkerTokens()
	s.Keys, err = auth.NewKeyring(ctx, auth.Config{Store: st, Clock: clk, Static: []spool.Key{auth.EnvAdminKey(s.AdminKey)}, Tokens: s.Tokens})
	require.NoError(t, err)
	for _, k := range o.Keys {
		secret, _, err := s.Keys.Create(ctx, k)
		require.NoError(t, err)
		s.Secrets[k.Name] = secret
	}
	var h http.Handler
	if o.Handler != nil {
		h, err = o.Handler(s.Engine, s.Fleet, s.Keys)
	} else {
		cfg := httpapi.Config{Engine: s.Engine, Fleet: s.Fleet, Keys: s.Keys, Logger: quiet, QueueDepth: st.QueueDepth}
		if o.API != nil {
			o.API(&cfg)
		}
		h, err = httpapi.New(cfg)
	}
	require.NoError(t, err)
	s.HTTP = httptest.NewServer(h)
	s.URL = s.HTTP.URL
	t.Cleanup(s.HTTP.Close)
	t.Cleanup(s.Engine.Stop) // runs first: long-polls answer at once, so HTTP.Close does not wait
	stopEngine = false
	if o.Clock != nil {
		WaitTimers(t, o.Clock, 1) // the sweeper's timer
	}
	return s
}

// WaitTimers waits (at most 10 s) until the fake clock has at least n timers: a long-poll or
// another timed wait has started.
func WaitTimers(t testing.TB, fake *clock.Fake, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := fake.WaitTimers(ctx, n); err != nil {
		t.Fatal(err)
	}
}

// Leader is a leader.Leader a test turns on and off. Each question is signalled on Asked (which
// holds one unread question at most; Leading never blocks), so that a test knows a loop has
// asked.
type Leader struct {
	On    atomic.Bool
	Asked chan struct{}
}

// NewLeader returns a Leader that does not lead.
func NewLeader() *Leader { return &Leader{Asked: make(chan struct{}, 1)} }

// Leading implements leader.Leader.
func (l *Leader) Leading() bool {
	select {
	case l.Asked <- struct{}{}:
	default:
	}
	return l.On.Load()
}
