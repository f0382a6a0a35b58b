package engine

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/notify"
	"github.com/spool-run/spool/store"
)

// sweepBatch bounds the jobs one sweeper step changes, so a backlog never becomes one huge
// transaction that holds up submissions and takes.
const sweepBatch = 500

// SweepResult counts what one sweep did.
type SweepResult struct {
	Expired, TimedOut, Requeued, Failed, Deleted int
}

// Sweep runs one pass of the sweeper: queued jobs past their TTL become TIMED_OUT, running jobs
// past their execution timeout become TIMED_OUT (and their workers are told to stop), jobs of
// workers unseen for WorkerLostAfter go back to the queue (or fail after MaxRetries), and terminal
// jobs past their retention are deleted. Tests call it directly after moving a fake clock.
func (e *Engine) Sweep(ctx context.Context) (SweepResult, error) {
	var res SweepResult
	now := e.now()

	expired, err := e.sweepJobs(ctx, store.JobFilter{States: []spool.State{spool.StateInQueue}, DeadlineBefore: now},
		func(j *spool.Job) error {
			e.endByServer(j, spool.StateTimedOut, fmt.Sprintf(
				"job was not taken by a worker within its ttl of %d ms", j.Policy.TTLMs), now)
			return nil
		})
	if err != nil {
		return res, err
	}
	res.Expired = len(expired)
	e.observeFinished(expired)

	timedOut, err := e.sweepJobs(ctx, store.JobFilter{States: []spool.State{spool.StateInProgress}, DeadlineBefore: now},
		func(j *spool.Job) error {
			e.endByServer(j, spool.StateTimedOut, fmt.Sprintf(
				"execution timeout of %d ms exceeded", j.Policy.ExecutionTimeoutMs), now)
			return nil
		})
	if err != nil {
		return res, err
	}
	res.TimedOut = len(timedOut)
	e.observeFinished(timedOut)

	var lost []*spool.Job
	if now.Sub(e.startedAt) >= e.cfg.WorkerLostAfter {
		lost, err = e.sweepJobs(ctx, store.JobFilter{
			States: []spool.State{spool.StateInProgress}, WorkerSeenBefore: now.Add(-e.cfg.WorkerLostAfter),
		}, func(j *spool.Job) error {
			e.loseWorker(j, now, "no ping for "+e.cfg.WorkerLostAfter.String())
			return nil
		})
		if err != nil {
			return res, err
		}
	}
	for _, j := range lost {
		if j.State == spool.StateInQueue {
			res.Requeued++
			e.notifier.Notify(notify.Work(j.Endpoint))
		} else {
			res.Failed++
		}
		e.observeLoss(j, "lost_worker")
	}

	for {
		n, err := e.store.DeleteJobs(ctx, store.DeleteJobsParams{Before: now, Limit: sweepBatch})
		if err != nil {
			return res, fmt.Errorf("delete expired jobs: %w", err)
		}
		res.Deleted += n
		if n < sweepBatch {
			break
		}
	}
	// Forget workers long gone, so the worker list does not grow without bound.
	if _, err := e.store.DeleteWorkers(ctx, store.DeleteWorkersParams{SeenBefore: now.Add(-time.Hour)}); err != nil {
		return res, fmt.Errorf("delete old workers: %w", err)
	}
	e.sighted.forget(now.Add(-time.Hour))
	if res != (SweepResult{}) {
		e.log.Debug("sweep", "expired", res.Expired, "timedOut", res.TimedOut, "requeued", res.Requeued,
			"failed", res.Failed, "deleted", res.Deleted)
	}
	return res, nil
}

// sweepJobs applies fn to every job matching filter, in batches, and wakes whatever waits on them.
func (e *Engine) sweepJobs(ctx context.Context, filter store.JobFilter, fn func(*spool.Job) error) ([]*spool.Job, error) {
	filter.Limit = sweepBatch
	var all []*spool.Job
	for {
		jobs, err := e.store.UpdateJobs(ctx, store.UpdateJobsParams{Filter: filter, Apply: guarded(fn)})
		if err != nil {
			return all, fmt.Errorf("sweep: %w", err)
		}
		for _, j := range jobs {
			e.notifyJob(j)
		}
		all = append(all, jobs...)
		if len(jobs) < sweepBatch {
			return all, nil
		}
	}
}

func (e *Engine) observeFinished(jobs []*spool.Job) {
	for _, j := range jobs {
		e.obs.JobFinished(j.Endpoint, j.State)
	}
}

// guarded wraps an Apply function with the state machine of CONTRACT.md §3: a transition it does
// not allow is refused (nothing is written) and reported as the internal fault it would be.
func guarded(fn func(*spool.Job) error) func(*spool.Job) error {
	return func(j *spool.Job) error {
		from := j.State
		if err := fn(j); err != nil {
			return err
		}
		if j.State != from && !spool.CanTransition(from, j.State) {
			return fmt.Errorf("engine: refused transition %s -> %s of job %s", from, j.State, j.ID)
		}
		return nil
	}
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

func itoa(n int) string { return strconv.Itoa(n) }
