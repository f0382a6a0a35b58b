package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// This file is a test double of an unmodified runpod-python 1.12 worker
// (runpod.serverless.start({"handler": ...})): a Go re-implementation of the traffic that
// docs/worker-protocol.md §1.2, §2-§5 and §10 describe, not the SDK itself. Its handler
// switches on input.mode like the handlers of the doc's live run.

const (
	rpVersion   = "1.12.0"
	rpUserAgent = "RunPod-Python-SDK/1.12.0 (Linux 6.1.0-28-amd64; x86_64) Language/Python 3.11.2"
)

// workerEnv is the environment RunPod (and Spool's process provider) gives a worker container
// (docs/worker-protocol.md §0). Every template already holds "?", as the SDK appends with "&".
func workerEnv(baseURL, ep, podID, key string) map[string]string {
	v2 := baseURL + "/v2/" + ep
	return map[string]string{
		"RUNPOD_WEBHOOK_GET_JOB":         v2 + "/job-take/$ID?gpu=TEST",
		"RUNPOD_WEBHOOK_POST_OUTPUT":     v2 + "/job-done/$RUNPOD_POD_ID/$ID?gpu=TEST",
		"RUNPOD_WEBHOOK_POST_STREAM":     v2 + "/job-stream/$RUNPOD_POD_ID/$ID?gpu=TEST",
		"RUNPOD_WEBHOOK_PING":            v2 + "/ping/$RUNPOD_POD_ID?gpu=TEST",
		"RUNPOD_PING_INTERVAL":           "1000",
		"RUNPOD_POD_ID":                  podID,
		"RUNPOD_AI_API_KEY":              key,
		"RUNPOD_ENDPOINT_ID":             ep,
		"RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
	}
}

// rpURLs are the worker's URLs after the SDK's import-time substitutions (§1.2): plain string
// replacement, no escaping.
type rpURLs struct {
	getJob, postOutput, postStream, ping string
}

func newRPURLs(env map[string]string) rpURLs {
	id := env["RUNPOD_POD_ID"]
	return rpURLs{
		getJob:     strings.ReplaceAll(env["RUNPOD_WEBHOOK_GET_JOB"], "$ID", id),
		postOutput: strings.ReplaceAll(env["RUNPOD_WEBHOOK_POST_OUTPUT"], "$RUNPOD_POD_ID", id),
		postStream: strings.ReplaceAll(env["RUNPOD_WEBHOOK_POST_STREAM"], "$RUNPOD_POD_ID", id),
		ping:       strings.ReplaceAll(env["RUNPOD_WEBHOOK_PING"], "$RUNPOD_POD_ID", id),
	}
}

// take is the job-take URL for free slots: the single URL for one, the batch URL (/job-take/ →
// /job-take-batch/ plus batch_size) for more; job_in_progress says whether the worker holds a job.
func (u rpURLs) take(free int, holding bool) string {
	inProgress := "0"
	if holding {
		inProgress = "1"
	}
	if free <= 1 {
		return u.getJob + "&job_in_progress=" + inProgress
	}
	return strings.ReplaceAll(u.getJob, "/job-take/", "/job-take-batch/") +
		"&batch_size=" + strconv.Itoa(free) + "&job_in_progress=" + inProgress
}

// stop is the job-stop URL: /job-take/ → /job-stop/, nothing appended.
func (u rpURLs) stop() string { return strings.ReplaceAll(u.getJob, "/job-take/", "/job-stop/") }

// done is the job-done URL of a job ($ID → job id) with isStream appended.
func (u rpURLs) done(job string, isStream bool) string {
	return strings.ReplaceAll(u.postOutput, "$ID", job) + "&isStream=" + strconv.FormatBool(isStream)
}

// stream is the job-stream URL of a job; chunk posts always say isStream=false.
func (u rpURLs) stream(job string) string {
	return strings.ReplaceAll(u.postStream, "$ID", job) + "&isStream=false"
}

// pingURL is the heartbeat URL as requests builds it from params={"job_id": "a,b" or None,
// "runpod_version": ...}: job_id left out when idle, the comma encoded as %2C.
func (u rpURLs) pingURL(jobIDs []string) string {
	q := ""
	if len(jobIDs) > 0 {
		q = "job_id=" + url.QueryEscape(strings.Join(jobIDs, ",")) + "&"
	}
	return u.ping + "&" + q + "runpod_version=" + rpVersion
}

// sessionHeader is what the SDK's shared aiohttp session sends on job-take and job-stop: the raw
// key (no "Bearer"), Content-Type: application/json even on GET, and the X-Request-ID of the last
// job the worker posted a result for (stale on GETs), if any.
func sessionHeader(key, requestID string) http.Header {
	h := http.Header{}
	h.Set("Authorization", key)
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", rpUserAgent)
	h.Set("Accept", "*/*")
	if requestID != "" {
		h.Set("X-Request-ID", requestID)
	}
	return h
}

// resultHeader is what job-done and job-stream posts carry: a JSON body labelled
// application/x-www-form-urlencoded, a literal "charset: utf-8" header and X-Request-ID: job id.
func resultHeader(key, jobID string) http.Header {
	h := sessionHeader(key, jobID)
	h.Set("Content-Type", "application/x-www-form-urlencoded")
	h["charset"] = []string{"utf-8"}
	return h
}

// pingHeader is what the ping process (requests, not aiohttp) sends.
func pingHeader(key string) http.Header {
	h := http.Header{}
	h.Set("Authorization", key)
	h.Set("User-Agent", "python-requests/2.31.0")
	h.Set("Accept", "*/*")
	h.Set("Connection", "keep-alive")
	return h
}

// workerOpts configures a worker double.
type workerOpts struct {
	Endpoint string
	// PodID is RUNPOD_POD_ID; "" makes a random one.
	PodID string
	// Key is RUNPOD_AI_API_KEY; "" uses the server's worker key.
	Key string
	// Concurrency is what concurrency_modifier returns; 0 means 1.
	Concurrency int
}

// wEvent is one thing the worker did or saw.
type wEvent struct {
	Kind  string // take, stop, ping, done, progress, stream, job, start, stopped, anomaly
	JobID string
	URL   string
	Code  int    // HTTP status; 0 for a transport error or a non-request event
	Body  string // the posted body, or the answer to a GET
	Err   string
	IDs   []string // take: job ids received; stop: jobsToStop
}

// rpWorker is a running worker double.
type rpWorker struct {
	t           *testing.T
	Env         map[string]string
	ID          string
	key         string
	urls        rpURLs
	pingEvery   time.Duration
	concurrency int

	session    *http.Client // the shared aiohttp session: take, stop, done, stream
	progressHC *http.Client // progress updates: their own session, in their own thread
	pingHC     *http.Client // requests in the ping process

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	requestID string              // the shared session's X-Request-ID header
	held      map[string]*heldJob // fetched and not finished: the ping's job_id list
	events    []wEvent
	changed   chan struct{}
	gates     map[string]chan struct{}
	closed    bool
	slot      chan struct{} // a slot became free
}

type heldJob struct{ cancel context.CancelFunc }

// startWorker starts a worker double against srv; it stops when the test ends, and any protocol
// anomaly it saw (5xx, refused auth, malformed take answers, failed posts) fails the test.
func startWorker(t *testing.T, srv *server, o workerOpts) *rpWorker {
	t.Helper()
	if o.PodID == "" {
		o.PodID = "w-" + strings.ToLower(newSecret()[6:16])
	}
	if o.Key == "" {
		o.Key = srv.Keys.Worker
	}
	if o.Concurrency == 0 {
		o.Concurrency = 1
	}
	env := workerEnv(srv.URL, o.Endpoint, o.PodID, o.Key)
	interval, _ := strconv.Atoi(env["RUNPOD_PING_INTERVAL"])
	ctx, cancel := context.WithCancel(context.Background())
	w := &rpWorker{
		t: t, Env: env, ID: o.PodID, key: env["RUNPOD_AI_API_KEY"], urls: newRPURLs(env),
		pingEvery:   time.Duration(interval/1000) * time.Second, // integer division, as the SDK does
		concurrency: o.Concurrency,
		session:     newHTTPClient(), progressHC: newHTTPClient(), pingHC: newHTTPClient(),
		ctx: ctx, cancel: cancel,
		held: map[string]*heldJob{}, changed: make(chan struct{}), gates: map[string]chan struct{}{},
		slot: make(chan struct{}, 1),
	}
	t.Cleanup(func() {
		w.Close()
		for _, e := range w.Events("anomaly") {
			t.Errorf("worker %s: %s", w.ID, e.Err)
		}
		if t.Failed() || os.Getenv("SPOOL_E2E_WIRELOG") != "" {
			t.Logf("---- worker %s wire log ----\n%s", w.ID, w.wireLog())
		}
	})
	w.wg.Add(3)
	go w.pingLoop()
	go w.stopLoop()
	go w.takeLoop()
	return w
}

// Close stops the worker: its long-polls are cancelled and running handlers stop without posting.
func (w *rpWorker) Close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	w.mu.Unlock()
	w.cancel()
	w.wg.Wait()
	for _, c := range []*http.Client{w.session, w.progressHC, w.pingHC} {
		c.CloseIdleConnections()
	}
}

// Release opens a gate: handlers whose input names it ("gate": name) go on.
func (w *rpWorker) Release(name string) { close(w.gate(name)) }

func (w *rpWorker) gate(name string) chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	g, ok := w.gates[name]
	if !ok {
		g = make(chan struct{})
		w.gates[name] = g
	}
	return g
}

func (w *rpWorker) record(e wEvent) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.events = append(w.events, e)
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *rpWorker) anomaly(format string, args ...any) {
	w.record(wEvent{Kind: "anomaly", Err: fmt.Sprintf(format, args...)})
}

// Events returns the events of the given kinds (all when none given), in order.
func (w *rpWorker) Events(kinds ...string) []wEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []wEvent
	for _, e := range w.events {
		if len(kinds) == 0 || slices.Contains(kinds, e.Kind) {
			out = append(out, e)
		}
	}
	return out
}

// JobEvents returns the events about one job.
func (w *rpWorker) JobEvents(jobID string) []wEvent {
	var out []wEvent
	for _, e := range w.Events() {
		if e.JobID == jobID || slices.Contains(e.IDs, jobID) {
			out = append(out, e)
		}
	}
	return out
}

// WaitEvent waits until an event matching pred has happened, or fails the test after timeout.
func (w *rpWorker) WaitEvent(t *testing.T, what string, timeout time.Duration, pred func(wEvent) bool) wEvent {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for range maxWakeups {
		w.mu.Lock()
		events := slices.Clone(w.events)
		changed := w.changed
		w.mu.Unlock()
		for _, e := range events {
			if pred(e) {
				return e
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			require.Failf(t, "worker event timeout", "worker %s: no %s within %s", w.ID, what, timeout)
		}
	}
	require.Failf(t, "worker event", "worker %s: no %s after %d events", w.ID, what, maxWakeups)
	return wEvent{}
}

// maxWakeups bounds the event-driven wait loops in count, besides their deadline.
const maxWakeups = 100000

// WaitJobEvent waits for an event of kind about job id.
func (w *rpWorker) WaitJobEvent(t *testing.T, kind, id string, timeout time.Duration) wEvent {
	t.Helper()
	return w.WaitEvent(t, kind+" of "+id, timeout, func(e wEvent) bool {
		return e.Kind == kind && (e.JobID == id || slices.Contains(e.IDs, id))
	})
}

func (w *rpWorker) wireLog() string {
	var b strings.Builder
	for _, e := range w.Events() {
		fmt.Fprintf(&b, "%-8s job=%s code=%d url=%s ids=%v err=%s body=%.300s\n", e.Kind, e.JobID, e.Code, e.URL, e.IDs, e.Err, e.Body)
	}
	return b.String()
}

// pause waits d or until the worker stops; it reports whether the worker goes on. It stands for
// the SDK's own sleeps (1 s after an empty job-stop poll, 5 s after a 429).
func (w *rpWorker) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.ctx.Done():
		return false
	}
}

func (w *rpWorker) heldIDs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	ids := make([]string, 0, len(w.held))
	for id := range w.held {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (w *rpWorker) sessionHeader() http.Header {
	w.mu.Lock()
	defer w.mu.Unlock()
	return sessionHeader(w.key, w.requestID)
}

// pingLoop is rp_ping: the first ping at once, then one every RUNPOD_PING_INTERVAL // 1000 s, with
// the ids of every held job; the answer is ignored (non-200 is recorded as an anomaly).
func (w *rpWorker) pingLoop() {
	defer w.wg.Done()
	tick := time.NewTicker(w.pingEvery)
	defer tick.Stop()
	for {
		u := w.urls.pingURL(w.heldIDs())
		ctx, cancel := context.WithTimeout(w.ctx, 2*w.pingEvery)
		r, err := doRequest(ctx, w.pingHC, http.MethodGet, u, pingHeader(w.key), nil)
		cancel()
		if w.ctx.Err() != nil {
			return
		}
		e := wEvent{Kind: "ping", URL: u, Code: r.Code, Body: string(r.Body)}
		if err != nil {
			e.Err = err.Error()
		}
		w.record(e)
		if err == nil && r.Code != http.StatusOK {
			w.anomaly("ping %s: %d %s", u, r.Code, r.Body)
		}
		select {
		case <-tick.C:
		case <-w.ctx.Done():
			return
		}
	}
}

// stopLoop is monitor_stop_signals: long-poll job-stop; 204 or an empty list → sleep 1 s; 429 →
// 5 s; errors → 1 s; {"jobsToStop":[...]} cancels those held jobs (unknown ids are ignored).
func (w *rpWorker) stopLoop() {
	defer w.wg.Done()
	u := w.urls.stop()
	for w.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(w.ctx, 90*time.Second)
		r, err := doRequest(ctx, w.session, http.MethodGet, u, w.sessionHeader(), nil)
		cancel()
		if w.ctx.Err() != nil {
			return
		}
		e := wEvent{Kind: "stop", URL: u, Code: r.Code, Body: string(r.Body)}
		switch {
		case err != nil:
			e.Err = err.Error()
			w.record(e)
			w.pause(time.Second)
			continue
		case r.Code == http.StatusNoContent:
			w.record(e)
			w.pause(time.Second)
			continue
		case r.Code == http.StatusTooManyRequests:
			w.record(e)
			w.pause(5 * time.Second)
			continue
		case r.Code != http.StatusOK:
			w.record(e)
			w.anomaly("job-stop %s: %d %s", u, r.Code, r.Body)
			w.pause(time.Second)
			continue
		}
		var body struct {
			JobsToStop []string `json:"jobsToStop"`
		}
		if !isJSON(r.Header) || json.Unmarshal(r.Body, &body) != nil {
			w.record(e)
			w.anomaly("job-stop %s: 200 with a body the SDK ignores: %q (Content-Type %q)", u, r.Body, r.Header.Get("Content-Type"))
			w.pause(time.Second)
			continue
		}
		e.IDs = body.JobsToStop
		w.record(e)
		if len(body.JobsToStop) == 0 {
			w.pause(time.Second)
			continue
		}
		w.mu.Lock()
		for _, id := range body.JobsToStop {
			if j, ok := w.held[id]; ok {
				j.cancel()
			}
		}
		w.mu.Unlock()
	}
}

func isJSON(h http.Header) bool {
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	return err == nil && mt == "application/json"
}

// takeLoop is JobScaler.get_jobs: with k free slots, take one job (k = 1) or a batch of k;
// 204 → poll again at once; 429 → sleep 5 s; other errors → poll again at once (bounded here, so
// a dead server cannot spin the test forever); a 200 JSON object or array is handed to handlers.
func (w *rpWorker) takeLoop() {
	defer w.wg.Done()
	failures := 0
	for w.ctx.Err() == nil {
		held := len(w.heldIDs())
		free := w.concurrency - held
		if free <= 0 {
			select {
			case <-w.slot:
			case <-w.ctx.Done():
				return
			}
			continue
		}
		u := w.urls.take(free, held > 0)
		ctx, cancel := context.WithTimeout(w.ctx, 90*time.Second)
		r, err := doRequest(ctx, w.session, http.MethodGet, u, w.sessionHeader(), nil)
		cancel()
		if w.ctx.Err() != nil {
			return
		}
		e := wEvent{Kind: "take", URL: u, Code: r.Code, Body: string(r.Body)}
		if err != nil {
			e.Err = err.Error()
		}
		switch {
		case r.Code == http.StatusNoContent:
			// No job: poll again at once.
			failures = 0
			w.record(e)
			continue
		case r.Code == http.StatusTooManyRequests:
			failures = 0
			w.record(e)
			w.pause(5 * time.Second)
			continue
		case err != nil || r.Code != http.StatusOK:
			// The SDK treats 400 as "no job" (FlashBoot) and logs any other error, then polls again at
			// once. Spool has no reason to answer a correct take with either, so the first of a run
			// is an anomaly; a long run (a dead server) ends the loop instead of spinning.
			w.record(e)
			if failures == 0 && err == nil {
				w.anomaly("job-take %s: %d %s", u, r.Code, r.Body)
			}
			if failures++; failures >= 50 {
				w.anomaly("job-take %s: %d failures in a row, giving up (last: %v %d %s)", u, failures, err, r.Code, r.Body)
				return
			}
			continue
		}
		failures = 0
		switch {
		case !isJSON(r.Header):
			w.record(e)
			w.anomaly("job-take %s: 200 with Content-Type %q, which the SDK ignores", u, r.Header.Get("Content-Type"))
			continue
		case len(r.Body) == 0:
			w.record(e)
			w.anomaly("job-take %s: 200 with an empty body, which the SDK ignores", u)
			continue
		}
		// Each job is kept as the raw bytes the server sent, so that tests can check them exactly.
		var raws []json.RawMessage
		trimmed := strings.TrimSpace(string(r.Body))
		switch {
		case strings.HasPrefix(trimmed, "["):
			if err := json.Unmarshal(r.Body, &raws); err != nil {
				w.anomaly("job-take %s: bad batch %q: %v", u, r.Body, err)
			}
		case strings.HasPrefix(trimmed, "{"):
			raws = append(raws, json.RawMessage(trimmed))
		default:
			w.anomaly("job-take %s: 200 with %q: no job to the SDK", u, r.Body)
		}
		var jobs []map[string]json.RawMessage
		var rawJobs []json.RawMessage
		for _, raw := range raws {
			var j map[string]json.RawMessage
			if err := json.Unmarshal(raw, &j); err != nil || j == nil {
				w.anomaly("job-take %s: a job that is not an object %q: %v", u, raw, err)
				continue
			}
			jobs = append(jobs, j)
			rawJobs = append(rawJobs, raw)
		}
		if len(jobs) > free {
			w.anomaly("job-take %s: %d jobs for %d free slots", u, len(jobs), free)
		}
		for _, j := range jobs {
			var id string
			_ = json.Unmarshal(j["id"], &id)
			in, hasInput := j["input"]
			if id == "" || !hasInput || string(in) == "null" {
				w.anomaly("job-take %s: job has missing field(s): id or input (or a null input): %v", u, keysOf(j))
				continue
			}
			e.IDs = append(e.IDs, id)
		}
		w.record(e)
		for i, j := range jobs {
			var id string
			_ = json.Unmarshal(j["id"], &id)
			if id != "" && j["input"] != nil && string(j["input"]) != "null" {
				w.startJob(id, j, rawJobs[i])
			}
		}
	}
}

func (w *rpWorker) startJob(id string, job map[string]json.RawMessage, raw json.RawMessage) {
	ctx, cancel := context.WithCancel(w.ctx)
	w.mu.Lock()
	w.held[id] = &heldJob{cancel: cancel}
	w.mu.Unlock()
	w.record(wEvent{Kind: "job", JobID: id, Body: string(raw)})
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer func() {
			w.mu.Lock()
			delete(w.held, id)
			w.mu.Unlock()
			cancel()
			select {
			case w.slot <- struct{}{}:
			default:
			}
		}()
		w.handle(ctx, id, job)
	}()
}

// modeInput is what the handler reads from job["input"].
type modeInput struct {
	Mode string `json:"mode"`
	// Gate names a gate the handler waits at (see rpWorker.Release); where depends on the mode.
	Gate string `json:"gate"`
	// Chunks is the number of chunks a generator yields (default 3); GateAfter how many it yields
	// before waiting at Gate.
	Chunks    int `json:"chunks"`
	GateAfter int `json:"gateAfter"`
	// Output is what mode "value" returns, as given.
	Output json.RawMessage `json:"output"`
}

// handle runs the handler for one job and posts what runpod-python would post for its outcome
// (docs/worker-protocol.md §4). A job stopped through job-stop (or by the worker's end) posts
// nothing.
func (w *rpWorker) handle(ctx context.Context, id string, job map[string]json.RawMessage) {
	var in modeInput
	_ = json.Unmarshal(job["input"], &in) // a non-object input is simply echoed
	w.record(wEvent{Kind: "start", JobID: id})
	wait := func() bool {
		if in.Gate == "" {
			return true
		}
		select {
		case <-w.gate(in.Gate):
			return true
		case <-ctx.Done():
			return false
		}
	}
	stopped := func() { w.record(wEvent{Kind: "stopped", JobID: id}) }

	switch in.Mode {
	case "progress":
		// runpod.serverless.progress_update(job, {"pct": 50}): fire and forget, then the result.
		w.progress(id, `{"status": "IN_PROGRESS", "output": {"pct": 50}}`, false)
		if !wait() {
			stopped()
			return
		}
		w.result(id, `{"output": "done-str"}`, false, 1)
	case "slow":
		// asyncio.sleep(...) until job-stop cancels the task: nothing is posted.
		<-ctx.Done()
		stopped()
	case "generator":
		n := in.Chunks
		if n == 0 {
			n = 3
		}
		var chunks []string
		for i := 0; i < n; i++ {
			if i == in.GateAfter && !wait() {
				stopped()
				return
			}
			c := pyJSON(fmt.Sprintf(`{"chunk": %d}`, i))
			chunks = append(chunks, c)
			if code := w.post("stream", id, w.urls.stream(id), `{"output": `+c+`}`); code != http.StatusOK && w.ctx.Err() == nil {
				w.anomaly("job-stream %s chunk %d: %d", id, i, code)
			}
		}
		// return_aggregate_stream: True: the final job-done carries every chunk, isStream=true.
		w.result(id, `{"output": [`+strings.Join(chunks, ", ")+`]}`, true, 1)
	default:
		if !wait() {
			stopped()
			return
		}
		body, posts := w.outcome(id, in, job)
		w.result(id, body, false, posts)
		if in.Mode == "late" {
			// A progress thread that lost the race: its post arrives after the result.
			w.progress(id, `{"status": "IN_PROGRESS", "output": {"pct": 99}}`, true)
		}
	}
}

// outcome is the job-done body for the simple modes, and how many times it is posted.
func (w *rpWorker) outcome(id string, in modeInput, job map[string]json.RawMessage) (string, int) {
	switch in.Mode {
	case "raise":
		// An exception: error is a JSON-encoded string (rp_job.run_job).
		return `{"error": ` + pyString(raiseError(w.ID)) + `}`, 1
	case "error":
		// The handler returned {"extra": 1, "error": "custom failure"}.
		return `{"output": {"extra": 1}, "error": "custom failure"}`, 1
	case "list":
		return `{"output": [1, 2, 3]}`, 1
	case "bool":
		return `{"output": false}`, 1
	case "empty":
		return `{}`, 1
	case "refresh":
		// The handler returned {"value": 1, "refresh_worker": True}.
		return `{"output": {"value": 1}, "stopPod": true}`, 1
	case "late":
		return `{"output": "final"}`, 1
	case "triple":
		// aiohttp_retry re-sends a post that got a 5xx: the same result up to 3 times.
		return `{"output": "once"}`, 3
	case "value":
		return `{"output": ` + pyJSON(string(in.Output)) + `}`, 1
	}
	// echo
	keys := keysOf(job)
	slices.Sort(keys)
	return pyJSON(`{"output": {"echo": ` + string(job["input"]) + `, "job_keys": ` + string(mustJSON(keys)) + `}}`), 1
}

// raiseError is the error string runpod-python 1.12 posts when a handler raises ValueError("boom").
func raiseError(workerID string) string {
	tb := "Traceback (most recent call last):\n  File \"/app/handler.py\", line 12, in handler\n    raise ValueError(\"boom\")\nValueError: boom\n"
	return pyJSON(`{"error_type": "<class 'ValueError'>", "error_message": "boom", "error_traceback": ` +
		string(mustJSON(tb)) + `, "hostname": "unknown", "worker_id": ` + string(mustJSON(workerID)) +
		`, "runpod_version": "` + rpVersion + `"}`)
}

// result posts the final result to job-done (isStream as given) posts times; every post must get
// a 200.
func (w *rpWorker) result(id, body string, isStream bool, posts int) {
	for i := 0; i < posts; i++ {
		if code := w.post("done", id, w.urls.done(id, isStream), body); code != http.StatusOK && w.ctx.Err() == nil {
			w.anomaly("job-done %s (post %d of %d): got %d, want 200", id, i+1, posts, code)
		}
	}
}

// post is rp_http._transmit on the shared session: X-Request-ID becomes the job id (and stays on the
// session), the body is raw UTF-8 JSON labelled as a form; a 5xx is retried up to 3 attempts in
// all with FibonacciRetry sleeps (2 s, 3 s); 4xx and transport errors are not retried. It returns
// the last status (0 on a transport error).
func (w *rpWorker) post(kind, id, u, body string) int {
	body = pyJSON(body)
	w.mu.Lock()
	w.requestID = id
	w.mu.Unlock()
	sleeps := []time.Duration{2 * time.Second, 3 * time.Second}
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(w.ctx, 10*time.Minute)
		r, err := doRequest(ctx, w.session, http.MethodPost, u, resultHeader(w.key, id), []byte(body))
		cancel()
		e := wEvent{Kind: kind, JobID: id, URL: u, Code: r.Code, Body: body}
		if err != nil {
			e.Err = err.Error()
		}
		w.record(e)
		if err != nil || r.Code < 500 || attempt == len(sleeps) {
			return r.Code
		}
		if !w.pause(sleeps[attempt]) {
			return r.Code
		}
	}
}

// progress is runpod.serverless.progress_update: a post to the job-done URL (isStream=false) from
// its own thread and session. With inline it runs in the caller (so that it surely arrives after what was
// posted before); otherwise it is fire-and-forget.
func (w *rpWorker) progress(id, body string, inline bool) {
	send := func() {
		u := w.urls.done(id, false)
		body := pyJSON(body)
		ctx, cancel := context.WithTimeout(w.ctx, time.Minute)
		defer cancel()
		r, err := doRequest(ctx, w.progressHC, http.MethodPost, u, resultHeader(w.key, id), []byte(body))
		e := wEvent{Kind: "progress", JobID: id, URL: u, Code: r.Code, Body: body}
		if err != nil {
			e.Err = err.Error()
		}
		w.record(e)
	}
	if inline {
		send()
		return
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		send()
	}()
}

// plainWorker sends single worker-protocol requests with runpod-python's URLs and headers, for
// tests that need exact control over what a worker does and when.
type plainWorker struct {
	srv  *server
	ID   string
	key  string
	urls rpURLs
}

func newPlainWorker(srv *server, ep, podID string) *plainWorker {
	env := workerEnv(srv.URL, ep, podID, srv.Keys.Worker)
	return &plainWorker{srv: srv, ID: podID, key: srv.Keys.Worker, urls: newRPURLs(env)}
}

// get sends a GET to a full worker URL with the session headers.
func (p *plainWorker) get(t *testing.T, u string) resp {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := doRequest(ctx, p.srv.client, http.MethodGet, u, sessionHeader(p.key, ""), nil)
	require.NoError(t, err, "GET %s", u)
	return r
}

// TakeOne takes one job, requiring a 200 object, and returns its fields.
func (p *plainWorker) TakeOne(t *testing.T) map[string]json.RawMessage {
	t.Helper()
	r := p.get(t, p.urls.take(1, false))
	require.Equal(t, http.StatusOK, r.Code, "job-take: %s", r)
	require.True(t, isJSON(r.Header), "job-take Content-Type %q", r.Header.Get("Content-Type"))
	return fields(t, r.Body)
}

// Done posts a result body (runpod-python style) and returns the answer.
func (p *plainWorker) Done(t *testing.T, jobID, body string) resp {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	u := p.urls.done(jobID, false)
	r, err := doRequest(ctx, p.srv.client, http.MethodPost, u, resultHeader(p.key, jobID), []byte(pyJSON(body)))
	require.NoError(t, err, "POST %s", u)
	return r
}

// Ping sends one heartbeat listing jobIDs.
func (p *plainWorker) Ping(t *testing.T, jobIDs []string) resp {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	u := p.urls.pingURL(jobIDs)
	r, err := doRequest(ctx, p.srv.client, http.MethodGet, u, pingHeader(p.key), nil)
	require.NoError(t, err, "GET %s", u)
	return r
}
