package pgclock_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/store/pgstore/pgclock"
	"github.com/spool-run/spool/store/pgstore/pgtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeDB answers clock_timestamp() with a time the test sets, and counts the reads.
type fakeDB struct {
	mu    sync.Mutex
	now   time.Time
	reads chan struct{}
}

func (f *fakeDB) set(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = t
}

func (f *fakeDB) QueryRow(context.Context, string, ...any) pgx.Row {
	f.mu.Lock()
	defer f.mu.Unlock()
	return row{f.now, f.reads}
}

type row struct {
	t     time.Time
	reads chan struct{}
}

func (r row) Scan(dest ...any) error {
	*dest[0].(*time.Time) = r.t
	r.reads <- struct{}{}
	return nil
}

func TestFollowsTheDatabasesClock(t *testing.T) {
	t.Parallel()
	local := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	db := &fakeDB{now: local.Now().Add(5 * time.Second), reads: make(chan struct{}, 5)}
	c, err := pgclock.New(t.Context(), pgclock.Config{DB: db, Local: local, Refresh: time.Minute})
	require.NoError(t, err)
	defer c.Close()
	for range 5 {
		<-db.reads // a measurement is five reads; it keeps the quickest
	}
	require.Equal(t, local.Now().Add(5*time.Second), c.Now(), "the database runs 5s ahead of this machine")
	local.Advance(time.Second)
	require.Equal(t, local.Now().Add(5*time.Second), c.Now(), "the local clock carries the time between reads")

	// The database's clock is stepped back by 2s: the next refresh follows it.
	require.NoError(t, local.WaitTimers(t.Context(), 1))
	db.set(local.Now().Add(time.Minute + 3*time.Second))
	local.Advance(time.Minute)
	for range 5 {
		<-db.reads
	}
	require.Eventually(t, func() bool {
		off, _ := c.Offset()
		return off == 3*time.Second
	}, 5*time.Second, time.Millisecond)
	require.Equal(t, local.Now().Add(3*time.Second), c.Now())
}

func TestAgainstPostgreSQL(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(t.Context(), pgtest.URL(t))
	require.NoError(t, err)
	defer pool.Close()
	c, err := pgclock.New(t.Context(), pgclock.Config{DB: pool})
	require.NoError(t, err)
	defer c.Close()
	off, uncertainty := c.Offset()
	require.Positive(t, uncertainty)
	// The database runs on this machine: one clock, so the offset is within the round trip.
	require.Less(t, (off - uncertainty).Abs(), time.Second, "offset %s ± %s", off, uncertainty)
	require.WithinDuration(t, time.Now(), c.Now(), time.Second)
}

func TestNewFailsWithoutTheDatabase(t *testing.T) {
	t.Parallel()
	_, err := pgclock.New(t.Context(), pgclock.Config{})
	require.Error(t, err)
}
