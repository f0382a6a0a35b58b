// Command openai-worker is an OpenAI-compatible worker, written the way RunPod's vLLM worker is,
// with a small deterministic text generator in place of a model (no download, no GPU): it shows
// the exact protocol such a worker follows, and it is what Spool's tests and README use.
//
// It serves three routes of /v2/ENDPOINT/openai/v1:
//
//   - GET /models lists one model, "spool-echo";
//   - POST /chat/completions answers "You said: " and the last user message, a word at a time;
//   - POST /completions continues the prompt with its words in reverse order.
//
// With "stream": true it streams chat.completion.chunk / text_completion events and [DONE];
// otherwise it returns one response object. A request it cannot serve is an OpenAI error with
// status 400 (invalid request) or 404 (unknown route). WORD_DELAY (a Go duration, default 20ms)
// paces the words, so that a client sees them arrive one by one.
//
// Spool starts it for an endpoint with this worker spec (from a checkout of the repository):
//
//	{"name": "llm", "worker": {"command": "go", "args": ["run", "./examples/openai-worker"]}}
//
// and any OpenAI client then uses the base URL http://127.0.0.1:8080/v2/llm/openai/v1 with a Spool
// key as its API key.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spool-run/spool/spoolworker"
	"github.com/spool-run/spool/spoolworker/openai"
)

// Model is the one model the worker serves.
const Model = "spool-echo"

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type chatRequest struct {
	Model     string    `json:"model"`
	Messages  []message `json:"messages"`
	MaxTokens int       `json:"max_tokens"`
}

type completionRequest struct {
	Model     string `json:"model"`
	Prompt    any    `json:"prompt"`
	MaxTokens int    `json:"max_tokens"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func invalid(format string, args ...any) error {
	return &openai.Error{Status: 400, Type: "invalid_request_error", Message: fmt.Sprintf(format, args...)}
}

// server is the worker's handler, with its pace between words.
type server struct {
	delay time.Duration
	now   func() time.Time
}

func (s server) handle(ctx context.Context, req openai.Request, st *openai.Stream) (any, error) {
	switch req.Route {
	case "/v1/models":
		return map[string]any{"object": "list", "data": []map[string]any{
			{"id": Model, "object": "model", "created": 0, "owned_by": "spool"},
		}}, nil
	case "/v1/chat/completions":
		var r chatRequest
		if err := json.Unmarshal(req.Body, &r); err != nil {
			return nil, invalid("the body is not a chat completion request: %v", err)
		}
		if len(r.Messages) == 0 {
			return nil, invalid("messages must be a non-empty list")
		}
		last := r.Messages[len(r.Messages)-1].Content
		words := limit(strings.Fields("You said: "+last), r.MaxTokens)
		return s.generate(ctx, req, st, "chat.completion", len(strings.Fields(last)), words)
	case "/v1/completions":
		var r completionRequest
		if err := json.Unmarshal(req.Body, &r); err != nil {
			return nil, invalid("the body is not a completion request: %v", err)
		}
		prompt, ok := r.Prompt.(string)
		if !ok || strings.TrimSpace(prompt) == "" {
			return nil, invalid("prompt must be a non-empty string")
		}
		words := strings.Fields(prompt)
		slices.Reverse(words)
		return s.generate(ctx, req, st, "text_completion", len(words), limit(words, r.MaxTokens))
	}
	return nil, &openai.Error{Status: 404, Type: "invalid_request_error", Message: "this worker does not serve " + req.Route}
}

func limit(words []string, maxTokens int) []string {
	if maxTokens > 0 && len(words) > maxTokens {
		return words[:maxTokens]
	}
	return words
}

// generate answers with words: one object, or a stream of chunks, a word at a time.
func (s server) generate(ctx context.Context, req openai.Request, st *openai.Stream, object string, promptTokens int, words []string) (any, error) {
	id, created := "cmpl-"+fmt.Sprint(s.now().UnixNano()), s.now().Unix()
	use := usage{PromptTokens: promptTokens, CompletionTokens: len(words), TotalTokens: promptTokens + len(words)}
	chat := object == "chat.completion"
	if !req.Stream {
		text := strings.Join(words, " ")
		choice := map[string]any{"index": 0, "finish_reason": "stop", "text": text}
		if chat {
			choice = map[string]any{"index": 0, "finish_reason": "stop", "message": message{Role: "assistant", Content: text}}
		}
		return map[string]any{"id": id, "object": object, "created": created, "model": Model,
			"choices": []any{choice}, "usage": use}, nil
	}
	chunk := func(piece string, role string, finish any) map[string]any {
		choice := map[string]any{"index": 0, "finish_reason": finish, "text": piece}
		obj := "text_completion"
		if chat {
			delta := map[string]any{}
			if role != "" {
				delta["role"] = role
			}
			if piece != "" {
				delta["content"] = piece
			}
			choice = map[string]any{"index": 0, "finish_reason": finish, "delta": delta}
			obj = "chat.completion.chunk"
		}
		return map[string]any{"id": id, "object": obj, "created": created, "model": Model, "choices": []any{choice}}
	}
	if chat {
		if err := st.Send(chunk("", "assistant", nil)); err != nil {
			return nil, err
		}
	}
	for i, w := range words {
		if i > 0 {
			w = " " + w
		}
		t := time.NewTimer(s.delay)
		select {
		case <-ctx.Done(): // cancelled: the client went away
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		if err := st.Send(chunk(w, "", nil)); err != nil {
			return nil, err
		}
	}
	last := chunk("", "", "stop")
	last["usage"] = use
	return nil, st.Send(last)
}

func main() {
	delay := 20 * time.Millisecond
	if v := os.Getenv("WORD_DELAY"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			fmt.Fprintf(os.Stderr, "WORD_DELAY must be a duration such as 20ms, not %q\n", v)
			os.Exit(2)
		}
		delay = d
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	h := openai.Handler(server{delay: delay, now: time.Now}.handle, nil)
	if err := spoolworker.Start(ctx, h, os.Args[1:], os.Getenv, spoolworker.Config{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
