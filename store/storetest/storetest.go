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
		{"Payloads", testPayloads},
		{"JobCopies", testJobCopies},
		{"CreateJobConflict", testCreateJobConflict},
		{"NotFound", testNotFound},
		{"ListJobs", testListJobs},
		{"ListJobsDefaultLimit", testListJobsDefaultLimit},
		{"FindJobs", testFindJobs},
		{"UpdateJobsFields", testUpdateJobsFields},
		{"UpdateJobsOnlyNamedFields", testUpdateJobsOnlyNamedFields},
		{"UpdateJobsDeadlines", testUpdateJobsDeadlines},
		{"UpdateJobsExpect", testUpdateJobsExpect},
		{"UpdateJobsBatch", testUpdateJobsBatch},
		{"SealedS3Config", testSealedS3Config},
		{"ClaimJobsOrder", testClaimJobsOrder},
		{"ClaimJobsChange", testClaimJobsChange},
		{"ClaimJobsConcurrent", testClaimJobsConcurrent},
		{"DeleteJobs", testDeleteJobs},
		{"CountJobs", testCountJobs},
		{"QueueDepth", testQueueDepth},
		{"CountQueued", testCountQueued},
		{"CountsFollowWrites", testCountsFollowWrites},
		{"QueuePosition", testQueuePosition},
		{"HeldJobs", testHeldJobs},
		{"AppendChunk", testAppendChunk},
		{"ReadChunks", testReadChunks},
		{"DrainChunks", testDrainChunks},
		{"DrainChunksConcurrent", testDrainChunksConcurrent},
		{"Workers", testWorkers},
		{"DeleteWorkers", testDeleteWorkers},
		{"Endpoints", testEndpoints},
		{"Keys", testKeys},
		{"Sessions", testSessions},
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

// queued returns a typical job waiting in endpoint's queue, created and queued at t0, expiring an
// hour later, retained for half an hour once terminal.
func queued(id, endpoint string) *spool.Job {
	return &spool.Job{
		ID:          id,
		Endpoint:    endpoint,
		State:       spool.StateInQueue,
		Input:       json.RawMessage(`{"prompt":"hi"}`),
		Policy:      spool.Policy{ExecutionTimeoutMs: spool.DefaultExecutionTimeoutMs, TTLMs: spool.DefaultTTLMs},
		RetentionMs: (30 * time.Minute).Milliseconds(),
		CreatedAt:   t0,
		QueuedAt:    t0,
		ExpiresAt:   at(time.Hour),
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

// get reads a whole job.
func get(t *testing.T, s store.Store, id string) *spool.Job {
	t.Helper()
	j, err := s.GetJob(t.Context(), store.GetJobParams{ID: id, With: store.AllPayloads})
	require.NoError(t, err, "get %s", id)
	return j
}

// head returns a copy of j without its payloads: what reads of the head give.
func head(j *spool.Job) *spool.Job {
	c := j.Clone()
	c.Input, c.Output, c.Progress, c.S3ConfigSealed = nil, nil, nil, nil
	return c
}

// normJob returns a copy of j with every time in UTC, so that jobs compare by instant whatever
// location a backend returns times in. Stores keep milliseconds, and the suite only uses those.
func normJob(j *spool.Job) *spool.Job {
	if j == nil {
		return nil
	}
	c := j.Clone()
	for _, p := range []*time.Time{&c.CreatedAt, &c.QueuedAt, &c.TakenAt, &c.FinishedAt, &c.ExpiresAt, &c.TimeoutAt, &c.DeleteAt} {
		*p = p.UTC()
	}
	return c
}

// requireJob checks that got is want, field for field (nil and empty RawMessages differ).
func requireJob(t *testing.T, want, got *spool.Job) {
	t.Helper()
	require.Equal(t, normJob(want), normJob(got))
}

// requireJobs checks that got are want, in order, field for field.
func requireJobs(t *testing.T, want, got []*spool.Job) {
	t.Helper()
	norm := func(js []*spool.Job) []*spool.Job {
		out := make([]*spool.Job, len(js))
		for i, j := range js {
			out[i] = normJob(j)
		}
		return out
	}
	require.Equal(t, norm(want), norm(got))
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
