package autoscale

import (
	"context"
	"time"

	"github.com/spool-run/spool"
)

// Provider runs worker processes (or pods) for the autoscaler. It knows nothing of queues or
// scaling: the loop decides, the provider starts, stops and reports exits. A Kubernetes provider
// implements the same five methods.
type Provider interface {
	// Start launches one worker. exited is called exactly once, from any goroutine, when the
	// worker ends for any reason (after Stop and Kill too), unless Start returns an error.
	Start(ctx context.Context, w WorkerSpec, exited func(Exit)) error
	// Stop asks a worker to finish (SIGTERM: runpod-python and spoolworker drain) and kills it
	// when it has not exited after grace. It returns at once.
	Stop(id string, grace time.Duration)
	// Kill ends a worker at once.
	Kill(id string)
	// Logs returns the last lines the worker wrote to stdout and stderr, oldest first.
	Logs(id string) []string
	// Close kills every worker still running and waits until they are reaped.
	Close()
}

// GPUScheduler is a Provider that places some workers where the GPUs are itself (a cluster's
// scheduler): for those, the autoscaler takes nothing from the local GPU pool and passes the
// count instead (WorkerSpec.GPUCount).
type GPUScheduler interface {
	SchedulesGPUs(spec spool.WorkerSpec) bool
}

// Adopter is a Provider whose workers may outlive a Spool process (pods of a cluster, after a
// crash): the leading autoscaler's first tick takes over those still running instead of starting
// others beside them.
type Adopter interface {
	// Adopt returns the running workers this provider did not start, from now on its own: exited
	// is called when each ends, as for a started one.
	Adopt(ctx context.Context, exited func(Exit)) ([]Adoptee, error)
}

// Releaser is an Adopter that can let a worker go without stopping it: when this replica stops
// leading, the new leader adopts its workers.
type Releaser interface {
	// Release forgets the worker, leaving it running; false when it is not this provider's.
	Release(id string) bool
}

// Adoptee is a running worker an Adopter took over.
type Adoptee struct {
	Endpoint, WorkerID string
}

// WorkerSpec is one worker to start.
type WorkerSpec struct {
	Endpoint string
	// WorkerID is unique per start; the worker uses it as RUNPOD_POD_ID.
	WorkerID string
	// Env is the RunPod environment (docs/contract.md §4) and the GPU variables, computed by the
	// autoscaler. It takes precedence over Spec.Env.
	Env map[string]string
	// GPUs are the device ids handed to the worker from the local pool.
	GPUs []string
	// GPUCount is how many GPUs the worker asks of a provider that schedules GPUs itself
	// (GPUScheduler); 0 for the others, which get GPUs.
	GPUCount int
	// Spec is how the endpoint's workers start.
	Spec spool.WorkerSpec
}

// Exit reports the end of a worker.
type Exit struct {
	ID string
	// Err is nil for exit status 0, else the wait error ("exit status 3", "signal: killed").
	Err error
	// Logs are the last lines of its output.
	Logs []string
}
