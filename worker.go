package spool

// WorkerState is a worker's state (CONTRACT.md §4), as /health counts and /api/workers lists
// workers.
type WorkerState string

const (
	// WorkerInitializing: started (or about to be) and no job asked for yet.
	WorkerInitializing WorkerState = "initializing"
	// WorkerIdle: up and holding no job.
	WorkerIdle WorkerState = "idle"
	// WorkerRunning: holding at least one job.
	WorkerRunning WorkerState = "running"
	// WorkerThrottled: wanted, but the node lacks the GPUs to start it.
	WorkerThrottled WorkerState = "throttled"
	// WorkerUnhealthy: crashed or failed its start; restarted with backoff.
	WorkerUnhealthy WorkerState = "unhealthy"
	// WorkerLost: a worker started outside Spool that has not been seen for workers.lostAfter
	// (listed by /api/workers, not counted by /health).
	WorkerLost WorkerState = "lost"
)
