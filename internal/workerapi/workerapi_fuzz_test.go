package workerapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/auth"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/fleet"
	"github.com/spool-run/spool/internal/spooltest"
	"github.com/spool-run/spool/internal/workerapi"
)

// doneSeeds are job-done bodies as runpod-python and Spool's SDK send them, and the ways they go
// wrong.
var doneSeeds = []string{
	``, ` `, `{}`, `null`, `[]`, `[1]`, `"x"`, `1`, `output=1`, `{`, `{"output":1}x`, `{"output":1} {}`,
	`{"output": {"echo": {"a": 1.50}}}`, `{"output": false}`, `{"output": null}`, `{"output":"héllo"}`,
	`{"status": "IN_PROGRESS", "output": {"pct": 50}}`, `{"status":"IN_PROGRESS"}`, `{"status":"in_progress","output":1}`,
	`{"status":"COMPLETED","output":1}`, `{"status":null}`, `{"status":7,"output":1}`,
	`{"output":{"extra":1},"error":"custom failure"}`, `{"error":"{\"error_type\": \"ValueError\"}"}`,
	`{"error":{"code": 3}}`, `{"error":null,"output":2}`, `{"error":""}`, `{"error":[1, 2]}`, `{"error":true}`,
	`{"output":{"value":1},"stopPod":true}`, `{"stopPod":"yes"}`, `{"stopPod":true,"stopPod":false}`,
	`{"output":1,"output":2}`, `{"Output":1}`, `{"output":"\ud800"}`, "{\"output\":\"\xff\xfe\"}",
	`{"output":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]}`, `{"error":"` + strings.Repeat("e", 600) + `"}`,
	`{"status":"IN_PROGRESS","error":"ignored while in progress"}`,
}

// FuzzDecodeDone: DecodeDone never panics, refuses exactly the bodies that are not one JSON
// object (with a CodeInvalid error saying so), and otherwise reads the members as documented.
func FuzzDecodeDone(f *testing.F) {
	for _, s := range doneSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		d, err := workerapi.DecodeDone(body)
		want, isObject := expectDone(body)
		if err != nil {
			var coded *spool.Error
			require.True(t, errors.As(err, &coded), "uncoded error %T: %v", err, err)
			require.Equal(t, spool.CodeInvalid, coded.Code)
			require.Contains(t, coded.Message, "JSON object")
			require.False(t, isObject, "refused a JSON object: %q", body)
			return
		}
		require.True(t, isObject, "accepted a body that is not one JSON object: %q", body)
		require.Equal(t, want, d)
	})
}

// expectDone is the documented reading of a job-done body, done with a token reader rather than
// a map: the last of repeated members counts, names match exactly.
func expectDone(body []byte) (workerapi.DoneBody, bool) {
	m, ok := members(body)
	if !ok {
		return workerapi.DoneBody{}, false
	}
	var d workerapi.DoneBody
	if s, ok := m["status"]; ok {
		d.InProgress = unquote(s) == "IN_PROGRESS"
	}
	d.Output = m["output"]
	if e, ok := m["error"]; ok && string(e) != "null" {
		s := string(e)
		if len(e) > 0 && e[0] == '"' {
			s = unquote(e)
		}
		d.Error = &s
	}
	d.StopPod = string(m["stopPod"]) == "true"
	return d, true
}

func unquote(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// members reads body as exactly one JSON object, token by token, and returns its members' raw
// values (the last of repeated names).
func members(body []byte) (map[string]json.RawMessage, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	m := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		m[key] = v
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	return m, true
}

// fuzzServer is a real engine and fleet on SQLite in a temp dir with the worker API mounted,
// called in-process (no sockets, so that each input is cheap).
type fuzzServer struct {
	ctx    context.Context
	eng    *engine.Engine
	fleet  *fleet.Fleet
	mux    *http.ServeMux
	worker string // worker key of "ep"
}

const fuzzResultLimit = 512

func newFuzzServer(f *testing.F) *fuzzServer {
	mux := http.NewServeMux()
	s := spooltest.NewServer(f, spooltest.Options{
		Clock:     clock.NewFake(spooltest.Start),
		Endpoints: []spool.Endpoint{spool.NewEndpoint("ep")},
		Keys:      []spool.Key{{Name: "w", Scope: spool.ScopeWorker, Endpoints: []string{"ep"}}},
		Handler: func(eng *engine.Engine, fl *fleet.Fleet, keys *auth.Keyring) (http.Handler, error) {
			return mux, workerapi.Register(mux, workerapi.Config{
				Engine: eng, Fleet: fl, Keys: keys, ResultLimit: fuzzResultLimit, Logger: slog.New(slog.DiscardHandler),
			})
		},
	})
	return &fuzzServer{ctx: context.Background(), eng: s.Engine, fleet: s.Fleet, mux: mux, worker: s.Secrets["w"]}
}

// serve sends one request to the worker API and checks the answer's shape: 200 with
// {"status":"ok"}, or a 4xx with a JSON {"error": "..."} that names a problem. It returns the
// status and, for an error, its message.
func (s *fuzzServer) serve(t *testing.T, r *http.Request) (int, string) {
	t.Helper()
	r.Header.Set("Authorization", s.worker)
	rec := httptest.NewRecorder()
	s.mux.ServeHTTP(rec, r)
	body := rec.Body.String()
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"), "status %d: %s", rec.Code, body)
	if rec.Code == http.StatusOK {
		require.JSONEq(t, `{"status":"ok"}`, body)
		return rec.Code, ""
	}
	require.True(t, rec.Code >= 400 && rec.Code < 500, "status %d: %s", rec.Code, body)
	var e map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(body), &e), body)
	require.Len(t, e, 1, body)
	msg := unquote(e["error"])
	require.NotEmpty(t, msg, body)
	require.NotEqual(t, "internal error", msg)
	return rec.Code, msg
}

// FuzzJobDone posts each input as the result of a job the worker holds: the answer is a 200 or a
// JSON 4xx, never a 500, and the job ends as the body says (or, refused, stays as it was, but
// for an oversize body, which fails it with the reason).
func FuzzJobDone(f *testing.F) {
	for _, s := range doneSeeds {
		f.Add([]byte(s), "")
	}
	f.Add([]byte(`{"output":"`+strings.Repeat("x", fuzzResultLimit)+`"}`), "")
	for _, q := range []string{"attempt=1", "attempt=2", "attempt=0", "attempt=-1", "attempt=x", "attempt=99999999999999999999", "gpu=TEST&isStream=false", "attempt=1&attempt=2", "%zz"} {
		f.Add([]byte(`{"output":1}`), q)
	}
	s := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, body []byte, query string) {
		j, err := s.eng.Submit(s.ctx, engine.SubmitParams{Endpoint: "ep", Input: json.RawMessage(`1`)})
		require.NoError(t, err)
		h, err := s.eng.Take(s.ctx, "ep", "w1", 1, 0)
		require.NoError(t, err)
		require.Len(t, h, 1)
		require.Equal(t, j.ID, h[0].Job.ID)

		r := httptest.NewRequest("POST", "/v2/ep/job-done/w1/"+j.ID, bytes.NewReader(body))
		r.URL.RawQuery = query
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		status, msg := s.serve(t, r)
		got, err := s.eng.Job(s.ctx, "ep", j.ID)
		require.NoError(t, err)

		// What is wrong with the body, if anything: the answer to the post of the holder.
		want, isObject := expectDone(body)
		bad, badMsg := 0, ""
		switch {
		case len(body) > fuzzResultLimit:
			bad, badMsg = 413, "limit"
		case !utf8.Valid(body):
			bad, badMsg = 400, "UTF-8"
		case !isObject:
			bad, badMsg = 400, "JSON object"
		}

		q, _ := url.ParseQuery(query)
		if a := q.Get("attempt"); a != "" && a != "1" {
			// Not the current attempt: refused, for that or for the body, whichever is looked
			// at first, and the job stays as it was.
			if n, err := strconv.Atoi(a); err != nil || n < 1 {
				require.Equal(t, 400, status, msg)
				if bad == 0 {
					require.Contains(t, msg, "attempt")
				}
			} else if bad == 0 || status != bad {
				require.Equal(t, 409, status, msg)
			}
			require.Equal(t, spool.StateInProgress, got.State, "a refused post changed the job")
			return
		}
		if bad != 0 {
			require.Equal(t, bad, status, msg)
			require.Contains(t, msg, badMsg)
			if bad == 413 {
				// The worker never retries a 413: the job fails at once, saying why.
				require.Equal(t, spool.StateFailed, got.State)
				require.Contains(t, got.Error, "refused")
			} else {
				require.Equal(t, spool.StateInProgress, got.State, "a refused post changed the job")
			}
			return
		}
		require.Equal(t, 200, status, msg)
		switch {
		case want.InProgress:
			require.Equal(t, spool.StateInProgress, got.State)
			require.Equal(t, string(want.Output), string(got.Progress))
		case want.Error != nil:
			require.Equal(t, spool.StateFailed, got.State)
			require.Equal(t, *want.Error, got.Error)
			require.Equal(t, string(want.Output), string(got.Output))
		default:
			require.Equal(t, spool.StateCompleted, got.State)
			require.Equal(t, string(want.Output), string(got.Output))
		}
		if !want.InProgress {
			require.Equal(t, want.StopPod, got.StopPod)
		}
	})
}

// FuzzPing sends each input as the query of a ping (job_id lists, runpod_version, the
// status/check/reason of an unhealthy worker, anything else): the answer is a 200 or a JSON 4xx
// naming the problem, never a 500; a listed job count over the limit is refused, and a given
// runpod_version is what the fleet records.
func FuzzPing(f *testing.F) {
	for _, q := range []string{
		"", "gpu=TEST&job_id=a%2Cb&runpod_version=1.12.0", "job_id=", "job_id=%2C%2C+%2C", "job_id=a&job_id=b,c",
		"runpod_version=1.7.13", "runpod_version=", "runpod_version=%FF%FE", "runpod_version=a&runpod_version=b",
		"gpu=TEST&status=unhealthy&check=memory&reason=MemoryError%3A+too+little&runpod_version=1.12.0",
		"status=unhealthy&reason=" + strings.Repeat("%C3%A9", 200), "status=unhealthy", "status=healthy&check=x",
		"%zz", "a=%", ";;;", "job_id=" + strings.Repeat("j%2C", fleet.MaxPingedJobs) + "j", "job_id=\x00", "job_id=a\nb",
	} {
		f.Add(q, "w1", false)
	}
	for _, w := range []string{"w-%2F", "\u00e9\u00e9", "pod:abc_1.2-x", "w 1", "w\x00", strings.Repeat("w", 200)} {
		f.Add("runpod_version=2", w, true)
	}
	s := newFuzzServer(f)
	// w1 holds a job, so that pings that list it, or not, reconcile something.
	_, err := s.eng.Submit(s.ctx, engine.SubmitParams{Endpoint: "ep", Input: json.RawMessage(`1`)})
	require.NoError(f, err)
	_, err = s.eng.Take(s.ctx, "ep", "w1", 1, 0)
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, query, worker string, post bool) {
		if worker == "" || worker == "." || worker == ".." || strings.Contains(worker, "/") {
			worker = "w1" // not one path segment: the mux would not route it here
		}
		method := "GET"
		if post {
			method = "POST"
		}
		r := httptest.NewRequest(method, "/v2/ep/ping/x", nil)
		r.URL.Path = "/v2/ep/ping/" + worker
		r.URL.RawQuery = query
		status, msg := s.serve(t, r)
		if spool.CheckWorkerID(worker) != nil {
			require.Equal(t, 400, status, msg)
			require.Contains(t, msg, "worker id")
			return
		}

		q, _ := url.ParseQuery(query)
		var ids int
		for _, v := range q["job_id"] {
			for id := range strings.SplitSeq(v, ",") {
				if strings.TrimSpace(id) != "" {
					ids++
				}
			}
		}
		if ids > fleet.MaxPingedJobs {
			require.Equal(t, 400, status, msg)
			require.Contains(t, msg, "jobs")
			return
		}
		require.Equal(t, 200, status, msg)
		if v := q.Get("runpod_version"); v != "" {
			ws, err := s.fleet.Workers(s.ctx, "ep")
			require.NoError(t, err)
			var recorded *string
			for _, w := range ws {
				if w.ID == worker {
					recorded = &w.Version
				}
			}
			require.NotNil(t, recorded, "pinging worker %q not recorded", worker)
			require.True(t, strings.HasPrefix(v, *recorded) && *recorded != "", "version %q recorded as %q", v, *recorded)
		}
	})
}
