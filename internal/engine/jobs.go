package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/notify"
	"github.com/spool-run/spool/store"
)

// SubmitParams is a decoded /run or /runsync body.
type SubmitParams struct {
	Endpoint string
	// Input is the raw "input" value; required and not null.
	Input   json.RawMessage
	Webhook string
	// S3Config is the plaintext "s3Config" object; Submit seals it before anything is stored.
	S3Config json.RawMessage
	// ExecutionTimeoutMs and TTLMs are the submitted policy values; nil takes the endpoint default.
	ExecutionTimeoutMs *int64
	TTLMs              *int64
	LowPriority        bool
	Sync               bool
}

// Submit validates a submission, commits the new job and wakes a waiting worker.
func (e *Engine) Submit(ctx context.Context, p SubmitParams) (*spool.Job, error) {
	ep, err := e.Endpoint(p.Endpoint)
	if err != nil {
		return nil, err
	}
	if len(p.Input) == 0 || string(p.Input) == "null" {
		return nil, spool.Errorf(spool.CodeInvalid, `"input" is required and must not be null`)
	}
	if p.Webhook != "" {
		if err := spool.ValidateWebhookURL(p.Webhook); err != nil {
			return nil, err
		}
	}
	pol := spool.Policy{
		ExecutionTimeoutMs: ep.ExecutionTimeoutMs,
		TTLMs:              ep.TTLMs,
		LowPriority:        p.LowPriority,
	}
	if p.ExecutionTimeoutMs != nil {
		if err := spool.ValidateExecutionTimeout("policy.executionTimeout", *p.ExecutionTimeoutMs); err != nil {
			return nil, err
		}
		pol.ExecutionTimeoutMs = *p.ExecutionTimeoutMs
	}
	if p.TTLMs != nil {
		if err := spool.ValidateTTL("policy.ttl", *p.TTLMs); err != nil {
			return nil, err
		}
		pol.TTLMs = *p.TTLMs
	}
	if ep.MaxQueue > 0 {
		queued, err := e.store.CountQueued(ctx, store.CountQueuedParams{Endpoint: ep.Name, Limit: ep.MaxQueue})
		if err != nil {
			return nil, translate(err, "queue of "+ep.Name)
		}
		if queued >= ep.MaxQueue {
			return nil, &spool.Error{Code: spool.CodeTooMany, RetryAfter: 5,
				Message: "queue of endpoint " + ep.Name + " is full; retry later"}
		}
	}
	now := e.now()
	j := &spool.Job{
		ID:          spool.NewJobID(p.Sync),
		Endpoint:    ep.Name,
		State:       spool.StateInQueue,
		Input:       p.Input,
		Webhook:     p.Webhook,
		HadS3Config: len(p.S3Config) > 0,
		Policy:      pol,
		Sync:        p.Sync,
		RetentionMs: e.cfg.Retention.For(p.Sync).Milliseconds(),
		CreatedAt:   now,
		QueuedAt:    now,
		ExpiresAt:   now.Add(pol.TTL()),
	}
	if j.S3ConfigSealed, err = e.sealS3Config(j.ID, p.S3Config); err != nil {
		return nil, err
	}
	if err := e.store.CreateJob(ctx, store.CreateJobParams{Job: j}); err != nil {
		return nil, translate(err, "create job")
	}
	e.after(Change{Cause: CauseSubmit, Job: j})
	return j, nil
}

// Job returns a job of an endpoint as the client API shows it (its output or progress, not its
// input). A job of another endpoint is reported as not found, so an id does not leak across
// endpoints.
func (e *Engine) Job(ctx context.Context, endpoint, id string) (*spool.Job, error) {
	return e.read(ctx, endpoint, id, store.PayloadOutput)
}

// JobAnyEndpoint returns a whole job by id, whatever its endpoint: the admin API's view.
func (e *Engine) JobAnyEndpoint(ctx context.Context, id string) (*spool.Job, error) {
	j, err := e.store.GetJob(ctx, store.GetJobParams{ID: id, With: store.AllPayloads})
	return j, translate(err, "job "+id)
}

// read returns a job of an endpoint with the payloads with names.
func (e *Engine) read(ctx context.Context, endpoint, id string, with store.Payloads) (*spool.Job, error) {
	if _, err := e.Endpoint(endpoint); err != nil {
		return nil, err
	}
	j, err := e.store.GetJob(ctx, store.GetJobParams{ID: id, With: with})
	if err != nil {
		return nil, translate(err, "job "+id)
	}
	if j.Endpoint != endpoint {
		return nil, notFound(id)
	}
	return j, nil
}

func notFound(id string) error { return spool.Errorf(spool.CodeNotFound, "job %s not found", id) }

// ListJobs lists whole jobs for the admin API.
func (e *Engine) ListJobs(ctx context.Context, p store.ListJobsParams) ([]*spool.Job, error) {
	p.With = store.AllPayloads
	jobs, err := e.store.ListJobs(ctx, p)
	return jobs, translate(err, "list jobs")
}

// Counts counts an endpoint's retained jobs by state (for /health).
func (e *Engine) Counts(ctx context.Context, endpoint string) (spool.JobCounts, error) {
	if _, err := e.Endpoint(endpoint); err != nil {
		return spool.JobCounts{}, err
	}
	counts, err := e.store.CountJobs(ctx, endpoint)
	return counts, translate(err, "count jobs")
}

// maxTries bounds how often transit reads a job again because it changed between the read and
// the write: a change that keeps losing that race is refused rather than retried for ever.
const maxTries = 8

// transit reads a job of an endpoint (with the payloads with names), asks decide what to write
// (nil: nothing), writes it on the condition that the job is still as read, and returns the job as
// it then is: as written (its head), or as read when there was nothing to write. It reads again
// when the job changed in between.
func (e *Engine) transit(ctx context.Context, endpoint, id string, with store.Payloads, cause Cause,
	decide func(j *spool.Job, now time.Time) (*store.JobUpdate, error)) (*spool.Job, error) {
	for range maxTries {
		j, err := e.read(ctx, endpoint, id, with)
		if err != nil {
			return nil, err
		}
		now := e.now()
		u, err := decide(j, now)
		if err != nil || u == nil {
			return j, err
		}
		changed, err := e.write(ctx, cause, now, *u)
		if err != nil {
			return nil, translate(err, "job "+id)
		}
		if len(changed) == 1 {
			return changed[0], nil
		}
	}
	return nil, &spool.Error{Code: spool.CodeUnavailable, RetryAfter: 1, Message: "job " + id + " keeps changing; retry"}
}

// SetRetention implements /status?ttl=: the retained result expires ttl from now. On a job that is
// not terminal yet, the retention applies from the moment it ends.
func (e *Engine) SetRetention(ctx context.Context, endpoint, id string, ttl time.Duration) (*spool.Job, error) {
	if ttl <= 0 {
		return nil, spool.Errorf(spool.CodeInvalid, "ttl must be a positive number of milliseconds")
	}
	_, err := e.transit(ctx, endpoint, id, 0, CauseRetention, func(j *spool.Job, _ time.Time) (*store.JobUpdate, error) {
		c := store.JobChange{Set: store.SetRetention, RetentionMs: ttl.Milliseconds()}
		if j.State.Terminal() {
			c.Set |= store.SetDeleteAt
		}
		return &store.JobUpdate{ID: j.ID, Expect: store.Exactly(j), Change: c}, nil
	})
	if err != nil {
		return nil, err
	}
	return e.Job(ctx, endpoint, id)
}

// WaitTerminal returns the job once it is terminal, or as it is when wait runs out, the engine
// drains or ctx ends.
func (e *Engine) WaitTerminal(ctx context.Context, endpoint, id string, wait time.Duration) (*spool.Job, error) {
	j, _, err := poll(ctx, e, notify.Job(id), wait, func() (*spool.Job, bool, error) {
		j, err := e.Job(ctx, endpoint, id)
		return j, err == nil && j.State.Terminal(), err
	})
	return j, err
}

// Stream implements /stream: it returns the chunks not returned before (drain semantics) with the
// job they belong to (its head). With wait > 0 it waits for the next chunk or the terminal state
// when there is nothing new. The first answer with a terminal state carries every remaining chunk.
func (e *Engine) Stream(ctx context.Context, endpoint, id string, wait time.Duration) (*spool.Job, []spool.Chunk, error) {
	return e.readStream(ctx, endpoint, id, wait, store.ReadChunksParams{ID: id, Drain: true})
}

// StreamFrom returns the chunks after seq without consuming them (Server-Sent Events, which resume
// by Last-Event-ID), with the job as the client API shows it (its output), waiting like Stream.
func (e *Engine) StreamFrom(ctx context.Context, endpoint, id string, after int64, wait time.Duration) (*spool.Job, []spool.Chunk, error) {
	return e.readStream(ctx, endpoint, id, wait, store.ReadChunksParams{ID: id, After: after, With: store.PayloadOutput})
}

// Chunks returns at most limit of the job's chunks after seq, without consuming them and at once
// (the admin API).
func (e *Engine) Chunks(ctx context.Context, endpoint, id string, after int64, limit int) ([]spool.Chunk, error) {
	_, chunks, err := e.readStream(ctx, endpoint, id, 0, store.ReadChunksParams{ID: id, After: after, Limit: limit})
	return chunks, err
}

func (e *Engine) readStream(ctx context.Context, endpoint, id string, wait time.Duration, p store.ReadChunksParams) (*spool.Job, []spool.Chunk, error) {
	if _, err := e.read(ctx, endpoint, id, 0); err != nil {
		return nil, nil, err
	}
	type read struct {
		job    *spool.Job
		chunks []spool.Chunk
	}
	r, _, err := poll(ctx, e, notify.Job(id), wait, func() (read, bool, error) {
		j, chunks, err := e.store.ReadChunks(ctx, p)
		if err != nil {
			return read{}, false, translate(err, "job "+id)
		}
		return read{j, chunks}, len(chunks) > 0 || j.State.Terminal(), nil
	})
	if err != nil {
		return nil, nil, err
	}
	return r.job, r.chunks, nil
}

// Cancel cancels a queued or running job. A running job's worker is told through its job-stop
// channel. Cancelling a terminal job changes nothing.
func (e *Engine) Cancel(ctx context.Context, endpoint, id string) (*spool.Job, error) {
	return e.transit(ctx, endpoint, id, store.PayloadOutput, CauseCancel, func(j *spool.Job, now time.Time) (*store.JobUpdate, error) {
		if j.State.Terminal() {
			return nil, nil
		}
		u := endByServer(j, spool.StateCancelled, "", j.State == spool.StateInProgress, now)
		return &u, nil
	})
}

// Retry implements /retry: a FAILED or TIMED_OUT job goes back to the queue with the same id and
// input, its output and error cleared.
func (e *Engine) Retry(ctx context.Context, endpoint, id string) (*spool.Job, error) {
	return e.transit(ctx, endpoint, id, 0, CauseRetry, func(j *spool.Job, now time.Time) (*store.JobUpdate, error) {
		if !j.State.Retryable() {
			return nil, spool.Errorf(spool.CodeInvalid, "job %s is %s; only FAILED or TIMED_OUT jobs can be retried", id, j.State)
		}
		if j.HadS3Config {
			return nil, retryRefusal(id)
		}
		u := requeue(j, now)
		return &u, nil
	})
}

// batch bounds the jobs one write of a sweep or a purge changes, so a backlog never becomes one
// huge transaction that holds up submissions and takes.
const batch = 500

// each finds the jobs f selects, a batch at a time, and writes what decide makes of each, until a
// find comes back short; it returns the jobs it changed. A job that changed between the find and
// the write is left alone (and found again if it still matches).
func (e *Engine) each(ctx context.Context, f store.JobFilter, cause Cause, decide func(j *spool.Job, now time.Time) store.JobUpdate) ([]*spool.Job, error) {
	f.Limit = batch
	var all []*spool.Job
	for {
		found, err := e.store.FindJobs(ctx, f)
		if err != nil {
			return all, err
		}
		now := e.now()
		updates := make([]store.JobUpdate, len(found))
		for i, j := range found {
			updates[i] = decide(j, now)
		}
		changed, err := e.write(ctx, cause, now, updates...)
		all = append(all, changed...)
		if err != nil || len(found) < batch {
			return all, err
		}
	}
}

// PurgeQueue cancels every queued job of an endpoint and reports how many.
func (e *Engine) PurgeQueue(ctx context.Context, endpoint string) (int, error) {
	if _, err := e.Endpoint(endpoint); err != nil {
		return 0, err
	}
	purged, err := e.each(ctx, store.JobFilter{Endpoint: endpoint, States: []spool.State{spool.StateInQueue}}, CausePurge,
		func(j *spool.Job, now time.Time) store.JobUpdate {
			return endByServer(j, spool.StateCancelled, "purged", false, now)
		})
	if err != nil {
		return len(purged), translate(err, "purge queue")
	}
	return len(purged), nil
}

// retryRefusal is /retry's answer for a job that was submitted with an s3Config: it was erased
// when the job ended (docs/contract.md: erased once terminal), and running the job again without it
// would silently drop the client's outputs.
func retryRefusal(id string) error {
	return spool.Errorf(spool.CodeInvalid, "job %s was submitted with an s3Config, which Spool erased when the job ended "+
		"(credentials are kept only while a job is queued or running); submit the job again with its s3Config", id)
}

// sweepMessage names the policy value a sweep ran out of, for the job's error.
func sweepMessage(j *spool.Job) string {
	if j.State == spool.StateInQueue {
		return fmt.Sprintf("job was not taken by a worker within its ttl of %d ms", j.Policy.TTLMs)
	}
	return fmt.Sprintf("execution timeout of %d ms exceeded", j.Policy.ExecutionTimeoutMs)
}
