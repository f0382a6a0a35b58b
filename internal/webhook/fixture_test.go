package webhook_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/notify"
	"github.com/spool-run/spool/internal/webhook"
	"github.com/spool-run/spool/store"
	"github.com/spool-run/spool/store/sqlitestore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.UnixMilli(1_800_000_000_000).UTC()

// waitLimit bounds every wait for asynchronous work; tests never sleep.
const waitLimit = 30 * time.Second

// bell is a broadcast: ring closes the current channel and makes a new one.
type bell struct {
	mu sync.Mutex
	ch chan struct{}
}

func newBell() *bell { return &bell{ch: make(chan struct{})} }

func (b *bell) ring() {
	b.mu.Lock()
	close(b.ch)
	b.ch = make(chan struct{})
	b.mu.Unlock()
}

func (b *bell) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

// observer records the dispatcher's metrics calls.
type observer struct {
	bell     *bell
	mu       sync.Mutex
	attempts map[string][]string // endpoint -> outcomes
	finished map[string][]spool.DeliveryState
}

func (o *observer) WebhookAttempt(endpoint, outcome string, _ time.Duration) {
	o.mu.Lock()
	o.attempts[endpoint] = append(o.attempts[endpoint], outcome)
	o.mu.Unlock()
	o.bell.ring()
}

func (o *observer) WebhookFinished(endpoint string, state spool.DeliveryState) {
	o.mu.Lock()
	o.finished[endpoint] = append(o.finished[endpoint], state)
	o.mu.Unlock()
	o.bell.ring()
}

func (o *observer) outcomes(endpoint string) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.attempts[endpoint]...)
}

// fakeResolver answers from a table; every other name fails (tests never ask real DNS).
type fakeResolver struct {
	mu      sync.Mutex
	answers map[string][][]netip.Addr // successive answers; the last one repeats
	calls   map[string]int
}

func (r *fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seq, ok := r.answers[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	n := r.calls[host]
	r.calls[host]++
	return seq[min(n, len(seq)-1)], nil
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// onlyThisMachine is every test dispatcher's last check: whatever the guard allowed, only
// loopback addresses are ever connected to. allowed records what the guard let through.
type onlyThisMachine struct {
	mu      sync.Mutex
	allowed []netip.Addr
}

var errOffMachine = errors.New("test: refusing to send traffic off this machine")

func (o *onlyThisMachine) control(ap netip.AddrPort) error {
	o.mu.Lock()
	o.allowed = append(o.allowed, ap.Addr())
	o.mu.Unlock()
	if !ap.Addr().Unmap().IsLoopback() {
		return errOffMachine
	}
	return nil
}

func (o *onlyThisMachine) seen() []netip.Addr {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]netip.Addr(nil), o.allowed...)
}

type fixtureOpts struct {
	path     string
	clock    *clock.Fake
	resolver webhook.Resolver
	webhook  func(*webhook.Config)
	engine   func(*engine.Config)
	// noDispatcher leaves the dispatcher unstarted: deliveries are enqueued, never attempted.
	noDispatcher bool
}

// fixture is an engine and a dispatcher on one SQLite file and one fake clock.
type fixture struct {
	t     *testing.T
	ctx   context.Context
	path  string
	st    *sqlitestore.Store
	clock *clock.Fake
	eng   *engine.Engine
	d     *webhook.Dispatcher
	obs   *observer
	bell  *bell
	guard *onlyThisMachine

	closeOnce sync.Once
}

// newFixture starts a store, an engine (sweeper idle: tests call Sweep) and a dispatcher that
// allows 127.0.0.0/8 and ::1 (test receivers listen there), with endpoint "ep" on RunPod's defaults.
func newFixture(t *testing.T, mods ...func(*fixtureOpts)) *fixture {
	t.Helper()
	o := fixtureOpts{}
	for _, m := range mods {
		m(&o)
	}
	if o.path == "" {
		o.path = filepath.Join(t.TempDir(), "spool.db")
	}
	if o.clock == nil {
		o.clock = clock.NewFake(t0)
	}
	if o.resolver == nil {
		o.resolver = &fakeResolver{}
	}
	ctx := context.Background()
	f := &fixture{t: t, ctx: ctx, path: o.path, clock: o.clock, bell: newBell(), guard: &onlyThisMachine{}}
	f.obs = &observer{bell: f.bell, attempts: map[string][]string{}, finished: map[string][]spool.DeliveryState{}}
	var err error
	f.st, err = sqlitestore.Open(ctx, o.path)
	require.NoError(t, err)
	hub := notify.NewHub() // the engine wakes the dispatcher through it
	wcfg := webhook.Config{
		Store: f.st, Clock: f.clock, Observer: f.obs, Resolver: o.resolver, Notifier: hub,
		AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		Endpoint: func(name string) (spool.Endpoint, bool) {
			ep, err := f.eng.Endpoint(name)
			return ep, err == nil
		},
		StopGrace: 50 * time.Millisecond,
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	webhook.SetTestControl(&wcfg, f.guard.control)
	if o.webhook != nil {
		o.webhook(&wcfg)
	}
	f.d, err = webhook.New(wcfg)
	require.NoError(t, err)
	ecfg := engine.Config{
		Store: f.st, Clock: f.clock, SweepInterval: time.Hour,
		WebhookPayload: webhook.Payload, Notifier: hub,
	}
	if o.engine != nil {
		o.engine(&ecfg)
	}
	f.eng, err = engine.New(ecfg)
	require.NoError(t, err)
	require.NoError(t, f.eng.Start(ctx))
	if !o.noDispatcher {
		require.NoError(t, f.d.Start(ctx))
	}
	t.Cleanup(f.close)
	f.putEndpoint("ep", nil)
	return f
}

// close stops everything in the server's order: dispatcher, engine, store.
func (f *fixture) close() {
	f.closeOnce.Do(func() {
		f.d.Stop()
		f.eng.Stop()
		require.NoError(f.t, f.st.Close())
	})
}

// crash closes the store first, as a killed process leaves it: whatever the dispatcher was
// doing is not recorded.
func (f *fixture) crash() {
	f.closeOnce.Do(func() {
		require.NoError(f.t, f.st.Close())
		f.d.Stop()
		f.eng.Stop()
	})
}

func (f *fixture) putEndpoint(name string, mod func(*spool.Endpoint)) {
	f.t.Helper()
	ep := spool.NewEndpoint(name)
	if mod != nil {
		mod(&ep)
	}
	_, _, err := f.eng.PutEndpoint(f.ctx, ep)
	require.NoError(f.t, err)
}

// waitFor waits until cond holds, waking on every attempt, receiver request, dispatcher state
// change and fake-clock change.
func (f *fixture) waitFor(what string, cond func() bool) {
	f.t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		rung := f.bell.wait()
		_, changed := f.d.Idle()
		clockChanged := f.clock.Changed()
		if cond() {
			return
		}
		select {
		case <-rung:
		case <-changed:
		case <-clockChanged:
		case <-deadline.C:
			f.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// waitIdle waits until the dispatcher has nothing in flight and waits for a wake-up or a timer.
func (f *fixture) waitIdle() {
	f.t.Helper()
	f.waitFor("the dispatcher to be idle", func() bool { idle, _ := f.d.Idle(); return idle })
}

func (f *fixture) deliveries(jobID string) []spool.WebhookDelivery {
	f.t.Helper()
	ds, err := f.st.ListDeliveries(f.ctx, jobID)
	require.NoError(f.t, err)
	return ds
}

func (f *fixture) delivery(jobID string) spool.WebhookDelivery {
	f.t.Helper()
	ds := f.deliveries(jobID)
	require.Len(f.t, ds, 1)
	return ds[0]
}

// waitFinished waits until every delivery of the job is delivered or failed, moving the fake
// clock by step whenever the dispatcher idles with a delivery pending.
func (f *fixture) waitFinished(jobID string, step time.Duration) []spool.WebhookDelivery {
	f.t.Helper()
	for range 200 {
		f.waitIdle()
		ds := f.deliveries(jobID)
		finished := len(ds) > 0
		for _, d := range ds {
			finished = finished && d.State != spool.DeliveryPending
		}
		if finished {
			return ds
		}
		f.clock.Advance(step)
	}
	f.t.Fatalf("the deliveries of %s did not finish", jobID)
	return nil
}

// job submits a job with a webhook to endpoint ep, runs it on worker w1 and posts output.
func (f *fixture) completeJob(ep, url string, output string) *spool.Job {
	f.t.Helper()
	j := f.submit(engine.SubmitParams{Endpoint: ep, Webhook: url})
	f.take(ep)
	res, err := f.eng.Done(f.ctx, engine.DoneParams{Endpoint: ep, WorkerID: "w1", JobID: j.ID, Output: json.RawMessage(output)})
	require.NoError(f.t, err)
	require.Equal(f.t, spool.StateCompleted, res.Job.State)
	return res.Job
}

func (f *fixture) submit(p engine.SubmitParams) *spool.Job {
	f.t.Helper()
	if p.Endpoint == "" {
		p.Endpoint = "ep"
	}
	if p.Input == nil {
		p.Input = json.RawMessage(`{"n": 1}`)
	}
	j, err := f.eng.Submit(f.ctx, p)
	require.NoError(f.t, err)
	return j
}

func (f *fixture) take(ep string) *spool.Job {
	f.t.Helper()
	jobs, err := f.eng.Take(f.ctx, ep, "w1", 1, 0)
	require.NoError(f.t, err)
	require.Len(f.t, jobs, 1)
	return jobs[0].Job
}

// enqueue inserts a delivery directly, as a terminal transition would, and wakes the dispatcher.
func (f *fixture) enqueue(endpoint, url string) string {
	f.t.Helper()
	id := spool.NewWebhookMessageID()
	require.NoError(f.t, f.st.CreateDelivery(f.ctx, store.CreateDeliveryParams{Delivery: spool.WebhookDelivery{
		ID: id, JobID: "job-" + id, Endpoint: endpoint, URL: url, Payload: json.RawMessage(`{"id":"job-` + id + `"}`),
		CreatedAt: f.clock.Now(),
	}}))
	f.d.Notify()
	return "job-" + id
}

// request is one request a receiver got.
type request struct {
	Header http.Header
	Body   []byte
}

// receiver is a scripted webhook receiver on 127.0.0.1. handle gets the 1-based number of the
// request; the request is recorded before handle runs.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	URL    string
	bell   *bell
	handle func(n int, w http.ResponseWriter, r *http.Request)

	mu        sync.Mutex
	reqs      []request
	active    int
	maxActive int
}

func (f *fixture) receiver(handle func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	return newReceiver(f.t, f.bell, "127.0.0.1:0", handle)
}

func newReceiver(t *testing.T, b *bell, addr string, handle func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	t.Helper()
	rc := &receiver{t: t, bell: b, handle: handle}
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	rc.srv = httptest.NewUnstartedServer(http.HandlerFunc(rc.serve))
	rc.srv.Listener = ln
	rc.srv.Start()
	rc.URL = rc.srv.URL
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, request{Header: r.Header.Clone(), Body: body})
	n := len(rc.reqs)
	rc.active++
	rc.maxActive = max(rc.maxActive, rc.active)
	rc.mu.Unlock()
	rc.bell.ring()
	defer func() {
		rc.mu.Lock()
		rc.active--
		rc.mu.Unlock()
		rc.bell.ring()
	}()
	if rc.handle != nil {
		rc.handle(n, w, r)
	}
}

func (rc *receiver) requests() []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]request(nil), rc.reqs...)
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.reqs)
}

func (rc *receiver) activeNow() (active, maxActive int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.active, rc.maxActive
}

// status answers with a fixed status code.
func status(code int) func(int, http.ResponseWriter, *http.Request) {
	return func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
}

// hang answers only when the client gives up.
func hang(_ int, _ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }

// closedPort returns a loopback address where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func attemptTimes(d spool.WebhookDelivery) []time.Duration {
	var out []time.Duration
	for _, a := range d.History {
		out = append(out, a.At.Sub(t0))
	}
	return out
}

func attemptCodes(d spool.WebhookDelivery) []int {
	var out []int
	for _, a := range d.History {
		out = append(out, a.StatusCode)
	}
	return out
}

func jsonObject(t *testing.T, b []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(b, &m), "%s", b)
	return m
}

func jsonString(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var s string
	require.NoError(t, json.Unmarshal(raw, &s))
	return s
}
