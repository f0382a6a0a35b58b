package e2e_test

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestCrashRestartLosesNothing kills the server with SIGKILL in the middle of work and starts it
// again on the same data: every acknowledged job must still be there in the state it had, the
// jobs of the worker that died with it must go back to the queue (retries 1) once its pings stop,
// and a new worker must then finish them all (docs/contract.md §2 Durability, Worker loss).
func TestCrashRestartLosesNothing(t *testing.T) {
	t.Parallel()
	const lostAfter = 3 * time.Second
	srv := startServer(t, serverOpts{Config: `
workers:
  lostAfter: 3s
  takeWait: 2s
endpoints:
  - name: ep
`})
	py := srv.SDK(stylePython, "ep")

	var ids []string
	inputs := map[string]string{}
	for i := 0; i < 20; i++ {
		in := fmt.Sprintf(`{"n":%d}`, i)
		id := py.Submit(t, in)
		ids = append(ids, id)
		inputs[id] = in
	}

	// A worker takes 5 jobs and finishes 2 of them.
	w1 := newPlainWorker(srv, "ep", "w-doomed")
	var taken []string
	for i := 0; i < 5; i++ {
		job := w1.TakeOne(t)
		id := str(t, job, "id")
		require.Contains(t, inputs, id)
		requireSameJSON(t, inputs[id], job["input"])
		taken = append(taken, id)
	}
	done := map[string]string{}
	for _, id := range taken[:2] {
		out := fmt.Sprintf(`{"result": %s, "worker": "w-doomed"}`, inputs[id])
		r := w1.Done(t, id, `{"output": `+out+`}`)
		require.Equal(t, http.StatusOK, r.Code, "job-done: %s", r)
		done[id] = out
	}
	held := taken[2:]
	require.Equal(t, http.StatusOK, w1.Ping(t, held).Code)

	// Crash.
	srv.Kill()
	srv = srv.Restart(t)
	py = srv.SDK(stylePython, "ep")
	w1 = newPlainWorker(srv, "ep", "w-doomed")
	// Its ping process outlived the restart once more, then the worker died: its last sign of life
	// is now, so the state check below has lostAfter to run before the sweeper may act.
	pinged := time.Now() // before the ping: the server saw the worker no earlier than this
	require.Equal(t, http.StatusOK, w1.Ping(t, held).Code)

	for _, id := range ids {
		r := py.Status(t, id)
		require.Equal(t, http.StatusOK, r.Code, "job %s acknowledged before the crash: %s", id, r)
		switch {
		case done[id] != "":
			m := requireJobView(t, r.Body, id, "COMPLETED")
			requireSameJSON(t, done[id], m["output"])
		case slices.Contains(held, id):
			require.Less(t, time.Since(pinged), lostAfter, "the check took too long to be meaningful")
			requireJobView(t, r.Body, id, "IN_PROGRESS")
		default:
			requireJobView(t, r.Body, id, "IN_QUEUE")
		}
	}

	// No more pings: the held jobs go back to the queue with one retry each.
	js := srv.SDK(styleJS, "ep")
	for _, id := range held {
		m := js.AwaitState(t, id, "IN_QUEUE", 5*lostAfter)
		requireSameJSON(t, `1`, m["retries"], "requeued after the worker was lost: %s", mustJSON(m))
		require.NotContains(t, m, "output")
	}
	require.GreaterOrEqual(t, time.Since(pinged), lostAfter, "requeued before the worker could count as lost")
	// The dead worker's late result is fenced off.
	r := w1.Done(t, held[0], `{"output": "too late"}`)
	require.Equal(t, http.StatusConflict, r.Code, "a result from the lost attempt: %s", r)
	requireJobView(t, py.Status(t, held[0]).Body, held[0], "IN_QUEUE")

	// A new worker drains the queue: all 18 unfinished jobs complete, the 2 finished ones stay as
	// they were.
	w2 := startWorker(t, srv, workerOpts{Endpoint: "ep", PodID: "w-fresh", Concurrency: 4})
	for _, id := range ids {
		m := js.AwaitState(t, id, "COMPLETED", settle)
		m = requireJobView(t, mustJSON(m), id, "COMPLETED")
		if done[id] != "" {
			requireSameJSON(t, done[id], m["output"], "finished before the crash")
			continue
		}
		out := fields(t, m["output"])
		requireSameJSON(t, inputs[id], out["echo"], "job %s ran with its own input", id)
		if slices.Contains(held, id) {
			requireSameJSON(t, `1`, m["retries"], "job %s", id)
		} else if raw, ok := m["retries"]; ok {
			requireSameJSON(t, `0`, raw, "job %s never lost a worker", id)
		}
	}
	for _, id := range ids {
		n := 0
		for _, e := range w2.JobEvents(id) {
			if e.Kind == "job" {
				n++
			}
		}
		if done[id] != "" {
			require.Zero(t, n, "job %s finished before the crash was handed out again", id)
		} else {
			require.Equal(t, 1, n, "job %s handed to the new worker once", id)
		}
	}
	w2.Close()
	srv.Stop()
}
