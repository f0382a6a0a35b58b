package workerapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/auth"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/fleet"
	"github.com/spool-run/spool/internal/spooltest"
	"github.com/spool-run/spool/internal/workerapi"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const adminSecret = "spool_admin_for_tests"

type env struct {
	t      *testing.T
	ctx    context.Context
	fake   *clock.Fake
	eng    *engine.Engine
	fleet  *fleet.Fleet
	keys   *auth.Keyring
	tokens *auth.WorkerTokens
	mux    *http.ServeMux
	srv    *httptest.Server
	worker string // worker key of "ep"
	client string
	other  string // worker key of "other"
}

type opts struct {
	resultLimit, chunkLimit int64
}

func newEnv(t *testing.T, o opts) *env {
	t.Helper()
	fake := clock.NewFake(spooltest.Start)
	mux := http.NewServeMux()
	s := spooltest.NewServer(t, spooltest.Options{
		Clock:       fake,
		AdminSecret: adminSecret,
		Endpoints:   []spool.Endpoint{spool.NewEndpoint("ep"), spool.NewEndpoint("other")},
		Keys: []spool.Key{
			{Name: "w", Scope: spool.ScopeWorker, Endpoints: []string{"ep"}},
			{Name: "o", Scope: spool.ScopeWorker, Endpoints: []string{"other"}},
			{Name: "c", Scope: spool.ScopeClient},
		},
		Handler: func(eng *engine.Engine, fl *fleet.Fleet, keys *auth.Keyring) (http.Handler, error) {
			return mux, workerapi.Register(mux, workerapi.Config{
				Engine: eng, Fleet: fl, Keys: keys, ResultLimit: o.resultLimit, ChunkLimit: o.chunkLimit,
				Logger: slog.New(slog.DiscardHandler),
			})
		},
	})
	return &env{t: t, ctx: context.Background(), fake: fake, eng: s.Engine, fleet: s.Fleet, keys: s.Keys, tokens: s.Tokens, mux: mux, srv: s.HTTP,
		worker: s.Secrets["w"], other: s.Secrets["o"], client: s.Secrets["c"]}
}

func (e *env) createKey(k spool.Key) string {
	secret, _, err := e.keys.Create(e.ctx, k)
	require.NoError(e.t, err)
	return secret
}

func (e *env) submit(p engine.SubmitParams) *spool.Job {
	e.t.Helper()
	if p.Endpoint == "" {
		p.Endpoint = "ep"
	}
	if p.Input == nil {
		p.Input = json.RawMessage(`{"n":1}`)
	}
	j, err := e.eng.Submit(e.ctx, p)
	require.NoError(e.t, err)
	return j
}

type resp struct {
	status int
	header http.Header
	body   string
}

// do sends a request the way runpod-python does: the raw key in Authorization.
func (e *env) do(method, path, key, contentType, body string) resp {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(e.ctx, method, e.srv.URL+path, rd)
	require.NoError(e.t, err)
	if key != "" {
		req.Header.Set("Authorization", key)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := e.srv.Client().Do(req)
	require.NoError(e.t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(e.t, err)
	return resp{res.StatusCode, res.Header, string(b)}
}

const formCT = "application/x-www-form-urlencoded"

// take takes one job for worker w and returns its payload.
func (e *env) take(w string) map[string]json.RawMessage {
	e.t.Helper()
	r := e.do("GET", "/v2/ep/job-take/"+w+"?gpu=TEST&job_in_progress=0", e.worker, "application/json", "")
	require.Equal(e.t, 200, r.status, r.body)
	var m map[string]json.RawMessage
	require.NoError(e.t, json.Unmarshal([]byte(r.body), &m))
	return m
}

func (e *env) job(id string) *spool.Job {
	e.t.Helper()
	j, err := e.eng.Job(e.ctx, "ep", id)
	require.NoError(e.t, err)
	return j
}

// errMsg returns the message of an {"error": ...} body.
func errMsg(t *testing.T, body string) string {
	t.Helper()
	var e struct {
		Error *string `json:"error"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &e), body)
	require.NotNil(t, e.Error, body)
	return *e.Error
}

func idOf(m map[string]json.RawMessage) string {
	var id string
	_ = json.Unmarshal(m["id"], &id)
	return id
}

func TestDecodeDone(t *testing.T) {
	t.Parallel()
	str := func(s string) *string { return &s }
	cases := []struct {
		body string
		want workerapi.DoneBody
		bad  bool
	}{
		{`{}`, workerapi.DoneBody{}, false},
		{`{"output": {"a": [1.0]}}`, workerapi.DoneBody{Output: json.RawMessage(`{"a": [1.0]}`)}, false},
		{`{"output": false}`, workerapi.DoneBody{Output: json.RawMessage(`false`)}, false},
		{`{"output": null}`, workerapi.DoneBody{Output: json.RawMessage(`null`)}, false},
		{`{"status":"IN_PROGRESS","output":{"pct":50}}`, workerapi.DoneBody{InProgress: true, Output: json.RawMessage(`{"pct":50}`)}, false},
		{`{"status":"COMPLETED","output":1}`, workerapi.DoneBody{Output: json.RawMessage(`1`)}, false},
		{`{"output":{"extra":1},"error":"custom failure"}`, workerapi.DoneBody{Output: json.RawMessage(`{"extra":1}`), Error: str("custom failure")}, false},
		{`{"error":"{\"error_type\": \"ValueError\"}"}`, workerapi.DoneBody{Error: str(`{"error_type": "ValueError"}`)}, false},
		{`{"error":{"code": 3}}`, workerapi.DoneBody{Error: str(`{"code": 3}`)}, false},
		{`{"error":null,"output":2}`, workerapi.DoneBody{Output: json.RawMessage(`2`)}, false},
		{`{"error":""}`, workerapi.DoneBody{Error: str("")}, false},
		{`{"output":{"value":1},"stopPod":true}`, workerapi.DoneBody{Output: json.RawMessage(`{"value":1}`), StopPod: true}, false},
		{`{"stopPod":"yes"}`, workerapi.DoneBody{}, false},
		{`null`, workerapi.DoneBody{}, true},
		{`[]`, workerapi.DoneBody{}, true},
		{`"x"`, workerapi.DoneBody{}, true},
		{`output=1`, workerapi.DoneBody{}, true},
		{``, workerapi.DoneBody{}, true},
		{`{"output":1}x`, workerapi.DoneBody{}, true},
	}
	for _, c := range cases {
		t.Run(c.body, func(t *testing.T) {
			t.Parallel()
			got, err := workerapi.DecodeDone([]byte(c.body))
			if c.bad {
				require.Equal(t, spool.CodeInvalid, spool.ErrorCode(err))
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.want, got)
		})
	}
}

func TestTakePayload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, opts{})
	et, ttl := int64(900000), int64(3600000)
	j := e.submit(engine.SubmitParams{
		Input:              json.RawMessage(`{"b":1, "a":[1.0,2e3]}`),
		Webhook:            "https://example.com/hook",
		S3Config:           json.RawMessage(`{"accessId":"AK", "accessSecret":"SK","bucketName":"b","endpointUrl":"http://127.0.0.1:9/s3"}`),
		ExecutionTimeoutMs: &et, TTLMs: &ttl, LowPriority: true,
	})
	r := e.do("GET", "/v2/ep/job-take/w1?gpu=TEST&job_in_progress=0", e.worker, "", "")
	require.Equal(t, 200, r.status)
	require.Equal(t, "application/json", r.header.Get("Content-Type"))
	require.Equal(t, `{"id":"`+j.ID+`","input":{"b":1, "a":[1.0,2e3]},`+
		`"policy":{"executionTimeout":900000,"lowPriority":true,"ttl":3600000},"webhook":"https://example.com/hook",`+
		`"s3Config":{"accessId":"AK", "accessSecret":"SK","bucketName":"b","endpointUrl":"http://127.0.0.1:9/s3"}}`, r.body)
	got := e.job(j.ID)
	require.Equal(t, spool.StateInProgress, got.State)
	require.Equal(t, "w1", got.WorkerID)

	// A job without webhook or s3Config has neither key; the endpoint's policy defaults show.
	j2 := e.submit(engine.SubmitParams{Input: json.RawMessage(`"text"`)})
	m := e.take("w1")
	require.Equal(t, j2.ID, idOf(m))
	require.Equal(t, `"text"`, string(m["input"]))
	require.Equal(t, `{"executionTimeout":600000,"lowPriority":false,"ttl":86400000}`, string(m["policy"]))
	require.NotContains(t, m, "webhook")
	require.NotContains(t, m, "s3Config")
	require.NotContains(t, m, "attempt")

	// Spool's SDK opts in to the attempt, single and batch.
	j3 := e.submit(engine.SubmitParams{})
	r = e.do("GET", "/v2/ep/job-take/w1?include=attempt", e.worker, "", "")
	require.Equal(t, 200, r.status)
	require.Equal(t, `{"id":"`+j3.ID+`","input":{"n":1},"policy":{"executionTimeout":600000,"lowPriority":false,"ttl":86400000},"attempt":1}`, r.body)
	j4 := e.submit(engine.SubmitParams{})
	r = e.do("GET", "/v2/ep/job-take-batch/w1?batch_size=3&include=attempt", e.worker, "", "")
	require.Equal(t, 200, r.status)
	require.Equal(t, `[{"id":"`+j4.ID+`","input":{"n":1},"policy":{"executionTimeout":600000,"lowPriority":false,"ttl":86400000},"attempt":1}]`, r.body)
}

func TestTakeBatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, opts{})
	var ids []string
	for range 3 {
		ids = append(ids, e.submit(engine.SubmitParams{}).ID)
	}
	r := e.do("GET", "/v2/ep/job-take-batch/w1?gpu=X&batch_size=2&job_in_progress=1", e.worker, "", "")
	require.Equal(t, 200, r.status)
	var batch []map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(r.body), &batch))
	require.Len(t, batch, 2)
	require.Equal(t, ids[0], idOf(batch[0]))
	require.Equal(t, ids[1], idOf(batch[1]))

	r = e.do("GET", "/v2/ep/job-take-batch/w1?batch_size=5", e.worker, "", "")
	require.Equal(t, 200, r.status)
	require.NoError(t, json.Unmarshal([]byte(r.body), &batch))
	require.Len(t, batch, 1)
	require.Equal(t, ids[2], idOf(batch[0]))

	for _, bad := range []string{"0", "abc", "-1", "1.5"} {
		r := e.do("GET", "/v2/ep/job-take-batch/w1?batch_size="+bad, e.worker, "", "")
		require.Equal(t, 400, r.status, bad)
		require.Contains(t, r.body, "batch_size must be a positive integer")
	}

	// More free slots than one batch may carry: clamped, not refused (runpod-python would take
	// a 400 for "no job" and spin).
	for range workerapi.MaxBatch + 1 {
		e.submit(engine.SubmitParams{})
	}
	r = e.do("GET", "/v2/ep/job-take-batch/w1?batch_size=500", e.worker, "", "")
	require.Equal(t, 200, r.status)
	require.NoError(t, json.Unmarshal([]byte(r.body), &batch))
	require.Len(t, batch, workerapi.MaxBatch)
}

func TestTakeLongPoll(t *testing.T) {
	t.Parallel()
	e := newEnv(t, opts{})

	// Nothing arrives: 204 once the (fake) wait runs out.
	done := make(chan resp, 1)
	go func() { done <- e.do("GET", "/v2/ep/job-take/w1", e.worker, "", "") }()
	spooltest.WaitTimers(t, e.fake, 2)
	e.fake.Advance(30 * time.Second)
	r := <-done
	require.Equal(t, http.StatusNoContent, r.status)
	require.Empty(t, r.body)

	// A job submitted while the take waits is handed to it at once.
	base := e.fake.Timers()
	go func() { done <- e.do("GET", "/v2/ep/job-take/w1", e.worker, "", "") }()
	spooltest.WaitTimers(t, e.fake, base+1)
	j := e.submit(engine.SubmitParams{})
	r = <-done
	require.Equal(t, 200, r.status)
	require.Contains(t, r.body, j.ID)

	// POST is accepted too.
	j = e.submit(engine.SubmitParams{})
	r = e.do("POST", "/v2/ep/job-take/w1", e.worker, "", "")
	require.Equal(t, 200, r.status)
	require.Contains(t, r.body, j.ID)
}

func TestDone(t *testing.T) {
	t.Parallel()
	e := newEnv(t, opts{})
	cases := []struct {
		name   string
		posts  []string
		state  spool.State
		output string // "" means absent
		errMsg string
		stop   bool
	}{
		{"form content type with json body", []string{`{"output": {"echo": {"a": 1.50}}}`}, spool.StateCompleted, `{"echo": {"a": 1.50}}`, "", false},
		{"progress then result", []string{`{"status": "IN_PROGRESS", "output": {"pct": 50}}`, `{"output": "done-str"}`}, spool.StateCompleted, `"done-str"`, "", false},
		{"error with output", []string{`{"output": {"extra": 1}, "error": "custom failure"}`}, spool.StateFailed, `{"extra": 1}`, "custom failure", false},
		{"empty object", []string{`{}`}, spool.StateCompleted, "", "", false},
		{"error string holding json", []string{`{"error": "{\"error_type\": \"<class 'ValueError'>\", \"error_message\": \"boom\"}"}`}, spool.StateFailed, "", `{"error_type": "<class 'ValueError'>", "error_message": "boom"}`, false},
		{"error object", []string{`{"error": {"code": 7}}`}, spool.StateFailed, "", `{"code": 7}`, false},
		{"false output", []string{`{"output": false}`}, spool.StateCompleted, `false`, "", false},
		{"null output", []string{`{"output": null}`}, spool.StateCompleted, `null`, "", false},
		{"stopPod", []string{`{"output": {"value": 1}, "stopPod": true}`}, spool.StateCompleted, `{"value": 1}`, "", true},
		{"unicode raw", []string{`{"output": "héllo"}`}, spool.StateCompleted, `"héllo"`, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j := e.submit(engine.SubmitParams{})
			worker := "w-" + strings.ReplaceAll(c.name, " ", "-")
			r := e.do("GET", "/v2/ep/job-take/"+worker, e.worker, "", "")
			require.Equal(t, 200, r.status)
			require.Contains(t, r.body, j.ID)
			for i, body := range c.posts {
				r := e.do("POST", "/v2/ep/job-done/"+worker+"/"+j.ID+"?gpu=TEST&isStream=false", e.worker, formCT, body)
				require.Equal(t, 200, r.status, r.body)
				require.JSONEq(t, `{"status":"ok"}`, r.body)
				if i == 0 && len(c.posts) > 1 {
					got := e.job(j.ID)
					require.Equal(t, spool.StateInProgress, got.State)
					require.Equal(t, `{"pct": 50}`, string(got.Progress))
				}
			}
			got := e.job(j.ID)
			require.Equal(t, c.state, got.State)
			if c.output == "" {
				require.Nil(t, got.Output)
			} else {
				require.Equal(t, c.output, string(got.Output))
			}
			require.Equal(t, c.errMsg, got.Error)
			require.Equal(t, c.stop, got.StopPod)
		})
	}
}

func TestDoneFencing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, opts{})
	j := e.submit(engine.SubmitParams{})
	m := e.take("w1")
	require.Equal(t, j.ID, idOf(m))
	done := "/v2/ep/job-done/w1/" + j.ID

	// Another worker, or a stale attempt, is refused and changes nothing.
	r := e.do("POST", "/v2/ep/job-done/w2/"+j.ID, e.worker, formCT, `{"output":1}`)
	require.Equal(t, 409, r.status)
	require.Contains(t, r.body, "not held by worker w2")
	r = e.do("POST", done+"?attempt=2", e.worker, formCT, `{"output":1}`)
	require.Equal(t, 409, r.status)
	r = e.do("POST", done+"?attempt=zero", e.worker, formCT, `{"output":1}`)
	require.Equal(t, 400, r.status)
	require.Equal(t, spool.StateInProgress, e.job(j.ID).State)

	// The holder's result, repeated (runpod-python retries on 5xx), applies once.
	r = e.do("POST", done+"?attempt=1", e.worker, formCT, `{"output":{"v":1}}`)
	require.Equal(t, 200, r.status)
	first := e.job(j.ID)
	require.Equal(t, spool.StateCompleted, first.State)
	e.fake.Advance(time.Second)
	r = e.do("POST", done, e.worker, formCT, `{"output":{"v":1}}`)
	require.Equal(t, 200, r.status)
	again := e.job(j.ID)
	require.Equal(t, first.FinishedAt, again.FinishedAt)
	require.Equal(t, `{"v":1}`, string(again.Output))

	// Late progress is ignored.
	r = e.do("POST", done, e.worker, formCT, `{"status":"IN_PROGRESS","output":{"pct":99}}`)
	require.Equal(t, 200, r.status)
	require.Equal(t, `{"v":1}`, string(e.job(j.ID).Output))

	// A result after a cancel is refused.
	j2 := e.submit(engine.SubmitParams{})
	require.Equal(t, j2.ID, idOf(e.take("w1")))
	_, err := e.eng.Cancel(e.ctx, "ep", j2.ID)
	require.NoError(t, err)
	r = e.do("POST", "/v2/ep/job-done/w1/"+j2.ID, e.worker, formCT, `{"output":1}`)
	require.Equal(t, 409, r.status)
	require.Equal(t, spool.StateCancelled, e.job(j2.ID).State)

	// Unknown job and unknown endpoint.
	r = e.do("POST", "/v2/ep/job-done/w1/nope", e.worker, formCT, `{}`)
	require.Equal(t, 404, r.status)
	r = e.do("POST", "/v2/nope/job-done/w1/"+j.ID, e.createKey(spool.Key{Name: "a", Scope: spool.ScopeAdmin}), formCT, `{}`)
	require.Equal(t, 404, r.status)
}

func TestDoneBadBodies(t *testing.T) {
	t.Parallel()
	e := newEnv(t, opts{resultLimit: 1024})
	j := e.submit(engine.SubmitParams{})
	require.Equal(t, j.ID, idOf(e.take("w1")))
	done := "/v2/ep/job-done/w1/" + j.ID
	for _, body := range []string{"output=1", "[1]", "null", `"x"`, "{", ""} {
		r := e.do("POST", done, e.worker, formCT, body)
		require.Equal(t, 400, r.status, body)
		require.Contains(t, r.body, "must be a JSON object")
	}
	require.Equal(t, spool.StateInProgress, e.job(j.ID).State, "bad bodies change nothing")

	// An oversize result from another worker is refused and changes nothing.
	big := `{"output":"` + strings.Repeat("x", 2000) + `"}`
	r := e.do("POST", "/v2/ep/job-done/w2/"+j.ID, e.worker, formCT, big)
	require.Equal(t, 413, r.status)
	require.Equal(t, spool.StateInProgress, e.job(j.ID).State)

	// From the holder it is refused too, and the job fails with a clear error instead of hanging
	// until its timeout: runpod-python never retries a 4xx.
	r = e.do("POST", done, e.worker, formCT, big)
	require.Equal(t, 413, r.status)
	require.JSONEq(t, `{"error":"request body exceeds the 1 KB limit"}`, r.body)
	got := e.job(j.ID)
	require.Equal(t, spool.StateFailed, got.State)
	require.Equal(t, "the worker's result was refused: request body exceeds the 1 KB limit", got.Error)
}

func TestTakeWhileDrainingAsksWorkersToBackOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, opts{})
	e.eng.Drain()
	for _, path := range []string{"/v2/ep/job-take/w1?gpu=x", "/v2/ep/job-take-batch/w1?batch_size=2", "/v2/ep/job-stop/w1"} {
		r := e.do("GET", path, e.worker, "", "")
		require.Equal(t, 429, r.status, path)
		require.Contains(t, r.body, "shutting down")
	}
}

func TestStreamChunks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, opts{chunkLimit: 1024})
	j := e.submit(engine.SubmitParams{})
	require.Equal(t, j.ID, idOf(e.take("w1")))
	path := "/v2/ep/job-stream/w1/" + j.ID + "?gpu=TEST&isStream=false"
	for _, chunk := range []string{`{"chunk": 0}`, `"b"`, `[1.0]`} {
		r := e.do("POST", path, e.worker, formCT, `{"output": `+chunk+`}`)
		require.Equal(t, 200, r.status, r.body)
	}
	for body, want := range map[string]int{
		`{"nope": 1}`: 400, `[1]`: 400, `x`: 400,
		`{"output":"` + strings.Repeat("x", 2000) + `"}`: 413,
	} {
		r := e.do("POST", path, e.worker, formCT, body)
		require.Equal(t, want, r.status, body)
	}
	r := e.do("POST", "/v2/ep/job-stream/w2/"+j.ID, e.worker, formCT, `{"output":1}`)
	require.Equal(t, 409, r.status)

	_, chunks, err := e.eng.Stream(e.ctx, "ep", j.ID, 0)
	require.NoError(t, err)
	require.Len(t, chunks, 3)
	require.Equal(t, `{"chunk": 0}`, string(chunks[0].Data))
	require.Equal(t, `"b"`, string(chunks[1].Data))
	require.Equal(t, `[1.0]`, string(chunks[2].Data))

	r = e.do("POST", "/v2/ep/job-done/w1/"+j.ID+"?isStream=true", e.worker, formCT, `{"output": []}`)
	require.Equal(t, 200, r.status)
	r = e.do("POST", path, e.worker, formCT, `{"output": "late"}`)
	require.Equal(t, 409, r.status)
}

func TestJobStop(t *testing.T) {
	t.Parallel()
	e := newEnv(t, opts{})
	j := e.submit(engine.SubmitParams{})
	require.Equal(t, j.ID, idOf(e.take("w1")))
	_, err := e.eng.Cancel(e.ctx, "ep", j.ID)
	require.NoError(t, err)
	r := e.do("GET", "/v2/ep/job-stop/w1?gpu=TEST", e.worker, "", "")
	require.Equal(t, 200, r.status)
	require.Equal(t, "application/json", r.header.Get("Content-Type"))
	require.JSONEq(t, `{"jobsToStop":["`+j.ID+`"]}`, r.body)

	// Delivered once: the next poll waits and answers 204.
	done := make(chan resp, 1)
	base := e.fake.Timers()
	go func() { done <- e.do("GET", "/v2/ep/job-stop/w1", e.worker, "", "") }()
	spooltest.WaitTimers(t, e.fake, base+1)
	e.fake.Advance(30 * time.Second)
	r = <-done
	require.Equal(t, 204, r.status)

	// A waiting stop poll wakes when a held job is cancelled.
	j2 := e.submit(engine.SubmitParams{})
	require.Equal(t, j2.ID, idOf(e.take("w1")))
	base = e.fake.Timers()
	go func() { done <- e.do("GET", "/v2/ep/job-stop/w1", e.worker, "", "") }()
	spooltest.WaitTimers(t, e.fake, base+1)
	_, err = e.eng.Cancel(e.ctx, "ep", j2.ID)
	require.NoError(t, err)
	r = <-done
	require.Equal(t, 200, r.status)
	require.JSONEq(t, `{"jobsToStop":["`+j2.ID+`"]}`, r.body)
}

func TestPing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, opts{})
	j := e.submit(engine.SubmitParams{})
	require.Equal(t, j.ID, idOf(e.take("w1")))
	for _, q := range []string{
		"?gpu=TEST&job_id=" + j.ID + "%2Cother&runpod_version=1.12.0",
		"?gpu=TEST&runpod_version=1.12.0",
		"?job_id=",
		"?gpu=TEST&status=unhealthy&check=memory&reason=MemoryError%3A+too+little&runpod_version=1.12.0",
	} {
		r := e.do("GET", "/v2/ep/ping/w1"+q, e.worker, "", "")
		require.Equal(t, 200, r.status, q)
		require.JSONEq(t, `{"status":"ok"}`, r.body)
	}
	r := e.do("POST", "/v2/ep/ping/w2?runpod_version=1.7.13", e.worker, "", "")
	require.Equal(t, 200, r.status)
	ws, err := e.fleet.Workers(e.ctx, "ep")
	require.NoError(t, err)
	versions := map[string]string{}
	for _, w := range ws {
		versions[w.ID] = w.Version
	}
	require.Equal(t, map[string]string{"w1": "1.12.0", "w2": "1.7.13"}, versions)
}

func TestWorkerAuth(t *testing.T) {
	t.Parallel()
	e := newEnv(t, opts{})
	routes := []struct{ method, path string }{
		{"GET", "/v2/ep/job-take/w1"},
		{"GET", "/v2/ep/job-take-batch/w1?batch_size=2"},
		{"GET", "/v2/ep/job-stop/w1"},
		{"POST", "/v2/ep/job-done/w1/j1"},
		{"POST", "/v2/ep/job-stream/w1/j1"},
		{"GET", "/v2/ep/ping/w1"},
	}
	cases := []struct {
		name   string
		key    string
		status int
		msg    string
	}{
		{"no key", "", 401, "missing API key"},
		{"unknown key", "spool_nope", 401, "unknown API key"},
		{"client key", e.client, 403, "needs a worker or admin key"},
		{"worker key of another endpoint", e.other, 403, `worker key for endpoint "ep"`},
	}
	for _, rt := range routes {
		for _, c := range cases {
			r := e.do(rt.method, rt.path, c.key, formCT, `{}`)
			require.Equal(t, c.status, r.status, "%s %s with %s", rt.method, rt.path, c.name)
			require.Contains(t, errMsg(t, r.body), c.msg)
		}
	}
	// Bearer form works too, and an admin key may act as a worker.
	r := e.do("GET", "/v2/ep/ping/w1", "Bearer "+e.worker, "", "")
	require.Equal(t, 200, r.status)
	r = e.do("GET", "/v2/ep/ping/w1", adminSecret, "", "")
	require.Equal(t, 200, r.status)
	// An unknown endpoint is a 404 for a key allowed everywhere.
	r = e.do("GET", "/v2/nope/ping/w1", adminSecret, "", "")
	require.Equal(t, 404, r.status)
	require.JSONEq(t, `{"error":"endpoint \"nope\" not found"}`, r.body)
}

// failingWriter is a ResponseWriter whose connection is gone: writes and flushes fail.
type failingWriter struct{ h http.Header }

func (f *failingWriter) Header() http.Header       { return f.h }
func (f *failingWriter) WriteHeader(int)           {}
func (f *failingWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }
func (f *failingWriter) FlushError() error         { return errors.New("broken pipe") }

func TestTakeReleasedWhenResponseFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t, opts{})
	j := e.submit(engine.SubmitParams{})
	req := httptest.NewRequest("GET", "/v2/ep/job-take/w1", nil)
	req.Header.Set("Authorization", e.worker)
	e.mux.ServeHTTP(&failingWriter{h: http.Header{}}, req)
	got := e.job(j.ID)
	require.Equal(t, spool.StateInQueue, got.State)
	require.Equal(t, 1, got.Retries)
	require.Empty(t, got.WorkerID)
	// It is handed out again.
	require.Equal(t, j.ID, idOf(e.take("w2")))
}

func TestRegisterConfig(t *testing.T) {
	t.Parallel()
	e := newEnv(t, opts{})
	for _, cfg := range []workerapi.Config{
		{Keys: e.keys},
		{Engine: e.eng},
		{Engine: e.eng, Keys: e.keys, TakeWait: 90 * time.Second},
		{Engine: e.eng, Keys: e.keys, ResultLimit: -1},
	} {
		require.Error(t, workerapi.Register(http.NewServeMux(), cfg))
	}
}

// TestTakePayloadOffload: the endpoint's outputOffloadBytes reaches only workers that ask for it
// (?include=offload, alone, repeated or in a list) and only with jobs that have an s3Config.
func TestTakePayloadOffload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, opts{})
	ep := spool.NewEndpoint("ep")
	ep.OutputOffloadBytes = 1000
	_, _, err := e.eng.PutEndpoint(e.ctx, ep)
	require.NoError(t, err)
	s3 := json.RawMessage(`{"accessId":"AK","accessSecret":"SK","bucketName":"b","endpointUrl":"http://127.0.0.1:9"}`)

	for _, q := range []string{"include=offload", "include=attempt&include=offload", "include=attempt,offload"} {
		j := e.submit(engine.SubmitParams{S3Config: s3})
		r := e.do("GET", "/v2/ep/job-take/w1?"+q, e.worker, "", "")
		require.Equal(t, 200, r.status, q)
		m := obj(t, r.body)
		require.Equal(t, j.ID, idOf(m))
		require.Equal(t, `1000`, string(m["outputOffloadBytes"]), q)
		require.JSONEq(t, string(s3), string(m["s3Config"]))
		_, hasAttempt := m["attempt"]
		require.Equal(t, strings.Contains(q, "attempt"), hasAttempt, q)
	}
	e.submit(engine.SubmitParams{S3Config: s3})
	m := obj(t, e.do("GET", "/v2/ep/job-take/w1?include=attempt", e.worker, "", "").body)
	require.NotContains(t, m, "outputOffloadBytes", "not asked for")
	e.submit(engine.SubmitParams{})
	m = obj(t, e.do("GET", "/v2/ep/job-take/w1?include=offload", e.worker, "", "").body)
	require.NotContains(t, m, "outputOffloadBytes", "nowhere to offload to without an s3Config")
}

// TestS3ConfigOnlyForTheCurrentHolder: after a lost worker's job is requeued, the next take
// hands the s3Config to the new holder; nothing the old holder can call returns it.
func TestS3ConfigOnlyForTheCurrentHolder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, opts{})
	const canary = "CANARY-holder-only"
	s3 := `{"accessId":"AK","accessSecret":"` + canary + `","bucketName":"b","endpointUrl":"http://127.0.0.1:9"}`
	j := e.submit(engine.SubmitParams{S3Config: json.RawMessage(s3)})
	first := e.do("GET", "/v2/ep/job-take/w1", e.worker, "", "")
	require.Contains(t, first.body, canary)

	e.fake.Advance(31 * time.Second) // w1 is lost
	_, err := e.fleet.Sweep(e.ctx)
	require.NoError(t, err)
	require.Equal(t, spool.StateInQueue, e.job(j.ID).State)

	for _, r := range []resp{
		e.do("GET", "/v2/ep/ping/w1?job_id="+j.ID+"&runpod_version=1", e.worker, "", ""),
		e.do("GET", "/v2/ep/job-stop/w1", e.worker, "", ""),
		e.do("POST", "/v2/ep/job-done/w1/"+j.ID, e.worker, "", `{"output":1}`),
		e.do("POST", "/v2/ep/job-stream/w1/"+j.ID, e.worker, "", `{"output":1}`),
		e.do("GET", "/v2/ep/job-take/w3", e.other, "", ""), // another endpoint's worker
	} {
		require.NotContains(t, r.body, canary)
	}
	second := e.do("GET", "/v2/ep/job-take/w2", e.worker, "", "")
	require.Equal(t, 200, second.status)
	m := obj(t, second.body)
	require.Equal(t, j.ID, idOf(m))
	require.JSONEq(t, s3, string(m["s3Config"]), "the new holder gets it")
}

func obj(t *testing.T, body string) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(body), &m), body)
	return m
}

// TestWorkerIDsAreChecked: every worker route refuses a worker id that is too long or holds a
// byte outside the id alphabet (NUL, newline, space, non-ASCII), before anything records it.
func TestWorkerIDsAreChecked(t *testing.T) {
	t.Parallel()
	e := newEnv(t, opts{})
	j := e.submit(engine.SubmitParams{})
	for _, id := range []string{strings.Repeat("w", spool.MaxWorkerIDLen+1), "w%00", "w%0A1", "w%20x", "w%C3%A9", "w%2Fx"} {
		for _, route := range []struct{ method, path, body string }{
			{"GET", "/v2/ep/job-take/" + id, ""},
			{"GET", "/v2/ep/job-take-batch/" + id + "?batch_size=2", ""},
			{"GET", "/v2/ep/job-stop/" + id, ""},
			{"GET", "/v2/ep/ping/" + id + "?job_id=" + j.ID, ""},
			{"POST", "/v2/ep/job-done/" + id + "/" + j.ID, `{"output":1}`},
			{"POST", "/v2/ep/job-stream/" + id + "/" + j.ID, `{"output":1}`},
		} {
			r := e.do(route.method, route.path, e.worker, "application/json", route.body)
			require.Equal(t, 400, r.status, "%s %.60s: %s", route.method, route.path, r.body)
			require.Contains(t, r.body, "worker id")
		}
	}
	workers, err := e.fleet.Workers(e.ctx, "ep")
	require.NoError(t, err)
	require.Empty(t, workers, "no refused id was recorded")
	got, err := e.eng.Job(e.ctx, "ep", j.ID)
	require.NoError(t, err)
	require.Equal(t, spool.StateInQueue, got.State, "no refused id took the job")

	// The longest id and every allowed byte are fine.
	for _, id := range []string{strings.Repeat("w", spool.MaxWorkerIDLen), "ep-1_a.b:c-0f3a9b"} {
		r := e.do("GET", "/v2/ep/ping/"+id, e.worker, "", "")
		require.Equal(t, 200, r.status, r.body)
	}
}

// TestInvalidUTF8ResultIsRefused: a result or chunk that is not UTF-8 gets 400 and changes
// nothing; a RunPod client's JSON parser would refuse it later.
func TestInvalidUTF8ResultIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, opts{})
	j := e.submit(engine.SubmitParams{})
	e.take("w1")
	for _, route := range []string{"job-stream", "job-done"} {
		r := e.do("POST", "/v2/ep/"+route+"/w1/"+j.ID, e.worker, "application/json", "{\"output\":\"\xff\"}")
		require.Equal(t, 400, r.status, r.body)
		require.Contains(t, r.body, "not valid UTF-8 (byte 11)")
	}
	got, err := e.eng.Job(e.ctx, "ep", j.ID)
	require.NoError(t, err)
	require.Equal(t, spool.StateInProgress, got.State)
	require.Zero(t, got.StreamCount)
}

// TestWorkerTokenSpeaksForItsWorkerOnly: the token of a worker Spool started works on every route
// for that worker of that endpoint, and gets 403 for any other worker id or endpoint, changing
// nothing; a plain worker key still speaks for any worker id.
func TestWorkerTokenSpeaksForItsWorkerOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, opts{})
	tok := e.tokens.Mint("ep", "w1")
	j := e.submit(engine.SubmitParams{})
	r := e.do("GET", "/v2/ep/job-take/w1", tok, "", "")
	require.Equal(t, 200, r.status, r.body)
	require.Contains(t, r.body, j.ID)

	for _, route := range []struct{ method, path, body string }{
		{"GET", "/v2/ep/job-take/w2", ""},
		{"GET", "/v2/ep/job-take-batch/w2?batch_size=2", ""},
		{"GET", "/v2/ep/job-stop/w2", ""},
		{"GET", "/v2/ep/ping/w2?job_id=" + j.ID, ""},
		{"POST", "/v2/ep/job-done/w2/" + j.ID, `{"output":"stolen"}`},
		{"POST", "/v2/ep/job-stream/w2/" + j.ID, `{"output":"stolen"}`},
		{"GET", "/v2/other/job-take/w1", ""},
	} {
		r := e.do(route.method, route.path, tok, "application/json", route.body)
		require.Equal(t, 403, r.status, "%s %s: %s", route.method, route.path, r.body)
	}
	workers, err := e.fleet.Workers(e.ctx, "ep")
	require.NoError(t, err)
	require.Len(t, workers, 1, "only w1 was recorded")

	// The worker itself finishes its job; a shared worker key may speak for anyone.
	require.Equal(t, 200, e.do("POST", "/v2/ep/job-stream/w1/"+j.ID, tok, "application/json", `{"output":1}`).status)
	require.Equal(t, 200, e.do("POST", "/v2/ep/job-done/w1/"+j.ID, tok, "application/json", `{"output":"mine"}`).status)
	got, err := e.eng.Job(e.ctx, "ep", j.ID)
	require.NoError(t, err)
	require.Equal(t, spool.StateCompleted, got.State)
	require.Equal(t, `"mine"`, string(got.Output))
	require.Equal(t, 200, e.do("GET", "/v2/ep/ping/w2", e.worker, "", "").status)
}
