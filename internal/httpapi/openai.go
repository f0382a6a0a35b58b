package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/auth"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/wire"
	"github.com/spool-run/spool/store"
)

// routesOpenAI mounts RunPod's OpenAI-compatible routes (docs/contract.md §5): each request is an
// ordinary job whose input is {"openai_route": "/v1/<path>", "openai_input": <the body>}, served by
// a worker written the way RunPod's vLLM worker is, and relayed back in OpenAI's shapes.
func (s *server) routesOpenAI(mux *http.ServeMux) {
	mux.HandleFunc("POST /v2/{endpoint}/openai/v1/{path...}", s.openAI)
	mux.HandleFunc("GET /v2/{endpoint}/openai/v1/models", s.openAI)
}

// openAICancelGrace bounds the cancellation of the job of a request whose client went away.
const openAICancelGrace = 5 * time.Second

func (s *server) openAI(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodHead {
		// The mux routes HEAD to GET handlers; here a GET makes a job.
		w.Header().Set("Allow", http.MethodGet)
		s.writeOpenAIError(w, openAIError{http.StatusMethodNotAllowed, "use GET", "invalid_request_error", ""})
		return
	}
	ep := r.PathValue("endpoint")
	if _, err := s.keys.Check(r, auth.Client, ep, true); err != nil {
		s.openAIFail(w, r, err)
		return
	}
	input, stream, err := s.openAIInput(w, r)
	if err != nil {
		s.openAIFail(w, r, err)
		return
	}
	// A job like a /runsync one: its result is read here, at once, and kept briefly.
	j, err := s.eng.Submit(r.Context(), engine.SubmitParams{Endpoint: ep, Input: input, Sync: true})
	if err != nil {
		s.openAIFail(w, r, err)
		return
	}
	var finished bool
	if stream {
		finished = s.relayStream(w, r, j)
	} else {
		finished, err = s.relayResponse(w, r, j)
	}
	if !finished {
		// Nobody will read the answer (the client went away, or was told to retry): an
		// abandoned generation must not go on burning a GPU.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), openAICancelGrace)
		defer cancel()
		if _, cerr := s.eng.Cancel(ctx, ep, j.ID); cerr != nil && spool.ErrorCode(cerr) != spool.CodeNotFound {
			s.log.Warn("cancel the job of an abandoned OpenAI request", "job", j.ID, "err", cerr)
		}
	}
	if err != nil && r.Context().Err() == nil {
		s.openAIFail(w, r, err)
	}
}

// errDraining is the answer to a request the server cannot finish because it is shutting down.
var errDraining = &spool.Error{Code: spool.CodeUnavailable, RetryAfter: 1, Message: "the server is shutting down; retry"}

// hasDone reports whether event text holds the [DONE] event (at the start of a line, not inside
// a token).
func hasDone(b []byte) bool {
	return bytes.HasPrefix(b, []byte("data: [DONE]")) || bytes.Contains(b, []byte("\ndata: [DONE]"))
}

// openAIInput reads the request and makes the job's input: the route under /v1, and the body
// byte for byte (none for GET /models). stream is the body's "stream".
func (s *server) openAIInput(w http.ResponseWriter, r *http.Request) (input json.RawMessage, stream bool, err error) {
	route := "/v1/models"
	if r.Method == http.MethodPost {
		route = "/v1/" + r.PathValue("path")
	}
	o := wire.NewObject().String("openai_route", route)
	if r.Method != http.MethodPost {
		wire.DiscardBody(r)
		return o.Bytes(), false, nil
	}
	body, err := wire.ReadBody(w, r, s.cfg.RunSyncLimit)
	if err != nil {
		return nil, false, err
	}
	var head struct {
		Stream json.RawMessage `json:"stream"`
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' || json.Unmarshal(trimmed, &head) != nil {
		return nil, false, invalid("the request body must be a JSON object")
	}
	switch string(head.Stream) {
	case "", "null", "false", "true":
	default:
		return nil, false, invalid("stream must be true or false")
	}
	return o.Raw("openai_input", trimmed).Bytes(), string(head.Stream) == "true", nil
}

// relayStream answers a streamed request with Server-Sent Events: each chunk the worker posts is
// written and flushed as it arrives (a string is the event text itself, as vLLM-style workers
// yield it; anything else becomes one "data:" event), with a comment every SSEKeepAlive while
// nothing comes. A job that ends without [DONE] gets one; a job that fails gets an error event.
// It reports whether the job ended (else the caller cancels it: nobody reads the rest).
func (s *server) relayStream(w http.ResponseWriter, r *http.Request, j *spool.Job) (finished bool) {
	ctx := r.Context()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		return false // the client is gone
	}
	var (
		after   int64
		attempt int // of the run whose chunks are relayed
		text    textDecoder
		sawDone bool
		wrote   bool
		buf     []byte
	)
	send := func(b []byte) bool {
		if len(b) == 0 {
			return true
		}
		wire.ExtendWriteDeadline(w, s.cfg.SSEKeepAlive)
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	for {
		wire.ExtendWriteDeadline(w, s.cfg.SSEKeepAlive)
		t0 := s.cfg.Clock.Now()
		cur, chunks, err := s.eng.StreamFrom(ctx, j.Endpoint, j.ID, after, s.cfg.SSEKeepAlive)
		if err != nil {
			if ctx.Err() == nil {
				send(errorEvent(openAIErrorOf(err)))
			}
			return false
		}
		if wrote && (cur.Attempt != attempt || cur.State == spool.StateInQueue) {
			// Its worker was lost after it had streamed: a new attempt would start the answer
			// again, after what the client already has. End the stream, and the job.
			send(errorEvent(openAIError{http.StatusBadGateway, "the worker was lost in the middle of the stream", "server_error", ""}))
			return false
		}
		for _, c := range chunks {
			after = c.Seq
			if !wrote {
				attempt = cur.Attempt
			}
			buf = text.event(buf[:0], c.Data)
			sawDone = sawDone || hasDone(buf)
			wrote = wrote || len(buf) > 0
			if !send(buf) {
				return false
			}
		}
		if cur.State.Terminal() {
			buf = append(buf[:0], text.flush()...)
			if cur.State == spool.StateCompleted {
				if !wrote {
					// A handler that returned instead of yielding: its output is the stream.
					buf = outputEvents(buf, cur.Output)
				}
				if !sawDone && !hasDone(buf) {
					buf = append(buf, "data: [DONE]\n\n"...)
				}
			} else {
				buf = append(buf, errorEvent(jobError(cur))...)
			}
			send(buf)
			return true
		}
		if len(chunks) == 0 {
			if s.cfg.Clock.Now().Sub(t0) < s.cfg.SSEKeepAlive {
				// StreamFrom came back early with nothing: the engine drains for a shutdown.
				send(errorEvent(openAIErrorOf(errDraining)))
				return false
			}
			if !send([]byte(": keep-alive\n\n")) {
				return false
			}
		}
	}
}

// relayResponse answers a request that is not streamed: once the job ends, the object its worker
// yielded (or returned) with 200, or an OpenAI error.
// It reports whether the job ended (else the caller cancels it), and the error to answer with
// when it could not answer.
func (s *server) relayResponse(w http.ResponseWriter, r *http.Request, j *spool.Job) (finished bool, _ error) {
	ctx := r.Context()
	const step = time.Minute
	for !j.State.Terminal() {
		wire.ExtendWriteDeadline(w, step)
		t0 := s.cfg.Clock.Now()
		var err error
		if j, err = s.eng.WaitTerminal(ctx, j.Endpoint, j.ID, step); err != nil {
			return false, err
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if !j.State.Terminal() && s.cfg.Clock.Now().Sub(t0) < step {
			// WaitTerminal came back early: the engine drains for a shutdown.
			return false, errDraining
		}
	}
	if j.State != spool.StateCompleted {
		s.writeOpenAIError(w, jobError(j))
		return true, nil
	}
	_, chunks, err := s.eng.StreamFrom(ctx, j.Endpoint, j.ID, 0, 0)
	if err != nil {
		return true, err
	}
	body := responseObject(chunks, j.Output)
	switch e, isErr := workerError(body); {
	case body == nil:
		s.writeOpenAIError(w, openAIError{http.StatusBadGateway, "the worker sent no response object", "server_error", ""})
	case isErr:
		s.writeOpenAIError(w, e)
	default:
		wire.WriteJSON(w, http.StatusOK, body)
	}
	return true, nil
}

// responseObject finds the object a worker answered with: the first object it yielded (workers
// stream even single answers), else its output, or the one object of an aggregated output.
func responseObject(chunks []spool.Chunk, output json.RawMessage) json.RawMessage {
	for _, c := range chunks {
		if d := bytes.TrimSpace(c.Data); len(d) > 0 && d[0] == '{' {
			return d
		}
	}
	out := bytes.TrimSpace(output)
	switch {
	case len(out) > 0 && out[0] == '{':
		return out
	case len(out) > 0 && out[0] == '[':
		var elems []json.RawMessage
		if json.Unmarshal(out, &elems) == nil && len(elems) == 1 {
			if d := bytes.TrimSpace(elems[0]); len(d) > 0 && d[0] == '{' {
				return d
			}
		}
	}
	return nil
}

// outputEvents writes the output of a job that streamed nothing as events: a string or each
// string of a list is event text; anything else one "data:" event.
func outputEvents(buf []byte, output json.RawMessage) []byte {
	out := bytes.TrimSpace(output)
	if len(out) == 0 || string(out) == "null" {
		return buf
	}
	var elems []json.RawMessage
	if out[0] != '[' || json.Unmarshal(out, &elems) != nil {
		elems = []json.RawMessage{out}
	}
	var text textDecoder
	for _, e := range elems {
		buf = text.event(buf, e)
	}
	return append(buf, text.flush()...)
}

// openAIError is an error as OpenAI's API renders it: {"error": {"message", "type", "code"}}.
type openAIError struct {
	status  int
	message string
	typ     string
	code    string // "" for null
}

func (e openAIError) body() []byte {
	inner := wire.NewObject().String("message", e.message).String("type", e.typ)
	if e.code == "" {
		inner.Raw("code", []byte("null"))
	} else if n, err := strconv.Atoi(e.code); err == nil {
		inner.Int("code", int64(n))
	} else {
		inner.String("code", e.code)
	}
	return wire.NewObject().Raw("error", inner.Bytes()).Bytes()
}

func errorEvent(e openAIError) []byte {
	return append(append([]byte("data: "), e.body()...), "\n\n"...)
}

// openAIErrorOf renders an error of the request (auth, body, queue) in OpenAI's shape with the
// client API's status, except that a full queue is a 503 (OpenAI clients retry those).
func openAIErrorOf(err error) openAIError {
	var coded *spool.Error
	if !errors.As(err, &coded) {
		return openAIError{http.StatusInternalServerError, "internal error", "server_error", ""}
	}
	e := openAIError{status: wire.Status(coded.Code), message: coded.Message, typ: "invalid_request_error"}
	switch coded.Code {
	case spool.CodeUnauthorized:
		e.typ, e.code = "authentication_error", "invalid_api_key"
	case spool.CodeForbidden:
		e.typ = "permission_error"
	case spool.CodeNotFound:
		e.typ, e.code = "not_found_error", "not_found"
	case spool.CodeTooMany:
		e.status, e.typ = http.StatusServiceUnavailable, "server_error"
	case spool.CodeUnavailable:
		e.typ = "server_error"
	}
	return e
}

func (s *server) openAIFail(w http.ResponseWriter, r *http.Request, err error) {
	var coded *spool.Error
	if !errors.As(err, &coded) && !errors.Is(err, context.Canceled) {
		if errors.Is(err, store.ErrUnavailable) {
			coded = &spool.Error{Code: spool.CodeUnavailable, RetryAfter: 1, Message: "the database cannot be reached; retry"}
			err = coded
		} else {
			s.log.Error("internal error", "method", r.Method, "path", r.URL.Path, "err", err)
		}
	}
	if coded != nil && coded.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(coded.RetryAfter))
	}
	s.writeOpenAIError(w, openAIErrorOf(err))
}

func (s *server) writeOpenAIError(w http.ResponseWriter, e openAIError) {
	if e.status == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "1")
	}
	wire.WriteJSON(w, e.status, e.body())
}

// jobError is the OpenAI error of a job that did not complete: what its worker reported (with
// the worker's status code when it gave one, else 500), a lost worker (502), the execution
// timeout (504) or a cancellation (500).
func jobError(j *spool.Job) openAIError {
	switch j.State {
	case spool.StateTimedOut:
		return openAIError{http.StatusGatewayTimeout, "the job timed out: " + j.Error, "timeout", "timeout"}
	case spool.StateCancelled:
		return openAIError{http.StatusInternalServerError, "the job was cancelled", "server_error", "cancelled"}
	}
	if e, ok := reportedError(j.Error); ok {
		return e
	}
	if strings.HasPrefix(j.Error, "worker ") && strings.Contains(j.Error, " was lost ") {
		return openAIError{http.StatusBadGateway, j.Error, "server_error", ""}
	}
	return openAIError{http.StatusInternalServerError, j.Error, "server_error", ""}
}

// workerError reads an {"error": ...} object a worker answered with.
func workerError(body json.RawMessage) (openAIError, bool) {
	var v struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &v) != nil || len(v.Error) == 0 || string(v.Error) == "null" {
		return openAIError{}, false
	}
	var other map[string]json.RawMessage
	if json.Unmarshal(body, &other) == nil && (other["choices"] != nil || other["data"] != nil) {
		return openAIError{}, false // an answer that happens to carry an "error" field
	}
	var msg string
	if json.Unmarshal(v.Error, &msg) == nil {
		return openAIError{http.StatusInternalServerError, msg, "server_error", ""}, true
	}
	var m map[string]any
	if json.Unmarshal(v.Error, &m) != nil {
		return openAIError{http.StatusInternalServerError, string(v.Error), "server_error", ""}, true
	}
	return errorFromFields(m), true
}
