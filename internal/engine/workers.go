package engine

import (
	"context"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// What the fleet asks of the jobs its workers hold. The fleet decides about workers (who is
// alive, what they run); these methods decide about the jobs.

// AckStops returns the ids of the worker's jobs that it must be told to stop (cancelled or timed
// out while it ran them), and marks them told: each is returned once.
func (e *Engine) AckStops(ctx context.Context, endpoint, worker string) ([]string, error) {
	told, err := e.each(ctx, store.JobFilter{Endpoint: endpoint, WorkerID: worker, StopPending: true}, CauseStopsDelivered,
		func(j *spool.Job, _ time.Time) store.JobUpdate {
			return store.JobUpdate{ID: j.ID, Expect: store.Exactly(j), Change: store.JobChange{Set: store.SetStopPending}}
		})
	if err != nil {
		return nil, translate(err, "stop signals of worker "+worker)
	}
	ids := make([]string, len(told))
	for i, j := range told {
		ids[i] = j.ID
	}
	return ids, nil
}

// ReconcileParams is what a worker's heartbeat says it holds.
type ReconcileParams struct {
	Endpoint string
	WorkerID string
	// JobIDs are the jobs the worker says it holds.
	JobIDs []string
	// ForgottenBefore, when set, requeues the jobs the worker holds that it does not list and
	// took at or before then: a heartbeat that lists held jobs (runpod-python's and Spool's SDK
	// do) proves they were lost on the worker's side. Jobs taken later are left alone, because a
	// heartbeat sent before a take may arrive after it.
	ForgottenBefore time.Time
}

// Reconcile compares the jobs a worker says it holds with the jobs it does. A listed job the
// server ended while the worker ran it is signalled to stop again (its first signal may have been
// lost with its connection); a listed job that moved on without the worker (retried, requeued,
// taken by another, deleted) is returned, for the fleet to tell the worker to stop it; a held job
// the worker no longer lists is requeued (see ForgottenBefore).
func (e *Engine) Reconcile(ctx context.Context, p ReconcileParams) (movedOn []string, err error) {
	if _, err := e.Endpoint(p.Endpoint); err != nil {
		return nil, err
	}
	listed := make(map[string]bool, len(p.JobIDs))
	for _, id := range p.JobIDs {
		listed[id] = true
	}
	var jobs []*spool.Job
	if len(p.JobIDs) > 0 {
		if jobs, err = e.store.FindJobs(ctx, store.JobFilter{IDs: p.JobIDs}); err != nil {
			return nil, translate(err, "jobs of worker "+p.WorkerID)
		}
	}
	known := make(map[string]*spool.Job, len(jobs))
	for _, j := range jobs {
		known[j.ID] = j
	}
	var resend []store.JobUpdate
	for id := range listed {
		j, ok := known[id]
		switch {
		case !ok:
			movedOn = append(movedOn, id)
		case j.Endpoint != p.Endpoint:
			// Not this worker's business; never reveal other endpoints' jobs.
		case j.WorkerID == p.WorkerID && (j.State == spool.StateInProgress || j.EndedByWorker):
			// Held, or just finished by this worker (the heartbeat predates the result).
		case j.WorkerID == p.WorkerID && j.State.Terminal():
			if !j.StopPending {
				resend = append(resend, store.JobUpdate{ID: id, Expect: store.Exactly(j),
					Change: store.JobChange{Set: store.SetStopPending, StopPending: true}})
			}
		default:
			movedOn = append(movedOn, id)
		}
	}
	now := e.now()
	if _, err := e.write(ctx, CauseStopResent, now, resend...); err != nil {
		return movedOn, translate(err, "stop signals of worker "+p.WorkerID)
	}
	if p.ForgottenBefore.IsZero() {
		return movedOn, nil
	}
	held, err := e.store.FindJobs(ctx, store.JobFilter{Endpoint: p.Endpoint, WorkerID: p.WorkerID, States: []spool.State{spool.StateInProgress}})
	if err != nil {
		return movedOn, translate(err, "jobs of worker "+p.WorkerID)
	}
	var forgotten []store.JobUpdate
	for _, j := range held {
		if !listed[j.ID] && !j.TakenAt.After(p.ForgottenBefore) {
			forgotten = append(forgotten, e.loseWorker(j, "its pings stopped listing the job", now))
		}
	}
	_, err = e.write(ctx, CauseLostWorker, now, forgotten...)
	return movedOn, translate(err, "requeue the jobs worker "+p.WorkerID+" forgot")
}

// LostJobs counts what became of a lost worker's jobs.
type LostJobs struct {
	Requeued, Failed int
}

// LoseWorkerJobs handles a worker known to be gone (its process exited or was killed, or it was
// not seen for too long) at once: every job it holds goes back to the queue, or fails once its
// retries are used up, with why in the error.
func (e *Engine) LoseWorkerJobs(ctx context.Context, worker, why string) (LostJobs, error) {
	lost, err := e.each(ctx, store.JobFilter{WorkerID: worker, States: []spool.State{spool.StateInProgress}}, CauseLostWorker,
		func(j *spool.Job, now time.Time) store.JobUpdate { return e.loseWorker(j, why, now) })
	var n LostJobs
	for _, j := range lost {
		if j.State == spool.StateInQueue {
			n.Requeued++
		} else {
			n.Failed++
		}
	}
	return n, translate(err, "jobs of worker "+worker)
}
