package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/httpapi"
	"github.com/spool-run/spool/internal/spooltest"
)

// spoolBin is the spool binary built from this package by TestMain; the client command tests run
// it as a user would.
var spoolBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "spool-cmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "temp dir:", err)
		os.Exit(1)
	}
	spoolBin = filepath.Join(dir, "spool")
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go" // where the README says Go is, when it is not on PATH
	}
	build := exec.Command(goBin, "build", "-o", spoolBin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { _ = os.RemoveAll(dir) }))
}

const cliAdminSecret = "spool_admin_for_cli_tests"

// cliEnv is a real Spool server on loopback (SQLite on a temp dir, the engine, real keys, the HTTP
// handler) that the built binary talks to; the test plays the worker over HTTP.
type cliEnv struct {
	t    *testing.T
	ctx  context.Context
	fake *clock.Fake // nil on the wall clock
	eng  *engine.Engine
	srv  *httptest.Server
	// clientKey is a client-scope key for every endpoint.
	clientKey string
}

// newCLIEnv starts a server with endpoints "ep" and "other". With fake, the engine runs on a fake
// clock (TTLs and timeouts move only when the test says so; long-polls end only with news).
func newCLIEnv(t *testing.T, fake bool) *cliEnv {
	t.Helper()
	e := &cliEnv{t: t, ctx: context.Background()}
	if fake {
		e.fake = clock.NewFake(spooltest.Start)
	}
	s := spooltest.NewServer(t, spooltest.Options{
		Clock:       e.fake,
		AdminSecret: cliAdminSecret,
		Endpoints:   []spool.Endpoint{spool.NewEndpoint("ep"), spool.NewEndpoint("other")},
		Keys:        []spool.Key{{Name: "client", Scope: spool.ScopeClient}},
		API:         func(c *httpapi.Config) { c.TakeWait = 10 * time.Second },
	})
	e.eng, e.srv, e.clientKey = s.Engine, s.HTTP, s.Secrets["client"]
	return e
}

// env is the environment of a CLI run: only what the test sets (HOME is a fresh directory, so no
// user config file is read).
func (e *cliEnv) env(extra ...string) []string {
	env := []string{"HOME=" + e.t.TempDir(), "SPOOL_URL=" + e.srv.URL, "SPOOL_API_KEY=" + cliAdminSecret}
	return append(env, extra...)
}

type cliResult struct {
	code           int
	stdout, stderr string
}

// spool runs the binary to completion with stdin and the environment env.
func (e *cliEnv) spool(env []string, stdin string, args ...string) cliResult {
	e.t.Helper()
	p := e.start(env, stdin, args...)
	return p.wait()
}

// proc is a running CLI process.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdout *watchBuffer
	stderr *watchBuffer
}

func (e *cliEnv) start(env []string, stdin string, args ...string) *proc {
	e.t.Helper()
	cmd := exec.Command(spoolBin, args...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	p := &proc{t: e.t, cmd: cmd, stdout: newWatchBuffer(), stderr: newWatchBuffer()}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	require.NoError(e.t, cmd.Start())
	e.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return p
}

// wait waits for the process to exit (at most 30 s).
func (p *proc) wait() cliResult {
	p.t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else {
			require.NoError(p.t, err)
		}
		return cliResult{code: code, stdout: p.stdout.String(), stderr: p.stderr.String()}
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
		p.t.Fatalf("spool %v did not exit; stdout %q stderr %q", p.cmd.Args[1:], p.stdout.String(), p.stderr.String())
		return cliResult{}
	}
}

// watchBuffer collects a process's output and lets a test wait until it contains a string.
type watchBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newWatchBuffer() *watchBuffer { return &watchBuffer{changed: make(chan struct{})} }

func (w *watchBuffer) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(b)
	close(w.changed)
	w.changed = make(chan struct{})
	return len(b), nil
}

func (w *watchBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// waitFor waits until the output contains s (at most 10 s).
func (w *watchBuffer) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		w.mu.Lock()
		has, ch := strings.Contains(w.buf.String(), s), w.changed
		w.mu.Unlock()
		if has {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("output never contained %q; got %q", s, w.String())
		}
	}
}

// http sends a request with the admin key (raw, as workers send it) and returns status and body.
func (e *cliEnv) http(method, path, body string) (int, string) {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(e.ctx, method, e.srv.URL+path, rd)
	require.NoError(e.t, err)
	req.Header.Set("Authorization", cliAdminSecret)
	res, err := e.srv.Client().Do(req)
	require.NoError(e.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(e.t, err)
	return res.StatusCode, string(b)
}

// take takes the next job of ep as worker w, waiting for one to be submitted, and returns its
// payload ({"id","input","policy",...}).
func (e *cliEnv) take(w string) map[string]json.RawMessage {
	e.t.Helper()
	for {
		code, body := e.http("GET", "/v2/ep/job-take/"+w+"?gpu=none&job_in_progress=0", "")
		if code == http.StatusNoContent {
			continue // the long-poll ran out before the job was submitted
		}
		require.Equal(e.t, http.StatusOK, code, body)
		var m map[string]json.RawMessage
		require.NoError(e.t, json.Unmarshal([]byte(body), &m))
		return m
	}
}

func (e *cliEnv) takeID(w string) string {
	e.t.Helper()
	var id string
	require.NoError(e.t, json.Unmarshal(e.take(w)["id"], &id))
	return id
}

// post posts to a worker route (job-done, job-stream) of job id as worker w.
func (e *cliEnv) post(route, w, id, body string) {
	e.t.Helper()
	code, res := e.http("POST", "/v2/ep/"+route+"/"+w+"/"+id, body)
	require.Equal(e.t, http.StatusOK, code, res)
}

// jobJSON decodes a one-line JSON job printed by the CLI.
func jobJSON(t *testing.T, stdout string) map[string]any {
	t.Helper()
	require.True(t, strings.HasSuffix(stdout, "\n"), "%q", stdout)
	require.Equal(t, 1, strings.Count(stdout, "\n"), "one line of JSON: %q", stdout)
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(stdout), &m), stdout)
	return m
}

// oneErrorLine checks that stderr is exactly one "spool: ..." line containing want.
func oneErrorLine(t *testing.T, stderr, want string) {
	t.Helper()
	require.True(t, strings.HasPrefix(stderr, "spool: "), "%q", stderr)
	require.True(t, strings.HasSuffix(stderr, "\n"), "%q", stderr)
	require.Equal(t, 1, strings.Count(stderr, "\n"), "one line: %q", stderr)
	require.Contains(t, stderr, want)
}
