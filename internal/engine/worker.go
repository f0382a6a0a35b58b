package engine

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/notify"
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
	if err := e.seen(ctx, endpoint, worker); err != nil {
		return nil, err
	}
	e.noteTake(worker, 0)
	jobs, done, err := poll(ctx, e, notify.Work(endpoint), wait, func() ([]*spool.Job, bool, error) {
		if e.Draining() {
			return nil, false, nil
		}
		jobs, err := e.takeDecryptable(ctx, endpoint, worker, max)
		return jobs, len(jobs) > 0, err
	})
	e.noteTake(worker, len(jobs))
	if err != nil || done || e.Draining() {
		return jobs, err
	}
	// The worker was alive for the whole poll: record it, or a worker that does not ping (no
	// RUNPOD_POD_ID) could be declared lost while it long-polls with jobs in hand.
	return nil, e.seen(ctx, endpoint, worker)
}

// take moves up to max queued jobs to IN_PROGRESS for worker.
func (e *Engine) take(ctx context.Context, endpoint, worker string, max int) ([]*spool.Job, error) {
	now := e.now()
	jobs, err := e.store.TakeJobs(ctx, store.TakeJobsParams{
		Endpoint: endpoint, Max: max, Now: now,
		Apply: guarded(func(j *spool.Job) error {
			j.State = spool.StateInProgress
			j.WorkerID = worker
			j.Attempt++
			j.TakenAt = now
			j.Deadline = now.Add(j.Policy.ExecutionTimeout())
			j.Output = nil
			j.Error = ""
			return nil
		}),
	})
	if err != nil {
		return nil, translate(err, "take jobs")
	}
	for _, j := range jobs {
		e.notifier.Notify(notify.Job(j.ID))
		d, _ := j.DelayTime()
		e.obs.JobStarted(endpoint, d)
	}
	return jobs, nil
}

// Release puts jobs whose take answer never reached the worker (its connection dropped first)
// back in the queue, as for a lost worker.
func (e *Engine) Release(ctx context.Context, jobs []*spool.Job) error {
	now := e.now()
	for _, taken := range jobs {
		applied := false
		j, err := e.store.UpdateJob(ctx, store.UpdateJobParams{ID: taken.ID, Apply: guarded(func(j *spool.Job) error {
			if j.State != spool.StateInProgress || j.WorkerID != taken.WorkerID || j.Attempt != taken.Attempt {
				return store.ErrSkip
			}
			e.loseWorker(j, now, "its take request was dropped before the job was delivered")
			applied = true
			return nil
		})})
		if err != nil {
			return translate(err, "release job "+taken.ID)
		}
		if applied {
			e.notifyJob(j)
			e.notifier.Notify(notify.Work(j.Endpoint))
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

// StopSignals returns the ids of jobs the worker must stop, waiting up to wait for one: jobs
// cancelled or timed out while it held them, and jobs its pings list that it no longer holds
// (retried, requeued or deleted meanwhile). Each id is delivered once; a ping that still lists a
// stopped job makes it pending again.
func (e *Engine) StopSignals(ctx context.Context, endpoint, worker string, wait time.Duration) ([]string, error) {
	if _, err := e.Endpoint(endpoint); err != nil {
		return nil, err
	}
	if err := e.seen(ctx, endpoint, worker); err != nil {
		return nil, err
	}
	ids, _, err := poll(ctx, e, notify.Stop(worker), wait, func() ([]string, bool, error) {
		if e.Draining() {
			return nil, false, nil
		}
		ids, err := e.takeStops(ctx, endpoint, worker)
		return ids, len(ids) > 0, err
	})
	return ids, err
}

// takeStops collects and clears the worker's pending stop signals.
func (e *Engine) takeStops(ctx context.Context, endpoint, worker string) ([]string, error) {
	jobs, err := e.store.UpdateJobs(ctx, store.UpdateJobsParams{
		Filter: store.JobFilter{Endpoint: endpoint, WorkerID: worker, StopPending: true},
		Apply: guarded(func(j *spool.Job) error {
			j.StopPending = false
			return nil
		}),
	})
	if err != nil {
		return nil, translate(err, "stop signals")
	}
	ids := e.stops.take(worker)
	for _, j := range jobs {
		ids = append(ids, j.ID)
	}
	sort.Strings(ids)
	return slices.Compact(ids), nil
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
	if err := e.seen(ctx, p.Endpoint, p.WorkerID); err != nil {
		return DoneResult{}, err
	}
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
	if err := e.seen(ctx, endpoint, worker); err != nil {
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
	e.notifier.Notify(notify.Job(j.ID))
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

// Ping records a heartbeat and compares the jobs the worker lists with what the server knows. A
// listed job that the server ended (cancelled, timed out) or that has moved on (retried, requeued,
// deleted) is signalled on the worker's job-stop channel: the worker is running something nobody
// wants any more. A job the worker should hold but no longer lists goes back to the queue.
func (e *Engine) Ping(ctx context.Context, p PingParams) error {
	if _, err := e.Endpoint(p.Endpoint); err != nil {
		return err
	}
	if err := e.store.TouchWorker(ctx, store.TouchWorkerParams{
		ID: p.WorkerID, Endpoint: p.Endpoint, Now: e.now(), Version: p.Version,
	}); err != nil {
		return translate(err, "worker "+p.WorkerID)
	}
	e.notePing(p.WorkerID, p.JobIDs, p.Version != "")
	signalled := false
	for _, id := range p.JobIDs {
		stop, err := e.shouldStop(ctx, p, id)
		if err != nil {
			return err
		}
		signalled = signalled || stop
	}
	if signalled {
		e.notifier.Notify(notify.Stop(p.WorkerID))
	}
	if p.Version != "" {
		return e.requeueForgotten(ctx, p)
	}
	return nil
}

// shouldStop decides, for one job a worker's ping lists, whether the worker must be told to stop
// it, and records the signal. Most pings list jobs the worker rightly holds, which costs one read.
func (e *Engine) shouldStop(ctx context.Context, p PingParams, id string) (bool, error) {
	j, err := e.store.GetJob(ctx, id)
	switch {
	case isNotFound(err):
		return e.stops.add(p.WorkerID, id), nil
	case err != nil:
		return false, translate(err, "job "+id)
	case j.Endpoint != p.Endpoint:
		return false, nil // not this worker's business; never reveal other endpoints' jobs
	case j.WorkerID == p.WorkerID && (j.State == spool.StateInProgress || j.EndedByWorker):
		return false, nil // held, or just finished by this worker (the ping predates the result)
	case j.WorkerID == p.WorkerID && j.State.Terminal():
		if j.StopPending {
			return false, nil
		}
		// Ended by the server; the first signal was lost with its connection: send it again.
		_, err := e.store.UpdateJob(ctx, store.UpdateJobParams{ID: id, Apply: guarded(func(j *spool.Job) error {
			if j.WorkerID != p.WorkerID || !j.State.Terminal() || j.EndedByWorker || j.StopPending {
				return store.ErrSkip
			}
			j.StopPending = true
			return nil
		})})
		if err != nil {
			return false, translate(err, "job "+id)
		}
		return true, nil
	default:
		// The job moved on without this worker (requeued, retried, taken by another).
		return e.stops.add(p.WorkerID, id), nil
	}
}

// requeueForgotten requeues the jobs the server thinks a worker holds but its ping no longer lists:
// the job was lost on the worker's side (its take answer never arrived, or its result post was
// dropped after failed retries), and waiting for the execution timeout would only delay a re-run.
// A job taken less than twice WorkerLostAfter ago is left alone: a ping sent before the take may
// arrive after it (runpod-python retries pings with backoff, with a timeout of two intervals). Only pings that name their SDK version (runpod-python and Spool's SDK, which
// both list held jobs) are trusted for this.
func (e *Engine) requeueForgotten(ctx context.Context, p PingParams) error {
	listed := make(map[string]bool, len(p.JobIDs))
	for _, id := range p.JobIDs {
		listed[id] = true
	}
	now := e.now()
	jobs, err := e.store.UpdateJobs(ctx, store.UpdateJobsParams{
		Filter: store.JobFilter{Endpoint: p.Endpoint, WorkerID: p.WorkerID, States: []spool.State{spool.StateInProgress}},
		Apply: guarded(func(j *spool.Job) error {
			if listed[j.ID] || j.TakenAt.After(now.Add(-2*e.cfg.WorkerLostAfter)) {
				return store.ErrSkip
			}
			e.loseWorker(j, now, "its pings stopped listing the job")
			return nil
		}),
	})
	if err != nil {
		return translate(err, "worker "+p.WorkerID)
	}
	for _, j := range jobs {
		e.notifyJob(j)
		e.notifier.Notify(notify.Work(j.Endpoint))
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
	// GPUs, StartedAt, LogTail and Error are known for the workers the autoscaler runs.
	GPUs      []string
	StartedAt time.Time
	LogTail   []string
	Error     string
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
	return e.mergeFleet(endpoint, out), nil
}
