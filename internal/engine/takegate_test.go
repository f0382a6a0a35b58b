package engine_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/store"
)

// lookCounter counts the queue counts (one per look of a waiting taker) and the claims that
// reach the store.
type lookCounter struct {
	store.Store
	mu      sync.Mutex
	looks   int
	changed chan struct{}
	claims  atomic.Int64
}

func (c *lookCounter) CountQueued(ctx context.Context, p store.CountQueuedParams) (int, error) {
	c.mu.Lock()
	c.looks++
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	return c.Store.CountQueued(ctx, p)
}

func (c *lookCounter) ClaimJobs(ctx context.Context, p store.ClaimJobsParams) ([]*spool.Job, error) {
	c.claims.Add(1)
	return c.Store.ClaimJobs(ctx, p)
}

// awaitLooks waits until n looks were made.
func (c *lookCounter) awaitLooks(t *testing.T, n int) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		looks, changed := c.looks, c.changed
		c.mu.Unlock()
		if looks >= n {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("%d looks, want %d", looks, n)
		}
	}
}

// TestIdleTakersClaimOnlyWhatIsQueued: one job submitted to an endpoint with 32 idle takers
// wakes them all, but only one claim reaches the store's writer; the others look at the queue
// and wait again.
func TestIdleTakersClaimOnlyWhatIsQueued(t *testing.T) {
	t.Parallel()
	lc := &lookCounter{changed: make(chan struct{})}
	f := newFixture(t, func(c *engine.Config) { lc.Store = c.Store; c.Store = lc })
	const takers = 32
	ctx, cancel := context.WithCancel(f.ctx)
	got := make(chan result[[]engine.Handout], takers)
	for i := range takers {
		go func() {
			h, err := f.eng.Take(ctx, "ep", fmt.Sprint("w", i), 1, time.Hour)
			got <- result[[]engine.Handout]{h, err}
		}()
	}
	f.waitTimers(t, 1+takers) // every taker looked once and waits
	require.Zero(t, lc.claims.Load(), "an empty queue is not claimed from")

	j := f.submit(t, engine.SubmitParams{})
	won := <-got
	require.NoError(t, won.err)
	require.Len(t, won.v, 1)
	require.Equal(t, j.ID, won.v[0].Job.ID)
	// Every taker woke and looked again (2 looks each, the winner included).
	lc.awaitLooks(t, 2*takers)
	require.EqualValues(t, 1, lc.claims.Load(), "one queued job, one claim")

	cancel()
	for range takers - 1 {
		r := <-got
		require.Empty(t, r.v)
	}
}
