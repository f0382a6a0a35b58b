package spool

import "time"

// QueueDepth is what an endpoint's queue holds: what its autoscaler scales on and what explains
// a queued job's wait. Low-priority jobs are counted apart: they never add a worker.
type QueueDepth struct {
	// Normal and Low count the queued jobs of each priority.
	Normal, Low int
	// Running counts the IN_PROGRESS normal-priority jobs.
	Running int
	// OldestNormal is the QueuedAt of the oldest queued normal-priority job; zero when none.
	OldestNormal time.Time
}

// JobCounts is the number of an endpoint's retained jobs in each state, plus how many have been
// retried: what /health and the metrics count.
type JobCounts struct {
	ByState map[State]int
	// Retried counts jobs with Retries > 0.
	Retried int
}
