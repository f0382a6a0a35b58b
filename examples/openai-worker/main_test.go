package main

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool/spoolworker/openai"
)

func TestRoutes(t *testing.T) {
	t.Parallel()
	s := server{now: func() time.Time { return time.Unix(1700000000, 0) }}
	call := func(route, body string) (map[string]any, error) {
		v, err := s.handle(context.Background(), openai.Request{Route: route, Body: json.RawMessage(body)}, nil)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(v)
		require.NoError(t, err)
		var m map[string]any
		require.NoError(t, json.Unmarshal(b, &m))
		return m, nil
	}
	m, err := call("/v1/models", "")
	require.NoError(t, err)
	require.Equal(t, "spool-echo", m["data"].([]any)[0].(map[string]any)["id"])

	m, err = call("/v1/chat/completions", `{"messages":[{"role":"user","content":"hi  there"}]}`)
	require.NoError(t, err)
	choice := m["choices"].([]any)[0].(map[string]any)
	require.Equal(t, "You said: hi there", choice["message"].(map[string]any)["content"])
	require.Equal(t, map[string]any{"prompt_tokens": 2.0, "completion_tokens": 4.0, "total_tokens": 6.0}, m["usage"])

	m, err = call("/v1/completions", `{"prompt":"a b c","max_tokens":2}`)
	require.NoError(t, err)
	require.Equal(t, "c b", m["choices"].([]any)[0].(map[string]any)["text"])

	for route, body := range map[string]string{
		"/v1/chat/completions": `{"messages":[]}`,
		"/v1/completions":      `{"prompt":42}`,
		"/v1/embeddings":       `{}`,
	} {
		_, err := call(route, body)
		var oe *openai.Error
		require.True(t, errors.As(err, &oe), route)
		require.Contains(t, []int{400, 404}, oe.Status, route)
	}
}
