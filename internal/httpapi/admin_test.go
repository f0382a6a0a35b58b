package httpapi_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/httpapi"
)

func TestAdminEndpoints(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	names := func() []string {
		r := e.do("GET", "/api/endpoints", e.admin, "")
		require.Equal(t, 200, r.status)
		var v struct{ Endpoints []spool.Endpoint }
		require.NoError(t, json.Unmarshal([]byte(r.body), &v))
		var out []string
		for _, ep := range v.Endpoints {
			out = append(out, ep.Name)
		}
		return out
	}
	require.Equal(t, []string{"ep", "other"}, names())

	r := e.do("POST", "/api/endpoints", e.admin, `{"name":"img","workersMax":5,"executionTimeoutMs":60000}`)
	require.Equal(t, http.StatusCreated, r.status, r.body)
	var ep spool.Endpoint
	require.NoError(t, json.Unmarshal([]byte(r.body), &ep))
	want := spool.NewEndpoint("img")
	want.WorkersMax, want.ExecutionTimeoutMs, want.Source = 5, 60000, "api"
	require.False(t, ep.CreatedAt.IsZero())
	want.CreatedAt, want.UpdatedAt = ep.CreatedAt, ep.UpdatedAt
	require.Equal(t, want, ep)
	require.Equal(t, []string{"ep", "img", "other"}, names())
	// Usable at once.
	require.Equal(t, 200, e.do("POST", "/v2/img/run", e.client, `{"input":1}`).status)

	r = e.do("POST", "/api/endpoints", e.admin, `{"name":"img"}`)
	require.Equal(t, 409, r.status)
	require.Contains(t, errMsg(t, r), "already exists")

	bad := []struct{ body, msg string }{
		{`{"name":"x","workersMaxx":1}`, `unknown field "workersMaxx"`},
		{`{"name":"bad name"}`, "name must be"},
		{`{}`, "name must be"},
		{`{"name":"y","workersMax":"3"}`, "workersMax has the wrong type"},
		{`{"name":"y","idleTimeout":0}`, "idleTimeout must be between"},
		{`{"name":"y","executionTimeoutMs":5000}`, "executionTimeoutMs must be greater than 5000"},
		{`{"name":"y","worker":{"args":["a"]}}`, "worker.command or worker.image is required"},
		{`{"name":"y","worker":{"command":"x","nope":1}}`, `unknown field "nope"`},
		{`{"name":"y"} {}`, "unexpected data"},
		{`[]`, "must be a JSON object"},
		{``, "must be a JSON object"},
	}
	for _, c := range bad {
		r := e.do("POST", "/api/endpoints", e.admin, c.body)
		require.Equal(t, 400, r.status, "%s: %s", c.body, r.body)
		require.Contains(t, errMsg(t, r), c.msg, c.body)
	}

	r = e.do("GET", "/api/endpoints/img", e.admin, "")
	require.Equal(t, 200, r.status)
	require.Equal(t, 404, e.do("GET", "/api/endpoints/nope", e.admin, "").status)

	// PUT replaces (omitted fields go back to their defaults) and keeps CreatedAt.
	e.fake.Advance(time.Second)
	r = e.do("PUT", "/api/endpoints/img", e.admin, `{"workersMin":1,"worker":{"command":"python3","args":["handler.py"]}}`)
	require.Equal(t, 200, r.status, r.body)
	var put spool.Endpoint
	require.NoError(t, json.Unmarshal([]byte(r.body), &put))
	require.Equal(t, 1, put.WorkersMin)
	require.Equal(t, 3, put.WorkersMax)
	require.Equal(t, spool.DefaultExecutionTimeoutMs, put.ExecutionTimeoutMs)
	require.Equal(t, "python3", put.Worker.Command)
	require.Equal(t, ep.CreatedAt, put.CreatedAt)
	require.True(t, put.UpdatedAt.After(ep.UpdatedAt))
	r = e.do("PUT", "/api/endpoints/img", e.admin, `{"name":"other"}`)
	require.Equal(t, 400, r.status)
	require.Contains(t, errMsg(t, r), "must match the name in the path")
	r = e.do("PUT", "/api/endpoints/fresh", e.admin, `{"name":"fresh"}`)
	require.Equal(t, http.StatusCreated, r.status)
	r = e.do("PUT", "/api/endpoints/bad%20name", e.admin, `{}`)
	require.Equal(t, 400, r.status)

	// DELETE: refused while jobs are queued, then 204.
	r = e.do("DELETE", "/api/endpoints/img", e.admin, "")
	require.Equal(t, 409, r.status)
	require.Equal(t, 200, e.do("POST", "/v2/img/purge-queue", e.client, "").status)
	r = e.do("DELETE", "/api/endpoints/img", e.admin, "")
	require.Equal(t, http.StatusNoContent, r.status)
	require.Empty(t, r.body)
	require.Equal(t, 404, e.do("GET", "/api/endpoints/img", e.admin, "").status)
	require.Equal(t, 404, e.do("DELETE", "/api/endpoints/img", e.admin, "").status)
	require.Equal(t, 404, e.do("POST", "/v2/img/run", e.client, `{"input":1}`).status)
}

func TestAdminKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.do("POST", "/api/keys", e.admin, `{"name":"ci","scope":"client","endpoints":["ep"],"readOnly":true}`)
	require.Equal(t, http.StatusCreated, r.status, r.body)
	m := obj(t, r.body)
	secret := sval(t, m["key"])
	id := sval(t, m["id"])
	require.True(t, strings.HasPrefix(secret, "spool_"))
	require.Equal(t, `"client"`, string(m["scope"]))
	require.Equal(t, `["ep"]`, string(m["endpoints"]))
	require.Equal(t, `true`, string(m["readOnly"]))
	require.Equal(t, `"api"`, string(m["source"]))
	require.NotContains(t, r.body, "sha256:")

	// Works at once, within its scope.
	require.Equal(t, 200, e.do("GET", "/v2/ep/health", "Bearer "+secret, "").status)
	require.Equal(t, 403, e.do("POST", "/v2/ep/run", "Bearer "+secret, `{"input":1}`).status)
	require.Equal(t, 403, e.do("GET", "/v2/other/health", "Bearer "+secret, "").status)

	r = e.do("GET", "/api/keys", e.admin, "")
	require.Equal(t, 200, r.status)
	require.NotContains(t, r.body, secret)
	require.NotContains(t, r.body, "sha256:")
	require.NotContains(t, r.body, adminSecret)
	require.NotContains(t, r.body, `"hash"`)
	var list struct{ Keys []spool.Key }
	require.NoError(t, json.Unmarshal([]byte(r.body), &list))
	ids := map[string]string{}
	for _, k := range list.Keys {
		ids[k.ID] = k.Source
	}
	require.Equal(t, "env", ids["key_env_admin"])
	require.Equal(t, "api", ids[id])
	require.Len(t, list.Keys, 6)

	for _, c := range []struct{ body, msg string }{
		{`{"name":"x","scope":"root"}`, "scope must be admin, client or worker"},
		{`{"name":"x"}`, "scope must be"},
		{`{"name":"x","scope":"client","readOnlyy":true}`, `unknown field "readOnlyy"`},
		{`{"name":"x","scope":"admin","endpoints":["ep"]}`, "endpoints cannot be set on an admin key"},
		{`{"name":"x","scope":"worker","readOnly":true}`, "readOnly applies to client and admin keys only"},
		{`{"name":"x","scope":"client","endpoints":"ep"}`, "endpoints has the wrong type"},
	} {
		r := e.do("POST", "/api/keys", e.admin, c.body)
		require.Equal(t, 400, r.status, c.body)
		require.Contains(t, errMsg(t, r), c.msg, c.body)
	}

	r = e.do("DELETE", "/api/keys/"+id, e.admin, "")
	require.Equal(t, http.StatusNoContent, r.status)
	require.Equal(t, 401, e.do("GET", "/v2/ep/health", "Bearer "+secret, "").status)
	require.Equal(t, 404, e.do("DELETE", "/api/keys/"+id, e.admin, "").status)
	r = e.do("DELETE", "/api/keys/key_env_admin", e.admin, "")
	require.Equal(t, 409, r.status)
	require.Contains(t, errMsg(t, r), "cannot be deleted through the API")

	// A created admin key can use the admin API at once.
	r = e.do("POST", "/api/keys", e.admin, `{"name":"ops","scope":"admin"}`)
	require.Equal(t, http.StatusCreated, r.status)
	require.Equal(t, 200, e.do("GET", "/api/keys", "Bearer "+sval(t, obj(t, r.body)["key"]), "").status)
}

func TestAdminJobsNeverShowS3Config(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const canary = "CANARY-9d1e-accessSecret"
	s3 := `{"accessId":"AK","accessSecret":"` + canary + `","bucketName":"b","endpointUrl":"http://127.0.0.1:9/s3"}`
	id := e.run("ep", `{"input":{"a": 1},"webhook":"https://hook.example/x","s3Config":`+s3+`,"policy":{"ttl":60000}}`)
	other := e.run("other", `{"input":2}`)

	check := func(r resp) {
		t.Helper()
		require.Equal(t, 200, r.status, r.body)
		require.NotContains(t, r.body, canary)
		require.NotContains(t, r.body, "accessSecret")
		require.NotContains(t, r.body, `"s3Config"`)
	}
	r := e.do("GET", "/api/jobs", e.admin, "")
	check(r)
	var list struct{ Jobs []map[string]json.RawMessage }
	require.NoError(t, json.Unmarshal([]byte(r.body), &list))
	require.Len(t, list.Jobs, 2)

	r = e.do("GET", "/api/jobs/"+id, e.admin, "")
	check(r)
	require.Equal(t, `{"id":"`+id+`","status":"IN_QUEUE","endpoint":"ep","input":{"a": 1},"webhook":"https://hook.example/x",`+
		`"policy":{"executionTimeout":600000,"ttl":60000,"lowPriority":false},"sync":false,"attempt":0,`+
		`"createdAt":"2026-01-01T00:00:00.000Z","queuedAt":"2026-01-01T00:00:00.000Z","hasS3Config":true,`+
		`"position":1,"waitMs":0,"waitReason":"no_workers_yet"}`, r.body)
	check(e.do("GET", "/v2/ep/status/"+id, e.client, ""))
	check(e.do("GET", "/v2/ep/stream/"+id, e.client, ""))

	// The worker holding the job gets it, byte for byte.
	p := e.take("w1")
	require.Equal(t, s3, string(p["s3Config"]))
	check(e.do("GET", "/api/jobs/"+id, e.admin, ""))
	check(e.do("GET", "/api/workers", e.admin, ""))
	e.fake.Advance(time.Second)
	require.Equal(t, 200, e.post("job-done", "w1", id, `{"output":"x"}`).status)
	r = e.do("GET", "/api/jobs/"+id, e.admin, "")
	check(r)
	m := obj(t, r.body)
	require.Equal(t, `false`, string(m["hasS3Config"])) // erased once terminal
	require.Equal(t, `"2026-01-01T00:00:00.000Z"`, string(m["takenAt"]))
	require.Equal(t, `"2026-01-01T00:00:01.000Z"`, string(m["finishedAt"]))
	require.Equal(t, `1`, string(m["attempt"]))
	require.Equal(t, `1000`, string(m["executionTime"]))

	// Filters.
	listIDs := func(q string) []string {
		t.Helper()
		r := e.do("GET", "/api/jobs"+q, e.admin, "")
		require.Equal(t, 200, r.status, r.body)
		var v struct{ Jobs []struct{ ID string } }
		require.NoError(t, json.Unmarshal([]byte(r.body), &v))
		out := []string{}
		for _, j := range v.Jobs {
			out = append(out, j.ID)
		}
		return out
	}
	require.Equal(t, []string{id}, listIDs("?endpoint=ep"))
	require.Equal(t, []string{other}, listIDs("?status=IN_QUEUE"))
	require.ElementsMatch(t, []string{id, other}, listIDs("?status=completed,IN_QUEUE"))
	require.Equal(t, []string{}, listIDs("?status=FAILED"))
	require.Len(t, listIDs("?limit=1"), 1)
	require.Equal(t, []string{}, listIDs("?before=2026-01-01T00:00:00Z"))
	require.Len(t, listIDs("?before=2026-01-02T00:00:00.000Z"), 2)
	require.Len(t, listIDs("?before=1767312000000"), 2)

	// Paging with the next cursor: both jobs were made in the same millisecond of the fake
	// clock, and neither is skipped or repeated.
	r = e.do("GET", "/api/jobs?limit=1", e.admin, "")
	var page struct{ Next string }
	require.NoError(t, json.Unmarshal([]byte(r.body), &page))
	require.NotEmpty(t, page.Next)
	first := listIDs("?limit=1")
	second := listIDs("?limit=1&before=" + page.Next)
	require.Len(t, second, 1)
	require.ElementsMatch(t, []string{id, other}, append(first, second...))
	r = e.do("GET", "/api/jobs?limit=5", e.admin, "")
	require.NotContains(t, r.body, `"next"`, "a short page is the last one")
	for _, q := range []string{"?status=RUNNING", "?limit=0", "?limit=1001", "?limit=x", "?before=yesterday"} {
		r := e.do("GET", "/api/jobs"+q, e.admin, "")
		require.Equal(t, 400, r.status, q)
	}
	require.Equal(t, 404, e.do("GET", "/api/jobs/nope", e.admin, "").status)
}

func TestAdminWorkers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.do("GET", "/api/workers", e.admin, "")
	require.Equal(t, `{"workers":[]}`, r.body)
	id := e.run("ep", `{"input":1}`)
	require.Equal(t, id, sval(t, e.take("w1")["id"]))
	require.Equal(t, 200, e.do("GET", "/v2/ep/ping/w2?runpod_version=1.12.0", strings.TrimPrefix(e.worker, "Bearer "), "").status)
	r = e.do("GET", "/api/workers?endpoint=ep", e.admin, "")
	require.Equal(t, 200, r.status)
	require.JSONEq(t, `{"workers":[
		{"id":"w1","endpoint":"ep","state":"running","jobs":["`+id+`"],"firstSeen":"2026-01-01T00:00:00.000Z","lastSeen":"2026-01-01T00:00:00.000Z"},
		{"id":"w2","endpoint":"ep","state":"idle","jobs":[],"firstSeen":"2026-01-01T00:00:00.000Z","lastSeen":"2026-01-01T00:00:00.000Z","version":"1.12.0"}
	]}`, r.body)
	require.Equal(t, `{"workers":[]}`, e.do("GET", "/api/workers?endpoint=other", e.admin, "").body)
}

func TestOps(t *testing.T) {
	t.Parallel()
	ready := make(chan bool, 1)
	ready <- true
	var isReady bool
	e := newEnv(t, func(c *httpapi.Config) {
		c.Ready = func() bool {
			select {
			case v := <-ready:
				isReady = v
			default:
			}
			return isReady
		}
		c.Mounts = map[string]http.Handler{"GET /metrics": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte("spool_up 1\n"))
		})}
	})
	r := e.do("GET", "/healthz", "", "")
	require.Equal(t, 200, r.status)
	require.Equal(t, `{"status":"ok"}`, r.body)
	r = e.do("GET", "/readyz", "", "")
	require.Equal(t, 200, r.status)
	ready <- false
	r = e.do("GET", "/readyz", "", "")
	require.Equal(t, 503, r.status)
	require.Equal(t, "server is not ready", errMsg(t, r))
	require.Equal(t, 200, e.do("GET", "/healthz", "", "").status)
	r = e.do("GET", "/metrics", "", "")
	require.Equal(t, "spool_up 1\n", r.body)
	require.Equal(t, 405, e.do("POST", "/healthz", "", "").status)
}
