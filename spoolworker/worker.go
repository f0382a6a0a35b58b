package spoolworker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Worker takes jobs from a server speaking the RunPod worker protocol and runs them with its
// Handler. It is safe for concurrent use; Run may be called once.
type Worker struct {
	cfg    Config
	h      Handler
	log    *slog.Logger
	client *http.Client
	owned  *http.Transport // the default client's transport, closed when Run returns
	ua     string

	takeURL, batchURL, stopURL, doneURL, streamURL, pingURL string

	started atomic.Bool
	jobsWG  sync.WaitGroup

	mu          sync.Mutex
	concurrency int
	jobs        map[string]*jobRun
	stopTaking  context.CancelFunc
	wake        chan struct{} // a slot may have freed up
}

// New returns a worker for cfg that runs jobs with h. It checks cfg but connects to nothing.
func New(cfg Config, h Handler) (*Worker, error) {
	if h == nil {
		return nil, errors.New("spoolworker: a Handler is required")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	w := &Worker{
		cfg:         cfg,
		h:           h,
		log:         cfg.Logger.With("worker", cfg.WorkerID),
		client:      cfg.HTTPClient,
		ua:          fmt.Sprintf("%s (Go %s; %s/%s)", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH),
		concurrency: cfg.Concurrency,
		jobs:        make(map[string]*jobRun),
		wake:        make(chan struct{}, 1),
	}
	if w.client == nil {
		w.owned = http.DefaultTransport.(*http.Transport).Clone()
		w.client = &http.Client{Transport: w.owned}
	}
	id := cfg.WorkerID
	// Plain substitutions, as runpod-python makes them: $ID in the take URL is the worker id, and
	// $RUNPOD_POD_ID is not replaced there.
	w.takeURL = strings.ReplaceAll(cfg.TakeURL, "$ID", id)
	w.batchURL = w.takeURL
	if strings.Contains(w.takeURL, "/job-take/") {
		w.batchURL = strings.ReplaceAll(w.takeURL, "/job-take/", "/job-take-batch/")
		w.stopURL = strings.ReplaceAll(w.takeURL, "/job-take/", "/job-stop/")
	} else {
		w.log.Warn("the job-take URL has no /job-take/: batch takes use it unchanged and there is no job-stop channel")
	}
	w.doneURL = strings.ReplaceAll(cfg.DoneURL, "$RUNPOD_POD_ID", id)
	w.streamURL = strings.ReplaceAll(cfg.StreamURL, "$RUNPOD_POD_ID", id)
	if cfg.PingURL != "" && cfg.APIKey != "" {
		w.pingURL = strings.ReplaceAll(cfg.PingURL, "$RUNPOD_POD_ID", id)
	}
	return w, nil
}

// ID returns the worker id used in the protocol's URLs.
func (w *Worker) ID() string { return w.cfg.WorkerID }

// Concurrency returns how many jobs the worker runs at once.
func (w *Worker) Concurrency() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.concurrency
}

// SetConcurrency changes how many jobs the worker runs at once (at least 1), taking effect at
// once: free slots are filled with a batch take, and when n is lower than the jobs running, no
// job is taken until enough of them have ended. Running jobs are never interrupted.
func (w *Worker) SetConcurrency(n int) {
	w.mu.Lock()
	w.concurrency = max(n, 1)
	w.mu.Unlock()
	w.signal()
}

func (w *Worker) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// InFlight returns the ids of the jobs the worker holds (taken and not yet finished), sorted:
// what its pings report.
func (w *Worker) InFlight() []string {
	w.mu.Lock()
	ids := make([]string, 0, len(w.jobs))
	for id := range w.jobs {
		ids = append(ids, id)
	}
	w.mu.Unlock()
	slices.Sort(ids)
	return ids
}

// Run takes and runs jobs until ctx ends, then drains: it stops taking (an outstanding
// long-poll is cancelled), lets the running jobs finish and post their results (each bounded
// only by its own execution timeout), and returns nil. Pings and the job-stop channel go on
// while it drains. With Config.RefreshWorker it also drains and returns after the first job.
// Run installs no signal handlers; a main usually passes a context from signal.NotifyContext.
func (w *Worker) Run(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return errors.New("spoolworker: Run was already called")
	}
	if w.owned != nil {
		defer w.owned.CloseIdleConnections()
	}
	loopCtx, stopLoops := context.WithCancel(context.WithoutCancel(ctx))
	var loops sync.WaitGroup
	if w.pingURL != "" {
		loops.Go(func() { w.pingLoop(loopCtx) })
	}
	if w.stopURL != "" {
		loops.Go(func() { w.stopLoop(loopCtx) })
	}
	takeCtx, stopTaking := context.WithCancel(ctx)
	w.mu.Lock()
	w.stopTaking = stopTaking
	w.mu.Unlock()
	w.log.Info("worker started", "concurrency", w.Concurrency(), "pings", w.pingURL != "", "stopChannel", w.stopURL != "")

	w.takeLoop(takeCtx, context.WithoutCancel(ctx))
	stopTaking()
	w.log.Info("draining: no more takes", "running", len(w.InFlight()))
	w.jobsWG.Wait()
	stopLoops()
	loops.Wait()
	w.log.Info("worker stopped")
	return nil
}

// takeLoop takes jobs while there are free slots, until ctx ends. Jobs run under jobParent,
// which does not end with ctx.
func (w *Worker) takeLoop(ctx, jobParent context.Context) {
	for ctx.Err() == nil {
		w.mu.Lock()
		free, busy := w.concurrency-len(w.jobs), len(w.jobs) > 0
		w.mu.Unlock()
		if free <= 0 {
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
			}
			continue
		}
		jobs, next := w.take(ctx, free, busy)
		for _, j := range jobs {
			w.start(jobParent, j)
		}
		if !sleep(ctx, time.Until(next)) {
			return
		}
	}
}

// take makes one job-take (n == 1) or job-take-batch request and returns the jobs it brought
// and when the next poll may begin.
func (w *Worker) take(ctx context.Context, n int, busy bool) ([]*Job, time.Time) {
	start := time.Now() // returned for "poll again at once"
	floor := start.Add(w.cfg.PollFloor)
	inProgress := "0"
	if busy {
		inProgress = "1"
	}
	params := []string{"job_in_progress=" + inProgress, "include=attempt"}
	if w.cfg.Offloader != nil {
		params = append(params, "include=offload")
	}
	u := appendParams(w.takeURL, params...)
	if n > 1 {
		u = appendParams(w.batchURL, append([]string{"batch_size=" + strconv.Itoa(n)}, params...)...)
	}
	rctx, cancel := context.WithTimeout(ctx, w.cfg.TakeTimeout)
	defer cancel()
	res, err := w.do(rctx, http.MethodGet, u, "", nil)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return nil, start
		case rctx.Err() != nil: // our own long-poll cut-off: poll again at once
			return nil, start
		}
		w.log.Warn("job-take failed", "err", err)
		return nil, floor
	}
	defer drainClose(res.Body)
	switch {
	case res.StatusCode == http.StatusNoContent:
		return nil, start
	case res.StatusCode == http.StatusTooManyRequests:
		d := retryAfter(res.Header.Get("Retry-After"))
		w.log.Info("job-take: the server asks to back off", "retryAfter", d)
		return nil, time.Now().Add(d)
	case res.StatusCode == http.StatusBadRequest: // "no job" to runpod-python (FlashBoot)
		return nil, floor
	case res.StatusCode != http.StatusOK:
		w.log.Warn("job-take failed", "status", res.StatusCode, "body", errorBody(res.Body))
		return nil, floor
	}
	if mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type")); mt != "application/json" {
		w.log.Warn("job-take answered 200 without JSON; ignored", "contentType", res.Header.Get("Content-Type"))
		return nil, floor
	}
	body, err := io.ReadAll(res.Body)
	if err != nil {
		// The jobs may be lost in transit; the server requeues them when our pings stop listing them.
		w.log.Warn("job-take: reading the answer failed", "err", err)
		return nil, floor
	}
	return w.parseJobs(ctx, body), start
}

// parseJobs reads a take answer: a job object, an array of them (a batch, from either URL), or
// anything else, which means no job.
func (w *Worker) parseJobs(ctx context.Context, body []byte) []*Job {
	body = bytes.TrimSpace(body)
	var raws []json.RawMessage
	switch {
	case len(body) == 0:
	case body[0] == '{':
		raws = []json.RawMessage{body}
	case body[0] == '[':
		if err := json.Unmarshal(body, &raws); err != nil {
			w.log.Warn("job-take: unreadable batch; ignored", "err", err)
		}
	}
	var jobs []*Job
	for _, raw := range raws {
		j, err := parseJob(raw, "")
		switch {
		case j == nil:
			w.log.Warn("job-take: a job without an id; ignored", "err", err)
		case err != nil:
			// runpod-python drops such a job; report it, so it does not wait for its timeout.
			w.log.Warn("job-take: a job that cannot run", "job", j.ID, "err", err)
			msg := err.Error()
			w.jobsWG.Go(func() {
				_ = w.deliver(context.WithoutCancel(ctx), j, outcome{err: &msg})
			})
		default:
			jobs = append(jobs, j)
		}
	}
	return jobs
}

// parseJob decodes one job object. It returns a nil job when there is no id, and the job with an
// error when it has an id but no input. defaultID is used when the object has no id.
func parseJob(raw json.RawMessage, defaultID string) (*Job, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, errors.New("a job must be a JSON object")
	}
	j := &Job{ID: defaultID, Raw: raw}
	if v, ok := m["id"]; ok {
		if err := json.Unmarshal(v, &j.ID); err != nil {
			return nil, errors.New("the job id must be a string")
		}
	}
	if j.ID == "" {
		return nil, errors.New("the job has no id")
	}
	// Optional members are read leniently: a surprise in one of them must not lose the job.
	if v, ok := m["policy"]; ok {
		_ = json.Unmarshal(v, &j.Policy)
	}
	if v, ok := m["webhook"]; ok {
		_ = json.Unmarshal(v, &j.Webhook)
	}
	if v, ok := m["attempt"]; ok {
		_ = json.Unmarshal(v, &j.Attempt)
	}
	if v, ok := m["outputOffloadBytes"]; ok {
		_ = json.Unmarshal(v, &j.offloadBytes)
	}
	j.s3 = m["s3Config"]
	in, ok := m["input"]
	if !ok {
		return j, errors.New(`the job has no "input"`)
	}
	j.Input = in
	return j, nil
}

// start runs a taken job in its own goroutine, under a ctx that ends when the server stops the
// job or its execution timeout runs out.
func (w *Worker) start(parent context.Context, job *Job) {
	ctx, cancel, stopTimer := jobContext(parent, job, job.Attempt > 0)
	run := &jobRun{job: job, ctx: ctx, cancel: cancel, out: w, keep: w.cfg.AggregateStream}
	job.run = run
	job.getenv = w.cfg.Getenv
	w.mu.Lock()
	if old := w.jobs[job.ID]; old != nil {
		old.cancel(ErrJobStopped) // handed out again: the server has moved on from the old run
	}
	w.jobs[job.ID] = run
	w.mu.Unlock()
	w.jobsWG.Go(func() {
		defer func() {
			stopTimer()
			cancel(nil)
			w.mu.Lock()
			if w.jobs[job.ID] == run {
				delete(w.jobs, job.ID)
			}
			stop := w.stopTaking
			w.mu.Unlock()
			if w.cfg.RefreshWorker && stop != nil {
				stop() // before the wake-up, so the take loop sees it
			}
			w.signal()
		}()
		w.execute(run)
	})
}

// jobContext is the ctx a job's handler gets: cancel ends it with a cause (ErrJobStopped), and,
// on Spool, the policy's executionTimeout counted from now is its deadline (cause
// ErrExecutionTimeout). stop releases the timer.
//
// The deadline is enforced for jobs that carry Spool's attempt number (and in local test mode,
// where the policy is the user's own): Spool documents that
// executionTimeout is in milliseconds from the take and that it marks the job TIMED_OUT then,
// while what RunPod's payload carries (if anything) is not documented, and a wrong local deadline
// there would drop every result.
func jobContext(parent context.Context, job *Job, enforceTimeout bool) (ctx context.Context, cancel context.CancelCauseFunc, stop context.CancelFunc) {
	ctx, cancel = context.WithCancelCause(parent)
	stop = func() {}
	if ms := job.Policy.ExecutionTimeout; ms > 0 && enforceTimeout {
		ctx, stop = context.WithTimeoutCause(ctx, time.Duration(ms)*time.Millisecond, ErrExecutionTimeout)
	}
	return ctx, cancel, stop
}

// execute runs the handler and posts the result, unless the job was stopped or timed out.
func (w *Worker) execute(run *jobRun) {
	log := w.log.With("job", run.job.ID)
	log.Debug("job started", "attempt", run.job.Attempt)
	out := invoke(w.h, run, identity{hostname: w.cfg.Hostname, workerID: w.cfg.WorkerID})
	run.ended.Store(true)
	if out.panicked {
		log.Error("the handler panicked; the job fails", "report", *out.err)
	}
	if w.cfg.RefreshWorker {
		out.stopPod = true
	}
	run.mu.Lock() // after any progress or chunk post still in flight
	defer run.mu.Unlock()
	if run.ctx.Err() != nil {
		log.Info("job stopped; nothing is posted", "cause", context.Cause(run.ctx))
		return
	}
	if errors.Is(out.streamErr, ErrNotHolder) {
		log.Info("job no longer held; nothing is posted", "err", out.streamErr)
		return
	}
	out = w.offload(run, out)
	if run.ctx.Err() != nil { // stopped while the output was being offloaded
		log.Info("job stopped; nothing is posted", "cause", context.Cause(run.ctx))
		return
	}
	_ = w.deliver(context.WithoutCancel(run.ctx), run.job, out)
}

// deliver posts a job's result and logs how it went.
func (w *Worker) deliver(ctx context.Context, job *Job, out outcome) error {
	log := w.log.With("job", job.ID)
	err := w.post(ctx, job, "done", out.body(), out.isStream)
	status := "COMPLETED"
	if out.err != nil {
		status = "FAILED"
	}
	switch {
	case err == nil:
		log.Info("job done", "status", status, "stopPod", out.stopPod)
	case errors.Is(err, ErrNotHolder):
		log.Warn("the server refused the result: the job is no longer ours; dropped", "err", err)
	default:
		log.Error("the result could not be delivered; dropped", "status", status, "err", err)
	}
	return err
}

// post sends one job-done or job-stream post, retrying 5xx answers and connection errors.
func (w *Worker) post(ctx context.Context, job *Job, kind string, body []byte, isStream bool) error {
	var u string
	if kind == "stream" {
		if w.streamURL == "" {
			return ErrNoStreamURL
		}
		u = appendParams(strings.ReplaceAll(w.streamURL, "$ID", job.ID), "isStream=false")
	} else {
		u = appendParams(strings.ReplaceAll(w.doneURL, "$ID", job.ID), "isStream="+strconv.FormatBool(isStream))
	}
	if job.Attempt > 0 {
		u = appendParams(u, "attempt="+strconv.Itoa(job.Attempt))
	}
	for attempt := 0; ; attempt++ {
		err := w.postOnce(ctx, u, job.ID, body)
		if err == nil {
			return nil
		}
		var se *statusError
		retryable := ctx.Err() == nil && (!errors.As(err, &se) || se.code >= 500)
		if !retryable || attempt >= len(w.cfg.RetryBackoff) {
			return fmt.Errorf("%s post of job %s: %w", kind, job.ID, err)
		}
		w.log.Warn("post failed; retrying", "job", job.ID, "kind", kind, "attempt", attempt+1, "err", err)
		if !sleep(ctx, w.cfg.RetryBackoff[attempt]) {
			return fmt.Errorf("%s post of job %s: %w", kind, job.ID, ctx.Err())
		}
	}
}

// postTimeout bounds one attempt of a post.
const postTimeout = 5 * time.Minute

func (w *Worker) postOnce(ctx context.Context, u, jobID string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, postTimeout)
	defer cancel()
	res, err := w.do(ctx, http.MethodPost, u, jobID, body)
	if err != nil {
		return err
	}
	defer drainClose(res.Body)
	if res.StatusCode/100 == 2 {
		return nil
	}
	return &statusError{code: res.StatusCode, msg: errorBody(res.Body)}
}

// do sends a request with the headers runpod-python sends: the raw key in Authorization, and on
// posts a JSON body labelled application/x-www-form-urlencoded with a "charset" header and
// X-Request-ID (RunPod's server is known to accept exactly that).
func (w *Worker) do(ctx context.Context, method, u, jobID string, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if w.cfg.APIKey != "" {
		req.Header.Set("Authorization", w.cfg.APIKey)
	}
	req.Header.Set("User-Agent", w.ua)
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("charset", "utf-8")
		req.Header.Set("X-Request-ID", jobID)
	} else {
		req.Header.Set("Content-Type", "application/json")
	}
	return w.client.Do(req)
}

// stopLoop polls the job-stop channel and cancels the listed jobs, until ctx ends.
func (w *Worker) stopLoop(ctx context.Context) {
	for ctx.Err() == nil {
		ids, next := w.pollStops(ctx)
		for _, id := range ids {
			w.mu.Lock()
			run := w.jobs[id]
			w.mu.Unlock()
			if run != nil {
				w.log.Info("the server stops the job", "job", id)
				run.cancel(ErrJobStopped)
			}
		}
		if !sleep(ctx, time.Until(next)) {
			return
		}
	}
}

// pollStops makes one job-stop request and returns the ids it brought and when the next poll may
// begin: at once after ids, PollFloor after the start of a poll that brought none or failed.
func (w *Worker) pollStops(ctx context.Context) ([]string, time.Time) {
	start := time.Now()
	floor := start.Add(w.cfg.PollFloor)
	rctx, cancel := context.WithTimeout(ctx, w.cfg.TakeTimeout)
	defer cancel()
	res, err := w.do(rctx, http.MethodGet, w.stopURL, "", nil)
	if err != nil {
		if ctx.Err() == nil && rctx.Err() == nil {
			w.log.Warn("job-stop failed", "err", err)
		}
		return nil, floor
	}
	defer drainClose(res.Body)
	switch res.StatusCode {
	case http.StatusOK:
	case http.StatusNoContent:
		return nil, floor
	case http.StatusTooManyRequests:
		return nil, time.Now().Add(retryAfter(res.Header.Get("Retry-After")))
	default:
		w.log.Warn("job-stop failed", "status", res.StatusCode, "body", errorBody(res.Body))
		return nil, floor
	}
	var v struct {
		JobsToStop []string `json:"jobsToStop"`
	}
	if err := json.NewDecoder(res.Body).Decode(&v); err != nil || len(v.JobsToStop) == 0 {
		return nil, floor
	}
	return v.JobsToStop, time.Now()
}

// pingLoop sends a heartbeat at once and then every PingInterval, until ctx ends.
func (w *Worker) pingLoop(ctx context.Context) {
	for {
		w.ping(ctx)
		if !sleep(ctx, w.cfg.PingInterval) {
			return
		}
	}
}

// ping sends GET <ping URL> with job_id (the held jobs, comma-separated; left out when idle)
// and runpod_version, encoded as runpod-python's requests library encodes them.
func (w *Worker) ping(ctx context.Context) {
	var q []string
	if ids := w.InFlight(); len(ids) > 0 {
		q = append(q, "job_id="+url.QueryEscape(strings.Join(ids, ",")))
	}
	q = append(q, "runpod_version="+url.QueryEscape(Version))
	u, sep := w.pingURL, "&"
	switch i := strings.IndexByte(u, '?'); {
	case i < 0:
		sep = "?"
	case i == len(u)-1:
		sep = ""
	}
	u += sep + strings.Join(q, "&")
	// runpod-python's timeout is twice the interval, which is at least 1 s from the environment;
	// a shorter interval set in Config still gets 2 s.
	rctx, cancel := context.WithTimeout(ctx, max(2*w.cfg.PingInterval, 2*time.Second))
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
	if err != nil {
		w.log.Warn("ping", "err", err)
		return
	}
	req.Header.Set("Authorization", w.cfg.APIKey)
	req.Header.Set("User-Agent", w.ua)
	res, err := w.client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Warn("ping failed", "err", err)
		}
		return
	}
	defer drainClose(res.Body)
	if res.StatusCode/100 != 2 {
		w.log.Warn("ping refused", "status", res.StatusCode, "body", errorBody(res.Body))
	}
}

// statusError is a non-2xx answer to a post.
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string {
	if e.msg == "" {
		return fmt.Sprintf("server answered %d", e.code)
	}
	return fmt.Sprintf("server answered %d: %s", e.code, e.msg)
}

func (e *statusError) Is(target error) bool {
	return (target == ErrNotHolder && e.code == http.StatusConflict) ||
		(target == ErrTooLarge && e.code == http.StatusRequestEntityTooLarge)
}

// appendParams appends query parameters with '&', exactly as runpod-python does, except that a
// URL with no '?' at all gets one (runpod-python would send ".../JOB&isStream=false").
func appendParams(u string, params ...string) string {
	for _, p := range params {
		if strings.Contains(u, "?") {
			u += "&" + p
		} else {
			u += "?" + p
		}
	}
	return u
}

// retryAfter reads a Retry-After in seconds; 5 s, runpod-python's 429 pause, when absent.
func retryAfter(v string) time.Duration {
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	return 5 * time.Second
}

// errorBody reads the start of an error answer for a log line.
func errorBody(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 512))
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return e.Error
	}
	return strings.TrimSpace(string(b))
}

// drainClose reads a little of what is left of a body, so the connection can be reused, and
// closes it.
func drainClose(rc io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(rc, 64<<10))
	_ = rc.Close()
}

// sleep waits d or until ctx ends; it reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
