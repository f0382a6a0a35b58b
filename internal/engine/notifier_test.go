package engine_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/notify"
	"github.com/spool-run/spool/internal/spooltest"
	"github.com/spool-run/spool/store"
	"github.com/spool-run/spool/store/sqlitestore"
)

// deafNotifier loses every notification, as a notifier between replicas may while its
// connection reconnects.
type deafNotifier struct{}

func (deafNotifier) Subscribe(notify.Topic) (<-chan struct{}, func()) { return nil, func() {} }
func (deafNotifier) Notify(...notify.Topic)                           {}

// TestLostNotificationDelaysButDoesNotLose: a take waiting for work finds a job whose
// notification never came at its next safety recheck, long before its wait runs out.
func TestLostNotificationDelaysButDoesNotLose(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *engine.Config) { c.Notifier = deafNotifier{}; c.Recheck = 5 * time.Second })
	got := async(func() ([]*spool.Job, error) { return take(f.eng.Take(f.ctx, "ep", "w", 1, 30*time.Second)) })
	f.waitTimers(t, 2)
	j := f.submit(t, engine.SubmitParams{})
	f.clock.Advance(5 * time.Second)
	res := <-got
	require.NoError(t, res.err)
	require.Len(t, res.v, 1)
	require.Equal(t, j.ID, res.v[0].ID)
}

// replicas are two engines on one store and one notifier: what two spool serve processes on one
// database are, with a notifier that crosses processes.
type replicas struct {
	a, b  *engine.Engine
	clock *clock.Fake
	ctx   context.Context
}

func newReplicas(t *testing.T) *replicas {
	t.Helper()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "spool.db"))
	require.NoError(t, err)
	r := &replicas{clock: clock.NewFake(t0), ctx: ctx}
	hub := notify.NewHub()
	var engines []*engine.Engine
	for range 2 {
		eng, err := engine.New(engine.Config{Store: st, Clock: r.clock, SweepInterval: time.Hour, Notifier: hub})
		require.NoError(t, err)
		require.NoError(t, eng.Start(ctx))
		engines = append(engines, eng)
	}
	t.Cleanup(func() {
		for _, eng := range engines {
			eng.Stop()
		}
		require.NoError(t, st.Close())
	})
	r.a, r.b = engines[0], engines[1]
	return r
}

// TestReplicasShareWakeUps: with a shared notifier, an endpoint made on one engine is usable on the
// other at once, a submission on one wakes a take waiting on the other, and a result posted to one
// ends a /runsync wait on the other.
func TestReplicasShareWakeUps(t *testing.T) {
	t.Parallel()
	r := newReplicas(t)
	_, _, err := r.a.PutEndpoint(r.ctx, spool.NewEndpoint("ep"))
	require.NoError(t, err)
	_, err = r.b.Endpoint("ep")
	require.NoError(t, err, "the endpoint made on A is known to B without waiting for a recheck")

	var wg sync.WaitGroup
	wg.Add(1)
	var taken []*spool.Job
	var takeErr error
	go func() {
		defer wg.Done()
		taken, takeErr = take(r.b.Take(r.ctx, "ep", "w", 1, time.Minute))
	}()
	require.NoError(t, r.clock.WaitTimers(r.ctx, 3)) // two sweepers and B's take
	j, err := r.a.Submit(r.ctx, engine.SubmitParams{Endpoint: "ep", Input: json.RawMessage(`{}`), Sync: true})
	require.NoError(t, err)
	wg.Wait()
	require.NoError(t, takeErr)
	require.Len(t, taken, 1)
	require.Equal(t, j.ID, taken[0].ID)

	waited := async(func() (*spool.Job, error) { return r.a.WaitTerminal(r.ctx, "ep", j.ID, time.Minute) })
	require.NoError(t, r.clock.WaitTimers(r.ctx, 3))
	_, err = r.b.Done(r.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w", JobID: j.ID, Output: json.RawMessage(`1`)})
	require.NoError(t, err)
	res := <-waited
	require.NoError(t, res.err)
	require.Equal(t, spool.StateCompleted, res.v.State)

	require.NoError(t, r.b.DeleteEndpoint(r.ctx, "ep"))
	_, err = r.a.Endpoint("ep")
	requireCode(t, err, spool.CodeNotFound)
}

// TestOnlyTheLeaderSweeps: on a replica that does not lead, the sweeper's rounds pass without
// expiring anything; once it leads, the next round does.
func TestOnlyTheLeaderSweeps(t *testing.T) {
	t.Parallel()
	lead := spooltest.NewLeader()
	f := newFixture(t, func(c *engine.Config) { c.SweepInterval = time.Second; c.Leader = lead })
	j := f.submit(t, engine.SubmitParams{TTLMs: i64p(10000)})
	f.clock.Advance(11 * time.Second)
	<-lead.Asked
	f.waitTimers(t, 1) // the round is over: the next one is armed
	require.Equal(t, spool.StateInQueue, f.job(t, j.ID).State)

	lead.On.Store(true)
	f.clock.Advance(time.Second)
	<-lead.Asked
	f.waitTimers(t, 1)
	require.Equal(t, spool.StateTimedOut, f.job(t, j.ID).State)
}

// hookedStore runs a hook inside ListEndpoints, between reading the endpoints and returning them.
type hookedStore struct {
	store.Store
	hook atomic.Pointer[func()]
}

func (s *hookedStore) ListEndpoints(ctx context.Context) ([]spool.Endpoint, error) {
	eps, err := s.Store.ListEndpoints(ctx)
	if h := s.hook.Swap(nil); h != nil {
		(*h)()
	}
	return eps, err
}

// TestEndpointEditsSurviveAConcurrentReload: a reload of the endpoint cache that read the store
// before an edit committed here does not undo the edit, and a lookup made during that reload
// leaves the edit's notification to be reloaded for.
func TestEndpointEditsSurviveAConcurrentReload(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "spool.db"))
	require.NoError(t, err)
	hooked := &hookedStore{Store: st}
	hub := notify.NewHub()
	eng, err := engine.New(engine.Config{Store: hooked, Clock: clock.NewFake(t0), SweepInterval: time.Hour, Notifier: hub})
	require.NoError(t, err)
	require.NoError(t, eng.Start(ctx))
	defer func() { eng.Stop(); require.NoError(t, st.Close()) }()

	var lookupDuringReload error
	edit := func() {
		_, _, err := eng.PutEndpoint(ctx, spool.NewEndpoint("new"))
		require.NoError(t, err)
		_, lookupDuringReload = eng.Endpoint("new")
	}
	hooked.hook.Store(&edit)
	hub.Notify(notify.Endpoints) // as another replica's edit would
	_, err = eng.Endpoint("anything")
	requireCode(t, err, spool.CodeNotFound) // this lookup reloaded, and ran the edit in between
	require.NoError(t, lookupDuringReload)
	_, err = eng.Endpoint("new")
	require.NoError(t, err, "the edit survived the reload that read the store before it")
}

// TestEndpointMadeElsewhereIsFoundAtOnce: an endpoint another replica made a moment ago, whose
// notification has not arrived (here: never will), is found by a lookup here, from the store;
// one that does not exist is still not found.
func TestEndpointMadeElsewhereIsFoundAtOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "spool.db"))
	require.NoError(t, err)
	eng, err := engine.New(engine.Config{Store: st, Clock: clock.NewFake(t0), SweepInterval: time.Hour, Notifier: deafNotifier{}})
	require.NoError(t, err)
	require.NoError(t, eng.Start(ctx))
	defer func() { eng.Stop(); require.NoError(t, st.Close()) }()

	other := spool.NewEndpoint("elsewhere")
	other.CreatedAt, other.UpdatedAt = t0, t0
	require.NoError(t, st.PutEndpoint(ctx, other)) // as the other replica's engine writes it
	got, err := eng.Endpoint("elsewhere")
	require.NoError(t, err)
	require.Equal(t, "elsewhere", got.Name)
	j, err := eng.Submit(ctx, engine.SubmitParams{Endpoint: "elsewhere", Input: json.RawMessage(`{}`)})
	require.NoError(t, err)
	require.Equal(t, spool.StateInQueue, j.State)

	_, err = eng.Endpoint("nowhere")
	requireCode(t, err, spool.CodeNotFound)
}
