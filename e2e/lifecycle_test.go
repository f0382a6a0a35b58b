package e2e_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptrace"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestGracefulShutdown sends SIGTERM while a worker long-polls job-take and a client long-polls
// /runsync: both must be answered at once (204; {"id","status":"IN_QUEUE"}), the process must exit
// 0 after "stopped cleanly", and the queued job must survive the restart.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverOpts{Config: `
workers:
  takeWait: 60s
  lostAfter: 90s
endpoints:
  - name: ep
  - name: idle
`})
	type answer struct {
		r   resp
		err error
		at  time.Time
	}
	// sendAsync starts a long-poll and reports once its request is on the wire.
	sendAsync := func(method, url string, h http.Header, body []byte) (<-chan answer, <-chan struct{}) {
		out := make(chan answer, 1)
		wrote := make(chan struct{})
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			WroteRequest: func(httptrace.WroteRequestInfo) { close(wrote) },
		})
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		go func() {
			defer cancel()
			r, err := doRequest(ctx, srv.client, method, url, h, body)
			out <- answer{r, err, time.Now()}
		}()
		return out, wrote
	}
	waitClosed := func(ch <-chan struct{}, what string) {
		select {
		case <-ch:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s was not sent", what)
		}
	}

	// A worker of endpoint "idle" waits for a job that never comes.
	w := newPlainWorker(srv, "idle", "w-waiting")
	takeURL := w.urls.take(1, false)
	take, takeSent := sendAsync(http.MethodGet, takeURL, sessionHeader(w.key, ""), nil)
	waitClosed(takeSent, "job-take")

	// A client waits up to 60 s for a job of endpoint "ep", which has no worker.
	js := srv.SDK(styleJS, "ep")
	runsync, runsyncSent := sendAsync(http.MethodPost, srv.URL+"/v2/ep/runsync?wait=60000", js.header(true), []byte(`{"input":{"keep":"me"}}`))
	waitClosed(runsyncSent, "runsync")
	// Once /health counts the job, the runsync handler has committed it and is waiting; the
	// health answer also shows that the server accepted the take's (earlier) connection.
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		require.Less(t, i, 100000, "runsync job never showed in /health")
		require.True(t, time.Now().Before(deadline), "runsync job never showed in /health")
		r := js.Health(t)
		require.Equal(t, http.StatusOK, r.Code, "health: %s", r)
		var h struct{ Jobs map[string]int }
		require.NoError(t, json.Unmarshal(r.Body, &h))
		if h.Jobs["inQueue"] == 1 {
			break
		}
	}
	select {
	case a := <-take:
		t.Fatalf("job-take answered before SIGTERM: %v %v", a.r, a.err)
	case a := <-runsync:
		t.Fatalf("runsync answered before SIGTERM: %v %v", a.r, a.err)
	default:
	}

	sent := time.Now()
	require.NoError(t, srv.cmd.Process.Signal(syscall.SIGTERM))
	const promptly = 5 * time.Second // well under the 10 s shutdown grace
	var takeAns, runsyncAns answer
	for i := 0; i < 2; i++ {
		select {
		case takeAns = <-take:
		case runsyncAns = <-runsync:
		case <-time.After(30 * time.Second):
			t.Fatalf("long-polls not answered within 30s of SIGTERM")
		}
	}
	require.NoError(t, takeAns.err, "job-take")
	require.Equal(t, http.StatusNoContent, takeAns.r.Code, "job-take during shutdown: %s", takeAns.r)
	require.Less(t, takeAns.at.Sub(sent), promptly, "job-take answered promptly")
	require.NoError(t, runsyncAns.err, "runsync")
	require.Equal(t, http.StatusOK, runsyncAns.r.Code, "runsync during shutdown: %s", runsyncAns.r)
	require.Less(t, runsyncAns.at.Sub(sent), promptly, "runsync answered promptly")
	m := fields(t, runsyncAns.r.Body)
	id := str(t, m, "id")
	require.True(t, strings.HasPrefix(id, "sync-"), "runsync id %q", id)
	require.Equal(t, "IN_QUEUE", str(t, m, "status"), "runsync during shutdown: %s", runsyncAns.r)

	srv.WaitStopped() // no second SIGTERM: that one would mean "exit at once"
	srv = srv.Restart(t)
	r := srv.SDK(stylePython, "ep").Status(t, id)
	require.Equal(t, http.StatusOK, r.Code, "status after restart: %s", r)
	requireJobView(t, r.Body, id, "IN_QUEUE")
	srv.Stop()
}

// TestCheckConfig runs `spool serve --check-config`.
func TestCheckConfig(t *testing.T) {
	t.Parallel()
	write := func(t *testing.T, yaml string) string {
		p := t.TempDir() + "/spool.yaml"
		require.NoError(t, os.WriteFile(p, []byte(yaml), 0o600))
		return p
	}
	good := write(t, `
workers:
  lostAfter: 3s
  takeWait: 2s
endpoints:
  - name: ep
    executionTimeout: 1m
    ttl: 1h
  - name: other
`)
	out, errOut, code := runSpool(t, nil, "serve", "--check-config", "--config", good)
	require.Equal(t, 0, code, "stdout %s\nstderr %s", out, errOut)
	require.Contains(t, out, "config OK")

	for field, yaml := range map[string]string{
		"idleTimout":         "endpoints:\n  - name: ep\n    idleTimout: 10\n", // a typo must not be ignored
		"idleTimeout":        "endpoints:\n  - name: ep\n    idleTimeout: 0\n",
		"executionTimeoutMs": "endpoints:\n  - name: ep\n    executionTimeoutMs: 1000\n", // the API's name
		"executionTimeout":   "endpoints:\n  - name: ep\n    executionTimeout: 1s\n",
		"ttl":                "endpoints:\n  - name: ep\n    ttl: 5ms\n",
		"scalerType":         "endpoints:\n  - name: ep\n    scalerType: FAST\n",
		"workersMin":         "endpoints:\n  - name: ep\n    workersMin: 5\n    workersMax: 1\n",
		"name":               "endpoints:\n  - name: \"bad name!\"\n",
		"workers.takeWait":   "workers:\n  takeWait: 120s\n",
		"noSuchTopLevel":     "noSuchTopLevel: 1\n",
	} {
		t.Run(field, func(t *testing.T) {
			t.Parallel()
			out, errOut, code := runSpool(t, nil, "serve", "--check-config", "--config", write(t, yaml))
			require.NotEqual(t, 0, code, "%s: a bad config must fail\nstdout %s\nstderr %s", field, out, errOut)
			require.NotContains(t, out, "config OK", field)
			require.Contains(t, out+errOut, field, "the error names the bad setting")
		})
	}
}

var (
	adminKeyLine  = regexp.MustCompile(`admin key:\s+(\S+)`)
	workerKeyLine = regexp.MustCompile(`worker key:\s+(\S+)`)
)

// TestFirstStartKeys starts a server with no keys at all: it prints an admin and a worker key once,
// both work, and a second start on the same data prints nothing.
func TestFirstStartKeys(t *testing.T) {
	t.Parallel()
	opts := serverOpts{NoKeys: true, Config: "workers:\n  takeWait: 1s\nendpoints:\n  - name: ep\n"}
	srv := startServer(t, opts)
	m, err := srv.stdout.waitFor(workerKeyLine, 30*time.Second, srv.exited)
	require.NoError(t, err)
	worker := m[1]
	m, err = srv.stdout.waitFor(adminKeyLine, time.Second, srv.exited)
	require.NoError(t, err)
	admin := m[1]
	require.NotEqual(t, admin, worker)

	bearer := func(k string) http.Header { return http.Header{"Authorization": {"Bearer " + k}} }
	r := srv.do(t, http.MethodGet, "/api/endpoints", bearer(admin), nil)
	require.Equal(t, http.StatusOK, r.Code, "admin key on /api/endpoints: %s", r)
	require.Contains(t, string(r.Body), `"ep"`)
	requireError(t, srv.do(t, http.MethodGet, "/api/endpoints", bearer(worker), nil), http.StatusForbidden, "worker key on /api/endpoints")

	// The admin key also works on the client API; the worker key takes the job as a worker.
	id := (&sdkClient{srv: srv, style: stylePython, ep: "ep", key: admin}).Submit(t, `{"from": "admin"}`)
	w := newPlainWorker(srv, "ep", "w-first")
	w.key = worker
	job := w.TakeOne(t)
	require.Equal(t, id, str(t, job, "id"))
	require.Equal(t, http.StatusOK, w.Done(t, id, `{"output": "ok"}`).Code)
	srv.Stop()
	require.Equal(t, 1, strings.Count(srv.stdout.String(), "admin key:"), "printed once")

	srv = srv.Restart(t)
	r = srv.do(t, http.MethodGet, "/api/endpoints", bearer(admin), nil)
	require.Equal(t, http.StatusOK, r.Code, "the first key still works after a restart: %s", r)
	r = srv.do(t, http.MethodGet, "/v2/ep/status/"+id, bearer(admin), nil)
	requireJobView(t, r.Body, id, "COMPLETED")
	srv.Stop()
	require.NotContains(t, srv.stdout.String(), "admin key:")
	require.NotContains(t, srv.stdout.String(), "worker key:")
	require.NotContains(t, srv.stdout.String()+srv.stderr.String(), admin, "a key is never shown again")
}
