package spool_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
)

func TestTransitions(t *testing.T) {
	t.Parallel()
	q, p, c, f, x, o := spool.StateInQueue, spool.StateInProgress, spool.StateCompleted, spool.StateFailed, spool.StateCancelled, spool.StateTimedOut
	allowed := map[[2]spool.State]bool{
		{q, p}: true, {q, x}: true, {q, o}: true, // taken, cancelled or expired while queued
		{p, q}: true, {p, c}: true, {p, f}: true, {p, x}: true, {p, o}: true, // lost worker, results, cancel, timeout
		{f, q}: true, {o, q}: true, // /retry
	}
	for _, from := range spool.States {
		for _, to := range spool.States {
			require.Equal(t, allowed[[2]spool.State{from, to}], spool.CanTransition(from, to), "%s -> %s", from, to)
		}
	}
	for _, s := range spool.States {
		require.True(t, s.Valid())
		require.Equal(t, s == c || s == f || s == x || s == o, s.Terminal(), s)
		require.Equal(t, s == f || s == o, s.Retryable(), s)
	}
	require.False(t, spool.State("RUNNING").Valid(), "RunPod's RUNNING is never a Spool state")
}

func TestPolicyLimits(t *testing.T) {
	t.Parallel()
	for ms, ok := range map[int64]bool{5000: false, 5001: true, 604800000: true, 604800001: false, -1: false} {
		err := spool.ValidateExecutionTimeout("policy.executionTimeout", ms)
		require.Equal(t, ok, err == nil, ms)
		if err != nil {
			require.Equal(t, spool.CodeInvalid, spool.ErrorCode(err))
			require.Contains(t, err.Error(), "policy.executionTimeout")
		}
	}
	for ms, ok := range map[int64]bool{9999: false, 10000: true, 604800000: true, 604800001: false} {
		err := spool.ValidateTTL("policy.ttl", ms)
		require.Equal(t, ok, err == nil, ms)
		if err != nil {
			require.Contains(t, err.Error(), "policy.ttl")
		}
	}
}

func TestS3ConfigValidationNeverEchoesValues(t *testing.T) {
	t.Parallel()
	const secret = "canary-9b1e"
	good := spool.S3Config{AccessID: secret, AccessSecret: secret, BucketName: "b", EndpointURL: "https://s3.example.com"}
	require.NoError(t, good.Validate())
	for name, mutate := range map[string]func(*spool.S3Config){
		"accessId":       func(c *spool.S3Config) { c.AccessID = "" },
		"accessSecret":   func(c *spool.S3Config) { c.AccessSecret = "" },
		"bucketName":     func(c *spool.S3Config) { c.BucketName = "" },
		"endpointUrl":    func(c *spool.S3Config) { c.EndpointURL = "" },
		"endpointUrl ":   func(c *spool.S3Config) { c.EndpointURL = "ftp://" + secret },
		"endpointUrl  ":  func(c *spool.S3Config) { c.EndpointURL = secret },
		"endpointUrl   ": func(c *spool.S3Config) { c.EndpointURL = "http://" },
	} {
		c := good
		mutate(&c)
		err := c.Validate()
		require.Error(t, err, name)
		require.Contains(t, err.Error(), "s3Config."+strings.TrimSpace(name))
		require.NotContains(t, err.Error(), secret)
	}
}

func TestJobIDs(t *testing.T) {
	t.Parallel()
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := spool.NewJobID(false)
		require.Regexp(t, uuid, id)
		require.False(t, seen[id])
		seen[id] = true
	}
	require.Regexp(t, `^sync-`, spool.NewJobID(true))
	require.True(t, strings.HasPrefix(spool.NewKeySecret(), "spool_"))
	require.Equal(t, spool.HashKey("a"), spool.HashKey("a"))
	require.NotEqual(t, spool.HashKey("a"), spool.HashKey("b"))
}

func TestEndpointValidation(t *testing.T) {
	t.Parallel()
	ok := spool.NewEndpoint("my-endpoint_1")
	require.NoError(t, ok.Validate())
	ok.Worker = &spool.WorkerSpec{Image: "ghcr.io/me/w:1", Pull: spool.PullNever, Mounts: []spool.Mount{{Source: "/srv", Target: "/srv"}},
		RegistryAuth: &spool.RegistryAuth{Username: "me", PasswordFile: "/etc/token"}}
	require.NoError(t, ok.Validate())
	ok.Worker = nil
	for _, tc := range []struct {
		field  string
		mutate func(*spool.Endpoint)
	}{
		{"name", func(e *spool.Endpoint) { e.Name = "a/b" }},
		{"workersMin", func(e *spool.Endpoint) { e.WorkersMin = 4 }},
		{"workersMax", func(e *spool.Endpoint) { e.WorkersMax = -1 }},
		{"workersMax", func(e *spool.Endpoint) { e.WorkersMax = 9223372036854775807 }},
		{"idleTimeout", func(e *spool.Endpoint) { e.IdleTimeout = 0 }},
		{"scalerType", func(e *spool.Endpoint) { e.ScalerType = "CPU" }},
		{"scalerValue", func(e *spool.Endpoint) { e.ScalerValue = 0 }},
		{"gpuCount", func(e *spool.Endpoint) { e.GPUCount = -1 }},
		{"maxQueue", func(e *spool.Endpoint) { e.MaxQueue = -1 }},
		{"worker.command", func(e *spool.Endpoint) { e.Worker = &spool.WorkerSpec{} }},
		{"worker.image exclude", func(e *spool.Endpoint) { e.Worker = &spool.WorkerSpec{Command: "w", Image: "i"} }},
		{"worker.pull", func(e *spool.Endpoint) { e.Worker = &spool.WorkerSpec{Image: "i", Pull: "sometimes"} }},
		{"worker.pull, worker.mounts, worker.registryAuth and worker.kubernetes apply to worker.image only", func(e *spool.Endpoint) {
			e.Worker = &spool.WorkerSpec{Command: "w", Pull: spool.PullAlways}
		}},
		{"worker.kubernetes apply to worker.image only", func(e *spool.Endpoint) {
			e.Worker = &spool.WorkerSpec{Command: "w", Kubernetes: &spool.PodSettings{}}
		}},
		{"worker.kubernetes.tolerations[0].operator", func(e *spool.Endpoint) {
			e.Worker = &spool.WorkerSpec{Image: "i", Kubernetes: &spool.PodSettings{Tolerations: []spool.Toleration{{Operator: "In"}}}}
		}},
		{"worker.kubernetes.volumes[0] needs exactly one", func(e *spool.Endpoint) {
			e.Worker = &spool.WorkerSpec{Image: "i", Kubernetes: &spool.PodSettings{Volumes: []spool.PodVolume{
				{Name: "m", MountPath: "/m", Secret: "s", ConfigMap: "c"}}}}
		}},
		{"worker.kubernetes.volumes[0] needs a name", func(e *spool.Endpoint) {
			e.Worker = &spool.WorkerSpec{Image: "i", Kubernetes: &spool.PodSettings{Volumes: []spool.PodVolume{{MountPath: "m", EmptyDir: true}}}}
		}},
		{"worker.mounts[0]", func(e *spool.Endpoint) {
			e.Worker = &spool.WorkerSpec{Image: "i", Mounts: []spool.Mount{{Source: "models", Target: "/models"}}}
		}},
		{"worker.registryAuth", func(e *spool.Endpoint) {
			e.Worker = &spool.WorkerSpec{Image: "i", RegistryAuth: &spool.RegistryAuth{Username: "me", PasswordFile: "token"}}
		}},
		{"executionTimeoutMs", func(e *spool.Endpoint) { e.ExecutionTimeoutMs = 5000 }},
		{"ttlMs", func(e *spool.Endpoint) { e.TTLMs = 1 }},
	} {
		e := spool.NewEndpoint("ep")
		tc.mutate(&e)
		err := e.Validate()
		require.Error(t, err, tc.field)
		require.Contains(t, err.Error(), tc.field)
	}
}

// TestDurationsAreNeverNegative: a take written by one replica a millisecond "before" the queueing
// another wrote (their readings of the database's clock differ by that much) is a zero delay.
func TestDurationsAreNeverNegative(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	j := &spool.Job{QueuedAt: t0, TakenAt: t0.Add(-2 * time.Millisecond), FinishedAt: t0.Add(-3 * time.Millisecond)}
	d, ok := j.DelayTime()
	require.True(t, ok)
	require.Zero(t, d)
	e, ok := j.ExecutionTime()
	require.True(t, ok)
	require.Zero(t, e)
	j.TakenAt, j.FinishedAt = t0.Add(5*time.Millisecond), t0.Add(12*time.Millisecond)
	d, _ = j.DelayTime()
	e, _ = j.ExecutionTime()
	require.Equal(t, 5*time.Millisecond, d)
	require.Equal(t, 7*time.Millisecond, e)
}
