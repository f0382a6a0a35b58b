package spoolclient

import (
	"context"
	"fmt"
	"iter"
	"net/http"
	"net/url"
	"time"
)

// DefaultWait is the long-poll wait used when a call's wait is 0: the server-side default of
// /runsync and /status-sync on both Spool and RunPod.
const DefaultWait = 90 * time.Second

// Endpoint is one endpoint (queue) of a Client. It is safe for concurrent use.
type Endpoint struct {
	c    *Client
	name string
}

// Name returns the endpoint's name (on RunPod, its id).
func (e *Endpoint) Name() string { return e.name }

func (e *Endpoint) call(op, method string, query url.Values, body []byte, path ...string) call {
	return call{
		op:     op + " on endpoint " + e.name,
		method: method,
		path:   append([]string{e.name}, path...),
		query:  query,
		body:   body,
	}
}

// Run submits a job (POST /run) and returns at once with its id and status (IN_QUEUE).
func (e *Endpoint) Run(ctx context.Context, req Request) (*Job, error) {
	body, err := req.encode()
	if err != nil {
		return nil, err
	}
	var j Job
	if err := e.c.do(ctx, e.call("run", http.MethodPost, nil, body, "run"), &j); err != nil {
		return nil, err
	}
	return &j, nil
}

// RunSync submits a job with POST /runsync?wait= and, when the job is not finished by the time the
// server answers, waits for it with /status-sync?wait= long-polls (as RunPod's JS and Go SDKs do)
// until it ends or ctx does. wait is the wait of each of those requests (0 means DefaultWait; the
// server clamps /runsync waits to [1 s, 300 s]); the total time is bounded only by ctx. A job that
// ends FAILED, CANCELLED or TIMED_OUT is returned without an error (see Job.Err).
//
// When ctx has a deadline, each wait is cut so that the server answers before it; when the
// deadline comes first, RunSync returns the job as last seen together with an error that wraps
// context.DeadlineExceeded, so the caller still has the job's id. A ctx that ends during the
// first request loses the id: use Run and Wait when that matters.
func (e *Endpoint) RunSync(ctx context.Context, req Request, wait time.Duration) (*Job, error) {
	j, err := e.RunSyncOnce(ctx, req, wait)
	if err != nil || j.Terminal() {
		return j, err
	}
	return e.wait(ctx, j, wait)
}

// RunSyncOnce is the first request of RunSync alone: POST /runsync?wait=. It returns the finished
// job, or the job's id and status (IN_QUEUE or IN_PROGRESS) when wait ran out first; the job goes on
// either way. wait 0 means DefaultWait.
func (e *Endpoint) RunSyncOnce(ctx context.Context, req Request, wait time.Duration) (*Job, error) {
	body, err := req.encode()
	if err != nil {
		return nil, err
	}
	w, ok := boundedWait(ctx, wait)
	if !ok {
		return nil, fmt.Errorf("spoolclient: runsync on endpoint %s: %w", e.name, context.DeadlineExceeded)
	}
	var j Job
	q := url.Values{"wait": {msParam(max(w, time.Second))}}
	if err := e.c.do(ctx, e.call("runsync", http.MethodPost, q, body, "runsync"), &j); err != nil {
		return nil, err
	}
	return &j, nil
}

// Status returns a job (GET /status/{id}). A job unknown or past its retention gives an error
// matching ErrNotFound.
func (e *Endpoint) Status(ctx context.Context, id string) (*Job, error) {
	var j Job
	if err := e.c.do(ctx, e.call("status of job "+id, http.MethodGet, nil, nil, "status", id), &j); err != nil {
		return nil, err
	}
	return &j, nil
}

// StatusSync returns a job once it has ended, or as it is when wait runs out: one
// GET /status-sync/{id}?wait= long-poll. wait 0 means DefaultWait; the server clamps it to 300 s.
func (e *Endpoint) StatusSync(ctx context.Context, id string, wait time.Duration) (*Job, error) {
	if wait <= 0 {
		wait = DefaultWait
	}
	var j Job
	q := url.Values{"wait": {msParam(wait)}}
	if err := e.c.do(ctx, e.call("status-sync of job "+id, http.MethodGet, q, nil, "status-sync", id), &j); err != nil {
		return nil, err
	}
	return &j, nil
}

// Wait waits until the job has ended, with /status-sync?wait= long-polls of wait each (0 means
// DefaultWait), and returns it. If ctx ends first it returns the job as last seen (nil if no
// answer came) with an error wrapping ctx's error (see RunSync for deadlines).
func (e *Endpoint) Wait(ctx context.Context, id string, wait time.Duration) (*Job, error) {
	return e.wait(ctx, &Job{ID: id}, wait)
}

func (e *Endpoint) wait(ctx context.Context, last *Job, wait time.Duration) (*Job, error) {
	seen := last.Status != ""
	lastOrNil := func() *Job {
		if seen {
			return last
		}
		return nil
	}
	for {
		w, ok := boundedWait(ctx, wait)
		if !ok {
			return lastOrNil(), fmt.Errorf("spoolclient: wait for job %s: %w", last.ID, context.DeadlineExceeded)
		}
		start := time.Now()
		j, err := e.StatusSync(ctx, last.ID, w)
		if err != nil {
			return lastOrNil(), err
		}
		last, seen = j, true
		if j.Terminal() {
			return j, nil
		}
		if err := pace(ctx, start, w); err != nil {
			return last, fmt.Errorf("spoolclient: wait for job %s: %w", last.ID, err)
		}
	}
}

// Stream returns the job's streamed output as it arrives: each element is one chunk the worker
// posted, in order, read with /stream/{id}?wait= long-polls (each call returns only the chunks
// not returned before, so a job's stream should have one reader). The sequence ends when the job
// has ended and every chunk has been yielded. If the job ended FAILED, CANCELLED or TIMED_OUT, the
// last element is (Chunk{}, *JobError); a request that fails, or ctx ending, yields the error as
// the last element. Stopping the range loop early stops reading.
func (e *Endpoint) Stream(ctx context.Context, id string) iter.Seq2[Chunk, error] {
	return func(yield func(Chunk, error) bool) {
		for {
			w, ok := boundedWait(ctx, e.c.pollWait)
			if !ok {
				yield(Chunk{}, fmt.Errorf("spoolclient: stream of job %s: %w", id, context.DeadlineExceeded))
				return
			}
			start := time.Now()
			var a streamAnswer
			q := url.Values{"wait": {msParam(w)}}
			if err := e.c.do(ctx, e.call("stream of job "+id, http.MethodGet, q, nil, "stream", id), &a); err != nil {
				yield(Chunk{}, err)
				return
			}
			for _, c := range a.Stream {
				if !yield(c, nil) {
					return
				}
			}
			// The stream is drained once a terminal answer brings no chunk. Spool sends every
			// remaining chunk with the first terminal answer (docs/contract.md §2), so there this costs
			// one more request; RunPod promises no such thing, so stopping earlier could lose
			// chunks there.
			if a.Status.Terminal() && len(a.Stream) == 0 {
				if a.Status != StatusCompleted {
					yield(Chunk{}, &JobError{ID: id, Status: a.Status, Message: a.Error})
				}
				return
			}
			if len(a.Stream) == 0 {
				if err := pace(ctx, start, w); err != nil {
					yield(Chunk{}, fmt.Errorf("spoolclient: stream of job %s: %w", id, err))
					return
				}
			}
		}
	}
}

// Cancel cancels a job (POST /cancel/{id}) and returns it: CANCELLED, or unchanged if it had
// already ended.
func (e *Endpoint) Cancel(ctx context.Context, id string) (*Job, error) {
	var j Job
	if err := e.c.do(ctx, e.call("cancel job "+id, http.MethodPost, nil, nil, "cancel", id), &j); err != nil {
		return nil, err
	}
	return &j, nil
}

// Retry sends a FAILED or TIMED_OUT job back to the queue with the same id and input
// (POST /retry/{id}) and returns its id and new status. Another state gives an error matching
// ErrBadRequest.
func (e *Endpoint) Retry(ctx context.Context, id string) (*Job, error) {
	var j Job
	if err := e.c.do(ctx, e.call("retry job "+id, http.MethodPost, nil, nil, "retry", id), &j); err != nil {
		return nil, err
	}
	return &j, nil
}

// PurgeQueue cancels every job still waiting in the endpoint's queue (POST /purge-queue) and
// returns how many there were. Running jobs are left alone.
func (e *Endpoint) PurgeQueue(ctx context.Context) (int, error) {
	var a struct {
		Removed int `json:"removed"`
	}
	if err := e.c.do(ctx, e.call("purge-queue", http.MethodPost, nil, nil, "purge-queue"), &a); err != nil {
		return 0, err
	}
	return a.Removed, nil
}

// Health returns the endpoint's job and worker counts (GET /health).
func (e *Endpoint) Health(ctx context.Context) (*Health, error) {
	var h Health
	if err := e.c.do(ctx, e.call("health", http.MethodGet, nil, nil, "health"), &h); err != nil {
		return nil, err
	}
	return &h, nil
}

// QueueInfo is where a queued job stands, from Spool's admin API.
type QueueInfo struct {
	// Position is the job's 1-based place in dispatch order; 0 once it is no longer queued.
	Position int
	// Wait is how long it has waited so far.
	Wait time.Duration
	// Reason says why it waits: "no_workers_yet", "scaling_up", "workers_initializing",
	// "max_workers_reached", "workers_unhealthy", "gpus_unavailable" or
	// "low_priority_waits_for_idle_worker"; "" once it is no longer queued.
	Reason string
}

// QueueInfo returns where a queued job stands (GET /api/jobs/{id} on the server's root). It is a
// Spool extension that needs an admin key: other keys get an *APIError with status 403, and
// RunPod answers 404.
func (e *Endpoint) QueueInfo(ctx context.Context, id string) (QueueInfo, error) {
	var v struct {
		Position   int    `json:"position"`
		WaitMs     int64  `json:"waitMs"`
		WaitReason string `json:"waitReason"`
	}
	cl := call{op: "queue info of job " + id, method: http.MethodGet, path: []string{"api", "jobs", id}, admin: true}
	if err := e.c.do(ctx, cl, &v); err != nil {
		return QueueInfo{}, err
	}
	return QueueInfo{Position: v.Position, Wait: time.Duration(v.WaitMs) * time.Millisecond, Reason: v.WaitReason}, nil
}

// boundedWait returns the wait of one long-poll: wait (DefaultWait when 0), cut so that the answer
// can arrive before ctx's deadline. ok is false when the deadline is too close for another call.
func boundedWait(ctx context.Context, wait time.Duration) (time.Duration, bool) {
	if wait <= 0 {
		wait = DefaultWait
	}
	if dl, has := ctx.Deadline(); has {
		remaining := time.Until(dl)
		w := remaining - min(remaining/10, time.Second) // leave time for the answer to travel
		if w < time.Millisecond {
			return 0, false
		}
		wait = min(wait, w)
	}
	return wait, true
}

// pace keeps a loop of long-polls from spinning against a server that answers at once (one that
// ignores ?wait=, or one shutting down): an iteration that started at start takes at least
// min(w, 1 s). Spool answers a long-poll early only with news, which the loops handle before
// pacing.
func pace(ctx context.Context, start time.Time, w time.Duration) error {
	d := min(w, time.Second) - time.Since(start)
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
