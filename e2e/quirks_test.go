package e2e_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// requireError requires a RunPod-style error answer: the status, Content-Type: application/json and
// {"error": "<message>"}.
func requireError(t *testing.T, r resp, code int, what string) {
	t.Helper()
	require.Equal(t, code, r.Code, "%s: %s", what, r)
	require.True(t, isJSON(r.Header), "%s: error Content-Type %q", what, r.Header.Get("Content-Type"))
	m := fields(t, r.Body)
	require.NotEmpty(t, str(t, m, "error"), "%s: error body %s", what, r.Body)
}

// TestClientQuirks sends what the SDKs and curl users actually send (docs/client-api.md §1.2,
// §1.3, §2, §12) and requires the server to accept it.
func TestClientQuirks(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverOpts{Config: `
endpoints:
  - name: q-auth
  - name: q-wrap
  - name: q-bytes
  - name: q-bodyless
  - name: q-slash
  - name: q-retry
`})

	t.Run("auth header forms", func(t *testing.T) {
		t.Parallel()
		body := []byte(`{"input":{"x":1}}`)
		for _, key := range []string{srv.Keys.Client, srv.Keys.Admin} {
			for name, h := range map[string]http.Header{
				"Bearer":           {"Authorization": {"Bearer " + key}, "Content-Type": {"application/json"}},
				"raw":              {"Authorization": {key}, "Content-Type": {"application/json"}},
				"lower-case name":  {"authorization": {key}, "content-type": {"application/json"}},
				"upper-case name":  {"AUTHORIZATION": {"Bearer " + key}, "Content-Type": {"application/json"}},
				"no content type":  {"Authorization": {"Bearer " + key}},
				"curl docs sample": {"authorization": {key}, "accept": {"application/json"}, "content-type": {"application/json"}},
			} {
				r := srv.do(t, http.MethodPost, "/v2/q-auth/run", h, body)
				require.Equal(t, http.StatusOK, r.Code, "%s: %s", name, r)
				id := str(t, fields(t, r.Body), "id")
				delete(h, "Content-Type")
				delete(h, "content-type")
				r = srv.do(t, http.MethodGet, "/v2/q-auth/status/"+id, h, nil)
				require.Equal(t, http.StatusOK, r.Code, "%s: status: %s", name, r)
				requireJobView(t, r.Body, id, "IN_QUEUE")
			}
		}

		requireError(t, srv.do(t, http.MethodPost, "/v2/q-auth/run", http.Header{"Content-Type": {"application/json"}}, body), http.StatusUnauthorized, "no key")
		for _, v := range []string{"Bearer " + newSecret(), newSecret(), "Bearer", "Bearer " + srv.Keys.Client + "x"} {
			requireError(t, srv.do(t, http.MethodPost, "/v2/q-auth/run", http.Header{"Authorization": {v}}, body), http.StatusUnauthorized, "unknown key "+v)
			requireError(t, srv.do(t, http.MethodGet, "/v2/q-auth/health", http.Header{"Authorization": {v}}, nil), http.StatusUnauthorized, "unknown key on health")
		}

		// A known key without the scope: 403.
		wk := http.Header{"Authorization": {"Bearer " + srv.Keys.Worker}, "Content-Type": {"application/json"}}
		requireError(t, srv.do(t, http.MethodPost, "/v2/q-auth/run", wk, body), http.StatusForbidden, "worker key on /run")
		requireError(t, srv.do(t, http.MethodGet, "/v2/q-auth/health", wk, nil), http.StatusForbidden, "worker key on /health")
		requireError(t, srv.do(t, http.MethodPost, "/v2/q-auth/purge-queue", wk, nil), http.StatusForbidden, "worker key on /purge-queue")
		wraw := http.Header{"Authorization": {srv.Keys.Worker}}
		requireError(t, srv.do(t, http.MethodPost, "/v2/q-auth/runsync?wait=1000", wraw, body), http.StatusForbidden, "raw worker key on /runsync")
		requireError(t, srv.do(t, http.MethodGet, "/api/endpoints", wk, nil), http.StatusForbidden, "worker key on /api")
		requireError(t, srv.do(t, http.MethodGet, "/api/endpoints", http.Header{"Authorization": {"Bearer " + srv.Keys.Client}}, nil), http.StatusForbidden, "client key on /api")
		// And a client key on the worker protocol.
		cw := newPlainWorker(srv, "q-auth", "w-client-key")
		cw.key = srv.Keys.Client
		requireError(t, cw.get(t, cw.urls.take(1, false)), http.StatusForbidden, "client key on job-take")
		cw.key = newSecret()
		requireError(t, cw.get(t, cw.urls.take(1, false)), http.StatusUnauthorized, "unknown key on job-take")
	})

	t.Run("not found", func(t *testing.T) {
		t.Parallel()
		c := srv.SDK(stylePython, "no-such-endpoint")
		requireError(t, c.Run(t, `{"x": 1}`), http.StatusNotFound, "unknown endpoint")
		c = srv.SDK(stylePython, "q-auth")
		requireError(t, c.Status(t, "00000000-0000-4000-8000-000000000000"), http.StatusNotFound, "unknown job")
		requireError(t, srv.SDK(styleGo, "q-auth").Status(t, "00000000-0000-4000-8000-000000000000"), http.StatusNotFound, "unknown job (POST)")
	})

	t.Run("python run wraps its payload", func(t *testing.T) {
		t.Parallel()
		py := srv.SDK(stylePython, "q-wrap")
		w := newPlainWorker(srv, "q-wrap", "w-wrap")
		for _, c := range []struct{ payload, want string }{
			{`{"prompt": "hi"}`, `{"prompt":"hi"}`},
			{`{"input": {}}`, `{"input":{}}`}, // an empty "input" is not truthy: wrapped again
			{`{"input": {"a": 1}}`, `{"a":1}`},
			{`{"prompt": "h\u00e9llo \ud83d\ude00"}`, `{"prompt":"h\u00e9llo 😀"}`}, // ensure_ascii escapes, surrogate pair included
		} {
			id := py.Submit(t, c.payload)
			job := w.TakeOne(t)
			require.Equal(t, id, str(t, job, "id"))
			requireSameJSON(t, c.want, job["input"], "payload %s", c.payload)
		}
	})

	t.Run("input kept byte for byte", func(t *testing.T) {
		t.Parallel()
		w := newPlainWorker(srv, "q-bytes", "w-bytes")
		c := srv.SDK(styleCurl, "q-bytes")
		for _, input := range []string{
			`{"b":1.50,"a":"h\u00e9llo","c":[1e3,-0.0,12345678901234567890,1E-7],"d":{"z":null,"y":[]}}`,
			`"just a string"`,
			`[1,2,3]`,
			`0`,
			`false`,
			`{}`,
		} {
			id := c.Submit(t, "{ \"input\" :\t"+input+" ,\n \"ignoredTopLevel\": {\"k\": 1} }")
			job := w.TakeOne(t)
			require.Equal(t, id, str(t, job, "id"))
			require.Equal(t, input, string(job["input"]), "input must reach the worker byte for byte")
			require.NotContains(t, job, "ignoredTopLevel")
		}
		for name, body := range map[string]string{
			"null input":    `{"input":null}`,
			"missing input": `{"webhook":"https://example.com/hook"}`,
			"not JSON":      `{"input":`,
			"empty body":    ``,
			"array body":    `[{"input":1}]`,
			"ttl too short": `{"input":1,"policy":{"ttl":9999}}`,
			"exec too low":  `{"input":1,"policy":{"executionTimeout":5000}}`,
		} {
			requireError(t, c.Run(t, body), http.StatusBadRequest, name)
		}
	})

	t.Run("bodyless posts in every SDK's form", func(t *testing.T) {
		t.Parallel()
		for _, style := range []sdkStyle{stylePython, styleJS, styleGo, styleCurl} {
			c := srv.SDK(style, "q-bodyless")
			a, b := c.Submit(t, `{"input":{"n":1}}`), c.Submit(t, `{"input":{"n":2}}`)

			r := c.Status(t, a)
			require.Equal(t, http.StatusOK, r.Code, "%s status: %s", style, r)
			requireJobView(t, r.Body, a, "IN_QUEUE")
			r = c.StatusSync(t, a, 1000)
			require.Equal(t, http.StatusOK, r.Code, "%s status-sync: %s", style, r)
			requireJobView(t, r.Body, a, "IN_QUEUE")
			r = c.Stream(t, a, 1000)
			require.Equal(t, http.StatusOK, r.Code, "%s stream: %s", style, r)
			requireSameJSON(t, `[]`, fields(t, r.Body)["stream"], "%s: no chunks yet, and never null", style)

			r = c.Cancel(t, a)
			require.Equal(t, http.StatusOK, r.Code, "%s cancel: %s", style, r)
			requireJobView(t, r.Body, a, "CANCELLED")

			r = c.PurgeQueue(t)
			require.Equal(t, http.StatusOK, r.Code, "%s purge-queue: %s", style, r)
			var purge struct {
				Removed *int   `json:"removed"`
				Status  string `json:"status"`
			}
			require.NoError(t, json.Unmarshal(r.Body, &purge))
			require.NotNil(t, purge.Removed, "%s purge-queue: %s", style, r)
			require.Equal(t, 1, *purge.Removed, "%s purge-queue: %s", style, r)
			require.Equal(t, "completed", purge.Status)
			m := requireJobView(t, c.Status(t, b).Body, b, "CANCELLED")
			require.NotEmpty(t, str(t, m, "error"), "a purged job says so")
		}
	})

	t.Run("go sdk double slash", func(t *testing.T) {
		t.Parallel()
		c := srv.SDK(styleGo, "q-slash")
		c.doubleSlash = true
		id := c.Submit(t, `{"input":{"n":1}}`)
		for name, r := range map[string]resp{
			"status":      c.Status(t, id),
			"status-sync": c.StatusSync(t, id, 1000),
			"stream":      c.Stream(t, id, 1000),
			"health":      c.Health(t),
		} {
			require.Equal(t, http.StatusOK, r.Code, "//%s: %s", name, r)
		}
		// /runsync whose wait runs out: {"id","status":"IN_QUEUE"}, and the job goes on.
		r := c.RunSync(t, `{"input":{"n":2}}`, 1000)
		require.Equal(t, http.StatusOK, r.Code, "//runsync: %s", r)
		m := fields(t, r.Body)
		sid := str(t, m, "id")
		require.True(t, strings.HasPrefix(sid, "sync-"), "runsync id %q", sid)
		require.Equal(t, "IN_QUEUE", str(t, m, "status"))
		r = c.Cancel(t, id)
		require.Equal(t, http.StatusOK, r.Code, "//cancel: %s", r)
		requireJobView(t, r.Body, id, "CANCELLED")
		r = c.PurgeQueue(t)
		require.Equal(t, http.StatusOK, r.Code, "//purge-queue: %s", r)
		requireJobView(t, c.Status(t, sid).Body, sid, "CANCELLED")
	})

	t.Run("retry", func(t *testing.T) {
		t.Parallel()
		c := srv.SDK(styleCurl, "q-retry")
		w := newPlainWorker(srv, "q-retry", "w-retry")
		id := c.Submit(t, `{"input":{"n":1}}`)
		require.Equal(t, id, str(t, w.TakeOne(t), "id"))
		r := w.Done(t, id, `{"error": "handler failed"}`)
		require.Equal(t, http.StatusOK, r.Code, "job-done: %s", r)
		requireJobView(t, c.Status(t, id).Body, id, "FAILED")

		r = c.do(t, http.MethodPost, "retry/"+id, nil)
		require.Equal(t, http.StatusOK, r.Code, "retry: %s", r)
		m := fields(t, r.Body)
		require.Equal(t, id, str(t, m, "id"))
		require.Equal(t, "IN_QUEUE", str(t, m, "status"))
		m = requireJobView(t, c.Status(t, id).Body, id, "IN_QUEUE")
		require.NotContains(t, m, "error", "retry clears the error")
		require.NotContains(t, m, "output")
		requireSameJSON(t, `1`, m["retries"])
		requireError(t, c.do(t, http.MethodPost, "retry/"+id, nil), http.StatusBadRequest, "retry of a queued job")
		requireError(t, c.do(t, http.MethodPost, "retry/00000000-0000-4000-8000-000000000000", nil), http.StatusNotFound, "retry of an unknown job")

		// The same id and input run again; the old attempt's worker is fenced off.
		job := w.TakeOne(t)
		require.Equal(t, id, str(t, job, "id"))
		requireSameJSON(t, `{"n":1}`, job["input"])
		other := newPlainWorker(srv, "q-retry", "w-other")
		requireError(t, other.Done(t, id, `{"output": "not mine"}`), http.StatusConflict, "a post from a worker that does not hold the job")
		require.Equal(t, http.StatusOK, w.Done(t, id, `{"output": "second try"}`).Code)
		m = requireJobView(t, c.Status(t, id).Body, id, "COMPLETED")
		requireSameJSON(t, `"second try"`, m["output"])
		requireSameJSON(t, `1`, m["retries"])
	})
}
