package spoolclient_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/spoolclient"
)

// TestCancelRetryPurgeHealth covers the remaining calls against the server.
func TestCancelRetryPurgeHealth(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.worker("w1")
	run := func() string {
		j, err := e.ep.Run(e.ctx, spoolclient.Request{Input: 1})
		require.NoError(t, err)
		return j.ID
	}

	// Cancel a queued job; cancelling it again changes nothing.
	id := run()
	j, err := e.ep.Cancel(e.ctx, id)
	require.NoError(t, err)
	require.Equal(t, spoolclient.Job{ID: id, Status: spoolclient.StatusCancelled}, *j)
	j, err = e.ep.Cancel(e.ctx, id)
	require.NoError(t, err)
	require.Equal(t, spoolclient.StatusCancelled, j.Status)
	var je *spoolclient.JobError
	require.ErrorAs(t, j.Err(), &je)
	require.Equal(t, "job "+id+" ended CANCELLED", je.Error())

	// Retry a failed job: back in the queue with the same id; retries counts it.
	id = run()
	require.Equal(t, id, w.takeID())
	w.done(id, `{"error":"flaky"}`)
	j, err = e.ep.Retry(e.ctx, id)
	require.NoError(t, err)
	require.Equal(t, spoolclient.Job{ID: id, Status: spoolclient.StatusInQueue}, *j)
	require.Equal(t, id, w.takeID())
	w.done(id, `{"output":"second time lucky"}`)
	j, err = e.ep.Status(e.ctx, id)
	require.NoError(t, err)
	require.Equal(t, spoolclient.StatusCompleted, j.Status)
	require.Equal(t, 1, j.Retries)
	// A completed job cannot be retried.
	_, err = e.ep.Retry(e.ctx, id)
	require.ErrorIs(t, err, spoolclient.ErrBadRequest)
	_, err = e.ep.Cancel(e.ctx, "no-such-job")
	require.ErrorIs(t, err, spoolclient.ErrNotFound)

	// Purge: queued jobs go, a running one stays.
	running := run()
	require.Equal(t, running, w.takeID())
	for range 3 {
		run()
	}
	n, err := e.ep.PurgeQueue(e.ctx)
	require.NoError(t, err)
	require.Equal(t, 3, n)
	n, err = e.ep.PurgeQueue(e.ctx)
	require.NoError(t, err)
	require.Zero(t, n)

	h, err := e.ep.Health(e.ctx)
	require.NoError(t, err)
	require.Equal(t, spoolclient.HealthJobs{Completed: 1, Failed: 0, InProgress: 1, InQueue: 0, Retried: 1}, h.Jobs)
	require.Equal(t, 1, h.Workers.Running)
	b, err := json.Marshal(h)
	require.NoError(t, err)
	require.Contains(t, string(b), `"workers":{"idle":0,"initializing":0,"ready":1,"running":1,"throttled":0,"unhealthy":0}`)

	reqs := e.rec.requests()
	require.Equal(t, []string{"POST /v2/ep/purge-queue", "POST /v2/ep/purge-queue", "GET /v2/ep/health"}, reqs[len(reqs)-3:])
}

// TestTypedErrors: each error status of the server is an *APIError with its message, matching
// its sentinel (and no other) with errors.Is; 429 carries Retry-After.
func TestTypedErrors(t *testing.T) {
	t.Parallel()
	small := spool.NewEndpoint("small")
	small.MaxQueue = 1
	e := newEnv(t, withRunLimit(1024), withEndpoint(small))
	workerKey := e.key(spool.Key{Name: "w", Scope: spool.ScopeWorker})
	otherOnly := e.key(spool.Key{Name: "o", Scope: spool.ScopeClient, Endpoints: []string{"other"}})
	readOnly := e.key(spool.Key{Name: "ro", Scope: spool.ScopeClient, ReadOnly: true})

	_, err := e.c.Endpoint("small").Run(e.ctx, spoolclient.Request{Input: 1})
	require.NoError(t, err)

	sentinels := []error{spoolclient.ErrBadRequest, spoolclient.ErrUnauthorized, spoolclient.ErrForbidden,
		spoolclient.ErrNotFound, spoolclient.ErrTooLarge, spoolclient.ErrRateLimited, spoolclient.ErrServer}
	for _, tc := range []struct {
		name       string
		call       func() error
		want       error
		status     int
		msg        string
		retryAfter time.Duration
	}{
		{"missing key", func() error { _, err := e.client("").Endpoint("ep").Health(e.ctx); return err },
			spoolclient.ErrUnauthorized, 401, "missing API key", 0},
		{"unknown key", func() error {
			_, err := e.client("nope").Endpoint("ep").Run(e.ctx, spoolclient.Request{Input: 1})
			return err
		},
			spoolclient.ErrUnauthorized, 401, "unknown API key", 0},
		{"worker key", func() error { _, err := e.client(workerKey).Endpoint("ep").Status(e.ctx, "x"); return err },
			spoolclient.ErrForbidden, 403, "needs a client or admin key", 0},
		{"key of another endpoint", func() error { _, err := e.client(otherOnly).Endpoint("ep").PurgeQueue(e.ctx); return err },
			spoolclient.ErrForbidden, 403, "limited to other endpoints", 0},
		{"read-only key", func() error { _, err := e.client(readOnly).Endpoint("ep").Cancel(e.ctx, "x"); return err },
			spoolclient.ErrForbidden, 403, "read-only", 0},
		{"unknown endpoint", func() error { _, err := e.c.Endpoint("nope").Run(e.ctx, spoolclient.Request{Input: 1}); return err },
			spoolclient.ErrNotFound, 404, `endpoint "nope" not found`, 0},
		{"unknown job", func() error { _, err := e.ep.Status(e.ctx, "no-such-job"); return err },
			spoolclient.ErrNotFound, 404, "job no-such-job not found", 0},
		{"too large", func() error {
			_, err := e.ep.Run(e.ctx, spoolclient.Request{Input: strings.Repeat("x", 2000)})
			return err
		}, spoolclient.ErrTooLarge, 413, "exceeds the 1 KB limit", 0},
		{"queue full", func() error { _, err := e.c.Endpoint("small").Run(e.ctx, spoolclient.Request{Input: 2}); return err },
			spoolclient.ErrRateLimited, 429, "queue of endpoint small is full", 5 * time.Second},
		{"bad policy", func() error {
			_, err := e.ep.RunSync(e.ctx, spoolclient.Request{Input: 1, Policy: &spoolclient.Policy{TTL: time.Second}}, time.Second)
			return err
		}, spoolclient.ErrBadRequest, 400, "policy.ttl", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			require.Error(t, err)
			var ae *spoolclient.APIError
			require.ErrorAs(t, err, &ae)
			require.Equal(t, tc.status, ae.StatusCode)
			require.Contains(t, ae.Message, tc.msg)
			require.Equal(t, tc.retryAfter, ae.RetryAfter)
			for _, s := range sentinels {
				require.Equal(t, s == tc.want, errors.Is(err, s), "errors.Is(%v, %v)", err, s)
			}
			require.True(t, strings.HasPrefix(err.Error(), "spoolclient: "), err.Error())
			require.Contains(t, err.Error(), fmt.Sprintf("%d %s: ", tc.status, http.StatusText(tc.status)))
		})
	}
}

// TestBaseURLAndHeaders: the base URL may end in a slash or omit /v2; the key is a Bearer token;
// the User-Agent can be set; a bad base URL fails every call.
func TestBaseURLAndHeaders(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, base := range []string{e.srv.URL, e.srv.URL + "/", e.srv.URL + "/v2", e.srv.URL + "/v2/", " " + e.srv.URL + "/v2// "} {
		c := spoolclient.New(base, adminSecret, spoolclient.WithHTTPClient(&http.Client{Transport: e.rec}))
		require.Equal(t, e.srv.URL+"/v2", c.BaseURL(), base)
		_, err := c.Endpoint("ep").Health(e.ctx)
		require.NoError(t, err, base)
		h := e.rec.lastHeader()
		require.Equal(t, "Bearer "+adminSecret, h.Get("Authorization"))
		require.Equal(t, spoolclient.DefaultUserAgent, h.Get("User-Agent"))
		require.Empty(t, h.Get("Content-Type"))
	}
	require.Equal(t, "https://api.runpod.ai/v2", spoolclient.New("https://api.runpod.ai/v2/", "k").BaseURL())

	c := spoolclient.New(e.srv.URL+"/v2", adminSecret, spoolclient.WithHTTPClient(&http.Client{Transport: e.rec}),
		spoolclient.WithUserAgent("my-app/2"))
	_, err := c.Endpoint("ep").Run(e.ctx, spoolclient.Request{Input: 1})
	require.NoError(t, err)
	h := e.rec.lastHeader()
	require.Equal(t, "my-app/2", h.Get("User-Agent"))
	require.Equal(t, "application/json", h.Get("Content-Type"))

	// Bodyless POSTs send no body (as runpod-python does) and are accepted.
	_, err = c.Endpoint("ep").PurgeQueue(e.ctx)
	require.NoError(t, err)
	require.Empty(t, e.rec.lastHeader().Get("Content-Type"))

	for _, bad := range []string{"127.0.0.1:8080", "ftp://host/v2", "http://", "://x"} {
		_, err := spoolclient.New(bad, "k").Endpoint("ep").Health(e.ctx)
		require.ErrorContains(t, err, "invalid base URL", bad)
	}
}

// TestAnswerLimits: a successful answer over the limit is an error; error answers are read only
// in part; a body that is not a JSON error becomes a one-line excerpt; Retry-After may be a date.
func TestAnswerLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.worker("w1")
	j, err := e.ep.Run(e.ctx, spoolclient.Request{Input: 1})
	require.NoError(t, err)
	require.Equal(t, j.ID, w.takeID())
	w.done(j.ID, `{"output":"`+strings.Repeat("y", 4096)+`"}`)
	_, err = e.client(adminSecret).Endpoint("ep").Status(e.ctx, j.ID)
	require.NoError(t, err)
	small := spoolclient.New(e.srv.URL, adminSecret, spoolclient.WithHTTPClient(e.srv.Client()), spoolclient.WithMaxResponseBytes(1024))
	_, err = small.Endpoint("ep").Status(e.ctx, j.ID)
	require.ErrorContains(t, err, "answer exceeds 1024 bytes")

	// Answers no Spool server gives, from a stand-in: a proxy's HTML page and a huge error body.
	retryAt := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	stub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/health"):
			w.Header().Set("Retry-After", retryAt)
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("<html>\n<body>Service Unavailable</body>\n</html>"))
		default:
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte(`{"error":"` + strings.Repeat("z", 1<<20) + `"}`))
		}
	}))
	defer stub.Close()
	ep := spoolclient.New(stub.URL, "k", spoolclient.WithHTTPClient(stub.Client())).Endpoint("ep")
	_, err = ep.Health(e.ctx)
	var ae *spoolclient.APIError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, 503, ae.StatusCode)
	require.Equal(t, "<html> …", ae.Message)
	require.InDelta(t, 90, ae.RetryAfter.Seconds(), 2)
	require.ErrorIs(t, err, spoolclient.ErrServer)
	_, err = ep.Status(e.ctx, "x")
	require.ErrorAs(t, err, &ae)
	require.Equal(t, 502, ae.StatusCode)
	require.Less(t, len(ae.Message), 300, "the error body is read only in part")
}
