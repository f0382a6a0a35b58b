package storetest

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// recount counts an endpoint's jobs from their heads, as CountJobs and QueueDepth must.
func recount(t *testing.T, s store.Store, endpoint string) (spool.JobCounts, spool.QueueDepth) {
	t.Helper()
	jobs, err := s.FindJobs(t.Context(), store.JobFilter{Endpoint: endpoint})
	require.NoError(t, err)
	counts := spool.JobCounts{ByState: make(map[spool.State]int, len(spool.States))}
	for _, st := range spool.States {
		counts.ByState[st] = 0
	}
	var d spool.QueueDepth
	for _, j := range jobs {
		counts.ByState[j.State]++
		if j.Retries > 0 {
			counts.Retried++
		}
		switch {
		case j.State == spool.StateInQueue && j.Policy.LowPriority:
			d.Low++
		case j.State == spool.StateInQueue:
			if d.Normal == 0 || j.QueuedAt.Before(d.OldestNormal) {
				d.OldestNormal = j.QueuedAt
			}
			d.Normal++
		case j.State == spool.StateInProgress && !j.Policy.LowPriority:
			d.Running++
		}
	}
	return counts, d
}

// testCountsFollowWrites: after each of a mix of writes (creates, conflicting creates, claims,
// updates whose expectations hold or not, retention deletes), CountJobs and QueueDepth agree with
// a recount of the jobs. A backend that keeps counts rather than counting is held to the same.
func testCountsFollowWrites(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	endpoints := []string{"ep", "other"}
	rng := rand.New(rand.NewPCG(10, 31)) // fixed: every backend gets the same writes
	pick := rng.IntN
	var ids []string
	upTo := func(maxMs int) time.Time { return t0.Add(time.Duration(pick(maxMs)) * time.Millisecond) }
	finish := func(to spool.State) store.JobChange {
		return store.JobChange{Set: store.SetState | store.SetFinishedAt | store.SetDeleteAt, State: to, FinishedAt: t0}
	}
	requeue := func() store.JobChange {
		return store.JobChange{Set: store.SetState | store.SetWorkerID | store.IncRetries | store.SetQueuedAt,
			State: spool.StateInQueue, QueuedAt: upTo(30)}
	}
	var changed, unchanged, claimed, deleted int
	for step := range 150 {
		var what string
		switch n := pick(10); {
		case n < 4:
			id := fmt.Sprint("j", step)
			if len(ids) > 0 && pick(8) == 0 {
				id = ids[pick(len(ids))] // a conflict, or a job created anew after its deletion
			} else {
				ids = append(ids, id)
			}
			j := with(queued(id, endpoints[pick(len(endpoints))]), func(j *spool.Job) {
				j.QueuedAt, j.Policy.LowPriority = upTo(30), pick(3) == 0
				if pick(4) == 0 {
					j.State, j.Retries = spool.States[pick(len(spool.States))], pick(3)
				}
			})
			what = "create " + id
			_ = s.CreateJob(ctx, store.CreateJobParams{Job: j})
		case n < 6:
			ep := endpoints[pick(len(endpoints))]
			what = "claim of " + ep
			jobs, err := s.ClaimJobs(ctx, store.ClaimJobsParams{Endpoint: ep, Max: 1 + pick(3), Now: t0, Change: claim("w")})
			require.NoError(t, err)
			claimed += len(jobs)
		case n < 9:
			var updates []store.JobUpdate
			for range 1 + pick(3) {
				id := "missing"
				if len(ids) > 0 && pick(10) > 0 {
					id = ids[pick(len(ids))]
				}
				j, err := s.GetJob(ctx, store.GetJobParams{ID: id})
				if err != nil {
					j = queued(id, "ep")
				}
				u := store.JobUpdate{ID: id, Expect: store.Exactly(j)}
				switch j.State {
				case spool.StateInQueue:
					u.Change = []store.JobChange{finish(spool.StateCancelled), {Set: store.SetQueuedAt, QueuedAt: upTo(30)}}[pick(2)]
				case spool.StateInProgress:
					u.Change = []store.JobChange{finish(spool.StateCompleted), finish(spool.StateFailed), requeue()}[pick(3)]
				default:
					u.Change = requeue() // a retry
				}
				if pick(4) == 0 {
					u.Expect.Retries++ // another write got there first
				}
				updates = append(updates, u)
			}
			if pick(4) == 0 {
				updates = append(updates, updates[0]) // the second sees what the first wrote
			}
			what = fmt.Sprintf("update of %d jobs", len(updates))
			jobs, err := s.UpdateJobs(ctx, store.UpdateJobsParams{Updates: updates, Now: t0})
			require.NoError(t, err)
			changed += len(jobs)
			unchanged += len(updates) - len(jobs)
		default:
			what = "delete jobs"
			n, err := s.DeleteJobs(ctx, store.DeleteJobsParams{Before: upTo(60 * 60 * 1000), Limit: pick(3)})
			require.NoError(t, err)
			deleted += n
		}
		for _, ep := range endpoints {
			wantCounts, wantDepth := recount(t, s, ep)
			counts, err := s.CountJobs(ctx, ep)
			require.NoError(t, err)
			require.Equal(t, wantCounts, counts, "CountJobs of %s after step %d: %s", ep, step, what)
			depth, err := s.QueueDepth(ctx, ep)
			require.NoError(t, err)
			require.True(t, wantDepth.OldestNormal.Equal(depth.OldestNormal),
				"QueueDepth.OldestNormal of %s after step %d: %s: want %v, got %v", ep, step, what, wantDepth.OldestNormal, depth.OldestNormal)
			wantDepth.OldestNormal, depth.OldestNormal = time.Time{}, time.Time{}
			require.Equal(t, wantDepth, depth, "QueueDepth of %s after step %d: %s", ep, step, what)
		}
	}
	for name, n := range map[string]int{"changed": changed, "unchanged": unchanged, "claimed": claimed, "deleted": deleted} {
		require.Positive(t, n, "the mix must have %s jobs", name)
	}
}
