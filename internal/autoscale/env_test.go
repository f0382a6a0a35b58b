package autoscale_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/auth"
	"github.com/spool-run/spool/internal/autoscale"
	"github.com/spool-run/spool/internal/autoscale/process"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/fleet"
	"github.com/spool-run/spool/internal/httpapi"
	"github.com/spool-run/spool/store/sqlitestore"
)

// workerBin is the test worker (testdata/worker), built once by TestMain.
var workerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "spool-autoscale-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workerBin = filepath.Join(dir, "worker")
	out, err := exec.Command("go", "build", "-o", workerBin, "./testdata/worker").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build the test worker: %v\n%s", err, out)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	// A server variable that workers must not inherit (TestWorkerEnvironment).
	if err := os.Setenv("SPOOL_TEST_SERVER_SECRET", "leak"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		_ = os.RemoveAll(dir)
		os.Exit(code)
	}))
}

const adminSecret = "spool_admin_for_autoscale_tests"

// env is a real server on loopback (SQLite, engine and HTTP API on a fake clock) with an
// autoscaler running real worker processes, driven tick by tick.
type env struct {
	t     *testing.T
	ctx   context.Context
	fake  *clock.Fake
	eng   *engine.Engine
	fleet *fleet.Fleet
	as    *autoscale.Autoscaler
	srv   *httptest.Server
	dir   string
}

type envOpts struct {
	engine func(*engine.Config)
	scaler func(*autoscale.Config)
	// provider wraps the process provider (to watch stops, kills and exits).
	provider func(autoscale.Provider) autoscale.Provider
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "spool.db"))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, st.Close()) })
	fake := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	quiet := slog.New(slog.DiscardHandler)
	ecfg := engine.Config{Store: st, Clock: fake, SweepInterval: time.Hour, Logger: quiet}
	if o.engine != nil {
		o.engine(&ecfg)
	}
	eng, err := engine.New(ecfg)
	require.NoError(t, err)
	require.NoError(t, eng.Start(ctx))
	fl, err := fleet.New(fleet.Config{Engine: eng, Store: st, Logger: quiet})
	require.NoError(t, err)
	// The workers get per-worker tokens, as with spool serve.
	tokens := auth.NewWorkerTokens()
	keys, err := auth.NewKeyring(ctx, auth.Config{Store: st, Clock: fake, Static: []spool.Key{auth.EnvAdminKey(adminSecret)}, Tokens: tokens})
	require.NoError(t, err)
	h, err := httpapi.New(httpapi.Config{Engine: eng, Fleet: fl, Keys: keys, Logger: quiet})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	prov, err := process.New(process.Config{Clock: fake})
	require.NoError(t, err)
	var p autoscale.Provider = prov
	if o.provider != nil {
		p = o.provider(prov)
	}
	acfg := autoscale.Config{
		Engine: eng, Fleet: fl, Store: st, Provider: p, ServerURL: srv.URL, WorkerKey: tokens.Mint, Clock: fake, Logger: quiet,
		PingInterval: time.Second,
	}
	if o.scaler != nil {
		o.scaler(&acfg)
	}
	as, err := autoscale.New(acfg)
	require.NoError(t, err)
	// Cleanup runs last-registered first: stop the workers while the server still answers,
	// then make long-polls answer, then close the server.
	t.Cleanup(srv.Close)
	t.Cleanup(eng.Stop)
	t.Cleanup(as.Stop)
	return &env{t: t, ctx: ctx, fake: fake, eng: eng, fleet: fl, as: as, srv: srv, dir: t.TempDir()}
}

// endpoint creates (or replaces) an endpoint run by the test worker.
func (e *env) endpoint(name string, mod func(*spool.Endpoint)) spool.Endpoint {
	e.t.Helper()
	ep := spool.NewEndpoint(name)
	ep.Worker = &spool.WorkerSpec{Command: workerBin, Dir: e.dir} // workers make their folders there
	if mod != nil {
		mod(&ep)
	}
	ep, _, err := e.eng.PutEndpoint(e.ctx, ep)
	require.NoError(e.t, err)
	return ep
}

func (e *env) submit(ep string, input string, low bool) string {
	e.t.Helper()
	j, err := e.eng.Submit(e.ctx, engine.SubmitParams{Endpoint: ep, Input: json.RawMessage(input), LowPriority: low})
	require.NoError(e.t, err)
	return j.ID
}

func (e *env) job(id string) *spool.Job {
	e.t.Helper()
	j, err := e.eng.JobAnyEndpoint(e.ctx, id)
	require.NoError(e.t, err)
	return j
}

func (e *env) tick() {
	e.t.Helper()
	require.NoError(e.t, e.as.Tick(e.ctx))
}

func (e *env) advance(d time.Duration) {
	e.fake.Advance(d)
	e.tick()
}

// until ticks until cond holds: for what real worker processes must do (start, take, exit).
// It wakes on worker exits and otherwise looks again every 20 ms, for at most 30 s.
func (e *env) until(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		e.tick()
		if cond() {
			return
		}
		select {
		case <-e.as.Wake():
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			e.t.Fatalf("timed out waiting until %s; workers: %+v", what, e.workers(""))
		}
	}
}

func (e *env) state(id string, want spool.State) func() bool {
	return func() bool { return e.job(id).State == want }
}

func (e *env) workers(ep string) []fleet.Worker {
	e.t.Helper()
	ws, err := e.fleet.Workers(e.ctx, ep)
	require.NoError(e.t, err)
	return ws
}

// counts is /health's count of an endpoint's workers.
func (e *env) counts(ep string) fleet.Counts {
	e.t.Helper()
	c, err := e.fleet.Counts(e.ctx, ep)
	require.NoError(e.t, err)
	return c
}

// states counts an endpoint's workers by state.
func (e *env) states(ep string) map[spool.WorkerState]int {
	m := map[spool.WorkerState]int{}
	for _, w := range e.workers(ep) {
		m[w.State]++
	}
	return m
}

// file returns a path in the test's directory and a function that creates it (releasing the
// jobs that wait for it).
func (e *env) file(name string) (string, func()) {
	p := filepath.Join(e.dir, name)
	return p, func() { require.NoError(e.t, os.WriteFile(p, nil, 0o600)) }
}

func (e *env) get(path string, v any) {
	e.t.Helper()
	req, err := http.NewRequestWithContext(e.ctx, http.MethodGet, e.srv.URL+path, nil)
	require.NoError(e.t, err)
	req.Header.Set("Authorization", "Bearer "+adminSecret)
	res, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(e.t, err)
	require.Equal(e.t, http.StatusOK, res.StatusCode, string(body))
	require.NoError(e.t, json.Unmarshal(body, v))
}

type apiJob struct {
	Status     string `json:"status"`
	Position   int    `json:"position"`
	WaitMs     int64  `json:"waitMs"`
	WaitReason string `json:"waitReason"`
	Output     any    `json:"output"`
	Error      string `json:"error"`
}

// wait returns a queued job's position and wait reason from GET /api/jobs/{id}.
func (e *env) wait(id string) (int, string) {
	var j apiJob
	e.get("/api/jobs/"+id, &j)
	return j.Position, j.WaitReason
}

func (e *env) requireWait(id string, pos int, reason fleet.WaitReason) {
	e.t.Helper()
	p, r := e.wait(id)
	require.Equal(e.t, string(reason), r, "wait reason of %s", id)
	require.Equal(e.t, pos, p, "position of %s", id)
}

func jsonStr(v string) string { b, _ := json.Marshal(v); return string(b) }

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// recProvider wraps a provider and records what the autoscaler asks of it and each exit. With
// hold set, exits are not passed on until the test calls deliver.
type recProvider struct {
	autoscale.Provider
	hold bool

	mu      sync.Mutex
	started []autoscale.WorkerSpec
	stopped map[string]bool
	killed  map[string]bool
	exits   chan heldExit
}

type heldExit struct {
	autoscale.Exit
	deliver func() // nil unless held
}

func newRecProvider(hold bool) (*recProvider, func(autoscale.Provider) autoscale.Provider) {
	r := &recProvider{hold: hold, stopped: map[string]bool{}, killed: map[string]bool{}, exits: make(chan heldExit, 1000)}
	return r, func(p autoscale.Provider) autoscale.Provider { r.Provider = p; return r }
}

func (r *recProvider) Start(ctx context.Context, w autoscale.WorkerSpec, exited func(autoscale.Exit)) error {
	r.mu.Lock()
	r.started = append(r.started, w)
	r.mu.Unlock()
	return r.Provider.Start(ctx, w, func(x autoscale.Exit) {
		if r.hold {
			r.exits <- heldExit{x, func() { exited(x) }}
			return
		}
		exited(x)
		r.exits <- heldExit{Exit: x}
	})
}

func (r *recProvider) Stop(id string, grace time.Duration) {
	r.mu.Lock()
	r.stopped[id] = true
	r.mu.Unlock()
	r.Provider.Stop(id, grace)
}

func (r *recProvider) Kill(id string) {
	r.mu.Lock()
	r.killed[id] = true
	r.mu.Unlock()
	r.Provider.Kill(id)
}

func (r *recProvider) wasStopped(id string) (stopped, killed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped[id], r.killed[id]
}

func (r *recProvider) starts() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.started)
}

// exit waits for the exit of worker id (skipping others), for at most 30 s.
func (r *recProvider) exit(t *testing.T, id string) heldExit {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case x := <-r.exits:
			if x.ID == id {
				return x
			}
			if x.deliver != nil {
				x.deliver()
			}
		case <-deadline:
			t.Fatalf("worker %s did not exit", id)
		}
	}
}
