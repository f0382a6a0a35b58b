package engine

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/failpoint"
	"github.com/spool-run/spool/internal/notify"
	"github.com/spool-run/spool/store"
)

// Cause says why a job changed. Most effects of a change follow from its from- and to-state; the
// cause names what they cannot tell apart (why a job went back to the queue) and the changes that
// keep the state.
type Cause uint8

const (
	CauseSubmit         Cause = iota + 1 // /run, /runsync: a new job enters the queue
	CauseTake                            // a worker took it
	CauseResult                          // its worker posted the result (or a result too large)
	CauseProgress                        // its worker posted progress
	CauseChunk                           // its worker streamed a chunk
	CauseCancel                          // /cancel
	CausePurge                           // /purge-queue
	CauseExpire                          // its TTL ran out in the queue
	CauseTimeout                         // its execution timeout ran out
	CauseLostWorker                      // its worker is gone (missed pings, exited, forgot it)
	CauseUndelivered                     // the take answer never reached the worker
	CauseRetry                           // /retry
	CauseUndecryptable                   // its s3Config cannot be opened any more
	CauseStopResent                      // its worker must be told again to stop it
	CauseStopsDelivered                  // its worker's job-stop poll carried the stop signal
	CauseRetention                       // /status?ttl=
)

var causeNames = map[Cause]string{
	CauseSubmit: "submit", CauseTake: "take", CauseResult: "result", CauseProgress: "progress",
	CauseChunk: "chunk", CauseCancel: "cancel", CausePurge: "purge", CauseExpire: "expire",
	CauseTimeout: "timeout", CauseLostWorker: "lost worker", CauseUndelivered: "undelivered",
	CauseRetry: "retry", CauseUndecryptable: "undecryptable", CauseStopResent: "stop resent",
	CauseStopsDelivered: "stops delivered", CauseRetention: "retention",
}

func (c Cause) String() string { return causeNames[c] }

// Change is one committed change of a job: why, the state it left ("" for a new job), the worker
// that held it before when known (a requeue clears the job's), and the job as written (its head;
// payloads may be missing).
type Change struct {
	Cause  Cause
	From   spool.State
	Worker string
	Job    *spool.Job
}

// effects is what must follow a committed change, as data, so that one function derives it and a
// table tests it.
type effects struct {
	// topics are notified: waiters of the job, of the endpoint's queue, of the worker's stop
	// channel, the webhook dispatcher.
	topics []notify.Topic

	// For the Observer.
	submitted bool
	started   bool          // taken from the queue, after delay
	delay     time.Duration // of a start
	finished  spool.State   // the terminal state reached, or ""
	requeued  string        // why the job went back to the queue, or ""

	// For the WorkerObserver.
	handedTo    string // the worker that took the job
	releasedBy  string // the worker that no longer holds the job
	mustStop    string // the worker that must stop the job
	restartAsks string // the worker whose result asked for its restart (stopPod)
}

// effectsOf derives the effects of a change. It is the only place that knows what follows a
// transition; no method notifies anything by hand.
func effectsOf(c Change) effects {
	j := c.Job
	from, to := c.From, j.State
	var fx effects
	// A job's waiters (WaitTerminal, the streams) look for its end and its chunks, so only those
	// wake them: a take or a requeue would cost each waiting /runsync a read for nothing.
	if (to.Terminal() && !from.Terminal()) || c.Cause == CauseChunk {
		fx.topics = append(fx.topics, notify.Job(j.ID))
	}
	switch {
	case from == "" && to == spool.StateInQueue:
		fx.submitted = true
		fx.topics = append(fx.topics, notify.Work(j.Endpoint))
	case from != spool.StateInQueue && to == spool.StateInQueue:
		fx.topics = append(fx.topics, notify.Work(j.Endpoint))
		switch {
		case from.Terminal():
			fx.requeued = "retry"
		case c.Cause == CauseUndelivered:
			fx.requeued = "undelivered"
		default:
			fx.requeued = "lost_worker"
		}
	case from == spool.StateInQueue && to == spool.StateInProgress:
		fx.started = true
		fx.delay, _ = j.DelayTime()
		fx.handedTo = j.WorkerID
	}
	if from == spool.StateInProgress && to != spool.StateInProgress {
		fx.releasedBy = c.Worker
	}
	if to.Terminal() && !from.Terminal() {
		fx.finished = to
		if j.Webhook != "" {
			fx.topics = append(fx.topics, notify.Webhooks)
		}
	}
	// A running job the server ended, or one whose stop signal must be sent again: its worker's
	// job-stop poll wakes, and the fleet watches that the worker does stop.
	if j.StopPending && j.WorkerID != "" && (from == spool.StateInProgress || c.Cause == CauseStopResent) {
		fx.topics = append(fx.topics, notify.Stop(j.WorkerID))
		fx.mustStop = j.WorkerID
	}
	if from == spool.StateInProgress && to.Terminal() && j.EndedByWorker && j.StopPod {
		fx.restartAsks = j.WorkerID
	}
	return fx
}

// after runs the effects of committed changes: one notification per topic for the whole batch,
// then the observers.
func (e *Engine) after(changes ...Change) {
	var topics []notify.Topic
	for _, c := range changes {
		fx := effectsOf(c)
		for _, t := range fx.topics {
			if !slices.Contains(topics, t) {
				topics = append(topics, t)
			}
		}
		e.tell(c.Job, fx)
	}
	if len(topics) > 0 {
		e.notifier.Notify(topics...)
	}
}

// tell reports a change's effects to the observers.
// logFinished is the one info line of a job's end: its state, with its worker and how long it
// ran when one ran it. Never its input, output or error: a handler's error may quote anything
// the handler saw (a traceback with credentials), and /status shows it to those who may read it.
func (e *Engine) logFinished(j *spool.Job, state spool.State, ran time.Duration, taken bool) {
	attrs := []any{"job", j.ID, "endpoint", j.Endpoint, "state", string(state)}
	if taken {
		attrs = append(attrs, "worker", j.WorkerID, "executionMs", ran.Milliseconds())
	}
	e.log.Info("job finished", attrs...)
}

func (e *Engine) tell(j *spool.Job, fx effects) {
	switch {
	case fx.submitted:
		e.obs.JobSubmitted(j.Endpoint)
		e.log.Debug("job accepted", "job", j.ID, "endpoint", j.Endpoint)
	case fx.started:
		e.obs.JobStarted(j.Endpoint, fx.delay)
	case fx.requeued != "":
		e.obs.JobRequeued(j.Endpoint, fx.requeued)
		e.log.Info("job requeued", "job", j.ID, "endpoint", j.Endpoint, "worker", fx.releasedBy, "reason", fx.requeued, "retries", j.Retries)
	}
	if fx.finished != "" {
		ran, taken := j.ExecutionTime()
		e.obs.JobFinished(j.Endpoint, fx.finished, ran, taken)
		e.logFinished(j, fx.finished, ran, taken)
	}
	w := e.workerObserver()
	if w == nil {
		return
	}
	if fx.handedTo != "" {
		w.JobHanded(fx.handedTo, j.ID)
	}
	if fx.releasedBy != "" {
		w.JobReleased(fx.releasedBy, j.ID)
	}
	if fx.mustStop != "" {
		w.JobMustStop(fx.mustStop, j.ID)
	}
	if fx.restartAsks != "" {
		w.RestartAsked(fx.restartAsks)
	}
}

// write applies targeted updates, each a transition the caller decided on a job it read (or
// fenced), and runs the effects of those that applied. It refuses, as the internal fault it would
// be, an update whose state change the state machine (docs/contract.md §3) does not allow.
func (e *Engine) write(ctx context.Context, cause Cause, now time.Time, updates ...store.JobUpdate) ([]*spool.Job, error) {
	if len(updates) == 0 {
		return nil, nil
	}
	before := make(map[string]store.Expect, len(updates))
	for _, u := range updates {
		if u.Change.Set&store.SetState != 0 && u.Change.State != u.Expect.State && !spool.CanTransition(u.Expect.State, u.Change.State) {
			return nil, fmt.Errorf("engine: refused transition %s -> %s of job %s", u.Expect.State, u.Change.State, u.ID)
		}
		before[u.ID] = u.Expect
	}
	changed, err := e.store.UpdateJobs(ctx, store.UpdateJobsParams{Updates: updates, Now: now, Outbox: e.outbox})
	if err != nil {
		return nil, err
	}
	for _, j := range changed {
		if j.State.Terminal() && !before[j.ID].State.Terminal() && j.Webhook != "" {
			failpoint.Hit(failpoint.AfterTerminalCommit)
			break
		}
	}
	cs := make([]Change, len(changed))
	for i, j := range changed {
		cs[i] = Change{Cause: cause, From: before[j.ID].State, Worker: before[j.ID].WorkerID, Job: j}
	}
	e.after(cs...)
	return changed, nil
}

// outbox builds the webhook delivery of a job that has just ended, in the store's transaction:
// the payload is built then, so it outlives the job's retention.
func (e *Engine) outbox(j *spool.Job) *spool.WebhookMessage {
	if e.cfg.WebhookPayload == nil {
		return nil
	}
	return &spool.WebhookMessage{
		ID: spool.NewWebhookMessageID(), URL: j.Webhook, Payload: e.cfg.WebhookPayload(j), CreatedAt: j.FinishedAt,
	}
}

// The changes of the transitions. Each names every field it sets; the store writes those only.

// finishing is what every terminal transition writes besides the state: the end, the erasure of
// the s3Config (it was for the worker only), the progress (a result is not progress), and when the
// retained result is deleted.
const finishing = store.SetState | store.SetFinishedAt | store.SetS3Config | store.SetProgress | store.SetDeleteAt

// endByServer ends a job the server decided (cancel, timeout, purge, a lost worker): no output,
// and stop tells its worker to stop it. The update delivers the job's webhook.
func endByServer(j *spool.Job, to spool.State, msg string, stop bool, now time.Time) store.JobUpdate {
	return store.JobUpdate{ID: j.ID, Expect: store.Exactly(j), Webhook: true, Change: store.JobChange{
		Set:   finishing | store.SetError | store.SetOutput | store.SetStopPending | store.SetEndedByWorker,
		State: to, Error: msg, StopPending: stop, FinishedAt: now,
	}}
}

// requeue puts a job back in the queue with a fresh TTL, as a job that was never taken, counting a
// retry.
func requeue(j *spool.Job, now time.Time) store.JobUpdate {
	return store.JobUpdate{ID: j.ID, Expect: store.Exactly(j), Change: store.JobChange{
		Set: store.SetState | store.IncRetries | store.SetQueuedAt | store.SetExpiresAt | store.SetTakenAt | store.SetFinishedAt |
			store.SetWorkerID | store.SetOutput | store.SetProgress | store.SetError | store.SetStopPod |
			store.SetEndedByWorker | store.SetStopPending,
		State: spool.StateInQueue, QueuedAt: now,
	}}
}

// claim hands a queued job to a worker: a new attempt, and its execution timeout starts.
func claim(worker string, now time.Time) store.JobChange {
	return store.JobChange{
		Set:   store.SetState | store.SetWorkerID | store.IncAttempt | store.SetTakenAt | store.SetTimeoutAt | store.SetOutput | store.SetError,
		State: spool.StateInProgress, WorkerID: worker, TakenAt: now,
	}
}

// loseWorker is the change of a job whose worker is gone: back to the queue with one more retry,
// or FAILED once the retries are used up. Handler errors never come here: they are results.
func (e *Engine) loseWorker(j *spool.Job, why string, now time.Time) store.JobUpdate {
	if j.Retries >= e.cfg.MaxRetries {
		// The worker is gone: nobody is left to tell to stop.
		return endByServer(j, spool.StateFailed, fmt.Sprintf("worker %s was lost (%s) and the job has used its %d automatic retries",
			j.WorkerID, why, e.cfg.MaxRetries), false, now)
	}
	return requeue(j, now)
}
