package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/httpapi"
	"github.com/spool-run/spool/internal/joblog"
	"github.com/spool-run/spool/internal/spooltest"
)

// adminEnv is a cliEnv (a real server on a fake clock, endpoints "ep" and "other", a client key)
// whose server also keeps the per-job log, as spool serve does.
type adminEnv struct {
	*cliEnv
	log *joblog.Index
}

// adminLogPerJob is how many entries a job's log keeps in these tests (so that dropping shows).
const adminLogPerJob = 4

func newAdminEnv(t *testing.T) *adminEnv {
	t.Helper()
	fake := clock.NewFake(spooltest.Start)
	idx := joblog.New(joblog.Config{Clock: fake, PerJob: adminLogPerJob})
	s := spooltest.NewServer(t, spooltest.Options{
		Clock:       fake,
		AdminSecret: cliAdminSecret,
		Endpoints:   []spool.Endpoint{spool.NewEndpoint("ep"), spool.NewEndpoint("other")},
		Keys:        []spool.Key{{Name: "client", Scope: spool.ScopeClient}},
		API: func(c *httpapi.Config) {
			c.TakeWait = 10 * time.Second
			c.JobLog = idx
		},
	})
	e := &cliEnv{t: t, ctx: context.Background(), fake: fake, eng: s.Engine, srv: s.HTTP, clientKey: s.Secrets["client"]}
	return &adminEnv{cliEnv: e, log: idx}
}

// adminEnvVars is the environment of the admin commands' runs: the server, the admin key, and
// UTC, so that the local times the text output shows are known.
func (e *adminEnv) adminEnvVars(extra ...string) []string {
	return e.env(append([]string{"TZ=UTC"}, extra...)...)
}

// ok runs the CLI, requires exit 0 and an empty stderr, and returns stdout.
func (e *adminEnv) ok(stdin string, args ...string) string {
	e.t.Helper()
	r := e.spool(e.adminEnvVars(), stdin, args...)
	require.Equal(e.t, 0, r.code, "spool %v: %s", args, r.stderr)
	require.Empty(e.t, r.stderr, "spool %v", args)
	return r.stdout
}

// okJSON runs the CLI piped and decodes its one line of JSON.
func (e *adminEnv) okJSON(args ...string) map[string]any {
	e.t.Helper()
	return jobJSON(e.t, e.ok("", args...))
}

// fails runs the CLI and requires exit status code, nothing on stdout and one line on stderr
// containing want.
func (e *adminEnv) fails(env []string, stdin string, code int, want string, args ...string) {
	e.t.Helper()
	r := e.spool(env, stdin, args...)
	require.Equal(e.t, code, r.code, "spool %v: stdout %q stderr %q", args, r.stdout, r.stderr)
	require.Empty(e.t, r.stdout, "spool %v", args)
	oneErrorLine(e.t, r.stderr, want)
}

// submit submits a job to endpoint and returns its id; the fake clock then moves a second, so
// that jobs submitted one after the other have distinct creation times.
func (e *adminEnv) submit(endpoint, input string) string {
	e.t.Helper()
	code, body := e.http("POST", "/v2/"+endpoint+"/run", `{"input":`+input+`}`)
	require.Equal(e.t, http.StatusOK, code, body)
	var v struct {
		ID string `json:"id"`
	}
	require.NoError(e.t, json.Unmarshal([]byte(body), &v))
	e.fake.Advance(time.Second)
	return v.ID
}

// takeFrom takes the next job of endpoint as worker w (one must be queued) and returns its id.
func (e *adminEnv) takeFrom(endpoint, w string) string {
	e.t.Helper()
	code, body := e.http("GET", "/v2/"+endpoint+"/job-take/"+w+"?gpu=none&job_in_progress=0", "")
	require.Equal(e.t, http.StatusOK, code, body)
	var v struct {
		ID string `json:"id"`
	}
	require.NoError(e.t, json.Unmarshal([]byte(body), &v))
	return v.ID
}

// rows splits text output into lines of whitespace-separated fields.
func rows(out string) [][]string {
	var rs [][]string
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		rs = append(rs, strings.Fields(l))
	}
	return rs
}

// rowOf returns the row whose first field is first, failing when there is none.
func rowOf(t *testing.T, out, first string) []string {
	t.Helper()
	for _, r := range rows(out) {
		if len(r) > 0 && r[0] == first {
			return r
		}
	}
	t.Fatalf("no row %q in\n%s", first, out)
	return nil
}

// fields parses a "field: value" listing.
func fields(t *testing.T, out string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if l == "" {
			continue
		}
		k, v, ok := strings.Cut(l, ":")
		if !ok || strings.Contains(k, " ") {
			continue // a note, not a field
		}
		m[k] = strings.TrimSpace(v)
	}
	return m
}

func names(t *testing.T, list any) []string {
	t.Helper()
	var out []string
	for _, x := range list.([]any) {
		m := x.(map[string]any)
		if n, ok := m["name"]; ok {
			out = append(out, n.(string))
		} else {
			out = append(out, m["id"].(string))
		}
	}
	return out
}

// testWebhookSecret is a valid Standard Webhooks secret.
var testWebhookSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

// TestEndpointsCmdsList: endpoints list prints the server's JSON piped and a table of the main
// settings as text.
func TestEndpointsCmdsList(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t)
	v := e.okJSON("endpoints", "list")
	require.Equal(t, []string{"ep", "other"}, names(t, v["endpoints"]))
	ep := v["endpoints"].([]any)[0].(map[string]any)
	require.Equal(t, float64(3), ep["workersMax"])
	require.Equal(t, false, ep["hasWebhookSecret"])

	out := e.ok("", "endpoints", "list", "-o", "text")
	require.Equal(t, []string{"NAME", "WORKERS", "IDLE", "SCALER", "EXEC", "TIMEOUT", "TTL", "MAX", "QUEUE", "WORKER", "SOURCE"}, rows(out)[0])
	require.Equal(t, []string{"ep", "0-3", "5s", "QUEUE_DELAY", "4", "10m", "24h", "-", "external", "-"}, rowOf(t, out, "ep"))
	require.Len(t, rows(out), 3)

	// The columns line up: every row starts its second column where the header does.
	lines := strings.Split(out, "\n")
	col := strings.Index(lines[0], "WORKERS")
	for _, l := range lines[1:3] {
		require.Equal(t, "0-3", l[col:col+3], "%q", l)
	}
}

// TestEndpointsCmdsLifecycle: create (flags, --file, stdin), get, update (flags on top of the
// stored endpoint, the webhook secret kept unless changed) and delete, piped and as text.
func TestEndpointsCmdsLifecycle(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t)
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "whsec.txt")
	require.NoError(t, os.WriteFile(secretFile, []byte(testWebhookSecret+"\n"), 0o600))

	// create with flags, piped: the server's answer.
	v := e.okJSON("endpoints", "create", "gen", "--workers-min", "1", "--workers-max", "6", "--idle-timeout", "1m",
		"--execution-timeout", "90s", "--ttl", "3600000", "--scaler-type", "request_count", "--scaler-value", "2",
		"--max-queue", "50", "--gpu-count", "1", "--webhook-backoff", "exponential", "--webhook-delay", "2s",
		"--webhook-secret-file", secretFile, "--worker-image", "ghcr.io/me/gen:1", "--worker-arg", "serve", "--worker-arg", "--port=1")
	require.Equal(t, "gen", v["name"])
	require.Equal(t, float64(1), v["workersMin"])
	require.Equal(t, float64(6), v["workersMax"])
	require.Equal(t, float64(60), v["idleTimeout"])
	require.Equal(t, float64(90000), v["executionTimeoutMs"])
	require.Equal(t, float64(3600000), v["ttlMs"])
	require.Equal(t, "REQUEST_COUNT", v["scalerType"])
	require.Equal(t, float64(2), v["scalerValue"])
	require.Equal(t, float64(50), v["maxQueue"])
	require.Equal(t, float64(1), v["gpuCount"])
	require.Equal(t, "exponential", v["webhookBackoff"])
	require.Equal(t, float64(2000), v["webhookDelayMs"])
	require.Equal(t, true, v["hasWebhookSecret"])
	require.NotContains(t, v, "webhookSecret")
	require.Equal(t, map[string]any{"image": "ghcr.io/me/gen:1", "args": []any{"serve", "--port=1"}}, v["worker"])
	stored, err := e.eng.Endpoint("gen")
	require.NoError(t, err)
	require.Equal(t, testWebhookSecret, stored.WebhookSecret)

	// get as text: the settings, never the secret.
	out := e.ok("", "endpoints", "get", "gen", "-o", "text")
	require.NotContains(t, out, "whsec_")
	f := fields(t, out)
	for k, want := range map[string]string{
		"name": "gen", "source": "api", "workersMin": "1", "workersMax": "6", "idleTimeout": "1m",
		"scalerType": "REQUEST_COUNT", "scalerValue": "2", "executionTimeout": "1m30s", "ttl": "1h",
		"maxQueue": "50", "gpuCount": "1", "outputOffloadBytes": "0 (off)", "webhookSecret": "set (never shown)",
		"webhookBackoff": "exponential", "webhookDelay": "2s", "webhookMaxDelay": "1h", "webhookTimeout": "10s",
		"worker.image": "ghcr.io/me/gen:1", "worker.args": "serve --port=1", "createdAt": "2026-01-01 00:00:00",
	} {
		require.Equal(t, want, f[k], k)
	}
	// get piped: the server's JSON, which can be PUT back as is.
	got := e.okJSON("endpoints", "get", "gen")
	require.Equal(t, true, got["hasWebhookSecret"])
	require.Equal(t, float64(6), got["workersMax"])

	// update: only the flags change; the rest, the secret included, is kept.
	e.fake.Advance(time.Minute)
	v = e.okJSON("endpoints", "update", "gen", "--workers-max", "8", "--webhook-timeout", "30000")
	require.Equal(t, float64(8), v["workersMax"])
	require.Equal(t, float64(30000), v["webhookTimeoutMs"])
	require.Equal(t, float64(1), v["workersMin"])
	require.Equal(t, float64(90000), v["executionTimeoutMs"])
	require.Equal(t, "REQUEST_COUNT", v["scalerType"])
	require.Equal(t, true, v["hasWebhookSecret"])
	require.Equal(t, map[string]any{"image": "ghcr.io/me/gen:1", "args": []any{"serve", "--port=1"}}, v["worker"])
	stored, err = e.eng.Endpoint("gen")
	require.NoError(t, err)
	require.Equal(t, testWebhookSecret, stored.WebhookSecret)

	// update as text prints the stored endpoint; switching to a command drops the image.
	out = e.ok("", "endpoints", "update", "gen", "--worker-command", "python3", "--worker-arg", "handler.py", "--no-webhook-secret", "-o", "text")
	f = fields(t, out)
	require.Equal(t, "python3", f["worker.command"])
	require.Equal(t, "handler.py", f["worker.args"])
	require.NotContains(t, f, "worker.image")
	require.Equal(t, "none", f["webhookSecret"])
	require.Equal(t, "8", f["workersMax"])
	require.Equal(t, "2026-01-01 00:01:00", f["updatedAt"])
	stored, err = e.eng.Endpoint("gen")
	require.NoError(t, err)
	require.Empty(t, stored.WebhookSecret)

	// update --file from stdin: its fields replace the endpoint's, the others are kept; the
	// flags apply on top; the secret comes back from a file.
	v = jobJSON(t, e.ok(`{"name":"gen","maxQueue":0,"worker":{"command":"./w","env":{"TOKEN":"t0ps3cret"}}}`,
		"endpoints", "update", "gen", "--file", "-", "--max-queue", "7", "--webhook-secret-file", secretFile))
	require.Equal(t, float64(7), v["maxQueue"])
	require.Equal(t, float64(8), v["workersMax"])
	require.Equal(t, true, v["hasWebhookSecret"])
	require.Equal(t, map[string]any{"command": "./w", "env": map[string]any{"TOKEN": "t0ps3cret"}}, v["worker"])
	// As text, the worker's environment shows its names only.
	out = e.ok("", "endpoints", "get", "gen", "-o", "text")
	require.Equal(t, "TOKEN", fields(t, out)["worker.env"])
	require.NotContains(t, out, "t0ps3cret")
	// --no-worker removes the worker.
	v = e.okJSON("endpoints", "update", "gen", "--no-worker")
	require.NotContains(t, v, "worker")

	// create from a file, with a flag over it.
	file := filepath.Join(dir, "ep.json")
	require.NoError(t, os.WriteFile(file, []byte(`{"workersMax": 2, "ttlMs": 60000, "webhookAttempts": 5}`), 0o600))
	v = e.okJSON("endpoints", "create", "fromfile", "--file", file, "--ttl", "2m")
	require.Equal(t, "fromfile", v["name"])
	require.Equal(t, float64(2), v["workersMax"])
	require.Equal(t, float64(120000), v["ttlMs"])
	require.Equal(t, float64(5), v["webhookAttempts"])
	require.Equal(t, float64(5), v["idleTimeout"], "the default")
	// create as text.
	f = fields(t, e.ok("", "endpoints", "create", "plain", "-o", "text"))
	require.Equal(t, "plain", f["name"])
	require.Equal(t, "external (workers are started outside Spool)", f["worker"])

	// delete, piped and as text.
	require.Equal(t, map[string]any{"name": "fromfile", "deleted": true}, e.okJSON("endpoints", "delete", "fromfile"))
	require.Equal(t, "Deleted endpoint plain.\n", e.ok("", "endpoints", "delete", "plain", "-o", "text"))
	e.fails(e.adminEnvVars(), "", 1, `endpoint "fromfile" not found (HTTP 404)`, "endpoints", "get", "fromfile")
	require.Equal(t, []string{"ep", "gen", "other"}, names(t, e.okJSON("endpoints", "list")["endpoints"]))
}

// TestEndpointsCmdsErrors: what the user typed wrong exits 2 before any request; what the server
// refuses exits 1 with its message; either way one line on stderr and nothing on stdout.
func TestEndpointsCmdsErrors(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	notJSON := write("bad.json", `{"workersMax": }`)
	array := write("array.json", `[1]`)
	renamed := write("renamed.json", `{"name": "other"}`)
	typo := write("typo.json", `{"workersMaxx": 2}`)
	empty := write("empty.txt", "\n \n")
	env := e.adminEnvVars()
	for _, tc := range []struct {
		name  string
		env   []string
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"unknown endpoint", env, "", []string{"endpoints", "get", "nope"}, 1, `endpoint "nope" not found (HTTP 404)`},
		{"update unknown endpoint", env, "", []string{"endpoints", "update", "nope", "--workers-max", "2"}, 1, `endpoint "nope" not found (HTTP 404)`},
		{"delete unknown endpoint", env, "", []string{"endpoints", "delete", "nope"}, 1, `endpoint "nope" not found (HTTP 404)`},
		{"create existing", env, "", []string{"endpoints", "create", "ep"}, 1, `endpoint "ep" already exists`},
		{"refused settings", env, "", []string{"endpoints", "create", "x", "--workers-min", "5", "--workers-max", "2"}, 1,
			"workersMin (5) must not exceed workersMax (2) (HTTP 400)"},
		{"bad name", env, "", []string{"endpoints", "create", "a/b"}, 1, "name must be 1-64 letters"},
		{"unknown field in file", env, "", []string{"endpoints", "create", "x", "--file", typo}, 1, `unknown field "workersMaxx" (HTTP 400)`},
		{"nothing to change", env, "", []string{"endpoints", "update", "ep"}, 2, "nothing to change"},
		{"bad duration", env, "", []string{"endpoints", "update", "ep", "--idle-timeout", "soon"}, 2, `invalid argument "soon" for "--idle-timeout"`},
		{"part seconds", env, "", []string{"endpoints", "update", "ep", "--idle-timeout", "1500ms"}, 2, "must be whole seconds"},
		{"zero timeout", env, "", []string{"endpoints", "update", "ep", "--execution-timeout", "0"}, 2, "must be positive"},
		{"not an int", env, "", []string{"endpoints", "update", "ep", "--workers-max", "many"}, 2, `invalid argument "many" for "--workers-max"`},
		{"negative", env, "", []string{"endpoints", "update", "ep", "--workers-max", "-1"}, 2, "--workers-max must be at least 0, not -1"},
		{"bad scaler", env, "", []string{"endpoints", "update", "ep", "--scaler-type", "fast"}, 2, `--scaler-type must be QUEUE_DELAY or REQUEST_COUNT, not "fast"`},
		{"bad backoff", env, "", []string{"endpoints", "update", "ep", "--webhook-backoff", "linear"}, 2, "--webhook-backoff must be fixed or exponential"},
		{"bad pull", env, "", []string{"endpoints", "update", "ep", "--worker-image", "x", "--worker-pull", "sometimes"}, 2, "--worker-pull must be missing, always or never"},
		{"command and image", env, "", []string{"endpoints", "update", "ep", "--worker-command", "a", "--worker-image", "b"}, 2, "exclude each other"},
		{"no worker and image", env, "", []string{"endpoints", "update", "ep", "--no-worker", "--worker-image", "b"}, 2, "--no-worker and --worker-image exclude each other"},
		{"secret and no secret", env, "", []string{"endpoints", "update", "ep", "--no-webhook-secret", "--webhook-secret-file", empty}, 2, "exclude each other"},
		{"missing secret file", env, "", []string{"endpoints", "update", "ep", "--webhook-secret-file", filepath.Join(dir, "none")}, 2, "no such file"},
		{"empty secret file", env, "", []string{"endpoints", "update", "ep", "--webhook-secret-file", empty}, 2, "the webhook secret file is empty"},
		{"bad secret", env, "whsec_nope", []string{"endpoints", "update", "ep", "--webhook-secret-file", "-"}, 1, "(HTTP 400)"},
		{"stdin twice", env, "{}", []string{"endpoints", "update", "ep", "--file", "-", "--webhook-secret-file", "-"}, 2, "cannot both read stdin"},
		{"file not JSON", env, "", []string{"endpoints", "create", "x", "--file", notJSON}, 2, notJSON + " is not a JSON object"},
		{"file not an object", env, "", []string{"endpoints", "create", "x", "--file", array}, 2, "is not a JSON object"},
		{"empty stdin", env, "", []string{"endpoints", "create", "x", "--file", "-"}, 2, "stdin must hold a JSON object"},
		{"file renames", env, "", []string{"endpoints", "update", "ep", "--file", renamed}, 2, `names endpoint "other", not "ep"`},
		{"missing name", env, "", []string{"endpoints", "get"}, 2, "usage: spool endpoints get NAME"},
		{"too many args", env, "", []string{"endpoints", "delete", "a", "b"}, 2, "usage: spool endpoints delete NAME"},
		{"unknown subcommand", env, "", []string{"endpoints", "lst"}, 2, `unknown command "lst" for "spool endpoints"; did you mean list?`},
		{"unknown flag", env, "", []string{"endpoints", "list", "--bogus"}, 2, "unknown flag: --bogus"},
		{"bad output", env, "", []string{"endpoints", "list", "-o", "yaml"}, 2, `--output must be auto, json or text, not "yaml"`},
		{"client key", e.adminEnvVars("SPOOL_API_KEY=" + e.clientKey), "", []string{"endpoints", "list"}, 1, "(HTTP 403)"},
		{"wrong key", e.adminEnvVars("SPOOL_API_KEY=wrong"), "", []string{"endpoints", "list"}, 1, "unknown API key (HTTP 401)"},
		{"missing key", []string{"HOME=" + dir, "SPOOL_URL=" + e.srv.URL}, "", []string{"endpoints", "list"}, 2, "no API key"},
		{"unreachable", env, "", []string{"endpoints", "list", "--url", "http://127.0.0.1:1"}, 1, "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := &adminEnv{cliEnv: &cliEnv{t: t, ctx: e.ctx, fake: e.fake, eng: e.eng, srv: e.srv, clientKey: e.clientKey}}
			e.fails(tc.env, tc.stdin, tc.code, tc.want, tc.args...)
		})
	}
	t.Run("a bad flag changes nothing", func(t *testing.T) {
		ep, err := e.eng.Endpoint("ep")
		require.NoError(t, err)
		require.Equal(t, spool.NewEndpoint("ep").WorkersMax, ep.WorkersMax)
		e.fails(env, "", 2, "--scaler-type", "endpoints", "update", "ep", "--workers-max", "9", "--scaler-type", "fast")
		ep, err = e.eng.Endpoint("ep")
		require.NoError(t, err)
		require.Equal(t, spool.NewEndpoint("ep").WorkersMax, ep.WorkersMax)
	})
}

// TestKeysCmds: keys list never shows secrets; keys create shows the new secret once (JSON piped,
// with a warning as text), and the key works; keys revoke ends it.
func TestKeysCmds(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t)
	v := e.okJSON("keys", "list")
	require.ElementsMatch(t, []string{"SPOOL_ADMIN_KEY", "client"}, names(t, v["keys"]))

	// create, piped: the answer holds the secret.
	v = e.okJSON("keys", "create", "--name", "ci", "--scope", "client", "--endpoint", "ep", "--read-only")
	secret, _ := v["key"].(string)
	require.True(t, strings.HasPrefix(secret, "spool_"), "%v", v)
	require.Equal(t, "ci", v["name"])
	require.Equal(t, "client", v["scope"])
	require.Equal(t, []any{"ep"}, v["endpoints"])
	require.Equal(t, true, v["readOnly"])
	id := v["id"].(string)
	r := e.spool(e.adminEnvVars("SPOOL_API_KEY="+secret), "", "health", "ep")
	require.Equal(t, 0, r.code, "the new key works: %s", r.stderr)
	r = e.spool(e.adminEnvVars("SPOOL_API_KEY="+secret), "", "health", "other")
	require.Equal(t, 1, r.code, "and only for its endpoints")

	// create as text: the settings, the secret, and that it is shown once.
	out := e.ok("", "keys", "create", "--name", "box", "--scope", "WORKER", "--endpoint", "ep,other", "-o", "text")
	f := fields(t, out)
	require.Equal(t, "worker", f["scope"])
	require.Equal(t, "ep,other", f["endpoints"])
	require.Equal(t, "no", f["readOnly"])
	require.True(t, strings.HasPrefix(f["key"], "spool_"), out)
	require.Contains(t, out, "shown only this once")
	boxSecret, boxID := f["key"], f["id"]

	// list, piped and as text: every key, no secret.
	for _, out := range []string{e.ok("", "keys", "list"), e.ok("", "keys", "list", "-o", "text")} {
		for _, s := range []string{secret, boxSecret, cliAdminSecret, e.clientKey, "sha256:"} {
			require.NotContains(t, out, s)
		}
	}
	out = e.ok("", "keys", "list", "-o", "text")
	require.Equal(t, []string{"ID", "NAME", "SCOPE", "ENDPOINTS", "READ-ONLY", "SOURCE", "CREATED"}, rows(out)[0])
	require.Equal(t, []string{id, "ci", "client", "ep", "yes", "api", "2026-01-01", "00:00:00"}, rowOf(t, out, id))
	require.Equal(t, []string{boxID, "box", "worker", "ep,other", "no", "api", "2026-01-01", "00:00:00"}, rowOf(t, out, boxID))
	require.Equal(t, []string{"key_env_admin", "SPOOL_ADMIN_KEY", "admin", "all", "no", "env", "-"}, rowOf(t, out, "key_env_admin"))

	// revoke, piped and as text: the keys stop working.
	require.Equal(t, map[string]any{"id": id, "revoked": true}, e.okJSON("keys", "revoke", id))
	require.Equal(t, "Revoked key "+boxID+".\n", e.ok("", "keys", "revoke", boxID, "-o", "text"))
	e.fails(e.adminEnvVars("SPOOL_API_KEY="+secret), "", 1, "unknown API key (HTTP 401)", "health", "ep")
	require.ElementsMatch(t, []string{"SPOOL_ADMIN_KEY", "client"}, names(t, e.okJSON("keys", "list")["keys"]))

	env := e.adminEnvVars()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"keys", "create", "--scope", "client"}, 2, "--name is required"},
		{[]string{"keys", "create", "--name", "x"}, 2, "--scope is required: admin, client or worker"},
		{[]string{"keys", "create", "--name", "x", "--scope", "root"}, 2, `--scope must be admin, client or worker, not "root"`},
		{[]string{"keys", "create", "--name", "x", "--scope", "admin", "--endpoint", "ep"}, 1, "endpoints cannot be set on an admin key: it may use every endpoint (HTTP 400)"},
		{[]string{"keys", "create", "--name", "x", "--scope", "worker", "--read-only"}, 1, "(HTTP 400)"},
		{[]string{"keys", "create", "--name", "x", "--scope", "client", "extra"}, 2, "usage: spool keys create"},
		{[]string{"keys", "revoke", "key_nope"}, 1, "(HTTP 404)"},
		{[]string{"keys", "revoke", "key_env_admin"}, 1, "cannot be deleted through the API (HTTP 409)"},
		{[]string{"keys", "revoke"}, 2, "usage: spool keys revoke ID"},
		{[]string{"keys", "rotate"}, 2, `unknown command "rotate" for "spool keys"`},
	} {
		e.fails(env, "", tc.code, tc.want, tc.args...)
	}
}

// TestJobsCmds: jobs list (filters, pages) and jobs get, piped and as text, and their errors.
func TestJobsCmds(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t)
	require.Equal(t, "No jobs.\n", e.ok("", "jobs", "list", "-o", "text"))
	done := e.submit("ep", `{"n":1}`)
	failed := e.submit("ep", `{"n":2}`)
	queued := e.submit("other", `{"n":3}`)
	require.Equal(t, done, e.takeFrom("ep", "w1"))
	e.post("job-done", "w1", done, `{"output":{"answer":42}}`)
	require.Equal(t, failed, e.takeFrom("ep", "w1"))
	e.post("job-done", "w1", failed, `{"error":"boom"}`)

	ids := func(v map[string]any) []string {
		var out []string
		for _, j := range v["jobs"].([]any) {
			out = append(out, j.(map[string]any)["id"].(string))
		}
		return out
	}
	v := e.okJSON("jobs", "list")
	require.Equal(t, []string{queued, failed, done}, ids(v), "newest first")
	require.NotContains(t, v, "next")
	require.Equal(t, []string{failed, done}, ids(e.okJSON("jobs", "list", "--endpoint", "ep")))
	require.Equal(t, []string{queued, failed}, ids(e.okJSON("jobs", "list", "--status", "failed,IN_QUEUE")))
	require.Equal(t, []string{queued, failed}, ids(e.okJSON("jobs", "list", "--status", "FAILED", "--status", "in_queue")))
	// Pages: --limit, then --before the answer's next.
	v = e.okJSON("jobs", "list", "--limit", "2")
	require.Equal(t, []string{queued, failed}, ids(v))
	next := v["next"].(string)
	require.Equal(t, []string{done}, ids(e.okJSON("jobs", "list", "--limit", "2", "--before", next)))

	out := e.ok("", "jobs", "list", "-o", "text")
	require.Equal(t, []string{"ID", "ENDPOINT", "STATUS", "CREATED", "DELAY", "EXECUTION", "WORKER"}, rows(out)[0])
	require.Equal(t, []string{done, "ep", "COMPLETED", "2026-01-01", "00:00:00", "3s", "0s", "w1"}, rowOf(t, out, done))
	require.Equal(t, []string{failed, "ep", "FAILED", "2026-01-01", "00:00:01", "2s", "0s", "w1"}, rowOf(t, out, failed))
	require.Equal(t, []string{queued, "other", "IN_QUEUE", "2026-01-01", "00:00:02", "-", "-", "-"}, rowOf(t, out, queued))
	out = e.ok("", "jobs", "list", "--limit", "1", "-o", "text")
	require.Len(t, rows(out), 4) // header, one job, a blank line, where the next page starts
	require.Equal(t, queued, rows(out)[1][0])
	require.True(t, strings.HasSuffix(out, "\nMore: add --before "+e.okJSON("jobs", "list", "--limit", "1")["next"].(string)+"\n"), out)
	require.Equal(t, "No jobs.\n", e.ok("", "jobs", "list", "--endpoint", "other", "--status", "COMPLETED", "-o", "text"))

	// get: piped, the admin view; as text, a listing.
	j := e.okJSON("jobs", "get", done)
	require.Equal(t, done, j["id"])
	require.Equal(t, "ep", j["endpoint"])
	require.Equal(t, map[string]any{"n": float64(1)}, j["input"])
	require.Equal(t, map[string]any{"answer": float64(42)}, j["output"])
	f := fields(t, e.ok("", "jobs", "get", done, "-o", "text"))
	for k, want := range map[string]string{
		"id": done, "endpoint": "ep", "status": "COMPLETED", "worker": "w1", "attempt": "1",
		"createdAt": "2026-01-01 00:00:00.000", "finishedAt": "2026-01-01 00:00:03.000", "delayTime": "3s",
		"executionTime": "0s", "policy": "executionTimeout 10m, ttl 24h", "sync": "no",
		"input": `{"n":1}`, "output": `{"answer":42}`,
	} {
		require.Equal(t, want, f[k], k)
	}
	require.Equal(t, "boom", fields(t, e.ok("", "jobs", "get", failed, "-o", "text"))["error"])
	f = fields(t, e.ok("", "jobs", "get", queued, "-o", "text"))
	require.Equal(t, "IN_QUEUE", f["status"])
	require.Equal(t, "1", f["position"])
	require.Contains(t, f["waiting"], "no_workers_yet")

	env := e.adminEnvVars()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"jobs", "get", "no-such-job"}, 1, "job no-such-job not found (HTTP 404)"},
		{[]string{"jobs", "list", "--status", "DONE"}, 2, `--status: "DONE" is not a job state`},
		{[]string{"jobs", "list", "--limit", "0"}, 2, "--limit must be from 1 to 1000, not 0"},
		{[]string{"jobs", "list", "--limit", "1001"}, 2, "--limit must be from 1 to 1000, not 1001"},
		{[]string{"jobs", "list", "--limit", "ten"}, 2, `invalid argument "ten" for "--limit"`},
		{[]string{"jobs", "list", "--before", "yesterday"}, 1, "before must be a next cursor of a previous page"},
		{[]string{"jobs", "list", "--endpoint", "ep", "extra"}, 2, "usage: spool jobs list"},
		{[]string{"jobs", "get"}, 2, "usage: spool jobs get JOB"},
	} {
		e.fails(env, "", tc.code, tc.want, tc.args...)
	}
}

// TestJobsLogsCmd: jobs logs prints the server's {"id","entries","dropped"} piped and one line per
// entry as text (TIME WORKER LEVEL MESSAGE), escaping control characters a worker wrote.
func TestJobsLogsCmd(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t)
	id := e.submit("ep", `{}`)
	require.Equal(t, id, e.takeFrom("ep", "w1"))
	require.Equal(t, fmt.Sprintf("No log entries for job %s.\n", id), e.ok("", "jobs", "logs", id, "-o", "text"))
	require.Equal(t, map[string]any{"id": id, "entries": []any{}, "dropped": float64(0)}, e.okJSON("jobs", "logs", id))

	// A line as runpod-python writes it, then a progress update, then a line with an escape.
	e.log.Line("w1", fmt.Sprintf(`{"requestId": %q, "message": "loading model", "level": "INFO"}`, id))
	e.fake.Advance(1500 * time.Millisecond)
	e.post("job-done", "w1", id, `{"status":"IN_PROGRESS","output":{"pct":50}}`)
	e.fake.Advance(time.Second)
	e.log.Line("w1", fmt.Sprintf(`{"requestId": %q, "message": "red \u001b[31malert\nsecond line", "level": "WARN"}`, id))

	v := e.okJSON("jobs", "logs", id)
	require.Equal(t, id, v["id"])
	require.Equal(t, float64(0), v["dropped"])
	entries := v["entries"].([]any)
	require.Len(t, entries, 3)
	require.Equal(t, map[string]any{"at": "2026-01-01T00:00:01Z", "worker": "w1", "kind": "log", "level": "INFO", "message": "loading model"}, entries[0])
	require.Equal(t, "progress", entries[1].(map[string]any)["kind"])
	require.JSONEq(t, `{"pct":50}`, entries[1].(map[string]any)["message"].(string))

	out := e.ok("", "jobs", "logs", id, "-o", "text")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, 3, out)
	require.Equal(t, []string{"2026-01-01", "00:00:01.000", "w1", "INFO", "loading", "model"}, strings.Fields(lines[0]))
	require.Equal(t, []string{"2026-01-01", "00:00:02.500", "w1", "progress", `{"pct":50}`}, strings.Fields(lines[1]))
	require.Equal(t, []string{"2026-01-01", "00:00:03.500", "w1", "WARN", "red", `\x1b[31malert\nsecond`, "line"}, strings.Fields(lines[2]))
	require.NotContains(t, out, "\x1b")
	// The messages start in one column.
	col := strings.Index(lines[0], "loading")
	require.Equal(t, `{"pct":50}`, lines[1][col:])

	// More lines than the log keeps: the oldest are dropped, and the text says so.
	for i := range adminLogPerJob {
		e.log.Line("w1", fmt.Sprintf(`{"requestId": %q, "message": "line %d", "level": "DEBUG"}`, id, i))
	}
	v = e.okJSON("jobs", "logs", id)
	require.Equal(t, float64(3), v["dropped"])
	require.Len(t, v["entries"], adminLogPerJob)
	out = e.ok("", "jobs", "logs", id, "-o", "text")
	require.True(t, strings.HasPrefix(out, "(3 earlier lines were not kept)\n"), out)
	require.Contains(t, out, "DEBUG  line 3\n")

	e.fails(e.adminEnvVars(), "", 1, "job no-such-job not found (HTTP 404)", "jobs", "logs", "no-such-job")
	e.fails(e.adminEnvVars(), "", 2, "usage: spool jobs logs JOB", "jobs", "logs")
}

// TestWorkersCmd: workers list shows the workers seen, with the jobs they hold, piped and as text.
func TestWorkersCmd(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t)
	require.Equal(t, map[string]any{"workers": []any{}}, e.okJSON("workers", "list"))
	require.Equal(t, "No workers.\n", e.ok("", "workers", "list", "-o", "text"))
	held := e.submit("ep", `{}`)
	require.Equal(t, held, e.takeFrom("ep", "w1"))
	e.submit("other", `{}`)
	e.takeFrom("other", "w2")

	v := e.okJSON("workers", "list")
	ws := map[string]map[string]any{}
	for _, w := range v["workers"].([]any) {
		m := w.(map[string]any)
		ws[m["id"].(string)] = m
	}
	require.Len(t, ws, 2)
	require.Equal(t, "ep", ws["w1"]["endpoint"])
	require.Equal(t, []any{held}, ws["w1"]["jobs"])
	require.Equal(t, "other", ws["w2"]["endpoint"])
	state := ws["w1"]["state"].(string)
	require.NotEmpty(t, state)

	v = e.okJSON("workers", "list", "--endpoint", "other")
	require.Len(t, v["workers"], 1)
	require.Equal(t, "w2", v["workers"].([]any)[0].(map[string]any)["id"])

	out := e.ok("", "workers", "list", "-o", "text")
	require.Equal(t, []string{"ID", "ENDPOINT", "STATE", "JOBS", "UPTIME", "LAST", "SEEN", "VERSION", "ERROR"}, rows(out)[0])
	require.Equal(t, []string{"w1", "ep", state, held, "-", "2026-01-01", "00:00:01", "-", "-"}, rowOf(t, out, "w1"))
	require.Len(t, rows(out), 3)
	out = e.ok("", "workers", "list", "--endpoint", "ep", "-o", "text")
	require.Len(t, rows(out), 2)
	rowOf(t, out, "w1")

	e.fails(e.adminEnvVars(), "", 2, "usage: spool workers list", "workers", "list", "extra")
	e.fails(e.adminEnvVars(), "", 2, `unknown command "ls2" for "spool workers"`, "workers", "ls2")
	e.fails(e.adminEnvVars("SPOOL_API_KEY="+e.clientKey), "", 1, "(HTTP 403)", "workers", "list")
}

// onTerminal runs the CLI with stdout and stderr on a pseudo-terminal (through script(1), as a
// user at a terminal would) and returns what the terminal showed, with "\r\n" read as "\n".
func (e *adminEnv) onTerminal(args ...string) cliResult {
	e.t.Helper()
	bin, err := exec.LookPath("script")
	require.NoError(e.t, err, "the terminal test runs the CLI under script(1), from util-linux (Debian: bsdutils)")
	quoted := make([]string, 0, len(args)+1)
	for _, a := range append([]string{spoolBin}, args...) {
		quoted = append(quoted, "'"+strings.ReplaceAll(a, "'", `'\''`)+"'")
	}
	line := strings.Join(quoted, " ")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var cmd *exec.Cmd
	if runtime.GOOS == "linux" {
		cmd = exec.CommandContext(ctx, bin, "-q", "-e", "-f", "-c", line, "/dev/null")
	} else { // BSD script
		cmd = exec.CommandContext(ctx, bin, "-q", "/dev/null", "/bin/sh", "-c", line)
	}
	cmd.Env = e.adminEnvVars()
	out, err := cmd.Output() // stdin is /dev/null
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else {
		require.NoError(e.t, err)
	}
	return cliResult{code: code, stdout: strings.ReplaceAll(string(out), "\r\n", "\n")}
}

// TestAdminCmdsOnTerminal: without -o, each command prints text on a terminal and the server's
// JSON when piped; an error on a terminal is still one line.
func TestAdminCmdsOnTerminal(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t)
	id := e.submit("ep", `{"n":1}`)
	require.Equal(t, id, e.takeFrom("ep", "w1"))
	e.log.Line("w1", fmt.Sprintf(`{"requestId": %q, "message": "hello from the worker", "level": "INFO"}`, id))
	for _, tc := range []struct {
		args []string
		text func(out string) // checks the text output
	}{
		{[]string{"endpoints", "list"}, func(out string) {
			require.Equal(t, []string{"ep", "0-3", "5s", "QUEUE_DELAY", "4", "10m", "24h", "-", "external", "-"}, rowOf(t, out, "ep"))
		}},
		{[]string{"endpoints", "get", "ep"}, func(out string) { require.Equal(t, "3", fields(t, out)["workersMax"]) }},
		{[]string{"keys", "list"}, func(out string) { require.Equal(t, "READ-ONLY", rows(out)[0][4]) }},
		{[]string{"jobs", "list"}, func(out string) { require.Equal(t, "IN_PROGRESS", rowOf(t, out, id)[2]) }},
		{[]string{"jobs", "get", id}, func(out string) { require.Equal(t, "IN_PROGRESS", fields(t, out)["status"]) }},
		{[]string{"jobs", "logs", id}, func(out string) {
			require.Equal(t, []string{"2026-01-01", "00:00:01.000", "w1", "INFO", "hello", "from", "the", "worker"}, rows(out)[0])
		}},
		{[]string{"workers", "list"}, func(out string) { require.Equal(t, id, rowOf(t, out, "w1")[3]) }},
		{[]string{"endpoints", "update", "other", "--max-queue", "3"}, func(out string) { require.Equal(t, "3", fields(t, out)["maxQueue"]) }},
		{[]string{"keys", "create", "--name", "tty", "--scope", "client"}, func(out string) {
			require.True(t, strings.HasPrefix(fields(t, out)["key"], "spool_"), out)
			require.Contains(t, out, "The key is shown only this once")
		}},
	} {
		r := e.onTerminal(tc.args...)
		require.Equal(t, 0, r.code, "%v: %s", tc.args, r.stdout)
		require.False(t, json.Valid([]byte(r.stdout)), "%v: %s", tc.args, r.stdout)
		tc.text(r.stdout)

		if tc.args[1] == "update" || tc.args[1] == "create" {
			continue
		}
		piped := e.ok("", tc.args...)
		require.True(t, json.Valid([]byte(piped)), "%v: %s", tc.args, piped)
		require.Equal(t, 1, strings.Count(piped, "\n"), "%v: %s", tc.args, piped)
	}
	r := e.onTerminal("endpoints", "get", "nope")
	require.Equal(t, 1, r.code)
	require.Equal(t, "spool: endpoint \"nope\" not found (HTTP 404)\n", r.stdout)
	// -o json on a terminal prints JSON.
	r = e.onTerminal("endpoints", "list", "-o", "json")
	require.Equal(t, 0, r.code, r.stdout)
	require.True(t, strings.HasPrefix(r.stdout, `{"endpoints":[`), r.stdout)
}

// TestAdminCmdsConnection: the admin commands find the server and key as the client commands do
// (flags over the environment over the config file) and take a URL that names the /v2 root.
func TestAdminCmdsConnection(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t)
	home := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(home, ".config", "spool"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(home, ".config", "spool", "client.yaml"),
		[]byte("url: "+e.srv.URL+"/v2\nkey: "+cliAdminSecret+"\n"), 0o600))
	for _, tc := range []struct {
		env  []string
		args []string
	}{
		{[]string{"HOME=" + home}, nil},
		{[]string{"HOME=" + t.TempDir(), "SPOOL_URL=http://127.0.0.1:1", "SPOOL_API_KEY=wrong"},
			[]string{"--url", e.srv.URL + "/v2/", "--key", cliAdminSecret}},
	} {
		r := e.spool(tc.env, "", append([]string{"endpoints", "list"}, tc.args...)...)
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stdout, `{"endpoints":[{"name":"ep"`)
	}
	// ENDPOINT arguments and --endpoint flags complete from the server's endpoints.
	r := e.spool(e.adminEnvVars(), "", "__complete", "endpoints", "get", "")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "ep\nother\n:4\n", r.stdout)
	r = e.spool(e.adminEnvVars(), "", "__complete", "jobs", "list", "--endpoint", "o")
	require.Equal(t, "other\n:4\n", r.stdout)
	r = e.spool(e.adminEnvVars(), "", "--help")
	for _, c := range []string{"endpoints", "keys", "jobs", "workers"} {
		require.Contains(t, r.stdout, "\n  "+c+" ", c)
	}
}
