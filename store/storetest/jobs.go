package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

func testJobRoundTrip(t *testing.T, open opener) {
	s := open(t)
	full := &spool.Job{
		ID:       "job-full",
		Endpoint: "ep",
		State:    spool.StateInProgress,
		// Byte for byte: whitespace, key order and number spelling must survive.
		Input:   json.RawMessage(" {\"b\" :1,\n\t\"a\":[1.0, 2e3]}  "),
		Webhook: "https://example.com/hook?x=1",
		// Sealed bytes are binary: NUL and high bytes must survive.
		S3ConfigSealed: []byte{1, 0, 0xff, 'x', 0, 0x7f},
		HadS3Config:    true,
		Policy:         spool.Policy{ExecutionTimeoutMs: 600_001, TTLMs: 86_400_002, LowPriority: true},
		Sync:           true,
		CreatedAt:      t0.In(time.FixedZone("UTC+2", 2*3600)), // the instant matters, not the location
		QueuedAt:       at(1 * time.Millisecond),
		TakenAt:        at(2 * time.Millisecond),
		FinishedAt:     at(3 * time.Millisecond),
		Deadline:       at(4 * time.Millisecond),
		WorkerID:       "worker-1",
		Attempt:        3,
		Retries:        2,
		Output:         json.RawMessage(`{"text":"héllo"}`),
		Error:          "some error",
		StopPod:        true,
		EndedByWorker:  true,
		StopPending:    true,
		RetentionMs:    12_345,
		StreamCount:    7,
		StreamCursor:   5,
	}
	// Zero values everywhere: nil RawMessages and zero times must come back as such.
	bare := &spool.Job{ID: "job-bare", Endpoint: "ep", State: spool.StateInQueue}
	// Empty but non-nil RawMessages are not nil.
	empty := with(queued("job-empty", "ep"), func(j *spool.Job) {
		j.Input, j.S3ConfigSealed, j.Output = json.RawMessage{}, []byte{}, json.RawMessage{}
	})
	nullJSON := with(queued("job-null", "ep"), func(j *spool.Job) { j.Input, j.Output = json.RawMessage("null"), nil })

	for _, j := range []*spool.Job{full, bare, empty, nullJSON} {
		create(t, s, j)
		requireStored(t, s, j)
	}
	require.Nil(t, get(t, s, "job-bare").Output)
	require.NotNil(t, get(t, s, "job-empty").Output)
	require.True(t, get(t, s, "job-bare").TakenAt.IsZero())
}

// testJobCopies checks that the store shares no memory with its callers.
func testJobCopies(t *testing.T, open opener) {
	s := open(t)
	j := queued("j", "ep")
	create(t, s, j)
	j.Input[2] = 'X'
	got := get(t, s, "j")
	require.JSONEq(t, `{"prompt":"hi"}`, string(got.Input))
	got.Input[2] = 'Y'
	got.State = spool.StateFailed
	requireStored(t, s, queued("j", "ep"))
}

func testCreateJobConflict(t *testing.T, open opener) {
	s := open(t)
	create(t, s, queued("j", "ep"))
	err := s.CreateJob(t.Context(), store.CreateJobParams{Job: with(queued("j", "other"), func(j *spool.Job) { j.Error = "x" })})
	require.ErrorIs(t, err, store.ErrConflict)
	requireStored(t, s, queued("j", "ep"))
}

func testNotFound(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	create(t, s, queued("exists", "ep"))
	called := false
	mark := func(*spool.Job) error { called = true; return nil }

	_, err := s.GetJob(ctx, "missing")
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.UpdateJob(ctx, store.UpdateJobParams{ID: "missing", Apply: mark})
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.AppendChunk(ctx, store.AppendChunkParams{ID: "missing", Check: mark, Data: json.RawMessage(`1`)})
	require.ErrorIs(t, err, store.ErrNotFound)
	_, _, err = s.ReadChunks(ctx, store.ReadChunksParams{ID: "missing"})
	require.ErrorIs(t, err, store.ErrNotFound)
	_, _, err = s.ReadChunks(ctx, store.ReadChunksParams{ID: "missing", Drain: true})
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.GetEndpoint(ctx, "missing")
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorIs(t, s.DeleteEndpoint(ctx, "missing"), store.ErrNotFound)
	require.ErrorIs(t, s.DeleteKey(ctx, "missing"), store.ErrNotFound)
	require.False(t, called, "Apply or Check called for a missing job")
}

func testListJobs(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	mk := func(id, ep string, st spool.State, created time.Duration) *spool.Job {
		return with(queued(id, ep), func(j *spool.Job) { j.State, j.CreatedAt = st, at(created) })
	}
	create(t, s,
		mk("a1", "a", spool.StateInQueue, 1*time.Second),
		mk("a2", "a", spool.StateCompleted, 2*time.Second),
		mk("b3", "b", spool.StateInQueue, 3*time.Second),
		mk("a4", "a", spool.StateFailed, 4*time.Second),
		mk("a5", "a", spool.StateInProgress, 5*time.Second),
	)
	for _, tc := range []struct {
		name string
		p    store.ListJobsParams
		want []string
	}{
		{"all newest first", store.ListJobsParams{}, []string{"a5", "a4", "b3", "a2", "a1"}},
		{"endpoint", store.ListJobsParams{Endpoint: "a"}, []string{"a5", "a4", "a2", "a1"}},
		{"states", store.ListJobsParams{States: []spool.State{spool.StateInQueue, spool.StateFailed}}, []string{"a4", "b3", "a1"}},
		{"endpoint and state", store.ListJobsParams{Endpoint: "a", States: []spool.State{spool.StateInQueue}}, []string{"a1"}},
		{"before is strict", store.ListJobsParams{Before: at(4 * time.Second)}, []string{"b3", "a2", "a1"}},
		{"limit", store.ListJobsParams{Endpoint: "a", Limit: 2}, []string{"a5", "a4"}},
		{"page", store.ListJobsParams{Endpoint: "a", Limit: 2, Before: at(4 * time.Second)}, []string{"a2", "a1"}},
		{"no match", store.ListJobsParams{Endpoint: "zzz"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			jobs, err := s.ListJobs(ctx, tc.p)
			require.NoError(t, err)
			require.Equal(t, tc.want, nilIfEmpty(ids(jobs)))
		})
	}
	// Paging with a (CreatedAt, ID) cursor skips nothing inside one millisecond.
	create(t, s, mk("c1", "c", spool.StateInQueue, 9*time.Second), mk("c2", "c", spool.StateInQueue, 9*time.Second),
		mk("c3", "c", spool.StateInQueue, 9*time.Second), mk("c0", "c", spool.StateInQueue, 8*time.Second))
	var paged []string
	p := store.ListJobsParams{Endpoint: "c", Limit: 2}
	for range 4 {
		page, err := s.ListJobs(ctx, p)
		require.NoError(t, err)
		if len(page) == 0 {
			break
		}
		paged = append(paged, ids(page)...)
		last := page[len(page)-1]
		p.Before, p.BeforeID = last.CreatedAt, last.ID
	}
	require.Equal(t, []string{"c3", "c2", "c1", "c0"}, paged)

	jobs, err := s.ListJobs(ctx, store.ListJobsParams{Endpoint: "b"})
	require.NoError(t, err)
	require.Len(t, jobs, 1)
	requireJob(t, mk("b3", "b", spool.StateInQueue, 3*time.Second), jobs[0])
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

func testListJobsDefaultLimit(t *testing.T, open opener) {
	s := open(t)
	createConcurrently(t, s, 101, func(i int) *spool.Job {
		return with(queued(fmt.Sprintf("j%03d", i), "ep"), func(j *spool.Job) { j.CreatedAt = at(time.Duration(i) * time.Second) })
	})
	jobs, err := s.ListJobs(t.Context(), store.ListJobsParams{Endpoint: "ep"})
	require.NoError(t, err)
	require.Len(t, jobs, 100)
	require.Equal(t, "j100", jobs[0].ID)
	require.Equal(t, "j001", jobs[99].ID)
}

// createConcurrently creates n jobs from concurrent goroutines (faster on stores that group
// commits); the order of insertion is therefore undefined.
func createConcurrently(t *testing.T, s store.Store, n int, mk func(i int) *spool.Job) {
	t.Helper()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = s.CreateJob(t.Context(), store.CreateJobParams{Job: mk(i)}) })
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
}

func testUpdateJob(t *testing.T, open opener) {
	s := open(t)
	job := with(queued("j", "ep"), func(j *spool.Job) { j.S3ConfigSealed, j.HadS3Config = []byte{1, 2, 3}, true })
	create(t, s, job)
	want := with(job.Clone(), func(j *spool.Job) {
		j.State, j.WorkerID, j.Attempt, j.TakenAt = spool.StateCompleted, "w", 1, at(time.Second)
		j.FinishedAt, j.Deadline = at(2*time.Second), at(3*time.Second)
		j.Output, j.S3ConfigSealed, j.EndedByWorker, j.Retries = json.RawMessage(`"done"`), nil, true, 1
	})
	var seen *spool.Job
	got, err := s.UpdateJob(t.Context(), store.UpdateJobParams{ID: "j", Apply: func(j *spool.Job) error {
		seen = j.Clone()
		*j = *want.Clone()
		return nil
	}})
	require.NoError(t, err)
	requireJob(t, job, seen)
	requireJob(t, want, got)
	requireStored(t, s, want)
}

// testSealedS3Config: the sealed s3Config comes back byte for byte from every read and through
// UpdateJobs and TakeJobs, and HadS3Config outlives its erasure.
func testSealedS3Config(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	sealed := []byte{1, 0, 0, 0xfe, 'a', 0, 0x80, 0xff}
	a := with(queued("a", "ep"), func(j *spool.Job) { j.S3ConfigSealed, j.HadS3Config = sealed, true })
	b := with(queued("b", "ep"), func(j *spool.Job) { j.QueuedAt = at(time.Millisecond) })
	create(t, s, a, b)
	require.Equal(t, sealed, get(t, s, "a").S3ConfigSealed)
	require.False(t, get(t, s, "b").HadS3Config)
	require.Nil(t, get(t, s, "b").S3ConfigSealed)

	taken, err := s.TakeJobs(ctx, store.TakeJobsParams{Endpoint: "ep", Max: 1, Now: t0, Apply: func(j *spool.Job) error {
		require.Equal(t, sealed, j.S3ConfigSealed, "Apply sees the sealed bytes")
		j.State, j.WorkerID, j.Attempt = spool.StateInProgress, "w", 1
		return nil
	}})
	require.NoError(t, err)
	require.Equal(t, []string{"a"}, ids(taken))
	require.Equal(t, sealed, taken[0].S3ConfigSealed)
	listed, err := s.ListJobs(ctx, store.ListJobsParams{Endpoint: "ep"})
	require.NoError(t, err)
	for _, j := range listed {
		if j.ID == "a" {
			require.Equal(t, sealed, j.S3ConfigSealed)
		}
	}

	ended, err := s.UpdateJobs(ctx, store.UpdateJobsParams{Filter: store.JobFilter{WorkerID: "w"}, Apply: func(j *spool.Job) error {
		j.State, j.S3ConfigSealed = spool.StateFailed, nil
		return nil
	}})
	require.NoError(t, err)
	require.Len(t, ended, 1)
	got := get(t, s, "a")
	require.Nil(t, got.S3ConfigSealed, "erased")
	require.True(t, got.HadS3Config, "remembered")
}

func testUpdateJobApplyError(t *testing.T, open opener) {
	s := open(t)
	create(t, s, queued("j", "ep"))
	got, err := s.UpdateJob(t.Context(), store.UpdateJobParams{ID: "j", Apply: func(j *spool.Job) error {
		j.State, j.Error = spool.StateFailed, "changed"
		return fmt.Errorf("wrapped: %w", errBoom)
	}})
	require.ErrorIs(t, err, errBoom)
	require.Nil(t, got)
	requireStored(t, s, queued("j", "ep"))
}

func testUpdateJobSkip(t *testing.T, open opener) {
	s := open(t)
	create(t, s, queued("j", "ep"))
	got, err := s.UpdateJob(t.Context(), store.UpdateJobParams{ID: "j", Apply: func(j *spool.Job) error {
		j.State = spool.StateFailed // a skip discards whatever Apply did
		return store.ErrSkip
	}})
	require.NoError(t, err)
	requireJob(t, queued("j", "ep"), got)
	requireStored(t, s, queued("j", "ep"))
}

// filterFixture is the set of jobs and workers the UpdateJobs filter cases select from.
//
//	job  endpoint state        worker           deadline  stopPending
//	a    e1       IN_QUEUE     -                +10s
//	b    e1       IN_PROGRESS  w1 (seen +5s)    +20s
//	c    e1       IN_PROGRESS  w2 (seen +15s)   +30s      yes
//	d    e2       IN_PROGRESS  w3 (unknown)     +40s
//	e    e2       COMPLETED    w1 (seen +5s)    +50s
func filterFixture(t *testing.T, s store.Store) {
	t.Helper()
	mk := func(id, ep string, st spool.State, worker string, deadline time.Duration, stop bool) *spool.Job {
		return with(queued(id, ep), func(j *spool.Job) {
			j.State, j.WorkerID, j.Deadline, j.StopPending = st, worker, at(deadline), stop
		})
	}
	create(t, s,
		mk("a", "e1", spool.StateInQueue, "", 10*time.Second, false),
		mk("b", "e1", spool.StateInProgress, "w1", 20*time.Second, false),
		mk("c", "e1", spool.StateInProgress, "w2", 30*time.Second, true),
		mk("d", "e2", spool.StateInProgress, "w3", 40*time.Second, false),
		mk("e", "e2", spool.StateCompleted, "w1", 50*time.Second, false),
	)
	ctx := t.Context()
	require.NoError(t, s.TouchWorker(ctx, store.TouchWorkerParams{ID: "w1", Endpoint: "e1", Now: at(5 * time.Second)}))
	require.NoError(t, s.TouchWorker(ctx, store.TouchWorkerParams{ID: "w2", Endpoint: "e1", Now: at(15 * time.Second)}))
}

// mark is an Apply that records it ran by setting Error.
func mark(j *spool.Job) error {
	j.Error = "marked"
	return nil
}

func testUpdateJobsFilter(t *testing.T, open opener) {
	inProgress := []spool.State{spool.StateInProgress}
	for _, tc := range []struct {
		name   string
		filter store.JobFilter
		want   []string
	}{
		{"none", store.JobFilter{}, []string{"a", "b", "c", "d", "e"}},
		{"endpoint", store.JobFilter{Endpoint: "e2"}, []string{"d", "e"}},
		{"state", store.JobFilter{States: inProgress}, []string{"b", "c", "d"}},
		{"states", store.JobFilter{States: []spool.State{spool.StateInQueue, spool.StateCompleted}}, []string{"a", "e"}},
		{"worker", store.JobFilter{WorkerID: "w1"}, []string{"b", "e"}},
		{"deadline inclusive", store.JobFilter{DeadlineBefore: at(20 * time.Second)}, []string{"a", "b"}},
		{"stop pending", store.JobFilter{StopPending: true}, []string{"c"}},
		{"worker seen before", store.JobFilter{WorkerSeenBefore: at(10 * time.Second)}, []string{"b", "d", "e"}},
		{"worker seen before inclusive", store.JobFilter{WorkerSeenBefore: at(15 * time.Second)}, []string{"b", "c", "d", "e"}},
		{"lost workers", store.JobFilter{States: inProgress, WorkerSeenBefore: at(10 * time.Second)}, []string{"b", "d"}},
		{"endpoint and deadline", store.JobFilter{Endpoint: "e1", DeadlineBefore: at(25 * time.Second)}, []string{"a", "b"}},
		{"no match", store.JobFilter{Endpoint: "e1", States: []spool.State{spool.StateCancelled}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			filterFixture(t, s)
			changed, err := s.UpdateJobs(t.Context(), store.UpdateJobsParams{Filter: tc.filter, Apply: mark})
			require.NoError(t, err)
			require.Equal(t, tc.want, nilIfEmpty(sortedIDs(changed)))
			for _, j := range changed {
				require.Equal(t, "marked", j.Error)
			}
			requireMarked(t, s, tc.want)
		})
	}
	t.Run("limit", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		filterFixture(t, s)
		changed, err := s.UpdateJobs(t.Context(), store.UpdateJobsParams{Filter: store.JobFilter{Endpoint: "e1", Limit: 2}, Apply: mark})
		require.NoError(t, err)
		require.Len(t, changed, 2)
		require.Subset(t, []string{"a", "b", "c"}, ids(changed))
		requireMarked(t, s, sortedIDs(changed))
	})
}

// requireMarked checks that exactly the jobs named (of the filter fixture) have been marked.
func requireMarked(t *testing.T, s store.Store, marked []string) {
	t.Helper()
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		want := ""
		if slices.Contains(marked, id) {
			want = "marked"
		}
		require.Equal(t, want, get(t, s, id).Error, "job %s", id)
	}
}

func testUpdateJobsSkipAndError(t *testing.T, open opener) {
	s := open(t)
	filterFixture(t, s)
	ctx := t.Context()

	changed, err := s.UpdateJobs(ctx, store.UpdateJobsParams{Filter: store.JobFilter{Endpoint: "e1"}, Apply: func(j *spool.Job) error {
		j.Error = "marked"
		if j.ID == "b" {
			return store.ErrSkip
		}
		return nil
	}})
	require.NoError(t, err)
	require.Equal(t, []string{"a", "c"}, sortedIDs(changed))
	requireMarked(t, s, []string{"a", "c"})

	// One failing job aborts the whole call, including the changes made to the others.
	changed, err = s.UpdateJobs(ctx, store.UpdateJobsParams{Apply: func(j *spool.Job) error {
		if j.ID == "d" {
			return errBoom
		}
		j.Error = "second"
		return nil
	}})
	require.ErrorIs(t, err, errBoom)
	require.Empty(t, changed)
	requireMarked(t, s, []string{"a", "c"})
}

// take is the Apply of a take: what the engine does, reduced to what the suite checks.
func take(worker string) func(*spool.Job) error {
	return func(j *spool.Job) error {
		j.State, j.WorkerID, j.TakenAt = spool.StateInProgress, worker, at(time.Hour/2)
		j.Attempt++
		return nil
	}
}

func testTakeJobsOrder(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	now := at(time.Minute)
	mk := func(id, ep string, low bool, queuedAt time.Duration) *spool.Job {
		return with(queued(id, ep), func(j *spool.Job) { j.Policy.LowPriority, j.QueuedAt = low, at(queuedAt) })
	}
	create(t, s,
		mk("low-late", "ep", true, 3*time.Second),
		mk("normal-late", "ep", false, 3*time.Second),
		mk("tie-z", "ep", false, 2*time.Second), // same QueuedAt as tie-a, inserted first
		mk("tie-a", "ep", false, 2*time.Second),
		mk("low-early", "ep", true, 0),
		with(mk("expired", "ep", false, 0), func(j *spool.Job) { j.Deadline = now }),                    // not after now
		with(mk("expired-before", "ep", false, 0), func(j *spool.Job) { j.Deadline = at(time.Second) }), // long gone
		with(mk("running", "ep", false, 0), func(j *spool.Job) { j.State = spool.StateInProgress }),
		mk("other-endpoint", "other", false, 0),
	)

	first, err := s.TakeJobs(ctx, store.TakeJobsParams{Endpoint: "ep", Max: 2, Now: now, Apply: take("w1")})
	require.NoError(t, err)
	require.Equal(t, []string{"tie-z", "tie-a"}, ids(first))
	for _, j := range first {
		require.Equal(t, spool.StateInProgress, j.State)
		require.Equal(t, "w1", j.WorkerID)
		require.Equal(t, 1, j.Attempt)
		requireStored(t, s, j)
	}

	rest, err := s.TakeJobs(ctx, store.TakeJobsParams{Endpoint: "ep", Max: 10, Now: now, Apply: take("w2")})
	require.NoError(t, err)
	require.Equal(t, []string{"normal-late", "low-early", "low-late"}, ids(rest))

	none, err := s.TakeJobs(ctx, store.TakeJobsParams{Endpoint: "ep", Max: 10, Now: now, Apply: take("w3")})
	require.NoError(t, err)
	require.Empty(t, none)

	for _, id := range []string{"expired", "expired-before", "other-endpoint"} {
		require.Equal(t, spool.StateInQueue, get(t, s, id).State, id)
	}
	require.Empty(t, get(t, s, "running").WorkerID)
}

func testTakeJobsSkipAndError(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	for i, id := range []string{"j1", "j2", "j3"} {
		create(t, s, with(queued(id, "ep"), func(j *spool.Job) { j.QueuedAt = at(time.Duration(i) * time.Second) }))
	}
	took, err := s.TakeJobs(ctx, store.TakeJobsParams{Endpoint: "ep", Max: 3, Now: t0, Apply: func(j *spool.Job) error {
		if j.ID == "j3" {
			return errBoom
		}
		return take("w")(j)
	}})
	require.ErrorIs(t, err, errBoom)
	require.Empty(t, took)
	for _, id := range []string{"j1", "j2", "j3"} {
		require.Equal(t, spool.StateInQueue, get(t, s, id).State, "%s changed by an aborted take", id)
	}

	took, err = s.TakeJobs(ctx, store.TakeJobsParams{Endpoint: "ep", Max: 3, Now: t0, Apply: func(j *spool.Job) error {
		if j.ID == "j2" {
			j.State = spool.StateFailed
			return store.ErrSkip
		}
		return take("w")(j)
	}})
	require.NoError(t, err)
	require.Equal(t, []string{"j1", "j3"}, ids(took))
	requireStored(t, s, with(queued("j2", "ep"), func(j *spool.Job) { j.QueuedAt = at(time.Second) }))
}

func testTakeJobsConcurrent(t *testing.T, open opener) {
	const jobs, takers = 120, 12
	s := open(t)
	createConcurrently(t, s, jobs, func(i int) *spool.Job { return queued(fmt.Sprintf("j%03d", i), "ep") })

	var (
		mu    sync.Mutex
		taken = map[string]int{}
		errs  []error
		wg    sync.WaitGroup
	)
	for w := range takers {
		wg.Go(func() {
			for {
				got, err := s.TakeJobs(t.Context(), store.TakeJobsParams{Endpoint: "ep", Max: 3, Now: t0, Apply: take(fmt.Sprint("w", w))})
				mu.Lock()
				errs = append(errs, err)
				for _, j := range got {
					taken[j.ID]++
				}
				mu.Unlock()
				if err != nil || len(got) == 0 {
					return
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	require.Len(t, taken, jobs)
	for id, n := range taken {
		require.Equal(t, 1, n, "job %s taken %d times", id, n)
	}
}

func testDeleteJobs(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	before := at(time.Hour)
	mk := func(id string, st spool.State, deadline time.Time) *spool.Job {
		return with(queued(id, "ep"), func(j *spool.Job) { j.State, j.Deadline = st, deadline })
	}
	create(t, s,
		mk("completed", spool.StateCompleted, t0),
		mk("failed-at-before", spool.StateFailed, before), // inclusive
		mk("cancelled", spool.StateCancelled, at(-time.Hour)),
		mk("timed-out", spool.StateTimedOut, at(30*time.Minute)),
		mk("timed-out-later", spool.StateTimedOut, before.Add(time.Millisecond)),
		mk("queued", spool.StateInQueue, t0),
		mk("running", spool.StateInProgress, t0),
	)
	for _, d := range []string{`1`, `2`} {
		_, err := s.AppendChunk(ctx, store.AppendChunkParams{ID: "completed", Check: noCheck, Data: json.RawMessage(d)})
		require.NoError(t, err)
	}

	n, err := s.DeleteJobs(ctx, store.DeleteJobsParams{Before: before, Limit: 3})
	require.NoError(t, err)
	require.Equal(t, 3, n)
	n, err = s.DeleteJobs(ctx, store.DeleteJobsParams{Before: before})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	n, err = s.DeleteJobs(ctx, store.DeleteJobsParams{Before: before})
	require.NoError(t, err)
	require.Zero(t, n)

	for _, id := range []string{"completed", "failed-at-before", "cancelled", "timed-out"} {
		_, err := s.GetJob(ctx, id)
		require.ErrorIs(t, err, store.ErrNotFound, id)
	}
	for _, id := range []string{"timed-out-later", "queued", "running"} {
		get(t, s, id)
	}

	// The chunks went with their job: a new job under the same id starts with none.
	create(t, s, queued("completed", "ep"))
	_, chunks, err := s.ReadChunks(ctx, store.ReadChunksParams{ID: "completed"})
	require.NoError(t, err)
	require.Empty(t, chunks)
}

func testCountJobs(t *testing.T, open opener) {
	s := open(t)
	mk := func(id, ep string, st spool.State, retries int) *spool.Job {
		return with(queued(id, ep), func(j *spool.Job) { j.State, j.Retries = st, retries })
	}
	create(t, s,
		mk("q1", "ep", spool.StateInQueue, 0),
		mk("q2", "ep", spool.StateInQueue, 1),
		mk("p1", "ep", spool.StateInProgress, 0),
		mk("c1", "ep", spool.StateCompleted, 0),
		mk("f1", "ep", spool.StateFailed, 2),
		mk("x1", "other", spool.StateInQueue, 3),
	)
	counts, err := s.CountJobs(t.Context(), "ep")
	require.NoError(t, err)
	require.Equal(t, store.JobCounts{
		ByState: map[spool.State]int{
			spool.StateInQueue: 2, spool.StateInProgress: 1, spool.StateCompleted: 1,
			spool.StateFailed: 1, spool.StateCancelled: 0, spool.StateTimedOut: 0,
		},
		Retried: 2,
	}, counts)

	counts, err = s.CountJobs(t.Context(), "nobody")
	require.NoError(t, err)
	require.Len(t, counts.ByState, len(spool.States))
	for _, st := range spool.States {
		require.Zero(t, counts.ByState[st], st)
	}
	require.Zero(t, counts.Retried)
}

func testCanceledContext(t *testing.T, open opener) {
	s := open(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := s.CreateJob(ctx, store.CreateJobParams{Job: queued("j", "ep")})
	require.ErrorIs(t, err, context.Canceled)
	_, err = s.GetJob(t.Context(), "j")
	require.ErrorIs(t, err, store.ErrNotFound, "a write refused for its context must not happen")
	_, err = s.GetJob(ctx, "j")
	require.ErrorIs(t, err, context.Canceled)
}

func testQueueStats(t *testing.T, open opener) {
	s := open(t)
	low := func(j *spool.Job) { j.Policy.LowPriority = true }
	queuedAt := func(d time.Duration) func(*spool.Job) { return func(j *spool.Job) { j.QueuedAt = at(d) } }
	create(t, s,
		with(queued("l1", "ep"), low, queuedAt(0)),
		with(queued("n2", "ep"), queuedAt(2*time.Second)),
		with(queued("n1", "ep"), queuedAt(time.Second)),
		with(queued("n3", "ep"), queuedAt(2*time.Second)), // same time as n2, inserted after it
		with(queued("l2", "ep"), low, queuedAt(time.Second)),
		with(queued("p1", "ep"), queuedAt(0), func(j *spool.Job) { j.State = spool.StateInProgress }),
		with(queued("p2", "ep"), queuedAt(0), func(j *spool.Job) { j.State = spool.StateInProgress }),
		with(queued("p3", "ep"), low, func(j *spool.Job) { j.State = spool.StateInProgress }),
		with(queued("c1", "ep"), func(j *spool.Job) { j.State = spool.StateCompleted }),
		with(queued("x1", "other"), queuedAt(0)),
	)
	qs, err := s.QueueStats(t.Context(), store.QueueStatsParams{Endpoint: "ep"})
	require.NoError(t, err)
	require.Equal(t, 3, qs.Normal)
	require.Equal(t, 2, qs.Low)
	require.Equal(t, 2, qs.Running)
	require.True(t, qs.OldestNormal.Equal(at(time.Second)), qs.OldestNormal)
	require.Zero(t, qs.Position)

	// Positions follow TakeJobs order: normal first, FIFO, ties by insertion.
	for id, want := range map[string]int{"n1": 1, "n2": 2, "n3": 3, "l1": 4, "l2": 5, "p1": 0, "x1": 0, "none": 0} {
		qs, err := s.QueueStats(t.Context(), store.QueueStatsParams{Endpoint: "ep", JobID: id})
		require.NoError(t, err)
		require.Equal(t, want, qs.Position, id)
	}

	qs, err = s.QueueStats(t.Context(), store.QueueStatsParams{Endpoint: "nobody"})
	require.NoError(t, err)
	require.Equal(t, store.QueueStats{}, qs)
}
