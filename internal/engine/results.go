package engine

import (
	"context"
	"encoding/json"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// DoneParams is a decoded job-done post.
type DoneParams struct {
	Endpoint string
	WorkerID string
	JobID    string
	// Attempt, when positive, must equal the job's current attempt (Spool's own SDK sends it;
	// runpod-python does not, and is fenced by worker id alone).
	Attempt int
	// InProgress marks a progress update ({"status":"IN_PROGRESS"}): Output becomes the visible
	// progress and the job goes on.
	InProgress bool
	Output     json.RawMessage
	// Error, when set, makes the job FAILED.
	Error   *string
	StopPod bool
}

// DoneResult says what a job-done post did.
type DoneResult struct {
	// Job is the job's head as the post left it.
	Job *spool.Job
	// Applied is false for a repeated post or late progress that changed nothing.
	Applied bool
}

// fence is the expectation of a worker's post: the job is running and held by the worker, at the
// attempt it names (if it names one).
func fence(endpoint, worker string, attempt int) store.Expect {
	return store.Expect{State: spool.StateInProgress, Endpoint: endpoint, WorkerID: worker, Attempt: max(attempt, 0)}
}

// Done records a worker's result or progress. Only the worker holding the job's current attempt
// may post (CodeConflict otherwise); its repeated posts of a result are accepted and applied once,
// and progress arriving after the end is ignored.
func (e *Engine) Done(ctx context.Context, p DoneParams) (DoneResult, error) {
	if _, err := e.Endpoint(p.Endpoint); err != nil {
		return DoneResult{}, err
	}
	cause, c := CauseProgress, store.JobChange{Set: store.SetProgress, Progress: p.Output}
	if !p.InProgress {
		cause = CauseResult
		c = store.JobChange{
			Set:   finishing | store.SetOutput | store.SetError | store.SetStopPod | store.SetEndedByWorker | store.SetStopPending,
			State: spool.StateCompleted, Output: p.Output, StopPod: p.StopPod, EndedByWorker: true,
		}
		if p.Error != nil {
			c.State, c.Error = spool.StateFailed, *p.Error
		}
	}
	for range maxTries {
		now := e.now()
		c.FinishedAt = now
		changed, err := e.write(ctx, cause, now, store.JobUpdate{
			ID: p.JobID, Expect: fence(p.Endpoint, p.WorkerID, p.Attempt), Change: c, Webhook: !p.InProgress,
		})
		if err != nil {
			return DoneResult{}, translate(err, "job "+p.JobID)
		}
		if len(changed) == 1 {
			return DoneResult{Job: changed[0], Applied: true}, nil
		}
		// Not as expected: say why, from the job as it is now.
		j, err := e.read(ctx, p.Endpoint, p.JobID, 0)
		if err != nil {
			return DoneResult{}, err
		}
		holder := j.WorkerID == p.WorkerID && (p.Attempt <= 0 || p.Attempt == j.Attempt)
		switch {
		case holder && j.State == spool.StateInProgress:
			continue // taken again by the same worker since the write: write again
		case holder && j.State.Terminal() && (p.InProgress || j.EndedByWorker):
			return DoneResult{Job: j}, nil // late progress, or a repeat of the result already recorded
		case holder && j.State.Terminal():
			return DoneResult{}, spool.Errorf(spool.CodeConflict, "job %s is %s; the result was refused", j.ID, j.State)
		default:
			return DoneResult{}, spool.Errorf(spool.CodeConflict, "job %s is not held by worker %s", j.ID, p.WorkerID)
		}
	}
	return DoneResult{}, &spool.Error{Code: spool.CodeUnavailable, RetryAfter: 1, Message: "job " + p.JobID + " keeps changing; retry"}
}

// RefuseResult ends the job FAILED when its holder posts a result the server cannot take (over
// the size limit), saying why: the worker does not retry such a refusal, so without this the job
// would hang until its execution timeout. A post from anyone but the holder changes nothing, as
// always; only a real fault is returned.
func (e *Engine) RefuseResult(ctx context.Context, endpoint, worker, id string, attempt int, why string) error {
	msg := "the worker's result was refused: " + why
	_, err := e.Done(ctx, DoneParams{Endpoint: endpoint, WorkerID: worker, JobID: id, Attempt: attempt, Error: &msg})
	switch spool.ErrorCode(err) {
	case spool.CodeConflict, spool.CodeNotFound:
		return nil
	}
	return err
}

// AppendChunk appends a stream chunk posted by the worker holding the job.
func (e *Engine) AppendChunk(ctx context.Context, endpoint, worker, id string, attempt int, data json.RawMessage) error {
	if _, err := e.Endpoint(endpoint); err != nil {
		return err
	}
	for range maxTries {
		ok, err := e.store.AppendChunk(ctx, store.AppendChunkParams{ID: id, Expect: fence(endpoint, worker, attempt), Data: data})
		if err != nil {
			return translate(err, "job "+id)
		}
		if ok {
			e.after(Change{Cause: CauseChunk, From: spool.StateInProgress, Job: &spool.Job{
				ID: id, Endpoint: endpoint, State: spool.StateInProgress, WorkerID: worker, Attempt: attempt,
			}})
			return nil
		}
		j, err := e.read(ctx, endpoint, id, 0)
		if err != nil {
			return err
		}
		switch {
		case j.WorkerID != worker || (attempt > 0 && attempt != j.Attempt):
			return spool.Errorf(spool.CodeConflict, "job %s is not held by worker %s", id, worker)
		case j.State != spool.StateInProgress:
			return spool.Errorf(spool.CodeConflict, "job %s is %s; the chunk was refused", id, j.State)
		}
		// Taken again by the same worker since the append: append again.
	}
	return &spool.Error{Code: spool.CodeUnavailable, RetryAfter: 1, Message: "job " + id + " keeps changing; retry"}
}
