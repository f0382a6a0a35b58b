package httpapi_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool/internal/spooltest"
)

type event struct{ name, id, data, comment string }

// readEvent reads one SSE event (or comment) from br.
func readEvent(t *testing.T, br *bufio.Reader) event {
	t.Helper()
	var ev event
	var data []string
	for {
		line, err := br.ReadString('\n')
		require.NoError(t, err, "reading an event")
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			ev.data = strings.Join(data, "\n")
			return ev
		case strings.HasPrefix(line, ":"):
			ev.comment = strings.TrimSpace(line[1:])
		case strings.HasPrefix(line, "event: "):
			ev.name = line[len("event: "):]
		case strings.HasPrefix(line, "id: "):
			ev.id = line[len("id: "):]
		case strings.HasPrefix(line, "data: "):
			data = append(data, line[len("data: "):])
		default:
			t.Fatalf("unexpected SSE line %q", line)
		}
	}
}

func (e *env) openEvents(path, lastID string) *http.Response {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 20*time.Second)
	e.t.Cleanup(cancel)
	hr, err := http.NewRequestWithContext(ctx, "GET", e.srv.URL+path, nil)
	require.NoError(e.t, err)
	hr.Header.Set("Authorization", e.client)
	hr.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		hr.Header.Set("Last-Event-ID", lastID)
	}
	res, err := e.srv.Client().Do(hr)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { res.Body.Close() })
	return res
}

func TestStreamEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.run("ep", `{"input":1}`)
	require.Equal(t, id, sval(t, e.take("w1")["id"]))
	require.Equal(t, 200, e.post("job-stream", "w1", id, `{"output": "one"}`).status)
	require.Equal(t, 200, e.post("job-stream", "w1", id, "{\"output\": {\"two\":\n 2}}").status)

	res := e.openEvents("/v2/ep/stream/"+id, "1")
	require.Equal(t, 200, res.StatusCode)
	require.Equal(t, "text/event-stream", res.Header.Get("Content-Type"))
	br := bufio.NewReader(res.Body)
	require.Equal(t, event{id: "2", data: "{\"output\":{\"two\":\n 2}}"}, readEvent(t, br))

	// Nothing new for a while: a keep-alive comment.
	spooltest.WaitTimers(t, e.fake, 2)
	e.fake.Advance(15 * time.Second)
	require.Equal(t, event{comment: "keep-alive"}, readEvent(t, br))

	require.Equal(t, 200, e.post("job-stream", "w1", id, `{"output": "three"}`).status)
	require.Equal(t, event{id: "3", data: `{"output":"three"}`}, readEvent(t, br))
	require.Equal(t, 200, e.post("job-done", "w1", id, `{"output": "fin"}`).status)
	ev := readEvent(t, br)
	require.Equal(t, "done", ev.name)
	require.Equal(t, `{"id":"`+id+`","status":"COMPLETED","delayTime":0,"executionTime":15000,"output":"fin","workerId":"w1"}`, ev.data)
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	require.Empty(t, rest)

	// Events do not consume chunks: a RunPod-style /stream still drains all three.
	r := e.do("GET", "/v2/ep/stream/"+id, e.client, "")
	require.Equal(t, "[{\"output\":\"one\"},{\"output\":{\"two\":\n 2}},{\"output\":\"three\"}]", string(obj(t, r.body)["stream"]))

	// A finished job replays from the start and ends.
	res = e.openEvents("/v2/ep/stream/"+id, "")
	br = bufio.NewReader(res.Body)
	for _, want := range []string{"1", "2", "3"} {
		require.Equal(t, want, readEvent(t, br).id)
	}
	require.Equal(t, "done", readEvent(t, br).name)

	// Errors before the stream starts are ordinary JSON errors.
	res = e.openEvents("/v2/ep/stream/nope", "")
	require.Equal(t, 404, res.StatusCode)
	require.Equal(t, "application/json", res.Header.Get("Content-Type"))
	res = e.openEvents("/v2/ep/stream/"+id, "x")
	require.Equal(t, 400, res.StatusCode)
}

// TestStreamEventsHeadersAtOnce: with no chunk yet, the 200 and its headers arrive before the
// first keep-alive (the fake clock never moves here: openEvents would time out if they waited).
func TestStreamEventsHeadersAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.run("ep", `{"input":1}`)
	res := e.openEvents("/v2/ep/stream/"+id, "")
	require.Equal(t, 200, res.StatusCode)
	require.Equal(t, "text/event-stream", res.Header.Get("Content-Type"))
	// And the stream goes on as before: the keep-alive after SSEKeepAlive, then a chunk.
	br := bufio.NewReader(res.Body)
	spooltest.WaitTimers(t, e.fake, 2)
	e.fake.Advance(15 * time.Second)
	require.Equal(t, event{comment: "keep-alive"}, readEvent(t, br))
	require.Equal(t, id, sval(t, e.take("w1")["id"]))
	require.Equal(t, 200, e.post("job-stream", "w1", id, `{"output": "one"}`).status)
	require.Equal(t, event{id: "1", data: `{"output":"one"}`}, readEvent(t, br))
}
