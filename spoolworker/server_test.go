package spoolworker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
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
	"github.com/spool-run/spool/internal/fleet"
	"github.com/spool-run/spool/internal/httpapi"
	"github.com/spool-run/spool/spoolworker"
	"github.com/spool-run/spool/store/sqlitestore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const adminSecret = "spool_admin_for_spoolworker_tests"

// waitLimit bounds every wait for something asynchronous; it is never reached when things work.
const waitLimit = 20 * time.Second

// server is a real Spool server (SQLite on a temp dir, the engine, the HTTP API) with a recording
// proxy in front of it that workers talk to.
type server struct {
	t         *testing.T
	ctx       context.Context
	eng       *engine.Engine
	fleet     *fleet.Fleet
	fake      *clock.Fake // nil: the wall clock
	srv       *httptest.Server
	proxy     *proxy
	workerKey string
	client    *http.Client
	// unblock releases handlers waiting on the test, before a test's workers are stopped at its end.
	unblock []func()
}

type serverOpts struct {
	// fakeClock gives the engine a fake clock: nothing times out on the server unless the test
	// moves it.
	fakeClock bool
}

func newServer(t *testing.T, o serverOpts) *server {
	t.Helper()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "spool.db"))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, st.Close()) })
	var clk clock.Clock = clock.Real{}
	s := &server{t: t, ctx: ctx}
	if o.fakeClock {
		s.fake = clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		clk = s.fake
	}
	quiet := slog.New(slog.DiscardHandler)
	s.eng, err = engine.New(engine.Config{Store: st, Clock: clk, Logger: quiet})
	require.NoError(t, err)
	require.NoError(t, s.eng.Start(ctx))
	t.Cleanup(s.eng.Stop)
	s.fleet, err = fleet.New(fleet.Config{Engine: s.eng, Store: st, Logger: quiet})
	require.NoError(t, err)
	_, _, err = s.eng.PutEndpoint(ctx, spool.NewEndpoint("ep"))
	require.NoError(t, err)
	keys, err := auth.NewKeyring(ctx, auth.Config{Store: st, Clock: clk, Static: []spool.Key{auth.EnvAdminKey(adminSecret)}})
	require.NoError(t, err)
	s.workerKey, _, err = keys.Create(ctx, spool.Key{Name: "w", Scope: spool.ScopeWorker, Endpoints: []string{"ep"}})
	require.NoError(t, err)
	h, err := httpapi.New(httpapi.Config{Engine: s.eng, Fleet: s.fleet, Keys: keys, Logger: quiet, TakeWait: 30 * time.Second})
	require.NoError(t, err)
	s.srv = httptest.NewServer(h)
	t.Cleanup(s.srv.Close)
	s.proxy = newProxy(t, s.srv.URL)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	s.client = &http.Client{Transport: tr}
	t.Cleanup(tr.CloseIdleConnections)
	// Runs before the closes above: long-polls still open answer at once.
	t.Cleanup(s.eng.Drain)
	return s
}

// config returns a worker config for endpoint "ep" through the proxy, with fast retries.
func (s *server) config() spoolworker.Config {
	cfg := spoolworker.ConfigFor(s.proxy.URL(), "ep", s.workerKey)
	cfg.RetryBackoff = []time.Duration{10 * time.Millisecond, 20 * time.Millisecond}
	cfg.PollFloor = 50 * time.Millisecond
	cfg.Logger = testLogger()
	return cfg
}

func testLogger() *slog.Logger {
	if os.Getenv("SPOOLWORKER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// running is a worker whose Run goroutine a test started.
type running struct {
	w      *spoolworker.Worker
	cancel context.CancelFunc
	done   chan error
}

// startWorker makes a worker and runs it until the test stops it (or ends).
func (s *server) startWorker(cfg spoolworker.Config, h spoolworker.Handler) *running {
	s.t.Helper()
	w, err := spoolworker.New(cfg, h)
	require.NoError(s.t, err)
	ctx, cancel := context.WithCancel(s.ctx)
	r := &running{w: w, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- w.Run(ctx) }()
	s.t.Cleanup(func() {
		for _, f := range s.unblock {
			f()
		}
		r.stop(s.t)
	})
	return r
}

// stop cancels Run and waits for it to drain and return.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok {
			require.NoError(t, err)
			close(r.done)
		}
	case <-time.After(waitLimit):
		t.Fatal("Run did not return after its context ended")
	}
}

// submit posts body to /v2/ep/run and returns the job id.
func (s *server) submit(body string) string {
	s.t.Helper()
	var res struct {
		ID string `json:"id"`
	}
	s.call(http.MethodPost, "/v2/ep/run", body, &res)
	require.NotEmpty(s.t, res.ID)
	return res.ID
}

type status struct {
	ID     string          `json:"id"`
	Status string          `json:"status"`
	Output json.RawMessage `json:"output"`
	Error  string          `json:"error"`
	Stream []struct {
		Output json.RawMessage `json:"output"`
	} `json:"stream"`
}

// status reads /v2/ep/status/{id}.
func (s *server) status(id string) status {
	s.t.Helper()
	var st status
	s.call(http.MethodGet, "/v2/ep/status/"+id, "", &st)
	return st
}

// final waits (with /status-sync, a long-poll) until the job is terminal.
func (s *server) final(id string) status {
	s.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		var st status
		s.call(http.MethodGet, "/v2/ep/status-sync/"+id+"?wait=5000", "", &st)
		switch st.Status {
		case "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT":
			return st
		}
		require.True(s.t, time.Now().Before(deadline), "job %s still %s", id, st.Status)
	}
}

// stream reads /v2/ep/stream/{id}: the chunks not yet read.
func (s *server) stream(id string) status {
	s.t.Helper()
	var st status
	s.call(http.MethodGet, "/v2/ep/stream/"+id, "", &st)
	return st
}

func (s *server) job(id string) *spool.Job {
	s.t.Helper()
	j, err := s.eng.JobAnyEndpoint(s.ctx, id)
	require.NoError(s.t, err)
	return j
}

// call sends a client API request with the admin key and decodes a 200 answer into out.
func (s *server) call(method, path, body string, out any) {
	s.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(s.ctx, method, s.srv.URL+path, rd)
	require.NoError(s.t, err)
	req.Header.Set("Authorization", "Bearer "+adminSecret)
	req.Header.Set("Content-Type", "application/json")
	res, err := s.client.Do(req)
	require.NoError(s.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(s.t, err)
	require.Equal(s.t, http.StatusOK, res.StatusCode, "%s %s: %s", method, path, b)
	if out != nil {
		require.NoError(s.t, json.Unmarshal(b, out), "%s", b)
	}
}

// record is one request a worker made, as the proxy saw it.
type record struct {
	Method, Path, Query string
	Header              http.Header
	Body                []byte
	Status              int // 0 while the request is in flight; -1 when the proxy dropped it
	Injected            bool
	Upstream            int // the server's answer to a request the proxy forwarded, then dropped
	At                  time.Time
}

// IsDone reports whether r is a job-done post for job id ("" for any job).
func (r record) is(kind, id string) bool {
	if !strings.Contains(r.Path, "/"+kind+"/") {
		return false
	}
	return id == "" || strings.HasSuffix(r.Path, "/"+id)
}

func (r record) progress() bool { return bytes.Contains(r.Body, []byte(`"status":"IN_PROGRESS"`)) }

// proxy forwards every worker request to the real server and records it; a fault makes it
// answer a matching request itself, with a status or by dropping the connection.
type proxy struct {
	t   *testing.T
	srv *httptest.Server
	rp  *httputil.ReverseProxy

	mu      sync.Mutex
	records []*record
	changed chan struct{}
	faults  []*fault
}

type fault struct {
	match  func(record) bool
	status int // 0: drop the connection
	times  int
	// forward sends the request on to the server first, then drops the worker's connection: the
	// server applied a post whose answer the worker never saw.
	forward bool
	header  http.Header
	body    string
}

func newProxy(t *testing.T, upstream string) *proxy {
	u, err := url.Parse(upstream)
	require.NoError(t, err)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	p := &proxy{t: t, changed: make(chan struct{})}
	p.rp = &httputil.ReverseProxy{
		Rewrite:      func(r *httputil.ProxyRequest) { r.SetURL(u); r.Out.Host = r.In.Host },
		Transport:    tr,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) { w.WriteHeader(http.StatusBadGateway) },
	}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *proxy) URL() string { return p.srv.URL }

func (p *proxy) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	rec := &record{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body, At: time.Now()}
	p.mu.Lock()
	p.records = append(p.records, rec)
	var f *fault
	for _, x := range p.faults {
		if x.times > 0 && x.match(*rec) {
			x.times--
			f = x
			break
		}
	}
	p.notifyLocked()
	p.mu.Unlock()

	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		p.mu.Lock()
		rec.Status = sw.status
		if rec.Status == 0 {
			rec.Status = -1 // dropped
		}
		rec.Injected = f != nil
		p.notifyLocked()
		p.mu.Unlock()
	}()
	if f != nil {
		if f.forward {
			res := httptest.NewRecorder()
			p.rp.ServeHTTP(res, r)
			p.mu.Lock()
			rec.Upstream = res.Code
			p.mu.Unlock()
		}
		if f.status == 0 {
			panic(http.ErrAbortHandler) // the worker sees a connection error
		}
		for k, v := range f.header {
			sw.Header()[k] = v
		}
		body := f.body
		if body == "" {
			sw.Header().Set("Content-Type", "application/json")
			body = `{"error":"injected by the test proxy"}`
		}
		sw.WriteHeader(f.status)
		_, _ = sw.Write([]byte(body))
		return
	}
	p.rp.ServeHTTP(sw, r)
}

func (p *proxy) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *proxy) injectFault(f fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = append(p.faults, &f)
}

// all returns a copy of the records so far.
func (p *proxy) all() []record {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]record, len(p.records))
	for i, r := range p.records {
		out[i] = *r
	}
	return out
}

func (p *proxy) filter(pred func(record) bool) []record {
	var out []record
	for _, r := range p.all() {
		if pred(r) {
			out = append(out, r)
		}
	}
	return out
}

// waitFor waits until some record satisfies pred and returns it.
func (p *proxy) waitFor(pred func(record) bool) record {
	p.t.Helper()
	return p.waitForAfter(0, pred)
}

// waitForAfter waits until a record from the n-th on satisfies pred and returns it.
func (p *proxy) waitForAfter(n int, pred func(record) bool) record {
	p.t.Helper()
	timeout := time.After(waitLimit)
	for {
		p.mu.Lock()
		ch := p.changed
		for _, r := range p.records[min(n, len(p.records)):] {
			if pred(*r) {
				rec := *r
				p.mu.Unlock()
				return rec
			}
		}
		p.mu.Unlock()
		select {
		case <-ch:
		case <-timeout:
			p.t.Fatal("timed out waiting for a worker request")
		}
	}
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// recv waits for a value on ch.
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatal("timed out waiting for the handler")
		panic("unreachable")
	}
}
