package main

import (
	"context"
	"os/exec"
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
    idleTimeout: 30
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
		"bad initTimeout":      {"workers:\n  initTimeout: later\n", "line 2: cannot unmarshal"},
		"duplicate gpu":        {"workers:\n  gpus: [\"0\", \"0\"]\n", "workers.gpus[1]"},
		"empty gpu":            {"workers:\n  gpus: [\"\"]\n", "workers.gpus[0]"},
		"gpu with comma":       {"workers:\n  gpus: [\"0,1\"]\n", "workers.gpus[0]"},
		"worker no command":    {"endpoints:\n  - name: a\n    worker:\n      args: [x]\n", "worker.command is required"},
		"misspelt worker key":  {"endpoints:\n  - name: a\n    worker:\n      command: x\n      argz: [y]\n", "field argz not found"},
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
	p := writeConfig(t, "workers:\n  gpus: [\"0\", \"1\"]\n  initTimeout: 1m\nendpoints:\n  - name: a\n    gpuCount: 1\n    worker:\n      command: ./w\n")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, spoolBin, "serve", "--check-config", "--config", p).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "config OK")
}
