package spoolclient_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/auth"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/httpapi"
	"github.com/spool-run/spool/internal/spooltest"
	"github.com/spool-run/spool/spoolclient"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const adminSecret = "spool_admin_for_client_tests"

// env is a real Spool server on loopback, as `spool serve` assembles it: SQLite on a temp dir, the
// engine on a fake clock (so that waits, TTLs and timeouts move only when a test says so), real
// keys, the real HTTP handler. The test plays the worker over the worker protocol.
type env struct {
	t    *testing.T
	ctx  context.Context
	fake *clock.Fake
	eng  *engine.Engine
	keys *auth.Keyring
	srv  *httptest.Server
	rec  *recorder

	c  *spoolclient.Client   // admin key, requests recorded
	ep *spoolclient.Endpoint // endpoint "ep" of c
}

type envSettings struct {
	api       httpapi.Config
	endpoints []spool.Endpoint
	realClock bool
}

type envOption func(*envSettings)

// withRealClock runs the engine on the wall clock, for tests of client-side deadlines.
func withRealClock() envOption { return func(s *envSettings) { s.realClock = true } }

func withRunLimit(n int64) envOption { return func(s *envSettings) { s.api.RunLimit = n } }

func withEndpoint(ep spool.Endpoint) envOption {
	return func(s *envSettings) { s.endpoints = append(s.endpoints, ep) }
}

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	s := envSettings{endpoints: []spool.Endpoint{spool.NewEndpoint("ep"), spool.NewEndpoint("other")}}
	for _, o := range opts {
		o(&s)
	}
	var fake *clock.Fake
	if !s.realClock {
		fake = clock.NewFake(spooltest.Start)
	}
	srv := spooltest.NewServer(t, spooltest.Options{
		Clock:       fake,
		AdminSecret: adminSecret,
		Endpoints:   s.endpoints,
		API: func(c *httpapi.Config) {
			cfg := s.api
			cfg.Engine, cfg.Fleet, cfg.Keys, cfg.Logger, cfg.TakeWait = c.Engine, c.Fleet, c.Keys, c.Logger, 5*time.Second
			*c = cfg
		},
	})
	e := &env{t: t, ctx: context.Background(), fake: fake, eng: srv.Engine, keys: srv.Keys, srv: srv.HTTP}
	e.rec = &recorder{base: e.srv.Client().Transport}
	e.c = spoolclient.New(e.srv.URL+"/v2", adminSecret, spoolclient.WithHTTPClient(&http.Client{Transport: e.rec}))
	e.ep = e.c.Endpoint("ep")
	return e
}

// key makes an API key and returns its secret.
func (e *env) key(k spool.Key) string {
	secret, _, err := e.keys.Create(e.ctx, k)
	require.NoError(e.t, err)
	return secret
}

// client returns a client of this server with another key (requests not recorded).
func (e *env) client(key string) *spoolclient.Client {
	return spoolclient.New(e.srv.URL+"/v2", key, spoolclient.WithHTTPClient(e.srv.Client()))
}

// advanceWhenWaiting runs f, which starts a long-poll in the background, waits until the
// long-poll's timer is set, and moves the clock by d: the long-poll's wait runs out.
func (e *env) advanceWhenWaiting(d time.Duration, f func()) {
	e.t.Helper()
	base := e.fake.Timers()
	f()
	spooltest.WaitTimers(e.t, e.fake, base+1)
	e.fake.Advance(d)
}

// worker is the test acting as a worker over the RunPod worker protocol, with the admin key sent
// raw as runpod-python sends its key.
type worker struct {
	e    *env
	ep   string
	name string
}

func (e *env) worker(name string) *worker { return &worker{e: e, ep: "ep", name: name} }

func (w *worker) post(path, body string) (int, string) {
	w.e.t.Helper()
	req, err := http.NewRequestWithContext(w.e.ctx, http.MethodPost, w.e.srv.URL+path, strings.NewReader(body))
	require.NoError(w.e.t, err)
	req.Header.Set("Authorization", adminSecret)
	res, err := w.e.srv.Client().Do(req)
	require.NoError(w.e.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(w.e.t, err)
	return res.StatusCode, string(b)
}

// take takes the next job, which must be queued already, and returns its payload.
func (w *worker) take() map[string]json.RawMessage {
	w.e.t.Helper()
	req, err := http.NewRequestWithContext(w.e.ctx, http.MethodGet,
		w.e.srv.URL+"/v2/"+w.ep+"/job-take/"+w.name+"?gpu=none&job_in_progress=0", nil)
	require.NoError(w.e.t, err)
	req.Header.Set("Authorization", adminSecret)
	res, err := w.e.srv.Client().Do(req)
	require.NoError(w.e.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(w.e.t, err)
	require.Equal(w.e.t, http.StatusOK, res.StatusCode, string(b))
	var m map[string]json.RawMessage
	require.NoError(w.e.t, json.Unmarshal(b, &m), string(b))
	return m
}

// takeID takes the next job and returns its id.
func (w *worker) takeID() string {
	w.e.t.Helper()
	var id string
	require.NoError(w.e.t, json.Unmarshal(w.take()["id"], &id))
	return id
}

func (w *worker) chunk(id, output string) {
	w.e.t.Helper()
	code, body := w.post("/v2/"+w.ep+"/job-stream/"+w.name+"/"+id, `{"output":`+output+`}`)
	require.Equal(w.e.t, http.StatusOK, code, body)
}

func (w *worker) progress(id, output string) {
	w.e.t.Helper()
	code, body := w.post("/v2/"+w.ep+"/job-done/"+w.name+"/"+id, `{"status":"IN_PROGRESS","output":`+output+`}`)
	require.Equal(w.e.t, http.StatusOK, code, body)
}

// done posts the result body (e.g. {"output":...} or {"error":"..."}).
func (w *worker) done(id, body string) {
	w.e.t.Helper()
	code, res := w.post("/v2/"+w.ep+"/job-done/"+w.name+"/"+id+"?isStream=false", body)
	require.Equal(w.e.t, http.StatusOK, code, res)
}

// recorder is an http.RoundTripper that notes every request ("GET /v2/ep/status/ID") and can tell
// a test when a request matching a path fragment is sent.
type recorder struct {
	base http.RoundTripper

	mu      sync.Mutex
	reqs    []string
	headers []http.Header
	watch   map[string]chan struct{}
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.reqs = append(r.reqs, req.Method+" "+req.URL.RequestURI())
	r.headers = append(r.headers, req.Header.Clone())
	for frag, ch := range r.watch {
		if strings.Contains(req.URL.Path, frag) {
			close(ch)
			delete(r.watch, frag)
		}
	}
	r.mu.Unlock()
	return r.base.RoundTrip(req)
}

// on returns a channel closed when the next request whose path contains frag is sent.
func (r *recorder) on(frag string) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.watch == nil {
		r.watch = map[string]chan struct{}{}
	}
	ch := make(chan struct{})
	r.watch[frag] = ch
	return ch
}

// requests returns the requests sent so far and forgets them.
func (r *recorder) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.reqs
	r.reqs, r.headers = nil, nil
	return out
}

func (r *recorder) lastHeader() http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.headers[len(r.headers)-1]
}

// recv receives from ch, failing the test after 10 s.
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting")
	}
	var zero T
	return zero
}

func wait(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting")
	}
}
