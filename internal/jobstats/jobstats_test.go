package jobstats_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/jobstats"
)

func TestSummary(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	clk := clock.NewFake(start)
	r := jobstats.New(clk)

	// Minute 0: 100 jobs waited 1..100 ms and ran 10 ms each; 5 of them failed, 1 timed out.
	for i := 1; i <= 100; i++ {
		r.JobStarted("ep", time.Duration(i)*time.Millisecond)
		state := spool.StateCompleted
		switch {
		case i <= 5:
			state = spool.StateFailed
		case i == 6:
			state = spool.StateTimedOut
		}
		r.JobFinished("ep", state, 10*time.Millisecond, true)
	}
	// A job cancelled in the queue ends without running: counted, not timed.
	r.JobFinished("ep", spool.StateCancelled, 0, false)

	clk.Advance(90 * time.Second) // minute 1, 30 s in
	for range 30 {
		r.JobStarted("ep", time.Second)
		r.JobFinished("ep", spool.StateCompleted, 2*time.Second, true)
	}

	s := r.Summary("ep")
	require.Len(t, s.Minutes, jobstats.Minutes)
	last, prev := s.Minutes[jobstats.Minutes-1], s.Minutes[jobstats.Minutes-2]
	require.Equal(t, start.Add(time.Minute), last.At)
	require.Equal(t, start, prev.At)
	require.Equal(t, 101, prev.Finished)
	require.Equal(t, 6, prev.Failed)
	// Quantiles are the upper bound of a 1.25-wide bucket.
	require.InDelta(t, 50, prev.DelayP50Ms, 50*0.25)
	require.InDelta(t, 95, prev.DelayP95Ms, 95*0.25)
	require.InDelta(t, 10, prev.ExecP50Ms, 10*0.25)
	require.InDelta(t, 1000, last.DelayP95Ms, 1000*0.25)
	require.InDelta(t, 2000, last.ExecP50Ms, 2000*0.25)
	for _, p := range s.Minutes[:jobstats.Minutes-2] {
		require.Zero(t, p.Finished)
	}

	require.Equal(t, 131, s.Hour.Finished)
	require.Equal(t, 6, s.Hour.Failed)
	require.InDelta(t, 1000, s.Hour.DelayP95Ms, 1000*0.25, "the hour's p95 is over both minutes")
	require.InDelta(t, 10, s.Hour.ExecP50Ms, 10*0.25)
	// 131 jobs over the last full minute and 30 s of this one.
	require.InDelta(t, 131.0/90, s.JobsPerSecond, 0.01)

	// An hour later the old minutes are gone, even though their slots are reused.
	clk.Advance(time.Hour)
	r.JobFinished("ep", spool.StateCompleted, time.Millisecond, true)
	s = r.Summary("ep")
	require.Equal(t, 1, s.Hour.Finished)

	// Unknown and forgotten endpoints are all zero.
	require.Zero(t, r.Summary("other").Hour.Finished)
	r.Forget("ep")
	require.Zero(t, r.Summary("ep").Hour.Finished)
}
