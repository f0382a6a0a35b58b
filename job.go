package spool

import (
	"encoding/json"
	"time"
)

// Job is one job as the engine and the stores see it. The wire shapes (the /status object, the
// job-take payload) are built from it by the HTTP layers; fields that a client must never see
// (S3ConfigSealed, StopPending, Attempt) exist only here.
//
// Input, Output, Progress and S3ConfigSealed are the job's payloads: stores load them only when
// asked (store.Payloads), and leave them nil otherwise; every other field is the job's head.
type Job struct {
	ID       string
	Endpoint string
	State    State
	// Input is the submitted "input" value, byte for byte as the client sent it.
	Input   json.RawMessage
	Webhook string
	// S3ConfigSealed is the submitted "s3Config" object as the engine seals it (AES-256-GCM under
	// the server's key, the job id as associated data): stores keep only this ciphertext. The
	// engine opens it for the job-take answer of the worker holding the job's lease and for no one
	// else, and erases it once the job is terminal.
	S3ConfigSealed []byte
	// HadS3Config records that the job was submitted with an s3Config; it outlives the erasure
	// (/retry refuses such a job: its s3Config is gone).
	HadS3Config bool
	Policy      Policy
	// Sync marks a /runsync job: its result is retained for Retention.Sync instead of Retention.Run.
	Sync bool

	CreatedAt time.Time
	// QueuedAt is when the job last entered the queue (submission, a requeue or /retry); delayTime
	// counts from it.
	QueuedAt   time.Time
	TakenAt    time.Time // zero until a worker takes the job
	FinishedAt time.Time // zero until the job is terminal

	// The sweeper's deadlines, one per state that has one; each is set when the job enters that
	// state and means nothing in the others.
	//
	// ExpiresAt: while IN_QUEUE, the TTL runs out (QueuedAt + Policy.TTLMs).
	ExpiresAt time.Time
	// TimeoutAt: while IN_PROGRESS, the execution timeout runs out (TakenAt +
	// Policy.ExecutionTimeoutMs).
	TimeoutAt time.Time
	// DeleteAt: once terminal, the retained result is deleted (FinishedAt + RetentionMs, or what
	// /status?ttl= set).
	DeleteAt time.Time

	WorkerID string // the worker holding (or that last held) the job
	// Attempt counts takes; a worker's post is accepted only for the current attempt (fencing).
	Attempt int
	// Retries counts returns to the queue after the first take: lost workers and /retry.
	Retries int

	// Output is the result the job ended with; nil until then, and for a job the server ended.
	Output json.RawMessage
	// Progress is the latest progress value its worker posted while IN_PROGRESS (RunPod shows
	// it as the output of a running job); nil otherwise.
	Progress json.RawMessage
	Error    string
	// StopPod records a result's stopPod flag: the worker asked to be restarted after this job.
	StopPod bool
	// EndedByWorker is true when the terminal state came from the worker's own result; repeated
	// identical posts of that result are then accepted, while posts after a cancel or timeout are not.
	EndedByWorker bool
	// StopPending marks a job the holding worker must be told to stop (cancelled or timed out while
	// IN_PROGRESS) until a job-stop poll of that worker has carried its id.
	StopPending bool
	// RetentionMs is how long the job stays readable once terminal: the server's retention for
	// /run or /runsync jobs when submitted, or what /status?ttl= set since.
	RetentionMs int64
	// StreamCount is the number of chunks appended; StreamCursor how many /stream has returned.
	StreamCount  int64
	StreamCursor int64
}

// Chunk is one streamed output, as posted by the worker to job-stream: the value of its "output".
type Chunk struct {
	Seq  int64 // 1-based, in arrival order
	Data json.RawMessage
}

// Clone returns a copy of j that shares no mutable state with it.
func (j *Job) Clone() *Job {
	c := *j
	c.Input = cloneRaw(j.Input)
	c.S3ConfigSealed = cloneRaw(j.S3ConfigSealed)
	c.Output = cloneRaw(j.Output)
	c.Progress = cloneRaw(j.Progress)
	return &c
}

func cloneRaw(b json.RawMessage) json.RawMessage {
	if b == nil {
		return nil
	}
	return append(json.RawMessage(nil), b...)
}

// DelayTime is the time the job waited in the queue before its current take, or false before a take.
//
// Both are differences of instants that different replicas may have written, each on its reading
// of the database's clock, which agree to within a round trip: a difference a hair below zero is
// that disagreement, and reads as zero.
func (j *Job) DelayTime() (time.Duration, bool) {
	if j.TakenAt.IsZero() {
		return 0, false
	}
	return max(0, j.TakenAt.Sub(j.QueuedAt)), true
}

// ExecutionTime is the time from the take to the terminal state, or false if either is missing.
func (j *Job) ExecutionTime() (time.Duration, bool) {
	if j.TakenAt.IsZero() || j.FinishedAt.IsZero() {
		return 0, false
	}
	return max(0, j.FinishedAt.Sub(j.TakenAt)), true
}

// Retention is how long terminal jobs stay readable.
type Retention struct {
	Run  time.Duration // jobs submitted with /run. Defaults to 30 min.
	Sync time.Duration // jobs submitted with /runsync. Defaults to 1 min.
}

// For is the retention of a job submitted with /runsync (sync) or /run.
func (r Retention) For(sync bool) time.Duration {
	if sync {
		return r.Sync
	}
	return r.Run
}
