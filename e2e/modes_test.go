package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const settle = 30 * time.Second // the longest any job here may take to reach the state a test waits for

// modeEndpoints are the endpoints of TestWorkerModes: one per mode, so that each subtest's worker
// takes only its own jobs.
var modeEndpoints = []string{"m-echo", "m-progress", "m-raise", "m-error", "m-list", "m-bool", "m-empty",
	"m-slow", "m-timeout", "m-refresh", "m-generator", "m-late", "m-triple", "m-concurrency", "m-keys"}

func modesConfig() string {
	var b strings.Builder
	b.WriteString("endpoints:\n")
	for _, ep := range modeEndpoints {
		fmt.Fprintf(&b, "  - name: %s\n", ep)
	}
	return b.String()
}

// TestWorkerModes runs every handler outcome of the protocol doc's live run through a real server:
// a runpod-python-style worker posts it, and SDK-style clients read it back.
func TestWorkerModes(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverOpts{Config: modesConfig()})

	t.Run("echo", func(t *testing.T) {
		t.Parallel()
		w := startWorker(t, srv, workerOpts{Endpoint: "m-echo"})
		c := srv.SDK(styleJS, "m-echo")
		// Input with number literals and characters a re-encoder would change; an unknown top-level
		// key that must be dropped; an s3Config that only the worker may see.
		input := `{"mode":"echo","text":"h\u00e9llo ✓ <b>&amp;","big":12345678901234567890,"f":1.50,"e":1e3,"z":{"b":1,"a":[true,null]}}`
		s3 := `{"accessId":"AKE2E","accessSecret":"s3-secret-e2e-do-not-leak","bucketName":"b","endpointUrl":"http://127.0.0.1:9/s3"}`
		id := c.Submit(t, `{"input":`+input+`,"s3Config":`+s3+`,"someUnknownKey":1}`)

		job := fields(t, []byte(w.WaitJobEvent(t, "job", id, settle).Body))
		requireSameJSON(t, input, job["input"], "input as the worker received it")
		require.Equal(t, input, string(job["input"]), "input must reach the worker byte for byte")
		requireSameJSON(t, s3, job["s3Config"], "s3Config is handed to the worker")
		require.NotContains(t, job, "someUnknownKey")

		c.AwaitState(t, id, "COMPLETED", settle)
		for _, style := range []sdkStyle{stylePython, styleJS, styleGo, styleCurl} {
			r := srv.SDK(style, "m-echo").Status(t, id)
			require.Equal(t, http.StatusOK, r.Code, "%s status: %s", style, r)
			require.NotContains(t, string(r.Body), "s3-secret-e2e-do-not-leak")
			m := requireJobView(t, r.Body, id, "COMPLETED")
			posted := fields(t, []byte(w.WaitJobEvent(t, "done", id, settle).Body))
			requireSameJSON(t, string(posted["output"]), m["output"], "output relayed from the worker's post")
			out := fields(t, m["output"])
			requireSameJSON(t, input, out["echo"], "the input the handler saw")
		}
	})

	t.Run("job-take payload holds only RunPod's keys", func(t *testing.T) {
		t.Parallel()
		// runpod-python hands the job object to the handler as is, so every key in it is visible
		// to user code: it may hold only what RunPod sends (docs/contract.md §1: "a RunPod client never
		// sees anything new"; docs/worker-protocol.md §2 lists the observed keys).
		c := srv.SDK(styleJS, "m-keys")
		id := c.Submit(t, `{"input":{"k":1},"policy":{"executionTimeout":60000,"ttl":60000},"s3Config":{"accessId":"a","accessSecret":"s","bucketName":"b","endpointUrl":"http://127.0.0.1:9"}}`)
		w := newPlainWorker(srv, "m-keys", "w-keys")
		job := w.TakeOne(t)
		require.Equal(t, id, str(t, job, "id"))
		for k := range job {
			require.Contains(t, []string{"id", "input", "policy", "s3Config", "webhook", "batchId"}, k,
				"job-take payload key %q is not one RunPod sends: %s", k, mustJSON(job))
		}
		require.Equal(t, http.StatusOK, w.Done(t, id, `{"output": 1}`).Code)
	})

	t.Run("progress", func(t *testing.T) {
		t.Parallel()
		w := startWorker(t, srv, workerOpts{Endpoint: "m-progress"})
		c := srv.SDK(stylePython, "m-progress")
		id := c.Submit(t, `{"mode": "progress", "gate": "p"}`)
		p := w.WaitJobEvent(t, "progress", id, settle)
		require.Equal(t, http.StatusOK, p.Code, "progress post: %+v", p)
		// The progress post was answered, so /status shows it as the output of the running job.
		r := c.Status(t, id)
		require.Equal(t, http.StatusOK, r.Code, "status: %s", r)
		m := requireJobView(t, r.Body, id, "IN_PROGRESS")
		requireSameJSON(t, `{"pct":50}`, m["output"], "progress is the output while IN_PROGRESS")
		w.Release("p")
		m = c.AwaitState(t, id, "COMPLETED", settle)
		requireJobView(t, mustJSON(m), id, "COMPLETED")
		requireSameJSON(t, `"done-str"`, m["output"])
	})

	t.Run("raise", func(t *testing.T) {
		t.Parallel()
		w := startWorker(t, srv, workerOpts{Endpoint: "m-raise"})
		c := srv.SDK(styleGo, "m-raise")
		id := c.Submit(t, `{"input":{"mode":"raise"}}`)
		c.AwaitState(t, id, "FAILED", settle)
		r := c.Status(t, id)
		require.Equal(t, http.StatusOK, r.Code, "status: %s", r)
		m := requireJobView(t, r.Body, id, "FAILED")
		// error is the string the worker sent, unchanged: a JSON document inside a string.
		errStr := str(t, m, "error")
		require.Equal(t, raiseError(w.ID), errStr)
		var e map[string]string
		require.NoError(t, json.Unmarshal([]byte(errStr), &e), "error decodes as JSON: %q", errStr)
		require.Equal(t, "<class 'ValueError'>", e["error_type"])
		require.Equal(t, "boom", e["error_message"])
		require.Equal(t, w.ID, e["worker_id"])
		if out, ok := m["output"]; ok {
			require.Equal(t, "null", string(out), "no output was posted")
		}
	})

	t.Run("error", func(t *testing.T) {
		t.Parallel()
		startWorker(t, srv, workerOpts{Endpoint: "m-error"})
		c := srv.SDK(styleJS, "m-error")
		id := c.Submit(t, `{"input":{"mode":"error"}}`)
		c.AwaitState(t, id, "FAILED", settle)
		m := requireJobView(t, c.Status(t, id).Body, id, "FAILED")
		require.Equal(t, "custom failure", str(t, m, "error"))
		requireSameJSON(t, `{"extra":1}`, m["output"], "a result with both output and error keeps its output")
	})

	t.Run("list via JS runSync", func(t *testing.T) {
		t.Parallel()
		startWorker(t, srv, workerOpts{Endpoint: "m-list"})
		c := srv.SDK(styleJS, "m-list")
		r := c.RunSync(t, `{"input":{"mode":"list"}}`, 90000)
		require.Equal(t, http.StatusOK, r.Code, "runsync: %s", r)
		m := fields(t, r.Body)
		id := str(t, m, "id")
		require.True(t, strings.HasPrefix(id, "sync-"), "runsync ids start with sync-: %q", id)
		m = requireJobView(t, r.Body, id, "COMPLETED")
		requireSameJSON(t, `[1,2,3]`, m["output"])
		// The result stays readable through /status.
		m = requireJobView(t, c.Status(t, id).Body, id, "COMPLETED")
		requireSameJSON(t, `[1,2,3]`, m["output"])
	})

	t.Run("bool via python run_sync", func(t *testing.T) {
		t.Parallel()
		startWorker(t, srv, workerOpts{Endpoint: "m-bool"})
		c := srv.SDK(stylePython, "m-bool")
		r := c.RunSync(t, `{"mode": "bool"}`, 0)
		require.Equal(t, http.StatusOK, r.Code, "runsync: %s", r)
		m := fields(t, r.Body)
		m = requireJobView(t, r.Body, str(t, m, "id"), "COMPLETED")
		require.Contains(t, m, "output", "an output of false must be sent: %s", r.Body)
		requireSameJSON(t, `false`, m["output"])
	})

	t.Run("empty", func(t *testing.T) {
		t.Parallel()
		startWorker(t, srv, workerOpts{Endpoint: "m-empty"})
		c := srv.SDK(styleCurl, "m-empty")
		id := c.Submit(t, `{"input":{"mode":"empty"}}`)
		c.AwaitState(t, id, "COMPLETED", settle)
		m := requireJobView(t, c.Status(t, id).Body, id, "COMPLETED")
		if out, ok := m["output"]; ok {
			require.Equal(t, "null", string(out), "{} means no output")
		}
		require.NotContains(t, m, "error")
	})

	t.Run("slow then cancel", func(t *testing.T) {
		t.Parallel()
		w := startWorker(t, srv, workerOpts{Endpoint: "m-slow"})
		c := srv.SDK(stylePython, "m-slow")
		id := c.Submit(t, `{"mode": "slow"}`)
		w.WaitJobEvent(t, "start", id, settle)
		r := c.Cancel(t, id)
		require.Equal(t, http.StatusOK, r.Code, "cancel: %s", r)
		requireJobView(t, r.Body, id, "CANCELLED")
		// The worker's job-stop long-poll carries the id; the handler stops and posts nothing.
		stop := w.WaitJobEvent(t, "stop", id, settle)
		require.Equal(t, http.StatusOK, stop.Code)
		w.WaitJobEvent(t, "stopped", id, settle)
		requireJobView(t, c.Status(t, id).Body, id, "CANCELLED")
		for _, e := range w.JobEvents(id) {
			require.NotContains(t, []string{"done", "progress", "stream"}, e.Kind, "nothing is posted for a stopped job")
		}
		// Cancelling a terminal job changes nothing; the worker goes on serving.
		r = srv.SDK(styleJS, "m-slow").Cancel(t, id)
		require.Equal(t, http.StatusOK, r.Code, "second cancel: %s", r)
		requireJobView(t, r.Body, id, "CANCELLED")
		next := c.Submit(t, `{"mode": "list"}`)
		c.AwaitState(t, next, "COMPLETED", settle)
		requireJobView(t, c.Status(t, id).Body, id, "CANCELLED")
	})

	t.Run("slow past its execution timeout", func(t *testing.T) {
		t.Parallel()
		w := startWorker(t, srv, workerOpts{Endpoint: "m-timeout"})
		c := srv.SDK(styleJS, "m-timeout")
		id := c.Submit(t, `{"input":{"mode":"slow"},"policy":{"executionTimeout":5001}}`)
		w.WaitJobEvent(t, "start", id, settle)
		m := c.AwaitState(t, id, "TIMED_OUT", settle)
		require.NotEmpty(t, str(t, m, "error"), "a timed-out job says why")
		require.NotContains(t, m, "s3Config")
		w.WaitJobEvent(t, "stop", id, settle)
		w.WaitJobEvent(t, "stopped", id, settle)
	})

	t.Run("refresh", func(t *testing.T) {
		t.Parallel()
		startWorker(t, srv, workerOpts{Endpoint: "m-refresh"})
		c := srv.SDK(styleJS, "m-refresh")
		id := c.Submit(t, `{"input":{"mode":"refresh"}}`)
		c.AwaitState(t, id, "COMPLETED", settle)
		r := c.Status(t, id)
		m := requireJobView(t, r.Body, id, "COMPLETED")
		requireSameJSON(t, `{"value":1}`, m["output"], "stopPod is not part of the output")
		require.NotContains(t, string(r.Body), "stopPod")
	})

	t.Run("generator", func(t *testing.T) {
		t.Parallel()
		w := startWorker(t, srv, workerOpts{Endpoint: "m-generator"})
		py := srv.SDK(stylePython, "m-generator")
		id := py.Submit(t, `{"mode": "generator", "chunks": 3, "gate": "g", "gateAfter": 2}`)

		// Python Job.stream(): yield every chunk of every answer; stop once the status is final
		// and stream is empty. ?wait= replaces its 1 s sleep.
		var got []string
		drain := func(until func(status string, n int) bool) {
			for i := 0; i < 60; i++ {
				r := py.Stream(t, id, 5000)
				require.Equal(t, http.StatusOK, r.Code, "stream: %s", r)
				var s struct {
					ID     string            `json:"id"`
					Status string            `json:"status"`
					Stream []json.RawMessage `json:"stream"`
				}
				require.NoError(t, json.Unmarshal(r.Body, &s))
				require.NotNil(t, s.Stream, "stream is never null: %s", r.Body)
				require.NotContains(t, fields(t, r.Body), "s3Config")
				for _, c := range s.Stream {
					f := fields(t, c)
					require.Contains(t, f, "output", "each chunk is {\"output\": ...}: %s", c)
					got = append(got, string(f["output"]))
				}
				if until(s.Status, len(s.Stream)) {
					return
				}
			}
			require.Fail(t, "stream did not reach the expected point", "chunks so far: %v", got)
		}
		drain(func(status string, _ int) bool {
			require.Equal(t, "IN_PROGRESS", status, "before the gate opens")
			return len(got) >= 2
		})
		require.Len(t, got, 2)
		w.Release("g")
		drain(func(status string, n int) bool { return terminalStates[status] && n == 0 })
		require.Len(t, got, 3, "every chunk exactly once: %v", got)
		for i, c := range got {
			requireSameJSON(t, fmt.Sprintf(`{"chunk":%d}`, i), json.RawMessage(c))
		}
		m := requireJobView(t, py.Status(t, id).Body, id, "COMPLETED")
		requireSameJSON(t, `[{"chunk":0},{"chunk":1},{"chunk":2}]`, m["output"], "the aggregate result")

		// Go SDK: POST /stream?wait=; the first terminal answer carries every chunk not yet
		// returned, later answers an empty list.
		gc := srv.SDK(styleGo, "m-generator")
		id2 := gc.Submit(t, `{"input":{"mode":"generator","chunks":3}}`)
		gc.AwaitState(t, id2, "COMPLETED", settle)
		r := gc.Stream(t, id2, 1000)
		require.Equal(t, http.StatusOK, r.Code, "stream: %s", r)
		require.Equal(t, "COMPLETED", str(t, fields(t, r.Body), "status"))
		requireSameJSON(t, `[{"output":{"chunk":0}},{"output":{"chunk":1}},{"output":{"chunk":2}}]`, fields(t, r.Body)["stream"])
		r = gc.Stream(t, id2, 1000)
		require.Equal(t, http.StatusOK, r.Code, "stream: %s", r)
		require.Equal(t, "COMPLETED", str(t, fields(t, r.Body), "status"))
		requireSameJSON(t, `[]`, fields(t, r.Body)["stream"], "drained: nothing twice")
	})

	t.Run("late progress", func(t *testing.T) {
		t.Parallel()
		w := startWorker(t, srv, workerOpts{Endpoint: "m-late"})
		c := srv.SDK(stylePython, "m-late")
		id := c.Submit(t, `{"mode": "late"}`)
		p := w.WaitJobEvent(t, "progress", id, settle)
		require.Equal(t, http.StatusOK, p.Code, "progress after the result is accepted and ignored: %+v", p)
		m := requireJobView(t, c.Status(t, id).Body, id, "COMPLETED")
		requireSameJSON(t, `"final"`, m["output"], "late progress changes nothing")
	})

	t.Run("triple post", func(t *testing.T) {
		t.Parallel()
		w := startWorker(t, srv, workerOpts{Endpoint: "m-triple"})
		c := srv.SDK(styleJS, "m-triple")
		id := c.Submit(t, `{"input":{"mode":"triple"}}`)
		w.WaitEvent(t, "3 job-done posts", settle, func(wEvent) bool {
			n := 0
			for _, e := range w.JobEvents(id) {
				if e.Kind == "done" {
					n++
				}
			}
			return n == 3
		})
		for _, e := range w.JobEvents(id) {
			if e.Kind == "done" {
				require.Equal(t, http.StatusOK, e.Code, "a repeated identical result is accepted")
			}
		}
		m := requireJobView(t, c.Status(t, id).Body, id, "COMPLETED")
		requireSameJSON(t, `"once"`, m["output"])
		h := c.Health(t)
		require.Equal(t, http.StatusOK, h.Code, "health: %s", h)
		var health struct {
			Jobs    map[string]int `json:"jobs"`
			Workers map[string]int `json:"workers"`
		}
		require.NoError(t, json.Unmarshal(h.Body, &health))
		for _, k := range []string{"completed", "failed", "inProgress", "inQueue", "retried"} {
			require.Contains(t, health.Jobs, k, "health: %s", h)
		}
		for _, k := range []string{"idle", "initializing", "ready", "running", "throttled", "unhealthy"} {
			require.Contains(t, health.Workers, k, "health: %s", h)
		}
		require.Equal(t, 1, health.Jobs["completed"], "applied once: %s", h)
		require.Equal(t, 0, health.Jobs["inProgress"]+health.Jobs["inQueue"]+health.Jobs["failed"], "health: %s", h)
	})

	t.Run("concurrency 3 with batch take", func(t *testing.T) {
		t.Parallel()
		c := srv.SDK(styleJS, "m-concurrency")
		var ids []string
		for i := 0; i < 3; i++ {
			ids = append(ids, c.Submit(t, fmt.Sprintf(`{"input":{"mode":"list","gate":"c%d"}}`, i)))
		}
		w := startWorker(t, srv, workerOpts{Endpoint: "m-concurrency", Concurrency: 3})
		first := w.WaitEvent(t, "a take with jobs", settle, func(e wEvent) bool { return e.Kind == "take" && len(e.IDs) > 0 })
		require.Contains(t, first.URL, "/v2/m-concurrency/job-take-batch/"+w.ID+"?gpu=TEST&batch_size=3&job_in_progress=0")
		require.ElementsMatch(t, ids, first.IDs, "one batch take gets all three queued jobs: %s", first.Body)
		for _, id := range ids {
			requireJobView(t, c.Status(t, id).Body, id, "IN_PROGRESS")
		}
		// The heartbeat lists every held job: job_id=a%2Cb%2Cc.
		w.WaitEvent(t, "a ping listing the 3 jobs", settle, func(e wEvent) bool {
			return e.Kind == "ping" && strings.Contains(e.URL, "job_id="+strings.Join(sortedCopy(ids), "%2C")+"&runpod_version=1.12.0")
		})
		// One free slot: the single job-take, saying a job is in progress.
		fourth := c.Submit(t, `{"input":{"mode":"list","gate":"c3"}}`)
		w.Release("c0")
		c.AwaitState(t, ids[0], "COMPLETED", settle)
		e := w.WaitJobEvent(t, "take", fourth, settle)
		require.Contains(t, e.URL, "/v2/m-concurrency/job-take/"+w.ID+"?gpu=TEST&job_in_progress=1")
		for _, g := range []string{"c1", "c2", "c3"} {
			w.Release(g)
		}
		for _, id := range append(ids, fourth) {
			m := c.AwaitState(t, id, "COMPLETED", settle)
			requireSameJSON(t, `[1,2,3]`, m["output"])
		}
	})
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}
