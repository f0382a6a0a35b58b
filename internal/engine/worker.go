package engine

import (
	"context"
	"encoding/json"
	"sort"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// Take hands up to max queued jobs of endpoint to a worker, waiting up to wait for one to arrive
// (a long-poll). It returns no jobs and no error when wait runs out or the engine drains.
func (e *Engine) Take(ctx context.Context, endpoint, worker string, max int, wait time.Duration) ([]*spool.Job, error) {
	if _, err := e.Endpoint(endpoint); err != nil {
		return nil, err
	}
	if max < 1 {
		max = 1
	}
	if err := e.touch(ctx, endpoint, worker); err != nil {
		return nil, err
	}
	t := e.clock.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-e.draining:
			return nil, nil
		default:
		}
		ch := e.hub.wait(queueKey(endpoint))
		now := e.now()
		jobs, err := e.store.TakeJobs(ctx, store.TakeJobsParams{
			Endpoint: endpoint, Max: max, Now: now,
			Apply: func(j *spool.Job) error {
				j.State = spool.StateInProgress
				j.WorkerID = worker
				j.Attempt++
				j.TakenAt = now
				j.Deadline = now.Add(j.Policy.ExecutionTimeout())
				j.Output = nil
				j.Error = ""
				return nil
			},
		})
		if err != nil {
			return nil, translate(err, "take jobs")
		}
		if len(jobs) > 0 {
			for _, j := range jobs {
				e.hub.notify(jobKey(j.ID))
				d, _ := j.DelayTime()
				e.obs.JobStarted(endpoint, d)
			}
			return jobs, nil
		}
		again, err := e.wait(ctx, ch, t)
		if err != nil {
			return nil, err
		}
		if !again {
			// The worker was alive for the whole poll: record it, or a worker that does not ping
			// (no RUNPOD_POD_ID) could be declared lost while it long-polls with jobs in hand.
			return nil, e.touch(ctx, endpoint, worker)
		}
	}
}

func (e *Engine) touch(ctx context.Context, endpoint, worker string) error {
	err := e.store.TouchWorker(ctx, store.TouchWorkerParams{ID: worker, Endpoint: endpoint, Now: e.now()})
	return translate(err, "worker "+worker)
}

// Release puts jobs whose take answer never reached the worker (its connection dropped first)
// back in the queue, as for a lost worker.
func (e *Engine) Release(ctx context.Context, jobs []*spool.Job) error {
	now := e.now()
	for _, taken := range jobs {
		applied := false
		j, err := e.store.UpdateJob(ctx, store.UpdateJobParams{ID: taken.ID, Apply: func(j *spool.Job) error {
			if j.State != spool.StateInProgress || j.WorkerID != taken.WorkerID || j.Attempt != taken.Attempt {
				return store.ErrSkip
			}
			e.loseWorker(j, now, "its take request was dropped before the job was delivered")
			applied = true
			return nil
		}})
		if err != nil {
			return translate(err, "release job "+taken.ID)
		}
		if applied {
			e.notifyJob(j)
			e.hub.notify(queueKey(j.Endpoint))
			e.observeLoss(j, "undelivered")
		}
	}
	return nil
}

// loseWorker handles a job whose worker is gone: back to the queue with one more retry, or FAILED
// once the retries are used up. Handler errors never come here: they are results, not losses.
func (e *Engine) loseWorker(j *spool.Job, now time.Time, why string) {
	if j.Retries >= e.cfg.MaxRetries {
		worker := j.WorkerID
		e.endByServer(j, spool.StateFailed, "worker "+worker+" was lost ("+why+") and the job has used its "+
			itoa(e.cfg.MaxRetries)+" automatic retries", now)
		j.StopPending = false // the worker is gone; nobody is left to tell
		return
	}
	e.requeue(j, now)
}

// observeLoss reports a job taken from a lost worker: requeued, or failed past its retries.
func (e *Engine) observeLoss(j *spool.Job, reason string) {
	if j.State == spool.StateInQueue {
		e.obs.JobRequeued(j.Endpoint, reason)
	} else {
		e.obs.JobFinished(j.Endpoint, j.State)
	}
}

// StopSignals returns the ids of jobs the worker must stop (cancelled or timed out while it held
// them), waiting up to wait for one. Each id is delivered once; a ping that still lists a stopped
// job makes it pending again.
func (e *Engine) StopSignals(ctx context.Context, endpoint, worker string, wait time.Duration) ([]string, error) {
	if _, err := e.Endpoint(endpoint); err != nil {
		return nil, err
	}
	t := e.clock.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-e.draining:
			return nil, nil
		default:
		}
		ch := e.hub.wait(stopKey(worker))
		jobs, err := e.store.UpdateJobs(ctx, store.UpdateJobsParams{
			Filter: store.JobFilter{Endpoint: endpoint, WorkerID: worker, StopPending: true},
			Apply: func(j *spool.Job) error {
				j.StopPending = false
				return nil
			},
		})
		if err != nil {
			return nil, translate(err, "stop signals")
		}
		if len(jobs) > 0 {
			ids := make([]string, len(jobs))
			for i, j := range jobs {
				ids[i] = j.ID
			}
			sort.Strings(ids)
			return ids, nil
		}
		again, err := e.wait(ctx, ch, t)
		if err != nil || !again {
			return nil, err
		}
	}
}

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
	Job *spool.Job
	// Applied is false for a repeated post or late progress that changed nothing.
	Applied bool
}

// Done records a worker's result or progress. Only the worker holding the job's current attempt
// may post (CodeConflict otherwise); its repeated posts of a result are accepted and applied once,
// and progress arriving after the end is ignored.
func (e *Engine) Done(ctx context.Context, p DoneParams) (DoneResult, error) {
	now := e.now()
	applied := false
	j, err := e.update(ctx, p.Endpoint, p.JobID, func(j *spool.Job) error {
		holder := j.WorkerID == p.WorkerID && (p.Attempt <= 0 || p.Attempt == j.Attempt)
		switch {
		case holder && j.State == spool.StateInProgress:
		case holder && j.State.Terminal() && (p.InProgress || j.EndedByWorker):
			return store.ErrSkip // late progress, or a repeat of the result already recorded
		case holder && j.State.Terminal():
			return spool.Errorf(spool.CodeConflict, "job %s is %s; the result was refused", j.ID, j.State)
		default:
			return spool.Errorf(spool.CodeConflict, "job %s is not held by worker %s", j.ID, p.WorkerID)
		}
		applied = true
		if p.InProgress {
			j.Output = p.Output
			return nil
		}
		j.State = spool.StateCompleted
		j.Output = p.Output
		j.Error = ""
		if p.Error != nil {
			j.State = spool.StateFailed
			j.Error = *p.Error
		}
		j.StopPod = p.StopPod
		j.EndedByWorker = true
		j.StopPending = false
		e.finish(j, now)
		return nil
	})
	if err != nil {
		return DoneResult{}, err
	}
	if applied {
		e.notifyJob(j)
		if j.State.Terminal() {
			e.obs.JobFinished(j.Endpoint, j.State)
		}
	}
	return DoneResult{Job: j, Applied: applied}, nil
}

// AppendChunk appends a stream chunk posted by the worker holding the job.
func (e *Engine) AppendChunk(ctx context.Context, endpoint, worker, id string, attempt int, data json.RawMessage) error {
	if _, err := e.Endpoint(endpoint); err != nil {
		return err
	}
	j, err := e.store.AppendChunk(ctx, store.AppendChunkParams{ID: id, Data: data, Check: func(j *spool.Job) error {
		switch {
		case j.Endpoint != endpoint:
			return spool.Errorf(spool.CodeNotFound, "job %s not found", id)
		case j.WorkerID != worker || (attempt > 0 && attempt != j.Attempt):
			return spool.Errorf(spool.CodeConflict, "job %s is not held by worker %s", id, worker)
		case j.State != spool.StateInProgress:
			return spool.Errorf(spool.CodeConflict, "job %s is %s; the chunk was refused", id, j.State)
		}
		return nil
	}})
	if err != nil {
		return translate(err, "job "+id)
	}
	e.hub.notify(jobKey(j.ID))
	return nil
}

// PingParams is a decoded worker heartbeat.
type PingParams struct {
	Endpoint string
	WorkerID string
	// JobIDs are the jobs the worker says it holds.
	JobIDs  []string
	Version string
}

// Ping records a heartbeat. A job the worker still lists although the server ended it (cancelled
// or timed out) is signalled again on the worker's job-stop channel, in case the first signal was
// lost with its connection; a job the worker should hold but no longer lists goes back to the
// queue.
func (e *Engine) Ping(ctx context.Context, p PingParams) error {
	if _, err := e.Endpoint(p.Endpoint); err != nil {
		return err
	}
	if err := e.store.TouchWorker(ctx, store.TouchWorkerParams{
		ID: p.WorkerID, Endpoint: p.Endpoint, Now: e.now(), Version: p.Version,
	}); err != nil {
		return translate(err, "worker "+p.WorkerID)
	}
	resignalled := false
	for _, id := range p.JobIDs {
		_, err := e.store.UpdateJob(ctx, store.UpdateJobParams{ID: id, Apply: func(j *spool.Job) error {
			stopped := j.State == spool.StateCancelled || j.State == spool.StateTimedOut
			if j.Endpoint != p.Endpoint || j.WorkerID != p.WorkerID || !stopped || j.EndedByWorker || j.StopPending {
				return store.ErrSkip
			}
			j.StopPending = true
			resignalled = true
			return nil
		}})
		if err != nil && !isNotFound(err) {
			return translate(err, "job "+id)
		}
	}
	if resignalled {
		e.hub.notify(stopKey(p.WorkerID))
	}
	if p.Version != "" {
		return e.requeueForgotten(ctx, p)
	}
	return nil
}

// requeueForgotten requeues the jobs the server thinks a worker holds but its ping no longer lists:
// the job was lost on the worker's side (its take answer never arrived, or its result post was
// dropped after failed retries), and waiting for the execution timeout would only delay a re-run.
// A job taken less than WorkerLostAfter ago is left alone, since a ping sent before the take may
// arrive after it. Only pings that name their SDK version (runpod-python and Spool's SDK, which
// both list held jobs) are trusted for this.
func (e *Engine) requeueForgotten(ctx context.Context, p PingParams) error {
	listed := make(map[string]bool, len(p.JobIDs))
	for _, id := range p.JobIDs {
		listed[id] = true
	}
	now := e.now()
	jobs, err := e.store.UpdateJobs(ctx, store.UpdateJobsParams{
		Filter: store.JobFilter{Endpoint: p.Endpoint, WorkerID: p.WorkerID, States: []spool.State{spool.StateInProgress}},
		Apply: func(j *spool.Job) error {
			if listed[j.ID] || j.TakenAt.After(now.Add(-e.cfg.WorkerLostAfter)) {
				return store.ErrSkip
			}
			e.loseWorker(j, now, "its pings stopped listing the job")
			return nil
		},
	})
	if err != nil {
		return translate(err, "worker "+p.WorkerID)
	}
	for _, j := range jobs {
		e.notifyJob(j)
		e.hub.notify(queueKey(j.Endpoint))
		e.observeLoss(j, "lost_worker")
	}
	return nil
}

// Worker states as the engine derives them from sightings and leases. The autoscaler adds
// initializing, throttled and unhealthy for the workers it starts.
const (
	WorkerIdle    = "idle"
	WorkerRunning = "running"
	WorkerLost    = "lost"
)

// WorkerInfo is a worker as the engine sees it.
type WorkerInfo struct {
	store.Worker
	State string
	Jobs  []string
}

// Workers lists the workers of an endpoint ("" for all) with the jobs they hold.
func (e *Engine) Workers(ctx context.Context, endpoint string) ([]WorkerInfo, error) {
	ws, err := e.store.ListWorkers(ctx, store.ListWorkersParams{Endpoint: endpoint})
	if err != nil {
		return nil, translate(err, "list workers")
	}
	running, err := e.store.ListJobs(ctx, store.ListJobsParams{
		Endpoint: endpoint, States: []spool.State{spool.StateInProgress}, Limit: 100000,
	})
	if err != nil {
		return nil, translate(err, "list jobs")
	}
	held := make(map[string][]string)
	for _, j := range running {
		held[j.WorkerID] = append(held[j.WorkerID], j.ID)
	}
	lostBefore := e.now().Add(-e.cfg.WorkerLostAfter)
	out := make([]WorkerInfo, 0, len(ws))
	for _, w := range ws {
		info := WorkerInfo{Worker: w, Jobs: held[w.ID]}
		switch {
		case !w.LastSeen.After(lostBefore):
			info.State = WorkerLost
		case len(info.Jobs) > 0:
			info.State = WorkerRunning
		default:
			info.State = WorkerIdle
		}
		out = append(out, info)
	}
	return out, nil
}
