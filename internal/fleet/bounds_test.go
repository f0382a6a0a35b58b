package fleet_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/fleet"
)

// What a worker key can make the fleet remember is bounded: pings name jobs the server knows, the
// stop signals and sightings of all workers together have caps, and a worker's signals go with it.

// TestInventedWorkersPingingUnknownJobsLeaveNothing: 120 invented workers, each listing 1,000
// ids the server never made (long ones, as in an attack seen, and some well-formed ones: fewer,
// since each is looked up), leave no stop signal behind.
func TestInventedWorkersPingingUnknownJobsLeaveNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for w := range 120 {
		ids := make([]string, 1000)
		for i := range ids {
			if i%20 == 0 {
				ids[i] = spool.NewJobID(i%40 == 0)
			} else {
				ids[i] = fmt.Sprintf("%d-%d-", w, i) + strings.Repeat("a", 890)
			}
		}
		// As the worker API splits them: slices of one query string.
		listed := strings.Split(strings.Join(ids, ","), ",")
		f.ping(t, fmt.Sprint("fake-worker-", w), "1.12.0", listed...)
	}
	require.Zero(t, f.fleet.StopEntries())
	for w := range 120 {
		require.Empty(t, f.stops(t, fmt.Sprint("fake-worker-", w)))
	}
}

// movedOn submits n jobs and has worker "holder" take them: for any other worker listing them,
// they moved on without it.
func (f *fixture) movedOn(t *testing.T, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = f.submit(t, engine.SubmitParams{}).ID
	}
	for _, j := range f.take(t, "holder", n) {
		require.Contains(t, ids, j.ID)
	}
	return ids
}

// TestStopSignalsHaveAGlobalCap: past the cap on all workers' signals, new ones are dropped; once
// signals are delivered there is room again, and the next ping restores what was dropped.
func TestStopSignalsHaveAGlobalCap(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.fleet.LimitStops(3)
	ids := f.movedOn(t, 4)
	f.ping(t, "a", "", ids...)
	require.Equal(t, 3, f.fleet.StopEntries())
	f.ping(t, "b", "", ids...)
	require.Equal(t, 3, f.fleet.StopEntries(), "the cap is for all workers together")
	require.Empty(t, f.stops(t, "b"))
	got := f.stops(t, "a")
	require.Len(t, got, 3)
	require.Subset(t, ids, got)
	require.Zero(t, f.fleet.StopEntries(), "delivered signals are forgotten")

	f.ping(t, "b", "", ids[:2]...)
	require.ElementsMatch(t, ids[:2], f.stops(t, "b"), "moved-on jobs are signalled again once there is room")
	require.Empty(t, f.stops(t, "holder"), "the holder is never told to stop its jobs")
}

// TestLostWorkerLeavesNoStopSignals: the sweep that finds a worker lost drops the signals its
// pings left; a worker that keeps pinging keeps its own.
func TestLostWorkerLeavesNoStopSignals(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ids := f.movedOn(t, 2)
	held := f.submit(t, engine.SubmitParams{})
	require.Equal(t, held.ID, f.takeOne(t, "gone").ID)
	f.ping(t, "gone", "", held.ID, ids[0])
	f.ping(t, "alive", "", ids[1])
	require.Equal(t, 2, f.fleet.StopEntries())

	f.clock.Advance(31 * time.Second)
	f.ping(t, "holder", "", ids...)
	f.ping(t, "alive", "", ids[1])
	require.Equal(t, fleet.SweepResult{Lost: 1, Requeued: 1}, f.sweep(t))
	require.Equal(t, 1, f.fleet.StopEntries(), "only the lost worker's signal is gone")
	require.Empty(t, f.stops(t, "gone"))
	require.Equal(t, []string{ids[1]}, f.stops(t, "alive"))
}

// TestStopSignalsExpire: a signal no ping has listed for twice LostAfter is dropped, by the next
// sweep or when its worker polls, even for a worker that holds nothing and so is never swept.
func TestStopSignalsExpire(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ids := f.movedOn(t, 2)
	f.ping(t, "a", "", ids[0])
	f.ping(t, "b", "", ids[1])
	f.clock.Advance(59 * time.Second)
	f.ping(t, "b", "", ids[1]) // listed again: kept alive
	f.sweep(t)
	require.Equal(t, 2, f.fleet.StopEntries(), "not yet expired")
	f.clock.Advance(time.Second)
	require.Empty(t, f.stops(t, "a"), "expired, though not yet swept out")
	f.ping(t, "a", "", ids[0])
	f.clock.Advance(time.Minute)
	f.sweep(t)
	require.Zero(t, f.fleet.StopEntries())
}

// TestSightingsHaveACap: the rate limit of sightings remembers at most its cap of workers, however
// many invented workers make requests, and forgets those seen longer ago than its interval.
func TestSightingsHaveACap(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.fleet.LimitSightings(50)
	for i := range 150 {
		require.NoError(t, f.fleet.Seen(f.ctx, "ep", fmt.Sprint("invented-", i)))
		require.LessOrEqual(t, f.fleet.Sightings(), 50)
	}
	f.clock.Advance(5 * time.Second) // LostAfter/6: every entry is stale
	require.NoError(t, f.fleet.Seen(f.ctx, "ep", "w"))
	require.Equal(t, 1, f.fleet.Sightings())

	// It still limits the writes.
	f.clock.Advance(time.Second)
	require.NoError(t, f.fleet.Seen(f.ctx, "ep", "w"))
	ws, err := f.fleet.Workers(f.ctx, "ep")
	require.NoError(t, err)
	for _, w := range ws {
		if w.ID == "w" {
			require.Equal(t, t0.Add(5*time.Second), w.LastSeen)
		}
	}
}

// TestWorkerIDsAreBounded: a worker id over spool.MaxWorkerIDLen is refused, with nothing
// recorded.
func TestWorkerIDsAreBounded(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	long := strings.Repeat("w", spool.MaxWorkerIDLen+1)
	requireCode(t, f.fleet.Seen(f.ctx, "ep", long), spool.CodeInvalid)
	requireCode(t, f.fleet.Heartbeat(f.ctx, fleet.HeartbeatParams{Endpoint: "ep", WorkerID: long}), spool.CodeInvalid)
	_, err := f.fleet.StopSignals(f.ctx, "ep", long, 0)
	requireCode(t, err, spool.CodeInvalid)
	require.Zero(t, f.fleet.Sightings())
	ws, err := f.fleet.Workers(f.ctx, "ep")
	require.NoError(t, err)
	require.Empty(t, ws)

	f.ping(t, long[1:], "")
	ws, err = f.fleet.Workers(f.ctx, "ep")
	require.NoError(t, err)
	require.Len(t, ws, 1)
}
