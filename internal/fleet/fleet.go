// Package fleet owns Spool's workers: who has been seen and when (sightings, kept in the store for
// every replica), who is alive and who is lost, which jobs each holds, the stop signals each must
// get, and the workers the autoscaler runs (their processes, faults and throttling). From those
// facts one function computes a worker's state (stateOf), and the fleet answers /api/workers,
// /health's worker counts and a queued job's wait reason and position.
//
// It is fed, never asked: the engine tells it what job changes mean for workers
// (engine.WorkerObserver), the worker API reports requests (Seen, TakeRequested, Heartbeat,
// StopSignals), and the autoscaler reports what it starts, stops and wants. The autoscaler decides;
// the fleet records. The fleet tells the engine when a worker is gone (its lost-worker sweep).
package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/leader"
	"github.com/spool-run/spool/internal/notify"
	"github.com/spool-run/spool/store"
)

// Config configures a Fleet.
type Config struct {
	// Engine runs the jobs the workers hold. Required.
	Engine *engine.Engine
	// Store keeps the sightings and answers the narrow job queries (held jobs, queue depth and
	// positions). Required; the engine's store.
	Store store.Store
	// Clock is the time source. Defaults to the engine's.
	Clock clock.Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Notifier wakes job-stop polls. Defaults to the engine's.
	Notifier notify.Notifier
	// Leader says whether this process runs the lost-worker sweep. Defaults to leader.Always.
	Leader leader.Leader
	// LostAfter is how long a worker may go unseen (no ping, take, stop poll or post) before
	// its jobs go back to the queue. Defaults to 30 s: three missed pings at runpod-python's 10 s
	// interval.
	LostAfter time.Duration
	// SweepInterval is how often the lost-worker sweep runs. Defaults to 1 s.
	SweepInterval time.Duration
	// Recheck is the safety interval of job-stop polls: without a notification they look again
	// this often. Defaults to the engine's.
	Recheck time.Duration
	// OnColdStart, when set, is told of each cold start that ends: a worker the autoscaler
	// started asked for its first job d after its start (metrics).
	OnColdStart func(endpoint string, d time.Duration)
}

func (c Config) withDefaults() Config {
	if c.Engine != nil {
		ec := c.Engine.Config()
		if c.Clock == nil {
			c.Clock = ec.Clock
		}
		if c.Notifier == nil {
			c.Notifier = ec.Notifier
		}
		if c.Recheck == 0 {
			c.Recheck = ec.Recheck
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Leader == nil {
		c.Leader = leader.Always{}
	}
	if c.LostAfter == 0 {
		c.LostAfter = 30 * time.Second
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = time.Second
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Engine == nil:
		return errors.New("fleet: Engine is required")
	case c.Store == nil:
		return errors.New("fleet: Store is required")
	case c.LostAfter < 0 || c.SweepInterval < 0 || c.Recheck < 0:
		return errors.New("fleet: LostAfter, SweepInterval and Recheck must not be negative")
	}
	return nil
}

// Fleet is the record of every worker. It is safe for concurrent use.
type Fleet struct {
	cfg   Config
	eng   *engine.Engine
	store store.Store
	clock clock.Clock
	log   *slog.Logger

	sighted sightings
	stops   stopSet
	// startedAt is when Start ran: workers cannot have pinged a server that was down, so none is
	// declared lost until LostAfter has passed since then.
	startedAt time.Time

	mu       sync.Mutex
	slots    []*slot              // the autoscaler's workers, in the order it made them
	nextSlot int                  // the id of the next slot
	acts     map[string]*activity // by worker id, for the workers of slots
	retired  retiredSet
	cold     map[string]coldStarts // by endpoint
	ticks    map[string]tickView   // by endpoint: the autoscaler's last tick

	startOnce, stopOnce sync.Once
	cancel              context.CancelFunc
	done                chan struct{}
}

var _ engine.WorkerObserver = (*Fleet)(nil)

// New returns the fleet of the engine's workers. It observes the engine's job events from then on
// (engine.ObserveWorkers). Start runs its lost-worker sweep.
func New(cfg Config) (*Fleet, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	f := &Fleet{
		cfg: cfg, eng: cfg.Engine, store: cfg.Store, clock: cfg.Clock, log: cfg.Logger,
		acts: map[string]*activity{}, cold: map[string]coldStarts{}, ticks: map[string]tickView{},
		startedAt: cfg.Clock.Now(),
		// Pings re-derive a pending signal every interval (10 s for runpod-python), and a worker
		// is lost after LostAfter without one: a signal no ping listed for twice that long
		// belongs to a worker that is gone or that stopped the job. Never longer than the
		// sightings are kept, so a forgotten worker's signals are gone too.
		stops: newStopSet(min(2*cfg.LostAfter, forgetAfter)),
	}
	cfg.Engine.ObserveWorkers(f)
	return f, nil
}

// Start runs the lost-worker sweep every SweepInterval, while this process leads, until Stop.
func (f *Fleet) Start(ctx context.Context) error {
	f.startOnce.Do(func() {
		f.startedAt = f.clock.Now()
		ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f.cancel = cancel
		f.done = make(chan struct{})
		go f.sweepLoop(ctx)
	})
	return nil
}

// Stop ends the sweep. Idempotent.
func (f *Fleet) Stop() {
	f.stopOnce.Do(func() {
		if f.cancel != nil {
			f.cancel()
			<-f.done
		}
	})
}

func (f *Fleet) sweepLoop(ctx context.Context) {
	defer close(f.done)
	leader.Run(ctx, f.cfg.Leader, f.clock, f.cfg.SweepInterval, func(ctx context.Context) {
		if _, err := f.Sweep(ctx); err != nil && ctx.Err() == nil {
			f.log.Error("worker sweep failed", "err", err)
		}
	})
}

// forgetAfter is how long a worker's sighting is kept after it was last seen: the worker list
// shows lost workers for that long, then forgets them.
const forgetAfter = time.Hour

// SweepResult counts what one sweep did.
type SweepResult struct {
	// Lost counts the workers found lost; Requeued and Failed their jobs.
	Lost, Requeued, Failed int
	// Forgotten counts the sightings deleted (workers gone for an hour).
	Forgotten int
}

// Sweep runs one pass of the lost-worker sweep: the jobs of workers unseen for LostAfter go back
// to the queue (or fail past their retries), with the stop signals those workers' pings left, and
// workers gone for an hour are forgotten. Tests call it directly after moving a fake clock.
func (f *Fleet) Sweep(ctx context.Context) (SweepResult, error) {
	var res SweepResult
	now := f.now()
	f.stops.prune(now)
	if now.Sub(f.startedAt) >= f.cfg.LostAfter {
		seenBefore := now.Add(-f.cfg.LostAfter)
		held, err := f.store.HeldJobs(ctx, store.HeldJobsParams{SeenBefore: seenBefore})
		if err != nil {
			return res, fmt.Errorf("find lost workers: %w", err)
		}
		// Each job as it was held, and only while its worker is still unseen: a worker that
		// came back since the read keeps its jobs.
		n, err := f.eng.LoseJobs(ctx, held, "no ping for "+f.cfg.LostAfter.String(), seenBefore)
		res.Lost, res.Requeued, res.Failed = n.Workers, n.Requeued, n.Failed
		// Their pings' signals go with them; a worker that came back since has newer ones.
		for _, h := range held {
			f.stops.forget(h.WorkerID, seenBefore)
		}
		if err != nil {
			return res, err
		}
	}
	// Forget workers long gone, so the worker list does not grow without bound.
	n, err := f.store.DeleteWorkers(ctx, store.DeleteWorkersParams{SeenBefore: now.Add(-forgetAfter)})
	if err != nil {
		return res, fmt.Errorf("forget old workers: %w", err)
	}
	res.Forgotten = n
	if res.Lost > 0 {
		f.log.Info("workers lost", "workers", res.Lost, "requeued", res.Requeued, "failed", res.Failed)
	}
	return res, nil
}

// Seen records that a worker of endpoint made a request, at most once per LostAfter/6: every
// request proves it alive, but writing each one (a busy worker posts many chunks a second) would
// only load the store. CodeNotFound for an unknown endpoint, CodeInvalid for a worker id
// spool.CheckWorkerID refuses, and nothing is recorded then.
func (f *Fleet) Seen(ctx context.Context, endpoint, worker string) error {
	if _, err := f.eng.Endpoint(endpoint); err != nil {
		return err
	}
	if err := spool.CheckWorkerID(worker); err != nil {
		return err
	}
	now := f.now()
	if !f.sighted.due(worker, now, f.cfg.LostAfter/6) {
		return nil
	}
	return f.touch(ctx, endpoint, worker, now, "")
}

func (f *Fleet) touch(ctx context.Context, endpoint, worker string, now time.Time, version string) error {
	err := f.store.TouchWorker(ctx, store.TouchWorkerParams{ID: worker, Endpoint: endpoint, Now: now, Version: version})
	if errors.Is(err, store.ErrClosed) {
		return &spool.Error{Code: spool.CodeUnavailable, Message: "server is shutting down"}
	}
	if err != nil {
		return fmt.Errorf("record worker %s: %w", worker, err)
	}
	return nil
}

// coldStartEnded records that a's worker, of slot s, first asked for work at t (f.mu held).
func (f *Fleet) coldStartEnded(a *activity, s *slot, t time.Time) {
	a.firstTake = t
	c := f.cold[s.endpoint]
	d := max(t.Sub(s.startedAt), 0)
	c.count++
	c.last, c.total = d, c.total+d
	f.cold[s.endpoint] = c
	if f.cfg.OnColdStart != nil {
		f.cfg.OnColdStart(s.endpoint, d)
	}
}

// TakeRequested records a job-take request of a worker (before it waits for work): the first one
// of a worker the autoscaler started ends its cold start, and asking for work again shows it is
// done with the jobs it was told to stop.
func (f *Fleet) TakeRequested(worker string) {
	f.activity(worker, func(a *activity, s *slot, now time.Time) {
		if a.firstTake.IsZero() && s != nil {
			f.coldStartEnded(a, s, now)
		}
		for id, since := range a.mustStop {
			if !since.After(now) {
				delete(a.mustStop, id)
			}
		}
	})
}

// MaxPingedJobs bounds the jobs one ping may list: a worker holds as many jobs as it runs at once.
const MaxPingedJobs = 1024

// HeartbeatParams is a decoded worker ping.
type HeartbeatParams struct {
	Endpoint string
	WorkerID string
	// JobIDs are the jobs the worker says it holds.
	JobIDs []string
	// Version is the SDK version the worker reports (runpod_version), if any.
	Version string
}

// Heartbeat records a ping and compares the jobs the worker lists with what it holds: a listed job
// of the endpoint that moved on without it (or that the server ended) is signalled on its job-stop
// channel, and, when the ping names its SDK version (runpod-python and Spool's SDK list the jobs
// they hold), a held job it no longer lists goes back to the queue. Listed ids the server does not
// know are ignored (engine.Reconcile).
func (f *Fleet) Heartbeat(ctx context.Context, p HeartbeatParams) error {
	if _, err := f.eng.Endpoint(p.Endpoint); err != nil {
		return err
	}
	if err := spool.CheckWorkerID(p.WorkerID); err != nil {
		return err
	}
	if len(p.JobIDs) > MaxPingedJobs {
		return spool.Errorf(spool.CodeInvalid, "a ping lists at most %d jobs, got %d", MaxPingedJobs, len(p.JobIDs))
	}
	now := f.now()
	if err := f.touch(ctx, p.Endpoint, p.WorkerID, now, p.Version); err != nil {
		return err
	}
	trusted := p.Version != ""
	if trusted {
		f.activity(p.WorkerID, func(a *activity, _ *slot, _ time.Time) {
			for id := range a.mustStop { // no longer listed: it stopped
				if !slices.Contains(p.JobIDs, id) {
					delete(a.mustStop, id)
				}
			}
		})
	}
	rp := engine.ReconcileParams{Endpoint: p.Endpoint, WorkerID: p.WorkerID, JobIDs: p.JobIDs}
	if trusted {
		// A ping sent before a take may arrive after it (runpod-python retries pings with backoff,
		// with a timeout of two intervals): only jobs taken well before are forgotten.
		rp.ForgottenBefore = now.Add(-2 * f.cfg.LostAfter)
	}
	movedOn, err := f.eng.Reconcile(ctx, rp)
	signalled := false
	for _, id := range movedOn {
		signalled = f.stops.add(p.WorkerID, id, now) || signalled
	}
	if signalled {
		f.cfg.Notifier.Notify(notify.Stop(p.WorkerID))
	}
	return err
}

// StopSignals returns the ids of jobs the worker must stop, waiting up to wait for one: jobs the
// server ended while it held them, and jobs its pings list that it no longer holds. Each id is
// delivered once; a ping that still lists a moved-on job makes it pending again. It answers at
// once, with nothing, once the engine drains.
func (f *Fleet) StopSignals(ctx context.Context, endpoint, worker string, wait time.Duration) ([]string, error) {
	if err := f.Seen(ctx, endpoint, worker); err != nil {
		return nil, err
	}
	ids, _, err := notify.Poll(ctx, f.cfg.Notifier, f.clock, notify.Stop(worker),
		notify.Wait{For: wait, Recheck: f.cfg.Recheck, Done: f.eng.Drained()},
		func() ([]string, bool, error) {
			if f.eng.Draining() {
				return nil, false, nil
			}
			ids, err := f.eng.AckStops(ctx, endpoint, worker)
			if err != nil {
				return nil, false, err
			}
			for _, id := range f.stops.take(worker, f.now()) {
				if !slices.Contains(ids, id) {
					ids = append(ids, id)
				}
			}
			slices.Sort(ids)
			return ids, len(ids) > 0, nil
		})
	return ids, err
}

// JobHanded implements engine.WorkerObserver.
func (f *Fleet) JobHanded(worker, _ string) {
	f.activity(worker, func(a *activity, _ *slot, now time.Time) { a.lastHanded = now })
}

// JobReleased implements engine.WorkerObserver.
func (f *Fleet) JobReleased(worker, _ string) {
	f.activity(worker, func(a *activity, _ *slot, now time.Time) { a.lastReleased = now })
}

// JobMustStop implements engine.WorkerObserver.
func (f *Fleet) JobMustStop(worker, job string) {
	f.activity(worker, func(a *activity, _ *slot, now time.Time) {
		if _, ok := a.mustStop[job]; !ok {
			a.mustStop[job] = now
		}
	})
}

// RestartAsked implements engine.WorkerObserver.
func (f *Fleet) RestartAsked(worker string) {
	f.activity(worker, func(a *activity, _ *slot, _ time.Time) { a.stopPod = true })
}

// activity runs fn on the activity of a worker the autoscaler runs, with its slot, under the lock;
// nothing for other workers, whose activity nobody acts on.
func (f *Fleet) activity(worker string, fn func(a *activity, s *slot, now time.Time)) {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if a, ok := f.acts[worker]; ok {
		fn(a, f.liveSlot(worker), now)
	}
}

// now is the clock's time at millisecond precision, the stores' precision.
func (f *Fleet) now() time.Time { return f.clock.Now().Truncate(time.Millisecond) }
