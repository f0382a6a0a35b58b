package e2e_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool/internal/dockertest"
)

// TestContainerWorkers: an endpoint whose worker is an image scales 0 → 2 → 0 with real
// containers of it (examples/worker, built FROM scratch), which take the jobs and finish them; their
// output reaches /api/workers; and a server killed while its containers run removes them when it
// starts again (their keys died with it).
func TestContainerWorkers(t *testing.T) {
	t.Parallel()
	host := dockertest.Host(t)
	img := dockertest.Image(t, "../examples/worker", "spool-test/words:latest")
	cli := dockertest.Client(t)
	ep := uniqueEndpoint("words") // the daemon is shared: the label finds this test's containers
	s := startServer(t, serverOpts{Env: []string{"DOCKER_HOST=" + host}, Config: fmt.Sprintf(`
endpoints:
  - name: %s
    workersMax: 2
    idleTimeout: 1s
    scalerType: REQUEST_COUNT
    scalerValue: 1
    worker:
      image: %s
      pull: never
`, ep, img)})
	admin := adminHeader(s)
	containers := func() []container.Summary {
		cs, err := cli.ContainerList(context.Background(), container.ListOptions{All: true,
			Filters: filters.NewArgs(filters.Arg("label", "run.spool.endpoint="+ep))})
		require.NoError(t, err)
		return cs
	}
	t.Cleanup(func() { // a failure part way must not leave a container polling in the shared daemon
		for _, c := range containers() {
			_ = cli.ContainerRemove(context.Background(), c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
		}
	})
	until := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for !cond() {
			require.True(t, time.Now().Before(deadline), "timed out waiting until %s", what)
			<-tick.C
		}
	}
	type workerView struct {
		ID      string   `json:"id"`
		State   string   `json:"state"`
		LogTail []string `json:"logTail"`
	}
	workers := func() []workerView {
		r := s.do(t, "GET", "/api/workers?endpoint="+ep, admin, nil)
		require.Equal(t, 200, r.Code, "%s", r)
		var v struct{ Workers []workerView }
		require.NoError(t, json.Unmarshal(r.Body, &v))
		return v.Workers
	}

	var ids []string
	for i := range 2 {
		r := s.do(t, "POST", "/v2/"+ep+"/run", admin, fmt.Appendf(nil, `{"input":{"text":"job %d in a container","delayMs":400}}`, i))
		require.Equal(t, 200, r.Code, "%s", r)
		var j struct{ ID string }
		require.NoError(t, json.Unmarshal(r.Body, &j))
		ids = append(ids, j.ID)
	}
	until("two containers run", func() bool { return len(containers()) == 2 })
	until("their output reaches /api/workers", func() bool {
		ws := workers()
		return len(ws) == 2 && len(ws[0].LogTail) > 0 && len(ws[1].LogTail) > 0
	})
	seen := map[string]bool{}
	for i, id := range ids {
		r := s.do(t, "GET", "/v2/"+ep+"/status-sync/"+id+"?wait=60000", admin, nil)
		var j struct {
			Status   string
			Output   []string
			WorkerID string
		}
		require.NoError(t, json.Unmarshal(r.Body, &j), "%s", r)
		require.Equal(t, "COMPLETED", j.Status, "%s", r)
		require.Equal(t, []string{"job", fmt.Sprint(i), "in", "a", "container"}, j.Output)
		seen[j.WorkerID] = true
	}
	require.Len(t, seen, 2, "one job per container")
	until("scaled back to zero", func() bool { return len(workers()) == 0 && len(containers()) == 0 })

	// A server killed while a container runs: its next start removes the container.
	r := s.do(t, "POST", "/v2/"+ep+"/run", admin, []byte(`{"input":{"text":"a long one","delayMs":60000}}`))
	require.Equal(t, 200, r.Code, "%s", r)
	until("a container runs", func() bool { return len(containers()) == 1 })
	old := containers()[0].ID
	s.Kill()
	_, err := cli.ContainerInspect(context.Background(), old)
	require.NoError(t, err, "a killed server cannot remove its containers")
	s = s.Restart(t)
	_, err = cli.ContainerInspect(context.Background(), old)
	require.True(t, cerrdefs.IsNotFound(err), "removed by the restart: %v", err)
	// A graceful stop leaves no container behind either (the job, requeued, may have a new one).
	s.Stop()
	require.Empty(t, containers())
}

// TestContainerWorkerCrash: a container that exits non-zero while it holds a job is unhealthy with
// its exit status as the reason, restarts with backoff, and its job goes back to the queue at once.
func TestContainerWorkerCrash(t *testing.T) {
	t.Parallel()
	host := dockertest.Host(t)
	img := dockertest.Image(t, "../internal/autoscale/testdata/worker", "spool-test/autoscale-worker:latest")
	ep := uniqueEndpoint("crash")
	s := startServer(t, serverOpts{Env: []string{"DOCKER_HOST=" + host}, Config: fmt.Sprintf(`
endpoints:
  - name: %s
    workersMax: 1
    worker:
      image: %s
      pull: never
`, ep, img)})
	admin := adminHeader(s)
	r := s.do(t, "POST", "/v2/"+ep+"/run", admin, []byte(`{"input":{"crash":3}}`))
	require.Equal(t, 200, r.Code, "%s", r)
	var job struct{ ID string }
	require.NoError(t, json.Unmarshal(r.Body, &job))
	deadline := time.Now().Add(90 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		r := s.do(t, "GET", "/api/workers?endpoint="+ep, admin, nil)
		var v struct {
			Workers []struct{ State, Error string }
		}
		require.NoError(t, json.Unmarshal(r.Body, &v))
		if len(v.Workers) == 1 && v.Workers[0].State == "unhealthy" {
			// The first crash, or a later one on a loaded machine: the backoff says which.
			require.Regexp(t, `exited unexpectedly \(exit status 3\); restart in \d+s`, v.Workers[0].Error)
			break
		}
		require.True(t, time.Now().Before(deadline), "never unhealthy: %s", r)
		<-tick.C
	}
	// Its job went back to the queue at once (the crash is handled in one step: unhealthy, then
	// requeued; a read can fall between the two).
	for {
		r = s.do(t, "GET", "/v2/"+ep+"/status/"+job.ID, admin, nil)
		var st struct {
			Status  string
			Retries int
		}
		require.NoError(t, json.Unmarshal(r.Body, &st), "%s", r)
		if st.Retries >= 1 {
			// Queued or taken again, or FAILED once its automatic retries are used up.
			require.Contains(t, []string{"IN_QUEUE", "IN_PROGRESS", "FAILED"}, st.Status, "%s", r)
			break
		}
		require.True(t, time.Now().Before(deadline), "never requeued: %s", r)
		<-tick.C
	}
	r = s.do(t, "POST", "/v2/"+ep+"/cancel/"+job.ID, admin, nil)
	require.Equal(t, 200, r.Code, "%s", r)
	s.Stop()
}

// uniqueEndpoint names an endpoint no other test run on the shared daemon uses.
func uniqueEndpoint(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}
