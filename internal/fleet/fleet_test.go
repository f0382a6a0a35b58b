package fleet_test

import (
	"context"
	"encoding/json"
	"fmt"
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
	"github.com/spool-run/spool/internal/fleet"
	"github.com/spool-run/spool/internal/spooltest"
	"github.com/spool-run/spool/store"
	"github.com/spool-run/spool/store/sqlitestore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.UnixMilli(1_800_000_000_000).UTC()

// fixture is an engine and its fleet on one SQLite store and a fake clock, with endpoint "ep".
// Neither sweeper runs by itself: tests call Sweep.
type fixture struct {
	eng   *engine.Engine
	fleet *fleet.Fleet
	clock *clock.Fake
	ctx   context.Context
	close func() // stops the engine and closes the store; also run at the end of the test
}

func newFixture(t *testing.T, mutate ...func(*fleet.Config)) *fixture {
	t.Helper()
	f := openFixture(t, filepath.Join(t.TempDir(), "spool.db"), clock.NewFake(t0), mutate...)
	_, _, err := f.eng.PutEndpoint(f.ctx, spool.NewEndpoint("ep"))
	require.NoError(t, err)
	return f
}

// openFixture opens the store at path; its close is registered on t.
func openFixture(t *testing.T, path string, fc *clock.Fake, mutate ...func(*fleet.Config)) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, path)
	require.NoError(t, err)
	eng, err := engine.New(engine.Config{Store: st, Clock: fc, SweepInterval: time.Hour})
	require.NoError(t, err)
	require.NoError(t, eng.Start(ctx))
	cfg := fleet.Config{Engine: eng, Store: st}
	for _, m := range mutate {
		m(&cfg)
	}
	fl, err := fleet.New(cfg)
	require.NoError(t, err)
	var once sync.Once
	closeAll := func() {
		once.Do(func() {
			eng.Stop()
			require.NoError(t, st.Close())
		})
	}
	t.Cleanup(closeAll)
	return &fixture{eng: eng, fleet: fl, clock: fc, ctx: ctx, close: closeAll}
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

// take takes up to n jobs for worker, as the worker API does: a sighting, then the take.
func (f *fixture) take(t *testing.T, worker string, n int) []*spool.Job {
	t.Helper()
	require.NoError(t, f.fleet.Seen(f.ctx, "ep", worker))
	f.fleet.TakeRequested(worker)
	handouts, err := f.eng.Take(f.ctx, "ep", worker, n, 0)
	require.NoError(t, err)
	jobs := make([]*spool.Job, len(handouts))
	for i, h := range handouts {
		jobs[i] = h.Job
	}
	return jobs
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

func (f *fixture) sweep(t *testing.T) fleet.SweepResult {
	t.Helper()
	res, err := f.fleet.Sweep(f.ctx)
	require.NoError(t, err)
	return res
}

func (f *fixture) ping(t *testing.T, worker, version string, jobs ...string) {
	t.Helper()
	require.NoError(t, f.fleet.Heartbeat(f.ctx, fleet.HeartbeatParams{Endpoint: "ep", WorkerID: worker, Version: version, JobIDs: jobs}))
}

func (f *fixture) stops(t *testing.T, worker string) []string {
	t.Helper()
	ids, err := f.fleet.StopSignals(f.ctx, "ep", worker, 0)
	require.NoError(t, err)
	return ids
}

func requireCode(t *testing.T, err error, code spool.Code) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, code, spool.ErrorCode(err), "error: %v", err)
}

func TestStopSignalsOfServerEndedJobs(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cancelled := f.submit(t, engine.SubmitParams{})
	f.takeOne(t, "w")
	timedOut := f.submit(t, engine.SubmitParams{ExecutionTimeoutMs: ptr(int64(6000))})
	f.takeOne(t, "w")
	_, err := f.eng.Cancel(f.ctx, "ep", cancelled.ID)
	require.NoError(t, err)
	f.clock.Advance(6 * time.Second)
	_, err = f.eng.Sweep(f.ctx)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{cancelled.ID, timedOut.ID}, f.stops(t, "w"), "the holder is told to stop both")
	require.Empty(t, f.stops(t, "w"), "each stop signal is delivered once")
	require.Empty(t, f.stops(t, "other"))

	_, err = f.fleet.StopSignals(f.ctx, "nope", "w", 0)
	requireCode(t, err, spool.CodeNotFound)
}

// TestStopSignalsLongPoll: a job-stop poll waits for a signal, wakes when the server ends a job
// its worker runs, and answers at once, empty, when the engine drains.
func TestStopSignalsLongPoll(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	j := f.submit(t, engine.SubmitParams{})
	f.takeOne(t, "w")
	type result struct {
		ids []string
		err error
	}
	poll := func(worker string) <-chan result {
		ch := make(chan result, 1)
		go func() {
			ids, err := f.fleet.StopSignals(f.ctx, "ep", worker, time.Minute)
			ch <- result{ids, err}
		}()
		return ch
	}
	got := poll("w")
	spooltest.WaitTimers(t, f.clock, 2) // the engine's sweeper and the poll
	_, err := f.eng.Cancel(f.ctx, "ep", j.ID)
	require.NoError(t, err)
	r := <-got
	require.NoError(t, r.err)
	require.Equal(t, []string{j.ID}, r.ids)

	got = poll("w")
	spooltest.WaitTimers(t, f.clock, 2)
	f.eng.Drain()
	r = <-got
	require.NoError(t, r.err)
	require.Empty(t, r.ids)
}

func TestPingResignalsStoppedJob(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	j := f.submit(t, engine.SubmitParams{})
	f.takeOne(t, "w")
	_, err := f.eng.Cancel(f.ctx, "ep", j.ID)
	require.NoError(t, err)
	require.Equal(t, []string{j.ID}, f.stops(t, "w"))
	// The answer was lost; the worker still lists the job in its pings.
	f.ping(t, "w", "", j.ID, "unknown", spool.NewJobID(false))
	require.Equal(t, []string{j.ID}, f.stops(t, "w"), "ids the server does not know are ignored")
	// Another worker listing it is running a job it does not hold: it is told to stop too, and
	// the job itself is not touched.
	f.ping(t, "w2", "", j.ID)
	require.Equal(t, []string{j.ID}, f.stops(t, "w2"))
	require.Empty(t, f.stops(t, "w"))
}

func TestPingThatNoLongerListsAJobRequeuesIt(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	kept := f.submit(t, engine.SubmitParams{})
	lost := f.submit(t, engine.SubmitParams{})
	f.take(t, "w", 2)
	// Within twice LostAfter of the take, a ping may predate it: nothing happens.
	f.ping(t, "w", "1.12.0", kept.ID)
	require.Equal(t, spool.StateInProgress, f.job(t, lost.ID).State)
	f.clock.Advance(59 * time.Second)
	f.ping(t, "w", "1.12.0", kept.ID)
	require.Equal(t, spool.StateInProgress, f.job(t, lost.ID).State)
	f.clock.Advance(time.Second)
	// A ping that does not say what sent it is not trusted to list jobs.
	f.ping(t, "w", "", kept.ID)
	require.Equal(t, spool.StateInProgress, f.job(t, lost.ID).State)
	f.ping(t, "w", "1.12.0", kept.ID)
	got := f.job(t, lost.ID)
	require.Equal(t, spool.StateInQueue, got.State)
	require.Equal(t, 1, got.Retries)
	require.Equal(t, spool.StateInProgress, f.job(t, kept.ID).State)
	require.Equal(t, lost.ID, f.takeOne(t, "w2").ID)
}

func TestPingListsBoundedJobs(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ids := make([]string, fleet.MaxPingedJobs+1)
	for i := range ids {
		ids[i] = fmt.Sprint("job-", i)
	}
	err := f.fleet.Heartbeat(f.ctx, fleet.HeartbeatParams{Endpoint: "ep", WorkerID: "w", JobIDs: ids})
	requireCode(t, err, spool.CodeInvalid)
	f.ping(t, "w", "", ids[:fleet.MaxPingedJobs]...)
	require.Empty(t, f.stops(t, "w"), "jobs the server does not know are ignored")
}

func TestWorkerStillRunningAMovedJobIsToldToStop(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	j := f.submit(t, engine.SubmitParams{ExecutionTimeoutMs: ptr(int64(6000))})
	f.takeOne(t, "old")
	f.clock.Advance(6 * time.Second)
	f.ping(t, "old", "", j.ID)
	res, err := f.eng.Sweep(f.ctx)
	require.NoError(t, err)
	require.Equal(t, 1, res.TimedOut)
	// The job is retried before the old worker polled job-stop, and another worker takes it.
	_, err = f.eng.Retry(f.ctx, "ep", j.ID)
	require.NoError(t, err)
	f.takeOne(t, "new")
	require.Empty(t, f.stops(t, "new"), "the new holder is never told to stop its job")
	// The old worker's next ping still lists the job: it is told to stop it.
	f.ping(t, "old", "", j.ID)
	require.Equal(t, []string{j.ID}, f.stops(t, "old"))
	require.Equal(t, spool.StateInProgress, f.job(t, j.ID).State)
	require.Equal(t, "new", f.job(t, j.ID).WorkerID)
}

func TestNoWorkerIsLostRightAfterARestart(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "spool.db")
	fc := clock.NewFake(t0)
	first := openFixture(t, path, fc)
	_, _, err := first.eng.PutEndpoint(first.ctx, spool.NewEndpoint("ep"))
	require.NoError(t, err)
	j := first.submit(t, engine.SubmitParams{ExecutionTimeoutMs: ptr(spool.MaxExecutionTimeoutMs)})
	first.takeOne(t, "w")
	first.close()

	// The server was down for an hour: its workers could not ping it.
	fc.Advance(time.Hour)
	// Started (Start is where the grace counts from), but never leading: a background sweep
	// firing as the clock moves would take the requeue this test counts.
	f := openFixture(t, path, fc, func(c *fleet.Config) { c.Leader = spooltest.NewLeader() })
	require.NoError(t, f.fleet.Start(f.ctx))
	defer f.fleet.Stop()
	require.Zero(t, f.sweep(t).Requeued, "workers get LostAfter from the start to show up")
	fc.Advance(30 * time.Second)
	require.Equal(t, 1, f.sweep(t).Requeued, "a worker that never came back loses its job")
	require.Equal(t, spool.StateInQueue, f.job(t, j.ID).State)
}

func TestLostWorkerRequeuesUntilLimit(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "spool.db")
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, path)
	require.NoError(t, err)
	fc := clock.NewFake(t0)
	eng, err := engine.New(engine.Config{Store: st, Clock: fc, SweepInterval: time.Hour, MaxRetries: 2})
	require.NoError(t, err)
	require.NoError(t, eng.Start(ctx))
	defer func() { eng.Stop(); require.NoError(t, st.Close()) }()
	fl, err := fleet.New(fleet.Config{Engine: eng, Store: st, LostAfter: 30 * time.Second})
	require.NoError(t, err)
	f := &fixture{eng: eng, fleet: fl, clock: fc, ctx: ctx}
	_, _, err = eng.PutEndpoint(ctx, spool.NewEndpoint("ep"))
	require.NoError(t, err)

	j := f.submit(t, engine.SubmitParams{})
	for i := 1; i <= 2; i++ {
		w := "w" + string(rune('0'+i))
		f.takeOne(t, w)
		f.clock.Advance(29 * time.Second)
		require.Zero(t, f.sweep(t).Requeued, "a worker is lost only after LostAfter")
		f.clock.Advance(time.Second)
		require.Equal(t, fleet.SweepResult{Lost: 1, Requeued: 1}, f.sweep(t))
		got := f.job(t, j.ID)
		require.Equal(t, spool.StateInQueue, got.State)
		require.Equal(t, i, got.Retries)
		// The lost worker's late result is refused.
		_, err := f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: w, JobID: j.ID})
		requireCode(t, err, spool.CodeConflict)
	}
	f.takeOne(t, "w3")
	f.clock.Advance(30 * time.Second)
	require.Equal(t, 1, f.sweep(t).Failed)
	got := f.job(t, j.ID)
	require.Equal(t, spool.StateFailed, got.State)
	require.Contains(t, got.Error, "worker w3 was lost")
}

func TestPingsKeepAWorkerAlive(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	j := f.submit(t, engine.SubmitParams{})
	f.takeOne(t, "w")
	for range 10 {
		f.clock.Advance(10 * time.Second)
		f.ping(t, "w", "", j.ID)
		require.Zero(t, f.sweep(t).Requeued)
	}
	require.Equal(t, spool.StateInProgress, f.job(t, j.ID).State)
	ws, err := f.fleet.Workers(f.ctx, "ep")
	require.NoError(t, err)
	require.Len(t, ws, 1)
	require.Equal(t, spool.WorkerRunning, ws[0].State)
	require.Equal(t, []string{j.ID}, ws[0].Jobs)
}

// TestWorkersStartedElsewhere: what is known of workers Spool does not run is who was seen, when,
// and what they hold; one unseen for LostAfter is lost, and /health does not count it.
func TestWorkersStartedElsewhere(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	j := f.submit(t, engine.SubmitParams{})
	f.takeOne(t, "busy")
	f.ping(t, "idle", "1.12.0")
	f.clock.Advance(20 * time.Second)
	f.ping(t, "busy", "", j.ID)
	f.clock.Advance(15 * time.Second)
	ws, err := f.fleet.Workers(f.ctx, "ep")
	require.NoError(t, err)
	states := map[string]spool.WorkerState{}
	for _, w := range ws {
		states[w.ID] = w.State
		if w.ID == "idle" {
			require.Equal(t, "1.12.0", w.Version)
		}
	}
	require.Equal(t, map[string]spool.WorkerState{"busy": spool.WorkerRunning, "idle": spool.WorkerLost}, states)
	c, err := f.fleet.Counts(f.ctx, "ep")
	require.NoError(t, err)
	require.Equal(t, fleet.Counts{Running: 1}, c)
	require.Equal(t, 1, c.Ready())
}

func ptr[T any](v T) *T { return &v }

// TestOnlyTheLeaderSweepsWorkers: on a replica that does not lead, the lost-worker sweep's rounds
// pass without touching a lost worker's job; once it leads, the next round requeues it.
func TestOnlyTheLeaderSweepsWorkers(t *testing.T) {
	t.Parallel()
	lead := spooltest.NewLeader()
	f := newFixture(t, func(c *fleet.Config) { c.Leader = lead })
	require.NoError(t, f.fleet.Start(f.ctx))
	defer f.fleet.Stop()
	j := f.submit(t, engine.SubmitParams{})
	f.takeOne(t, "w")
	f.clock.Advance(31 * time.Second)
	<-lead.Asked
	spooltest.WaitTimers(t, f.clock, 2) // the engine's sweeper and the next round
	require.Equal(t, spool.StateInProgress, f.job(t, j.ID).State)

	lead.On.Store(true)
	f.clock.Advance(time.Second)
	<-lead.Asked
	spooltest.WaitTimers(t, f.clock, 2)
	require.Equal(t, spool.StateInQueue, f.job(t, j.ID).State)
}

// afterHeldJobs runs a hook once HeldJobs has read, before its caller writes.
type afterHeldJobs struct {
	store.Store
	hook atomic.Pointer[func()]
}

func (s *afterHeldJobs) HeldJobs(ctx context.Context, p store.HeldJobsParams) ([]store.HeldJob, error) {
	held, err := s.Store.HeldJobs(ctx, p)
	if h := s.hook.Swap(nil); h != nil {
		(*h)()
	}
	return held, err
}

// TestAWorkerBackBeforeTheSweepWritesKeepsItsJobs: a worker the sweep found lost that shows up
// again before the sweep writes keeps the job it held, and the job it took since.
func TestAWorkerBackBeforeTheSweepWritesKeepsItsJobs(t *testing.T) {
	t.Parallel()
	var hooked *afterHeldJobs
	f := newFixture(t, func(c *fleet.Config) {
		hooked = &afterHeldJobs{Store: c.Store}
		c.Store = hooked
	})
	old := f.submit(t, engine.SubmitParams{})
	f.takeOne(t, "w")
	f.clock.Advance(31 * time.Second)
	fresh := f.submit(t, engine.SubmitParams{})
	back := func() { f.takeOne(t, "w") } // a sighting, then a take
	hooked.hook.Store(&back)
	require.Equal(t, fleet.SweepResult{}, f.sweep(t))
	require.Equal(t, spool.StateInProgress, f.job(t, old.ID).State)
	require.Equal(t, spool.StateInProgress, f.job(t, fresh.ID).State)
}
