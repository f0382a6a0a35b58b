package notify_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/notify"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestTopicsAreDistinct(t *testing.T) {
	t.Parallel()
	seen := map[notify.Topic]bool{}
	for _, topic := range []notify.Topic{
		notify.Job("x"), notify.Work("x"), notify.Stop("x"), notify.Endpoints, notify.Keys, notify.Webhooks,
	} {
		require.False(t, seen[topic], "%s twice", topic)
		seen[topic] = true
	}
}

func TestHubWakesSubscribersAndForgetsAbandonedTopics(t *testing.T) {
	t.Parallel()
	h := notify.NewHub()
	a, releaseA := h.Subscribe("k")
	b, releaseB := h.Subscribe("k")
	h.Notify("k")
	<-a
	<-b
	releaseA()
	releaseB()
	require.Zero(t, h.Topics())

	// A waiter that gives up (its wait ran out) must not leave its topic behind: otherwise every
	// /status-sync of an unknown id would grow the map for ever.
	_, release := h.Subscribe("unknown-job")
	_, release2 := h.Subscribe("unknown-job")
	release()
	release() // releasing twice counts once
	require.Equal(t, 1, h.Topics(), "a topic stays while someone still waits on it")
	release2()
	require.Zero(t, h.Topics())

	// A release after the notify of its generation does not drop the next generation.
	_, old := h.Subscribe("k")
	h.Notify("k")
	next, releaseNext := h.Subscribe("k")
	old()
	require.Equal(t, 1, h.Topics())
	h.Notify("x", "k")
	<-next
	releaseNext()
	require.Zero(t, h.Topics())
}

func TestHubNotifyAllWakesEveryTopic(t *testing.T) {
	t.Parallel()
	h := notify.NewHub()
	a, releaseA := h.Subscribe("a")
	b, releaseB := h.Subscribe("b")
	h.NotifyAll()
	<-a
	<-b
	require.Zero(t, h.Topics(), "woken topics are dropped, as by Notify")
	releaseA()
	releaseB()
	c, releaseC := h.Subscribe("a")
	defer releaseC()
	select {
	case <-c:
		t.Fatal("a subscription taken after NotifyAll must wait for the next notification")
	default:
	}
	require.Equal(t, 1, h.Topics())
}

// pollEnv runs Poll on its own goroutine against a fake clock, with a look that reports done once
// ready is set, counting its calls.
type pollEnv struct {
	hub   *notify.Hub
	clock *clock.Fake
	ready atomic.Bool
	looks atomic.Int32
	res   chan pollResult
}

type pollResult struct {
	done bool
	err  error
}

func startPoll(t *testing.T, ctx context.Context, w notify.Wait) *pollEnv {
	t.Helper()
	e := &pollEnv{hub: notify.NewHub(), clock: clock.NewFake(time.Unix(0, 0)), res: make(chan pollResult, 1)}
	go func() {
		_, done, err := notify.Poll(ctx, e.hub, e.clock, notify.Job("j"), w, func() (int, bool, error) {
			e.looks.Add(1)
			return 0, e.ready.Load(), nil
		})
		e.res <- pollResult{done, err}
	}()
	require.NoError(t, e.clock.WaitTimers(context.Background(), 1))
	require.Equal(t, int32(1), e.looks.Load())
	return e
}

func TestPollWakesOnNotify(t *testing.T) {
	t.Parallel()
	e := startPoll(t, context.Background(), notify.Wait{For: time.Minute, Recheck: 10 * time.Second})
	e.hub.Notify(notify.Job("other")) // not ours
	require.Equal(t, 1, e.clock.Timers())
	e.ready.Store(true)
	e.hub.Notify(notify.Job("j"))
	r := <-e.res
	require.True(t, r.done)
	require.NoError(t, r.err)
	require.Equal(t, int32(2), e.looks.Load())
	require.Zero(t, e.hub.Topics())
	require.Zero(t, e.clock.Timers())
}

// TestPollRechecksWithoutNotification: a change whose notification was lost is found at the next
// recheck; the wait holds one timer at a time.
func TestPollRechecksWithoutNotification(t *testing.T) {
	t.Parallel()
	e := startPoll(t, context.Background(), notify.Wait{For: time.Minute, Recheck: 10 * time.Second})
	e.clock.Advance(10 * time.Second)
	// Advance dropped the fired timer; the next one is armed after the second look.
	require.NoError(t, e.clock.WaitTimers(context.Background(), 1))
	require.Equal(t, int32(2), e.looks.Load())
	require.Equal(t, 1, e.clock.Timers())
	e.ready.Store(true) // changed, but nobody notifies
	e.clock.Advance(10 * time.Second)
	r := <-e.res
	require.True(t, r.done)
	require.Equal(t, int32(3), e.looks.Load())
}

// TestPollRunsOutWithALastLook: the wait ends at For, after one last look at the deadline (a change
// committed just as the wait ran out is still seen).
func TestPollRunsOutWithALastLook(t *testing.T) {
	t.Parallel()
	e := startPoll(t, context.Background(), notify.Wait{For: 5 * time.Second, Recheck: 10 * time.Second})
	e.clock.Advance(5 * time.Second)
	r := <-e.res
	require.False(t, r.done)
	require.NoError(t, r.err)
	require.Equal(t, int32(2), e.looks.Load())
	require.Zero(t, e.hub.Topics())
}

func TestPollEndsOnDoneAndContext(t *testing.T) {
	t.Parallel()
	drain := make(chan struct{})
	e := startPoll(t, context.Background(), notify.Wait{For: time.Minute, Done: drain})
	close(drain)
	r := <-e.res
	require.False(t, r.done)
	require.NoError(t, r.err)

	ctx, cancel := context.WithCancel(context.Background())
	e = startPoll(t, ctx, notify.Wait{For: time.Minute})
	cancel()
	r = <-e.res
	require.ErrorIs(t, r.err, context.Canceled)
	require.Zero(t, e.hub.Topics())
	require.Zero(t, e.clock.Timers())
}

func TestPollWithoutWaitLooksOnce(t *testing.T) {
	t.Parallel()
	h := notify.NewHub()
	looks := 0
	_, done, err := notify.Poll(context.Background(), h, clock.NewFake(time.Unix(0, 0)), notify.Work("ep"), notify.Wait{},
		func() (int, bool, error) { looks++; return 0, false, nil })
	require.NoError(t, err)
	require.False(t, done)
	require.Equal(t, 1, looks)
	require.Zero(t, h.Topics())
}

func TestFlag(t *testing.T) {
	t.Parallel()
	h := notify.NewHub()
	f := notify.NewFlag(h, notify.Keys)
	require.False(t, f.Take())
	h.Notify(notify.Keys)
	h.Notify(notify.Keys) // nobody subscribed in between: one change to reload for
	require.True(t, f.Take())
	require.False(t, f.Take())
	h.Notify(notify.Keys)
	require.True(t, f.Take())
	f.Close()
	require.Zero(t, h.Topics())
}
