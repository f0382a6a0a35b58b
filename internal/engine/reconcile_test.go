package engine_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/store"
)

// lookups records the ids of every FindJobs call that names ids.
type lookups struct {
	store.Store
	mu  sync.Mutex
	ids [][]string
}

func (s *lookups) FindJobs(ctx context.Context, f store.JobFilter) ([]*spool.Job, error) {
	if len(f.IDs) > 0 {
		s.mu.Lock()
		s.ids = append(s.ids, slices.Clone(f.IDs))
		s.mu.Unlock()
	}
	return s.Store.FindJobs(ctx, f)
}

func (s *lookups) take() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := s.ids
	s.ids = nil
	return ids
}

// TestReconcileIgnoresUnknownJobs: a ping's ids the server never made are not signalled back to
// the worker (each would be memory kept for it), and ids that cannot be job ids are not looked up;
// jobs that moved on without the worker still are, sync ids included.
func TestReconcileIgnoresUnknownJobs(t *testing.T) {
	t.Parallel()
	var spy *lookups
	f := newFixture(t, func(c *engine.Config) {
		spy = &lookups{Store: c.Store}
		c.Store = spy
	})
	asyncJob := f.submit(t, engine.SubmitParams{})
	f.takeOne(t, "holder")
	syncJob := f.submit(t, engine.SubmitParams{Sync: true})
	f.takeOne(t, "holder")
	require.True(t, strings.HasPrefix(syncJob.ID, "sync-"))
	spy.take()

	unknown := spool.NewJobID(false)
	long := strings.Repeat("a", 129)
	listed := []string{asyncJob.ID, unknown, long, strings.Repeat("b", 128), "job 1", "job,2", "ünï", syncJob.ID, asyncJob.ID}
	movedOn, err := f.eng.Reconcile(f.ctx, engine.ReconcileParams{Endpoint: "ep", WorkerID: "intruder", JobIDs: listed})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{asyncJob.ID, syncJob.ID}, movedOn, "only jobs the server knows moved on")
	require.Equal(t, [][]string{{asyncJob.ID, unknown, strings.Repeat("b", 128), syncJob.ID}}, spy.take(),
		"each plausible id is looked up once; the others are not")

	movedOn, err = f.eng.Reconcile(f.ctx, engine.ReconcileParams{Endpoint: "ep", WorkerID: "intruder", JobIDs: []string{long, "x y"}})
	require.NoError(t, err)
	require.Empty(t, movedOn)
	require.Empty(t, spy.take(), "nothing to look up")
	require.Equal(t, "holder", f.job(t, asyncJob.ID).WorkerID, "the holder keeps its job")
}
