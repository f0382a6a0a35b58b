package autoscale_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/autoscale"
	"github.com/spool-run/spool/internal/fleet"
	"github.com/spool-run/spool/internal/spooltest"
)

// stopPod: true in a result restarts that worker after the job: the old process gets SIGTERM
// (a graceful stop, not a kill) and exits cleanly, a new worker with a new id starts, and the
// next job runs on it.
func TestStopPodRestartsWorker(t *testing.T) {
	t.Parallel()
	rec, wrap := newRecProvider(false)
	e := newEnv(t, envOpts{provider: wrap})
	e.endpoint("ep", func(ep *spool.Endpoint) { ep.WorkersMin, ep.WorkersMax = 1, 1 })
	id := e.submit("ep", `{"refresh":true}`, false)
	e.until("the job completes", e.state(id, spool.StateCompleted))
	old := e.job(id).WorkerID
	require.NotEmpty(t, old)

	e.until("the worker is replaced", func() bool {
		ws := e.workers("ep")
		return len(ws) == 1 && ws[0].ID != old
	})
	stopped, killed := rec.wasStopped(old)
	require.True(t, stopped, "the old worker was sent SIGTERM")
	require.False(t, killed, "and not killed")
	x := rec.exit(t, old)
	require.NoError(t, x.Err, "the old worker drained on SIGTERM and exited with status 0")
	require.Equal(t, 2, rec.starts(), "one new process")

	next := e.submit("ep", `{"echo":"after"}`, false)
	e.until("the next job completes", e.state(next, spool.StateCompleted))
	ws := e.workers("ep")
	require.Len(t, ws, 1)
	require.NotEqual(t, old, ws[0].ID)
	require.Equal(t, ws[0].ID, e.job(next).WorkerID, "the next job ran on the new worker")
}

// A worker that never asks for a job within the init timeout is unhealthy: it is killed, the
// endpoint's jobs wait with workers_unhealthy, and it is restarted with exponential backoff.
// (A worker that never asked for a job holds none; LoseWorkerJobs requeueing at once is covered
// by TestCrashLoop.)
func TestInitTimeout(t *testing.T) {
	t.Parallel()
	rec, wrap := newRecProvider(false)
	e := newEnv(t, envOpts{provider: wrap, scaler: func(c *autoscale.Config) { c.InitTimeout = 30 * time.Second }})
	script := filepath.Join(t.TempDir(), "hang.sh")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\necho loading forever\nwhile :; do sleep 1; done\n"), 0o700))
	e.endpoint("ep", func(ep *spool.Endpoint) {
		ep.WorkersMax = 1
		ep.Worker = &spool.WorkerSpec{Command: "/bin/sh", Args: []string{script}, Dir: e.dir}
	})
	job := e.submit("ep", `{"echo":1}`, false)
	e.tick()
	ws := e.workers("ep")
	require.Len(t, ws, 1)
	first := ws[0].ID
	require.Equal(t, spool.WorkerInitializing, ws[0].State)

	for i, delay := range []time.Duration{time.Second, 2 * time.Second} {
		e.advance(29 * time.Second)
		ws = e.workers("ep")
		require.Len(t, ws, 1)
		require.Equal(t, spool.WorkerInitializing, ws[0].State, "within the init timeout")
		cur := ws[0].ID
		e.advance(time.Second)
		ws = e.workers("ep")
		require.Len(t, ws, 1)
		require.Equal(t, spool.WorkerUnhealthy, ws[0].State)
		require.Contains(t, ws[0].Error, "did not ask for a job within its init timeout of 30s")
		require.Contains(t, ws[0].Error, "restart in "+delay.String())
		_, killed := rec.wasStopped(cur)
		require.True(t, killed, "the hung worker is killed")
		require.Error(t, rec.exit(t, cur).Err, "and exits")
		e.requireWait(job, 1, fleet.WaitUnhealthy)
		j := e.job(job)
		require.Equal(t, spool.StateInQueue, j.State)
		require.Zero(t, j.Retries, "a worker that never took the job costs it no retry")

		e.advance(delay - time.Millisecond)
		require.Equal(t, spool.WorkerUnhealthy, e.workers("ep")[0].State, "backing off (restart %d)", i+1)
		e.advance(time.Millisecond)
		ws = e.workers("ep")
		require.Len(t, ws, 1)
		require.Equal(t, spool.WorkerInitializing, ws[0].State, "restarted")
		require.NotEqual(t, cur, ws[0].ID)
		require.NotEqual(t, first, ws[0].ID)
	}
	require.Equal(t, 3, rec.starts())
}

// GPUs go back to the pool only once the worker process has exited: a replacement waits
// (throttled) while the old process still runs, and never shares its device.
func TestGPUsFreedOnlyAtExit(t *testing.T) {
	t.Parallel()
	rec, wrap := newRecProvider(true)
	e := newEnv(t, envOpts{provider: wrap, scaler: func(c *autoscale.Config) { c.GPUs = []string{"g0"} }})
	e.endpoint("ep", func(ep *spool.Endpoint) { ep.WorkersMin, ep.WorkersMax, ep.GPUCount = 1, 1, 1 })
	id := e.submit("ep", `{"refresh":true}`, false)
	e.until("the job completes", e.state(id, spool.StateCompleted))
	old := e.job(id).WorkerID
	e.until("the worker is let go", func() bool {
		s, _ := rec.wasStopped(old)
		return s
	})
	ws := e.workers("ep")
	require.Len(t, ws, 1)
	require.Equal(t, spool.WorkerThrottled, ws[0].State, "the old process still holds g0")
	require.Equal(t, 1, rec.starts())
	throttledAs := ws[0].ID
	require.Regexp(t, `^ep-[0-9a-f]{12}$`, throttledAs, "listed as the worker it will start as")
	require.NotEqual(t, old, throttledAs)
	require.Equal(t, e.fake.Now(), ws[0].Since)
	require.True(t, ws[0].FirstSeen.IsZero(), "never seen")

	x := rec.exit(t, old) // the process has really exited; its exit is not yet seen
	e.tick()
	require.Equal(t, spool.WorkerThrottled, e.workers("ep")[0].State, "not before the exit is seen")
	require.Equal(t, 1, rec.starts())
	x.deliver()
	e.tick()
	ws = e.workers("ep")
	require.Len(t, ws, 1)
	require.Equal(t, spool.WorkerInitializing, ws[0].State)
	require.Equal(t, []string{"g0"}, ws[0].GPUs)
	require.Equal(t, 2, rec.starts())
	require.Equal(t, throttledAs, ws[0].ID, "it starts under the id it was listed with")

	next := e.submit("ep", `{"env":"CUDA_VISIBLE_DEVICES"}`, false)
	e.until("the next job completes", e.state(next, spool.StateCompleted))
	require.JSONEq(t, `"g0"`, string(e.job(next).Output))
}

// A worker process gets the RunPod environment with its own id, the spec's env, a folder of its
// own in the spec's dir, its GPUs, and none of the server's SPOOL_* variables.
func TestWorkerEnvironment(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{scaler: func(c *autoscale.Config) { c.GPUs = []string{"g0", "g1", "g2"} }})
	dir := t.TempDir()
	script := filepath.Join(t.TempDir(), "env.sh")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\n{ env; echo \"PWD=$(pwd -P)\"; } > env.tmp && mv env.tmp env.out\nwhile :; do sleep 1; done\n"), 0o700))
	e.endpoint("ep", func(ep *spool.Endpoint) {
		ep.WorkersMin, ep.WorkersMax, ep.GPUCount = 1, 1, 2
		ep.Worker = &spool.WorkerSpec{Command: "/bin/sh", Args: []string{script}, Dir: dir,
			Env: map[string]string{"MODEL": "tiny", "RUNPOD_POD_ID": "spoofed"}}
	})
	e.tick()
	ws := e.workers("ep")
	require.Len(t, ws, 1)
	wid := ws[0].ID

	out := filepath.Join(dir, ".spool-workers", wid, "env.out") // its own folder inside dir
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(out); err == nil {
			break
		}
		require.True(t, time.Now().Before(deadline), "the worker did not write its environment")
		<-time.After(10 * time.Millisecond)
	}
	f, err := os.Open(out)
	require.NoError(t, err)
	defer f.Close()
	got := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			got[k] = v
		}
	}
	require.NoError(t, sc.Err())
	base := e.srv.URL + "/v2/ep"
	wantDir, err := filepath.EvalSymlinks(dir)
	require.NoError(t, err)
	for k, v := range map[string]string{
		"RUNPOD_WEBHOOK_GET_JOB":     base + "/job-take/$ID?",
		"RUNPOD_WEBHOOK_POST_OUTPUT": base + "/job-done/$RUNPOD_POD_ID/$ID?",
		"RUNPOD_WEBHOOK_POST_STREAM": base + "/job-stream/$RUNPOD_POD_ID/$ID?",
		"RUNPOD_WEBHOOK_PING":        base + "/ping/$RUNPOD_POD_ID?",
		"RUNPOD_PING_INTERVAL":       "1000",
		"RUNPOD_POD_ID":              wid,
		"RUNPOD_ENDPOINT_ID":         "ep",
		"MODEL":                      "tiny",
		"CUDA_VISIBLE_DEVICES":       "g0,g1",
		"NVIDIA_VISIBLE_DEVICES":     "g0,g1",
		"PWD":                        filepath.Join(wantDir, ".spool-workers", wid),
	} {
		require.Equal(t, v, got[k], k)
	}
	require.NotEmpty(t, got["RUNPOD_AI_API_KEY"])
	require.NotEmpty(t, got["PATH"], "the server's other variables are inherited")
	for k := range got {
		require.False(t, strings.HasPrefix(k, "SPOOL_"), "server variable %s leaked", k)
	}
}

// TestOnlyTheLeaderRunsWorkers: on a replica that does not lead, the loop starts no worker
// however much work waits; once it leads, its next tick does.
func TestOnlyTheLeaderRunsWorkers(t *testing.T) {
	t.Parallel()
	lead := spooltest.NewLeader()
	rec, wrap := newRecProvider(false)
	e := newEnv(t, envOpts{provider: wrap, scaler: func(c *autoscale.Config) { c.Leader = lead }})
	e.endpoint("ep", nil)
	e.submit("ep", `{"echo":1}`, false)
	require.NoError(t, e.as.Start(e.ctx))
	<-lead.Asked
	spooltest.WaitTimers(t, e.fake, 2) // the engine's sweeper and the loop's wait
	require.Zero(t, rec.starts(), "not the leader: no worker started")
	lead.On.Store(true)
	e.fake.Advance(time.Second)
	<-lead.Asked
	spooltest.WaitTimers(t, e.fake, 2)
	require.Equal(t, 1, rec.starts())
}

// Container workers reach the server at ContainerURL when it is set (containers on a network of
// their own); process workers keep the server's own address. Each worker learns its GPU count.
func TestContainerURL(t *testing.T) {
	t.Parallel()
	rec, wrap := newRecProvider(false)
	e := newEnv(t, envOpts{provider: wrap, scaler: func(c *autoscale.Config) { c.ContainerURL = "http://host.docker.internal:8080/" }})
	e.endpoint("img", func(ep *spool.Endpoint) {
		ep.WorkersMin, ep.WorkersMax = 1, 1
		ep.Worker = &spool.WorkerSpec{Image: "ghcr.io/me/w:1"} // no daemon here: its start fails, after the env is made
	})
	e.endpoint("proc", func(ep *spool.Endpoint) { ep.WorkersMin, ep.WorkersMax = 1, 1 })
	e.tick()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	envs := map[string]map[string]string{}
	for _, w := range rec.started {
		envs[w.Endpoint] = w.Env
	}
	require.Equal(t, "http://host.docker.internal:8080/v2/img/job-take/$ID?", envs["img"]["RUNPOD_WEBHOOK_GET_JOB"])
	require.Equal(t, e.srv.URL+"/v2/proc/job-take/$ID?", envs["proc"]["RUNPOD_WEBHOOK_GET_JOB"])
	require.Equal(t, "0", envs["proc"]["RUNPOD_GPU_COUNT"])
}
