package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// full is a job with every field set to something other than its zero value.
func full(id string) *spool.Job {
	return &spool.Job{
		ID:       id,
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
		ExpiresAt:      at(4 * time.Millisecond),
		TimeoutAt:      at(5 * time.Millisecond),
		DeleteAt:       at(6 * time.Millisecond),
		WorkerID:       "worker-1",
		Attempt:        3,
		Retries:        2,
		Output:         json.RawMessage(`{"text":"héllo"}`),
		Progress:       json.RawMessage(`{"done": 0.5}`),
		Error:          "some error",
		StopPod:        true,
		EndedByWorker:  true,
		StopPending:    true,
		RetentionMs:    12_345,
		StreamCount:    7,
		StreamCursor:   5,
	}
}

func testJobRoundTrip(t *testing.T, open opener) {
	s := open(t)
	// Zero values everywhere: nil RawMessages and zero times must come back as such.
	bare := &spool.Job{ID: "job-bare", Endpoint: "ep", State: spool.StateInQueue}
	// Empty but non-nil RawMessages are not nil.
	empty := with(queued("job-empty", "ep"), func(j *spool.Job) {
		j.Input, j.S3ConfigSealed, j.Output, j.Progress = json.RawMessage{}, []byte{}, json.RawMessage{}, json.RawMessage{}
	})
	nullJSON := with(queued("job-null", "ep"), func(j *spool.Job) { j.Input, j.Output = json.RawMessage("null"), nil })

	for _, j := range []*spool.Job{full("job-full"), bare, empty, nullJSON} {
		create(t, s, j)
		requireStored(t, s, j)
	}
	require.Nil(t, get(t, s, "job-bare").Output)
	require.Nil(t, get(t, s, "job-bare").Input)
	require.NotNil(t, get(t, s, "job-empty").Output)
	require.NotNil(t, get(t, s, "job-empty").Input)
	require.True(t, get(t, s, "job-bare").TakenAt.IsZero())
}

// testPayloads: each read loads the payloads it names and the whole head, and nothing more.
func testPayloads(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	j := full("j")
	create(t, s, j)
	for _, tc := range []struct {
		name string
		with store.Payloads
		want func(*spool.Job)
	}{
		{"head", 0, func(*spool.Job) {}},
		{"output", store.PayloadOutput, func(w *spool.Job) { w.Output, w.Progress = j.Output, j.Progress }},
		{"input", store.PayloadInput, func(w *spool.Job) { w.Input = j.Input }},
		{"s3Config", store.PayloadS3Config, func(w *spool.Job) { w.S3ConfigSealed = j.S3ConfigSealed }},
		{"all", store.AllPayloads, func(w *spool.Job) { *w = *j.Clone() }},
	} {
		want := with(head(j), tc.want)
		got, err := s.GetJob(ctx, store.GetJobParams{ID: "j", With: tc.with})
		require.NoError(t, err, tc.name)
		requireJob(t, want, got)
		listed, err := s.ListJobs(ctx, store.ListJobsParams{With: tc.with})
		require.NoError(t, err, tc.name)
		requireJobs(t, []*spool.Job{want}, listed)
		found, err := s.FindJobs(ctx, store.JobFilter{IDs: []string{"j"}, With: tc.with})
		require.NoError(t, err, tc.name)
		requireJobs(t, []*spool.Job{want}, found)
	}
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

	_, err := s.GetJob(ctx, store.GetJobParams{ID: "missing"})
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.AppendChunk(ctx, store.AppendChunkParams{ID: "missing", Expect: store.Expect{State: spool.StateInQueue}, Data: json.RawMessage(`1`)})
	require.ErrorIs(t, err, store.ErrNotFound)
	_, _, err = s.ReadChunks(ctx, store.ReadChunksParams{ID: "missing"})
	require.ErrorIs(t, err, store.ErrNotFound)
	_, _, err = s.ReadChunks(ctx, store.ReadChunksParams{ID: "missing", Drain: true})
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.GetEndpoint(ctx, "missing")
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorIs(t, s.DeleteEndpoint(ctx, "missing"), store.ErrNotFound)
	require.ErrorIs(t, s.DeleteKey(ctx, "missing"), store.ErrNotFound)

	// An update of a missing job changes nothing and is no error: its expectation cannot hold.
	changed, err := s.UpdateJobs(ctx, store.UpdateJobsParams{Now: t0, Updates: []store.JobUpdate{{
		ID: "missing", Expect: store.Expect{State: spool.StateInQueue}, Change: store.JobChange{Set: store.SetError, Error: "x"},
	}}})
	require.NoError(t, err)
	require.Empty(t, changed)
	found, err := s.FindJobs(ctx, store.JobFilter{IDs: []string{"missing"}})
	require.NoError(t, err)
	require.Empty(t, found)
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

	jobs, err := s.ListJobs(ctx, store.ListJobsParams{Endpoint: "b", With: store.AllPayloads})
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

// filterFixture is the set of jobs FindJobs selects from.
//
//	job  endpoint state        worker  expires  times out  stopPending
//	a    e1       IN_QUEUE     -       +10s
//	b    e1       IN_PROGRESS  w1               +20s
//	c    e1       IN_PROGRESS  w2               +30s       yes
//	d    e2       IN_PROGRESS  w3               +40s
//	e    e2       COMPLETED    w1                          yes
func filterFixture(t *testing.T, s store.Store) {
	t.Helper()
	mk := func(id, ep string, st spool.State, worker string, expires, timeout time.Duration, stop bool) *spool.Job {
		return with(queued(id, ep), func(j *spool.Job) {
			j.State, j.WorkerID, j.StopPending = st, worker, stop
			j.ExpiresAt, j.TimeoutAt = time.Time{}, time.Time{}
			if expires > 0 {
				j.ExpiresAt = at(expires)
			}
			if timeout > 0 {
				j.TimeoutAt = at(timeout)
			}
		})
	}
	create(t, s,
		mk("a", "e1", spool.StateInQueue, "", 10*time.Second, 0, false),
		mk("b", "e1", spool.StateInProgress, "w1", 0, 20*time.Second, false),
		mk("c", "e1", spool.StateInProgress, "w2", 0, 30*time.Second, true),
		mk("d", "e2", spool.StateInProgress, "w3", 0, 40*time.Second, false),
		mk("e", "e2", spool.StateCompleted, "w1", 0, 0, true),
	)
}

func testFindJobs(t *testing.T, open opener) {
	s := open(t)
	filterFixture(t, s)
	inQueue, inProgress := []spool.State{spool.StateInQueue}, []spool.State{spool.StateInProgress}
	for _, tc := range []struct {
		name   string
		filter store.JobFilter
		want   []string
	}{
		{"none", store.JobFilter{}, []string{"a", "b", "c", "d", "e"}},
		{"ids", store.JobFilter{IDs: []string{"e", "b", "zz"}}, []string{"b", "e"}},
		{"endpoint", store.JobFilter{Endpoint: "e2"}, []string{"d", "e"}},
		{"state", store.JobFilter{States: inProgress}, []string{"b", "c", "d"}},
		{"states", store.JobFilter{States: []spool.State{spool.StateInQueue, spool.StateCompleted}}, []string{"a", "e"}},
		{"worker", store.JobFilter{WorkerID: "w1"}, []string{"b", "e"}},
		{"stop pending", store.JobFilter{StopPending: true}, []string{"c", "e"}},
		{"worker and stop pending", store.JobFilter{WorkerID: "w1", StopPending: true}, []string{"e"}},
		{"expired, inclusive", store.JobFilter{States: inQueue, ExpiresBy: at(10 * time.Second)}, []string{"a"}},
		{"not expired yet", store.JobFilter{States: inQueue, ExpiresBy: at(9 * time.Second)}, nil},
		{"timed out, inclusive", store.JobFilter{States: inProgress, TimesOutBy: at(30 * time.Second)}, []string{"b", "c"}},
		{"endpoint and timed out", store.JobFilter{Endpoint: "e2", States: inProgress, TimesOutBy: at(time.Minute)}, []string{"d"}},
		{"no match", store.JobFilter{Endpoint: "e1", States: []spool.State{spool.StateCancelled}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			found, err := s.FindJobs(t.Context(), tc.filter)
			require.NoError(t, err)
			require.Equal(t, tc.want, nilIfEmpty(sortedIDs(found)))
			for _, j := range found {
				require.Nil(t, j.Input, "heads only")
			}
		})
	}
	found, err := s.FindJobs(t.Context(), store.JobFilter{Endpoint: "e1", Limit: 2})
	require.NoError(t, err)
	require.Len(t, found, 2)
	require.Subset(t, []string{"a", "b", "c"}, ids(found))
}

// update applies one targeted write and returns the job it changed, nil when it changed none.
func update(t *testing.T, s store.Store, id string, e store.Expect, c store.JobChange) *spool.Job {
	t.Helper()
	changed, err := s.UpdateJobs(t.Context(), store.UpdateJobsParams{Now: t0, Updates: []store.JobUpdate{{ID: id, Expect: e, Change: c}}})
	require.NoError(t, err)
	require.LessOrEqual(t, len(changed), 1)
	if len(changed) == 0 {
		return nil
	}
	return changed[0]
}

// testUpdateJobsFields: every settable field is written as given, and the write returns the
// job's head as written.
func testUpdateJobsFields(t *testing.T, open opener) {
	s := open(t)
	job := with(queued("j", "ep"), func(j *spool.Job) { j.S3ConfigSealed, j.HadS3Config = []byte{1, 2, 3}, true })
	create(t, s, job)
	c := store.JobChange{
		Set: store.SetState | store.SetWorkerID | store.SetOutput | store.SetProgress | store.SetError |
			store.SetS3Config | store.SetHadS3Config | store.SetStopPod | store.SetEndedByWorker |
			store.SetStopPending | store.SetRetention | store.SetQueuedAt | store.SetTakenAt | store.SetFinishedAt,
		State: spool.StateCompleted, WorkerID: "w", Output: json.RawMessage(`"done"`), Progress: json.RawMessage(`0.9`),
		Error: "e", S3ConfigSealed: nil, HadS3Config: false, StopPod: true, EndedByWorker: true, StopPending: true,
		RetentionMs: 777, QueuedAt: at(time.Second), TakenAt: at(2 * time.Second), FinishedAt: at(3 * time.Second),
	}
	want := with(job.Clone(), func(j *spool.Job) {
		j.State, j.WorkerID, j.Output, j.Progress, j.Error = spool.StateCompleted, "w", c.Output, c.Progress, "e"
		j.S3ConfigSealed, j.HadS3Config, j.StopPod, j.EndedByWorker, j.StopPending = nil, false, true, true, true
		j.RetentionMs, j.QueuedAt, j.TakenAt, j.FinishedAt = 777, at(time.Second), at(2*time.Second), at(3*time.Second)
	})
	got := update(t, s, "j", store.Expect{State: spool.StateInQueue}, c)
	require.NotNil(t, got)
	requireJob(t, head(want), got)
	requireStored(t, s, want)
}

// testUpdateJobsOnlyNamedFields: a change writes the fields it names and leaves every other one
// (payloads included) as it was.
func testUpdateJobsOnlyNamedFields(t *testing.T, open opener) {
	s := open(t)
	j := full("j")
	create(t, s, j)
	for _, tc := range []struct {
		change store.JobChange
		mutate func(*spool.Job)
	}{
		{store.JobChange{Set: store.SetStopPending, StopPending: false}, func(j *spool.Job) { j.StopPending = false }},
		{store.JobChange{Set: store.SetProgress, Progress: json.RawMessage(`{"p":2}`)}, func(j *spool.Job) { j.Progress = json.RawMessage(`{"p":2}`) }},
		{store.JobChange{Set: store.SetOutput | store.SetError, Output: nil, Error: ""}, func(j *spool.Job) { j.Output, j.Error = nil, "" }},
		{store.JobChange{Set: store.SetWorkerID, WorkerID: "other"}, func(j *spool.Job) { j.WorkerID = "other" }},
		{store.JobChange{Set: store.SetStopPod, StopPod: false}, func(j *spool.Job) { j.StopPod = false }},
	} {
		require.NotNil(t, update(t, s, "j", store.Expect{State: spool.StateInProgress}, tc.change))
		tc.mutate(j)
		requireStored(t, s, j)
	}
}

// testUpdateJobsDeadlines: the store computes the deadlines from the write's Now and the job's
// own durations, and counts attempts and retries.
func testUpdateJobsDeadlines(t *testing.T, open opener) {
	s := open(t)
	now := at(time.Hour)
	j := with(queued("j", "ep"), func(j *spool.Job) {
		j.Policy = spool.Policy{ExecutionTimeoutMs: 60_000, TTLMs: 30_000}
		j.RetentionMs, j.Attempt, j.Retries = 5_000, 4, 1
	})
	create(t, s, j)
	write := func(c store.JobChange) *spool.Job {
		changed, err := s.UpdateJobs(t.Context(), store.UpdateJobsParams{Now: now, Updates: []store.JobUpdate{
			{ID: "j", Expect: store.Expect{State: spool.StateInQueue}, Change: c},
		}})
		require.NoError(t, err)
		require.Len(t, changed, 1)
		return changed[0]
	}
	got := write(store.JobChange{Set: store.SetExpiresAt | store.SetTimeoutAt | store.SetDeleteAt | store.IncAttempt | store.IncRetries})
	require.True(t, got.ExpiresAt.Equal(now.Add(30*time.Second)), got.ExpiresAt)
	require.True(t, got.TimeoutAt.Equal(now.Add(time.Minute)), got.TimeoutAt)
	require.True(t, got.DeleteAt.Equal(now.Add(5*time.Second)), got.DeleteAt)
	require.Equal(t, 5, got.Attempt)
	require.Equal(t, 2, got.Retries)
	requireStored(t, s, with(j, func(j *spool.Job) {
		j.ExpiresAt, j.TimeoutAt, j.DeleteAt = got.ExpiresAt, got.TimeoutAt, got.DeleteAt
		j.Attempt, j.Retries = 5, 2
	}))

	// DeleteAt counts from the retention the same change sets.
	got = write(store.JobChange{Set: store.SetRetention | store.SetDeleteAt, RetentionMs: 9_000})
	require.Equal(t, int64(9_000), got.RetentionMs)
	require.True(t, got.DeleteAt.Equal(now.Add(9*time.Second)), got.DeleteAt)
}

// testUpdateJobsExpect: a write applies only to a job that meets its expectation, and changes
// nothing otherwise.
func testUpdateJobsExpect(t *testing.T, open opener) {
	running := with(queued("j", "ep"), func(j *spool.Job) {
		j.State, j.WorkerID, j.Attempt, j.Retries, j.StopPending = spool.StateInProgress, "w1", 2, 1, true
	})
	running2 := store.Expect{State: spool.StateInProgress}
	for _, tc := range []struct {
		name   string
		expect store.Expect
		ok     bool
	}{
		{"state", store.Expect{State: spool.StateInProgress}, true},
		{"other state", store.Expect{State: spool.StateInQueue}, false},
		{"endpoint", store.Expect{State: spool.StateInProgress, Endpoint: "ep"}, true},
		{"other endpoint", store.Expect{State: spool.StateInProgress, Endpoint: "other"}, false},
		{"worker", store.Expect{State: spool.StateInProgress, WorkerID: "w1"}, true},
		{"other worker", store.Expect{State: spool.StateInProgress, WorkerID: "w2"}, false},
		{"attempt", store.Expect{State: spool.StateInProgress, WorkerID: "w1", Attempt: 2}, true},
		{"older attempt", store.Expect{State: spool.StateInProgress, WorkerID: "w1", Attempt: 1}, false},
		{"exactly", store.Exactly(running), true},
		{"other retries", with2(store.Exactly(running), func(e *store.Expect) { e.Retries = 0 }), false},
		{"exactly attempt 0", with2(store.Exactly(running), func(e *store.Expect) { e.Attempt = 0 }), false},
		{"stop pending", with2(running2, func(e *store.Expect) { e.StopPending = store.FlagSet }), true},
		{"no stop pending", with2(running2, func(e *store.Expect) { e.StopPending = store.FlagClear }), false},
		{"worker seen long ago", with2(running2, func(e *store.Expect) { e.WorkerSeenBefore = at(10 * time.Second) }), true},
		{"worker seen since", with2(running2, func(e *store.Expect) { e.WorkerSeenBefore = at(4 * time.Second) }), false},
		{"worker seen at the cutoff", with2(running2, func(e *store.Expect) { e.WorkerSeenBefore = at(5 * time.Second) }), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			create(t, s, running.Clone())
			require.NoError(t, s.TouchWorker(t.Context(), store.TouchWorkerParams{ID: "w1", Endpoint: "ep", Now: at(5 * time.Second)}))
			got := update(t, s, "j", tc.expect, store.JobChange{Set: store.SetError, Error: "marked"})
			if !tc.ok {
				require.Nil(t, got)
				requireStored(t, s, running)
				return
			}
			want := with(running.Clone(), func(j *spool.Job) { j.Error = "marked" })
			requireJob(t, head(want), got)
			requireStored(t, s, want)
		})
	}
}

func with2[T any](v T, fn func(*T)) T {
	fn(&v)
	return v
}

// testUpdateJobsBatch: the updates of one call apply in order, each on its own expectation, and
// come back in that order; an invalid change fails the whole call with nothing changed.
func testUpdateJobsBatch(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	create(t, s, queued("a", "ep"), queued("b", "ep"), queued("c", "ep"))
	mark := func(id, v string) store.JobUpdate {
		return store.JobUpdate{ID: id, Expect: store.Expect{State: spool.StateInQueue, Endpoint: "ep"}, Change: store.JobChange{Set: store.SetError, Error: v}}
	}
	cancel := store.JobUpdate{ID: "b", Expect: store.Expect{State: spool.StateInQueue}, Change: store.JobChange{Set: store.SetState, State: spool.StateCancelled}}
	changed, err := s.UpdateJobs(ctx, store.UpdateJobsParams{Now: t0, Updates: []store.JobUpdate{
		mark("c", "1"), cancel, mark("b", "2"), mark("missing", "3"), mark("a", "4"),
	}})
	require.NoError(t, err)
	require.Equal(t, []string{"c", "b", "a"}, ids(changed), "b's second update expected it queued: it was cancelled by the first")
	require.Equal(t, "1", get(t, s, "c").Error)
	require.Equal(t, "", get(t, s, "b").Error)
	require.Equal(t, spool.StateCancelled, get(t, s, "b").State)
	require.Equal(t, "4", get(t, s, "a").Error)

	_, err = s.UpdateJobs(ctx, store.UpdateJobsParams{Now: t0, Updates: []store.JobUpdate{
		mark("a", "5"), {ID: "c", Expect: store.Expect{State: spool.StateInQueue}},
	}})
	require.Error(t, err, "a change that sets nothing")
	require.Equal(t, "4", get(t, s, "a").Error, "an update of a failed call changes nothing")
}

// testSealedS3Config: the sealed s3Config comes back byte for byte from every read and from a
// claim, and HadS3Config outlives its erasure.
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

	taken, err := s.ClaimJobs(ctx, store.ClaimJobsParams{Endpoint: "ep", Max: 1, Now: t0, Change: claim("w")})
	require.NoError(t, err)
	require.Equal(t, []string{"a"}, ids(taken))
	require.Equal(t, sealed, taken[0].S3ConfigSealed)

	require.NotNil(t, update(t, s, "a", store.Expect{State: spool.StateInProgress, WorkerID: "w"},
		store.JobChange{Set: store.SetState | store.SetS3Config, State: spool.StateFailed}))
	got := get(t, s, "a")
	require.Nil(t, got.S3ConfigSealed, "erased")
	require.True(t, got.HadS3Config, "remembered")
}

// claim is the change of a claim: what the engine does, reduced to what the suite checks.
func claim(worker string) store.JobChange {
	return store.JobChange{
		Set:   store.SetState | store.SetWorkerID | store.IncAttempt | store.SetTakenAt | store.SetTimeoutAt,
		State: spool.StateInProgress, WorkerID: worker, TakenAt: at(time.Hour / 2),
	}
}

func testClaimJobsOrder(t *testing.T, open opener) {
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
		with(mk("expired", "ep", false, 0), func(j *spool.Job) { j.ExpiresAt = now }),                    // not after now
		with(mk("expired-before", "ep", false, 0), func(j *spool.Job) { j.ExpiresAt = at(time.Second) }), // long gone
		with(mk("running", "ep", false, 0), func(j *spool.Job) { j.State = spool.StateInProgress }),
		mk("other-endpoint", "other", false, 0),
	)

	first, err := s.ClaimJobs(ctx, store.ClaimJobsParams{Endpoint: "ep", Max: 2, Now: now, Change: claim("w1")})
	require.NoError(t, err)
	require.Equal(t, []string{"tie-z", "tie-a"}, ids(first))

	rest, err := s.ClaimJobs(ctx, store.ClaimJobsParams{Endpoint: "ep", Max: 10, Now: now, Change: claim("w2")})
	require.NoError(t, err)
	require.Equal(t, []string{"normal-late", "low-early", "low-late"}, ids(rest))

	none, err := s.ClaimJobs(ctx, store.ClaimJobsParams{Endpoint: "ep", Max: 10, Now: now, Change: claim("w3")})
	require.NoError(t, err)
	require.Empty(t, none)
	none, err = s.ClaimJobs(ctx, store.ClaimJobsParams{Endpoint: "other", Max: 0, Now: now, Change: claim("w3")})
	require.NoError(t, err)
	require.Empty(t, none, "Max 0 claims nothing")

	for _, id := range []string{"expired", "expired-before", "other-endpoint"} {
		require.Equal(t, spool.StateInQueue, get(t, s, id).State, id)
	}
	require.Empty(t, get(t, s, "running").WorkerID)
}

// testClaimJobsChange: a claim writes its change, computes the deadline from Now, returns the jobs
// as written with their input, and refuses a change that would leave them queued.
func testClaimJobsChange(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	j := with(queued("j", "ep"), func(j *spool.Job) {
		j.Policy.ExecutionTimeoutMs, j.Attempt, j.Progress = 90_000, 1, json.RawMessage(`"old"`)
		j.S3ConfigSealed = []byte{9}
	})
	create(t, s, j)
	now := at(time.Minute)
	c := claim("w")
	c.Set |= store.SetProgress
	_, err := s.ClaimJobs(ctx, store.ClaimJobsParams{Endpoint: "ep", Max: 1, Now: now, Change: store.JobChange{Set: store.SetError}})
	require.Error(t, err)
	_, err = s.ClaimJobs(ctx, store.ClaimJobsParams{Endpoint: "ep", Max: 1, Now: now,
		Change: store.JobChange{Set: store.SetState, State: spool.StateInQueue}})
	require.Error(t, err)
	requireStored(t, s, j)

	got, err := s.ClaimJobs(ctx, store.ClaimJobsParams{Endpoint: "ep", Max: 1, Now: now, Change: c})
	require.NoError(t, err)
	want := with(j.Clone(), func(j *spool.Job) {
		j.State, j.WorkerID, j.Attempt, j.TakenAt = spool.StateInProgress, "w", 2, at(time.Hour/2)
		j.TimeoutAt, j.Progress = now.Add(90*time.Second), nil
	})
	requireJobs(t, []*spool.Job{with(head(want), func(w *spool.Job) { w.Input, w.S3ConfigSealed = j.Input, j.S3ConfigSealed })}, got)
	requireStored(t, s, want)
}

// testClaimJobsConcurrent: takers racing over one queue (both priorities, queued_at ties) with
// claims of 1 to 4 jobs get every job, each once, and leave the queue empty.
func testClaimJobsConcurrent(t *testing.T, open opener) {
	const jobs, takers = 400, 16
	s := open(t)
	createConcurrently(t, s, jobs, func(i int) *spool.Job {
		return with(queued(fmt.Sprintf("j%03d", i), "ep"), func(j *spool.Job) {
			j.QueuedAt = t0.Add(time.Duration(i%97) * time.Millisecond)
			j.Policy.LowPriority = i%5 == 0
		})
	})

	var (
		mu    sync.Mutex
		taken = map[string]int{}
		errs  []error
		wg    sync.WaitGroup
	)
	for w := range takers {
		wg.Go(func() {
			for {
				got, err := s.ClaimJobs(t.Context(), store.ClaimJobsParams{Endpoint: "ep", Max: 1 + w%4, Now: t0.Add(time.Second), Change: claim(fmt.Sprint("w", w))})
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
	d, err := s.QueueDepth(t.Context(), "ep")
	require.NoError(t, err)
	require.Zero(t, d.Normal+d.Low)
}

func testDeleteJobs(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	before := at(time.Hour)
	mk := func(id string, st spool.State, deleteAt time.Time) *spool.Job {
		return with(queued(id, "ep"), func(j *spool.Job) { j.State, j.DeleteAt = st, deleteAt })
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
	appendChunks(t, s, "completed", `1`, `2`)

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
		_, err := s.GetJob(ctx, store.GetJobParams{ID: id})
		require.ErrorIs(t, err, store.ErrNotFound, id)
	}
	for _, id := range []string{"timed-out-later", "queued", "running"} {
		get(t, s, id)
	}

	// The chunks and the input went with their job: a new job under the same id starts with none.
	create(t, s, with(queued("completed", "ep"), func(j *spool.Job) { j.Input = nil }))
	_, chunks, err := s.ReadChunks(ctx, store.ReadChunksParams{ID: "completed"})
	require.NoError(t, err)
	require.Empty(t, chunks)
	require.Nil(t, get(t, s, "completed").Input)
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
	require.Equal(t, spool.JobCounts{
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
	_, err = s.GetJob(t.Context(), store.GetJobParams{ID: "j"})
	require.ErrorIs(t, err, store.ErrNotFound, "a write refused for its context must not happen")
	_, err = s.GetJob(ctx, store.GetJobParams{ID: "j"})
	require.ErrorIs(t, err, context.Canceled)
}

// queueFixture is an endpoint's queue: normal and low-priority jobs, running ones, a finished one
// and a job of another endpoint.
func queueFixture(t *testing.T, s store.Store) {
	t.Helper()
	low := func(j *spool.Job) { j.Policy.LowPriority = true }
	queuedAt := func(d time.Duration) func(*spool.Job) { return func(j *spool.Job) { j.QueuedAt = at(d) } }
	running := func(j *spool.Job) { j.State = spool.StateInProgress }
	create(t, s,
		with(queued("l1", "ep"), low, queuedAt(0)),
		with(queued("n2", "ep"), queuedAt(2*time.Second)),
		with(queued("n1", "ep"), queuedAt(time.Second)),
		with(queued("n3", "ep"), queuedAt(2*time.Second)), // same time as n2, inserted after it
		with(queued("l2", "ep"), low, queuedAt(time.Second)),
		with(queued("p1", "ep"), queuedAt(0), running),
		with(queued("p2", "ep"), queuedAt(0), running),
		with(queued("p3", "ep"), low, running),
		with(queued("c1", "ep"), func(j *spool.Job) { j.State = spool.StateCompleted }),
		with(queued("x1", "other"), queuedAt(0)),
	)
}

func testQueueDepth(t *testing.T, open opener) {
	s := open(t)
	queueFixture(t, s)
	d, err := s.QueueDepth(t.Context(), "ep")
	require.NoError(t, err)
	require.Equal(t, 3, d.Normal)
	require.Equal(t, 2, d.Low)
	require.Equal(t, 2, d.Running, "normal-priority jobs only")
	require.True(t, d.OldestNormal.Equal(at(time.Second)), d.OldestNormal)

	d, err = s.QueueDepth(t.Context(), "nobody")
	require.NoError(t, err)
	require.Equal(t, spool.QueueDepth{}, d)
}

func testCountQueued(t *testing.T, open opener) {
	s := open(t)
	queueFixture(t, s)
	for limit, want := range map[int]int{100: 5, 5: 5, 4: 4, 1: 1, 0: 0, -1: 0} {
		n, err := s.CountQueued(t.Context(), store.CountQueuedParams{Endpoint: "ep", Limit: limit})
		require.NoError(t, err)
		require.Equal(t, want, n, "limit %d: both priorities, neither running nor ended jobs", limit)
	}
	n, err := s.CountQueued(t.Context(), store.CountQueuedParams{Endpoint: "nobody", Limit: 10})
	require.NoError(t, err)
	require.Zero(t, n)
}

func testQueuePosition(t *testing.T, open opener) {
	s := open(t)
	queueFixture(t, s)
	// Positions follow ClaimJobs order: normal first, FIFO, ties by insertion.
	for id, want := range map[string]int{"n1": 1, "n2": 2, "n3": 3, "l1": 4, "l2": 5, "p1": 0, "c1": 0, "x1": 0, "none": 0} {
		pos, err := s.QueuePosition(t.Context(), store.QueuePositionParams{Endpoint: "ep", JobID: id})
		require.NoError(t, err)
		require.Equal(t, want, pos, id)
	}
}

// testHeldJobs: the running jobs as (worker, job, attempt, retries, taken at), by endpoint, by
// worker, and those of workers not seen since a time (or never).
func testHeldJobs(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	mk := func(id, ep string, st spool.State, worker string, attempt int, taken time.Duration) *spool.Job {
		return with(queued(id, ep), func(j *spool.Job) {
			j.State, j.WorkerID, j.Attempt, j.Retries, j.TakenAt = st, worker, attempt, attempt-1, at(taken)
		})
	}
	create(t, s,
		mk("b2", "e1", spool.StateInProgress, "w1", 1, 2*time.Second),
		mk("b1", "e1", spool.StateInProgress, "w1", 3, time.Second),
		mk("c", "e1", spool.StateInProgress, "w2", 1, 0),
		mk("d", "e2", spool.StateInProgress, "w3", 2, 0),
		mk("e", "e2", spool.StateCompleted, "w1", 1, 0),
		mk("f", "e1", spool.StateInQueue, "", 0, 0),
	)
	require.NoError(t, s.TouchWorker(ctx, store.TouchWorkerParams{ID: "w1", Endpoint: "e1", Now: at(5 * time.Second)}))
	require.NoError(t, s.TouchWorker(ctx, store.TouchWorkerParams{ID: "w2", Endpoint: "e1", Now: at(15 * time.Second)}))
	h := func(worker, job string, attempt int, taken time.Duration) store.HeldJob {
		return store.HeldJob{WorkerID: worker, JobID: job, Attempt: attempt, Retries: attempt - 1, TakenAt: at(taken).UTC()}
	}
	b1, b2, c, d := h("w1", "b1", 3, time.Second), h("w1", "b2", 1, 2*time.Second), h("w2", "c", 1, 0), h("w3", "d", 2, 0)
	for _, tc := range []struct {
		name string
		p    store.HeldJobsParams
		want []store.HeldJob
	}{
		{"all", store.HeldJobsParams{}, []store.HeldJob{b1, b2, c, d}},
		{"endpoint", store.HeldJobsParams{Endpoint: "e1"}, []store.HeldJob{b1, b2, c}},
		{"worker", store.HeldJobsParams{WorkerID: "w1"}, []store.HeldJob{b1, b2}},
		{"worker of an endpoint", store.HeldJobsParams{Endpoint: "e2", WorkerID: "w1"}, nil},
		{"seen before", store.HeldJobsParams{SeenBefore: at(10 * time.Second)}, []store.HeldJob{b1, b2, d}},
		{"seen before, inclusive", store.HeldJobsParams{SeenBefore: at(15 * time.Second)}, []store.HeldJob{b1, b2, c, d}},
		{"lost on an endpoint", store.HeldJobsParams{Endpoint: "e2", SeenBefore: at(10 * time.Second)}, []store.HeldJob{d}},
		{"none", store.HeldJobsParams{Endpoint: "nobody"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.HeldJobs(ctx, tc.p)
			require.NoError(t, err)
			for i := range got {
				got[i].TakenAt = got[i].TakenAt.UTC()
			}
			if tc.want == nil {
				require.Empty(t, got)
				return
			}
			require.Equal(t, tc.want, got)
		})
	}
}
