package pgstore_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
	"github.com/spool-run/spool/store/pgstore"
)

// commitLog records what OnCommit tells.
type commitLog struct {
	mu      sync.Mutex
	commits []commit
}

type commit struct {
	d      time.Duration
	writes int
}

func (l *commitLog) record(d time.Duration, writes int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.commits = append(l.commits, commit{d, writes})
}

// take returns the commits recorded since the last take, and forgets them.
func (l *commitLog) take() []commit {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.commits
	l.commits = nil
	return c
}

// writes returns the writes of each commit in cs, and checks that each took some time.
func writesOf(t *testing.T, cs []commit) []int {
	t.Helper()
	w := make([]int, len(cs))
	for i, c := range cs {
		require.Positive(t, c.d, "commit %d took no time", i)
		w[i] = c.writes
	}
	return w
}

// TestOnCommit: each write that commits is told to OnCommit once, with its time and its writes:
// one for a write of its own (through the pipeline alone, a plain statement, a transaction), the
// batch's statements for a pipelined batch. Failed writes and rolled-back transactions are not.
func TestOnCommit(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := t.Context()
	var log commitLog
	s.OnCommit(log.record)

	// One after another, every write is a transaction of its own.
	require.NoError(t, s.CreateJob(ctx, store.CreateJobParams{Job: job("a")})) // pipeline, alone
	require.NoError(t, s.CreateJob(ctx, store.CreateJobParams{Job: job("b")}))
	claimed, err := s.ClaimJobs(ctx, store.ClaimJobsParams{Endpoint: "ep", Max: 1, Now: t0, Change: claimChange("w")})
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	_, err = s.UpdateJobs(ctx, store.UpdateJobsParams{Now: t0, Updates: []store.JobUpdate{{ // one statement: pipeline
		ID: "b", Expect: store.Expect{State: spool.StateInQueue}, Change: store.JobChange{Set: store.SetError, Error: "x"},
	}}})
	require.NoError(t, err)
	_, err = s.UpdateJobs(ctx, store.UpdateJobsParams{Now: t0, Updates: []store.JobUpdate{ // two jobs: one transaction
		{ID: "a", Change: store.JobChange{Set: store.SetError, Error: "y"}},
		{ID: "b", Change: store.JobChange{Set: store.SetError, Error: "z"}},
	}})
	require.NoError(t, err)
	require.NoError(t, s.TouchWorker(ctx, store.TouchWorkerParams{ID: "w", Endpoint: "ep", Now: t0})) // a plain statement
	ep := spool.NewEndpoint("ep")
	ep.CreatedAt, ep.UpdatedAt = t0, t0
	require.NoError(t, s.PutEndpoint(ctx, ep))
	require.Equal(t, []int{1, 1, 1, 1, 1, 1, 1}, writesOf(t, log.take()))

	// Writes that fail commit nothing.
	require.ErrorIs(t, s.CreateJob(ctx, store.CreateJobParams{Job: job("a")}), store.ErrConflict)
	require.ErrorIs(t, s.DeleteEndpoint(ctx, "none"), store.ErrNotFound)
	require.Error(t, s.WriteTx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO workers VALUES ('v', 'ep', 1, 1, '')")
		require.NoError(t, err)
		return errors.New("changed my mind")
	}))
	require.Empty(t, log.take())

	// A transaction aborted by a deadlock runs again: only the run that committed is told.
	runs := 0
	require.NoError(t, s.WriteTx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		if runs++; runs == 1 {
			return &pgconn.PgError{Code: "40P01", Message: "deadlock detected"}
		}
		_, err := tx.Exec(ctx, "INSERT INTO workers VALUES ('v', 'ep', 1, 1, '')")
		return err
	}))
	require.Equal(t, []int{1}, writesOf(t, log.take()))

	// Concurrent submissions share pipelined batches: a commit each, of all their statements. The
	// duplicate's batch is rolled back (not told) and its statements run again alone.
	_, batchesBefore, rerunBefore := s.PipelineStats()
	const writers, each = 32, 20
	submitConcurrently(t, s, writers, each, "a")
	_, batchesAfter, rerunAfter := s.PipelineStats()
	total, shared := 0, 0
	for _, w := range writesOf(t, log.take()) {
		require.Positive(t, w)
		total += w
		if w > 1 {
			shared++
		}
	}
	require.Equal(t, writers*each-1, total, "every submission that succeeded, once")
	require.Positive(t, shared, "concurrent writes share batches")
	// Each batch committed is one shared commit; the one rolled back (if the duplicate was in
	// a batch) is not.
	require.Equal(t, (batchesAfter-batchesBefore)-(rerunAfter-rerunBefore), int64(shared))

	// nil stops the reports.
	s.OnCommit(nil)
	require.NoError(t, s.CreateJob(ctx, store.CreateJobParams{Job: job("after")}))
	require.Empty(t, log.take())
}

// TestOnCommitCostsNoAllocation: telling of a commit allocates nothing, whether OnCommit is set
// or not (the writes' hot path runs it). It needs no database: the hook is all it runs.
func TestOnCommitCostsNoAllocation(t *testing.T) {
	s := new(pgstore.Store)
	start := time.Now()
	require.Zero(t, testing.AllocsPerRun(100, func() { s.ReportCommit(start, 1) }), "unset")
	var n, writes int
	s.OnCommit(func(_ time.Duration, w int) { n++; writes += w })
	require.Zero(t, testing.AllocsPerRun(100, func() { s.ReportCommit(start, 3) }), "set")
	require.Equal(t, 101, n) // AllocsPerRun runs it once more, to warm up
	require.Equal(t, 303, writes)
}
