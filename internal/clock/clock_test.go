package clock_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool/internal/clock"
)

func TestFakeTimersFireInOrderOnAdvance(t *testing.T) {
	t.Parallel()
	f := clock.NewFake(time.Unix(0, 0))
	late, early := f.NewTimer(2*time.Second), f.NewTimer(time.Second)
	stopped := f.NewTimer(time.Second)
	require.True(t, stopped.Stop())
	require.Equal(t, 2, f.Timers())
	f.Advance(999 * time.Millisecond)
	select {
	case <-early.C():
		t.Fatal("fired early")
	default:
	}
	f.Advance(time.Millisecond)
	require.Equal(t, time.Unix(1, 0), <-early.C())
	f.Advance(time.Second)
	require.Equal(t, time.Unix(2, 0), <-late.C())
	require.Zero(t, f.Timers())
	require.False(t, late.Stop(), "a fired timer is no longer active")
}

func TestFakeWaitTimers(t *testing.T) {
	t.Parallel()
	f := clock.NewFake(time.Unix(0, 0))
	go f.NewTimer(time.Minute) // some goroutine starts waiting
	require.NoError(t, f.WaitTimers(context.Background(), 1))

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := f.WaitTimers(ctx, 2)
	require.ErrorIs(t, err, context.Canceled)
	require.Contains(t, err.Error(), "have 1")
}
