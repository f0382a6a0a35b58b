package engine

import (
	"context"
	"errors"
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
			// Still pending: of two polls at once, one delivers the signal.
			expect := store.Exactly(j)
			expect.StopPending = store.FlagSet
			return store.JobUpdate{ID: j.ID, Expect: expect, Change: store.JobChange{Set: store.SetStopPending}}
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
// lost with its connection); a listed job of the endpoint that moved on without the worker
// (retried, requeued, taken by another) is returned, for the fleet to tell the worker to stop it;
// a held job the worker no longer lists is requeued (see ForgottenBefore).
//
// Listed ids the server does not know are ignored, and ids that cannot be job ids are not even
// looked up: anyone with a worker key may list anything, and every id returned becomes memory the
// fleet keeps for the worker. A job deleted (past its retention) had ended long before, so its
// worker was told to stop it then.
func (e *Engine) Reconcile(ctx context.Context, p ReconcileParams) (movedOn []string, err error) {
	if _, err := e.Endpoint(p.Endpoint); err != nil {
		return nil, err
	}
	listed := make(map[string]bool, len(p.JobIDs))
	ids := make([]string, 0, len(p.JobIDs))
	for _, id := range p.JobIDs {
		if !listed[id] && spool.PlausibleJobID(id) {
			listed[id] = true
			ids = append(ids, id)
		}
	}
	var jobs []*spool.Job
	if len(ids) > 0 {
		if jobs, err = e.store.FindJobs(ctx, store.JobFilter{IDs: ids}); err != nil {
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
			// Unknown: nothing the server handed out, so nothing to stop.
		case j.Endpoint != p.Endpoint:
			// Not this worker's business; never reveal other endpoints' jobs.
		case j.WorkerID == p.WorkerID && (j.State == spool.StateInProgress || j.EndedByWorker):
			// Held, or just finished by this worker (the heartbeat predates the result).
		case j.WorkerID == p.WorkerID && j.State.Terminal():
			if !j.StopPending {
				expect := store.Exactly(j)
				expect.StopPending = store.FlagClear
				resend = append(resend, store.JobUpdate{ID: id, Expect: expect,
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
	held, err := e.store.HeldJobs(ctx, store.HeldJobsParams{Endpoint: p.Endpoint, WorkerID: p.WorkerID})
	if err != nil {
		return movedOn, translate(err, "jobs of worker "+p.WorkerID)
	}
	var forgotten []store.HeldJob
	for _, h := range held {
		if !listed[h.JobID] && !h.TakenAt.After(p.ForgottenBefore) {
			forgotten = append(forgotten, h)
		}
	}
	_, err = e.LoseJobs(ctx, forgotten, "its pings stopped listing the job", time.Time{})
	return movedOn, err
}

// LostJobs counts what became of the jobs of lost workers.
type LostJobs struct {
	// Workers counts the workers that lost jobs.
	Workers          int
	Requeued, Failed int
}

// LoseWorkerJobs handles a worker known to be gone (its process exited or was killed) at once:
// every job it holds goes back to the queue, or fails once its retries are used up, with why in
// the error.
func (e *Engine) LoseWorkerJobs(ctx context.Context, worker, why string) (LostJobs, error) {
	if worker == "" {
		return LostJobs{}, errors.New("engine: lose the jobs of which worker?")
	}
	held, err := e.store.HeldJobs(ctx, store.HeldJobsParams{WorkerID: worker})
	if err != nil {
		return LostJobs{}, translate(err, "jobs of worker "+worker)
	}
	return e.LoseJobs(ctx, held, why, time.Time{})
}

// LoseJobs handles jobs whose worker is gone, each as it was held (the same worker and attempt):
// back to the queue, or FAILED past its retries, with why in the error. A job its worker has
// since finished, or that moved on, is left alone; with seenBefore set, so is every job of a
// worker seen after it (the lost-worker sweep: a worker that came back is not lost).
func (e *Engine) LoseJobs(ctx context.Context, held []store.HeldJob, why string, seenBefore time.Time) (LostJobs, error) {
	now := e.now()
	updates := make([]store.JobUpdate, len(held))
	for i, h := range held {
		u := e.loseWorker(&spool.Job{ID: h.JobID, State: spool.StateInProgress, WorkerID: h.WorkerID, Attempt: h.Attempt, Retries: h.Retries}, why, now)
		u.Expect.WorkerSeenBefore = seenBefore
		updates[i] = u
	}
	lost, err := e.write(ctx, CauseLostWorker, now, updates...)
	var n LostJobs
	workerOf := make(map[string]string, len(held))
	for _, h := range held {
		workerOf[h.JobID] = h.WorkerID
	}
	workers := map[string]bool{}
	for _, j := range lost {
		workers[workerOf[j.ID]] = true
		if j.State == spool.StateInQueue {
			n.Requeued++
		} else {
			n.Failed++
		}
	}
	n.Workers = len(workers)
	return n, translate(err, "lose jobs")
}
