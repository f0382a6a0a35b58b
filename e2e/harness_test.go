// Package e2e_test holds Spool's black-box end-to-end tests: each test runs the real `spool`
// binary on a loopback port and a temporary data directory, and talks to it only over HTTP, the
// way RunPod's SDKs and an unmodified runpod-python worker do (docs/client-api.md,
// docs/worker-protocol.md). Nothing here imports the server's packages.
package e2e_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool/internal/k8stest"
)

// spoolBin is the binary built once by TestMain.
var spoolBin string

// TestMain builds cmd/spool once (with -race when the tests run with -race, so that a data race in
// the server fails the test that provoked it), runs the tests and checks for leaked goroutines.
func TestMain(m *testing.M) {
	root, err := filepath.Abs("..")
	if err == nil {
		_, err = os.Stat(filepath.Join(root, "go.mod"))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: the repository root must be the parent of the test's directory: %v\n", err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "spool-e2e-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		os.Exit(1)
	}
	spoolBin = filepath.Join(dir, "spool")
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = "/usr/local/go/bin/go"
	}
	args := []string{"build", "-o", spoolBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/spool")
	build := exec.Command(goTool, args...)
	build.Dir = root
	start := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go %s: %v\n%s", strings.Join(args, " "), err, out)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "e2e: built %s (race=%v) in %s\n", spoolBin, raceEnabled, time.Since(start).Round(time.Millisecond))
	goleak.VerifyTestMain(runThenStopK8s{m}, goleak.Cleanup(func(code int) {
		_ = os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// eventually polls cond every 50 ms until it holds, failing the test with msg() once timeout
// passed: for what real processes do in their own time (a worker's output reaching Spool, an
// autoscaler's tick, the objects of an API server).
func eventually(t *testing.T, timeout time.Duration, cond func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, msg())
		}
		<-time.After(50 * time.Millisecond) // polls another process
	}
}

// freeAddr is a loopback address nothing listens on, to name in a config before the server that
// will listen there starts.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// runThenStopK8s stops the shared Kubernetes API server once the tests ran, before goleak looks
// for goroutines left behind: the clients' connections to it end with it.
type runThenStopK8s struct{ m *testing.M }

func (r runThenStopK8s) Run() int {
	defer k8stest.StopShared()
	return r.m.Run()
}

// testKeys are the secrets a test server accepts. Admin comes from SPOOL_ADMIN_KEY; Worker and
// Client are written to the config file as hashes (the way an operator adds keys).
type testKeys struct {
	Admin, Worker, Client string
}

func newTestKeys() testKeys {
	return testKeys{Admin: newSecret(), Worker: newSecret(), Client: newSecret()}
}

func newSecret() string {
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	return "spool_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

// keyHash is the documented stored form of a key ("sha256:<hex>", see `spool hash-key`).
func keyHash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// serverOpts says how to start a server. The zero value starts one with fresh keys, no endpoints
// and a fresh data directory. Pass a server's Opts to start it again on the same data.
type serverOpts struct {
	// Config is YAML for spool.yaml without a keys section; "" writes only the keys.
	Config string
	// DataDir is the data directory; "" makes a fresh one.
	DataDir string
	// Keys are the keys to configure; zero makes fresh ones.
	Keys testKeys
	// NoKeys starts the server with no SPOOL_ADMIN_KEY and no configured keys (first start).
	NoKeys bool
	// Bin is the binary to run; "" runs spoolBin.
	Bin string
	// Env is added to the server's environment.
	Env []string
	// Addr is the listen address; "" picks a free loopback port.
	Addr string
}

// server is one running `spool serve` process.
type server struct {
	t    *testing.T
	URL  string // http://127.0.0.1:PORT
	Keys testKeys
	Opts serverOpts

	cmd     *exec.Cmd
	stdout  *logBuffer
	stderr  *logBuffer
	exited  chan struct{}
	waitErr error

	client *http.Client
}

var listeningLine = regexp.MustCompile(`msg="spool listening" url=(https?://127\.0\.0\.1:\d+)`)

// startServer starts `spool serve --addr 127.0.0.1:0 --data DIR [--config FILE]` (opts.Bin,
// opts.Addr and opts.Env change the binary, the address and the environment) and waits for its
// "spool listening" line. The process is killed when the test ends; its output is shown if the
// test failed.
func startServer(t *testing.T, opts serverOpts) *server {
	t.Helper()
	if !opts.NoKeys && opts.Keys == (testKeys{}) {
		opts.Keys = newTestKeys()
	}
	if opts.DataDir == "" {
		opts.DataDir = filepath.Join(t.TempDir(), "data")
	}
	work := t.TempDir() // the working directory: no stray ./spool.yaml is picked up
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	args := []string{"serve", "--addr", addr, "--data", opts.DataDir}
	cfg := opts.Config
	if !opts.NoKeys {
		cfg += fmt.Sprintf("\nkeys:\n  - name: e2e-worker\n    scope: worker\n    hash: %s\n  - name: e2e-client\n    scope: client\n    hash: %s\n",
			keyHash(opts.Keys.Worker), keyHash(opts.Keys.Client))
	}
	if strings.TrimSpace(cfg) != "" {
		path := filepath.Join(work, "spool-e2e.yaml")
		require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
		args = append(args, "--config", path)
	}
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + work, "TMPDIR=" + work}
	if !opts.NoKeys {
		env = append(env, "SPOOL_ADMIN_KEY="+opts.Keys.Admin)
	}
	env = append(env, opts.Env...)
	bin := opts.Bin
	if bin == "" {
		bin = spoolBin
	}

	s := &server{
		t: t, Keys: opts.Keys, Opts: opts,
		stdout: newLogBuffer(), stderr: newLogBuffer(),
		exited: make(chan struct{}),
		client: newHTTPClient(),
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Dir = work
	s.cmd.Env = env
	s.cmd.Stdout = s.stdout
	s.cmd.Stderr = s.stderr
	s.cmd.WaitDelay = 5 * time.Second
	require.NoError(t, s.cmd.Start())
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.kill()
		s.client.CloseIdleConnections()
		if strings.Contains(s.stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("the server reported a data race (see its stderr below)")
		}
		if t.Failed() {
			t.Logf("---- spool %v (pid %d) stdout ----\n%s", args, s.cmd.Process.Pid, s.stdout.String())
			t.Logf("---- spool stderr ----\n%s", s.stderr.String())
		}
	})
	m, err := s.stderr.waitFor(listeningLine, 60*time.Second, s.exited)
	require.NoError(t, err, "server did not report listening")
	s.URL = m[1]
	return s
}

// kill sends SIGKILL unless the process already exited, and waits for it.
func (s *server) kill() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.t.Errorf("server pid %d did not exit after SIGKILL", s.cmd.Process.Pid)
	}
}

// Kill stops the server at once with SIGKILL: no graceful shutdown, as in a crash.
func (s *server) Kill() {
	s.t.Helper()
	s.kill()
	s.client.CloseIdleConnections()
}

// Stop sends SIGTERM and requires a clean exit: code 0 and "stopped cleanly" in the log.
func (s *server) Stop() {
	t := s.t
	t.Helper()
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))
	s.WaitStopped()
}

// WaitStopped waits for the process to exit after a SIGTERM sent earlier and requires a clean exit.
func (s *server) WaitStopped() {
	t := s.t
	t.Helper()
	select {
	case <-s.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("server did not exit within 60s of SIGTERM")
	}
	s.client.CloseIdleConnections()
	require.NoError(t, s.waitErr, "exit status after SIGTERM")
	require.Equal(t, 0, s.cmd.ProcessState.ExitCode())
	require.Contains(t, s.stderr.String(), "stopped cleanly")
}

// Restart starts a new server process on the same data directory, config and keys.
func (s *server) Restart(t *testing.T) *server {
	t.Helper()
	return startServer(t, s.Opts)
}

// logBuffer collects a process's output and lets a test wait for a pattern in it.
type logBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newLogBuffer() *logBuffer { return &logBuffer{changed: make(chan struct{})} }

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	close(b.changed)
	b.changed = make(chan struct{})
	return len(p), nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until re matches the output, the process exits (done) or timeout passes.
func (b *logBuffer) waitFor(re *regexp.Regexp, timeout time.Duration, done <-chan struct{}) ([]string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	exited := false
	for range maxWakeups {
		b.mu.Lock()
		m := re.FindStringSubmatch(b.buf.String())
		changed := b.changed
		b.mu.Unlock()
		if m != nil {
			return m, nil
		}
		if exited {
			return nil, fmt.Errorf("process exited before printing %q", re)
		}
		select {
		case <-changed:
		case <-done:
			exited = true // look once more: the last write may have raced with the exit
		case <-deadline.C:
			return nil, fmt.Errorf("no %q within %s", re, timeout)
		}
	}
	return nil, fmt.Errorf("no %q after %d writes", re, maxWakeups)
}

// newHTTPClient returns a client with its own connection pool (closed by the caller) that never
// follows redirects (a redirect is an answer the test must see) and never uses a proxy.
func newHTTPClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:               nil,
			MaxIdleConnsPerHost: 32,
			IdleConnTimeout:     30 * time.Second,
			DisableCompression:  true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// resp is a complete HTTP answer.
type resp struct {
	Code   int
	Header http.Header
	Body   []byte
}

func (r resp) String() string { return fmt.Sprintf("%d %s", r.Code, r.Body) }

// do sends one request to the server and reads the whole answer. The header map is used as given,
// so a test can send exactly the header names and values an SDK sends.
func (s *server) do(t *testing.T, method, path string, header http.Header, body []byte) resp {
	t.Helper()
	r, err := s.try(method, path, header, body, 2*time.Minute)
	require.NoError(t, err, "%s %s", method, path)
	return r
}

// try is do without assertions, usable from any goroutine.
func (s *server) try(method, path string, header http.Header, body []byte, timeout time.Duration) (resp, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return doRequest(ctx, s.client, method, s.URL+path, header, body)
}

func doRequest(ctx context.Context, c *http.Client, method, url string, header http.Header, body []byte) (resp, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return resp{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := c.Do(req)
	if err != nil {
		return resp{}, err
	}
	defer res.Body.Close()
	var rd2 io.Reader = res.Body
	if res.Header.Get("Content-Encoding") == "gzip" { // the SDKs' HTTP stacks decode it
		zr, err := gzip.NewReader(res.Body)
		if err != nil {
			return resp{}, fmt.Errorf("%s %s: gzip answer: %w", method, url, err)
		}
		rd2 = zr
	}
	b, err := io.ReadAll(rd2)
	if err != nil {
		return resp{}, fmt.Errorf("%s %s: reading the answer: %w", method, url, err)
	}
	return resp{Code: res.StatusCode, Header: res.Header, Body: b}, nil
}

// runSpool runs the binary with args to completion (for commands that exit by themselves).
func runSpool(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, spoolBin, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + cmd.Dir}, env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	default:
		require.NoError(t, err)
	}
	return o.String(), e.String(), code
}
