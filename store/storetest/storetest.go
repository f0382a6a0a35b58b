// Package storetest is the conformance suite of store.Store: every backend runs it, so that the
// engine can rely on the documented behaviour of the interface and on nothing else.
//
// A backend's test calls Run with a constructor of fresh, empty stores:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store {
//			s, err := mystore.Open(t.Context(), ...)
//			require.NoError(t, err)
//			return s
//		})
//	}
//
// Run closes every store it gets at the end of the subtest that asked for it. Behaviour that only
// a concrete backend can show (durability across a reopen, its own options) is tested next to that
// backend instead.
package storetest

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// opener returns a fresh, empty store that is closed when t ends.
type opener func(t *testing.T) store.Store

// Run runs the conformance suite, each case in parallel on its own store(s) from newStore.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	open := func(t *testing.T) store.Store {
		t.Helper()
		s := newStore(t)
		require.NotNil(t, s)
		t.Cleanup(func() { require.NoError(t, s.Close()) })
		return s
	}
	cases := []struct {
		name string
		run  func(t *testing.T, open opener)
	}{
		{"JobRoundTrip", testJobRoundTrip},
		{"JobCopies", testJobCopies},
		{"CreateJobConflict", testCreateJobConflict},
		{"NotFound", testNotFound},
		{"ListJobs", testListJobs},
		{"ListJobsDefaultLimit", testListJobsDefaultLimit},
		{"UpdateJob", testUpdateJob},
		{"UpdateJobApplyError", testUpdateJobApplyError},
		{"SealedS3Config", testSealedS3Config},
		{"UpdateJobSkip", testUpdateJobSkip},
		{"UpdateJobsFilter", testUpdateJobsFilter},
		{"UpdateJobsSkipAndError", testUpdateJobsSkipAndError},
		{"TakeJobsOrder", testTakeJobsOrder},
		{"TakeJobsSkipAndError", testTakeJobsSkipAndError},
		{"TakeJobsConcurrent", testTakeJobsConcurrent},
		{"DeleteJobs", testDeleteJobs},
		{"CountJobs", testCountJobs},
		{"QueueStats", testQueueStats},
		{"AppendChunk", testAppendChunk},
		{"ReadChunks", testReadChunks},
		{"DrainChunks", testDrainChunks},
		{"DrainChunksConcurrent", testDrainChunksConcurrent},
		{"Workers", testWorkers},
		{"DeleteWorkers", testDeleteWorkers},
		{"Endpoints", testEndpoints},
		{"Keys", testKeys},
		{"OutboxWithJob", testOutboxWithJob},
		{"CreateDelivery", testCreateDelivery},
		{"ClaimDeliveries", testClaimDeliveries},
		{"RecordAttempt", testRecordAttempt},
		{"NextDeliveryDue", testNextDeliveryDue},
		{"DeleteDeliveries", testDeleteDeliveries},
		{"CanceledContext", testCanceledContext},
		{"Close", testClose},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t, open)
		})
	}
}

// t0 is the suite's fixed "now": tests never read the wall clock.
var t0 = time.UnixMilli(1_700_000_000_000)

// at returns t0 + d.
func at(d time.Duration) time.Time { return t0.Add(d) }

var errBoom = errors.New("boom")

// queued returns a typical job waiting in endpoint's queue, created and queued at t0, expiring an
// hour later.
func queued(id, endpoint string) *spool.Job {
	return &spool.Job{
		ID:        id,
		Endpoint:  endpoint,
		State:     spool.StateInQueue,
		Input:     json.RawMessage(`{"prompt":"hi"}`),
		Policy:    spool.Policy{ExecutionTimeoutMs: spool.DefaultExecutionTimeoutMs, TTLMs: spool.DefaultTTLMs},
		CreatedAt: t0,
		QueuedAt:  t0,
		Deadline:  at(time.Hour),
	}
}

// with returns j after applying fns to it, to build variants of queued inline.
func with(j *spool.Job, fns ...func(*spool.Job)) *spool.Job {
	for _, fn := range fns {
		fn(j)
	}
	return j
}

func create(t *testing.T, s store.Store, jobs ...*spool.Job) {
	t.Helper()
	for _, j := range jobs {
		require.NoError(t, s.CreateJob(t.Context(), store.CreateJobParams{Job: j}), "create %s", j.ID)
	}
}

func get(t *testing.T, s store.Store, id string) *spool.Job {
	t.Helper()
	j, err := s.GetJob(t.Context(), id)
	require.NoError(t, err, "get %s", id)
	return j
}

// normJob returns a copy of j with every time in UTC, so that jobs compare by instant whatever
// location a backend returns times in. Stores keep milliseconds, and the suite only uses those.
func normJob(j *spool.Job) *spool.Job {
	if j == nil {
		return nil
	}
	c := j.Clone()
	for _, p := range []*time.Time{&c.CreatedAt, &c.QueuedAt, &c.TakenAt, &c.FinishedAt, &c.Deadline} {
		*p = p.UTC()
	}
	return c
}

// requireJob checks that got is want, field for field (nil and empty RawMessages differ).
func requireJob(t *testing.T, want, got *spool.Job) {
	t.Helper()
	require.Equal(t, normJob(want), normJob(got))
}

// requireStored checks that the store holds want under want.ID.
func requireStored(t *testing.T, s store.Store, want *spool.Job) {
	t.Helper()
	requireJob(t, want, get(t, s, want.ID))
}

// ids returns the ids of jobs, in order.
func ids(jobs []*spool.Job) []string {
	out := make([]string, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, j.ID)
	}
	return out
}

// sortedIDs returns the ids of jobs, sorted, for results whose order is unspecified.
func sortedIDs(jobs []*spool.Job) []string {
	out := ids(jobs)
	slices.Sort(out)
	return out
}
