package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// sdkStyle is which RunPod client a request imitates (docs/client-api.md §12).
type sdkStyle int

const (
	// stylePython is runpod-python's runpod.Endpoint: Bearer auth, Content-Type: application/json on
	// every call, bodyless POSTs for cancel and purge-queue, `run` wraps its argument in {"input":...}
	// unless it already has a truthy "input".
	stylePython sdkStyle = iota
	// styleJS is npm runpod-sdk 1.1.2: Bearer auth, `{}` bodies on cancel and purge-queue,
	// /runsync?wait= and GET /status-sync?wait=.
	styleJS
	// styleGo is runpod/go-sdk: Bearer auth, Content-Type: application/json with empty bodies,
	// POST for status, status-sync and stream (with ?wait=).
	styleGo
	// styleCurl is the docs' curl examples: the raw key in a lower-case "authorization" header.
	styleCurl
)

func (s sdkStyle) String() string {
	return [...]string{"python", "js", "go", "curl"}[s]
}

// sdkClient sends client-API requests to one endpoint exactly as one SDK does.
type sdkClient struct {
	srv   *server
	style sdkStyle
	ep    string
	key   string
	// doubleSlash imitates the Go SDK with its documented default base URL, which ends in "/":
	// every path then starts with /v2//{endpoint}.
	doubleSlash bool
}

// SDK returns an SDK-style client of endpoint ep using the server's client-scope key.
func (s *server) SDK(style sdkStyle, ep string) *sdkClient {
	return &sdkClient{srv: s, style: style, ep: ep, key: s.Keys.Client}
}

func (c *sdkClient) path(op string) string {
	if c.doubleSlash {
		return "/v2//" + c.ep + "/" + op
	}
	return "/v2/" + c.ep + "/" + op
}

// header is what the SDK sends; hasBody says whether the request carries a body.
func (c *sdkClient) header(hasBody bool) http.Header {
	h := http.Header{}
	switch c.style {
	case stylePython:
		h.Set("Content-Type", "application/json")
		h.Set("Authorization", "Bearer "+c.key)
		h.Set("User-Agent", "RunPod-Python-SDK/1.12.0 (Linux 6.1.0; x86_64) Language/Python 3.11.2")
		h.Set("Accept", "*/*")
	case styleJS:
		h.Set("Authorization", "Bearer "+c.key)
		h.Set("User-Agent", "RunPod-JS-SDK/1.1.2 (Unknown Environment)")
		h.Set("Accept", "application/json, text/plain, */*")
		if hasBody {
			h.Set("Content-Type", "application/json")
		}
	case styleGo:
		h.Set("Authorization", "Bearer "+c.key)
		h.Set("Content-Type", "application/json")
	case styleCurl:
		h["authorization"] = []string{c.key}
		h["accept"] = []string{"application/json"}
		if hasBody {
			h["content-type"] = []string{"application/json"}
		}
	}
	return h
}

// submitBody is the body the SDK sends for run/run_sync(payload): runpod-python wraps a payload
// without a truthy "input"; the others send it as given. Python bodies come from json.dumps.
func (c *sdkClient) submitBody(payload string) []byte {
	if c.style != stylePython {
		return []byte(payload)
	}
	var m map[string]any
	if json.Unmarshal([]byte(payload), &m) != nil || !pyTruthy(m["input"]) {
		payload = `{"input": ` + payload + `}`
	}
	return []byte(pyJSONASCII(payload))
}

func pyTruthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case float64:
		return x != 0
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	}
	return true
}

// pyJSONASCII is json.dumps(v) with its default ensure_ascii=True, as requests sends json= bodies.
func pyJSONASCII(raw string) string {
	s := pyJSON(raw)
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < 0x80:
			b.WriteRune(r)
		case r > 0xFFFF:
			r -= 0x10000
			fmt.Fprintf(&b, `\u%04x\u%04x`, 0xD800+(r>>10), 0xDC00+(r&0x3FF))
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	return b.String()
}

func (c *sdkClient) do(t *testing.T, method, op string, body []byte) resp {
	t.Helper()
	return c.srv.do(t, method, c.path(op), c.header(body != nil), body)
}

// Run submits with /run.
func (c *sdkClient) Run(t *testing.T, payload string) resp {
	t.Helper()
	return c.do(t, http.MethodPost, "run", c.submitBody(payload))
}

// Submit runs payload and returns the new job's id, requiring RunPod's {"id","status":"IN_QUEUE"}.
func (c *sdkClient) Submit(t *testing.T, payload string) string {
	t.Helper()
	r := c.Run(t, payload)
	require.Equal(t, http.StatusOK, r.Code, "run: %s", r)
	m := fields(t, r.Body)
	id := str(t, m, "id")
	require.NotEmpty(t, id, "run: %s", r)
	require.Equal(t, "IN_QUEUE", str(t, m, "status"), "run: %s", r)
	return id
}

// RunSync submits with /runsync. waitMs is used by the SDKs that send ?wait= (JS clamps it to
// [1000, 90000]); Python sends none and waits for the server's default.
func (c *sdkClient) RunSync(t *testing.T, payload string, waitMs int) resp {
	t.Helper()
	op := "runsync"
	switch c.style {
	case styleJS:
		op += fmt.Sprintf("?wait=%d", min(max(waitMs, 1000), 90000))
	case styleGo, styleCurl:
		op += fmt.Sprintf("?wait=%d", waitMs)
	}
	return c.do(t, http.MethodPost, op, c.submitBody(payload))
}

// Status reads /status/{id}: GET, or POST with an empty body for the Go SDK.
func (c *sdkClient) Status(t *testing.T, id string) resp {
	t.Helper()
	if c.style == styleGo {
		return c.do(t, http.MethodPost, "status/"+id, []byte{})
	}
	return c.do(t, http.MethodGet, "status/"+id, nil)
}

// StatusSync reads /status-sync/{id}?wait=: GET for JS (and the others here), POST for Go.
func (c *sdkClient) StatusSync(t *testing.T, id string, waitMs int) resp {
	t.Helper()
	op := fmt.Sprintf("status-sync/%s?wait=%d", id, waitMs)
	if c.style == styleGo {
		return c.do(t, http.MethodPost, op, []byte{})
	}
	return c.do(t, http.MethodGet, op, nil)
}

// Stream reads /stream/{id}: GET for Python and JS (with ?wait= so the test needs no sleep between
// polls), POST with ?wait= for Go.
func (c *sdkClient) Stream(t *testing.T, id string, waitMs int) resp {
	t.Helper()
	op := "stream/" + id
	if waitMs > 0 {
		op += fmt.Sprintf("?wait=%d", waitMs)
	}
	if c.style == styleGo {
		return c.do(t, http.MethodPost, op, []byte{})
	}
	return c.do(t, http.MethodGet, op, nil)
}

// bodylessPost is the body of cancel and purge-queue: none (Python, curl), {} (JS), empty with
// Content-Type: application/json (Go).
func (c *sdkClient) bodylessPost() []byte {
	switch c.style {
	case styleJS:
		return []byte("{}")
	case styleGo:
		return []byte{}
	}
	return nil
}

// Cancel posts /cancel/{id}.
func (c *sdkClient) Cancel(t *testing.T, id string) resp {
	t.Helper()
	return c.do(t, http.MethodPost, "cancel/"+id, c.bodylessPost())
}

// PurgeQueue posts /purge-queue.
func (c *sdkClient) PurgeQueue(t *testing.T) resp {
	t.Helper()
	return c.do(t, http.MethodPost, "purge-queue", c.bodylessPost())
}

// Health reads /health.
func (c *sdkClient) Health(t *testing.T) resp {
	t.Helper()
	return c.do(t, http.MethodGet, "health", nil)
}

// AwaitState polls /status-sync/{id}?wait= (a long-poll, so no sleeping) until the job's status is
// want, failing at once if it ends in another terminal state, or after timeout. It returns the
// last /status-sync answer's fields.
func (c *sdkClient) AwaitState(t *testing.T, id, want string, timeout time.Duration) map[string]json.RawMessage {
	t.Helper()
	const waitMs = 1000
	deadline := time.Now().Add(timeout)
	var last resp
	for i := 0; i < int(timeout/(waitMs*time.Millisecond))+20 && time.Now().Before(deadline); i++ {
		last = c.StatusSync(t, id, waitMs)
		require.Equal(t, http.StatusOK, last.Code, "status-sync %s: %s", id, last)
		m := fields(t, last.Body)
		st := str(t, m, "status")
		if st == want {
			return m
		}
		if terminalStates[st] {
			require.Failf(t, "unexpected state", "job %s became %s while waiting for %s: %s", id, st, want, last)
		}
	}
	require.Failf(t, "timeout", "job %s not %s within %s; last answer: %s", id, want, timeout, last)
	return nil
}

var terminalStates = map[string]bool{"COMPLETED": true, "FAILED": true, "CANCELLED": true, "TIMED_OUT": true}

// requireJobView checks the fields every /status-shaped answer must have: the id, a valid status,
// never s3Config; for a job a worker finished, delayTime and executionTime as integer ms.
func requireJobView(t *testing.T, body []byte, id, status string) map[string]json.RawMessage {
	t.Helper()
	require.True(t, validUTF8JSON(body), "not valid UTF-8 JSON: %q", body)
	m := fields(t, body)
	require.Equal(t, id, str(t, m, "id"), "id in %s", body)
	require.Equal(t, status, str(t, m, "status"), "status in %s", body)
	require.NotContains(t, m, "s3Config", "s3Config must never reach a client: %s", body)
	if status == "COMPLETED" || status == "FAILED" {
		requireMillis(t, m, "delayTime")
		requireMillis(t, m, "executionTime")
	}
	if status == "IN_PROGRESS" {
		requireMillis(t, m, "delayTime")
	}
	return m
}
