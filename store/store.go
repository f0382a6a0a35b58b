// Package store is the storage seam of Spool: one ctx-first interface that every backend
// (sqlitestore, later pgstore) implements, the params structs its methods take, and the sentinel
// errors backends translate their own errors into.
//
// The store is deliberately dumb about the job state machine. The engine decides every change and
// hands the store a targeted, conditional write: which job, what it must still look like (Expect:
// its state, and its worker and attempt, or its exact epoch), and which fields to set to what
// (JobChange). The store writes only those fields, and only if the expectation holds, so a backend
// never rewrites a large input when a lease changes. The only arithmetic left to the store is a
// deadline: Now plus one of the job's own durations, so that a backend may use its own clock.
// Reads name the payloads they need (Payloads): the head alone serves the sweeper, the fleet and
// /health. storetest checks all of this for every backend.
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
	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("store: closed")
	// ErrUnavailable: the store cannot be reached now (a database restart, a failover, a dropped
	// connection). A read that returns it read nothing; a write may or may not have been applied,
	// as with any error other than the caller's context error. Retrying later is the remedy.
	ErrUnavailable = errors.New("store: unavailable")
)

// Store is implemented by every backend. Every method that returns nil has durably committed its
// change (fsync'd) before it returns: the HTTP layer sends a 2xx only after that. A write that
// returns the caller's context error was not applied. Times are kept at millisecond precision.
// Results of ListWorkers come in no particular order.
type Store interface {
	// CreateJob inserts a new job, payloads included. ErrConflict if the id exists.
	CreateJob(ctx context.Context, p CreateJobParams) error
	// GetJob returns one job with the payloads p.With names. ErrNotFound if absent.
	GetJob(ctx context.Context, p GetJobParams) (*spool.Job, error)
	// ListJobs returns jobs matching the filter, newest first (by CreatedAt, then ID), with the
	// payloads p.With names.
	ListJobs(ctx context.Context, p ListJobsParams) ([]*spool.Job, error)
	// FindJobs returns the jobs matching f, with the payloads f.With names (none: their heads),
	// in no particular order.
	FindJobs(ctx context.Context, f JobFilter) ([]*spool.Job, error)
	// ClaimJobs hands out up to p.Max IN_QUEUE jobs of p.Endpoint whose ExpiresAt is after p.Now:
	// normal-priority jobs first, then low-priority ones, each level in FIFO order of QueuedAt
	// (ties broken by insertion order). It applies p.Change to each, which must move it out of
	// IN_QUEUE, and returns them as written, in that order, with their Input and S3ConfigSealed.
	// Concurrent ClaimJobs calls never return the same job. Max <= 0 claims nothing.
	ClaimJobs(ctx context.Context, p ClaimJobsParams) ([]*spool.Job, error)
	// UpdateJobs applies each of p.Updates whose job exists and meets its Expect, in one
	// transaction, in order, and returns the heads of the jobs it changed as written (those whose
	// expectation failed, or that do not exist, are left out and unchanged). An update with
	// Webhook set, of a job with a webhook, also enqueues the delivery p.Outbox builds from the job
	// as written (payloads included), in the same transaction.
	UpdateJobs(ctx context.Context, p UpdateJobsParams) ([]*spool.Job, error)
	// DeleteJobs deletes terminal jobs whose DeleteAt is at or before p.Before (at most p.Limit),
	// with their payloads and stream chunks, and returns how many it deleted.
	DeleteJobs(ctx context.Context, p DeleteJobsParams) (int, error)
	// CountJobs counts the jobs of one endpoint by state.
	CountJobs(ctx context.Context, endpoint string) (spool.JobCounts, error)
	// QueueDepth counts the IN_QUEUE jobs of an endpoint by priority and its IN_PROGRESS
	// normal-priority jobs, with the QueuedAt of the oldest queued normal-priority job, without
	// reading any job's payloads.
	QueueDepth(ctx context.Context, endpoint string) (spool.QueueDepth, error)
	// CountQueued counts the IN_QUEUE jobs of p.Endpoint (both priorities, expired or not), but
	// no more than p.Limit: the take gate and the maxQueue check need only know whether there are
	// at least so many, and a shared store answers that without counting a deep queue.
	// Limit <= 0 counts nothing.
	CountQueued(ctx context.Context, p CountQueuedParams) (int, error)
	// QueuePosition returns the 1-based place of an IN_QUEUE job of p.Endpoint in ClaimJobs order;
	// 0 when there is no such queued job.
	QueuePosition(ctx context.Context, p QueuePositionParams) (int, error)
	// HeldJobs lists the IN_PROGRESS jobs as (worker, job, attempt, retries, taken at), by
	// worker and then TakenAt, without reading any job's payloads.
	HeldJobs(ctx context.Context, p HeldJobsParams) ([]HeldJob, error)

	// AppendChunk appends p.Data as the job's next chunk and increments its StreamCount, if the
	// job meets p.Expect; it reports whether it did. ErrNotFound if absent.
	AppendChunk(ctx context.Context, p AppendChunkParams) (bool, error)
	// ReadChunks returns the job (with the payloads p.With names) and its chunks with
	// Seq > p.After, in one snapshot. With
	// p.Drain, p.After is ignored: it returns the chunks after the job's StreamCursor and advances
	// the cursor past them, atomically, so that each chunk is drained once (with p.Limit, only up
	// to the last chunk returned).
	ReadChunks(ctx context.Context, p ReadChunksParams) (*spool.Job, []spool.Chunk, error)

	// TouchWorker records that a worker was seen (a take or a ping), creating it if needed.
	TouchWorker(ctx context.Context, p TouchWorkerParams) error
	// ListWorkers returns the known workers, of one endpoint when p.Endpoint is set.
	ListWorkers(ctx context.Context, p ListWorkersParams) ([]WorkerRecord, error)
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

	// The webhook outbox. A terminal transition enqueues its delivery through UpdateJobs (an
	// update with Webhook set), in the transaction that writes the job; these methods serve the
	// dispatcher and the admin API.
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
	// Job is written as it is; the store uses its Input without a copy, so the caller must not
	// change it afterwards (even after a cancelled ctx, the write may still be under way).
	Job *spool.Job
}

// Payloads names the large fields of a job that a read loads besides its head.
type Payloads uint8

const (
	// PayloadOutput loads Output and Progress.
	PayloadOutput Payloads = 1 << iota
	// PayloadInput loads Input.
	PayloadInput
	// PayloadS3Config loads S3ConfigSealed.
	PayloadS3Config
	// AllPayloads loads the whole job.
	AllPayloads = PayloadOutput | PayloadInput | PayloadS3Config
)

// GetJobParams names a job and what to read of it.
type GetJobParams struct {
	ID   string
	With Payloads
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
	With     Payloads
}

// JobFilter selects jobs for FindJobs. Every non-zero field but With narrows the selection.
type JobFilter struct {
	IDs      []string
	Endpoint string
	States   []spool.State
	WorkerID string
	// StopPending keeps jobs whose StopPending is set.
	StopPending bool
	// ExpiresBy keeps jobs whose ExpiresAt is at or before it, TimesOutBy those whose TimeoutAt
	// is; each deadline means something only in its state, so pair them with States.
	ExpiresBy  time.Time
	TimesOutBy time.Time
	// Limit bounds the number of jobs; 0 means no bound.
	Limit int
	With  Payloads
}

// ClaimJobsParams selects queued jobs for one worker and says what claiming does to them.
type ClaimJobsParams struct {
	Endpoint string
	Max      int
	// Now is the instant of the claim: jobs expired by then are not claimed, and it is the base
	// of the deadlines Change sets.
	Now    time.Time
	Change JobChange
}

// UpdateJobsParams holds targeted writes to apply in one transaction.
type UpdateJobsParams struct {
	Updates []JobUpdate
	// Now is the base of the deadlines the changes set.
	Now time.Time
	// Outbox builds the webhook delivery of a job that an update with Webhook set has just
	// written (payloads included). It runs inside the store's transaction: it must be fast and
	// must not call the store. Nil enqueues nothing.
	Outbox func(*spool.Job) *spool.WebhookMessage
}

// JobUpdate is one targeted, conditional write.
type JobUpdate struct {
	ID     string
	Expect Expect
	Change JobChange
	// Webhook enqueues the job's webhook delivery (UpdateJobsParams.Outbox), if it has a webhook.
	Webhook bool
}

// Expect is what a job must still look like for a write to apply: in State and, where set, of
// Endpoint, held by WorkerID at Attempt (the fence of a worker's post). With Exact, Attempt and
// Retries must both equal the job's: since every transition changes the state, the attempt (a
// claim) or the retries (a requeue or a retry), the job is then at the very transition the engine
// read. A write of a flag the job keeps across transitions names the flag's value too
// (StopPending), and the sweep of lost workers names the liveness it saw (WorkerSeenBefore).
type Expect struct {
	State    spool.State
	Endpoint string // "" matches any
	WorkerID string // "" matches any
	Attempt  int    // 0 matches any, unless Exact
	Exact    bool
	Retries  int // compared only when Exact
	// StopPending, when not FlagAny, is the job's StopPending.
	StopPending Flag
	// WorkerSeenBefore, when set, requires the job's worker to have been last seen at or before
	// it, or never: it is still lost.
	WorkerSeenBefore time.Time
}

// Flag is a condition on a boolean field.
type Flag uint8

const (
	FlagAny   Flag = iota // either value
	FlagSet               // true
	FlagClear             // false
)

// Exactly is the expectation that j is still as it was read.
func Exactly(j *spool.Job) Expect {
	return Expect{State: j.State, Endpoint: j.Endpoint, WorkerID: j.WorkerID, Attempt: j.Attempt, Retries: j.Retries, Exact: true}
}

// Fields names the fields a JobChange sets.
type Fields uint32

// The fields of a JobChange, each set to the JobChange's value of the same name, but for the last
// five, whose values the store computes.
const (
	SetState Fields = 1 << iota
	SetWorkerID
	SetOutput
	SetProgress
	SetError
	SetS3Config // S3ConfigSealed
	SetHadS3Config
	SetStopPod
	SetEndedByWorker
	SetStopPending
	SetRetention // RetentionMs
	SetQueuedAt
	SetTakenAt
	SetFinishedAt
	// IncAttempt adds one to Attempt, IncRetries to Retries.
	IncAttempt
	IncRetries
	// SetExpiresAt sets ExpiresAt to Now + the job's TTL, SetTimeoutAt sets TimeoutAt to Now +
	// its execution timeout, and SetDeleteAt sets DeleteAt to Now + its RetentionMs (the new one,
	// when the change also sets it).
	SetExpiresAt
	SetTimeoutAt
	SetDeleteAt
)

// JobChange is what a targeted write sets: the fields named in Set, and nothing else.
type JobChange struct {
	Set Fields

	State          spool.State
	WorkerID       string
	Output         json.RawMessage
	Progress       json.RawMessage
	Error          string
	S3ConfigSealed []byte
	HadS3Config    bool
	StopPod        bool
	EndedByWorker  bool
	StopPending    bool
	RetentionMs    int64
	QueuedAt       time.Time
	TakenAt        time.Time
	FinishedAt     time.Time
}

// DeleteJobsParams bounds a retention sweep.
type DeleteJobsParams struct {
	Before time.Time
	Limit  int // 0 means no bound
}

// CountQueuedParams bounds a count of an endpoint's queue.
type CountQueuedParams struct {
	Endpoint string
	Limit    int
}

// QueuePositionParams names a queued job of an endpoint.
type QueuePositionParams struct {
	Endpoint string
	JobID    string
}

// HeldJobsParams filters HeldJobs. Every non-zero field narrows the selection.
type HeldJobsParams struct {
	Endpoint string
	WorkerID string
	// SeenBefore keeps the jobs whose worker was last seen at or before it, or never.
	SeenBefore time.Time
}

// HeldJob is an IN_PROGRESS job as the workers' side sees it.
type HeldJob struct {
	WorkerID string
	JobID    string
	Attempt  int
	Retries  int
	TakenAt  time.Time
}

// AppendChunkParams appends one stream chunk.
type AppendChunkParams struct {
	ID     string
	Expect Expect
	Data   json.RawMessage
}

// ReadChunksParams reads stream chunks.
type ReadChunksParams struct {
	ID    string
	After int64
	Drain bool
	Limit int // 0 means no bound
	// With names the payloads of the job to read with the chunks.
	With Payloads
}

// WorkerRecord is a worker the server has seen: the row a sighting writes.
type WorkerRecord struct {
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

// Session is a sign-in to the dashboard. The browser holds a random session id; the store holds
// only its hash, so that a copy of the database opens no session.
type Session struct {
	// Hash is spool.HashKey of the session id.
	Hash string
	// KeyHash is the hash of the key signed in with: the session speaks for that key while it
	// exists.
	KeyHash   string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// SessionStore holds the dashboard's sessions; both stores implement it.
type SessionStore interface {
	// PutSession stores a new session. ErrConflict if its hash is in use.
	PutSession(ctx context.Context, s Session) error
	// GetSession returns the session with hash. ErrNotFound if absent.
	GetSession(ctx context.Context, hash string) (Session, error)
	// DeleteSession deletes the session with hash; absent is not an error (signing out twice).
	DeleteSession(ctx context.Context, hash string) error
	// DeleteSessionsBefore deletes the sessions that expire at or before t and says how many.
	DeleteSessionsBefore(ctx context.Context, t time.Time) (int, error)
}
