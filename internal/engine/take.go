package engine

import (
	"context"
	"encoding/json"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/notify"
	"github.com/spool-run/spool/store"
)

// Handout is a job handed to a worker: the job as its take wrote it (with its input), and its
// s3Config opened for that worker's job-take answer, and for nothing else (nil when it has none).
type Handout struct {
	Job      *spool.Job
	S3Config json.RawMessage
}

// Take hands up to n queued jobs of endpoint to a worker, waiting up to wait for one to arrive
// (a long-poll). It returns nothing and no error when wait runs out or the engine drains.
func (e *Engine) Take(ctx context.Context, endpoint, worker string, n int, wait time.Duration) ([]Handout, error) {
	if _, err := e.Endpoint(endpoint); err != nil {
		return nil, err
	}
	n = max(n, 1)
	handouts, _, err := poll(ctx, e, notify.Work(endpoint), wait, func() ([]Handout, bool, error) {
		if e.Draining() {
			return nil, false, nil
		}
		h, err := e.takeOpenable(ctx, endpoint, worker, n)
		return h, len(h) > 0, err
	})
	return handouts, err
}

// takeOpenable claims jobs and opens their s3Configs; a job whose s3Config does not open (the
// server's key changed while it was queued) fails instead of going out without it. When every job
// claimed failed so, it claims again, so a waiting worker is not sent away while others wait.
func (e *Engine) takeOpenable(ctx context.Context, endpoint, worker string, n int) ([]Handout, error) {
	for {
		now := e.now()
		jobs, err := e.store.ClaimJobs(ctx, store.ClaimJobsParams{Endpoint: endpoint, Max: n, Now: now, Change: claim(worker, now)})
		if err != nil {
			return nil, translate(err, "take jobs")
		}
		if len(jobs) == 0 {
			return nil, nil
		}
		changes := make([]Change, len(jobs))
		for i, j := range jobs {
			changes[i] = Change{Cause: CauseTake, From: spool.StateInQueue, Job: j}
		}
		e.after(changes...)
		handouts := make([]Handout, 0, len(jobs))
		var unopenable []store.JobUpdate
		for _, j := range jobs {
			s3, err := e.openS3Config(j)
			if err != nil {
				e.log.Error("a taken job's s3Config cannot be decrypted; the job fails", "job", j.ID, "endpoint", j.Endpoint)
				// The worker never got the job: nobody to tell to stop.
				unopenable = append(unopenable, endByServer(j, spool.StateFailed, undecryptableS3Config, false, now))
				continue
			}
			handouts = append(handouts, Handout{Job: j, S3Config: s3})
		}
		if _, err := e.write(ctx, CauseUndecryptable, now, unopenable...); err != nil {
			if len(handouts) == 0 {
				return nil, translate(err, "fail undecryptable jobs")
			}
			// The jobs that open go out; those that do not stay with this worker, which never
			// gets them, until its pings (which do not list them) or their timeout end them.
			e.log.Error("fail undecryptable jobs", "err", err)
		}
		if len(handouts) > 0 {
			return handouts, nil
		}
	}
}

// Release puts jobs whose take answer never reached the worker (its connection dropped first)
// back in the queue, as for a lost worker.
func (e *Engine) Release(ctx context.Context, jobs []*spool.Job) error {
	now := e.now()
	updates := make([]store.JobUpdate, len(jobs))
	for i, j := range jobs {
		updates[i] = e.loseWorker(j, "its take request was dropped before the job was delivered", now)
	}
	_, err := e.write(ctx, CauseUndelivered, now, updates...)
	return translate(err, "release jobs")
}
