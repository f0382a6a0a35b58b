package engine_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/spooltest"
	"github.com/spool-run/spool/store/sqlitestore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.UnixMilli(1_800_000_000_000).UTC()

type fixture struct {
	eng   *engine.Engine
	clock *clock.Fake
	ctx   context.Context
}

func newFixture(t *testing.T, mutate ...func(*engine.Config)) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "spool.db"))
	require.NoError(t, err)
	fc := clock.NewFake(t0)
	cfg := engine.Config{Store: st, Clock: fc, SweepInterval: time.Hour}
	for _, m := range mutate {
		m(&cfg)
	}
	eng, err := engine.New(cfg)
	require.NoError(t, err)
	require.NoError(t, eng.Start(ctx))
	t.Cleanup(func() {
		eng.Stop()
		require.NoError(t, st.Close())
	})
	_, _, err = eng.PutEndpoint(ctx, spool.NewEndpoint("ep"))
	require.NoError(t, err)
	f := &fixture{eng: eng, clock: fc, ctx: ctx}
	f.waitTimers(t, 1) // the sweeper's
	return f
}

// waitTimers blocks until n timers wait on the fake clock: the way a test knows that a goroutine
// has started waiting, without sleeping.
func (f *fixture) waitTimers(t *testing.T, n int) {
	t.Helper()
	spooltest.WaitTimers(t, f.clock, n)
}

// async runs fn on its own goroutine and returns a channel with its result, so that assertions
// stay on the test goroutine.
func async[T any](fn func() (T, error)) <-chan result[T] {
	ch := make(chan result[T], 1)
	go func() {
		v, err := fn()
		ch <- result[T]{v, err}
	}()
	return ch
}

type result[T any] struct {
	v   T
	err error
}

func (f *fixture) submit(t *testing.T, p engine.SubmitParams) *spool.Job {
	t.Helper()
	if p.Endpoint == "" {
		p.Endpoint = "ep"
	}
	if p.Input == nil {
		p.Input = json.RawMessage(`{"n":1}`)
	}
	j, err := f.eng.Submit(f.ctx, p)
	require.NoError(t, err)
	return j
}

func (f *fixture) take(t *testing.T, worker string, max int) []*spool.Job {
	t.Helper()
	handouts, err := f.eng.Take(f.ctx, "ep", worker, max, 0)
	require.NoError(t, err)
	return jobsOf(handouts)
}

// take is jobsOf for Take's answer.
func take(handouts []engine.Handout, err error) ([]*spool.Job, error) { return jobsOf(handouts), err }

func jobsOf(handouts []engine.Handout) []*spool.Job {
	jobs := make([]*spool.Job, len(handouts))
	for i, h := range handouts {
		jobs[i] = h.Job
	}
	return jobs
}

// takeHandout takes one job as a worker gets it: with its s3Config opened.
func (f *fixture) takeHandout(t *testing.T, worker string) engine.Handout {
	t.Helper()
	handouts, err := f.eng.Take(f.ctx, "ep", worker, 1, 0)
	require.NoError(t, err)
	require.Len(t, handouts, 1)
	return handouts[0]
}

// whole reads a job with all its payloads, s3Config included.
func (f *fixture) whole(t *testing.T, id string) *spool.Job {
	t.Helper()
	j, err := f.eng.JobAnyEndpoint(f.ctx, id)
	require.NoError(t, err)
	return j
}

func (f *fixture) takeOne(t *testing.T, worker string) *spool.Job {
	t.Helper()
	jobs := f.take(t, worker, 1)
	require.Len(t, jobs, 1)
	return jobs[0]
}

func (f *fixture) job(t *testing.T, id string) *spool.Job {
	t.Helper()
	j, err := f.eng.Job(f.ctx, "ep", id)
	require.NoError(t, err)
	return j
}

func (f *fixture) sweep(t *testing.T) engine.SweepResult {
	t.Helper()
	res, err := f.eng.Sweep(f.ctx)
	require.NoError(t, err)
	return res
}

func strp(s string) *string { return &s }
func i64p(v int64) *int64   { return &v }

func requireCode(t *testing.T, err error, code spool.Code) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, code, spool.ErrorCode(err), "error: %v", err)
}

func TestSubmitTakeDone(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	in := json.RawMessage(`{"b": 1,  "a":[1.0, 2e3]}`)
	j := f.submit(t, engine.SubmitParams{Input: in, Webhook: "https://example.com/h"})
	require.Equal(t, spool.StateInQueue, j.State)
	require.Len(t, j.ID, 36)
	require.Equal(t, spool.DefaultExecutionTimeoutMs, j.Policy.ExecutionTimeoutMs)
	require.Equal(t, spool.DefaultTTLMs, j.Policy.TTLMs)

	f.clock.Advance(1500 * time.Millisecond)
	taken := f.takeOne(t, "w1")
	require.Equal(t, j.ID, taken.ID)
	require.Equal(t, spool.StateInProgress, taken.State)
	require.Equal(t, "w1", taken.WorkerID)
	require.Equal(t, 1, taken.Attempt)
	require.Equal(t, string(in), string(taken.Input), "input must be kept byte for byte")
	d, ok := taken.DelayTime()
	require.True(t, ok)
	require.Equal(t, 1500*time.Millisecond, d)

	f.clock.Advance(2 * time.Second)
	res, err := f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w1", JobID: j.ID, Output: json.RawMessage(`false`)})
	require.NoError(t, err)
	require.True(t, res.Applied)
	got := f.job(t, j.ID)
	require.Equal(t, spool.StateCompleted, got.State)
	require.Equal(t, "false", string(got.Output))
	e, ok := got.ExecutionTime()
	require.True(t, ok)
	require.Equal(t, 2*time.Second, e)
	require.Equal(t, f.clock.Now().Add(30*time.Minute), got.DeleteAt, "a /run result is retained 30 min")
}

func TestSyncJobsHaveSyncIDsAndShortRetention(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	j := f.submit(t, engine.SubmitParams{Sync: true})
	require.Regexp(t, `^sync-[0-9a-f-]{36}$`, j.ID)
	f.takeOne(t, "w")
	_, err := f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w", JobID: j.ID})
	require.NoError(t, err)
	require.Equal(t, f.clock.Now().Add(time.Minute), f.job(t, j.ID).DeleteAt)

	f.clock.Advance(59 * time.Second)
	require.Zero(t, f.sweep(t).Deleted)
	f.clock.Advance(time.Second)
	require.Equal(t, 1, f.sweep(t).Deleted)
	_, err = f.eng.Job(f.ctx, "ep", j.ID)
	requireCode(t, err, spool.CodeNotFound)
}

func TestSubmitValidation(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cases := []struct {
		name string
		p    engine.SubmitParams
		code spool.Code
		msg  string
	}{
		{"unknown endpoint", engine.SubmitParams{Endpoint: "nope", Input: json.RawMessage(`1`)}, spool.CodeNotFound, `endpoint "nope" not found`},
		{"missing input", engine.SubmitParams{Endpoint: "ep"}, spool.CodeInvalid, `"input" is required`},
		{"null input", engine.SubmitParams{Endpoint: "ep", Input: json.RawMessage(`null`)}, spool.CodeInvalid, `"input" is required`},
		{"timeout 5000", engine.SubmitParams{Endpoint: "ep", Input: json.RawMessage(`1`), ExecutionTimeoutMs: i64p(5000)}, spool.CodeInvalid, "policy.executionTimeout"},
		{"timeout over 7 days", engine.SubmitParams{Endpoint: "ep", Input: json.RawMessage(`1`), ExecutionTimeoutMs: i64p(604800001)}, spool.CodeInvalid, "policy.executionTimeout"},
		{"ttl 9999", engine.SubmitParams{Endpoint: "ep", Input: json.RawMessage(`1`), TTLMs: i64p(9999)}, spool.CodeInvalid, "policy.ttl"},
		{"ttl over a week", engine.SubmitParams{Endpoint: "ep", Input: json.RawMessage(`1`), TTLMs: i64p(604800001)}, spool.CodeInvalid, "policy.ttl"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.eng.Submit(f.ctx, c.p)
			requireCode(t, err, c.code)
			require.Contains(t, err.Error(), c.msg)
		})
	}
	counts, err := f.eng.Counts(f.ctx, "ep")
	require.NoError(t, err)
	require.Zero(t, counts.ByState[spool.StateInQueue], "rejected submissions change nothing")

	// The boundaries themselves are accepted.
	j := f.submit(t, engine.SubmitParams{ExecutionTimeoutMs: i64p(5001), TTLMs: i64p(10000)})
	require.Equal(t, int64(5001), j.Policy.ExecutionTimeoutMs)
	require.Equal(t, int64(10000), j.Policy.TTLMs)
	j = f.submit(t, engine.SubmitParams{ExecutionTimeoutMs: i64p(604800000), TTLMs: i64p(604800000)})
	require.Equal(t, int64(604800000), j.Policy.TTLMs)
}

func TestQueueCapGives429(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ep := spool.NewEndpoint("capped")
	ep.MaxQueue = 2
	_, _, err := f.eng.PutEndpoint(f.ctx, ep)
	require.NoError(t, err)
	for range 2 {
		f.submit(t, engine.SubmitParams{Endpoint: "capped"})
	}
	_, err = f.eng.Submit(f.ctx, engine.SubmitParams{Endpoint: "capped", Input: json.RawMessage(`1`)})
	requireCode(t, err, spool.CodeTooMany)
	var se *spool.Error
	require.ErrorAs(t, err, &se)
	require.Positive(t, se.RetryAfter)
}

func TestPriorityAndFIFO(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	low1 := f.submit(t, engine.SubmitParams{LowPriority: true})
	n1 := f.submit(t, engine.SubmitParams{})
	f.clock.Advance(time.Millisecond)
	low2 := f.submit(t, engine.SubmitParams{LowPriority: true})
	n2 := f.submit(t, engine.SubmitParams{})
	n3 := f.submit(t, engine.SubmitParams{})

	var order []string
	for _, j := range f.take(t, "w", 2) {
		order = append(order, j.ID)
	}
	order = append(order, f.takeOne(t, "w").ID)
	for _, j := range f.take(t, "w", 10) {
		order = append(order, j.ID)
	}
	require.Equal(t, []string{n1.ID, n2.ID, n3.ID, low1.ID, low2.ID}, order,
		"normal jobs first, then low-priority ones, FIFO within each level")
	require.Empty(t, f.take(t, "w", 1))
}

func TestTakeLongPollWakesOnSubmit(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	got := async(func() ([]*spool.Job, error) { return take(f.eng.Take(f.ctx, "ep", "w", 1, 30*time.Second)) })
	f.waitTimers(t, 2) // the take found the queue empty and armed its wait timer: it is waiting
	j := f.submit(t, engine.SubmitParams{})
	res := <-got
	require.NoError(t, res.err)
	require.Len(t, res.v, 1)
	require.Equal(t, j.ID, res.v[0].ID)
}

func TestTakeLongPollTimesOut(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	got := async(func() ([]*spool.Job, error) { return take(f.eng.Take(f.ctx, "ep", "w", 1, 30*time.Second)) })
	f.waitTimers(t, 2)
	f.clock.Advance(30 * time.Second)
	res := <-got
	require.NoError(t, res.err)
	require.Empty(t, res.v)
}

func TestDrainAnswersLongPolls(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	j := f.submit(t, engine.SubmitParams{})
	_, _, err := f.eng.PutEndpoint(f.ctx, spool.NewEndpoint("other"))
	require.NoError(t, err)
	taking := async(func() ([]engine.Handout, error) { return f.eng.Take(f.ctx, "other", "w", 1, time.Minute) })
	f.waitTimers(t, 2)
	waited := async(func() (*spool.Job, error) { return f.eng.WaitTerminal(f.ctx, "ep", j.ID, time.Minute) })
	f.waitTimers(t, 3)
	f.eng.Drain()
	require.NoError(t, (<-taking).err)
	w := <-waited
	require.NoError(t, w.err)
	require.Equal(t, spool.StateInQueue, w.v.State)
	handouts, err := f.eng.Take(f.ctx, "ep", "w", 1, time.Minute)
	require.NoError(t, err)
	require.Empty(t, handouts, "a draining engine hands out no jobs")
}

func TestWaitTerminalWakesOnDone(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	j := f.submit(t, engine.SubmitParams{Sync: true})
	got := async(func() (*spool.Job, error) { return f.eng.WaitTerminal(f.ctx, "ep", j.ID, 90*time.Second) })
	f.waitTimers(t, 2)
	f.takeOne(t, "w")
	_, err := f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w", JobID: j.ID, Output: json.RawMessage(`"ok"`)})
	require.NoError(t, err)
	res := <-got
	require.NoError(t, res.err)
	require.Equal(t, spool.StateCompleted, res.v.State)
	require.Equal(t, `"ok"`, string(res.v.Output))
}

func TestWaitTerminalReturnsCurrentStateWhenWaitRunsOut(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	j := f.submit(t, engine.SubmitParams{})
	got := async(func() (*spool.Job, error) { return f.eng.WaitTerminal(f.ctx, "ep", j.ID, 5*time.Second) })
	f.waitTimers(t, 2)
	f.clock.Advance(5 * time.Second)
	res := <-got
	require.NoError(t, res.err)
	require.Equal(t, spool.StateInQueue, res.v.State)
}

func TestDoneFencing(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	j := f.submit(t, engine.SubmitParams{})
	taken := f.takeOne(t, "w1")

	// Another worker, or the holder quoting another attempt, is refused.
	_, err := f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w2", JobID: j.ID})
	requireCode(t, err, spool.CodeConflict)
	_, err = f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w1", JobID: j.ID, Attempt: taken.Attempt + 1})
	requireCode(t, err, spool.CodeConflict)
	err = f.eng.AppendChunk(f.ctx, "ep", "w2", j.ID, 0, json.RawMessage(`1`))
	requireCode(t, err, spool.CodeConflict)
	require.Equal(t, spool.StateInProgress, f.job(t, j.ID).State, "refused posts change nothing")

	// Progress is visible while the job runs.
	_, err = f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w1", JobID: j.ID, InProgress: true, Output: json.RawMessage(`{"pct":50}`)})
	require.NoError(t, err)
	got := f.job(t, j.ID)
	require.Equal(t, spool.StateInProgress, got.State)
	require.JSONEq(t, `{"pct":50}`, string(got.Progress))

	// The result: error present means FAILED, even with output.
	done := engine.DoneParams{Endpoint: "ep", WorkerID: "w1", JobID: j.ID, Attempt: taken.Attempt,
		Output: json.RawMessage(`{"extra":1}`), Error: strp("custom failure"), StopPod: true}
	res, err := f.eng.Done(f.ctx, done)
	require.NoError(t, err)
	require.True(t, res.Applied)
	got = f.job(t, j.ID)
	require.Equal(t, spool.StateFailed, got.State)
	require.Equal(t, "custom failure", got.Error)
	require.True(t, got.StopPod)
	require.Nil(t, got.Progress, "a result is not progress")
	finished := got.FinishedAt

	// The same post again (runpod-python retries 5xx up to 3 times) is accepted and applied once.
	f.clock.Advance(time.Second)
	res, err = f.eng.Done(f.ctx, done)
	require.NoError(t, err)
	require.False(t, res.Applied)
	require.Equal(t, finished, f.job(t, j.ID).FinishedAt)

	// Progress arriving after the result is ignored.
	res, err = f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w1", JobID: j.ID, InProgress: true, Output: json.RawMessage(`{"pct":99}`)})
	require.NoError(t, err)
	require.False(t, res.Applied)
	require.Equal(t, `{"extra":1}`, string(f.job(t, j.ID).Output))

	// Another worker still cannot post.
	_, err = f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w2", JobID: j.ID})
	requireCode(t, err, spool.CodeConflict)
}

func TestEmptyResultCompletesWithoutOutput(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	j := f.submit(t, engine.SubmitParams{})
	f.takeOne(t, "w")
	_, err := f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w", JobID: j.ID})
	require.NoError(t, err)
	got := f.job(t, j.ID)
	require.Equal(t, spool.StateCompleted, got.State)
	require.Nil(t, got.Output)
	require.Empty(t, got.Error)
}

func TestCancel(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	queued := f.submit(t, engine.SubmitParams{S3Config: json.RawMessage(`{"accessId":"x"}`)})
	c, err := f.eng.Cancel(f.ctx, "ep", queued.ID)
	require.NoError(t, err)
	require.Equal(t, spool.StateCancelled, c.State)
	whole, err := f.eng.JobAnyEndpoint(f.ctx, queued.ID)
	require.NoError(t, err)
	require.Nil(t, whole.S3ConfigSealed, "s3Config is erased once the job is terminal")
	require.Empty(t, f.take(t, "w", 1), "a cancelled job is never handed out")

	running := f.submit(t, engine.SubmitParams{})
	f.takeOne(t, "w")
	_, err = f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w", JobID: running.ID, InProgress: true, Output: json.RawMessage(`{"pct":10}`)})
	require.NoError(t, err)
	c, err = f.eng.Cancel(f.ctx, "ep", running.ID)
	require.NoError(t, err)
	require.Equal(t, spool.StateCancelled, c.State)
	got := f.job(t, running.ID)
	require.Nil(t, got.Output, "progress is not a result: a cancelled job has no output")
	require.Nil(t, got.Progress)
	ids, err := f.eng.AckStops(f.ctx, "ep", "w")
	require.NoError(t, err)
	require.Equal(t, []string{running.ID}, ids, "the holder is told to stop")
	ids, err = f.eng.AckStops(f.ctx, "ep", "w")
	require.NoError(t, err)
	require.Empty(t, ids, "each stop signal is delivered once")

	// A result posted after the cancel is refused; the state stays.
	_, err = f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w", JobID: running.ID, Output: json.RawMessage(`1`)})
	requireCode(t, err, spool.CodeConflict)
	require.Equal(t, spool.StateCancelled, f.job(t, running.ID).State)

	// Cancelling a terminal job is a no-op.
	done := f.submit(t, engine.SubmitParams{})
	f.takeOne(t, "w")
	_, err = f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w", JobID: done.ID})
	require.NoError(t, err)
	c, err = f.eng.Cancel(f.ctx, "ep", done.ID)
	require.NoError(t, err)
	require.Equal(t, spool.StateCompleted, c.State)

	_, err = f.eng.Cancel(f.ctx, "ep", "no-such-job")
	requireCode(t, err, spool.CodeNotFound)
}

func TestRetry(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	j := f.submit(t, engine.SubmitParams{})
	_, err := f.eng.Retry(f.ctx, "ep", j.ID)
	requireCode(t, err, spool.CodeInvalid)

	f.takeOne(t, "w")
	_, err = f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w", JobID: j.ID, Output: json.RawMessage(`1`), Error: strp("boom")})
	require.NoError(t, err)
	r, err := f.eng.Retry(f.ctx, "ep", j.ID)
	require.NoError(t, err)
	require.Equal(t, spool.StateInQueue, r.State)
	require.Equal(t, 1, r.Retries)
	require.Nil(t, r.Output)
	require.Empty(t, r.Error)
	whole, err := f.eng.JobAnyEndpoint(f.ctx, j.ID)
	require.NoError(t, err)
	require.Equal(t, j.Input, whole.Input)

	again := f.takeOne(t, "w2")
	require.Equal(t, j.ID, again.ID)
	require.Equal(t, 2, again.Attempt)
	// The first holder's stale post is fenced off.
	_, err = f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w", JobID: j.ID})
	requireCode(t, err, spool.CodeConflict)
	_, err = f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w2", JobID: j.ID})
	require.NoError(t, err)
	_, err = f.eng.Retry(f.ctx, "ep", j.ID)
	requireCode(t, err, spool.CodeInvalid)
	_, err = f.eng.Retry(f.ctx, "ep", "nope")
	requireCode(t, err, spool.CodeNotFound)

	counts, err := f.eng.Counts(f.ctx, "ep")
	require.NoError(t, err)
	require.Equal(t, 1, counts.Retried)
	require.Equal(t, 1, counts.ByState[spool.StateCompleted])
}

func TestPurgeQueue(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	running := f.submit(t, engine.SubmitParams{})
	f.takeOne(t, "w")
	var queued []*spool.Job
	for range 3 {
		queued = append(queued, f.submit(t, engine.SubmitParams{LowPriority: true}))
	}
	n, err := f.eng.PurgeQueue(f.ctx, "ep")
	require.NoError(t, err)
	require.Equal(t, 3, n)
	for _, q := range queued {
		got := f.job(t, q.ID)
		require.Equal(t, spool.StateCancelled, got.State)
		require.Equal(t, "purged", got.Error)
	}
	require.Equal(t, spool.StateInProgress, f.job(t, running.ID).State, "in-progress jobs are untouched")
	n, err = f.eng.PurgeQueue(f.ctx, "ep")
	require.NoError(t, err)
	require.Zero(t, n)
}

func TestTTLExpiresQueuedJobs(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	j := f.submit(t, engine.SubmitParams{TTLMs: i64p(10000)})
	keep := f.submit(t, engine.SubmitParams{TTLMs: i64p(20000)})
	f.clock.Advance(10 * time.Second)
	// Even before the sweeper runs, an expired job is never handed to a worker.
	got := f.take(t, "w", 5)
	require.Len(t, got, 1)
	require.Equal(t, keep.ID, got[0].ID)
	res := f.sweep(t)
	require.Equal(t, 1, res.Expired)
	exp := f.job(t, j.ID)
	require.Equal(t, spool.StateTimedOut, exp.State)
	require.Contains(t, exp.Error, "ttl of 10000 ms")
	_, ok := exp.DelayTime()
	require.False(t, ok)
}

func TestExecutionTimeout(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	j := f.submit(t, engine.SubmitParams{ExecutionTimeoutMs: i64p(6000)})
	f.clock.Advance(time.Hour) // queue time does not count
	f.takeOne(t, "w")
	f.clock.Advance(5999 * time.Millisecond)
	require.Zero(t, f.sweep(t).TimedOut)
	f.clock.Advance(time.Millisecond)
	require.Equal(t, 1, f.sweep(t).TimedOut)
	got := f.job(t, j.ID)
	require.Equal(t, spool.StateTimedOut, got.State)
	require.Contains(t, got.Error, "execution timeout of 6000 ms")
	ids, err := f.eng.AckStops(f.ctx, "ep", "w")
	require.NoError(t, err)
	require.Equal(t, []string{j.ID}, ids)
	_, err = f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w", JobID: j.ID, Output: json.RawMessage(`1`)})
	requireCode(t, err, spool.CodeConflict)
	// TIMED_OUT is retryable.
	_, err = f.eng.Retry(f.ctx, "ep", j.ID)
	require.NoError(t, err)
}

func TestReleaseRequeuesUndeliveredTake(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	j := f.submit(t, engine.SubmitParams{})
	taken := f.take(t, "w", 1)
	require.NoError(t, f.eng.Release(f.ctx, taken))
	got := f.job(t, j.ID)
	require.Equal(t, spool.StateInQueue, got.State)
	require.Equal(t, 1, got.Retries)
	require.Equal(t, j.ID, f.takeOne(t, "w2").ID)
	// Releasing again (a stale lease) changes nothing.
	require.NoError(t, f.eng.Release(f.ctx, taken))
	require.Equal(t, spool.StateInProgress, f.job(t, j.ID).State)
}

func TestRetentionAndStatusTTL(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a := f.submit(t, engine.SubmitParams{})
	b := f.submit(t, engine.SubmitParams{})
	for range 2 {
		j := f.takeOne(t, "w")
		_, err := f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w", JobID: j.ID})
		require.NoError(t, err)
	}
	_, err := f.eng.SetRetention(f.ctx, "ep", b.ID, 6*time.Second)
	require.NoError(t, err)
	f.clock.Advance(6 * time.Second)
	require.Equal(t, 1, f.sweep(t).Deleted)
	_, err = f.eng.Job(f.ctx, "ep", b.ID)
	requireCode(t, err, spool.CodeNotFound)
	f.clock.Advance(30*time.Minute - 6*time.Second - time.Millisecond)
	require.Zero(t, f.sweep(t).Deleted)
	f.job(t, a.ID)
	f.clock.Advance(time.Millisecond)
	require.Equal(t, 1, f.sweep(t).Deleted)

	// A ttl set while the job runs applies from its end.
	c := f.submit(t, engine.SubmitParams{})
	f.takeOne(t, "w")
	_, err = f.eng.SetRetention(f.ctx, "ep", c.ID, 10*time.Second)
	require.NoError(t, err)
	f.clock.Advance(time.Minute)
	_, err = f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w", JobID: c.ID})
	require.NoError(t, err)
	require.Equal(t, f.clock.Now().Add(10*time.Second), f.job(t, c.ID).DeleteAt)
}

func TestStreamDrain(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	j := f.submit(t, engine.SubmitParams{})
	f.takeOne(t, "w")
	_, chunks, err := f.eng.Stream(f.ctx, "ep", j.ID, 0)
	require.NoError(t, err)
	require.Empty(t, chunks)
	for _, c := range []string{`{"c":0}`, `{"c":1}`} {
		require.NoError(t, f.eng.AppendChunk(f.ctx, "ep", "w", j.ID, 0, json.RawMessage(c)))
	}
	got, chunks, err := f.eng.Stream(f.ctx, "ep", j.ID, 0)
	require.NoError(t, err)
	require.Equal(t, spool.StateInProgress, got.State)
	require.Len(t, chunks, 2)
	require.Equal(t, `{"c":1}`, string(chunks[1].Data))

	require.NoError(t, f.eng.AppendChunk(f.ctx, "ep", "w", j.ID, 0, json.RawMessage(`{"c":2}`)))
	_, err = f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w", JobID: j.ID, Output: json.RawMessage(`[]`)})
	require.NoError(t, err)
	got, chunks, err = f.eng.Stream(f.ctx, "ep", j.ID, 0)
	require.NoError(t, err)
	require.Equal(t, spool.StateCompleted, got.State, "the first terminal answer carries the remaining chunks")
	require.Len(t, chunks, 1)
	require.Equal(t, `{"c":2}`, string(chunks[0].Data))
	_, chunks, err = f.eng.Stream(f.ctx, "ep", j.ID, 0)
	require.NoError(t, err)
	require.Empty(t, chunks)

	// The SSE view does not consume chunks.
	_, chunks, err = f.eng.StreamFrom(f.ctx, "ep", j.ID, 1, 0)
	require.NoError(t, err)
	require.Len(t, chunks, 2)

	// A chunk after the end is refused.
	err = f.eng.AppendChunk(f.ctx, "ep", "w", j.ID, 0, json.RawMessage(`1`))
	requireCode(t, err, spool.CodeConflict)
}

func TestStreamWaitWakesOnChunk(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	j := f.submit(t, engine.SubmitParams{})
	f.takeOne(t, "w")
	got := async(func() ([]spool.Chunk, error) {
		_, chunks, err := f.eng.Stream(f.ctx, "ep", j.ID, time.Minute)
		return chunks, err
	})
	f.waitTimers(t, 2)
	require.NoError(t, f.eng.AppendChunk(f.ctx, "ep", "w", j.ID, 0, json.RawMessage(`"x"`)))
	res := <-got
	require.NoError(t, res.err)
	require.Len(t, res.v, 1)
}

func TestJobsAreScopedToTheirEndpoint(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, _, err := f.eng.PutEndpoint(f.ctx, spool.NewEndpoint("other"))
	require.NoError(t, err)
	j := f.submit(t, engine.SubmitParams{})
	_, err = f.eng.Job(f.ctx, "other", j.ID)
	requireCode(t, err, spool.CodeNotFound)
	_, err = f.eng.Cancel(f.ctx, "other", j.ID)
	requireCode(t, err, spool.CodeNotFound)
	require.Equal(t, spool.StateInQueue, f.job(t, j.ID).State)
	jobs, err := f.eng.Take(f.ctx, "other", "w", 1, 0)
	require.NoError(t, err)
	require.Empty(t, jobs)
}

func TestEndpointLifecycle(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	bad := spool.NewEndpoint("bad name")
	_, _, err := f.eng.PutEndpoint(f.ctx, bad)
	requireCode(t, err, spool.CodeInvalid)

	ep := spool.NewEndpoint("e2")
	ep.ExecutionTimeoutMs = 7000
	_, created, err := f.eng.PutEndpoint(f.ctx, ep)
	require.NoError(t, err)
	require.True(t, created)
	j, err := f.eng.Submit(f.ctx, engine.SubmitParams{Endpoint: "e2", Input: json.RawMessage(`1`)})
	require.NoError(t, err)
	require.Equal(t, int64(7000), j.Policy.ExecutionTimeoutMs, "the endpoint default applies")
	err = f.eng.DeleteEndpoint(f.ctx, "e2")
	requireCode(t, err, spool.CodeConflict)
	_, err = f.eng.PurgeQueue(f.ctx, "e2")
	require.NoError(t, err)
	require.NoError(t, f.eng.DeleteEndpoint(f.ctx, "e2"))
	_, err = f.eng.Endpoint("e2")
	requireCode(t, err, spool.CodeNotFound)
}

// TestConcurrentStopPollsDeliverOnce: of job-stop polls that look at once (a worker reconnecting,
// two replicas), one delivers each stop signal.
func TestConcurrentStopPollsDeliverOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for range 20 {
		j := f.submit(t, engine.SubmitParams{})
		f.takeOne(t, "w")
		_, err := f.eng.Cancel(f.ctx, "ep", j.ID)
		require.NoError(t, err)
		var wg sync.WaitGroup
		var delivered atomic.Int32
		for range 8 {
			wg.Go(func() {
				ids, err := f.eng.AckStops(f.ctx, "ep", "w")
				require.NoError(t, err)
				delivered.Add(int32(len(ids)))
			})
		}
		wg.Wait()
		require.Equal(t, int32(1), delivered.Load())
	}
}
