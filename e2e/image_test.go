package e2e_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool/internal/dockertest"
)

// TestSpoolImage builds the Spool image from the repository's Dockerfile (with the context
// scripts/docker-image prepares), runs it, and checks that it answers /healthz, becomes healthy
// by its own HEALTHCHECK, runs as a non-root user, and serves a /runsync through a worker.
func TestSpoolImage(t *testing.T) {
	t.Parallel()
	cli := dockertest.Client(t)
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	dockerfile, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	require.NoError(t, err)
	bin := filepath.Join(t.TempDir(), "spool")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/spool")
	build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	binary, err := os.ReadFile(bin)
	require.NoError(t, err)
	certs, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	require.NoError(t, err, "the CA certificates the image carries")
	buildContext, err := dockertest.Context(map[string][]byte{
		"Dockerfile":                       dockerfile,
		"build/docker/spool":               binary,
		"build/docker/ca-certificates.crt": certs,
		"build/docker/data/":               nil,
	})
	require.NoError(t, err)
	const tag = "spool-test/spool:latest"
	require.NoError(t, dockertest.Build(cli, buildContext, tag))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	addr := "127.0.0.1:" + strconv.Itoa(port)
	keys := newTestKeys()
	ctx := context.Background()
	created, err := cli.ContainerCreate(ctx, &container.Config{Image: tag, Env: []string{"SPOOL_ADDR=" + addr, "SPOOL_ADMIN_KEY=" + keys.Admin}},
		&container.HostConfig{NetworkMode: "host"}, nil, nil, "")
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = cli.ContainerRemove(ctx, created.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	})
	require.NoError(t, cli.ContainerStart(ctx, created.ID, container.StartOptions{}))

	s := &server{t: t, URL: "http://" + addr, Keys: keys, client: newHTTPClient()}
	t.Cleanup(s.client.CloseIdleConnections)
	deadline := time.Now().Add(90 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		info, err := cli.ContainerInspect(ctx, created.ID)
		require.NoError(t, err)
		require.True(t, info.State.Running, "the container stopped: %+v", info.State)
		if info.State.Health != nil && info.State.Health.Status == "healthy" {
			require.Equal(t, "65532:65532", info.Config.User, "not root")
			break
		}
		require.True(t, time.Now().Before(deadline), "never healthy: %+v", info.State.Health)
		<-tick.C
	}
	r := s.do(t, "GET", "/healthz", nil, nil)
	require.Equal(t, 200, r.Code, "%s", r)

	// An endpoint, and a worker on the host (the image has no worker of its own) that serves it.
	admin := adminHeader(s)
	r = s.do(t, "POST", "/api/endpoints", admin, []byte(`{"name":"words"}`))
	require.Equal(t, 201, r.Code, "%s", r)
	worker := buildExample(t, "./examples/worker")
	base := s.URL + "/v2/words"
	wctx, stopWorker := context.WithCancel(ctx)
	w := exec.CommandContext(wctx, worker)
	w.Env = []string{"RUNPOD_WEBHOOK_GET_JOB=" + base + "/job-take/$ID?", "RUNPOD_WEBHOOK_POST_OUTPUT=" + base + "/job-done/$RUNPOD_POD_ID/$ID?",
		"RUNPOD_WEBHOOK_POST_STREAM=" + base + "/job-stream/$RUNPOD_POD_ID/$ID?", "RUNPOD_WEBHOOK_PING=" + base + "/ping/$RUNPOD_POD_ID?",
		"RUNPOD_PING_INTERVAL=10000", "RUNPOD_POD_ID=host-worker", "RUNPOD_AI_API_KEY=" + keys.Admin}
	require.NoError(t, w.Start())
	t.Cleanup(func() { stopWorker(); _ = w.Wait() })
	r = s.do(t, "POST", "/v2/words/runsync?wait=60000", admin, []byte(`{"input":{"text":"from the spool image"}}`))
	require.Equal(t, 200, r.Code, "%s", r)
	require.True(t, strings.Contains(string(r.Body), `"status":"COMPLETED"`), "%s", r)
	require.Contains(t, string(r.Body), `"output":["from","the","spool","image"]`)
}
