package engine

import (
	"context"
	"encoding/json"
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
		counts, err := e.store.CountJobs(ctx, ep.Name)
		if err != nil {
			return nil, translate(err, "count jobs")
		}
		if counts.ByState[spool.StateInQueue] >= ep.MaxQueue {
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
		CreatedAt:   now,
		QueuedAt:    now,
		Deadline:    now.Add(pol.TTL()),
	}
	if j.S3ConfigSealed, err = e.sealS3Config(j.ID, p.S3Config); err != nil {
		return nil, err
	}
	if err := e.store.CreateJob(ctx, store.CreateJobParams{Job: j}); err != nil {
		return nil, translate(err, "create job")
	}
	e.notifier.Notify(notify.Work(ep.Name))
	e.obs.JobSubmitted(ep.Name)
	return j, nil
}

// Job returns a job of an endpoint. A job of another endpoint is reported as not found, so an id
// does not leak across endpoints.
func (e *Engine) Job(ctx context.Context, endpoint, id string) (*spool.Job, error) {
	if _, err := e.Endpoint(endpoint); err != nil {
		return nil, err
	}
	j, err := e.store.GetJob(ctx, id)
	if err != nil {
		return nil, translate(err, "job "+id)
	}
	if j.Endpoint != endpoint {
		return nil, spool.Errorf(spool.CodeNotFound, "job %s not found", id)
	}
	return j, nil
}

// GetJob returns any job by id, whatever its endpoint (for the admin API).
func (e *Engine) GetJob(ctx context.Context, id string) (*spool.Job, error) {
	j, err := e.store.GetJob(ctx, id)
	return j, translate(err, "job "+id)
}

// ListJobs lists jobs for the admin API.
func (e *Engine) ListJobs(ctx context.Context, p store.ListJobsParams) ([]*spool.Job, error) {
	jobs, err := e.store.ListJobs(ctx, p)
	return jobs, translate(err, "list jobs")
}

// update applies fn to a job of endpoint and commits it.
func (e *Engine) update(ctx context.Context, endpoint, id string, fn func(*spool.Job) error) (*spool.Job, error) {
	if _, err := e.Endpoint(endpoint); err != nil {
		return nil, err
	}
	j, err := e.store.UpdateJob(ctx, store.UpdateJobParams{ID: id, Apply: guarded(func(j *spool.Job) error {
		if j.Endpoint != endpoint {
			return spool.Errorf(spool.CodeNotFound, "job %s not found", id)
		}
		return fn(j)
	})})
	return j, translate(err, "job "+id)
}

// SetRetention implements /status?ttl=: the retained result expires ttl from now. On a job that is
// not terminal yet, the retention applies from the moment it ends.
func (e *Engine) SetRetention(ctx context.Context, endpoint, id string, ttl time.Duration) (*spool.Job, error) {
	if ttl <= 0 {
		return nil, spool.Errorf(spool.CodeInvalid, "ttl must be a positive number of milliseconds")
	}
	now := e.now()
	return e.update(ctx, endpoint, id, func(j *spool.Job) error {
		j.RetentionMs = ttl.Milliseconds()
		if j.State.Terminal() {
			j.Deadline = now.Add(ttl)
		}
		return nil
	})
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
// job they belong to. With wait > 0 it waits for the next chunk or the terminal state when there is
// nothing new. The first answer with a terminal state carries every remaining chunk.
func (e *Engine) Stream(ctx context.Context, endpoint, id string, wait time.Duration) (*spool.Job, []spool.Chunk, error) {
	return e.readStream(ctx, endpoint, id, wait, store.ReadChunksParams{ID: id, Drain: true})
}

// StreamFrom returns the chunks after seq without consuming them (Server-Sent Events, which resume
// by Last-Event-ID), waiting like Stream.
func (e *Engine) StreamFrom(ctx context.Context, endpoint, id string, after int64, wait time.Duration) (*spool.Job, []spool.Chunk, error) {
	return e.readStream(ctx, endpoint, id, wait, store.ReadChunksParams{ID: id, After: after})
}

func (e *Engine) readStream(ctx context.Context, endpoint, id string, wait time.Duration, p store.ReadChunksParams) (*spool.Job, []spool.Chunk, error) {
	if _, err := e.Job(ctx, endpoint, id); err != nil {
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
	now := e.now()
	applied := false
	j, err := e.update(ctx, endpoint, id, func(j *spool.Job) error {
		if j.State.Terminal() {
			return store.ErrSkip
		}
		e.endByServer(j, spool.StateCancelled, "", now)
		applied = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	if applied {
		e.notifyJob(j)
		e.obs.JobFinished(endpoint, j.State)
	}
	return j, nil
}

// endByServer moves a job to a terminal state the server decided (cancel, timeout, purge, lost
// worker). A job that was running must be stopped on its worker.
func (e *Engine) endByServer(j *spool.Job, to spool.State, msg string, now time.Time) {
	j.StopPending = j.State == spool.StateInProgress
	j.State = to
	j.Error = msg
	// A progress value is not a result: a job the server ended has no output.
	j.Output = nil
	j.EndedByWorker = false
	e.finish(j, now)
}

// finish does what every terminal transition does: it stamps the end, erases the s3Config (it
// was for the worker only), schedules the deletion of the retained result and, for a job with a
// webhook, hands the store the delivery to enqueue in the same transaction. Callers set the state,
// output and error before calling it: the webhook body is built here.
func (e *Engine) finish(j *spool.Job, now time.Time) {
	j.FinishedAt = now
	j.S3ConfigSealed = nil
	j.Deadline = j.RetainUntil(now, e.cfg.Retention)
	if j.Webhook != "" && e.cfg.WebhookPayload != nil {
		j.Outbox = &spool.WebhookMessage{
			ID: spool.NewWebhookMessageID(), URL: j.Webhook, Payload: e.cfg.WebhookPayload(j), CreatedAt: now,
		}
	}
}

// requeue puts a job back in the queue with a fresh TTL, as a job that was never taken.
func (e *Engine) requeue(j *spool.Job, now time.Time) {
	j.State = spool.StateInQueue
	j.Retries++
	j.QueuedAt = now
	j.TakenAt = time.Time{}
	j.FinishedAt = time.Time{}
	j.Deadline = now.Add(j.Policy.TTL())
	j.WorkerID = ""
	j.Output = nil
	j.Error = ""
	j.StopPod = false
	j.EndedByWorker = false
	j.StopPending = false
}

// Retry implements /retry: a FAILED or TIMED_OUT job goes back to the queue with the same id and
// input, its output and error cleared.
func (e *Engine) Retry(ctx context.Context, endpoint, id string) (*spool.Job, error) {
	now := e.now()
	j, err := e.update(ctx, endpoint, id, func(j *spool.Job) error {
		if !j.State.Retryable() {
			return spool.Errorf(spool.CodeInvalid, "job %s is %s; only FAILED or TIMED_OUT jobs can be retried", id, j.State)
		}
		if j.HadS3Config {
			return retryRefusal(id)
		}
		e.requeue(j, now)
		return nil
	})
	if err != nil {
		return nil, err
	}
	e.notifyJob(j)
	e.notifier.Notify(notify.Work(endpoint))
	e.obs.JobRequeued(endpoint, "retry")
	return j, nil
}

// PurgeQueue cancels every queued job of an endpoint and reports how many.
func (e *Engine) PurgeQueue(ctx context.Context, endpoint string) (int, error) {
	if _, err := e.Endpoint(endpoint); err != nil {
		return 0, err
	}
	now := e.now()
	jobs, err := e.store.UpdateJobs(ctx, store.UpdateJobsParams{
		Filter: store.JobFilter{Endpoint: endpoint, States: []spool.State{spool.StateInQueue}},
		Apply: guarded(func(j *spool.Job) error {
			e.endByServer(j, spool.StateCancelled, "purged", now)
			return nil
		}),
	})
	if err != nil {
		return 0, translate(err, "purge queue")
	}
	for _, j := range jobs {
		e.notifyJob(j)
		e.obs.JobFinished(endpoint, j.State)
	}
	return len(jobs), nil
}

// notifyJob wakes everything that waits on a job that just changed: its waiting clients, and its
// worker's job-stop poll when the worker must stop it.
func (e *Engine) notifyJob(j *spool.Job) {
	e.noteJob(j)
	e.notifier.Notify(notify.Job(j.ID))
	if j.StopPending && j.WorkerID != "" {
		e.notifier.Notify(notify.Stop(j.WorkerID))
	}
	if j.Webhook != "" && j.State.Terminal() && e.cfg.WebhookQueued != nil {
		e.cfg.WebhookQueued()
	}
}

// Health is the /health answer of one endpoint.
type Health struct {
	Jobs    HealthJobs
	Workers HealthWorkers
}

// HealthJobs counts the endpoint's retained jobs.
type HealthJobs struct {
	Completed, Failed, InProgress, InQueue, Retried int
	// Cancelled and TimedOut are not in RunPod's shape; the admin API shows them.
	Cancelled, TimedOut int
}

// HealthWorkers counts the endpoint's workers by state.
type HealthWorkers struct {
	Idle, Initializing, Ready, Running, Throttled, Unhealthy int
}

// Health counts an endpoint's retained jobs by state and its live workers: running ones hold a
// job, idle ones were seen within WorkerLostAfter and hold none. Ready is idle + running: workers
// that are up and can work.
func (e *Engine) Health(ctx context.Context, endpoint string) (Health, error) {
	if _, err := e.Endpoint(endpoint); err != nil {
		return Health{}, err
	}
	counts, err := e.store.CountJobs(ctx, endpoint)
	if err != nil {
		return Health{}, translate(err, "count jobs")
	}
	var h Health
	h.Jobs = HealthJobs{
		Completed:  counts.ByState[spool.StateCompleted],
		Failed:     counts.ByState[spool.StateFailed],
		InProgress: counts.ByState[spool.StateInProgress],
		InQueue:    counts.ByState[spool.StateInQueue],
		Cancelled:  counts.ByState[spool.StateCancelled],
		TimedOut:   counts.ByState[spool.StateTimedOut],
		Retried:    counts.Retried,
	}
	ws, err := e.Workers(ctx, endpoint)
	if err != nil {
		return Health{}, err
	}
	for _, w := range ws {
		switch w.State {
		case WorkerRunning:
			h.Workers.Running++
		case WorkerIdle:
			h.Workers.Idle++
		case WorkerInitializing:
			h.Workers.Initializing++
		case WorkerThrottled:
			h.Workers.Throttled++
		case WorkerUnhealthy:
			h.Workers.Unhealthy++
		}
	}
	h.Workers.Ready = h.Workers.Idle + h.Workers.Running
	return h, nil
}
