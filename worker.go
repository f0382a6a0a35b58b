package spool

// WorkerState is a worker's state (docs/contract.md §4), as /health counts and /api/workers lists
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

// MaxWorkerIDLen bounds a worker id: RunPod's pod ids are 14 characters, runpod-python's default
// is a 36-character UUID, Spool's own are the endpoint name and 12 hex digits, and Kubernetes pod
// names stay within 63 in practice.
const MaxWorkerIDLen = 128

// CheckWorkerID reports whether id can name a worker: 1 to MaxWorkerIDLen ASCII letters, digits,
// '.', '_', ':' or '-'. Ids appear in URLs (runpod-python substitutes them without escaping), logs
// and the store, so nothing else gets in.
func CheckWorkerID(id string) error {
	if id == "" || len(id) > MaxWorkerIDLen {
		return Errorf(CodeInvalid, "a worker id must be 1 to %d characters, got %d", MaxWorkerIDLen, len(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return Errorf(CodeInvalid, "a worker id may hold only letters, digits, '.', '_', ':' and '-' (byte %d is not one)", i)
		}
	}
	return nil
}
