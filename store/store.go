// Package store is the storage seam of Spool: one ctx-first interface that every backend
// (sqlitestore, later pgstore) implements, the params structs its methods take, and the sentinel
// errors backends translate their own errors into.
//
// The store is deliberately dumb about the job state machine: it selects rows, locks them, hands
// each to a caller-supplied Apply function (the engine's pure transition code) and writes back what
// Apply produced, all in one transaction. The engine therefore owns every rule, and a new backend
// only has to get selection, locking and durability right; storetest checks exactly that.
//
// Apply functions run inside the backend's transaction (for sqlitestore, on its single writer
// goroutine), so they must be fast, must not block and must not call the store.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/spool-run/spool"
)

// Sentinel errors. Backends return these (possibly wrapped) and nothing backend-specific for the
// conditions they name.
var (
	// ErrNotFound: no row with that id.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: a row with that id already exists (CreateJob), or a key with that hash (PutKey).
	ErrConflict = errors.New("store: conflict")
	// ErrSkip, returned by an Apply function, leaves that job unchanged without failing the call.
	ErrSkip = errors.New("store: skip")
	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("store: closed")
)

// Store is implemented by every backend. Every method that returns nil has durably committed its
// change (fsync'd) before it returns: the HTTP layer sends a 2xx only after that. A write that
// returns the caller's context error was not applied. Times are kept at millisecond precision.
// Results of UpdateJobs and ListWorkers come in no particular order.
type Store interface {
	// CreateJob inserts a new job. ErrConflict if the id exists.
	CreateJob(ctx context.Context, p CreateJobParams) error
	// GetJob returns one job. ErrNotFound if absent.
	GetJob(ctx context.Context, id string) (*spool.Job, error)
	// ListJobs returns jobs matching the filter, newest first (by CreatedAt, then ID).
	ListJobs(ctx context.Context, p ListJobsParams) ([]*spool.Job, error)
	// UpdateJob loads one job, calls p.Apply on it and writes the result back, atomically.
	// ErrNotFound if absent. If Apply returns ErrSkip the job is unchanged and UpdateJob returns it
	// with a nil error; any other Apply error is returned as is, with nothing changed.
	UpdateJob(ctx context.Context, p UpdateJobParams) (*spool.Job, error)
	// UpdateJobs applies p.Apply to every job matching p.Filter (up to p.Filter.Limit), in one
	// transaction, and returns the jobs it changed (not those Apply skipped). An Apply error other
	// than ErrSkip aborts the whole call with nothing changed.
	UpdateJobs(ctx context.Context, p UpdateJobsParams) ([]*spool.Job, error)
	// TakeJobs hands out up to p.Max IN_QUEUE jobs of p.Endpoint whose Deadline is after p.Now:
	// normal-priority jobs first, then low-priority ones, each level in FIFO order of QueuedAt
	// (ties broken by insertion order). Each selected job is passed to p.Apply (which moves it to
	// IN_PROGRESS) and written back. Concurrent TakeJobs calls never return the same job. Apply
	// errors behave as in UpdateJobs; Max <= 0 takes nothing.
	TakeJobs(ctx context.Context, p TakeJobsParams) ([]*spool.Job, error)
	// DeleteJobs deletes terminal jobs whose Deadline is at or before p.Before (at most p.Limit),
	// with their stream chunks, and returns how many it deleted.
	DeleteJobs(ctx context.Context, p DeleteJobsParams) (int, error)
	// CountJobs counts the jobs of one endpoint by state.
	CountJobs(ctx context.Context, endpoint string) (JobCounts, error)
	// QueueStats counts the IN_QUEUE jobs of p.Endpoint by priority and its IN_PROGRESS
	// normal-priority jobs, with the QueuedAt of the oldest queued normal-priority job (zero when
	// there is none), and, when p.JobID names an IN_QUEUE job
	// of that endpoint, its 1-based position in TakeJobs order (0 otherwise).
	QueueStats(ctx context.Context, p QueueStatsParams) (QueueStats, error)

	// AppendChunk loads the job, calls p.Check on it (optional; a non-nil error aborts with nothing
	// changed, and changes Check makes to the job are not kept) and appends p.Data as the next
	// chunk, incrementing the job's StreamCount.
	AppendChunk(ctx context.Context, p AppendChunkParams) (*spool.Job, error)
	// ReadChunks returns the job and its chunks with Seq > p.After, read in one snapshot. With
	// p.Drain, p.After is ignored: it returns the chunks after the job's StreamCursor and advances
	// the cursor past them, atomically, so that each chunk is drained once (with p.Limit, only up
	// to the last chunk returned).
	ReadChunks(ctx context.Context, p ReadChunksParams) (*spool.Job, []spool.Chunk, error)

	// TouchWorker records that a worker was seen (a take or a ping), creating it if needed.
	TouchWorker(ctx context.Context, p TouchWorkerParams) error
	// ListWorkers returns the known workers, of one endpoint when p.Endpoint is set.
	ListWorkers(ctx context.Context, p ListWorkersParams) ([]Worker, error)
	// DeleteWorkers forgets workers last seen at or before p.SeenBefore that hold no IN_PROGRESS job.
	DeleteWorkers(ctx context.Context, p DeleteWorkersParams) (int, error)

	// PutEndpoint creates or replaces an endpoint. The caller sets UpdatedAt (and CreatedAt for a new
	// one); replacing keeps the stored CreatedAt.
	PutEndpoint(ctx context.Context, e spool.Endpoint) error
	// GetEndpoint returns one endpoint. ErrNotFound if absent.
	GetEndpoint(ctx context.Context, name string) (spool.Endpoint, error)
	// ListEndpoints returns every endpoint, by name.
	ListEndpoints(ctx context.Context) ([]spool.Endpoint, error)
	// DeleteEndpoint deletes an endpoint. ErrNotFound if absent.
	DeleteEndpoint(ctx context.Context, name string) error

	// PutKey creates or replaces a key (by ID). ErrConflict if another key has the same hash.
	PutKey(ctx context.Context, k spool.Key) error
	// ListKeys returns every key, oldest first.
	ListKeys(ctx context.Context) ([]spool.Key, error)
	// DeleteKey deletes a key. ErrNotFound if absent.
	DeleteKey(ctx context.Context, id string) error

	// The webhook outbox. A terminal transition enqueues its delivery through Job.Outbox, in the
	// transaction that writes the job; these methods serve the dispatcher and the admin API.
	// Deliveries are independent of their job's row: DeleteJobs leaves them alone.

	// CreateDelivery inserts a pending delivery, due at its CreatedAt (a redelivery). Only ID,
	// JobID, Endpoint, URL, Payload, CreatedAt and RedeliveryOf are read. ErrConflict if the id
	// exists.
	CreateDelivery(ctx context.Context, p CreateDeliveryParams) error
	// ClaimDeliveries leases up to p.Limit pending deliveries due at p.Now (NextAttemptAt at or
	// before it), earliest due first (ties in insertion order), at most p.PerHost per Host (or
	// p.HostLimits[host] for the hosts it names), never those in p.Exclude. Each claimed delivery
	// gets NextAttemptAt = p.Now + p.Lease(endpoint) and a new Lease token, so that a claim whose
	// attempt is never recorded (a crash) is due again when its lease runs out. It returns the
	// claimed deliveries as updated, without History.
	ClaimDeliveries(ctx context.Context, p ClaimDeliveriesParams) ([]spool.WebhookDelivery, error)
	// RecordAttempt records the outcome of a claimed delivery's attempt and moves it to p.State,
	// atomically. ErrNotFound if absent; ErrConflict, with nothing changed, if the delivery is no
	// longer pending or was claimed again since (its Lease is not p.Lease). It returns the
	// delivery as updated, without History.
	RecordAttempt(ctx context.Context, p RecordAttemptParams) (spool.WebhookDelivery, error)
	// ListDeliveries returns the deliveries of one job, oldest first, each with its History.
	ListDeliveries(ctx context.Context, jobID string) ([]spool.WebhookDelivery, error)
	// NextDeliveryDue returns the earliest NextAttemptAt after p.After of the pending deliveries;
	// false when there is none. (Deliveries due at or before After are the caller's business: it
	// could not claim them for its concurrency bounds.)
	NextDeliveryDue(ctx context.Context, after time.Time) (time.Time, bool, error)
	// DeleteDeliveries deletes finished (delivered or failed) deliveries whose FinishedAt is at or
	// before p.Before (at most p.Limit), with their attempts, and returns how many it deleted.
	DeleteDeliveries(ctx context.Context, p DeleteDeliveriesParams) (int, error)

	// Close waits for pending writes to commit and releases the store. Idempotent.
	Close() error
}

// CreateDeliveryParams holds a delivery to insert.
type CreateDeliveryParams struct {
	Delivery spool.WebhookDelivery
}

// ClaimDeliveriesParams selects deliveries to attempt.
type ClaimDeliveriesParams struct {
	Now time.Time
	// Limit bounds the deliveries claimed; <= 0 claims none.
	Limit int
	// PerHost bounds the deliveries claimed per host; 0 means no bound. HostLimits overrides it
	// for the hosts it names (a value <= 0 claims none of that host).
	PerHost    int
	HostLimits map[string]int
	// Exclude lists ids not to claim (the caller's attempts in flight).
	Exclude []string
	// Lease is how long the claim of a delivery of an endpoint lasts. Nil means one minute.
	Lease func(endpoint string) time.Duration
}

// RecordAttemptParams records an attempt's outcome.
type RecordAttemptParams struct {
	ID    string
	Lease int64
	// Attempt is appended to the history and counted; nil records no attempt (a claim given back
	// unused, at shutdown) and leaves the count alone.
	Attempt *spool.DeliveryAttempt
	// State is the delivery's new state: pending (due again at NextAttemptAt), delivered or
	// failed (finished at Now).
	State         spool.DeliveryState
	NextAttemptAt time.Time
	Now           time.Time
}

// DeleteDeliveriesParams bounds a delivery sweep.
type DeleteDeliveriesParams struct {
	Before time.Time
	Limit  int // 0 means no bound
}

// CreateJobParams holds a job to insert.
type CreateJobParams struct {
	Job *spool.Job
}

// ListJobsParams filters ListJobs.
type ListJobsParams struct {
	Endpoint string        // "" for all endpoints
	States   []spool.State // empty for all states
	// Before and BeforeID page through the list, which is ordered by (CreatedAt, ID) descending:
	// a non-zero Before keeps the jobs that come after (Before, BeforeID) in that order, so a page
	// boundary inside one millisecond skips nothing. An empty BeforeID keeps jobs created strictly
	// before Before.
	Before   time.Time
	BeforeID string
	Limit    int // 0 means 100
}

// UpdateJobParams names one job and the change to apply.
type UpdateJobParams struct {
	ID    string
	Apply func(*spool.Job) error
}

// JobFilter selects jobs for UpdateJobs. Every non-zero field narrows the selection.
type JobFilter struct {
	Endpoint string
	States   []spool.State
	WorkerID string
	// DeadlineBefore keeps jobs whose Deadline is at or before it.
	DeadlineBefore time.Time
	// StopPending keeps jobs whose StopPending is set.
	StopPending bool
	// WorkerSeenBefore keeps jobs whose WorkerID names a worker last seen at or before it (or
	// unknown to the worker table). Jobs with no WorkerID never match.
	WorkerSeenBefore time.Time
	// Limit bounds the number of jobs; 0 means no bound.
	Limit int
}

// UpdateJobsParams selects jobs and the change to apply to each.
type UpdateJobsParams struct {
	Filter JobFilter
	Apply  func(*spool.Job) error
}

// TakeJobsParams selects queued jobs for one worker.
type TakeJobsParams struct {
	Endpoint string
	Max      int
	Now      time.Time
	Apply    func(*spool.Job) error
}

// DeleteJobsParams bounds a retention sweep.
type DeleteJobsParams struct {
	Before time.Time
	Limit  int // 0 means no bound
}

// JobCounts is the number of an endpoint's jobs in each state, plus how many have been retried.
type JobCounts struct {
	ByState map[spool.State]int
	// Retried counts jobs with Retries > 0.
	Retried int
}

// QueueStatsParams names the endpoint (and optionally a job) of a QueueStats call.
type QueueStatsParams struct {
	Endpoint string
	JobID    string
}

// QueueStats describes an endpoint's queue.
type QueueStats struct {
	// Normal and Low count the queued jobs of each priority.
	Normal, Low int
	// Running counts the IN_PROGRESS normal-priority jobs.
	Running int
	// OldestNormal is the QueuedAt of the oldest queued normal-priority job; zero when none.
	OldestNormal time.Time
	// Position is the job's 1-based place in dispatch order; 0 when no queued job was named.
	Position int
}

// AppendChunkParams appends one stream chunk.
type AppendChunkParams struct {
	ID    string
	Check func(*spool.Job) error
	Data  json.RawMessage
}

// ReadChunksParams reads stream chunks.
type ReadChunksParams struct {
	ID    string
	After int64
	Drain bool
	Limit int // 0 means no bound
}

// Worker is a worker the server has seen.
type Worker struct {
	ID        string
	Endpoint  string
	FirstSeen time.Time
	LastSeen  time.Time
	// Version is the SDK version a worker reported (runpod_version on pings), if any.
	Version string
}

// TouchWorkerParams records a sighting of a worker.
type TouchWorkerParams struct {
	ID       string
	Endpoint string
	Now      time.Time
	Version  string // "" keeps the stored one
}

// ListWorkersParams filters ListWorkers.
type ListWorkersParams struct {
	Endpoint string
}

// DeleteWorkersParams bounds a worker-table sweep.
type DeleteWorkersParams struct {
	SeenBefore time.Time
}
