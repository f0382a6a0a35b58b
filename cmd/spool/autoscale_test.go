package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
)

// The autoscaler's settings and an endpoint's worker spec are read from the config file.
func TestConfigAutoscaleKeys(t *testing.T) {
	t.Parallel()
	p := writeConfig(t, `workers:
  gpus: ["0", "1", "2", "3"]
  initTimeout: 90s
  stopGrace: 15s
  cancelGrace: 5s
endpoints:
  - name: llm
    workersMin: 0
    workersMax: 2
    idleTimeout: 30s
    scalerType: REQUEST_COUNT
    scalerValue: 2
    gpuCount: 2
    worker:
      command: python3
      args: [handler.py, --fast]
      env: {MODEL: tiny}
      dir: /srv/llm
`)
	c, err := loadConfig(p, envMap(nil))
	require.NoError(t, err)
	require.Equal(t, []string{"0", "1", "2", "3"}, c.Workers.GPUs)
	require.Equal(t, 90*time.Second, c.Workers.InitTimeout)
	require.Equal(t, 15*time.Second, c.Workers.StopGrace)
	require.Equal(t, 5*time.Second, c.Workers.CancelGrace)
	require.Len(t, c.Endpoints, 1)
	ep := c.Endpoints[0]
	require.Equal(t, 2, ep.WorkersMax)
	require.Equal(t, 30, ep.IdleTimeout)
	require.Equal(t, spool.ScalerRequestCount, ep.ScalerType)
	require.Equal(t, 2, ep.ScalerValue)
	require.Equal(t, 2, ep.GPUCount)
	require.Equal(t, &spool.WorkerSpec{Command: "python3", Args: []string{"handler.py", "--fast"},
		Env: map[string]string{"MODEL": "tiny"}, Dir: "/srv/llm"}, ep.Worker)

	// Omitted: zero, so that the autoscaler's defaults apply; no worker spec.
	c, err = loadConfig(writeConfig(t, "endpoints:\n  - name: a\n"), envMap(nil))
	require.NoError(t, err)
	require.Zero(t, c.Workers.InitTimeout)
	require.Empty(t, c.Workers.GPUs)
	require.Nil(t, c.Endpoints[0].Worker)
}

// `spool serve --check-config` rejects bad autoscaler values and names the field.
func TestCheckConfigRejectsBadAutoscaleValues(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct{ body, want string }{
		"negative initTimeout": {"workers:\n  initTimeout: -1s\n", "workers.initTimeout must not be negative"},
		"negative stopGrace":   {"workers:\n  stopGrace: -1s\n", "workers.stopGrace must not be negative"},
		"negative cancelGrace": {"workers:\n  cancelGrace: -5s\n", "workers.cancelGrace must not be negative"},
		"bad initTimeout":      {"workers:\n  initTimeout: later\n", `"workers.initTimeout" must be a duration such as 30s, 5m or 1h30m, not "later"`},
		"duplicate gpu":        {"workers:\n  gpus: [\"0\", \"0\"]\n", "workers.gpus[1]"},
		"empty gpu":            {"workers:\n  gpus: [\"\"]\n", "workers.gpus[0]"},
		"gpu with comma":       {"workers:\n  gpus: [\"0,1\"]\n", "workers.gpus[0]"},
		"worker no command":    {"endpoints:\n  - name: a\n    worker:\n      args: [x]\n", "worker.command or worker.image is required"},
		"misspelt worker key":  {"endpoints:\n  - name: a\n    worker:\n      command: x\n      argz: [y]\n", `unknown setting "argz" in "endpoints[0].worker" (did you mean "args"?)`},
		"negative gpuCount":    {"endpoints:\n  - name: a\n    gpuCount: -1\n", "gpuCount must be at least 0"},
		"bad scalerType":       {"endpoints:\n  - name: a\n    scalerType: CPU\n", "scalerType must be"},
		"min over max":         {"endpoints:\n  - name: a\n    workersMin: 4\n    workersMax: 2\n", "workersMin (4) must not exceed workersMax (2)"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := writeConfig(t, c.body)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, spoolBin, "serve", "--check-config", "--config", p).CombinedOutput()
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee, "%s", out)
			require.NotZero(t, ee.ExitCode())
			require.Contains(t, string(out), c.want)
		})
	}
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "w"), []byte("#!/bin/sh\n"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notexec"), []byte("#!/bin/sh\n"), 0o644))
	good := fmt.Sprintf("workers:\n  gpus: [\"0\", \"GPU-8a1b2c3d-0000-1111-2222-333344445555\"]\n  initTimeout: 1m\n"+
		"endpoints:\n  - name: a\n    gpuCount: 1\n    worker:\n      command: ./w\n      dir: %s\n  - name: b\n    worker:\n      command: sh\n", dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, spoolBin, "serve", "--check-config", "--config", writeConfig(t, good)).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "config OK")
}

// `spool serve --check-config` also checks what it can without starting anything: worker commands
// and folders, the GPU list, the secret key file.
func TestCheckConfigChecksSurroundings(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notexec"), []byte("#!/bin/sh\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "open.key"), []byte("aGVsbG8=\n"), 0o644))
	worker := func(spec string) string { return "endpoints:\n  - name: a\n    worker:\n" + spec }
	for name, c := range map[string]struct{ body, want string }{
		"missing command":  {worker("      command: ./nope\n      dir: " + dir + "\n"), `endpoints[0] ("a"): worker: command "` + dir + `/nope": does not exist`},
		"not executable":   {worker("      command: ./notexec\n      dir: " + dir + "\n"), "is not executable (chmod +x it)"},
		"not in PATH":      {worker("      command: no-such-program-spool\n"), `command "no-such-program-spool" is not found in PATH`},
		"missing dir":      {worker("      command: sh\n      dir: " + dir + "/gone\n"), `dir "` + dir + `/gone": does not exist`},
		"dir is a file":    {worker("      command: sh\n      dir: " + dir + "/notexec\n"), "is not a directory"},
		"gpu list":         {"workers:\n  gpus: [\"gpu0\"]\n", `workers.gpus[0] ("gpu0"): GPU ids are distinct indices`},
		"key file missing": {"secrets:\n  keyFile: " + dir + "/none.key\n", "secrets.keyFile"},
		"key file open":    {"secrets:\n  keyFile: " + dir + "/open.key\n", "secrets.keyFile"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, spoolBin, "serve", "--check-config", "--data", t.TempDir(), "--config", writeConfig(t, c.body)).CombinedOutput()
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee, "%s", out)
			require.NotContains(t, string(out), "config OK")
			require.Contains(t, string(out), c.want)
		})
	}
}
