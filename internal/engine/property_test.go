package engine_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/store"
	"github.com/spool-run/spool/store/sqlitestore"
)

// The property test drives the engine with random sequences of everything that can happen to
// jobs (clients, workers, the fleet, the passing of time) and, after every step, reads every job
// back and holds it against two things: a model that predicts each job exactly, and invariants
// that hold whatever the model says (docs/contract.md §3 and the fencing and durability rows of §2).
// The model finds wrong answers; the invariants keep the model itself honest, since a model with
// the engine's bug would otherwise agree with it.
//
// Each sequence is at most propMaxSteps long; -rapid.checks (or RAPID_CHECKS) sets how many
// sequences run, propDefaultChecks by default. A failure prints the shortest sequence rapid found
// and how to replay it (-rapid.seed); rapid also saves it under testdata/rapid unless
// -rapid.nofailfile is given.

const (
	propMaxSteps   = 40
	propMaxRetries = 2
	// propMaxQueue caps the queue of propEndpoints[1], so that some submissions are refused.
	propMaxQueue = 3
	// propListLimit bounds the read-back of all jobs; a sequence creates at most propMaxSteps.
	propListLimit = 1000
)

var (
	propStart     = time.UnixMilli(1_900_000_000_000).UTC()
	propEndpoints = []string{"ep-a", "ep-b"}
	propWorkers   = []string{"w1", "w2", "w3"}
	// Short retentions and deadlines, so that clock jumps of a few minutes reach all of them.
	propRetention  = spool.Retention{Run: 90 * time.Second, Sync: 30 * time.Second}
	propEndpointTT = 45 * time.Second
	propEndpointET = 15 * time.Second
	propUnknownID  = "00000000-0000-4000-8000-000000000000"
	propS3Config   = json.RawMessage(`{"accessId":"a","accessSecret":"s","bucketName":"b","endpointUrl":"https://s3.example.com"}`)
	propWebhook    = "https://example.com/hook"
)

// neverLeads keeps the engine's own sweeper from running rounds when the fake clock passes its
// interval: the test sweeps, synchronously, after each clock move.
type neverLeads struct{}

func (neverLeads) Leading() bool { return false }

// propDefaultChecks is how many sequences run unless -rapid.checks or RAPID_CHECKS says otherwise:
// rapid's own default of 100 takes most of a minute under -race, each step being a durable
// SQLite write and a read-back of every job.
const propDefaultChecks = 25

func init() {
	if _, set := os.LookupEnv("RAPID_CHECKS"); !set {
		// Before flag.Parse: a -rapid.checks on the command line still wins.
		if err := flag.Set("rapid.checks", strconv.Itoa(propDefaultChecks)); err != nil {
			panic(err)
		}
	}
}

func TestJobStateMachineProperties(t *testing.T) {
	t.Parallel()
	pool := &propPool{dir: propDir(t)}
	t.Cleanup(func() {
		if err := pool.close(); err != nil {
			t.Errorf("close engine: %v", err)
		}
	})
	rapid.Check(t, func(rt *rapid.T) {
		m := pool.machine(rt)
		steps := rapid.IntRange(1, propMaxSteps).Draw(rt, "steps")
		m.observe(rt, step{name: "start"})
		for range steps {
			name := rapid.SampledFrom(m.actionNames()).Draw(rt, "action")
			s := propActions[name](m, rt)
			s.name = name
			m.observe(rt, s)
		}
	})
}

// propDir is where the test's stores live: in memory when the system has a tmpfs at /dev/shm,
// because each step commits with an fsync, which on a busy disk costs more than the rest of the
// step, and what this test checks is the engine, not the store's durability.
func propDir(t *testing.T) string {
	t.Helper()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "spool-property-"); err == nil {
			t.Cleanup(func() {
				if err := os.RemoveAll(dir); err != nil {
					t.Errorf("remove %s: %v", dir, err)
				}
			})
			return dir
		}
	}
	return t.TempDir()
}

// propEngine is an engine on its own SQLite store, driven by its own fake clock.
type propEngine struct {
	st    *sqlitestore.Store
	eng   *engine.Engine
	clock *clock.Fake
}

func (e *propEngine) close() error {
	e.eng.Stop()
	return e.st.Close()
}

// propPool keeps an engine from one sequence to the next: opening a store costs more than a whole
// sequence. A sequence starts only on an engine without jobs; one that cannot be emptied is
// replaced.
type propPool struct {
	dir  string
	n    int
	idle *propEngine
}

func (p *propPool) close() error {
	e := p.idle
	p.idle = nil
	if e == nil {
		return nil
	}
	return e.close()
}

func (p *propPool) open(t *rapid.T) *propEngine {
	ctx := context.Background()
	p.n++
	st, err := sqlitestore.Open(ctx, filepath.Join(p.dir, fmt.Sprintf("spool-%d.db", p.n)))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	fc := clock.NewFake(propStart)
	eng, err := engine.New(engine.Config{
		Store: st, Clock: fc, Retention: propRetention, MaxRetries: propMaxRetries, Leader: neverLeads{},
		// Terminal transitions of jobs with a webhook enqueue their delivery in the same write,
		// as on a server.
		WebhookPayload: func(*spool.Job) json.RawMessage { return json.RawMessage(`{}`) },
	})
	if err == nil {
		err = eng.Start(ctx)
	}
	if err != nil {
		_ = st.Close()
		t.Fatalf("start engine: %v", err)
	}
	e := &propEngine{st: st, eng: eng, clock: fc}
	for i, name := range propEndpoints {
		ep := spool.NewEndpoint(name)
		ep.TTLMs, ep.ExecutionTimeoutMs = propEndpointTT.Milliseconds(), propEndpointET.Milliseconds()
		if i == 1 {
			ep.MaxQueue = propMaxQueue
		}
		if _, _, err := eng.PutEndpoint(ctx, ep); err != nil {
			_ = e.close()
			t.Fatalf("put endpoint %s: %v", name, err)
		}
	}
	return e
}

// machine returns a machine on an engine without jobs, and hands the engine back, emptied, when
// the sequence ends.
func (p *propPool) machine(t *rapid.T) *machine {
	e := p.idle
	p.idle = nil
	if e == nil {
		e = p.open(t)
	}
	m := &machine{ctx: context.Background(), propEngine: e, byID: map[string]*modelJob{}, seen: map[string]*spool.Job{}}
	t.Cleanup(func() {
		if err := m.empty(); err != nil {
			t.Logf("replacing the engine: %v", err)
			if err := e.close(); err != nil {
				t.Errorf("close engine: %v", err)
			}
			return
		}
		p.idle = e
	})
	return m
}

// empty ends every job and lets retention delete them all, so that the next sequence starts
// from nothing.
func (m *machine) empty() error {
	jobs, err := m.eng.ListJobs(m.ctx, store.ListJobsParams{Limit: propListLimit})
	if err != nil {
		return err
	}
	for _, j := range jobs {
		if !j.State.Terminal() {
			if _, err := m.eng.Cancel(m.ctx, j.Endpoint, j.ID); err != nil {
				return err
			}
		}
	}
	// Past every retention a sequence can set (set-retention's longest is 10 min).
	m.clock.Advance(time.Hour)
	if _, err := m.eng.Sweep(m.ctx); err != nil {
		return err
	}
	if jobs, err = m.eng.ListJobs(m.ctx, store.ListJobsParams{Limit: 1}); err != nil {
		return err
	}
	if len(jobs) > 0 {
		return fmt.Errorf("job %s (%s) is left", jobs[0].ID, jobs[0].State)
	}
	return nil
}

// propActions are the steps a sequence is made of.
var propActions = map[string]func(*machine, *rapid.T) step{
	"submit":          (*machine).submit,
	"take":            (*machine).take,
	"progress":        (*machine).progress,
	"done":            (*machine).done,
	"cancel":          (*machine).cancel,
	"retry":           (*machine).retry,
	"purge-queue":     (*machine).purge,
	"ping":            (*machine).ping,
	"lost-worker":     (*machine).loseWorker,
	"lose-stale-held": (*machine).loseHeld,
	"release":         (*machine).release,
	"ack-stops":       (*machine).ackStops,
	"set-retention":   (*machine).setRetention,
	"clock-jump":      (*machine).jump,
	"clock-deadline":  (*machine).jumpToDeadline,
}

// propActionNames is the draw of the next action, each as often as it appears; actionNames adds
// to it.
var propActionNames = []string{
	"submit", "submit", "take", "progress", "done", "cancel", "retry", "purge-queue", "ping", "ping",
	"lost-worker", "lose-stale-held", "release", "ack-stops", "set-retention", "clock-jump", "clock-deadline",
}

// actionNames weighs the next draw towards the actions that can change something now: in a
// uniform draw most posts would find no job running, and most takes an empty queue.
func (m *machine) actionNames() []string {
	n := map[spool.State]int{}
	for _, j := range m.jobs {
		if !j.deleted {
			n[j.state]++
		}
	}
	names := slices.Clone(propActionNames)
	if n[spool.StateInQueue] > 0 {
		names = append(names, "take", "take", "take")
	}
	if n[spool.StateInProgress] > 0 {
		names = append(names, "done", "done", "done", "progress", "ping")
	}
	if n[spool.StateFailed]+n[spool.StateTimedOut] > 0 {
		names = append(names, "retry")
	}
	if len(m.jobs) > 0 {
		names = append(names, "clock-deadline")
	}
	return names
}

// modelJob is what the model expects a job to be.
type modelJob struct {
	id, endpoint string
	seq          int // submission order: the queue's tie-break
	low, sync    bool
	hadS3        bool
	webhook      string
	input        string
	ttl, exec    time.Duration
	retention    time.Duration
	createdAt    time.Time

	deleted                       bool
	state                         spool.State
	worker                        string
	attempt, retries              int
	queuedAt, takenAt, finishedAt time.Time
	expiresAt, timeoutAt          time.Time
	deleteAt                      time.Time
	output, progress              string // "" for none
	err                           string
	anyErr                        bool // err is some message the model does not spell out
	stopPod, endedByWorker        bool
	stopPending                   bool
}

func (j *modelJob) claim(worker string, now time.Time) {
	j.state, j.worker, j.attempt = spool.StateInProgress, worker, j.attempt+1
	j.takenAt, j.timeoutAt = now, now.Add(j.exec)
	j.output, j.err, j.anyErr = "", "", false
}

func (j *modelJob) requeue(now time.Time) {
	j.state, j.retries, j.worker = spool.StateInQueue, j.retries+1, ""
	j.queuedAt, j.expiresAt, j.takenAt, j.finishedAt = now, now.Add(j.ttl), time.Time{}, time.Time{}
	j.output, j.progress, j.err, j.anyErr = "", "", "", false
	j.stopPod, j.endedByWorker, j.stopPending = false, false, false
}

func (j *modelJob) finish(to spool.State, now time.Time) {
	j.state, j.finishedAt, j.deleteAt, j.progress = to, now, now.Add(j.retention), ""
}

func (j *modelJob) endByServer(to spool.State, msg string, anyMsg, stop bool, now time.Time) {
	j.finish(to, now)
	j.err, j.anyErr, j.output = msg, anyMsg, ""
	j.stopPending, j.endedByWorker = stop, false
}

// lose is what becomes of a running job whose worker is gone.
func (j *modelJob) lose(now time.Time) {
	if j.retries >= propMaxRetries {
		j.endByServer(spool.StateFailed, "", true, false, now)
		return
	}
	j.requeue(now)
}

type machine struct {
	*propEngine
	ctx  context.Context
	jobs []*modelJob
	byID map[string]*modelJob
	// handouts are jobs as takes handed them out, for the steps that act on a stale view.
	handouts []*spool.Job
	seen     map[string]*spool.Job // the last read-back
	outputs  int
}

func (m *machine) now() time.Time { return m.clock.Now().Truncate(time.Millisecond) }

// step is what one action did, for the checks that follow it.
type step struct {
	name string
	// refused is set when the engine answered the action with an error: it must have changed
	// nothing.
	refused bool
	// retried is the job a successful /retry sent back to the queue: the one way out of a
	// terminal state.
	retried string
	// handed are the jobs a take handed out.
	handed []*spool.Job
}

// live is the model of a job that the engine must still have, or nil.
func (m *machine) live(id string) *modelJob {
	if j := m.byID[id]; j != nil && !j.deleted {
		return j
	}
	return nil
}

// of is the model of a job as seen through endpoint: nil when the endpoint's API must answer 404.
func (m *machine) of(endpoint, id string) *modelJob {
	if j := m.live(id); j != nil && j.endpoint == endpoint {
		return j
	}
	return nil
}

// pickJob draws a job id: mostly one of the jobs the action means something for (those in the
// states named), otherwise any job ever submitted, deleted ones included, or one never submitted.
func (m *machine) pickJob(t *rapid.T, states ...spool.State) string {
	var fit []string
	for _, j := range m.jobs {
		if !j.deleted && slices.Contains(states, j.state) {
			fit = append(fit, j.id)
		}
	}
	if len(fit) > 0 && rapid.IntRange(0, 4).Draw(t, "fitting") > 0 {
		return fit[rapid.IntRange(0, len(fit)-1).Draw(t, "job")]
	}
	i := rapid.IntRange(0, len(m.jobs)).Draw(t, "job")
	if i == len(m.jobs) {
		return propUnknownID
	}
	return m.jobs[i].id
}

// pickEndpointFor draws the endpoint a request about id names: mostly the job's own.
func (m *machine) pickEndpointFor(t *rapid.T, id string) string {
	if j := m.byID[id]; j != nil && rapid.IntRange(0, 9).Draw(t, "ownEndpoint") > 0 {
		return j.endpoint
	}
	return rapid.SampledFrom(propEndpoints).Draw(t, "endpoint")
}

func expectCode(t *rapid.T, what string, err error, want spool.Code) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("%s: unexpected error: %v", what, err)
		}
		return
	}
	if got := spool.ErrorCode(err); err == nil || got != want {
		t.Fatalf("%s: want an error coded %q, got %v (code %q)", what, want, err, got)
	}
}

func (m *machine) submit(t *rapid.T) step {
	ep := rapid.SampledFrom(propEndpoints).Draw(t, "endpoint")
	p := engine.SubmitParams{
		Endpoint:    ep,
		Input:       json.RawMessage(fmt.Sprintf(`{"n": %d}`, len(m.jobs))),
		LowPriority: rapid.Bool().Draw(t, "low"),
		Sync:        rapid.Bool().Draw(t, "sync"),
	}
	if rapid.Bool().Draw(t, "webhook") {
		p.Webhook = propWebhook
	}
	if rapid.Bool().Draw(t, "s3Config") {
		p.S3Config = propS3Config
	}
	// 0 takes the endpoint's default; 5000 is below the minimum TTL and refused.
	ttl := rapid.SampledFrom([]int64{0, 0, 10_000, 10_000, 30_000, 30_000, 5_000}).Draw(t, "ttlMs")
	exec := rapid.SampledFrom([]int64{0, 6_000, 20_000}).Draw(t, "executionTimeoutMs")
	mj := &modelJob{
		endpoint: ep, seq: len(m.jobs), low: p.LowPriority, sync: p.Sync, hadS3: p.S3Config != nil,
		webhook: p.Webhook, input: string(p.Input), ttl: propEndpointTT, exec: propEndpointET,
		retention: propRetention.For(p.Sync), state: spool.StateInQueue,
	}
	if ttl != 0 {
		p.TTLMs, mj.ttl = &ttl, time.Duration(ttl)*time.Millisecond
	}
	if exec != 0 {
		p.ExecutionTimeoutMs, mj.exec = &exec, time.Duration(exec)*time.Millisecond
	}
	var want spool.Code
	switch {
	case ttl != 0 && ttl < spool.MinTTLMs:
		want = spool.CodeInvalid
	case ep == propEndpoints[1] && m.queued(ep) >= propMaxQueue:
		want = spool.CodeTooMany
	}
	j, err := m.eng.Submit(m.ctx, p)
	expectCode(t, "submit", err, want)
	if err != nil {
		return step{refused: true}
	}
	if m.byID[j.ID] != nil {
		t.Fatalf("submit: job id %s given twice", j.ID)
	}
	now := m.now()
	mj.id, mj.createdAt, mj.queuedAt, mj.expiresAt = j.ID, now, now, now.Add(mj.ttl)
	m.jobs = append(m.jobs, mj)
	m.byID[j.ID] = mj
	return step{}
}

func (m *machine) queued(endpoint string) int {
	n := 0
	for _, j := range m.jobs {
		if !j.deleted && j.endpoint == endpoint && j.state == spool.StateInQueue {
			n++
		}
	}
	return n
}

func (m *machine) take(t *rapid.T) step {
	ep := rapid.SampledFrom(propEndpoints).Draw(t, "endpoint")
	worker := rapid.SampledFrom(propWorkers).Draw(t, "worker")
	n := rapid.IntRange(1, 3).Draw(t, "batch")
	now := m.now()
	// The queue's order: normal before low priority, then first queued first, then submitted
	// first; a job past its TTL is never handed out, swept or not.
	var claimable []*modelJob
	for _, j := range m.jobs {
		if !j.deleted && j.endpoint == ep && j.state == spool.StateInQueue && j.expiresAt.After(now) {
			claimable = append(claimable, j)
		}
	}
	slices.SortStableFunc(claimable, func(a, b *modelJob) int {
		switch {
		case a.low != b.low:
			if a.low {
				return 1
			}
			return -1
		case !a.queuedAt.Equal(b.queuedAt):
			return a.queuedAt.Compare(b.queuedAt)
		}
		return a.seq - b.seq
	})
	claimable = claimable[:min(n, len(claimable))]
	handouts, err := m.eng.Take(m.ctx, ep, worker, n, 0)
	expectCode(t, "take", err, "")
	got := make([]string, len(handouts))
	jobs := make([]*spool.Job, len(handouts))
	for i, h := range handouts {
		got[i], jobs[i] = h.Job.ID, h.Job
		var s3 string
		if mj := m.byID[h.Job.ID]; mj != nil && mj.hadS3 {
			s3 = string(propS3Config)
		}
		if string(h.S3Config) != s3 {
			t.Fatalf("take: the s3Config of job %s opened as %q, want %q", h.Job.ID, h.S3Config, s3)
		}
	}
	want := make([]string, len(claimable))
	for i, j := range claimable {
		want[i] = j.id
		j.claim(worker, now)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("take %d by %s from %s: handed %v, want %v", n, worker, ep, got, want)
	}
	m.handouts = append(m.handouts, jobs...)
	return step{handed: jobs}
}

// post draws a worker's post about a job: by the job's holder or another worker, naming the
// current attempt, none, a stale one or a future one.
func (m *machine) post(t *rapid.T) engine.DoneParams {
	id := m.pickJob(t, spool.StateInProgress)
	p := engine.DoneParams{Endpoint: m.pickEndpointFor(t, id), JobID: id}
	mj := m.byID[id]
	if mj != nil && mj.worker != "" && rapid.IntRange(0, 4).Draw(t, "byHolder") > 0 {
		p.WorkerID = mj.worker
	} else {
		p.WorkerID = rapid.SampledFrom(propWorkers).Draw(t, "worker")
	}
	cur := 0
	if mj != nil {
		cur = mj.attempt
	}
	p.Attempt = rapid.SampledFrom([]int{0, 0, cur, cur, cur, cur - 1, cur + 1}).Draw(t, "attempt")
	m.outputs++
	p.Output = json.RawMessage(fmt.Sprintf(`{"out": %d}`, m.outputs))
	return p
}

// postAnswer is what the engine must answer a worker's post: whether it applies, and the error
// code otherwise ("" for a post accepted without effect).
func (m *machine) postAnswer(p engine.DoneParams) (*modelJob, bool, spool.Code) {
	j := m.of(p.Endpoint, p.JobID)
	if j == nil {
		return nil, false, spool.CodeNotFound
	}
	holder := j.worker == p.WorkerID && (p.Attempt <= 0 || p.Attempt == j.attempt)
	switch {
	case holder && j.state == spool.StateInProgress:
		return j, true, ""
	case holder && j.state.Terminal() && (p.InProgress || j.endedByWorker):
		return j, false, "" // late progress, or a repeated result: accepted, changes nothing
	}
	return j, false, spool.CodeConflict
}

func (m *machine) progress(t *rapid.T) step {
	p := m.post(t)
	p.InProgress = true
	j, applies, want := m.postAnswer(p)
	res, err := m.eng.Done(m.ctx, p)
	expectCode(t, fmt.Sprintf("progress %+v", p), err, want)
	if err == nil && res.Applied != applies {
		t.Fatalf("progress %+v: applied %v, want %v", p, res.Applied, applies)
	}
	if applies {
		j.progress = string(p.Output)
	}
	return step{refused: err != nil}
}

func (m *machine) done(t *rapid.T) step {
	p := m.post(t)
	failed := rapid.Bool().Draw(t, "failed")
	if failed {
		p.Error = new(string)
		*p.Error = fmt.Sprintf("handler error %d", m.outputs)
	}
	p.StopPod = rapid.Bool().Draw(t, "stopPod")
	j, applies, want := m.postAnswer(p)
	res, err := m.eng.Done(m.ctx, p)
	expectCode(t, fmt.Sprintf("done %+v", p), err, want)
	if err == nil && res.Applied != applies {
		t.Fatalf("done %+v: applied %v, want %v", p, res.Applied, applies)
	}
	if applies {
		to := spool.StateCompleted
		j.err, j.anyErr = "", false
		if failed {
			to, j.err = spool.StateFailed, *p.Error
		}
		j.finish(to, m.now())
		j.output, j.stopPod, j.endedByWorker, j.stopPending = string(p.Output), p.StopPod, true, false
	}
	return step{refused: err != nil}
}

func (m *machine) cancel(t *rapid.T) step {
	id := m.pickJob(t, spool.StateInQueue, spool.StateInProgress)
	ep := m.pickEndpointFor(t, id)
	j := m.of(ep, id)
	var want spool.Code
	if j == nil {
		want = spool.CodeNotFound
	}
	_, err := m.eng.Cancel(m.ctx, ep, id)
	expectCode(t, "cancel "+id+" of "+ep, err, want)
	if j != nil && !j.state.Terminal() {
		j.endByServer(spool.StateCancelled, "", false, j.state == spool.StateInProgress, m.now())
	}
	return step{refused: err != nil}
}

func (m *machine) retry(t *rapid.T) step {
	id := m.pickJob(t, spool.StateFailed, spool.StateTimedOut)
	ep := m.pickEndpointFor(t, id)
	j := m.of(ep, id)
	var want spool.Code
	switch {
	case j == nil:
		want = spool.CodeNotFound
	case j.state != spool.StateFailed && j.state != spool.StateTimedOut:
		want = spool.CodeInvalid
	case j.hadS3:
		want = spool.CodeInvalid // its s3Config was erased when it ended
	}
	_, err := m.eng.Retry(m.ctx, ep, id)
	expectCode(t, "retry "+id+" of "+ep, err, want)
	if err != nil {
		return step{refused: true}
	}
	j.requeue(m.now())
	return step{retried: id}
}

func (m *machine) purge(t *rapid.T) step {
	ep := rapid.SampledFrom(propEndpoints).Draw(t, "endpoint")
	want := 0
	for _, j := range m.jobs {
		if !j.deleted && j.endpoint == ep && j.state == spool.StateInQueue {
			j.endByServer(spool.StateCancelled, "purged", false, false, m.now())
			want++
		}
	}
	n, err := m.eng.PurgeQueue(m.ctx, ep)
	expectCode(t, "purge-queue "+ep, err, "")
	if n != want {
		t.Fatalf("purge-queue %s: purged %d, want %d", ep, n, want)
	}
	return step{}
}

// ping is a worker's heartbeat: the jobs it lists, and, as the fleet sends it, a time before
// which the held jobs it does not list count as forgotten.
func (m *machine) ping(t *rapid.T) step {
	ep := rapid.SampledFrom(propEndpoints).Draw(t, "endpoint")
	worker := rapid.SampledFrom(propWorkers).Draw(t, "worker")
	p := engine.ReconcileParams{Endpoint: ep, WorkerID: worker}
	listed := map[string]bool{}
	for range rapid.IntRange(0, 3).Draw(t, "listed") {
		id := m.pickJob(t, spool.States...)
		if !listed[id] {
			listed[id] = true
			p.JobIDs = append(p.JobIDs, id)
		}
	}
	now := m.now()
	switch rapid.IntRange(0, 2).Draw(t, "forgotten") {
	case 1:
		p.ForgottenBefore = now
	case 2:
		p.ForgottenBefore = now.Add(-time.Duration(rapid.IntRange(1, 20_000).Draw(t, "forgottenAgoMs")) * time.Millisecond)
	}
	var wantMovedOn []string
	gone := map[string]bool{}
	for _, id := range p.JobIDs {
		j := m.live(id)
		switch {
		case j == nil:
			// Whether an id the server no longer has is reported is the fleet's business, not
			// the state machine's: either answer passes.
			gone[id] = true
		case j.endpoint != ep:
			// Another endpoint's job is none of this worker's business.
		case j.worker == worker && (j.state == spool.StateInProgress || j.endedByWorker):
		case j.worker == worker && j.state.Terminal():
			j.stopPending = true // signalled again: the first signal may have been lost
		default:
			wantMovedOn = append(wantMovedOn, id)
		}
	}
	if !p.ForgottenBefore.IsZero() {
		for _, j := range m.jobs {
			if !j.deleted && j.endpoint == ep && j.worker == worker && j.state == spool.StateInProgress &&
				!listed[j.id] && !j.takenAt.After(p.ForgottenBefore) {
				j.lose(now)
			}
		}
	}
	movedOn, err := m.eng.Reconcile(m.ctx, p)
	expectCode(t, fmt.Sprintf("ping %+v", p), err, "")
	movedOn = slices.DeleteFunc(movedOn, func(id string) bool { return gone[id] })
	slices.Sort(movedOn)
	slices.Sort(wantMovedOn)
	if !slices.Equal(movedOn, wantMovedOn) {
		t.Fatalf("ping %+v: moved on %v, want %v", p, movedOn, wantMovedOn)
	}
	return step{}
}

func (m *machine) loseWorker(t *rapid.T) step {
	worker := rapid.SampledFrom(propWorkers).Draw(t, "worker")
	var want engine.LostJobs
	for _, j := range m.jobs {
		if !j.deleted && j.worker == worker && j.state == spool.StateInProgress {
			j.lose(m.now())
			want.Workers = 1
			if j.state == spool.StateInQueue {
				want.Requeued++
			} else {
				want.Failed++
			}
		}
	}
	got, err := m.eng.LoseWorkerJobs(m.ctx, worker, "its process exited")
	expectCode(t, "lose worker "+worker, err, "")
	if got != want {
		t.Fatalf("lose worker %s: %+v, want %+v", worker, got, want)
	}
	return step{}
}

// pickHandout draws a job as a take once handed it out, which may since have moved on.
func (m *machine) pickHandout(t *rapid.T) *spool.Job {
	if len(m.handouts) == 0 {
		return nil
	}
	return m.handouts[rapid.IntRange(0, len(m.handouts)-1).Draw(t, "handout")]
}

// stillHeld reports whether the job is still exactly as handed out: the only case where losing it
// applies.
func (m *machine) stillHeld(h *spool.Job) *modelJob {
	j := m.live(h.ID)
	if j == nil || j.state != spool.StateInProgress || j.worker != h.WorkerID || j.attempt != h.Attempt || j.retries != h.Retries {
		return nil
	}
	return j
}

// loseHeld is the fleet's sweep of lost workers acting on what it saw of a held job, possibly long
// ago.
func (m *machine) loseHeld(t *rapid.T) step {
	h := m.pickHandout(t)
	if h == nil {
		return step{}
	}
	var want engine.LostJobs
	if j := m.stillHeld(h); j != nil {
		j.lose(m.now())
		want.Workers = 1
		if j.state == spool.StateInQueue {
			want.Requeued++
		} else {
			want.Failed++
		}
	}
	held := []store.HeldJob{{WorkerID: h.WorkerID, JobID: h.ID, Attempt: h.Attempt, Retries: h.Retries, TakenAt: h.TakenAt}}
	got, err := m.eng.LoseJobs(m.ctx, held, "missed its pings", time.Time{})
	expectCode(t, "lose held "+h.ID, err, "")
	if got != want {
		t.Fatalf("lose held %+v: %+v, want %+v", held[0], got, want)
	}
	return step{}
}

// release is a take whose answer never reached the worker, reported for a job as handed out.
func (m *machine) release(t *rapid.T) step {
	h := m.pickHandout(t)
	if h == nil {
		return step{}
	}
	if j := m.stillHeld(h); j != nil {
		j.lose(m.now())
	}
	expectCode(t, "release "+h.ID, m.eng.Release(m.ctx, []*spool.Job{h}), "")
	return step{}
}

// ackStops is a worker's job-stop poll: it carries the ids of the jobs the worker must stop, each
// once.
func (m *machine) ackStops(t *rapid.T) step {
	ep := rapid.SampledFrom(propEndpoints).Draw(t, "endpoint")
	worker := rapid.SampledFrom(propWorkers).Draw(t, "worker")
	var want []string
	for _, j := range m.jobs {
		if !j.deleted && j.endpoint == ep && j.worker == worker && j.stopPending {
			j.stopPending = false
			want = append(want, j.id)
		}
	}
	got, err := m.eng.AckStops(m.ctx, ep, worker)
	expectCode(t, "job-stop poll of "+worker, err, "")
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("job-stop poll of %s on %s: %v, want %v", worker, ep, got, want)
	}
	return step{}
}

func (m *machine) setRetention(t *rapid.T) step {
	id := m.pickJob(t, spool.StateCompleted, spool.StateFailed, spool.StateCancelled, spool.StateTimedOut)
	ep := m.pickEndpointFor(t, id)
	ttl := time.Duration(rapid.SampledFrom([]int{1_000, 20_000, 600_000}).Draw(t, "retentionMs")) * time.Millisecond
	j := m.of(ep, id)
	var want spool.Code
	if j == nil {
		want = spool.CodeNotFound
	}
	_, err := m.eng.SetRetention(m.ctx, ep, id, ttl)
	expectCode(t, "set retention of "+id+" of "+ep, err, want)
	if j != nil {
		j.retention = ttl
		if j.state.Terminal() {
			j.deleteAt = m.now().Add(ttl)
		}
	}
	return step{refused: err != nil}
}

func (m *machine) jump(t *rapid.T) step {
	var ms int
	if rapid.Bool().Draw(t, "long") {
		ms = rapid.IntRange(5_000, 120_000).Draw(t, "jumpMs")
	} else {
		ms = rapid.IntRange(0, 3_000).Draw(t, "jumpMs")
	}
	return m.advance(t, time.Duration(ms)*time.Millisecond)
}

// jumpToDeadline moves the clock to a job's next deadline, or a millisecond either side of it,
// where an off-by-one in the sweep or the take would show.
func (m *machine) jumpToDeadline(t *rapid.T) step {
	now := m.now()
	var deadlines []time.Time
	for _, j := range m.jobs {
		var d time.Time
		switch {
		case j.deleted:
			continue
		case j.state == spool.StateInQueue:
			d = j.expiresAt
		case j.state == spool.StateInProgress:
			d = j.timeoutAt
		default:
			d = j.deleteAt
		}
		if d.After(now.Add(time.Millisecond)) {
			deadlines = append(deadlines, d)
		}
	}
	if len(deadlines) == 0 {
		return m.advance(t, 0)
	}
	d := deadlines[rapid.IntRange(0, len(deadlines)-1).Draw(t, "deadline")]
	d = d.Add(time.Duration(rapid.IntRange(-1, 1).Draw(t, "offsetMs")) * time.Millisecond)
	return m.advance(t, d.Sub(now))
}

// advance moves the fake clock and sweeps, as the sweeper's next round would.
func (m *machine) advance(t *rapid.T, d time.Duration) step {
	m.clock.Advance(d)
	now := m.now()
	var want engine.SweepResult
	for _, j := range m.jobs {
		switch {
		case j.deleted:
		case j.state == spool.StateInQueue && !j.expiresAt.After(now):
			j.endByServer(spool.StateTimedOut, "", true, false, now)
			want.Expired++
		case j.state == spool.StateInProgress && !j.timeoutAt.After(now):
			j.endByServer(spool.StateTimedOut, "", true, true, now)
			want.TimedOut++
		case j.state.Terminal() && !j.deleteAt.After(now):
			j.deleted = true
			want.Deleted++
		}
	}
	got, err := m.eng.Sweep(m.ctx)
	expectCode(t, "sweep", err, "")
	if got != want {
		t.Fatalf("sweep at %v: %+v, want %+v", now, got, want)
	}
	return step{}
}

// observe reads every job back after a step and checks it against the invariants and the model.
func (m *machine) observe(t *rapid.T, s step) {
	t.Helper()
	list, err := m.eng.ListJobs(m.ctx, store.ListJobsParams{Limit: propListLimit})
	if err != nil {
		t.Fatalf("after %s: list jobs: %v", s.name, err)
	}
	if len(list) >= propListLimit {
		t.Fatalf("after %s: %d jobs, more than the test reads back", s.name, len(list))
	}
	now := m.now()
	cur := make(map[string]*spool.Job, len(list))
	for _, j := range list {
		cur[j.ID] = j
	}
	m.checkInvariants(t, s, now, cur)
	for _, mj := range m.jobs {
		m.checkModel(t, s, mj, cur[mj.id])
	}
	for id := range cur {
		if m.byID[id] == nil {
			t.Fatalf("after %s: job %s exists that nobody submitted", s.name, id)
		}
	}
	m.seen = cur
}

// checkInvariants checks what must hold of any run, whatever the model predicts.
func (m *machine) checkInvariants(t *rapid.T, s step, now time.Time, cur map[string]*spool.Job) {
	t.Helper()
	if s.refused {
		if len(cur) != len(m.seen) {
			t.Fatalf("%s was refused but the number of jobs went from %d to %d", s.name, len(m.seen), len(cur))
		}
		for id, before := range m.seen {
			if diff := jobDiff(before, cur[id]); diff != "" {
				t.Fatalf("%s was refused but changed job %s: %s", s.name, id, diff)
			}
		}
	}
	handed := map[string]bool{}
	for _, h := range s.handed {
		if handed[h.ID] {
			t.Fatalf("%s: job %s handed out twice in one take", s.name, h.ID)
		}
		handed[h.ID] = true
		if prev := m.seen[h.ID]; prev == nil || prev.State != spool.StateInQueue {
			t.Fatalf("%s: handed out job %s, which was not queued: %s", s.name, h.ID, jobDiff(prev, h))
		}
	}
	for id, prev := range m.seen {
		j := cur[id]
		if j == nil {
			// Only retention deletes, and only an ended job whose time has come.
			if !prev.State.Terminal() || now.Before(prev.DeleteAt) {
				t.Fatalf("after %s: job %s (%s, delete at %v, now %v) is gone", s.name, id, prev.State, prev.DeleteAt, now)
			}
			continue
		}
		if j.State != prev.State && !spool.CanTransition(prev.State, j.State) {
			t.Fatalf("after %s: job %s went %s -> %s, which the state machine does not allow", s.name, id, prev.State, j.State)
		}
		if j.Attempt < prev.Attempt || j.Retries < prev.Retries {
			t.Fatalf("after %s: job %s went from attempt %d, retries %d back to attempt %d, retries %d",
				s.name, id, prev.Attempt, prev.Retries, j.Attempt, j.Retries)
		}
		if (j.Attempt != prev.Attempt) != (prev.State == spool.StateInQueue && j.State == spool.StateInProgress) {
			t.Fatalf("after %s: job %s went %s -> %s and from attempt %d to %d: only a take starts an attempt",
				s.name, id, prev.State, j.State, prev.Attempt, j.Attempt)
		}
		if prev.State == spool.StateInQueue && j.State == spool.StateInProgress && !handed[id] {
			t.Fatalf("after %s: job %s started without being handed out", s.name, id)
		}
		if !prev.State.Terminal() {
			continue
		}
		if !j.State.Terminal() {
			if s.retried != id || !prev.State.Retryable() || j.State != spool.StateInQueue {
				t.Fatalf("after %s: ended job %s came back %s -> %s", s.name, id, prev.State, j.State)
			}
			continue
		}
		// An ended job keeps its end: no other result, state or error overwrites it.
		if j.State != prev.State || string(j.Output) != string(prev.Output) || j.Error != prev.Error ||
			!j.FinishedAt.Equal(prev.FinishedAt) || j.EndedByWorker != prev.EndedByWorker {
			t.Fatalf("after %s: ended job %s changed: %s", s.name, id, jobDiff(prev, j))
		}
	}
	for id, j := range cur {
		if !j.State.Valid() {
			t.Fatalf("after %s: job %s is in state %q", s.name, id, j.State)
		}
		switch {
		case j.State == spool.StateInQueue:
			if j.WorkerID != "" || !j.TakenAt.IsZero() || !j.FinishedAt.IsZero() || len(j.Output) > 0 || len(j.Progress) > 0 {
				t.Fatalf("after %s: queued job %s has worker %q, taken at %v, finished at %v, output %s, progress %s",
					s.name, id, j.WorkerID, j.TakenAt, j.FinishedAt, j.Output, j.Progress)
			}
		case j.State == spool.StateInProgress:
			if j.WorkerID == "" || j.Attempt < 1 || j.TakenAt.IsZero() || !j.FinishedAt.IsZero() {
				t.Fatalf("after %s: running job %s has worker %q, attempt %d, taken at %v, finished at %v",
					s.name, id, j.WorkerID, j.Attempt, j.TakenAt, j.FinishedAt)
			}
		default:
			if j.FinishedAt.IsZero() || len(j.S3ConfigSealed) > 0 || len(j.Progress) > 0 {
				t.Fatalf("after %s: ended job %s has finished at %v, s3Config kept %v, progress %s",
					s.name, id, j.FinishedAt, len(j.S3ConfigSealed) > 0, j.Progress)
			}
		}
	}
}

// checkModel compares a job read back (nil: absent) with the model's.
func (m *machine) checkModel(t *rapid.T, s step, mj *modelJob, j *spool.Job) {
	t.Helper()
	if mj.deleted {
		if j != nil {
			t.Fatalf("after %s: job %s should have been deleted at %v, now %v", s.name, mj.id, mj.deleteAt, m.now())
		}
		return
	}
	if j == nil {
		t.Fatalf("after %s: acknowledged job %s (%s) is lost", s.name, mj.id, mj.state)
		return
	}
	var bad []string
	check := func(field string, ok bool, got, want any) {
		if !ok {
			bad = append(bad, fmt.Sprintf("%s %v, want %v", field, got, want))
		}
	}
	eqTime := func(field string, got, want time.Time) { check(field, got.Equal(want), got, want) }
	check("state", j.State == mj.state, j.State, mj.state)
	check("endpoint", j.Endpoint == mj.endpoint, j.Endpoint, mj.endpoint)
	check("input", string(j.Input) == mj.input, string(j.Input), mj.input)
	check("webhook", j.Webhook == mj.webhook, j.Webhook, mj.webhook)
	check("sync", j.Sync == mj.sync, j.Sync, mj.sync)
	check("hadS3Config", j.HadS3Config == mj.hadS3, j.HadS3Config, mj.hadS3)
	keepsS3 := mj.hadS3 && !mj.state.Terminal()
	check("s3Config kept", (len(j.S3ConfigSealed) > 0) == keepsS3, len(j.S3ConfigSealed) > 0, keepsS3)
	check("lowPriority", j.Policy.LowPriority == mj.low, j.Policy.LowPriority, mj.low)
	check("ttl", j.Policy.TTL() == mj.ttl, j.Policy.TTL(), mj.ttl)
	check("executionTimeout", j.Policy.ExecutionTimeoutMs == mj.exec.Milliseconds(), j.Policy.ExecutionTimeoutMs, mj.exec.Milliseconds())
	check("retention", j.RetentionMs == mj.retention.Milliseconds(), j.RetentionMs, mj.retention.Milliseconds())
	check("worker", j.WorkerID == mj.worker, j.WorkerID, mj.worker)
	check("attempt", j.Attempt == mj.attempt, j.Attempt, mj.attempt)
	check("retries", j.Retries == mj.retries, j.Retries, mj.retries)
	check("output", string(j.Output) == mj.output, string(j.Output), mj.output)
	check("progress", string(j.Progress) == mj.progress, string(j.Progress), mj.progress)
	if mj.anyErr {
		check("error", j.Error != "", j.Error, "a message")
	} else {
		check("error", j.Error == mj.err, j.Error, mj.err)
	}
	check("stopPod", j.StopPod == mj.stopPod, j.StopPod, mj.stopPod)
	check("endedByWorker", j.EndedByWorker == mj.endedByWorker, j.EndedByWorker, mj.endedByWorker)
	check("stopPending", j.StopPending == mj.stopPending, j.StopPending, mj.stopPending)
	eqTime("createdAt", j.CreatedAt, mj.createdAt)
	eqTime("queuedAt", j.QueuedAt, mj.queuedAt)
	eqTime("takenAt", j.TakenAt, mj.takenAt)
	eqTime("finishedAt", j.FinishedAt, mj.finishedAt)
	// Each deadline means something only in its state (spool.Job).
	switch {
	case mj.state == spool.StateInQueue:
		eqTime("expiresAt", j.ExpiresAt, mj.expiresAt)
	case mj.state == spool.StateInProgress:
		eqTime("timeoutAt", j.TimeoutAt, mj.timeoutAt)
	default:
		eqTime("deleteAt", j.DeleteAt, mj.deleteAt)
	}
	if len(bad) > 0 {
		t.Fatalf("after %s: job %s differs from the model: %v", s.name, mj.id, bad)
	}
}

// jobDiff shows two reads of a job that differ, or is "" when they do not.
func jobDiff(a, b *spool.Job) string {
	switch {
	case a == nil:
		return "absent before"
	case b == nil:
		return "deleted"
	}
	x, errX := json.Marshal(a)
	y, errY := json.Marshal(b)
	if errX != nil || errY != nil {
		return fmt.Sprintf("cannot show the jobs: %v, %v", errX, errY)
	}
	if string(x) == string(y) {
		return ""
	}
	return fmt.Sprintf("%s\n-> %s", x, y)
}
