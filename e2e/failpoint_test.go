package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// These tests kill the server at each failpoint of internal/failpoint: a binary built with
// `-tags failpoint` and started with SPOOL_FAILPOINT=<point>[:N] SIGKILLs itself at the Nth
// time it reaches the point, right after a commit and before the answer or the follow-up. Each
// test drives the operation that reaches the point, sees the server die without answering,
// starts it again (an ordinary binary, no SPOOL_FAILPOINT) on the same data and checks that the
// in-flight operation's effect is all there, and that the history holds nothing lost.

// failpointBuild is the failpoint binary, built once (next to spoolBin, so that TestMain's
// cleanup removes it).
var failpointBuild struct {
	once sync.Once
	bin  string
	err  error
}

func failpointBinary(t *testing.T) string {
	t.Helper()
	failpointBuild.once.Do(func() {
		root, err := filepath.Abs("..")
		if err != nil {
			failpointBuild.err = err
			return
		}
		bin := filepath.Join(filepath.Dir(spoolBin), "spool-failpoint")
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = "/usr/local/go/bin/go"
		}
		args := []string{"build", "-tags", "failpoint", "-o", bin}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "./cmd/spool")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		build := exec.CommandContext(ctx, goTool, args...)
		build.Dir = root
		start := time.Now()
		if out, err := build.CombinedOutput(); err != nil {
			failpointBuild.err = fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
			return
		}
		t.Logf("built %s (race=%v) in %s", bin, raceEnabled, time.Since(start).Round(time.Millisecond))
		failpointBuild.bin = bin
	})
	require.NoError(t, failpointBuild.err, "building the failpoint binary")
	return failpointBuild.bin
}

// failpointConfig keeps the tests fast: a worker unseen for 3 s is lost, long-polls last 1 s,
// webhooks may reach the receiver on loopback and retry after 1 s.
const failpointConfig = `
retention:
  run: 24h
workers:
  lostAfter: 3s
  takeWait: 1s
webhooks:
  allowCIDRs: ["127.0.0.1/32"]
endpoints:
  - name: ep
    webhookDelay: 1s
    webhookTimeout: 3s
`

// startArmed starts the failpoint binary with SPOOL_FAILPOINT=point (point or point:N).
func startArmed(t *testing.T, point string) *server {
	t.Helper()
	srv := startServer(t, serverOpts{Config: failpointConfig, Bin: failpointBinary(t), Env: []string{"SPOOL_FAILPOINT=" + point}})
	name, n, ok := strings.Cut(point, ":")
	if !ok {
		n = "1"
	}
	require.Contains(t, srv.stderr.String(), "failpoint: armed "+name+" at hit "+n, "the binary was not built with failpoints")
	return srv
}

// requireDiedAt requires that the request got no answer (err) because the server killed itself
// at the point.
func requireDiedAt(t *testing.T, srv *server, point string, typ evType, r resp, err error) {
	t.Helper()
	require.Error(t, err, "the server answered: %s", r)
	require.Equal(t, evUnknown, typ)
	select {
	case <-srv.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("the server is still running after the failpoint")
	}
	ws, ok := srv.cmd.ProcessState.Sys().(syscall.WaitStatus)
	require.True(t, ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL, "the server exited with %v, not by SIGKILL", srv.cmd.ProcessState)
	name, _, _ := strings.Cut(point, ":")
	require.Contains(t, srv.stderr.String(), "failpoint: "+name+" reached")
}

// restartPlain starts the ordinary binary, without SPOOL_FAILPOINT, on the dead server's data,
// config and keys.
func restartPlain(t *testing.T, srv *server) *server {
	t.Helper()
	o := srv.Opts
	o.Bin, o.Env = "", nil
	return startServer(t, o)
}

// failpointRun is what each failpoint test shares: a history, a client and a worker recording
// into it, and unique nonces.
type failpointRun struct {
	t      *testing.T
	h      *history
	run    string
	client *recorder
	ctx    context.Context
}

func newFailpointRun(t *testing.T, srv *server) *failpointRun {
	f := &failpointRun{t: t, h: &history{}, run: strings.ToLower(newSecret()[6:14]), ctx: context.Background()}
	f.client = f.recorder("client", srv.Keys.Client)
	return f
}

func (f *failpointRun) recorder(process, key string) *recorder {
	r := newRecorder(f.h, process, key)
	f.t.Cleanup(r.close)
	return r
}

func (f *failpointRun) input(name string) string {
	return fmt.Sprintf(`{"nonce": "%s-%s", "job": %q}`, f.run, name, name)
}

// submit submits a job and requires an acknowledgement.
func (f *failpointRun) submit(srv *server, name, webhook string) string {
	f.t.Helper()
	id, typ, r, err := f.client.submit(f.ctx, srv.URL, "ep", f.input(name), webhook)
	require.NoError(f.t, err)
	require.Equal(f.t, evOK, typ, "submit: %s", r)
	return id
}

// take takes one job as worker w and requires it to be id.
func (f *failpointRun) take(srv *server, w *recorder, worker, id string) {
	f.t.Helper()
	got, _, typ, r, err := w.take(f.ctx, srv.URL, "ep", worker, false)
	require.NoError(f.t, err)
	require.Equal(f.t, evOK, typ, "take: %s", r)
	require.Equal(f.t, id, got, "take: %s", r)
}

// finish posts a result as worker w and requires a 200.
func (f *failpointRun) finish(srv *server, w *recorder, worker, id, output string) {
	f.t.Helper()
	typ, r, err := w.result(f.ctx, srv.URL, "ep", worker, id, output)
	require.NoError(f.t, err)
	require.Equal(f.t, evOK, typ, "job-done: %s", r)
}

// status reads a job's /status (recorded) and returns its fields.
func (f *failpointRun) status(srv *server, id string) map[string]json.RawMessage {
	f.t.Helper()
	_, typ, r, err := f.client.read(f.ctx, srv.URL, "ep", id, 0)
	require.NoError(f.t, err)
	require.Equal(f.t, evOK, typ, "status: %s", r)
	return fields(f.t, r.Body)
}

// check reads every job back and requires a clean history; it returns the jobs.
func (f *failpointRun) check(srv *server) map[string]serverJob {
	f.t.Helper()
	events := f.h.snapshot(f.t)
	final := readBack(f.t, srv, "ep", knownJobIDs(events))
	rep := checkHistory(events, final)
	require.True(f.t, rep.ok(), "history check:\n%s", rep)
	f.h.requireNoAnomalies(f.t)
	f.t.Logf("history: %d jobs, %d acknowledged submits, %d acknowledged results, %d unknown outcomes", rep.Jobs, rep.AckedSubmits, rep.AckedResults, rep.unknowns())
	return final
}

// byNonce returns the jobs whose input carries the nonce of f.input(name).
func (f *failpointRun) byNonce(final map[string]serverJob, name string) []serverJob {
	var out []serverJob
	for _, id := range sortedKeys(final) {
		if nonceOf(final[id].Input) == f.run+"-"+name {
			out = append(out, final[id])
		}
	}
	return out
}

// TestFailpointAfterSubmitCommit: the server dies after storing the third submission and before
// answering it. After the restart the two acknowledged jobs are there, and so is the third, once,
// with its input: the client never learned its id, so it is found by its nonce in the admin job
// list (docs/contract.md §2 Durability: the 2xx follows the commit; a lost answer is not a lost job).
func TestFailpointAfterSubmitCommit(t *testing.T) {
	t.Parallel()
	const point = "after-submit-commit:3"
	srv := startArmed(t, point)
	f := newFailpointRun(t, srv)
	a := f.submit(srv, "a", "")
	b := f.submit(srv, "b", "")
	_, typ, r, err := f.client.submit(f.ctx, srv.URL, "ep", f.input("c"), "")
	requireDiedAt(t, srv, point, typ, r, err)

	srv = restartPlain(t, srv)
	final := f.check(srv)
	require.Len(t, final, 3)
	c := f.byNonce(final, "c")
	require.Len(t, c, 1, "the submission cut off by the crash is stored once")
	require.Equal(t, "IN_QUEUE", c[0].State)
	require.Equal(t, canonJSON([]byte(f.input("c"))), c[0].Input)
	require.NotContains(t, []string{a, b}, c[0].ID)
	srv.Stop()
}

// TestFailpointAfterTakeCommit: the server dies after handing a second job to worker w1 and
// before answering its job-take. After the restart w1 finishes the job it did receive, and the
// one it never received goes back to the queue once w1 counts as lost (workers.lostAfter), with
// retries 1, and another worker gets it with its input (docs/contract.md §2 Worker loss).
func TestFailpointAfterTakeCommit(t *testing.T) {
	t.Parallel()
	const point = "after-take-commit:2"
	srv := startArmed(t, point)
	f := newFailpointRun(t, srv)
	w1 := f.recorder("worker-w1", srv.Keys.Worker)
	a := f.submit(srv, "a", "")
	b := f.submit(srv, "b", "")
	f.take(srv, w1, "w1", a)
	_, _, typ, r, err := w1.take(f.ctx, srv.URL, "ep", "w1", true)
	requireDiedAt(t, srv, point, typ, r, err)

	srv = restartPlain(t, srv)
	restarted := time.Now()
	m := f.status(srv, b)
	if st := str(t, m, "status"); st != "IN_PROGRESS" {
		// Only once w1 counts as lost may the take be undone, and then with a retry counted.
		require.Equal(t, "IN_QUEUE", st, "job %s after the restart: %s", b, mustJSON(m))
		require.Contains(t, m, "retries", "job %s is queued without a retry counted: the take the server died answering was not committed", b)
		requireSameJSON(t, `1`, m["retries"])
		require.GreaterOrEqual(t, time.Since(restarted), 3*time.Second, "requeued before w1 could count as lost")
	}
	f.finish(srv, w1, "w1", a, `{"by": "w1"}`)

	// w1 is gone. w2 long-polls until b comes back (lostAfter is 3 s; each poll lasts 1 s).
	w2 := f.recorder("worker-w2", srv.Keys.Worker)
	deadline := time.Now().Add(time.Minute)
	got := ""
	for i := 0; got == "" && i < 120; i++ {
		require.True(t, time.Now().Before(deadline), "job %s was not handed out again within a minute", b)
		id, input, typ, r, err := w2.take(f.ctx, srv.URL, "ep", "w2", false)
		require.NoError(t, err)
		require.Equal(t, evOK, typ, "take: %s", r)
		if id != "" {
			require.Equal(t, b, id)
			require.Equal(t, canonJSON([]byte(f.input("b"))), input)
			got = id
		}
	}
	require.Equal(t, b, got)
	m = f.status(srv, b)
	require.Equal(t, "IN_PROGRESS", str(t, m, "status"))
	requireSameJSON(t, `1`, m["retries"], "b went back to the queue once")
	f.finish(srv, w2, "w2", b, `{"by": "w2"}`)

	final := f.check(srv)
	require.Equal(t, "COMPLETED", final[a].State)
	require.Equal(t, canonJSON([]byte(`{"by": "w1"}`)), final[a].Output)
	require.Equal(t, "COMPLETED", final[b].State)
	require.Equal(t, canonJSON([]byte(`{"by": "w2"}`)), final[b].Output)
	require.Equal(t, 1, final[b].Retries)
	srv.Stop()
}

// TestFailpointAfterResultCommit: the server dies after storing a second result and before
// answering its job-done. After the restart both jobs are COMPLETED with their outputs, and the
// worker's retry of the cut-off post is accepted as a repeat (200) and changes nothing
// (docs/contract.md §2 Durability, Fencing).
func TestFailpointAfterResultCommit(t *testing.T) {
	t.Parallel()
	const point = "after-result-commit:2"
	srv := startArmed(t, point)
	f := newFailpointRun(t, srv)
	w := f.recorder("worker-w1", srv.Keys.Worker)
	a := f.submit(srv, "a", "")
	b := f.submit(srv, "b", "")
	f.take(srv, w, "w1", a)
	f.take(srv, w, "w1", b)
	f.finish(srv, w, "w1", a, `{"out": "a"}`)
	typ, r, err := w.result(f.ctx, srv.URL, "ep", "w1", b, `{"out": "b"}`)
	requireDiedAt(t, srv, point, typ, r, err)

	srv = restartPlain(t, srv)
	m := requireJobView(t, mustJSON(f.status(srv, b)), b, "COMPLETED")
	requireSameJSON(t, `{"out": "b"}`, m["output"])
	f.finish(srv, w, "w1", b, `{"out": "b"}`) // the worker's retry

	final := f.check(srv)
	require.Equal(t, "COMPLETED", final[a].State)
	require.Equal(t, canonJSON([]byte(`{"out": "a"}`)), final[a].Output)
	require.Equal(t, "COMPLETED", final[b].State)
	require.Equal(t, canonJSON([]byte(`{"out": "b"}`)), final[b].Output)
	srv.Stop()
}

// fpReceiver is a webhook receiver on loopback that answers 500 to the first arrival of the job
// failFirst names and 204 to everything else.
type fpReceiver struct {
	srv       *httptest.Server
	mu        sync.Mutex
	got       []hookRequest
	failFirst string
	changed   chan struct{} // closed and replaced at every arrival
}

func newFPReceiver(t *testing.T) *fpReceiver {
	rc := &fpReceiver{changed: make(chan struct{})}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		var v struct{ ID string }
		_ = json.Unmarshal(body, &v)
		rc.mu.Lock()
		first := v.ID != "" && v.ID == rc.failFirst && len(rc.forLocked(v.ID)) == 0
		rc.got = append(rc.got, hookRequest{Header: r.Header.Clone(), Body: body})
		close(rc.changed)
		rc.changed = make(chan struct{})
		rc.mu.Unlock()
		if first {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *fpReceiver) forLocked(id string) []hookRequest {
	var out []hookRequest
	for _, q := range rc.got {
		var v struct{ ID string }
		if json.Unmarshal(q.Body, &v) == nil && v.ID == id {
			out = append(out, q)
		}
	}
	return out
}

// arrivals returns the requests about job id so far.
func (rc *fpReceiver) arrivals(id string) []hookRequest {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.forLocked(id)
}

// await waits until n requests about job id arrived.
func (rc *fpReceiver) await(t *testing.T, id string, n int, timeout time.Duration) []hookRequest {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for range maxWakeups {
		rc.mu.Lock()
		got, changed := rc.forLocked(id), rc.changed
		rc.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("%d webhook request(s) of job %s within %s, want %d", len(got), id, timeout, n)
		}
	}
	t.Fatalf("no %d webhook requests of job %s", n, id)
	return nil
}

// TestFailpointAfterTerminalCommit: the server dies after a job's completion and its webhook
// delivery were committed together and before the dispatcher was woken (the worker's job-done
// gets no answer). After the restart the job is COMPLETED with its output and the webhook is
// delivered: its first attempt gets a 500, and the retry carries the same webhook-id
// (docs/contract.md §2: the outbox is durable; delivery is at least once).
func TestFailpointAfterTerminalCommit(t *testing.T) {
	t.Parallel()
	const point = "after-terminal-commit:2"
	rcv := newFPReceiver(t)
	srv := startArmed(t, point)
	f := newFailpointRun(t, srv)
	w := f.recorder("worker-w1", srv.Keys.Worker)
	hook := rcv.srv.URL + "/hook"
	a := f.submit(srv, "a", hook)
	b := f.submit(srv, "b", hook)
	rcv.mu.Lock()
	rcv.failFirst = b
	rcv.mu.Unlock()

	// The first terminal commit with a webhook passes the point: a's webhook is delivered.
	f.take(srv, w, "w1", a)
	f.finish(srv, w, "w1", a, `{"out": "a"}`)
	rcv.await(t, a, 1, time.Minute)
	awaitDelivery(t, srv, a, "delivered")

	f.take(srv, w, "w1", b)
	typ, r, err := w.result(f.ctx, srv.URL, "ep", "w1", b, `{"out": "b"}`)
	requireDiedAt(t, srv, point, typ, r, err)
	require.Empty(t, rcv.arrivals(b), "the dispatcher was never woken before the crash")

	srv = restartPlain(t, srv)
	rcv.await(t, b, 2, time.Minute)
	d := awaitDelivery(t, srv, b, "delivered")
	got := rcv.arrivals(b)
	require.Len(t, got, 2, "one failed attempt, one delivered")
	for _, q := range got {
		require.Equal(t, d.ID, q.Header.Get("webhook-id"), "every attempt carries the delivery's webhook-id")
		m := fields(t, q.Body)
		require.Equal(t, b, str(t, m, "id"))
		require.Equal(t, "COMPLETED", str(t, m, "status"))
		requireSameJSON(t, `{"out": "b"}`, m["output"])
		requireSameJSON(t, f.input("b"), m["input"])
	}
	require.Len(t, rcv.arrivals(a), 1, "a's delivered webhook is not sent again")

	final := f.check(srv)
	require.Equal(t, "COMPLETED", final[b].State)
	require.Equal(t, canonJSON([]byte(`{"out": "b"}`)), final[b].Output)
	srv.Stop()
}
