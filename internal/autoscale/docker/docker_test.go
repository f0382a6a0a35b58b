package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/autoscale"
	"github.com/spool-run/spool/internal/dockertest"
)

func testHost(t *testing.T) string { return dockertest.Host(t) }

func testClient(t *testing.T) *client.Client { return dockertest.Client(t) }

// sleeperImage is testdata/sleeper as an image.
func sleeperImage(t *testing.T) string {
	return dockertest.Image(t, "./testdata/sleeper", "spool-test/sleeper:latest")
}

func randomInstance() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "test-" + hex.EncodeToString(b)
}

func newTestProvider(t *testing.T, instance string) *Provider {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := New(ctx, Config{Host: testHost(t), Instance: instance})
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p
}

type started struct {
	t     *testing.T
	p     *Provider
	id    string
	exits chan autoscale.Exit
}

func start(t *testing.T, p *Provider, id string, spec spool.WorkerSpec, gpus ...string) *started {
	t.Helper()
	s := &started{t: t, p: p, id: id, exits: make(chan autoscale.Exit, 1)}
	w := autoscale.WorkerSpec{Endpoint: "ep", WorkerID: id, Spec: spec, GPUs: gpus,
		Env: map[string]string{"RUNPOD_POD_ID": id, "RUNPOD_GPU_COUNT": "0"}}
	require.NoError(t, p.Start(context.Background(), w, func(x autoscale.Exit) { s.exits <- x }))
	return s
}

func (s *started) exit() autoscale.Exit {
	s.t.Helper()
	select {
	case x := <-s.exits:
		return x
	case <-time.After(90 * time.Second):
		s.t.Fatalf("worker %s did not exit", s.id)
		return autoscale.Exit{}
	}
}

// waitLog waits until the worker has written a line holding want (a real container must run).
func (s *started) waitLog(want string) {
	s.t.Helper()
	deadline := time.After(60 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if slices.ContainsFunc(s.p.Logs(s.id), func(l string) bool { return strings.Contains(l, want) }) {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			s.t.Fatalf("worker %s never wrote %q; logs %q", s.id, want, s.p.Logs(s.id))
		}
	}
}

// containersOf lists the containers of an instance.
func containersOf(t *testing.T, cli *client.Client, instance string) []container.Summary {
	t.Helper()
	cs, err := cli.ContainerList(context.Background(), container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", LabelInstance+"="+instance))})
	require.NoError(t, err)
	return cs
}

// TestContainerExitAndLogs: a worker is a container of the image with the RunPod environment;
// its output, stdout and stderr, is kept; a non-zero exit is its exit error; the container is
// removed afterwards.
func TestContainerExitAndLogs(t *testing.T) {
	t.Parallel()
	img := sleeperImage(t)
	instance := randomInstance()
	p := newTestProvider(t, instance)
	s := start(t, p, "ep-exit", spool.WorkerSpec{Image: img, Args: []string{"exit", "3"}, Env: map[string]string{"RUNPOD_POD_ID": "spoofed"}})
	x := s.exit()
	require.EqualError(t, x.Err, "exit status 3")
	require.Contains(t, x.Logs, `ready pod=ep-exit gpus=0 cuda="" wd=/`, "the autoscaler's environment wins over the spec's")
	require.Contains(t, x.Logs, "stderr is kept too")
	require.Empty(t, containersOf(t, testClient(t), instance), "removed once exited")
}

// TestStopGrace: Stop sends SIGTERM, and a worker that ignores it is killed after the grace.
func TestStopGrace(t *testing.T) {
	t.Parallel()
	img := sleeperImage(t)
	p := newTestProvider(t, randomInstance())
	polite := start(t, p, "ep-polite", spool.WorkerSpec{Image: img})
	stubborn := start(t, p, "ep-stubborn", spool.WorkerSpec{Image: img, Args: []string{"ignore-term"}})
	polite.waitLog("ready")
	stubborn.waitLog("ignoring SIGTERM")
	p.Stop("ep-polite", time.Minute)
	p.Stop("ep-stubborn", time.Second)
	x := polite.exit()
	require.NoError(t, x.Err, "%q", x.Logs)
	require.Contains(t, x.Logs, "got SIGTERM")
	x = stubborn.exit()
	require.EqualError(t, x.Err, "exit status 137", "killed after its grace")
}

// TestKillAndClose: Kill ends a worker at once; Close kills what is left and removes it.
func TestKillAndClose(t *testing.T) {
	t.Parallel()
	img := sleeperImage(t)
	instance := randomInstance()
	p := newTestProvider(t, instance)
	a := start(t, p, "ep-a", spool.WorkerSpec{Image: img, Args: []string{"ignore-term"}})
	b := start(t, p, "ep-b", spool.WorkerSpec{Image: img, Args: []string{"ignore-term"}})
	a.waitLog("ignoring SIGTERM")
	b.waitLog("ignoring SIGTERM")
	p.Kill("ep-a")
	require.EqualError(t, a.exit().Err, "exit status 137")
	p.Close()
	require.Error(t, b.exit().Err)
	require.Empty(t, containersOf(t, testClient(t), instance))
}

// TestLeftoversRemoved: a new provider removes the containers its instance left behind (their
// workers' keys died with the previous run), and no other instance's.
func TestLeftoversRemoved(t *testing.T) {
	t.Parallel()
	img := sleeperImage(t)
	cli := testClient(t)
	mine, other := randomInstance(), randomInstance()
	ctx := context.Background()
	for _, inst := range []string{mine, other} {
		cfg, host := containerConfig(Config{Instance: inst, Network: "host"}, autoscale.WorkerSpec{Endpoint: "ep", WorkerID: "old-" + inst,
			Spec: spool.WorkerSpec{Image: img}})
		_, err := cli.ContainerCreate(ctx, cfg, host, nil, nil, "")
		require.NoError(t, err)
	}
	t.Cleanup(func() { // the shared daemon keeps nothing of this test, whatever its outcome
		for _, inst := range []string{mine, other} {
			for _, c := range containersOf(t, cli, inst) {
				_ = cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
			}
		}
	})
	newTestProvider(t, mine)
	require.Empty(t, containersOf(t, cli, mine))
	require.Len(t, containersOf(t, cli, other), 1, "another server's container is not this one's business")
}

// TestGPUDeviceRequests: a worker's GPUs are NVIDIA device requests of its container (the daemon
// stores them as given; these machines have no GPU to start it with), and the host's device ids
// are not in its environment, where they would name devices the container does not have.
func TestGPUDeviceRequests(t *testing.T) {
	t.Parallel()
	img := sleeperImage(t)
	cli := testClient(t)
	w := autoscale.WorkerSpec{Endpoint: "llm", WorkerID: "llm-1", GPUs: []string{"2", "3"},
		Env:  map[string]string{"CUDA_VISIBLE_DEVICES": "2,3", "NVIDIA_VISIBLE_DEVICES": "2,3", "RUNPOD_GPU_COUNT": "2"},
		Spec: spool.WorkerSpec{Image: img, Mounts: []spool.Mount{{Source: t.TempDir(), Target: "/models", ReadOnly: true}}}}
	cfg, host := containerConfig(Config{Instance: randomInstance(), Network: "host"}, w)
	created, err := cli.ContainerCreate(context.Background(), cfg, host, nil, nil, "")
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = cli.ContainerRemove(context.Background(), created.ID, container.RemoveOptions{Force: true})
	})
	got, err := cli.ContainerInspect(context.Background(), created.ID)
	require.NoError(t, err)
	require.Equal(t, []container.DeviceRequest{{Driver: "nvidia", DeviceIDs: []string{"2", "3"}, Capabilities: [][]string{{"gpu"}}}},
		got.HostConfig.DeviceRequests)
	require.Equal(t, container.RestartPolicyDisabled, got.HostConfig.RestartPolicy.Name, "Spool decides restarts")
	require.Equal(t, "host", string(got.HostConfig.NetworkMode))
	require.Len(t, got.HostConfig.Mounts, 1)
	require.True(t, got.HostConfig.Mounts[0].ReadOnly)
	require.Contains(t, got.Config.Env, "RUNPOD_GPU_COUNT=2")
	for _, kv := range got.Config.Env {
		require.False(t, strings.HasPrefix(kv, "CUDA_VISIBLE_DEVICES=") || strings.HasPrefix(kv, "NVIDIA_VISIBLE_DEVICES="), kv)
	}
	require.Equal(t, "llm-1", got.Config.Labels[LabelWorker])
	require.Equal(t, "llm", got.Config.Labels[LabelEndpoint])
}

// TestPullPolicy: with pull never, an image that is not on the host fails the worker's start,
// saying why; a pull that the registry refuses does too (no registry is reachable here).
func TestPullPolicy(t *testing.T) {
	t.Parallel()
	p := newTestProvider(t, randomInstance())
	x := start(t, p, "ep-never", spool.WorkerSpec{Image: "spool-test/absent:1", Pull: spool.PullNever}).exit()
	require.ErrorContains(t, x.Err, "image spool-test/absent:1 is not on the host, and its pull policy is never")
	x = start(t, p, "ep-pull", spool.WorkerSpec{Image: "127.0.0.1:1/spool-test/absent:1"}).exit()
	require.ErrorContains(t, x.Err, "pull 127.0.0.1:1/spool-test/absent:1")
}

// TestPullProgress: a pull's progress messages make the worker's status, in percent of the
// layers' bytes; an error message ends the pull with it.
func TestPullProgress(t *testing.T) {
	t.Parallel()
	var statuses []string
	stream := func(lines ...string) io.Reader { return strings.NewReader(strings.Join(lines, "\n")) }
	err := readPull("img", stream(
		`{"status":"Pulling fs layer","id":"a"}`,
		`{"status":"Downloading","id":"a","progressDetail":{"current":10,"total":100}}`,
		`{"status":"Downloading","id":"b","progressDetail":{"current":0,"total":100}}`,
		`{"status":"Downloading","id":"b","progressDetail":{"current":76,"total":100}}`,
		`{"status":"Download complete","id":"a"}`,
	), func(s string) { statuses = append(statuses, s) })
	require.NoError(t, err)
	require.Equal(t, []string{"pulling image 10%", "pulling image 5%", "pulling image 43%", "pulling image 88%"}, statuses)
	err = readPull("img", stream(`{"error":"pull access denied for img, repository does not exist"}`), func(string) {})
	require.EqualError(t, err, "pull img: pull access denied for img, repository does not exist")
}
