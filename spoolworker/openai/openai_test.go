package openai_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool/spoolworker"
	"github.com/spool-run/spool/spoolworker/openai"
)

func TestParse(t *testing.T) {
	t.Parallel()
	req, ok, err := openai.Parse(json.RawMessage(`{"openai_route":"/v1/chat/completions","openai_input":{"stream":true,"messages":[]}}`))
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "/v1/chat/completions", req.Route)
	require.True(t, req.Stream)
	require.JSONEq(t, `{"stream":true,"messages":[]}`, string(req.Body))

	req, ok, err = openai.Parse(json.RawMessage(`{"openai_route":"/v1/models"}`))
	require.NoError(t, err)
	require.True(t, ok)
	require.Nil(t, req.Body)
	require.False(t, req.Stream)

	_, ok, err = openai.Parse(json.RawMessage(`{"prompt":"not an OpenAI job"}`))
	require.NoError(t, err)
	require.False(t, ok)

	_, ok, err = openai.Parse(json.RawMessage(`{"openai_route":"/v1/completions","openai_input":[1]}`))
	require.True(t, ok)
	var oe *openai.Error
	require.ErrorAs(t, err, &oe)
	require.Equal(t, 400, oe.Status)
}

// The error a handler returns is reported as the JSON the platform turns back into an OpenAI error.
func TestErrorIsJSON(t *testing.T) {
	t.Parallel()
	e := &openai.Error{Status: 400, Type: "invalid_request_error", Message: `bad "x"`}
	require.JSONEq(t, `{"message":"bad \"x\"","type":"invalid_request_error","code":400}`, e.Error())
	ev, err := openai.Event(map[string]int{"n": 1})
	require.NoError(t, err)
	require.Equal(t, "data: {\"n\":1}\n\n", ev)
}

// TestHandler: jobs that are not OpenAI requests go to the other handler; a handler's *Error and
// plain errors become the job's error.
func TestHandler(t *testing.T) {
	t.Parallel()
	other := spoolworker.HandlerFunc(func(context.Context, *spoolworker.Job) (any, error) { return "other", nil })
	h := openai.Handler(func(_ context.Context, req openai.Request, _ *openai.Stream) (any, error) {
		switch req.Route {
		case "/v1/models":
			return map[string]any{"object": "list"}, nil
		case "/v1/bad":
			return nil, &openai.Error{Status: 400, Type: "invalid_request_error", Message: "no"}
		}
		return nil, errors.New("broken")
	}, other)
	run := func(input string) (any, error) {
		return h.Handle(context.Background(), &spoolworker.Job{ID: "j", Input: json.RawMessage(input)})
	}
	v, err := run(`{"x":1}`)
	require.NoError(t, err)
	require.Equal(t, "other", v)
	v, err = run(`{"openai_route":"/v1/models"}`)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"object": "list"}, v)
	_, err = run(`{"openai_route":"/v1/bad","openai_input":{}}`)
	require.JSONEq(t, `{"message":"no","type":"invalid_request_error","code":400}`, err.Error())
	_, err = run(`{"openai_route":"/v1/x","openai_input":{}}`)
	require.JSONEq(t, `{"message":"broken","type":"server_error","code":500}`, err.Error())

	_, err = openai.Handler(func(context.Context, openai.Request, *openai.Stream) (any, error) { return nil, nil }, nil).
		Handle(context.Background(), &spoolworker.Job{Input: json.RawMessage(`{}`)})
	require.ErrorContains(t, err, "not an OpenAI request")
}
