package autoscale

import (
	"fmt"
	"time"

	"github.com/spool-run/spool"
)

// QueueState is what the scaler looks at for one endpoint. Low-priority jobs are not in it: they
// never add a worker.
type QueueState struct {
	// Normal is the number of queued normal-priority jobs; OldestWait how long the oldest waited.
	Normal     int
	OldestWait time.Duration
	// InProgress is the number of normal-priority jobs running.
	InProgress int
	// Workers is the number of worker slots (every state); Busy of them hold a job, Initializing
	// of them have not asked for one yet.
	Workers, Busy, Initializing int
}

// Wanted is the number of workers an endpoint should have (docs/contract.md §4), within
// [workersMin, workersMax]:
//   - REQUEST_COUNT: ceil((queued + in progress) / scalerValue);
//   - QUEUE_DELAY: with normal jobs queued, the workers there are, at least one (a queue never
//     waits scalerValue seconds for its first worker), plus one when the oldest job has waited
//     more than scalerValue seconds and no worker is still starting; with an empty queue, the busy
//     workers (idle ones go after idleTimeout).
func Wanted(ep spool.Endpoint, q QueueState) int {
	n, _ := WantedWhy(ep, q)
	return n
}

// WantedWhy is Wanted, with the reason in words, for the log line of a scaling decision.
func WantedWhy(ep spool.Endpoint, q QueueState) (int, string) {
	var (
		n   int
		why string
	)
	switch ep.ScalerType {
	case spool.ScalerRequestCount:
		v := max(ep.ScalerValue, 1)
		n = (q.Normal + q.InProgress + v - 1) / v
		why = fmt.Sprintf("REQUEST_COUNT: %d queued + %d running at %d per worker", q.Normal, q.InProgress, v)
	default:
		switch {
		case q.Normal == 0:
			n = q.Busy
			why = fmt.Sprintf("QUEUE_DELAY: none queued, %d busy", q.Busy)
		case q.Workers == 0:
			n = 1
			why = fmt.Sprintf("QUEUE_DELAY: %d queued, no worker", q.Normal)
		case q.OldestWait > time.Duration(ep.ScalerValue)*time.Second && q.Initializing == 0:
			n = q.Workers + 1
			why = fmt.Sprintf("QUEUE_DELAY: the oldest of %d queued waited %s, over scalerValue %ds",
				q.Normal, q.OldestWait.Round(100*time.Millisecond), ep.ScalerValue)
		default:
			n = q.Workers
			why = fmt.Sprintf("QUEUE_DELAY: %d queued, the oldest for %s (scalerValue %ds, %d starting)",
				q.Normal, q.OldestWait.Round(100*time.Millisecond), ep.ScalerValue, q.Initializing)
		}
	}
	switch {
	case n < ep.WorkersMin:
		why += fmt.Sprintf("; workersMin %d", ep.WorkersMin)
	case n > ep.WorkersMax:
		why += fmt.Sprintf("; capped at workersMax %d", ep.WorkersMax)
	}
	return min(max(n, ep.WorkersMin), ep.WorkersMax), why
}
