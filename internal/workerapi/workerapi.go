// Package workerapi serves the RunPod worker protocol (docs/worker-protocol.md) under
// /v2/{endpoint}/: job-take and job-take-batch long-polls, the job-stop channel, job-done results
// and progress, job-stream chunks and ping heartbeats, exactly as unmodified runpod-python workers
// and Spool's own worker SDK speak it. It translates the wire: jobs are the engine's business,
// workers (sightings, heartbeats, stop signals) the fleet's.
package workerapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/auth"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/failpoint"
	"github.com/spool-run/spool/internal/fleet"
	"github.com/spool-run/spool/internal/wire"
)

// Config configures the worker API.
type Config struct {
	// Engine runs the jobs. Required.
	Engine *engine.Engine
	// Fleet records the workers. Required.
	Fleet *fleet.Fleet
	// Keys authenticates workers. Required.
	Keys *auth.Keyring
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// TakeWait is how long job-take, job-take-batch and job-stop hold a request open waiting for
	// work before answering 204. It must stay under runpod-python's 90 s cut-off. Defaults to 30 s.
	TakeWait time.Duration
	// ResultLimit bounds a job-done body; a larger one gets 413. Defaults to 20 MB.
	ResultLimit int64
	// ChunkLimit bounds a job-stream body; a larger one gets 413. Defaults to 1 MB.
	ChunkLimit int64
	// OnProgress, when set, is told of each progress update that was applied (the per-job log).
	OnProgress func(worker, job string, output []byte)
}

// MaxTakeWait is the exclusive upper bound of Config.TakeWait: runpod-python abandons a take
// after 90 s.
const MaxTakeWait = 90 * time.Second

// MaxBatch is the largest batch_size job-take-batch accepts.
const MaxBatch = 64

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.TakeWait == 0 {
		c.TakeWait = 30 * time.Second
	}
	if c.ResultLimit == 0 {
		c.ResultLimit = 20 << 20
	}
	if c.ChunkLimit == 0 {
		c.ChunkLimit = 1 << 20
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Engine == nil || c.Fleet == nil:
		return errors.New("workerapi: Engine and Fleet are required")
	case c.Keys == nil:
		return errors.New("workerapi: Keys is required")
	case c.TakeWait < 0 || c.TakeWait >= MaxTakeWait:
		return errors.New("workerapi: TakeWait must be at least 0 and under 90 s")
	case c.ResultLimit < 0 || c.ChunkLimit < 0:
		return errors.New("workerapi: ResultLimit and ChunkLimit must not be negative")
	}
	return nil
}

type api struct {
	cfg   Config
	eng   *engine.Engine
	fleet *fleet.Fleet
	log   *slog.Logger
}

// Register mounts the worker routes on mux. Takes, stops and pings also answer POST, which is
// harmless and helps clients that cannot send a GET.
//
// Spool's own extensions are opt-in, so a RunPod worker never sees them: job-take and
// job-take-batch with ?include=attempt add "attempt" to each job, and job-done and job-stream
// accept ?attempt=N, which fences the post to that attempt.
func Register(mux *http.ServeMux, cfg Config) error {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return err
	}
	a := &api{cfg: cfg, eng: cfg.Engine, fleet: cfg.Fleet, log: cfg.Logger}
	for _, m := range []string{"GET", "POST"} {
		mux.HandleFunc(m+" /v2/{endpoint}/job-take/{worker}", a.take(false))
		mux.HandleFunc(m+" /v2/{endpoint}/job-take-batch/{worker}", a.take(true))
		mux.HandleFunc(m+" /v2/{endpoint}/job-stop/{worker}", a.stop)
		mux.HandleFunc(m+" /v2/{endpoint}/ping/{worker}", a.ping)
	}
	mux.HandleFunc("POST /v2/{endpoint}/job-done/{worker}/{job}", a.done)
	mux.HandleFunc("POST /v2/{endpoint}/job-stream/{worker}/{job}", a.stream)
	return nil
}

func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	wire.WriteErrorLog(w, a.log.With("method", r.Method, "path", r.URL.Path), err)
}

// authorize checks the worker key and the worker id; it writes the error and returns false when
// the request may not go on.
func (a *api) authorize(w http.ResponseWriter, r *http.Request) bool {
	key, err := a.cfg.Keys.Check(r, auth.Worker, r.PathValue("endpoint"), true)
	if err != nil {
		a.fail(w, r, err)
		return false
	}
	worker := r.PathValue("worker")
	if err := spool.CheckWorkerID(worker); err != nil {
		a.fail(w, r, err)
		return false
	}
	if key.WorkerID != "" && key.WorkerID != worker {
		a.fail(w, r, spool.Errorf(spool.CodeForbidden, "this key is the token of worker %s; it cannot speak for another worker", key.WorkerID))
		return false
	}
	return true
}

// refuseWhileDraining answers 429 to a new long-poll once the server is shutting down: an empty
// 204 would send runpod-python straight back in a tight loop, while 429 makes it wait 5 s.
func (a *api) refuseWhileDraining(w http.ResponseWriter, r *http.Request) bool {
	if !a.eng.Draining() {
		return false
	}
	a.fail(w, r, &spool.Error{Code: spool.CodeTooMany, RetryAfter: 5, Message: "server is shutting down; retry later"})
	return true
}

func (a *api) take(batch bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !a.authorize(w, r) || a.refuseWhileDraining(w, r) {
			return
		}
		wire.DiscardBody(r)
		size := 1
		if batch {
			if v := r.URL.Query().Get("batch_size"); v != "" {
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 {
					a.fail(w, r, spool.Errorf(spool.CodeInvalid, "batch_size must be a positive integer"))
					return
				}
				// Clamp rather than refuse: runpod-python treats a 400 as "no job" and re-polls at
				// once, so a worker with more than MaxBatch free slots would spin and never work.
				size = min(n, MaxBatch)
			}
		}
		ctx := r.Context()
		ep, worker := r.PathValue("endpoint"), r.PathValue("worker")
		if err := a.fleet.Seen(ctx, ep, worker); err != nil {
			a.fail(w, r, err)
			return
		}
		a.fleet.TakeRequested(worker)
		wire.ExtendWriteDeadline(w, a.cfg.TakeWait)
		handouts, err := a.eng.Take(ctx, ep, worker, size, a.cfg.TakeWait)
		if err != nil {
			if ctx.Err() != nil {
				return // the worker is gone; nothing was taken
			}
			a.fail(w, r, err)
			return
		}
		if len(handouts) == 0 {
			if !a.eng.Draining() {
				// The worker was alive for the whole poll: record it, or a worker that does not
				// ping (no RUNPOD_POD_ID) could be declared lost while it long-polls.
				if err := a.fleet.Seen(ctx, ep, worker); err != nil && ctx.Err() == nil {
					a.fail(w, r, err)
					return
				}
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		failpoint.Hit(failpoint.AfterTakeCommit)
		jobs := make([]*spool.Job, len(handouts))
		for i, h := range handouts {
			jobs[i] = h.Job
		}
		if ctx.Err() != nil {
			a.release(ctx, jobs, "the take request ended before the jobs were sent")
			return
		}
		opts := payloadOptions{withAttempt: includes(r, "attempt")}
		if includes(r, "offload") {
			if e, err := a.eng.Endpoint(ep); err == nil {
				opts.offloadBytes = e.OutputOffloadBytes
			}
		}
		elems := make([][]byte, len(handouts))
		for i, h := range handouts {
			elems[i] = payload(h, opts)
		}
		body := elems[0]
		if batch {
			body = wire.Array(elems)
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		_, werr := w.Write(body)
		ferr := http.NewResponseController(w).Flush()
		if werr != nil || ferr != nil {
			a.release(ctx, jobs, "the take response could not be written")
		}
	}
}

// release puts jobs whose take answer never reached the worker back in the queue.
func (a *api) release(reqCtx context.Context, jobs []*spool.Job, why string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(reqCtx), 30*time.Second)
	defer cancel()
	ids := make([]string, len(jobs))
	for i, j := range jobs {
		ids[i] = j.ID
	}
	a.log.Warn("releasing taken jobs", "reason", why, "jobs", ids)
	if err := a.eng.Release(ctx, jobs); err != nil {
		a.log.Error("release taken jobs", "jobs", ids, "err", err)
	}
}

// payloadOptions are the opt-in extensions a take asked for with ?include=.
type payloadOptions struct {
	// withAttempt (include=attempt) adds "attempt".
	withAttempt bool
	// offloadBytes (include=offload) is the endpoint's outputOffloadBytes, added as
	// "outputOffloadBytes" to jobs that have an s3Config when positive.
	offloadBytes int64
}

// includes reports whether the take asked for the extension name: ?include= may be repeated and
// may hold a comma-separated list.
func includes(r *http.Request, name string) bool {
	for _, v := range r.URL.Query()["include"] {
		for _, part := range strings.Split(v, ",") {
			if strings.TrimSpace(part) == name {
				return true
			}
		}
	}
	return false
}

// payload is the job object a worker receives: {"id","input","policy":{...},"webhook"?,
// "s3Config"?}, only keys RunPod sends, since runpod-python hands the whole object to user code.
// input is the bytes the client sent, the s3Config the one the engine opened for this worker (the
// client's bytes too). Spool's worker SDK asks for two extensions: "attempt" (?include=attempt),
// which it echoes on its posts (?attempt=) for fencing, and "outputOffloadBytes"
// (?include=offload), the endpoint's threshold above which the SDK stores a result in the job's
// bucket instead of posting it.
func payload(h engine.Handout, opts payloadOptions) []byte {
	j, s3 := h.Job, h.S3Config
	pol := wire.NewObject().
		Int("executionTimeout", j.Policy.ExecutionTimeoutMs).
		Bool("lowPriority", j.Policy.LowPriority).
		Int("ttl", j.Policy.TTLMs)
	o := wire.NewObject().String("id", j.ID).Raw("input", j.Input).Raw("policy", pol.Bytes())
	if j.Webhook != "" {
		o.String("webhook", j.Webhook)
	}
	if s3 != nil {
		o.Raw("s3Config", s3)
	}
	if opts.withAttempt {
		o.Int("attempt", int64(j.Attempt))
	}
	if s3 != nil && opts.offloadBytes > 0 {
		o.Int("outputOffloadBytes", opts.offloadBytes)
	}
	return o.Bytes()
}

func (a *api) stop(w http.ResponseWriter, r *http.Request) {
	if !a.authorize(w, r) || a.refuseWhileDraining(w, r) {
		return
	}
	wire.DiscardBody(r)
	wire.ExtendWriteDeadline(w, a.cfg.TakeWait)
	ids, err := a.fleet.StopSignals(r.Context(), r.PathValue("endpoint"), r.PathValue("worker"), a.cfg.TakeWait)
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		a.fail(w, r, err)
		return
	}
	if len(ids) == 0 {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	wire.WriteJSON(w, http.StatusOK, struct {
		JobsToStop []string `json:"jobsToStop"`
	}{ids})
}

// attempt reads the optional ?attempt= of Spool's worker SDK; 0 when absent.
func attempt(r *http.Request) (int, error) {
	v := r.URL.Query().Get("attempt")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, spool.Errorf(spool.CodeInvalid, "attempt must be a positive integer")
	}
	return n, nil
}

var ok = json.RawMessage(`{"status":"ok"}`)

// DoneBody is a decoded job-done body.
type DoneBody struct {
	InProgress bool
	Output     json.RawMessage
	Error      *string
	StopPod    bool
}

// DecodeDone decodes a job-done body: a JSON object whatever the Content-Type said (runpod-python
// sends JSON labelled application/x-www-form-urlencoded). "status":"IN_PROGRESS" makes it a
// progress update; "output" is kept raw; "error" as a JSON string gives its value, JSON null
// counts as absent, any other value gives its JSON text; "stopPod": true asks for a restart. {}
// is a completion with no output.
func DecodeDone(body []byte) (DoneBody, error) {
	var m map[string]wire.Raw // slices of body: the output is stored from the buffer it came in
	if err := json.Unmarshal(body, &m); err != nil || m == nil {
		return DoneBody{}, spool.Errorf(spool.CodeInvalid, "job-done body must be a JSON object")
	}
	var d DoneBody
	if s, ok := m["status"]; ok {
		var status string
		if json.Unmarshal(s, &status) == nil && status == string(spool.StateInProgress) {
			d.InProgress = true
		}
	}
	if out, ok := m["output"]; ok {
		d.Output = out.RawMessage()
	}
	if e, ok := m["error"]; ok && string(e) != "null" {
		var s string
		if json.Unmarshal(e, &s) != nil {
			s = string(e)
		}
		d.Error = &s
	}
	if sp, ok := m["stopPod"]; ok && string(sp) == "true" {
		d.StopPod = true
	}
	return d, nil
}

func (a *api) done(w http.ResponseWriter, r *http.Request) {
	if !a.authorize(w, r) || !a.seen(w, r) {
		return
	}
	att, err := attempt(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	body, err := wire.ReadBody(w, r, a.cfg.ResultLimit)
	if err != nil {
		if spool.ErrorCode(err) == spool.CodeTooLarge {
			// The worker does not retry a 413: the job fails now instead of at its timeout.
			if rerr := a.eng.RefuseResult(context.WithoutCancel(r.Context()), r.PathValue("endpoint"), r.PathValue("worker"),
				r.PathValue("job"), att, spool.ErrorMessage(err)); rerr != nil {
				a.log.Error("fail job with an oversize result", "job", r.PathValue("job"), "err", rerr)
			}
		}
		a.fail(w, r, err)
		return
	}
	d, err := DecodeDone(body)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	p := engine.DoneParams{
		Endpoint:   r.PathValue("endpoint"),
		WorkerID:   r.PathValue("worker"),
		JobID:      r.PathValue("job"),
		Attempt:    att,
		InProgress: d.InProgress,
		Output:     d.Output,
		StopPod:    d.StopPod,
	}
	if !d.InProgress {
		p.Error = d.Error
	}
	res, err := a.eng.Done(r.Context(), p)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if p.InProgress && res.Applied && a.cfg.OnProgress != nil {
		a.cfg.OnProgress(p.WorkerID, p.JobID, p.Output)
	}
	if !p.InProgress {
		failpoint.Hit(failpoint.AfterResultCommit)
	}
	wire.WriteJSON(w, http.StatusOK, ok)
}

// seen records the worker's request with the fleet (a post proves it alive); it writes the
// error and returns false when the request may not go on.
func (a *api) seen(w http.ResponseWriter, r *http.Request) bool {
	if err := a.fleet.Seen(r.Context(), r.PathValue("endpoint"), r.PathValue("worker")); err != nil {
		a.fail(w, r, err)
		return false
	}
	return true
}

func (a *api) stream(w http.ResponseWriter, r *http.Request) {
	if !a.authorize(w, r) || !a.seen(w, r) {
		return
	}
	att, err := attempt(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	body, err := wire.ReadBody(w, r, a.cfg.ChunkLimit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var m map[string]wire.Raw
	if err := json.Unmarshal(body, &m); err != nil || m == nil {
		a.fail(w, r, spool.Errorf(spool.CodeInvalid, `job-stream body must be a JSON object {"output": <chunk>}`))
		return
	}
	chunk, has := m["output"]
	if !has {
		a.fail(w, r, spool.Errorf(spool.CodeInvalid, `job-stream body must have an "output"`))
		return
	}
	err = a.eng.AppendChunk(r.Context(), r.PathValue("endpoint"), r.PathValue("worker"), r.PathValue("job"), att, chunk.RawMessage())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	wire.WriteJSON(w, http.StatusOK, ok)
}

func (a *api) ping(w http.ResponseWriter, r *http.Request) {
	if !a.authorize(w, r) {
		return
	}
	wire.DiscardBody(r)
	q := r.URL.Query()
	ep, worker := r.PathValue("endpoint"), r.PathValue("worker")
	if q.Get("status") == "unhealthy" {
		reason := q.Get("reason")
		if len(reason) > 256 {
			reason = reason[:256]
		}
		a.log.Warn("worker reported itself unhealthy and is exiting",
			"endpoint", ep, "worker", worker, "check", q.Get("check"), "reason", reason)
	}
	var ids []string
	for _, v := range q["job_id"] {
		for _, id := range strings.Split(v, ",") {
			if id = strings.TrimSpace(id); id != "" {
				ids = append(ids, id)
			}
		}
	}
	err := a.fleet.Heartbeat(r.Context(), fleet.HeartbeatParams{
		Endpoint: ep, WorkerID: worker, JobIDs: ids, Version: q.Get("runpod_version"),
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	wire.WriteJSON(w, http.StatusOK, ok)
}
