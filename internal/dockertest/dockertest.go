// Package dockertest gives tests a Docker daemon and images to run on it, without a registry:
// the daemon is the one SPOOL_TEST_DOCKER_HOST names (.ci/run starts one of its own), and images
// are static Go binaries copied into FROM scratch images, built through the daemon's API.
package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/client"
)

// Host returns the daemon of the tests, or skips the test saying how to provide one.
func Host(t testing.TB) string {
	t.Helper()
	h := os.Getenv("SPOOL_TEST_DOCKER_HOST")
	if h == "" {
		t.Skip("SPOOL_TEST_DOCKER_HOST is not set: start a Docker daemon (Debian's docker.io: dockerd --bridge=none --iptables=false " +
			"--ip-masq=false --storage-driver=vfs --data-root DIR --exec-root DIR -H unix:///tmp/spool-docker.sock) and set it to " +
			"unix:///tmp/spool-docker.sock, as .ci/run does")
	}
	return h
}

// Client returns a client of the tests' daemon, closed when the test ends.
func Client(t testing.TB) *client.Client {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.WithHost(Host(t)), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

var (
	mu     sync.Mutex
	builds = map[string]*built{}
)

type built struct {
	once sync.Once
	err  error
}

// Image builds the Go package pkg (a path relative to the test's directory, or an import path)
// as a static binary and makes the image tag of it, FROM scratch, with the binary as /worker and
// its entrypoint; once per tag and test process.
func Image(t testing.TB, pkg, tag string) string {
	t.Helper()
	cli := Client(t)
	mu.Lock()
	b := builds[tag]
	if b == nil {
		b = &built{}
		builds[tag] = b
	}
	mu.Unlock()
	b.once.Do(func() { b.err = buildImage(cli, pkg, tag) })
	if b.err != nil {
		t.Fatal(b.err)
	}
	return tag
}

func buildImage(cli *client.Client, pkg, tag string) error {
	dir, err := os.MkdirTemp("", "spool-dockertest-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "worker")
	gobuild := exec.Command("go", "build", "-trimpath", "-o", bin, pkg)
	gobuild.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := gobuild.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w: %s", pkg, err, out)
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	ctxTar, err := Context(map[string][]byte{
		"Dockerfile": []byte("FROM scratch\nCOPY worker /worker\nENTRYPOINT [\"/worker\"]\n"),
		"worker":     binary,
	})
	if err != nil {
		return err
	}
	return Build(cli, ctxTar, tag)
}

// Context makes a build context of files (name → content; a name ending in a "/" is an empty
// folder, and executables are recognised by their ELF header).
func Context(files map[string][]byte) (io.Reader, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for name, body := range files {
		h := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(body))}
		switch {
		case name[len(name)-1] == '/':
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		case bytes.HasPrefix(body, []byte("\x7fELF")):
			h.Mode = 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return &b, nil
}

// Build builds the image tag from a build context and reads the build's messages to its end.
func Build(cli *client.Client, buildContext io.Reader, tag string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := cli.ImageBuild(ctx, buildContext, build.ImageBuildOptions{Tags: []string{tag}, Remove: true, ForceRemove: true})
	if err != nil {
		return fmt.Errorf("docker build %s: %w", tag, err)
	}
	defer res.Body.Close()
	dec := json.NewDecoder(res.Body)
	for {
		var m struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("docker build %s: %w", tag, err)
		}
		if m.Error != "" {
			return fmt.Errorf("docker build %s: %s", tag, m.Error)
		}
	}
}
