package spool

import (
	"encoding/json"
	"time"
)

// Job is one job as the engine and the stores see it. The wire shapes (the /status object, the
// job-take payload) are built from it by the HTTP layers; fields that a client must never see
// (S3ConfigSealed, StopPending, Attempt) exist only here.
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
	// Deadline is the one instant at which the sweeper acts on the job, whatever its state:
	// IN_QUEUE: the TTL runs out; IN_PROGRESS: the execution timeout runs out;
	// terminal: the retained result is deleted.
	Deadline time.Time

	WorkerID string // the worker holding (or that last held) the job
	// Attempt counts takes; a worker's post is accepted only for the current attempt (fencing).
	Attempt int
	// Retries counts returns to the queue after the first take: lost workers and /retry.
	Retries int

	Output json.RawMessage // the result, or the latest progress value while IN_PROGRESS
	Error  string
	// StopPod records a result's stopPod flag: the worker asked to be restarted after this job.
	StopPod bool
	// EndedByWorker is true when the terminal state came from the worker's own result; repeated
	// identical posts of that result are then accepted, while posts after a cancel or timeout are not.
	EndedByWorker bool
	// StopPending marks a job the holding worker must be told to stop (cancelled or timed out while
	// IN_PROGRESS) until a job-stop poll of that worker has carried its id.
	StopPending bool
	// RetentionMs, when positive, replaces the default retention (set by /status?ttl=).
	RetentionMs int64
	// StreamCount is the number of chunks appended; StreamCursor how many /stream has returned.
	StreamCount  int64
	StreamCursor int64

	// Outbox is transient: a webhook delivery that the store enqueues in the same transaction that
	// writes the job (UpdateJob, UpdateJobs, TakeJobs, CreateJob). It is never stored on the job:
	// jobs returned or read back by a store have a nil Outbox.
	Outbox *WebhookMessage
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
	if j.Outbox != nil {
		m := *j.Outbox
		m.Payload = cloneRaw(m.Payload)
		c.Outbox = &m
	}
	return &c
}

func cloneRaw(b json.RawMessage) json.RawMessage {
	if b == nil {
		return nil
	}
	return append(json.RawMessage(nil), b...)
}

// DelayTime is the time the job waited in the queue before its current take, or false before a take.
func (j *Job) DelayTime() (time.Duration, bool) {
	if j.TakenAt.IsZero() {
		return 0, false
	}
	return j.TakenAt.Sub(j.QueuedAt), true
}

// ExecutionTime is the time from the take to the terminal state, or false if either is missing.
func (j *Job) ExecutionTime() (time.Duration, bool) {
	if j.TakenAt.IsZero() || j.FinishedAt.IsZero() {
		return 0, false
	}
	return j.FinishedAt.Sub(j.TakenAt), true
}

// Retention is how long terminal jobs stay readable.
type Retention struct {
	Run  time.Duration // jobs submitted with /run. Defaults to 30 min.
	Sync time.Duration // jobs submitted with /runsync. Defaults to 1 min.
}

// RetainUntil is when a job that becomes terminal at now is deleted.
func (j *Job) RetainUntil(now time.Time, r Retention) time.Time {
	if j.RetentionMs > 0 {
		return now.Add(time.Duration(j.RetentionMs) * time.Millisecond)
	}
	if j.Sync {
		return now.Add(r.Sync)
	}
	return now.Add(r.Run)
}
