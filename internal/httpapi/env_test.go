package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/auth"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/httpapi"
	"github.com/spool-run/spool/internal/spooltest"
	"github.com/spool-run/spool/internal/webhook"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const adminSecret = "spool_admin_for_tests"

// env is a real server on loopback: SQLite on a temp dir, an engine on a fake clock, real keys.
type env struct {
	t    testing.TB
	ctx  context.Context
	fake *clock.Fake
	eng  *engine.Engine
	keys *auth.Keyring
	srv  *httptest.Server

	admin    string // "Bearer <secret>" header values
	client   string // client key, every endpoint
	clientO  string // client key of endpoint "other" only
	readOnly string // read-only client key
	worker   string // worker key of "ep"
}

func newEnv(t testing.TB, mods ...func(*httpapi.Config)) *env {
	t.Helper()
	fake := clock.NewFake(spooltest.Start)
	s := spooltest.NewServer(t, spooltest.Options{
		Clock:       fake,
		AdminSecret: adminSecret,
		Endpoints:   []spool.Endpoint{spool.NewEndpoint("ep"), spool.NewEndpoint("other")},
		Keys: []spool.Key{
			{Name: "c", Scope: spool.ScopeClient},
			{Name: "co", Scope: spool.ScopeClient, Endpoints: []string{"other"}},
			{Name: "ro", Scope: spool.ScopeClient, ReadOnly: true},
			{Name: "w", Scope: spool.ScopeWorker, Endpoints: []string{"ep"}},
		},
		Engine: func(c *engine.Config) {
			c.WebhookPayload = webhook.Payload // deliveries are enqueued; nothing dispatches them here
		},
		API: func(c *httpapi.Config) {
			for _, m := range mods {
				m(c)
			}
		},
	})
	return &env{t: t, ctx: context.Background(), fake: fake, eng: s.Engine, keys: s.Keys, srv: s.HTTP,
		admin:    "Bearer " + adminSecret,
		client:   "Bearer " + s.Secrets["c"],
		clientO:  "Bearer " + s.Secrets["co"],
		readOnly: "Bearer " + s.Secrets["ro"],
		worker:   "Bearer " + s.Secrets["w"],
	}
}

type resp struct {
	status int
	header http.Header
	body   string
}

// req is one request. body nil sends none; headers are sent exactly as named.
type req struct {
	method, path string
	auth         string
	body         *string
	headers      map[string]string
}

func str(s string) *string { return &s }

func (e *env) send(q req) resp {
	e.t.Helper()
	var rd io.Reader
	if q.body != nil {
		rd = strings.NewReader(*q.body)
	}
	hr, err := http.NewRequestWithContext(e.ctx, q.method, e.srv.URL+q.path, rd)
	require.NoError(e.t, err)
	if q.body != nil && *q.body == "" {
		hr.Body, hr.ContentLength = http.NoBody, 0
	}
	if q.auth != "" {
		hr.Header.Set("Authorization", q.auth)
	}
	for k, v := range q.headers {
		hr.Header[k] = []string{v} // as given: lets a test send a lower-case header name
	}
	res, err := e.srv.Client().Do(hr)
	require.NoError(e.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(e.t, err)
	return resp{res.StatusCode, res.Header, string(b)}
}

func (e *env) do(method, path, auth, body string) resp {
	e.t.Helper()
	q := req{method: method, path: path, auth: auth}
	if body != "" {
		q.body = &body
		q.headers = map[string]string{"Content-Type": "application/json"}
	}
	return e.send(q)
}

// obj decodes a JSON object answer, keeping member values raw.
func obj(t testing.TB, body string) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(body), &m), body)
	return m
}

func keysOf(m map[string]json.RawMessage) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func sval(t testing.TB, raw json.RawMessage) string {
	t.Helper()
	var s string
	require.NoError(t, json.Unmarshal(raw, &s), string(raw))
	return s
}

// errMsg returns the message of an {"error": ...} body.
func errMsg(t *testing.T, r resp) string {
	t.Helper()
	require.Equal(t, "application/json", r.header.Get("Content-Type"), r.body)
	m := obj(t, r.body)
	require.Equal(t, []string{"error"}, keysOf(m), r.body)
	return sval(t, m["error"])
}

// run submits input to /run on ep and returns the job id.
func (e *env) run(ep, body string) string {
	e.t.Helper()
	r := e.do("POST", "/v2/"+ep+"/run", e.client, body)
	require.Equal(e.t, 200, r.status, r.body)
	m := obj(e.t, r.body)
	require.Equal(e.t, `"IN_QUEUE"`, string(m["status"]))
	return sval(e.t, m["id"])
}

// take takes one job of ep as worker w (raw key, as runpod-python sends it).
func (e *env) take(w string) map[string]json.RawMessage {
	e.t.Helper()
	r := e.do("GET", "/v2/ep/job-take/"+w+"?gpu=TEST&job_in_progress=0", strings.TrimPrefix(e.worker, "Bearer "), "")
	require.Equal(e.t, 200, r.status, r.body)
	return obj(e.t, r.body)
}

// post posts a job-done (or job-stream) body as runpod-python does.
func (e *env) post(route, w, id, body string) resp {
	e.t.Helper()
	return e.send(req{method: "POST", path: "/v2/ep/" + route + "/" + w + "/" + id + "?gpu=TEST&isStream=false",
		auth: strings.TrimPrefix(e.worker, "Bearer "), body: &body,
		headers: map[string]string{"Content-Type": "application/x-www-form-urlencoded", "charset": "utf-8"}})
}

// status reads /status of a job of ep.
func (e *env) status(id string) map[string]json.RawMessage {
	e.t.Helper()
	r := e.do("GET", "/v2/ep/status/"+id, e.client, "")
	require.Equal(e.t, 200, r.status, r.body)
	return obj(e.t, r.body)
}
