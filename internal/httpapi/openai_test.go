package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/spooltest"
)

// openAIStream starts a streamed OpenAI request and returns its response, whose headers have
// arrived (before any worker took the job: the client sees its first byte at once).
func (e *env) openAIStream(ctx context.Context, path, body string) *http.Response {
	e.t.Helper()
	hr, err := http.NewRequestWithContext(ctx, "POST", e.srv.URL+"/v2/ep/openai/v1/"+path, strings.NewReader(body))
	require.NoError(e.t, err)
	hr.Header.Set("Authorization", e.client)
	hr.Header.Set("Content-Type", "application/json")
	res, err := e.srv.Client().Do(hr)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { res.Body.Close() })
	return res
}

// readUntil reads the stream until it has read want, and returns what it read.
func readUntil(t testing.TB, br *bufio.Reader, want string) string {
	t.Helper()
	var got strings.Builder
	for !strings.HasSuffix(got.String(), want) {
		b, err := br.ReadByte()
		require.NoError(t, err, "reading until %q; got %q", want, got.String())
		got.WriteByte(b)
	}
	return got.String()
}

// TestOpenAIStreamRelay: a streamed request becomes a job with RunPod's OpenAI input, and each
// chunk its worker posts reaches the client as it arrives (before the next is posted): event
// text as the worker wrote it, several events in one chunk, a character split across two chunks
// whole, keep-alive comments meanwhile, and [DONE] at the end when the worker did not send it.
func TestOpenAIStreamRelay(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	timers := e.fake.Timers()
	body := `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}`
	res := e.openAIStream(e.ctx, "chat/completions", body)
	require.Equal(t, 200, res.StatusCode)
	require.Equal(t, "text/event-stream", res.Header.Get("Content-Type"))
	br := bufio.NewReader(res.Body)

	job := e.take("w1")
	id := sval(t, job["id"])
	require.JSONEq(t, `{"openai_route":"/v1/chat/completions","openai_input":`+body+`}`, string(job["input"]))
	require.Contains(t, string(job["input"]), `"openai_input":`+body, "the body byte for byte")

	chunk := func(text string) {
		t.Helper()
		b, err := json.Marshal(text)
		require.NoError(t, err)
		require.Equal(t, 200, e.post("job-stream", "w1", id, `{"output":`+string(b)+`}`).status)
	}
	chunk("data: {\"n\":1}\n\n")
	require.Equal(t, "data: {\"n\":1}\n\n", readUntil(t, br, "\n\n"), "the first chunk before the second is posted")
	chunk("data: {\"n\":2}\n\ndata: {\"n\":3}\n\n")
	require.Equal(t, "data: {\"n\":2}\n\ndata: {\"n\":3}\n\n", readUntil(t, br, "{\"n\":3}\n\n"))
	// An emoji whose UTF-16 halves arrive in two chunks (Python's json.dumps escapes it so).
	require.Equal(t, 200, e.post("job-stream", "w1", id, `{"output":"data: {\"t\":\"a\ud83d"}`).status)
	require.Equal(t, 200, e.post("job-stream", "w1", id, `{"output":"\ude00\"}\n\n"}`).status)
	require.Equal(t, "data: {\"t\":\"a😀\"}\n\n", readUntil(t, br, "\n\n"))
	// A chunk that is not text is one event.
	require.Equal(t, 200, e.post("job-stream", "w1", id, `{"output":{"n": 4}}`).status)
	require.Equal(t, "data: {\"n\":4}\n\n", readUntil(t, br, "\n\n"))

	spooltest.WaitTimers(t, e.fake, timers+1) // the relay waits for the next chunk
	e.fake.Advance(httpapiKeepAlive)
	require.Equal(t, ": keep-alive\n\n", readUntil(t, br, "\n\n"))

	require.Equal(t, 200, e.post("job-done", "w1", id, `{"output":[]}`).status)
	require.Equal(t, "data: [DONE]\n\n", readUntil(t, br, "\n\n"), "added, since the worker did not send it")
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	require.Empty(t, string(rest))
	require.Equal(t, `"COMPLETED"`, string(e.status(id)["status"]), "a normal job, seen by /status")
}

// httpapiKeepAlive is the default SSEKeepAlive.
const httpapiKeepAlive = 15 * time.Second

// TestOpenAIStreamWorkerDone: a worker that sends [DONE] itself gets no second one; a worker that
// fails mid-stream ends the stream with an OpenAI error event, and no [DONE].
func TestOpenAIStreamEnds(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	res := e.openAIStream(e.ctx, "completions", `{"prompt":"x","stream":true}`)
	br := bufio.NewReader(res.Body)
	id := sval(t, e.take("w1")["id"])
	require.Equal(t, 200, e.post("job-stream", "w1", id, `{"output":"data: {}\n\ndata: [DONE]\n\n"}`).status)
	require.Equal(t, 200, e.post("job-done", "w1", id, `{"output":[]}`).status)
	all, err := io.ReadAll(br)
	require.NoError(t, err)
	require.Equal(t, "data: {}\n\ndata: [DONE]\n\n", string(all))

	res = e.openAIStream(e.ctx, "completions", `{"prompt":"x","stream":true}`)
	br = bufio.NewReader(res.Body)
	id = sval(t, e.take("w1")["id"])
	require.Equal(t, 200, e.post("job-stream", "w1", id, `{"output":"data: {\"n\":1}\n\n"}`).status)
	require.Equal(t, 200, e.post("job-done", "w1", id, `{"error":"{'message': 'out of memory', 'type': 'InternalServerError', 'param': None, 'code': 500}"}`).status)
	all, err = io.ReadAll(br)
	require.NoError(t, err)
	require.Equal(t, "data: {\"n\":1}\n\ndata: {\"error\":{\"message\":\"out of memory\",\"type\":\"InternalServerError\",\"code\":500}}\n\n", string(all))
}

// TestOpenAIClientGoneCancels: when the client of a streamed request goes away, its job is
// cancelled, and the worker holding it is told through job-stop.
func TestOpenAIClientGoneCancels(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, cancel := context.WithCancel(e.ctx)
	res := e.openAIStream(ctx, "chat/completions", `{"messages":[],"stream":true}`)
	br := bufio.NewReader(res.Body)
	id := sval(t, e.take("w1")["id"])
	require.Equal(t, 200, e.post("job-stream", "w1", id, `{"output":"data: {}\n\n"}`).status)
	readUntil(t, br, "\n\n")
	cancel()
	j, err := e.eng.WaitTerminal(e.ctx, "ep", id, 10*time.Second)
	require.NoError(t, err)
	require.Equal(t, spool.StateCancelled, j.State)
	stop := e.do("GET", "/v2/ep/job-stop/w1?gpu=TEST", strings.TrimPrefix(e.worker, "Bearer "), "")
	require.Equal(t, 200, stop.status, stop.body)
	require.Contains(t, stop.body, id, "the worker is told to stop the job")
}

// TestOpenAIWorkerLostMidStream: a worker lost after streaming part of an answer ends the stream
// with an error event (a new attempt would repeat what the client has), and the job.
func TestOpenAIWorkerLostMidStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	timers := e.fake.Timers()
	res := e.openAIStream(e.ctx, "chat/completions", `{"messages":[],"stream":true}`)
	br := bufio.NewReader(res.Body)
	id := sval(t, e.take("w1")["id"])
	require.Equal(t, 200, e.post("job-stream", "w1", id, `{"output":"data: {}\n\n"}`).status)
	readUntil(t, br, "\n\n")
	_, err := e.eng.LoseWorkerJobs(e.ctx, "w1", "it crashed")
	require.NoError(t, err)
	// A requeue wakes no stream reader: the relay sees it at its next keep-alive.
	spooltest.WaitTimers(t, e.fake, timers+1)
	e.fake.Advance(httpapiKeepAlive)
	all, err := io.ReadAll(br)
	require.NoError(t, err)
	require.Equal(t, "data: {\"error\":{\"message\":\"the worker was lost in the middle of the stream\",\"type\":\"server_error\",\"code\":null}}\n\n", string(all))
	require.Equal(t, `"CANCELLED"`, string(e.status(id)["status"]))
}

// TestOpenAIResponse: a request that is not streamed gets the object its worker yielded (or
// returned) as the body; GET /models is a job too.
func TestOpenAIResponse(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	answer := func(path, method, body string, worker func(id string)) resp {
		t.Helper()
		done := make(chan resp, 1)
		go func() { done <- e.do(method, "/v2/ep/openai/v1/"+path, e.client, body) }()
		job := e.take("w1")
		worker(sval(t, job["id"]))
		select {
		case r := <-done:
			return r
		case <-time.After(20 * time.Second):
			t.Fatal("no answer")
			return resp{}
		}
	}
	completion := `{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}]}`
	r := answer("chat/completions", "POST", `{"messages":[]}`, func(id string) {
		require.Equal(t, 200, e.post("job-stream", "w1", id, `{"output":`+completion+`}`).status)
		require.Equal(t, 200, e.post("job-done", "w1", id, `{"output":[]}`).status)
	})
	require.Equal(t, 200, r.status, r.body)
	require.Equal(t, "application/json", r.header.Get("Content-Type"))
	require.JSONEq(t, completion, r.body)

	models := `{"object":"list","data":[{"id":"m","object":"model"}]}`
	r = answer("models", "GET", "", func(id string) {
		require.Equal(t, 200, e.post("job-done", "w1", id, `{"output":`+models+`}`).status, "a returned object")
	})
	require.Equal(t, 200, r.status, r.body)
	require.JSONEq(t, models, r.body)
}

// TestOpenAIErrors: every failure is an OpenAI error object ({"error": {"message", "type",
// "code"}}) with a status an OpenAI client acts on, never a RunPod job object.
func TestOpenAIErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	type apiError struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
			Code    any    `json:"code"`
		} `json:"error"`
	}
	decode := func(r resp) apiError {
		t.Helper()
		var v apiError
		require.NoError(t, json.Unmarshal([]byte(r.body), &v), r.body)
		require.NotEmpty(t, v.Error.Message, r.body)
		return v
	}
	failWith := func(result string) resp {
		t.Helper()
		done := make(chan resp, 1)
		go func() { done <- e.do("POST", "/v2/ep/openai/v1/chat/completions", e.client, `{"messages":[]}`) }()
		id := sval(t, e.take("w1")["id"])
		require.Equal(t, 200, e.post("job-done", "w1", id, result).status)
		return <-done
	}

	// vLLM's {"error": {...}} yield, as runpod-python 1.12 posts it: the repr of the dict.
	r := failWith(`{"error":"{'object': 'error', 'message': 'model \"x\" does not exist', 'type': 'NotFoundError', 'param': None, 'code': 404}"}`)
	require.Equal(t, 404, r.status)
	v := decode(r)
	require.Equal(t, `model "x" does not exist`, v.Error.Message)
	require.Equal(t, "NotFoundError", v.Error.Type)
	require.EqualValues(t, 404, v.Error.Code)

	r = failWith(`{"error":"{'message': 'messages must not be empty', 'type': 'BadRequestError'}"}`)
	require.Equal(t, 400, r.status, "a bad request without a code")

	// A spoolworker/openai handler's *Error: JSON.
	r = failWith(`{"error":"{\"message\":\"bad temperature\",\"type\":\"invalid_request_error\",\"code\":400}"}`)
	require.Equal(t, 400, r.status)
	require.Equal(t, "bad temperature", decode(r).Error.Message)

	// A handler exception, as runpod-python reports it.
	r = failWith(`{"error":"{\"error_type\": \"<class 'RuntimeError'>\", \"error_message\": \"CUDA out of memory\", \"error_traceback\": \"...\"}"}`)
	require.Equal(t, 500, r.status)
	require.Equal(t, "CUDA out of memory", decode(r).Error.Message)

	// A plain error string.
	r = failWith(`{"error":"boom"}`)
	require.Equal(t, 500, r.status)
	require.Equal(t, "boom", decode(r).Error.Message)

	// An {"error": ...} answer object, yielded rather than raised.
	r = failWith(`{"output":{"error":{"message":"too long","type":"invalid_request_error","code":400}}}`)
	require.Equal(t, 400, r.status)
	require.Equal(t, "too long", decode(r).Error.Message)

	// Before any job: the key, the body, the endpoint.
	r = e.do("POST", "/v2/ep/openai/v1/chat/completions", "", `{}`)
	require.Equal(t, 401, r.status)
	require.Equal(t, "authentication_error", decode(r).Error.Type)
	r = e.do("POST", "/v2/ep/openai/v1/chat/completions", e.clientO, `{}`)
	require.Equal(t, 403, r.status)
	decode(r)
	r = e.do("POST", "/v2/ep/openai/v1/chat/completions", e.client, `[1,2]`)
	require.Equal(t, 400, r.status)
	require.Contains(t, decode(r).Error.Message, "JSON object")
	r = e.do("POST", "/v2/nope/openai/v1/chat/completions", e.client, `{}`)
	require.Equal(t, 404, r.status)
	decode(r)

	// A full queue: 503 with Retry-After, which OpenAI clients retry.
	ep, err := e.eng.Endpoint("other")
	require.NoError(t, err)
	ep.MaxQueue = 1
	_, _, err = e.eng.PutEndpoint(e.ctx, ep)
	require.NoError(t, err)
	e.run("other", `{"input":{}}`)
	r = e.do("POST", "/v2/other/openai/v1/chat/completions", e.client, `{}`)
	require.Equal(t, 503, r.status, r.body)
	require.NotEmpty(t, r.header.Get("Retry-After"))
	require.Equal(t, "server_error", decode(r).Error.Type)
}

// TestOpenAITimeout: a job its execution timeout ends is a 504.
func TestOpenAITimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	done := make(chan resp, 1)
	go func() { done <- e.do("POST", "/v2/ep/openai/v1/completions", e.client, `{"prompt":"x"}`) }()
	id := sval(t, e.take("w1")["id"])
	e.fake.Advance(11 * time.Minute) // past the endpoint's default executionTimeout of 10 min
	_, err := e.eng.Sweep(e.ctx)
	require.NoError(t, err)
	r := <-done
	require.Equal(t, 504, r.status, r.body)
	require.Contains(t, r.body, `"type":"timeout"`)
	require.Equal(t, `"TIMED_OUT"`, string(e.status(id)["status"]))
}

// TestOpenAIDrain: a request the server cannot finish because it shuts down is told to retry
// (503, Retry-After) at once, and its job is cancelled, since nobody will read its answer.
func TestOpenAIDrain(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	done := make(chan resp, 1)
	go func() { done <- e.do("POST", "/v2/ep/openai/v1/completions", e.client, `{"prompt":"x"}`) }()
	id := sval(t, e.take("w1")["id"])
	e.eng.Drain()
	r := <-done
	require.Equal(t, 503, r.status, r.body)
	require.Equal(t, "1", r.header.Get("Retry-After"))
	require.Contains(t, r.body, "shutting down")
	require.Equal(t, `"CANCELLED"`, string(e.status(id)["status"]))
}

// TestOpenAIRequestChecks: HEAD makes no job; a stream flag that is not a boolean is named.
func TestOpenAIRequestChecks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.do("HEAD", "/v2/ep/openai/v1/models", e.client, "")
	require.Equal(t, 405, r.status)
	r = e.do("POST", "/v2/ep/openai/v1/chat/completions", e.client, `{"stream":"true"}`)
	require.Equal(t, 400, r.status)
	require.Contains(t, r.body, "stream must be true or false")
	h := e.do("GET", "/v2/ep/health", e.client, "")
	require.Contains(t, h.body, `"inQueue":0`, "neither made a job")
}
