// Package openai lets a spoolworker handler serve OpenAI-compatible requests the way RunPod's vLLM
// worker does, so that one Go worker serves an LLM behind Spool's and RunPod's
// /v2/ENDPOINT/openai/v1 routes alike.
//
// The platform turns each request into a job whose input is
// {"openai_route": "/v1/chat/completions", "openai_input": <the request body>} (GET /v1/models has
// no body). A streamed request (the body's "stream": true) is answered with server-sent-event
// text, one or several events per chunk, ending with [DONE]; any other with one response object.
// The platform relays the chunks to the client as they arrive.
//
//	h := openai.Handler(func(ctx context.Context, req openai.Request, s *openai.Stream) (any, error) {
//		if req.Route != "/v1/chat/completions" {
//			return nil, &openai.Error{Status: 404, Type: "invalid_request_error", Message: "unknown route"}
//		}
//		if !req.Stream {
//			return completion, nil // one object
//		}
//		for _, chunk := range chunks {
//			if err := s.Send(chunk); err != nil { // a typed chunk, or raw event text
//				return nil, err
//			}
//		}
//		return nil, nil // [DONE] is sent for you
//	}, nil)
//	spoolworker.Start(ctx, h, os.Args[1:], os.Getenv, spoolworker.Config{})
package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/spool-run/spool/spoolworker"
)

// Done is the event that ends a stream.
const Done = "data: [DONE]\n\n"

// Request is an OpenAI-compatible request as the platform hands it to a worker.
type Request struct {
	// Route is the OpenAI route under the base URL: "/v1/chat/completions", "/v1/completions",
	// "/v1/models", "/v1/embeddings" …
	Route string
	// Body is the request body, byte for byte; nil for GET /v1/models.
	Body json.RawMessage
	// Stream is the body's "stream": the client wants server-sent events.
	Stream bool
}

// Parse reads a job's input; ok is false when the input is not an OpenAI request (it has no
// "openai_route").
func Parse(input json.RawMessage) (req Request, ok bool, err error) {
	var in struct {
		Route *string         `json:"openai_route"`
		Body  json.RawMessage `json:"openai_input"`
	}
	if json.Unmarshal(input, &in) != nil || in.Route == nil {
		return Request{}, false, nil
	}
	req = Request{Route: *in.Route}
	if b := bytes.TrimSpace(in.Body); len(b) > 0 && string(b) != "null" {
		req.Body = b
		var head struct {
			Stream bool `json:"stream"`
		}
		if err := json.Unmarshal(b, &head); err != nil {
			return req, true, &Error{Status: 400, Type: "invalid_request_error", Message: "the request body is not a JSON object: " + err.Error()}
		}
		req.Stream = head.Stream
	}
	return req, true, nil
}

// Error is an error to answer in OpenAI's shape, {"error": {"message", "type", "code"}}, with
// Status as the HTTP status (the code vLLM-style workers report).
type Error struct {
	Status  int
	Type    string
	Message string
}

// Error is the error object as JSON: what the worker reports as the job's error, and what the
// platform reads back for the client.
func (e *Error) Error() string {
	b, _ := json.Marshal(struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    int    `json:"code"`
	}{e.Message, e.Type, e.Status})
	return string(b)
}

// Event formats v as one server-sent event, "data: <v as JSON>\n\n".
func Event(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("openai: encode event: %w", err)
	}
	return "data: " + string(b) + "\n\n", nil
}

// Stream sends the events of a streamed request.
type Stream struct {
	job  *spoolworker.Job
	done bool
}

// Send streams v: a string is event text and goes as it is ("data: {...}\n\n", several events
// at once, or Done); anything else is encoded as one event. It returns once the server has it.
func (s *Stream) Send(v any) error {
	text, ok := v.(string)
	if !ok {
		var err error
		if text, err = Event(v); err != nil {
			return err
		}
	}
	if strings.HasPrefix(text, "data: [DONE]") || strings.Contains(text, "\ndata: [DONE]") {
		s.done = true
	}
	return s.job.Stream(text)
}

// HandlerFunc serves one OpenAI request. For a streamed request it sends events on s and returns
// (nil, nil) (Done is sent for it if it did not); otherwise it returns the response object. An
// *Error answers with its status; any other error with a 500.
type HandlerFunc func(ctx context.Context, req Request, s *Stream) (any, error)

// Handler adapts f to spoolworker. Jobs whose input is not an OpenAI request go to other, or fail
// when other is nil.
func Handler(f HandlerFunc, other spoolworker.Handler) spoolworker.Handler {
	return spoolworker.HandlerFunc(func(ctx context.Context, job *spoolworker.Job) (any, error) {
		req, ok, err := Parse(job.Input)
		if !ok {
			if other != nil {
				return other.Handle(ctx, job)
			}
			return nil, errors.New(`not an OpenAI request: the input has no "openai_route"`)
		}
		if err != nil {
			return nil, err
		}
		s := &Stream{job: job}
		v, err := f(ctx, req, s)
		if err != nil {
			var oe *Error
			if !errors.As(err, &oe) {
				oe = &Error{Status: 500, Type: "server_error", Message: err.Error()}
			}
			return nil, oe
		}
		if req.Stream {
			if !s.done {
				if err := s.Send(Done); err != nil {
					return nil, err
				}
			}
			return []any{}, nil
		}
		// RunPod relays what a worker streams, so the one answer is streamed too; an answer
		// larger than a chunk may be goes as the output only, which Spool relays as well.
		if err := job.Stream(v); err != nil && !errors.Is(err, spoolworker.ErrTooLarge) {
			return nil, err
		}
		return v, nil
	})
}
