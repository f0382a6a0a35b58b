package autoscale_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/autoscale"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/fleet"
)

func TestWanted(t *testing.T) {
	t.Parallel()
	rc := func(min, max, v int) spool.Endpoint {
		ep := spool.NewEndpoint("x")
		ep.ScalerType, ep.ScalerValue, ep.WorkersMin, ep.WorkersMax = spool.ScalerRequestCount, v, min, max
		return ep
	}
	qd := func(min, max, v int) spool.Endpoint {
		ep := rc(min, max, v)
		ep.ScalerType = spool.ScalerQueueDelay
		return ep
	}
	for _, tc := range []struct {
		name string
		ep   spool.Endpoint
		q    autoscale.QueueState
		want int
	}{
		{"rc empty", rc(0, 3, 1), autoscale.QueueState{}, 0},
		{"rc empty keeps min", rc(1, 3, 1), autoscale.QueueState{}, 1},
		{"rc one per job", rc(0, 3, 1), autoscale.QueueState{Normal: 2}, 2},
		{"rc counts in progress", rc(0, 5, 2), autoscale.QueueState{Normal: 3, InProgress: 2}, 3},
		{"rc rounds up", rc(0, 5, 4), autoscale.QueueState{Normal: 1}, 1},
		{"rc capped", rc(0, 3, 1), autoscale.QueueState{Normal: 10}, 3},
		{"rc max 0", rc(0, 0, 1), autoscale.QueueState{Normal: 10}, 0},
		{"qd first worker at once", qd(0, 3, 4), autoscale.QueueState{Normal: 5}, 1},
		{"qd keeps while delay short", qd(0, 3, 4), autoscale.QueueState{Normal: 5, OldestWait: 4 * time.Second, Workers: 1, Busy: 1}, 1},
		{"qd adds one past the delay", qd(0, 3, 4), autoscale.QueueState{Normal: 5, OldestWait: 5 * time.Second, Workers: 1, Busy: 1}, 2},
		{"qd waits for starting worker", qd(0, 3, 4), autoscale.QueueState{Normal: 5, OldestWait: time.Minute, Workers: 2, Busy: 1, Initializing: 1}, 2},
		{"qd capped", qd(0, 2, 4), autoscale.QueueState{Normal: 5, OldestWait: time.Minute, Workers: 2, Busy: 2}, 2},
		{"qd empty queue keeps busy", qd(0, 3, 4), autoscale.QueueState{Workers: 3, Busy: 1}, 1},
		{"qd empty queue keeps min", qd(2, 3, 4), autoscale.QueueState{Workers: 3}, 2},
		{"qd low priority alone", qd(0, 3, 4), autoscale.QueueState{}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, autoscale.Wanted(tc.ep, tc.q))
		})
	}
}

// 0 → N → 0: a burst starts workers up to workersMax, every job completes, idle workers stop after
// idleTimeout, and the next job starts one again.
func TestScaleZeroToNToZero(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	e.endpoint("ep", func(ep *spool.Endpoint) {
		ep.WorkersMin, ep.WorkersMax, ep.IdleTimeout = 0, 3, 5
		ep.ScalerType, ep.ScalerValue = spool.ScalerRequestCount, 1
	})
	gate, release := e.file("gate")
	var ids []string
	for range 3 {
		ids = append(ids, e.submit("ep", `{"waitFile":`+jsonStr(gate)+`}`, false))
	}
	for i, id := range ids {
		e.requireWait(id, i+1, fleet.WaitNoWorkersYet)
	}
	e.tick()
	// The workers are real processes: on a loaded machine one may already have polled (idle) or
	// taken a job (running) by the time this looks.
	started := 0
	for st, n := range e.states("ep") {
		require.Contains(t, []spool.WorkerState{spool.WorkerInitializing, spool.WorkerIdle, spool.WorkerRunning}, st)
		started += n
	}
	require.Equal(t, 3, started, "workersMax workers started")
	// Check the wait reason of a job still queued.
	for _, id := range ids {
		if e.job(id).State == spool.StateInQueue {
			_, r := e.wait(id)
			require.Contains(t, []string{string(fleet.WaitInitializing), ""}, r, "wait reason of %s", id)
		}
	}
	e.until("three jobs run", func() bool {
		return e.states("ep")[spool.WorkerRunning] == 3
	})
	require.Equal(t, fleet.Counts{Running: 3}, e.counts("ep"))

	extra := e.submit("ep", `{"echo":"four"}`, false)
	e.tick()
	e.requireWait(extra, 1, fleet.WaitMaxWorkers)
	require.Len(t, e.workers("ep"), 3, "never more than workersMax")

	release()
	for _, id := range append(ids, extra) {
		e.until("job "+id+" completes", e.state(id, spool.StateCompleted))
	}
	e.until("all idle", func() bool { return e.states("ep")[spool.WorkerIdle] == 3 })
	e.advance(4 * time.Second)
	require.Len(t, e.workers("ep"), 3, "idle for less than idleTimeout")
	e.advance(time.Second)
	require.Empty(t, e.workers("ep"), "scaled to zero")
	require.Equal(t, fleet.Counts{}, e.counts("ep"))

	next := e.submit("ep", `{"echo":"again"}`, false)
	e.tick()
	require.Len(t, e.workers("ep"), 1)
	e.until("the next job completes", e.state(next, spool.StateCompleted))
	e.tick() // see the worker idle

	cs := e.fleet.ColdStarts()["ep"]
	require.Equal(t, 4, cs.Count, "cold starts are measured")

	var list struct {
		Workers []struct {
			ID, State string
			UptimeMs  int64
		}
		ColdStarts map[string]struct{ Count int } `json:"coldStarts"`
	}
	e.get("/api/workers?endpoint=ep", &list)
	require.Len(t, list.Workers, 1)
	require.Equal(t, string(spool.WorkerIdle), list.Workers[0].State)
	require.Equal(t, 4, list.ColdStarts["ep"].Count)
}

// A worker holding a job is never stopped by scale-in, however long the job runs past
// idleTimeout.
func TestNoScaleInOfBusyWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	e.endpoint("ep", func(ep *spool.Endpoint) { ep.IdleTimeout = 1 })
	gate, release := e.file("gate")
	id := e.submit("ep", `{"waitFile":`+jsonStr(gate)+`}`, false)
	e.until("the job runs", e.state(id, spool.StateInProgress))
	worker := e.job(id).WorkerID
	for range 10 {
		e.advance(10 * time.Second)
		ws := e.workers("ep")
		require.Len(t, ws, 1)
		require.Equal(t, worker, ws[0].ID)
		require.Equal(t, spool.WorkerRunning, ws[0].State)
	}
	release()
	e.until("the job completes", e.state(id, spool.StateCompleted))
	e.advance(time.Second)
	require.Empty(t, e.workers("ep"))
}

// Low-priority jobs alone never start a worker; with a worker up they run on it; normal jobs go
// first.
func TestLowPriority(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	e.endpoint("ep", func(ep *spool.Endpoint) { ep.WorkersMax, ep.ScalerValue = 1, 1 })
	low := e.submit("ep", `{"echo":"low"}`, true)
	for range 5 {
		e.advance(10 * time.Second)
		require.Empty(t, e.workers("ep"))
	}
	e.requireWait(low, 1, fleet.WaitLowPriorityIdle)

	// Settings change without a restart: an always-on worker runs it.
	e.endpoint("ep", func(ep *spool.Endpoint) { ep.WorkersMin, ep.WorkersMax, ep.ScalerValue = 1, 1, 1 })
	e.until("the low-priority job ran", e.state(low, spool.StateCompleted))

	gateA, releaseA := e.file("a")
	gateN, releaseN := e.file("n")
	a := e.submit("ep", `{"waitFile":`+jsonStr(gateA)+`}`, false)
	e.until("A runs", e.state(a, spool.StateInProgress))
	low2 := e.submit("ep", `{"echo":"low2"}`, true)
	n := e.submit("ep", `{"waitFile":`+jsonStr(gateN)+`}`, false)
	e.tick()
	e.requireWait(n, 1, fleet.WaitMaxWorkers)
	e.requireWait(low2, 2, fleet.WaitLowPriorityIdle)
	releaseA()
	e.until("the normal job goes first", e.state(n, spool.StateInProgress))
	require.Equal(t, spool.StateInQueue, e.job(low2).State)
	e.requireWait(low2, 1, fleet.WaitLowPriorityIdle)
	releaseN()
	e.until("then the low-priority one", e.state(low2, spool.StateCompleted))
	require.Len(t, e.workers("ep"), 1)
}

// A crash-looping worker: restarts back off, the endpoint shows unhealthy, its job is requeued
// at once after each crash and fails with an explaining error after the retry limit.
func TestCrashLoop(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{engine: func(c *engine.Config) { c.MaxRetries = 2 }})
	e.endpoint("ep", nil)
	id := e.submit("ep", `{"crash":3}`, false)

	e.until("first crash requeues", func() bool { return e.job(id).Retries == 1 })
	require.Equal(t, spool.StateInQueue, e.job(id).State)
	ws := e.workers("ep")
	require.Len(t, ws, 1)
	require.Equal(t, spool.WorkerUnhealthy, ws[0].State)
	require.Contains(t, ws[0].Error, "restart in 1s")
	require.Contains(t, strings.Join(ws[0].LogTail, "\n"), "crashing as asked")
	// Listed as the worker that crashed, with its real sightings and since when it is unhealthy.
	require.Regexp(t, `^ep-[0-9a-f]{12}$`, ws[0].ID)
	require.Contains(t, ws[0].Error, "worker "+ws[0].ID+" exited unexpectedly")
	require.False(t, ws[0].FirstSeen.IsZero(), "it asked for a job before crashing")
	require.False(t, ws[0].Since.Before(ws[0].LastSeen))
	require.Equal(t, e.fake.Now(), ws[0].Since)
	e.requireWait(id, 1, fleet.WaitUnhealthy)
	require.Equal(t, 1, e.counts("ep").Unhealthy)

	e.advance(999 * time.Millisecond)
	require.Equal(t, spool.WorkerUnhealthy, e.workers("ep")[0].State, "backing off")
	e.fake.Advance(time.Millisecond)
	e.until("second crash requeues", func() bool { return e.job(id).Retries == 2 })
	require.Contains(t, e.workers("ep")[0].Error, "restart in 2s")

	e.advance(time.Second)
	require.Equal(t, spool.WorkerUnhealthy, e.workers("ep")[0].State, "the backoff doubled")
	e.fake.Advance(time.Second)
	e.until("the job fails", e.state(id, spool.StateFailed))
	j := e.job(id)
	require.Contains(t, j.Error, "exited unexpectedly (exit status 3)")
	require.Contains(t, j.Error, "2 automatic retries")
	e.tick()
	require.Empty(t, e.workers("ep"), "with nothing left to do, the crashing worker is not restarted")
}

// A worker that crashes before it asks for a job (a shell script): unhealthy, with its output in
// the log tail, restarted with a growing delay.
func TestShellWorkerCrashes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	script := filepath.Join(t.TempDir(), "crash.sh")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\necho \"boom: model not found\" >&2\nexit 7\n"), 0o700))
	e.endpoint("ep", func(ep *spool.Endpoint) {
		ep.WorkersMin = 1
		ep.Worker = &spool.WorkerSpec{Command: "/bin/sh", Args: []string{script}, Dir: e.dir}
	})
	for i, delay := range []string{"1s", "2s", "4s"} {
		e.until("crash "+delay, func() bool {
			ws := e.workers("ep")
			return len(ws) == 1 && strings.Contains(ws[0].Error, "restart in "+delay)
		})
		ws := e.workers("ep")
		require.Equal(t, spool.WorkerUnhealthy, ws[0].State)
		require.Contains(t, ws[0].Error, "exit status 7")
		require.Contains(t, ws[0].LogTail, "boom: model not found")
		if i == 0 {
			id := e.submit("ep", `{"echo":1}`, false)
			e.requireWait(id, 1, fleet.WaitUnhealthy)
		}
		d, err := time.ParseDuration(delay)
		require.NoError(t, err)
		e.fake.Advance(d)
	}
}

// Cancel of a running job on a worker that ignores job-stop: the process is killed once the
// grace runs out, and a new one starts.
func TestCancelIgnoredKillsWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{scaler: func(c *autoscale.Config) { c.CancelGrace = 10 * time.Second }})
	e.endpoint("ep", func(ep *spool.Endpoint) { ep.WorkersMin, ep.WorkersMax = 1, 1 })
	never := filepath.Join(t.TempDir(), "never")
	id := e.submit("ep", `{"ignoreStop":`+jsonStr(never)+`}`, false)
	e.until("the job runs", e.state(id, spool.StateInProgress))
	old := e.job(id).WorkerID
	_, err := e.eng.Cancel(e.ctx, "ep", id)
	require.NoError(t, err)
	e.advance(9 * time.Second)
	ws := e.workers("ep")
	require.Len(t, ws, 1)
	require.Equal(t, old, ws[0].ID, "within the grace")
	e.advance(time.Second)
	ws = e.workers("ep")
	require.Len(t, ws, 1)
	require.NotEqual(t, old, ws[0].ID, "killed and replaced")
	next := e.submit("ep", `{"echo":"after"}`, false)
	e.until("the replacement works", e.state(next, spool.StateCompleted))
	require.NotEqual(t, old, e.job(next).WorkerID)
	require.Equal(t, spool.StateCancelled, e.job(id).State)
}

// GPU pool of 4 fake ids, gpuCount 2, workersMax 3: two workers with disjoint devices, the third
// throttled.
func TestGPUPool(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{scaler: func(c *autoscale.Config) { c.GPUs = []string{"g0", "g1", "g2", "g3"} }})
	e.endpoint("ep", func(ep *spool.Endpoint) {
		ep.GPUCount, ep.WorkersMax = 2, 3
		ep.ScalerType, ep.ScalerValue = spool.ScalerRequestCount, 1
	})
	gate, release := e.file("gate")
	var ids []string
	for range 3 {
		ids = append(ids, e.submit("ep", `{"waitFile":`+jsonStr(gate)+`,"env":"CUDA_VISIBLE_DEVICES"}`, false))
	}
	e.until("two run", func() bool { return e.states("ep")[spool.WorkerRunning] == 2 })
	require.Equal(t, map[spool.WorkerState]int{spool.WorkerRunning: 2, spool.WorkerThrottled: 1}, e.states("ep"))
	used := map[string]bool{}
	for _, w := range e.workers("ep") {
		if w.State == spool.WorkerRunning {
			require.Len(t, w.GPUs, 2)
			for _, g := range w.GPUs {
				require.False(t, used[g], "GPU %s given twice", g)
				used[g] = true
			}
		}
	}
	var queued string
	for _, id := range ids {
		if e.job(id).State == spool.StateInQueue {
			queued = id
		}
	}
	require.NotEmpty(t, queued)
	e.requireWait(queued, 1, fleet.WaitGPUsUnavailable)
	require.Equal(t, 1, e.counts("ep").Throttled)

	release()
	outs := map[string]bool{}
	for _, id := range ids {
		e.until("job completes", e.state(id, spool.StateCompleted))
		require.LessOrEqual(t, len(e.workers("ep")), 3)
		st := e.states("ep")
		require.LessOrEqual(t, st[spool.WorkerRunning]+st[spool.WorkerIdle]+st[spool.WorkerInitializing], 2,
			"never more than 2 workers: %v %+v", st, e.workers("ep"))
		var out string
		require.NoError(t, jsonUnmarshal(e.job(id).Output, &out))
		outs[out] = true
	}
	for out := range outs {
		require.Contains(t, []string{"g0,g1", "g2,g3"}, out)
	}
}

// TestStopDrainsRunningJobs: stopping the autoscaler (the server shutting down) sends SIGTERM and
// lets a worker finish its running job and post the result within the stop grace, instead of
// killing it (the job would be lost until its worker was declared lost, and run twice).
func TestStopDrainsRunningJobs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	e.endpoint("ep", nil)
	gate, release := e.file("gate")
	started, _ := e.file("started")
	id := e.submit("ep", `{"waitFile":`+jsonStr(gate)+`,"startedFile":`+jsonStr(started)+`}`, false)
	// The handler runs the job: its take answer has arrived (IN_PROGRESS alone is not enough: the
	// worker may be stopped before the answer reaches it, and then leaves at once).
	e.until("the job runs", func() bool { _, err := os.Stat(started); return err == nil })

	stopped := make(chan struct{})
	go func() { e.as.Stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("Stop returned while its worker was still finishing a job")
	case <-time.After(200 * time.Millisecond): // a bound on how soon a wrong Stop would return, not a wait for work
	}
	release()
	<-stopped
	got := e.job(id)
	require.Equal(t, spool.StateCompleted, got.State, "the job's result was posted before the worker exited")
	require.JSONEq(t, `"released"`, string(got.Output))
}

// Each scaling decision is one info line that says why: the scaler's inputs and the bound that
// applied, so that an operator reading the log can follow the autoscaler.
func TestScalingDecisionsAreLogged(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	e := newEnv(t, envOpts{scaler: func(c *autoscale.Config) { c.Logger = log }})
	e.endpoint("ep", func(ep *spool.Endpoint) {
		ep.ScalerType, ep.ScalerValue, ep.WorkersMax, ep.IdleTimeout = spool.ScalerRequestCount, 1, 2, 1
	})
	var ids []string
	for range 3 {
		ids = append(ids, e.submit("ep", `{}`, false))
	}
	e.tick()
	lines := func(msg string) []string {
		var out []string
		for _, l := range strings.Split(buf.String(), "\n") {
			if strings.Contains(l, `msg="`+msg+`"`) {
				out = append(out, l)
			}
		}
		return out
	}
	up := lines("autoscaler scaling")
	require.Len(t, up, 1, buf.String())
	require.Contains(t, up[0], `endpoint=ep from=0 to=2 wanted=2 why="REQUEST_COUNT: 3 queued + 0 running at 1 per worker; capped at workersMax 2"`)
	require.Len(t, lines("worker started"), 2)

	for _, id := range ids {
		e.until("the jobs complete", e.state(id, spool.StateCompleted))
	}
	e.advance(time.Second)
	e.tick()
	down := lines("autoscaler scaling")
	require.Len(t, down, 2, buf.String())
	require.Contains(t, down[1], `from=2 to=0 wanted=0 why="REQUEST_COUNT: 0 queued + 0 running at 1 per worker; idle workers go after idleTimeout 1s"`)
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
