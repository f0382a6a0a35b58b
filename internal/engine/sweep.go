package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// SweepResult counts what one sweep did.
type SweepResult struct {
	Expired, TimedOut, Deleted int
}

// Sweep runs one pass of the sweeper: queued jobs past their TTL become TIMED_OUT, running jobs
// past their execution timeout become TIMED_OUT (and their workers are told to stop), and terminal
// jobs past their retention are deleted. (Jobs of lost workers are the fleet's sweep.) Tests call
// it directly after moving a fake clock.
func (e *Engine) Sweep(ctx context.Context) (SweepResult, error) {
	var res SweepResult
	now := e.now()
	expired, err := e.each(ctx, store.JobFilter{States: []spool.State{spool.StateInQueue}, ExpiresBy: now}, CauseExpire,
		func(j *spool.Job, now time.Time) store.JobUpdate {
			return endByServer(j, spool.StateTimedOut, sweepMessage(j), false, now)
		})
	res.Expired = len(expired)
	if err != nil {
		return res, fmt.Errorf("sweep: expire queued jobs: %w", err)
	}
	timedOut, err := e.each(ctx, store.JobFilter{States: []spool.State{spool.StateInProgress}, TimesOutBy: now}, CauseTimeout,
		func(j *spool.Job, now time.Time) store.JobUpdate {
			return endByServer(j, spool.StateTimedOut, sweepMessage(j), true, now)
		})
	res.TimedOut = len(timedOut)
	if err != nil {
		return res, fmt.Errorf("sweep: time out running jobs: %w", err)
	}
	for {
		n, err := e.store.DeleteJobs(ctx, store.DeleteJobsParams{Before: now, Limit: batch})
		if err != nil {
			return res, fmt.Errorf("sweep: delete expired jobs: %w", err)
		}
		res.Deleted += n
		if n < batch {
			break
		}
	}
	if res != (SweepResult{}) {
		e.log.Debug("sweep", "expired", res.Expired, "timedOut", res.TimedOut, "deleted", res.Deleted)
	}
	return res, nil
}
