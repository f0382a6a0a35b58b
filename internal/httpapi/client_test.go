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
	"github.com/spool-run/spool/internal/spooltest"
)

func TestAuthMatrix(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	type route struct {
		method, path string
		write        bool
	}
	client := []route{
		{"POST", "/v2/ep/run", true}, {"POST", "/v2/ep/runsync?wait=1000", true},
		{"GET", "/v2/ep/status/nope", false}, {"POST", "/v2/ep/status/nope", false},
		{"GET", "/v2/ep/status/nope?ttl=1000", true}, // deletes a result early: a write
		{"GET", "/v2/ep/status-sync/nope?wait=0", false}, {"POST", "/v2/ep/status-sync/nope?wait=0", false},
		{"GET", "/v2/ep/stream/nope", false}, {"POST", "/v2/ep/stream/nope", false},
		{"POST", "/v2/ep/cancel/nope", true}, {"POST", "/v2/ep/retry/nope", true},
		{"POST", "/v2/ep/purge-queue", true}, {"GET", "/v2/ep/health", false},
	}
	// write=false marks long-polls, probed with allowed keys only through job-take-batch with a
	// bad batch_size (a 400 after auth) so that nothing waits.
	worker := []route{
		{"GET", "/v2/ep/job-take/w9", false}, {"GET", "/v2/ep/job-stop/w9", false},
		{"GET", "/v2/ep/job-take-batch/w9?batch_size=abc", true},
		{"POST", "/v2/ep/job-done/w9/nope", true}, {"POST", "/v2/ep/job-stream/w9/nope", true},
		{"GET", "/v2/ep/ping/w9", true},
	}
	admin := []route{
		{"GET", "/api/endpoints", false}, {"POST", "/api/endpoints", true}, {"GET", "/api/endpoints/ep", false},
		{"PUT", "/api/endpoints/zz", true}, {"DELETE", "/api/endpoints/zz", true},
		{"GET", "/api/keys", false}, {"POST", "/api/keys", true}, {"DELETE", "/api/keys/nope", true},
		{"GET", "/api/jobs", false}, {"GET", "/api/jobs/nope", false}, {"GET", "/api/workers", false},
	}
	check := func(rt route, auth string, want int, msg string) {
		t.Helper()
		// A bad body: a request that gets past auth fails later (400/404), never with 401/403.
		r := e.do(rt.method, rt.path, auth, `{"bad":`)
		if want == 0 {
			require.NotContains(t, []int{401, 403}, r.status, "%s %s: %s", rt.method, rt.path, r.body)
			return
		}
		require.Equal(t, want, r.status, "%s %s: %s", rt.method, rt.path, r.body)
		require.Contains(t, errMsg(t, r), msg)
	}
	for _, rt := range client {
		check(rt, "", 401, "missing API key")
		check(rt, "Bearer spool_unknown", 401, "unknown API key")
		check(rt, e.worker, 403, "needs a client or admin key")
		check(rt, e.clientO, 403, `client key for endpoint "ep"`)
		check(rt, e.client, 0, "")
		check(rt, e.admin, 0, "")
		if rt.write {
			check(rt, e.readOnly, 403, "read/write client key")
		} else {
			check(rt, e.readOnly, 0, "")
		}
	}
	for _, rt := range worker {
		check(rt, "", 401, "missing API key")
		check(rt, e.client, 403, "needs a worker or admin key")
		check(rt, e.readOnly, 403, "needs a worker or admin key")
		if rt.write {
			check(rt, e.worker, 0, "")
			check(rt, e.admin, 0, "")
		}
	}
	for _, rt := range admin {
		check(rt, "", 401, "missing API key")
		check(rt, "spool_unknown", 401, "unknown API key")
		check(rt, e.client, 403, "needs an admin key")
		check(rt, e.worker, 403, "needs an admin key")
		check(rt, e.admin, 0, "")
	}

	// Header forms: Bearer in any case, the raw key, a lower-case header name.
	raw := strings.TrimPrefix(e.client, "Bearer ")
	for _, h := range []map[string]string{
		{"Authorization": "Bearer " + raw},
		{"Authorization": "bearer " + raw},
		{"Authorization": raw},
		{"authorization": raw},
		{"AUTHORIZATION": "BEARER " + raw},
	} {
		r := e.send(req{method: "GET", path: "/v2/ep/health", headers: h})
		require.Equal(t, 200, r.status, "%v: %s", h, r.body)
	}
}

func TestRunRoundTripBytes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.do("POST", "/v2/ep/run", e.client, `{"input":{"b":1, "a":[1.0,2e3]}}`)
	require.Equal(t, 200, r.status)
	require.Equal(t, "application/json", r.header.Get("Content-Type"))
	m := obj(t, r.body)
	require.ElementsMatch(t, []string{"id", "status"}, keysOf(m))
	id := sval(t, m["id"])
	require.NotContains(t, id, "sync-")
	require.Equal(t, `{"id":"`+id+`","status":"IN_QUEUE"}`, r.body)

	st := e.status(id)
	require.ElementsMatch(t, []string{"id", "status"}, keysOf(st))

	p := e.take("w1")
	require.Equal(t, `{"b":1, "a":[1.0,2e3]}`, string(p["input"]))
	st = e.status(id)
	require.ElementsMatch(t, []string{"id", "status", "delayTime", "workerId"}, keysOf(st))
	require.Equal(t, `"IN_PROGRESS"`, string(st["status"]))

	e.fake.Advance(1500 * time.Millisecond)
	out := `{"z": 1.50, "y":[ 1e2 ], "s":"<&>\u00e9"}`
	require.Equal(t, 200, e.post("job-done", "w1", id, `{"output": `+out+`}`).status)
	r = e.do("GET", "/v2/ep/status/"+id, e.client, "")
	require.Equal(t, `{"id":"`+id+`","status":"COMPLETED","delayTime":0,"executionTime":1500,"output":`+out+`,"workerId":"w1"}`, r.body)
}

func TestBodylessPosts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.run("ep", `{"input":1}`)
	forms := []struct {
		name string
		body *string
		hdr  map[string]string
	}{
		{"no body (python)", nil, nil},
		{"{} (js)", str("{}"), map[string]string{"Content-Type": "application/json"}},
		{"empty body with json content type (go)", str(""), map[string]string{"Content-Type": "application/json"}},
		{"garbage is never parsed", str("not json"), map[string]string{"Content-Type": "text/plain"}},
	}
	routes := []struct {
		path   string
		status int
		check  func(resp)
	}{
		{"/v2/ep/status/" + id, 200, nil},
		{"/v2/ep/status-sync/" + id + "?wait=0", 200, nil},
		{"/v2/ep/stream/" + id, 200, func(r resp) { require.Equal(t, `[]`, string(obj(t, r.body)["stream"])) }},
		{"/v2/ep/purge-queue", 200, nil},
		{"/v2/ep/cancel/" + id, 200, func(r resp) { require.Equal(t, `"CANCELLED"`, string(obj(t, r.body)["status"])) }},
		{"/v2/ep/retry/" + id, 400, func(r resp) { require.Contains(t, errMsg(t, r), "only FAILED or TIMED_OUT") }},
	}
	for _, rt := range routes {
		for _, f := range forms {
			r := e.send(req{method: "POST", path: rt.path, auth: e.client, body: f.body, headers: f.hdr})
			require.Equal(t, rt.status, r.status, "%s %s: %s", rt.path, f.name, r.body)
			if rt.check != nil {
				rt.check(r)
			}
		}
	}
}

func TestGoSDKStyle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// EndpointUrl "https://host/v2/" + "/" + id gives a doubled slash.
	r := e.do("POST", "/v2//ep/run", e.client, `{"input":{"x":1}}`)
	require.Equal(t, 200, r.status, r.body)
	id := sval(t, obj(t, r.body)["id"])
	empty := ""
	ct := map[string]string{"Content-Type": "application/json"}
	r = e.send(req{method: "POST", path: "/v2//ep/status/" + id, auth: e.client, body: &empty, headers: ct})
	require.Equal(t, 200, r.status, r.body)
	require.Equal(t, `{"id":"`+id+`","status":"IN_QUEUE"}`, r.body)
	r = e.send(req{method: "POST", path: "/v2//ep/stream/" + id + "?wait=0", auth: e.client, body: &empty, headers: ct})
	require.Equal(t, 200, r.status, r.body)
	require.Equal(t, `{"id":"`+id+`","status":"IN_QUEUE","stream":[]}`, r.body)
	r = e.send(req{method: "POST", path: "///v2///ep///cancel///" + id, auth: e.client, body: &empty, headers: ct})
	require.Equal(t, 200, r.status, r.body)
	r = e.do("GET", "/v2//ep//health", e.client, "")
	require.Equal(t, 200, r.status, r.body)
}

func TestSubmitValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const canary = "CANARY-SECRET-31337"
	bad := []struct {
		name, body, msg string
	}{
		{"empty body", "", `"input" is required`},
		{"whitespace body", "  \n", `"input" is required`},
		{"no input", `{}`, `"input" is required and must not be null`},
		{"null input", `{"input": null}`, `"input" is required and must not be null`},
		{"other keys only", `{"webhook":"https://x"}`, `"input" is required`},
		{"malformed", `{"input": {`, "malformed JSON"},
		{"malformed token", `{"input": tru}`, "malformed JSON"},
		{"trailing garbage", `{"input": 1} x`, "malformed JSON: unexpected data after the top-level object"},
		{"trailing object", `{"input": 1}{"input": 2}`, "unexpected data after the top-level object"},
		{"trailing brace", `{"input": 1}}`, "unexpected data"},
		{"array body", `[{"input":1}]`, "request body must be a JSON object"},
		{"string body", `"input"`, "request body must be a JSON object"},
		{"invalid UTF-8 in a string", "{\"input\":{\"s\":\"\xff\xfe\"}}", "request body is not valid UTF-8 (byte 15)"},
		{"invalid UTF-8 in a key", "{\"input\":{\"k\xc3\":1}}", "request body is not valid UTF-8 (byte 12)"},
		{"UTF-16 surrogate as UTF-8", "{\"input\":\"\xed\xa0\x80\"}", "not valid UTF-8 (byte 10)"},
		{"truncated sequence at the end", "{\"input\":1}\xe2\x82", "not valid UTF-8"},
		{"executionTimeout 5000", `{"input":1,"policy":{"executionTimeout":5000}}`, "policy.executionTimeout must be greater than 5000 ms"},
		{"executionTimeout over 7 days", `{"input":1,"policy":{"executionTimeout":604800001}}`, "policy.executionTimeout must be at most"},
		{"executionTimeout fraction", `{"input":1,"policy":{"executionTimeout":6000.5}}`, "policy.executionTimeout must be an integer"},
		{"executionTimeout float form", `{"input":1,"policy":{"executionTimeout":6000.0}}`, "policy.executionTimeout must be an integer"},
		{"executionTimeout exponent", `{"input":1,"policy":{"executionTimeout":6e3}}`, "policy.executionTimeout must be an integer"},
		{"executionTimeout string", `{"input":1,"policy":{"executionTimeout":"6000"}}`, "policy.executionTimeout must be an integer"},
		{"executionTimeout huge", `{"input":1,"policy":{"executionTimeout":99999999999999999999}}`, "policy.executionTimeout must be an integer"},
		{"ttl 9999", `{"input":1,"policy":{"ttl":9999}}`, "policy.ttl must be at least 10000 ms"},
		{"ttl over a week", `{"input":1,"policy":{"ttl":604800001}}`, "policy.ttl must be at most"},
		{"ttl negative", `{"input":1,"policy":{"ttl":-1}}`, "policy.ttl must be at least"},
		{"ttl bool", `{"input":1,"policy":{"ttl":true}}`, "policy.ttl must be an integer"},
		{"lowPriority string", `{"input":1,"policy":{"lowPriority":"yes"}}`, "policy.lowPriority must be true or false"},
		{"policy string", `{"input":1,"policy":"fast"}`, `"policy" must be an object`},
		{"webhook number", `{"input":1,"webhook":5}`, `"webhook" must be a string`},
		{"s3Config string", `{"input":1,"s3Config":"` + canary + `"}`, `"s3Config" must be an object`},
		{"s3Config secret number", `{"input":1,"s3Config":{"accessId":"AK","accessSecret":31337,"bucketName":"b","endpointUrl":"http://s3"}}`, "s3Config.accessSecret must be a string"},
		{"s3Config secret object", `{"input":1,"s3Config":{"accessId":"AK","accessSecret":{"v":"` + canary + `"},"bucketName":"b","endpointUrl":"http://s3"}}`, "s3Config.accessSecret must be a string"},
		{"s3Config missing bucket", `{"input":1,"s3Config":{"accessId":"AK","accessSecret":"` + canary + `","endpointUrl":"http://s3"}}`, "s3Config.bucketName is required"},
		{"s3Config bad url", `{"input":1,"s3Config":{"accessId":"AK","accessSecret":"` + canary + `","bucketName":"b","endpointUrl":"ftp://` + canary + `"}}`, "s3Config.endpointUrl must be an http or https URL"},
		{"s3Config objectPath number", `{"input":1,"s3Config":{"accessId":"AK","accessSecret":"` + canary + `","bucketName":"b","endpointUrl":"http://s3","objectPath":7}}`, "s3Config.objectPath must be a string"},
	}
	for _, c := range bad {
		for _, route := range []string{"/v2/ep/run", "/v2/ep/runsync"} {
			r := e.do("POST", route, e.client, c.body)
			require.Equal(t, 400, r.status, "%s %s: %s", route, c.name, r.body)
			require.Contains(t, errMsg(t, r), c.msg, c.name)
			require.NotContains(t, r.body, canary)
			require.NotContains(t, r.body, "31337")
		}
	}
	// No-body submission, and a body with no Content-Type at all.
	r := e.send(req{method: "POST", path: "/v2/ep/run", auth: e.client})
	require.Equal(t, 400, r.status)
	require.Contains(t, errMsg(t, r), `"input" is required`)
	r = e.send(req{method: "POST", path: "/v2/ep/run", auth: e.client, body: str(`{"input":[]}`)})
	require.Equal(t, 200, r.status, r.body)

	good := []string{
		`{"input": 0}`,
		`{"input": false}`,
		`{"input": ""}`,
		`{"input": {}, "unknown": 1, "webhookV2": "x", "INPUTS": null}`,
		`{"input": 1, "policy": {"executionTimeout": 5001, "ttl": 10000, "lowPriority": true}}`,
		`{"input": 1, "policy": {"executionTimeout": 604800000, "ttl": 604800000}}`,
		`{"input": 1, "policy": null, "webhook": null, "s3Config": null}`,
		`{"input": 1, "policy": {}, "webhook": ""}`,
		`{"input": 1, "policy": {"executionTimeout": null, "lowPriority": null}}`,
		`{"input": 1, "s3Config": {"accessId":"a","accessSecret":"s","bucketName":"b","endpointUrl":"https://s3.example.com","objectPath":"p/","extra":1}}`,
		"\n {\"input\": 1} \n\t",
	}
	for _, body := range good {
		r := e.do("POST", "/v2/ep/run", e.client, body)
		require.Equal(t, 200, r.status, "%s: %s", body, r.body)
	}
	// Policy values reach the worker.
	r = e.do("POST", "/v2/other/run", e.client, `{"input":1,"policy":{"executionTimeout":7000,"ttl":20000,"lowPriority":true},"webhook":"https://h"}`)
	require.Equal(t, 200, r.status)
	id := sval(t, obj(t, r.body)["id"])
	j, err := e.eng.Job(e.ctx, "other", id)
	require.NoError(t, err)
	require.Equal(t, spool.Policy{ExecutionTimeoutMs: 7000, TTLMs: 20000, LowPriority: true}, j.Policy)
	require.Equal(t, "https://h", j.Webhook)
	require.False(t, j.Sync)
}

func TestUnknownThings(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.do("POST", "/v2/nope/run", e.admin, `{"input":1}`)
	require.Equal(t, 404, r.status)
	require.Equal(t, `endpoint "nope" not found`, errMsg(t, r))
	r = e.do("GET", "/v2/ep/status/nope", e.client, "")
	require.Equal(t, 404, r.status)
	require.Equal(t, "job nope not found", errMsg(t, r))
	for _, p := range []string{"/v2/ep/stream/nope", "/v2/ep/status-sync/nope?wait=0"} {
		require.Equal(t, 404, e.do("GET", p, e.client, "").status, p)
	}
	for _, p := range []string{"/v2/ep/cancel/nope", "/v2/ep/retry/nope"} {
		require.Equal(t, 404, e.do("POST", p, e.client, "").status, p)
	}
	for _, p := range []string{"/v2/nope/health", "/v2/nope/purge-queue"} {
		m := "GET"
		if strings.HasSuffix(p, "queue") {
			m = "POST"
		}
		require.Equal(t, 404, e.do(m, p, e.client, "").status, p)
	}
	// A job of another endpoint is not found through this one.
	id := e.run("other", `{"input":1}`)
	r = e.do("GET", "/v2/ep/status/"+id, e.client, "")
	require.Equal(t, 404, r.status)

	// Unknown routes and wrong methods answer JSON.
	for _, p := range []string{"/v2/ep/bogus", "/nothing", "/v2/ep/run/extra", "/api/nope"} {
		r := e.do("GET", p, e.client, "")
		require.Equal(t, 404, r.status, p)
		require.Equal(t, "no such route", errMsg(t, r))
	}
	r = e.do("GET", "/v2/ep/run", e.client, "")
	require.Equal(t, http.StatusMethodNotAllowed, r.status)
	require.Contains(t, errMsg(t, r), "method not allowed")
	require.Equal(t, "POST", r.header.Get("Allow"))
	r = e.do("DELETE", "/v2/ep/status/x", e.client, "")
	require.Equal(t, http.StatusMethodNotAllowed, r.status)
	require.Contains(t, errMsg(t, r), "GET")
}

func TestOversizeBodies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *httpapi.Config) { c.RunLimit, c.RunSyncLimit = 1024, 2048 })
	big := func(n int) string { return `{"input":"` + strings.Repeat("x", n) + `"}` }
	r := e.do("POST", "/v2/ep/run", e.client, big(1100))
	require.Equal(t, 413, r.status)
	require.Equal(t, "request body exceeds the 1 KB limit", errMsg(t, r))
	r = e.do("POST", "/v2/ep/runsync", e.client, big(2100))
	require.Equal(t, 413, r.status)
	require.Equal(t, "request body exceeds the 2 KB limit", errMsg(t, r))
	// Chunked (no Content-Length) is bounded as well.
	body := big(1100)
	hr := req{method: "POST", path: "/v2/ep/run", auth: e.client, body: &body}
	r = e.sendChunked(hr)
	require.Equal(t, 413, r.status)
	// Auth comes first: an unauthenticated oversize body is a 401.
	r = e.do("POST", "/v2/ep/run", "", big(1100))
	require.Equal(t, 401, r.status)
	require.Equal(t, 200, e.do("POST", "/v2/ep/run", e.client, big(900)).status)
}

func (e *env) sendChunked(q req) resp {
	e.t.Helper()
	hr, err := http.NewRequestWithContext(e.ctx, q.method, e.srv.URL+q.path, struct{ *strings.Reader }{strings.NewReader(*q.body)})
	require.NoError(e.t, err)
	hr.ContentLength = -1
	hr.Header.Set("Authorization", q.auth)
	res, err := e.srv.Client().Do(hr)
	require.NoError(e.t, err)
	defer res.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(res.Body).Decode(&m)
	return resp{status: res.StatusCode, header: res.Header}
}

func TestRunsyncCompletes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	got := make(chan resp, 1)
	go func() { got <- e.do("POST", "/v2/ep/runsync", e.client, `{"input":{"mode":"echo"}}`) }()
	p := e.take("w1")
	id := sval(t, p["id"])
	require.True(t, strings.HasPrefix(id, "sync-"), id)
	require.Equal(t, `{"mode":"echo"}`, string(p["input"]))
	e.fake.Advance(250 * time.Millisecond)
	require.Equal(t, 200, e.post("job-done", "w1", id, `{"output": [1, 2.50]}`).status)
	r := <-got
	require.Equal(t, 200, r.status)
	require.Equal(t, `{"id":"`+id+`","status":"COMPLETED","delayTime":0,"executionTime":250,"output":[1, 2.50],"workerId":"w1"}`, r.body)
	j, err := e.eng.Job(e.ctx, "ep", id)
	require.NoError(t, err)
	require.True(t, j.Sync)

	// A handler failure is also a 200 with the job object.
	go func() { got <- e.do("POST", "/v2/ep/runsync?wait=90000", e.client, `{"input":1}`) }()
	id = sval(t, e.take("w1")["id"])
	require.Equal(t, 200, e.post("job-done", "w1", id, `{"error":"boom"}`).status)
	r = <-got
	require.Equal(t, 200, r.status)
	m := obj(t, r.body)
	require.Equal(t, `"FAILED"`, string(m["status"]))
	require.Equal(t, `"boom"`, string(m["error"]))
}

func TestRunsyncWaitRunsOut(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	got := make(chan resp, 1)

	// Still queued when the wait runs out.
	base := e.fake.Timers()
	go func() { got <- e.do("POST", "/v2/ep/runsync?wait=1000", e.client, `{"input":1}`) }()
	spooltest.WaitTimers(t, e.fake, base+1)
	e.fake.Advance(time.Second)
	r := <-got
	require.Equal(t, 200, r.status)
	m := obj(t, r.body)
	require.ElementsMatch(t, []string{"id", "status"}, keysOf(m))
	require.Equal(t, `"IN_QUEUE"`, string(m["status"]))
	id := sval(t, m["id"])
	require.True(t, strings.HasPrefix(id, "sync-"))

	// In progress when it runs out: delayTime shows; the job goes on.
	e.fake.Advance(700 * time.Millisecond)
	require.Equal(t, id, sval(t, e.take("w1")["id"]))
	base = e.fake.Timers()
	go func() { got <- e.do("POST", "/v2/ep/status-sync/"+id+"?wait=5000", e.client, "") }()
	spooltest.WaitTimers(t, e.fake, base+1)
	e.fake.Advance(5 * time.Second)
	r = <-got
	require.Equal(t, 200, r.status)
	require.Equal(t, `{"id":"`+id+`","status":"IN_PROGRESS","delayTime":1700,"workerId":"w1"}`, r.body)

	// A /runsync whose job was taken before its wait ran out.
	base = e.fake.Timers()
	go func() { got <- e.do("POST", "/v2/ep/runsync?wait=0", e.client, `{"input":2}`) }() // clamped to 1000
	id2 := sval(t, e.take("w2")["id"])
	spooltest.WaitTimers(t, e.fake, base+1)
	e.fake.Advance(time.Second)
	r = <-got
	require.Equal(t, `{"id":"`+id2+`","status":"IN_PROGRESS","delayTime":0}`, r.body)

	for _, bad := range []string{"abc", "1.5", "1e3"} {
		r := e.do("POST", "/v2/ep/runsync?wait="+bad, e.client, `{"input":1}`)
		require.Equal(t, 400, r.status)
		require.Contains(t, errMsg(t, r), "wait must be an integer")
		r = e.do("GET", "/v2/ep/status-sync/"+id+"?wait="+bad, e.client, "")
		require.Equal(t, 400, r.status)
		r = e.do("GET", "/v2/ep/stream/"+id+"?wait="+bad, e.client, "")
		require.Equal(t, 400, r.status)
	}
}

func TestStatusSyncWakesOnResult(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.run("ep", `{"input":1}`)
	require.Equal(t, id, sval(t, e.take("w1")["id"]))
	got := make(chan resp, 1)
	base := e.fake.Timers()
	go func() { got <- e.do("GET", "/v2/ep/status-sync/"+id, e.client, "") }() // default wait 90 s
	spooltest.WaitTimers(t, e.fake, base+1)
	require.Equal(t, 200, e.post("job-done", "w1", id, `{"output":"ok"}`).status)
	r := <-got
	m := obj(t, r.body)
	require.Equal(t, `"COMPLETED"`, string(m["status"]))
	require.Equal(t, `"ok"`, string(m["output"]))
}

func TestStatusTTL(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.run("ep", `{"input":1}`)
	r := e.do("GET", "/v2/ep/status/"+id+"?ttl=6000", e.client, "")
	require.Equal(t, 200, r.status)
	require.Equal(t, `{"id":"`+id+`","status":"IN_QUEUE"}`, r.body)
	j, err := e.eng.Job(e.ctx, "ep", id)
	require.NoError(t, err)
	require.Equal(t, int64(6000), j.RetentionMs)
	for _, bad := range []string{"", "abc", "0", "-5", "1.5", "604800001"} {
		r := e.do("GET", "/v2/ep/status/"+id+"?ttl="+bad, e.client, "")
		require.Equal(t, 400, r.status, bad)
		require.Contains(t, errMsg(t, r), "ttl must be a positive integer")
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// Queued: cancelled at once.
	id := e.run("ep", `{"input":1}`)
	r := e.do("POST", "/v2/ep/cancel/"+id, e.client, "")
	require.Equal(t, 200, r.status)
	require.Equal(t, `{"id":"`+id+`","status":"CANCELLED"}`, r.body)

	// In progress: cancelled, and the worker learns it on job-stop.
	id = e.run("ep", `{"input":2}`)
	require.Equal(t, id, sval(t, e.take("w1")["id"]))
	e.fake.Advance(2 * time.Second)
	r = e.do("POST", "/v2/ep/cancel/"+id, e.client, "{}")
	require.Equal(t, 200, r.status)
	require.Equal(t, `{"id":"`+id+`","status":"CANCELLED","delayTime":0,"executionTime":2000,"workerId":"w1"}`, r.body)
	r = e.do("GET", "/v2/ep/job-stop/w1?gpu=TEST", strings.TrimPrefix(e.worker, "Bearer "), "")
	require.Equal(t, 200, r.status)
	require.Equal(t, `{"jobsToStop":["`+id+`"]}`, r.body)
	require.Equal(t, 409, e.post("job-done", "w1", id, `{"output":1}`).status)

	// Terminal: 200, unchanged.
	id = e.run("ep", `{"input":3}`)
	require.Equal(t, id, sval(t, e.take("w1")["id"]))
	require.Equal(t, 200, e.post("job-done", "w1", id, `{"output":"fine"}`).status)
	r = e.do("POST", "/v2/ep/cancel/"+id, e.client, "")
	require.Equal(t, 200, r.status)
	m := obj(t, r.body)
	require.Equal(t, `"COMPLETED"`, string(m["status"]))
	require.Equal(t, `"fine"`, string(m["output"]))
}

func TestRetry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.run("ep", `{"input":{"k":[1.0]}}`)
	r := e.do("POST", "/v2/ep/retry/"+id, e.client, "")
	require.Equal(t, 400, r.status)
	require.Contains(t, errMsg(t, r), "is IN_QUEUE; only FAILED or TIMED_OUT jobs can be retried")
	require.Equal(t, id, sval(t, e.take("w1")["id"]))
	require.Equal(t, 200, e.post("job-done", "w1", id, `{"output":{"x":1},"error":"bad"}`).status)
	require.Equal(t, `"FAILED"`, string(e.status(id)["status"]))

	r = e.do("POST", "/v2/ep/retry/"+id, e.client, "")
	require.Equal(t, 200, r.status)
	require.Equal(t, `{"id":"`+id+`","status":"IN_QUEUE"}`, r.body)
	st := e.status(id)
	require.ElementsMatch(t, []string{"id", "status", "retries"}, keysOf(st))
	require.Equal(t, `1`, string(st["retries"]))
	r = e.do("GET", "/v2/ep/job-take/w2?include=attempt", strings.TrimPrefix(e.worker, "Bearer "), "")
	require.Equal(t, 200, r.status)
	p := obj(t, r.body)
	require.Equal(t, id, sval(t, p["id"]))
	require.Equal(t, `{"k":[1.0]}`, string(p["input"]))
	require.Equal(t, `2`, string(p["attempt"]))
	// The old attempt is fenced off; the new one is accepted.
	for _, c := range []struct {
		attempt string
		want    int
	}{{"1", 409}, {"2", 200}} {
		r := e.do("POST", "/v2/ep/job-done/w2/"+id+"?attempt="+c.attempt, e.worker, `{"output":1}`)
		require.Equal(t, c.want, r.status, "attempt %s: %s", c.attempt, r.body)
	}

	r = e.do("POST", "/v2/ep/retry/"+id, e.client, "")
	require.Equal(t, 400, r.status)
	require.Equal(t, 404, e.do("POST", "/v2/ep/retry/nope", e.client, "").status)
}

func TestPurgeQueue(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	running := e.run("ep", `{"input":0}`)
	require.Equal(t, running, sval(t, e.take("w1")["id"]))
	var queued []string
	for i := range 3 {
		queued = append(queued, e.run("ep", `{"input":`+string(rune('1'+i))+`}`))
	}
	e.run("other", `{"input":1}`)
	r := e.do("POST", "/v2/ep/purge-queue", e.client, "")
	require.Equal(t, 200, r.status)
	require.Equal(t, `{"removed":3,"status":"completed"}`, r.body)
	for _, id := range queued {
		require.Equal(t, `{"id":"`+id+`","status":"CANCELLED","error":"purged"}`, e.do("GET", "/v2/ep/status/"+id, e.client, "").body)
	}
	require.Equal(t, `"IN_PROGRESS"`, string(e.status(running)["status"]))
	require.Equal(t, `{"removed":0,"status":"completed"}`, e.do("POST", "/v2/ep/purge-queue", e.client, "{}").body)
}

func TestHealth(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.do("GET", "/v2/ep/health", e.readOnly, "")
	require.Equal(t, 200, r.status)
	require.Equal(t, `{"jobs":{"completed":0,"failed":0,"inProgress":0,"inQueue":0,"retried":0},`+
		`"workers":{"idle":0,"initializing":0,"ready":0,"running":0,"throttled":0,"unhealthy":0}}`, r.body)

	done := e.run("ep", `{"input":1}`)
	require.Equal(t, done, sval(t, e.take("w1")["id"]))
	require.Equal(t, 200, e.post("job-done", "w1", done, `{"output":1}`).status)
	failed := e.run("ep", `{"input":2}`)
	require.Equal(t, failed, sval(t, e.take("w1")["id"]))
	require.Equal(t, 200, e.post("job-done", "w1", failed, `{"error":"x"}`).status)
	require.Equal(t, 200, e.do("POST", "/v2/ep/retry/"+failed, e.client, "").status)
	require.Equal(t, failed, sval(t, e.take("w1")["id"]))
	e.run("ep", `{"input":3}`)
	r = e.do("GET", "/v2/ep/ping/w2", strings.TrimPrefix(e.worker, "Bearer "), "")
	require.Equal(t, 200, r.status)

	r = e.do("GET", "/v2/ep/health", e.client, "")
	require.Equal(t, `{"jobs":{"completed":1,"failed":0,"inProgress":1,"inQueue":1,"retried":1},`+
		`"workers":{"idle":1,"initializing":0,"ready":2,"running":1,"throttled":0,"unhealthy":0}}`, r.body)
}

func TestStreamDrain(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.run("ep", `{"input":1}`)
	r := e.do("GET", "/v2/ep/stream/"+id, e.client, "")
	require.Equal(t, `{"id":"`+id+`","status":"IN_QUEUE","stream":[]}`, r.body)
	require.Equal(t, id, sval(t, e.take("w1")["id"]))
	for _, c := range []string{`{"t": "A"}`, `"B"`} {
		require.Equal(t, 200, e.post("job-stream", "w1", id, `{"output": `+c+`}`).status)
	}
	r = e.do("GET", "/v2/ep/stream/"+id, e.client, "")
	require.Equal(t, `{"id":"`+id+`","status":"IN_PROGRESS","delayTime":0,"stream":[{"output":{"t": "A"}},{"output":"B"}]}`, r.body)
	r = e.do("POST", "/v2/ep/stream/"+id, e.client, "")
	require.Equal(t, `{"id":"`+id+`","status":"IN_PROGRESS","delayTime":0,"stream":[]}`, r.body)

	// ?wait= long-polls for the next chunk.
	got := make(chan resp, 1)
	base := e.fake.Timers()
	go func() { got <- e.do("GET", "/v2/ep/stream/"+id+"?wait=30000", e.client, "") }()
	spooltest.WaitTimers(t, e.fake, base+1)
	require.Equal(t, 200, e.post("job-stream", "w1", id, `{"output": "C"}`).status)
	r = <-got
	require.Equal(t, `[{"output":"C"}]`, string(obj(t, r.body)["stream"]))

	// The first terminal answer carries the rest; later ones are empty.
	require.Equal(t, 200, e.post("job-stream", "w1", id, `{"output": "D"}`).status)
	require.Equal(t, 200, e.post("job-stream", "w1", id, `{"output": "E"}`).status)
	require.Equal(t, 200, e.post("job-done", "w1", id, `{"error": "chunk error"}`).status)
	r = e.do("GET", "/v2/ep/stream/"+id, e.client, "")
	require.Equal(t, `{"id":"`+id+`","status":"FAILED","delayTime":0,"stream":[{"output":"D"},{"output":"E"}],"error":"chunk error"}`, r.body)
	r = e.do("GET", "/v2/ep/stream/"+id+"?wait=30000", e.client, "")
	require.Equal(t, `{"id":"`+id+`","status":"FAILED","delayTime":0,"stream":[],"error":"chunk error"}`, r.body)
}

func TestFuzzSeedsThroughHTTP(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// Every body the decoder accepts is a job whose worker payload carries the input bytes.
	for _, body := range []string{`{"input":{"b":1, "a":[1.0,2e3]}}`, `{"input":"\u00e9\n"}`, `{"input":[ ]}`} {
		id := e.run("ep", body)
		p := e.take("w1")
		require.Equal(t, id, sval(t, p["id"]))
		var b struct{ Input json.RawMessage }
		require.NoError(t, json.Unmarshal([]byte(body), &b))
		require.Equal(t, string(b.Input), string(p["input"]))
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, cfg := range []httpapi.Config{
		{Keys: e.keys},
		{Engine: e.eng},
		{Engine: e.eng, Keys: e.keys, TakeWait: 2 * time.Minute},
		{Engine: e.eng, Keys: e.keys, RunLimit: -1},
		{Engine: e.eng, Keys: e.keys, RunSyncWait: time.Hour},
	} {
		_, err := httpapi.New(cfg)
		require.Error(t, err)
	}
}
