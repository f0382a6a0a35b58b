package sqlitestore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
	"github.com/spool-run/spool/store/sqlitestore"
)

var countedEndpoints = []string{"a", "b", "c"}

// requireCounts checks CountJobs and QueueDepth of every endpoint against a recount of the file.
func requireCounts(t *testing.T, s *sqlitestore.Store, what string) {
	t.Helper()
	ctx := t.Context()
	wantCounts, wantDepths, err := s.RecountAll(ctx)
	require.NoError(t, err)
	for _, ep := range countedEndpoints {
		want, ok := wantCounts[ep]
		if !ok {
			want, err = s.RecountJobs(ctx, ep) // no jobs: all zeros, as CountJobs spells them
			require.NoError(t, err)
		}
		counts, err := s.CountJobs(ctx, ep)
		require.NoError(t, err)
		require.Equal(t, want, counts, "CountJobs of %s after %s", ep, what)
		depth, err := s.QueueDepth(ctx, ep)
		require.NoError(t, err)
		require.Equal(t, wantDepths[ep], depth, "QueueDepth of %s after %s", ep, what)
	}
}

// mix makes random writes of every kind the store does, and tallies what happened to them so
// that the test can show the mix did not degenerate.
type mix struct {
	t      *testing.T
	s      *sqlitestore.Store
	rng    *rand.Rand
	nextID int
	ids    []string

	claimed, expectFailed, opsFailed, changed, deleted atomic.Int64
}

// write is one prepared write: run may be called from another goroutine.
type write struct {
	what string
	run  func(ctx context.Context) error
}

func (m *mix) pick(n int) int { return m.rng.IntN(n) }

func (m *mix) id() string {
	if len(m.ids) == 0 || m.pick(20) == 0 {
		return "missing"
	}
	return m.ids[m.pick(len(m.ids))]
}

// next prepares a random write.
func (m *mix) next() write {
	switch n := m.pick(100); {
	case n < 30:
		return m.create()
	case n < 45:
		return m.claim()
	case n < 85:
		return m.update()
	case n < 93:
		return m.deleteJobs()
	default:
		return m.other()
	}
}

func (m *mix) create() write {
	id := fmt.Sprint("j", m.nextID)
	if len(m.ids) > 0 && m.pick(10) == 0 {
		id = m.ids[m.pick(len(m.ids))] // a conflict, or a job created anew after its deletion
	} else {
		m.nextID++
		m.ids = append(m.ids, id)
	}
	j := &spool.Job{
		ID: id, Endpoint: countedEndpoints[m.pick(len(countedEndpoints))], State: spool.StateInQueue,
		Input:     json.RawMessage(`{}`),
		Policy:    spool.Policy{ExecutionTimeoutMs: 1000, TTLMs: 3_600_000, LowPriority: m.pick(3) == 0},
		CreatedAt: t0, QueuedAt: t0.Add(time.Duration(m.pick(40)) * time.Millisecond), // ties on purpose
		ExpiresAt: t0.Add(time.Hour), RetentionMs: int64(m.pick(100_000)),
	}
	if m.pick(4) == 0 {
		j.State = spool.States[m.pick(len(spool.States))]
		j.DeleteAt = t0.Add(time.Duration(m.pick(100)) * time.Second)
	}
	if m.pick(5) == 0 {
		j.Retries = 1 + m.pick(2)
	}
	if m.pick(3) == 0 {
		j.Webhook = "https://example.com/hook"
	}
	return write{"create " + id, func(ctx context.Context) error {
		err := m.s.CreateJob(ctx, store.CreateJobParams{Job: j})
		if err != nil {
			m.opsFailed.Add(1)
		}
		return err
	}}
}

func (m *mix) claim() write {
	ep := countedEndpoints[m.pick(len(countedEndpoints))]
	p := store.ClaimJobsParams{Endpoint: ep, Max: 1 + m.pick(3), Now: t0, Change: store.JobChange{
		Set:   store.SetState | store.SetWorkerID | store.IncAttempt | store.SetTakenAt | store.SetTimeoutAt,
		State: spool.StateInProgress, WorkerID: fmt.Sprint("w", m.pick(3)), TakenAt: t0,
	}}
	if m.pick(10) == 0 {
		p.Change.Set |= store.IncRetries
	}
	if m.pick(10) == 0 {
		p.Now = t0.Add(2 * time.Hour) // every queued job has expired: nothing to claim
	}
	return write{"claim " + ep, func(ctx context.Context) error {
		jobs, err := m.s.ClaimJobs(ctx, p)
		m.claimed.Add(int64(len(jobs)))
		return err
	}}
}

// change picks a transition for a job in state from, as the engine would make it.
func (m *mix) change(from spool.State) store.JobChange {
	finish := func(to spool.State) store.JobChange {
		return store.JobChange{Set: store.SetState | store.SetFinishedAt | store.SetDeleteAt | store.SetError,
			State: to, FinishedAt: t0, Error: "x"}
	}
	requeue := store.JobChange{
		Set:   store.SetState | store.SetWorkerID | store.IncRetries | store.SetQueuedAt | store.SetExpiresAt,
		State: spool.StateInQueue, QueuedAt: t0.Add(time.Duration(m.pick(40)) * time.Millisecond),
	}
	switch n := m.pick(4); {
	case n == 0:
		// A flag or a field that leaves the job where it is counted.
		return store.JobChange{Set: store.SetStopPending, StopPending: m.pick(2) == 0}
	case from == spool.StateInQueue && n == 1:
		return store.JobChange{Set: store.SetState | store.SetWorkerID | store.IncAttempt | store.SetTakenAt,
			State: spool.StateInProgress, WorkerID: "w0", TakenAt: t0}
	case from == spool.StateInQueue && n == 2:
		// Moved within the queue: its queued_at changes, its state does not.
		return store.JobChange{Set: store.SetQueuedAt, QueuedAt: t0.Add(time.Duration(m.pick(40)) * time.Millisecond)}
	case from == spool.StateInQueue:
		return finish([]spool.State{spool.StateCancelled, spool.StateTimedOut}[m.pick(2)])
	case from == spool.StateInProgress && n == 1:
		return requeue
	case from == spool.StateInProgress:
		return finish([]spool.State{spool.StateCompleted, spool.StateFailed, spool.StateTimedOut, spool.StateCancelled}[m.pick(4)])
	case n == 1:
		return requeue // a retry of a finished job
	default:
		return store.JobChange{Set: store.SetRetention | store.SetDeleteAt, RetentionMs: int64(m.pick(100_000))}
	}
}

func (m *mix) update() write {
	ctx := m.t.Context()
	n := 1 + m.pick(4)
	updates := make([]store.JobUpdate, 0, n)
	for range n {
		id := m.id()
		j, err := m.s.GetJob(ctx, store.GetJobParams{ID: id})
		if err != nil {
			j = &spool.Job{ID: id, State: spool.StateInQueue}
		}
		u := store.JobUpdate{ID: id, Expect: store.Exactly(j), Change: m.change(j.State), Webhook: m.pick(2) == 0}
		switch m.pick(6) {
		case 0:
			u.Expect = store.Expect{State: j.State}
		case 1: // stale: another transition got there first
			u.Expect.State = spool.States[m.pick(len(spool.States))]
			u.Expect.Retries++
		}
		updates = append(updates, u)
	}
	if m.pick(4) == 0 {
		updates = append(updates, updates[0]) // the same job twice: the second sees the first
	}
	outbox := func(j *spool.Job) *spool.WebhookMessage {
		return &spool.WebhookMessage{ID: "msg_" + j.ID + fmt.Sprint(j.Attempt, j.Retries, j.State), URL: j.Webhook, CreatedAt: t0}
	}
	what := fmt.Sprintf("update of %d jobs", len(updates))
	switch m.pick(8) {
	case 0: // the delivery's id is taken: the whole write is undone, updates before it included
		what += ", failing on a taken delivery id"
		outbox = func(*spool.Job) *spool.WebhookMessage {
			return &spool.WebhookMessage{ID: "msg_taken", URL: "https://example.com/", CreatedAt: t0}
		}
	case 1:
		what += ", failing on a panic"
		outbox = func(*spool.Job) *spool.WebhookMessage { panic("bug") }
	}
	return write{what, func(ctx context.Context) error {
		changed, err := m.s.UpdateJobs(ctx, store.UpdateJobsParams{Updates: updates, Now: t0, Outbox: outbox})
		if err != nil {
			m.opsFailed.Add(1)
		}
		m.changed.Add(int64(len(changed)))
		m.expectFailed.Add(int64(len(updates) - len(changed)))
		return err
	}}
}

func (m *mix) deleteJobs() write {
	p := store.DeleteJobsParams{Before: t0.Add(time.Duration(m.pick(200)) * time.Second), Limit: m.pick(4)}
	return write{"delete jobs", func(ctx context.Context) error {
		n, err := m.s.DeleteJobs(ctx, p)
		m.deleted.Add(int64(n))
		return err
	}}
}

// other makes one of the writes that count nothing: each must leave the counts alone.
func (m *mix) other() write {
	id := m.id()
	switch m.pick(5) {
	case 0:
		st := spool.States[m.pick(2)]
		return write{"append chunk", func(ctx context.Context) error {
			_, err := m.s.AppendChunk(ctx, store.AppendChunkParams{ID: id, Expect: store.Expect{State: st}, Data: json.RawMessage(`1`)})
			return err
		}}
	case 1:
		return write{"drain chunks", func(ctx context.Context) error {
			_, _, err := m.s.ReadChunks(ctx, store.ReadChunksParams{ID: id, Drain: true})
			return err
		}}
	case 2:
		return write{"touch worker", func(ctx context.Context) error {
			return m.s.TouchWorker(ctx, store.TouchWorkerParams{ID: "w0", Endpoint: "a", Now: t0})
		}}
	case 3:
		return write{"delete workers", func(ctx context.Context) error {
			_, err := m.s.DeleteWorkers(ctx, store.DeleteWorkersParams{SeenBefore: t0})
			return err
		}}
	default:
		ep := spool.NewEndpoint("a")
		ep.CreatedAt, ep.UpdatedAt = t0, t0
		return write{"put and delete endpoint", func(ctx context.Context) error {
			if err := m.s.PutEndpoint(ctx, ep); err != nil {
				return err
			}
			return m.s.DeleteEndpoint(ctx, "a")
		}}
	}
}

// batch runs writes in one transaction of the writer (with FailBatch among them, one that fails
// as a whole), while a reader reads the counts alongside.
func (m *mix) batch(writes []write, fail bool) {
	t := m.t
	release, waitBlock := blockWriter(t, m.s)
	stop := make(chan struct{})
	readErr := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				readErr <- nil
				return
			default:
			}
			if _, err := m.s.CountJobs(t.Context(), "a"); err != nil {
				readErr <- err
				return
			}
			if _, err := m.s.QueueDepth(t.Context(), "a"); err != nil {
				readErr <- err
				return
			}
		}
	}()
	var failErr error
	var writers sync.WaitGroup
	queued := 0
	// enqueue starts run and waits until it has queued a write behind the blocked writer, or has
	// returned without one (a claim that finds nothing to claim asks the read pool only).
	enqueue := func(run func()) {
		done := make(chan struct{})
		writers.Go(func() {
			defer close(done)
			run()
		})
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		for m.s.Queued() <= queued {
			select {
			case <-done:
				return
			case <-ctx.Done():
				t.Fatalf("a write neither queued nor returned")
			default:
				runtime.Gosched()
			}
		}
		queued++
	}
	for i, w := range writes {
		if fail && i == len(writes)/2 {
			enqueue(func() { failErr = m.s.FailBatch(t.Context()) })
		}
		enqueue(func() { _ = w.run(t.Context()) })
	}
	release()
	waitBlock()
	writers.Wait()
	close(stop)
	require.NoError(t, <-readErr)
	if fail {
		require.ErrorContains(t, failErr, "release savepoint", "the batch must have failed as a whole")
	}
}

// TestCountsFollowWrites drives a random mix of every write the store makes of jobs (alone, in
// batches of writes some of which fail, and in batches that fail as a whole, with reopens between)
// and recounts the file after each step.
func TestCountsFollowWrites(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("SPOOL_COUNTS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		require.NoError(t, err, "SPOOL_COUNTS_SEED must be an unsigned integer")
		seed = n
	}
	t.Logf("seed %d (SPOOL_COUNTS_SEED=%d makes the same writes)", seed, seed)
	path := filepath.Join(t.TempDir(), "spool.db")
	s := openAt(t, path)
	defer func() { require.NoError(t, s.Close()) }()
	require.NoError(t, s.CreateDelivery(t.Context(), store.CreateDeliveryParams{Delivery: spool.WebhookDelivery{
		ID: "msg_taken", JobID: "x", Endpoint: "a", URL: "https://example.com/", CreatedAt: t0,
	}}))
	m := &mix{t: t, s: s, rng: rand.New(rand.NewPCG(seed, 1))}
	steps := 250
	if os.Getenv("SPOOL_SOAK") == "1" {
		steps = 10_000
	}
	var batches, failedBatches int
	for step := range steps {
		switch n := m.pick(100); {
		case n < 2:
			require.NoError(t, s.Close())
			s = openAt(t, path)
			m.s = s
			requireCounts(t, s, fmt.Sprintf("step %d: reopen", step))
		case n < 20:
			writes := make([]write, 2+m.pick(6))
			for i := range writes {
				writes[i] = m.next()
			}
			fail := n < 6
			m.batch(writes, fail)
			batches++
			if fail {
				failedBatches++
			}
			requireCounts(t, s, fmt.Sprintf("step %d: batch of %d writes (failing: %v)", step, len(writes), fail))
		default:
			w := m.next()
			_ = w.run(t.Context())
			requireCounts(t, s, fmt.Sprintf("step %d: %s", step, w.what))
		}
	}
	t.Logf("claimed %d, changed %d, expectations failed %d, writes failed %d, deleted %d, batches %d (%d failing)",
		m.claimed.Load(), m.changed.Load(), m.expectFailed.Load(), m.opsFailed.Load(), m.deleted.Load(), batches, failedBatches)
	for name, n := range map[string]int64{
		"claimed": m.claimed.Load(), "changed": m.changed.Load(), "expectations failed": m.expectFailed.Load(),
		"writes failed": m.opsFailed.Load(), "deleted": m.deleted.Load(),
		"batches": int64(batches), "failing batches": int64(failedBatches),
	} {
		require.Positive(t, n, "the mix must exercise %s", name)
	}
}

// TestCountsSurviveReopen: a reopened store counts what the file holds, jobs written while no
// store had it open included.
func TestCountsSurviveReopen(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "spool.db")
	s := openAt(t, path)
	mk := func(id, ep string, st spool.State, low bool, retries int, queued time.Duration) *spool.Job {
		j := job(id)
		j.Endpoint, j.State, j.Policy.LowPriority, j.Retries, j.QueuedAt = ep, st, low, retries, t0.Add(queued)
		return j
	}
	for _, j := range []*spool.Job{
		mk("q1", "a", spool.StateInQueue, false, 0, 3*time.Second),
		mk("q2", "a", spool.StateInQueue, false, 1, 2*time.Second),
		mk("q3", "a", spool.StateInQueue, false, 0, time.Second),
		mk("l1", "a", spool.StateInQueue, true, 0, 0),
		mk("p1", "a", spool.StateInProgress, false, 2, 0),
		mk("p2", "a", spool.StateInProgress, true, 0, 0),
		mk("c1", "a", spool.StateCompleted, false, 1, 0),
		mk("f1", "b", spool.StateFailed, false, 0, 0),
		mk("t1", "b", spool.StateTimedOut, false, 3, 0),
		mk("x1", "b", spool.StateCancelled, true, 0, 0),
	} {
		require.NoError(t, s.CreateJob(ctx, store.CreateJobParams{Job: j}))
	}
	// The oldest queued job leaves: what is counted as oldest is now looked up, not remembered.
	claimed, err := s.ClaimJobs(ctx, store.ClaimJobsParams{Endpoint: "a", Max: 1, Now: t0, Change: store.JobChange{
		Set: store.SetState | store.SetWorkerID, State: spool.StateInProgress, WorkerID: "w",
	}})
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	require.Equal(t, "q3", claimed[0].ID)
	requireCounts(t, s, "the writes")
	before := map[string]any{}
	for _, ep := range countedEndpoints {
		c, err := s.CountJobs(ctx, ep)
		require.NoError(t, err)
		d, err := s.QueueDepth(ctx, ep)
		require.NoError(t, err)
		before[ep] = []any{c, d}
	}
	d, err := s.QueueDepth(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, spool.QueueDepth{Normal: 2, Low: 1, Running: 2, OldestNormal: t0.Add(2 * time.Second).UTC()}, d)
	require.NoError(t, s.Close())

	s = openAt(t, path)
	for _, ep := range countedEndpoints {
		c, err := s.CountJobs(ctx, ep)
		require.NoError(t, err)
		d, err := s.QueueDepth(ctx, ep)
		require.NoError(t, err)
		require.Equal(t, before[ep], []any{c, d}, ep)
	}
	requireCounts(t, s, "a reopen")
	require.NoError(t, s.Close())

	// Jobs that another program wrote into the file are counted at the next Open.
	require.NoError(t, sqlitestore.BulkQueue(ctx, path, "c", "bulk", 1000, t0.Add(-time.Minute)))
	s = openAt(t, path)
	defer func() { require.NoError(t, s.Close()) }()
	requireCounts(t, s, "jobs written behind the store's back")
	d, err = s.QueueDepth(ctx, "c")
	require.NoError(t, err)
	require.Equal(t, spool.QueueDepth{Normal: 1000, OldestNormal: t0.Add(-time.Minute).UTC()}, d)
}

// TestOldestQueuedUsesIndex: the lookup of an endpoint's oldest queued job, made when that job
// leaves the queue, is one seek in jobs_queue, never a scan or a sort of the queue.
func TestOldestQueuedUsesIndex(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	plan, err := s.OldestQueuedPlan(t.Context())
	require.NoError(t, err)
	require.Contains(t, plan, "USING COVERING INDEX jobs_queue (endpoint=? AND low_priority=?)")
	require.NotContains(t, plan, "TEMP B-TREE")
}

// benchQueued is the size of the queue the count benchmarks read; SPOOL_BENCH_QUEUED=n sets
// another.
func benchQueued(b *testing.B) int {
	b.Helper()
	v := os.Getenv("SPOOL_BENCH_QUEUED")
	if v == "" {
		return 200_000
	}
	n, err := strconv.Atoi(v)
	require.NoError(b, err, "SPOOL_BENCH_QUEUED must be an integer")
	return n
}

// openQueued opens a store whose endpoint "ep" has n queued jobs.
func openQueued(b *testing.B, n int) *sqlitestore.Store {
	b.Helper()
	path := filepath.Join(b.TempDir(), "spool.db")
	require.NoError(b, openAt(b, path).Close())
	require.NoError(b, sqlitestore.BulkQueue(context.Background(), path, "ep", "j", n, t0))
	start := time.Now()
	s := openAt(b, path)
	b.Logf("Open with %d queued jobs: %v", n, time.Since(start))
	b.Cleanup(func() { require.NoError(b, s.Close()) })
	return s
}

// BenchmarkCountJobs compares CountJobs, which /health calls, with the aggregate it used to run
// (recount): the ratio is what each /health saves.
func BenchmarkCountJobs(b *testing.B) {
	n := benchQueued(b)
	s := openQueued(b, n)
	ctx := context.Background()
	b.Run("recount", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.RecountJobs(ctx, "ep"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("memory", func(b *testing.B) {
		for b.Loop() {
			c, err := s.CountJobs(ctx, "ep")
			if err != nil || c.ByState[spool.StateInQueue] != n {
				b.Fatal(c, err)
			}
		}
	})
}

// BenchmarkQueueDepth compares QueueDepth, which every submission to an endpoint with maxQueue
// calls, with the aggregate it used to run (recount).
func BenchmarkQueueDepth(b *testing.B) {
	n := benchQueued(b)
	s := openQueued(b, n)
	ctx := context.Background()
	b.Run("recount", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.RecountQueue(ctx, "ep"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("memory", func(b *testing.B) {
		for b.Loop() {
			d, err := s.QueueDepth(ctx, "ep")
			if err != nil || d.Normal != n {
				b.Fatal(d, err)
			}
		}
	})
}
