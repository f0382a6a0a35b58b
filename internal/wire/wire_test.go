package wire_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/wire"
	"github.com/spool-run/spool/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestWriteError(t *testing.T) {
	t.Parallel()
	cases := []struct {
		err        error
		status     int
		body       string
		retryAfter string
	}{
		{spool.Errorf(spool.CodeInvalid, "bad"), 400, `{"error":"bad"}`, ""},
		{spool.Errorf(spool.CodeUnauthorized, "who"), 401, `{"error":"who"}`, ""},
		{spool.Errorf(spool.CodeForbidden, "no"), 403, `{"error":"no"}`, ""},
		{spool.Errorf(spool.CodeNotFound, "gone"), 404, `{"error":"gone"}`, ""},
		{spool.Errorf(spool.CodeConflict, "held"), 409, `{"error":"held"}`, ""},
		{spool.Errorf(spool.CodeTimeout, "slow"), 408, `{"error":"slow"}`, ""},
		{spool.Errorf(spool.CodeTooLarge, "big"), 413, `{"error":"big"}`, ""},
		{&spool.Error{Code: spool.CodeTooMany, Message: "slow", RetryAfter: 5}, 429, `{"error":"slow"}`, "5"},
		{spool.Errorf(spool.CodeUnavailable, "bye"), 503, `{"error":"bye"}`, ""},
		{&spool.Error{Code: spool.CodeUnavailable, Message: "busy", RetryAfter: 1}, 503, `{"error":"busy"}`, "1"},
		{spool.Errorf(spool.CodeInternal, "db password=hunter2"), 500, `{"error":"internal error"}`, ""},
		{errors.New("sql: secret table"), 500, `{"error":"internal error"}`, ""},
		// A database out of reach, met by any handler: 503 and retry, without the cause's text.
		{fmt.Errorf("record worker w: %w", errors.Join(store.ErrUnavailable, errors.New("FATAL: terminating connection, host=db password=x"))),
			503, `{"error":"the database cannot be reached; retry"}`, "1"},
		{&spool.Error{Code: "weird", Message: "x"}, 500, `{"error":"internal error"}`, ""},
	}
	for _, c := range cases {
		t.Run(c.body+c.retryAfter, func(t *testing.T) {
			t.Parallel()
			w := httptest.NewRecorder()
			wire.WriteErrorLog(w, nil, c.err)
			require.Equal(t, c.status, w.Code)
			require.Equal(t, "application/json", w.Header().Get("Content-Type"))
			require.JSONEq(t, c.body, w.Body.String())
			require.Equal(t, c.retryAfter, w.Header().Get("Retry-After"))
		})
	}
}

func TestReadBody(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		body    string
		limit   int64
		chunked bool
		wantErr string
	}{
		{"under", "hello", 10, false, ""},
		{"exact", "0123456789", 10, false, ""},
		{"over by content length", "0123456789a", 10, false, "request body exceeds the 10 bytes limit"},
		{"over while reading", strings.Repeat("x", 2048), 1024, true, "request body exceeds the 1 KB limit"},
		{"mb", strings.Repeat("x", 10), 10 << 20, false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest("POST", "/", strings.NewReader(c.body))
			if c.chunked {
				r.ContentLength = -1
			}
			w := httptest.NewRecorder()
			b, err := wire.ReadBody(w, r, c.limit)
			if c.wantErr == "" {
				require.NoError(t, err)
				require.Equal(t, c.body, string(b))
				return
			}
			require.Equal(t, spool.CodeTooLarge, spool.ErrorCode(err))
			require.Equal(t, c.wantErr, err.Error())
		})
	}
}

func TestFormatSize(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{10 << 20: "10 MB", 1 << 20: "1 MB", 512 << 10: "512 KB", 1000: "1000 bytes", 0: "0 bytes"} {
		require.Equal(t, want, wire.FormatSize(n))
	}
}

func TestWriteJSON(t *testing.T) {
	t.Parallel()
	w := httptest.NewRecorder()
	wire.WriteJSON(w, 201, map[string]string{"a": "<b>"})
	require.Equal(t, 201, w.Code)
	require.Equal(t, "application/json", w.Header().Get("Content-Type"))
	require.Equal(t, `{"a":"<b>"}`, w.Body.String())

	w = httptest.NewRecorder()
	wire.WriteJSON(w, 200, json.RawMessage(`{"x": [1.0, 2e3]}`))
	require.Equal(t, `{"x": [1.0, 2e3]}`, w.Body.String())

	w = httptest.NewRecorder()
	wire.WriteJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
	require.Equal(t, `{"status":"ok"}`, w.Body.String())
}

func TestJobView(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	base := func() *spool.Job {
		return &spool.Job{
			ID: "j1", Endpoint: "ep", State: spool.StateInQueue, Input: json.RawMessage(`{"a": 1}`),
			S3ConfigSealed: []byte(`{"accessSecret":"CANARY"}`), CreatedAt: t0, QueuedAt: t0,
		}
	}
	cases := []struct {
		name string
		mod  func(*spool.Job)
		want string
	}{
		{"queued", func(j *spool.Job) {}, `{"id":"j1","status":"IN_QUEUE"}`},
		{"taken", func(j *spool.Job) {
			j.State, j.TakenAt, j.WorkerID = spool.StateInProgress, t0.Add(1500*time.Millisecond), "w1"
		}, `{"id":"j1","status":"IN_PROGRESS","delayTime":1500,"workerId":"w1"}`},
		{"progress", func(j *spool.Job) {
			j.State, j.TakenAt, j.Progress = spool.StateInProgress, t0.Add(time.Second), json.RawMessage(`{"pct": 50}`)
		}, `{"id":"j1","status":"IN_PROGRESS","delayTime":1000,"output":{"pct": 50}}`},
		{"completed raw output", func(j *spool.Job) {
			j.State, j.TakenAt, j.FinishedAt = spool.StateCompleted, t0.Add(time.Second), t0.Add(3*time.Second)
			j.Output, j.WorkerID, j.Retries = json.RawMessage(`[1.0, 2e3,"<&>"]`), "w", 2
		}, `{"id":"j1","status":"COMPLETED","delayTime":1000,"executionTime":2000,"output":[1.0, 2e3,"<&>"],"workerId":"w","retries":2}`},
		{"false output", func(j *spool.Job) {
			j.State, j.Output = spool.StateCompleted, json.RawMessage(`false`)
		}, `{"id":"j1","status":"COMPLETED","output":false}`},
		{"zero output", func(j *spool.Job) { j.State, j.Output = spool.StateCompleted, json.RawMessage(`0`) },
			`{"id":"j1","status":"COMPLETED","output":0}`},
		{"empty string output", func(j *spool.Job) { j.State, j.Output = spool.StateCompleted, json.RawMessage(`""`) },
			`{"id":"j1","status":"COMPLETED","output":""}`},
		{"null output", func(j *spool.Job) { j.State, j.Output = spool.StateCompleted, json.RawMessage(`null`) },
			`{"id":"j1","status":"COMPLETED","output":null}`},
		{"failed without message", func(j *spool.Job) { j.State = spool.StateFailed },
			`{"id":"j1","status":"FAILED","error":""}`},
		{"failed with output", func(j *spool.Job) {
			j.State, j.Error, j.Output = spool.StateFailed, "boom", json.RawMessage(`{"x":1}`)
		}, `{"id":"j1","status":"FAILED","output":{"x":1},"error":"boom"}`},
		{"cancelled purged", func(j *spool.Job) { j.State, j.Error = spool.StateCancelled, "purged" },
			`{"id":"j1","status":"CANCELLED","error":"purged"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			j := base()
			c.mod(j)
			got := string(wire.Job(j))
			require.Equal(t, c.want, got)
			require.True(t, json.Valid([]byte(got)))
			require.NotContains(t, got, "CANARY")
		})
	}
}

func TestJobStatusAndStream(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	j := &spool.Job{ID: "j", State: spool.StateInProgress, QueuedAt: t0, TakenAt: t0.Add(20 * time.Millisecond),
		Output: json.RawMessage(`1`)}
	require.Equal(t, `{"id":"j","status":"IN_PROGRESS","delayTime":20}`, string(wire.JobStatus(j)))
	require.Equal(t, `{"id":"j","status":"IN_PROGRESS","delayTime":20,"stream":[]}`, string(wire.Stream(j, nil)))
	j.State, j.Error = spool.StateFailed, "bad"
	got := wire.Stream(j, []spool.Chunk{{Seq: 1, Data: json.RawMessage(`"a"`)}, {Seq: 2, Data: json.RawMessage(`{"b": 2}`)}})
	require.Equal(t, `{"id":"j","status":"FAILED","delayTime":20,"stream":[{"output":"a"},{"output":{"b": 2}}],"error":"bad"}`, string(got))
}

func TestObject(t *testing.T) {
	t.Parallel()
	o := wire.NewObject()
	require.Equal(t, `{}`, string(o.Bytes()))
	o = wire.NewObject().String("s", "a\"b\n").Int("i", -3).Bool("b", true).Raw("r", []byte(`[ 1 ]`)).
		Time("t", time.Date(2026, 2, 3, 4, 5, 6, 7_000_000, time.FixedZone("x", 3600)))
	require.Equal(t, `{"s":"a\"b\n","i":-3,"b":true,"r":[ 1 ],"t":"2026-02-03T03:05:06.007Z"}`, string(o.Bytes()))
	require.Equal(t, `[]`, string(wire.Array(nil)))
	require.Equal(t, `[1,{}]`, string(wire.Array([][]byte{[]byte("1"), []byte("{}")})))
}

type deadlineWriter struct {
	*httptest.ResponseRecorder
	deadline time.Time
}

func (d *deadlineWriter) SetWriteDeadline(t time.Time) error { d.deadline = t; return nil }

func TestExtendWriteDeadline(t *testing.T) {
	t.Parallel()
	w := &deadlineWriter{ResponseRecorder: httptest.NewRecorder()}
	before := time.Now()
	wire.ExtendWriteDeadline(w, 90*time.Second)
	require.False(t, w.deadline.Before(before.Add(90*time.Second+wire.WaitGrace)))
	// A writer without deadlines is left alone.
	wire.ExtendWriteDeadline(httptest.NewRecorder(), time.Second)
}

func TestAppendStringKeepsURLsReadable(t *testing.T) {
	t.Parallel()
	got := string(wire.AppendString(nil, `https://x.example/h?a=1&b=<2>"q"`))
	require.Equal(t, `"https://x.example/h?a=1&b=<2>\"q\""`, got)
}

// TestRawAliasesTheBuffer: a decoded Raw is the decoded buffer itself, so a body's payload is
// never copied on its way to the store.
func TestRawAliasesTheBuffer(t *testing.T) {
	t.Parallel()
	body := []byte(`{"input": {"big": "value"}, "n": null}`)
	var v struct {
		Input wire.Raw `json:"input"`
		N     wire.Raw `json:"n"`
	}
	require.NoError(t, json.Unmarshal(body, &v))
	require.Equal(t, `{"big": "value"}`, string(v.Input))
	require.True(t, v.N.Null())
	body[10] = '['
	require.Equal(t, `[`, string(v.Input[:1]), "Input shares the body's bytes")
}
