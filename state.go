package spool

// State is a job's state as RunPod clients see it. Spool never emits any other value (not even
// RUNNING, which appears in one RunPod page but in no SDK).
type State string

const (
	StateInQueue    State = "IN_QUEUE"
	StateInProgress State = "IN_PROGRESS"
	StateCompleted  State = "COMPLETED"
	StateFailed     State = "FAILED"
	StateCancelled  State = "CANCELLED"
	StateTimedOut   State = "TIMED_OUT"
)

// States lists every state in the order the lifecycle visits them.
var States = []State{StateInQueue, StateInProgress, StateCompleted, StateFailed, StateCancelled, StateTimedOut}

// Valid reports whether s is one of the six states.
func (s State) Valid() bool {
	switch s {
	case StateInQueue, StateInProgress, StateCompleted, StateFailed, StateCancelled, StateTimedOut:
		return true
	}
	return false
}

// Terminal reports whether s is an end state. Terminal states are absorbing except for /retry.
func (s State) Terminal() bool {
	switch s {
	case StateCompleted, StateFailed, StateCancelled, StateTimedOut:
		return true
	}
	return false
}

// Retryable reports whether /retry may send a job in state s back to the queue.
func (s State) Retryable() bool { return s == StateFailed || s == StateTimedOut }

// CanTransition reports whether the state machine of docs/contract.md §3 allows from → to.
func CanTransition(from, to State) bool {
	switch from {
	case StateInQueue:
		return to == StateInProgress || to == StateCancelled || to == StateTimedOut
	case StateInProgress:
		// Back to the queue only when the worker was lost; FAILED also covers "lost too often".
		return to == StateInQueue || to.Terminal()
	case StateFailed, StateTimedOut:
		return to == StateInQueue
	}
	return false
}
