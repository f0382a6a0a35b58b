package pglead_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/store/pgstore/pglead"
	"github.com/spool-run/spool/store/pgstore/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// until waits for cond, driving the replicas' fake clock one retry at a time; it fails after 10 s.
func until(t *testing.T, clk *clock.Fake, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		require.True(t, time.Now().Before(deadline), "%s: not within 10s", what)
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		_ = clk.WaitTimers(ctx, 1) // a replica waits for its next try
		cancel()
		clk.Advance(time.Second)
	}
}

func leaders(ls ...*pglead.Lease) int {
	n := 0
	for _, l := range ls {
		if l.Leading() {
			n++
		}
	}
	return n
}

// TestOneLeaderAndTakeOver: of three replicas exactly one leads; when it goes (its session ends,
// as when its process dies), another takes over; a replica in another schema leads on its own.
func TestOneLeaderAndTakeOver(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	clk := clock.NewFake(time.Unix(0, 0))
	var ls []*pglead.Lease
	for range 3 {
		l := pglead.New(t.Context(), pglead.Config{URL: url, Clock: clk})
		t.Cleanup(l.Close)
		ls = append(ls, l)
	}
	until(t, clk, func() bool { return leaders(ls...) == 1 }, "one leader")
	for range 3 {
		clk.Advance(time.Second)
		require.Equal(t, 1, leaders(ls...), "never two leaders while the first holds the lock")
	}
	other := pglead.New(t.Context(), pglead.Config{URL: pgtest.URL(t), Clock: clk})
	t.Cleanup(other.Close)
	until(t, clk, other.Leading, "the leader of another schema")

	var first int
	for i, l := range ls {
		if l.Leading() {
			first = i
		}
	}
	ls[first].Close()
	require.False(t, ls[first].Leading())
	rest := append(append([]*pglead.Lease{}, ls[:first]...), ls[first+1:]...)
	until(t, clk, func() bool { return leaders(rest...) == 1 }, "a new leader")
}

// TestLeaderWhoseSessionIsKilledStopsLeading: the lock's backend is terminated (a database
// restart, a failover): the leader notices at its next check and stops leading, then leads again
// once it has reconnected and retaken the lock.
func TestLeaderWhoseSessionIsKilledStopsLeading(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	clk := clock.NewFake(time.Unix(0, 0))
	l := pglead.New(t.Context(), pglead.Config{URL: url, Clock: clk})
	defer l.Close()
	until(t, clk, l.Leading, "leading")

	admin, err := pgx.Connect(t.Context(), pgtest.BaseURL(t))
	require.NoError(t, err)
	defer admin.Close(context.Background())
	var ok bool
	require.NoError(t, admin.QueryRow(t.Context(), "SELECT pg_terminate_backend($1)", int32(l.LockPID())).Scan(&ok))
	require.True(t, ok)
	until(t, clk, func() bool { return l.Changes() >= 3 && l.Leading() }, "lost, then led again")
}
