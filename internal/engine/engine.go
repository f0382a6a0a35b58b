// Package engine owns Spool's jobs and nothing else: the state machine of docs/contract.md §3,
// submission, dispatch by priority, leases fenced by attempt, results, cancellation, retries, the
// endpoints jobs belong to, and the sweeper that expires queued jobs, times out running ones and
// deletes expired results. Workers are internal/fleet's; it hears what job changes mean for them
// through the WorkerObserver, and tells the engine when a worker is gone.
//
// Every change is a targeted, conditional store write (store.JobUpdate) that a method decides from
// the job it read or from the worker's fence, and everything that follows a committed change
// (waking waiters through the Notifier, the observers, the webhook dispatcher) is derived in one
// place, effectsOf, from the change alone. HTTP layers call the engine; it calls the store. Every
// time it reads comes from the injected clock.
package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/leader"
	"github.com/spool-run/spool/internal/notify"
	"github.com/spool-run/spool/internal/secret"
	"github.com/spool-run/spool/store"
)

// Config configures an Engine.
type Config struct {
	// Store is where jobs live. Required.
	Store store.Store
	// Clock is the time source. Defaults to the wall clock.
	Clock clock.Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Retention is how long terminal jobs stay readable. Defaults to 30 min for /run, 1 min for
	// /runsync.
	Retention spool.Retention
	// MaxRetries is how many times a job goes back to the queue after losing its worker before it
	// fails instead. Defaults to 3.
	MaxRetries int
	// SweepInterval is how often the sweeper runs. Defaults to 1 s.
	SweepInterval time.Duration
	// Observer hears about transitions after they commit (metrics). Optional.
	Observer Observer
	// WebhookPayload builds the webhook body of a job that just ended (the /status object plus
	// input and webhook). The delivery is enqueued in the same transaction as the terminal
	// transition, with the payload built then, so it survives the job's retention. It runs inside
	// the store's transaction: it must be fast. Nil enqueues no webhooks.
	WebhookPayload func(*spool.Job) json.RawMessage
	// Notifier wakes what waits for a job, a queue, a worker's stop channel or the webhook
	// outbox once a change has committed, and carries endpoint changes between replicas. Defaults
	// to a notify.Hub of this process alone.
	Notifier notify.Notifier
	// Leader says whether this process runs the sweeper; a replica that does not lead skips its
	// rounds. Defaults to leader.Always.
	Leader leader.Leader
	// Recheck is the safety interval of every wait: without a notification, a waiter looks at the
	// store again this often, and the endpoint cache reloads, so that a notification lost between
	// replicas delays, never loses. Defaults to 10 s.
	Recheck time.Duration
	// Sealer encrypts s3Configs at rest (the store sees only ciphertext) and decrypts them for
	// the job-take answer. Defaults to a random key kept in memory only, so that s3Configs of
	// jobs queued before a restart cannot be opened after it: servers pass the persisted key.
	Sealer Sealer
}

// Observer is told about job transitions once they are committed. Its methods must be fast and
// must not block: they run on the request path.
type Observer interface {
	// JobSubmitted: a new job entered the queue.
	JobSubmitted(endpoint string)
	// JobStarted: a worker took a job that waited delay in the queue.
	JobStarted(endpoint string, delay time.Duration)
	// JobFinished: a job reached a terminal state; taken says whether a worker ran it, for ran.
	JobFinished(endpoint string, state spool.State, ran time.Duration, taken bool)
	// JobRequeued: a job went back to the queue; reason is "lost_worker", "undelivered" or "retry".
	JobRequeued(endpoint, reason string)
}

// Observers tells each of obs of every event, in order.
func Observers(obs ...Observer) Observer { return observers(obs) }

type observers []Observer

func (o observers) JobSubmitted(ep string) {
	for _, x := range o {
		x.JobSubmitted(ep)
	}
}

func (o observers) JobStarted(ep string, delay time.Duration) {
	for _, x := range o {
		x.JobStarted(ep, delay)
	}
}

func (o observers) JobFinished(ep string, state spool.State, ran time.Duration, taken bool) {
	for _, x := range o {
		x.JobFinished(ep, state, ran, taken)
	}
}

func (o observers) JobRequeued(ep, reason string) {
	for _, x := range o {
		x.JobRequeued(ep, reason)
	}
}

type nopObserver struct{}

func (nopObserver) JobSubmitted(string)                                  {}
func (nopObserver) JobStarted(string, time.Duration)                     {}
func (nopObserver) JobFinished(string, spool.State, time.Duration, bool) {}
func (nopObserver) JobRequeued(string, string)                           {}

// WorkerObserver hears what committed job changes mean for the workers that hold them: the fleet
// records it. Its methods must be fast and must not block: they run on the request path.
type WorkerObserver interface {
	// JobHanded: a take gave worker the job.
	JobHanded(worker, job string)
	// JobReleased: worker no longer holds the job (it ended, or went back to the queue).
	JobReleased(worker, job string)
	// JobMustStop: the server ended (or must signal again) a job worker still runs.
	JobMustStop(worker, job string)
	// RestartAsked: worker's result asked for the worker to be restarted (stopPod).
	RestartAsked(worker string)
}

// ObserveWorkers makes the engine tell w what its job changes mean for workers (the fleet does
// this once, when it is made). It replaces the previous WorkerObserver.
func (e *Engine) ObserveWorkers(w WorkerObserver) {
	e.workersMu.Lock()
	e.workers = w
	e.workersMu.Unlock()
}

func (e *Engine) workerObserver() WorkerObserver {
	e.workersMu.Lock()
	defer e.workersMu.Unlock()
	return e.workers
}

// Drained returns a channel closed once Drain has been called: long-polls of the fleet answer at
// once then, as the engine's do.
func (e *Engine) Drained() <-chan struct{} { return e.draining }

func (c Config) withDefaults() Config {
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Retention.Run == 0 {
		c.Retention.Run = 30 * time.Minute
	}
	if c.Retention.Sync == 0 {
		c.Retention.Sync = time.Minute
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 3
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = time.Second
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.Sealer == nil {
		c.Sealer = secret.NewRandom()
	}
	if c.Notifier == nil {
		c.Notifier = notify.NewHub()
	}
	if c.Leader == nil {
		c.Leader = leader.Always{}
	}
	if c.Recheck == 0 {
		c.Recheck = 10 * time.Second
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Store == nil:
		return errors.New("engine: Store is required")
	case c.Retention.Run < 0 || c.Retention.Sync < 0:
		return errors.New("engine: Retention must not be negative")
	case c.MaxRetries < 0:
		return errors.New("engine: MaxRetries must not be negative")
	case c.SweepInterval < 0:
		return errors.New("engine: SweepInterval must not be negative")
	case c.Recheck < 0:
		return errors.New("engine: Recheck must not be negative")
	}
	return nil
}

// Engine is the job state machine. It is safe for concurrent use.
type Engine struct {
	cfg      Config
	store    store.Store
	clock    clock.Clock
	log      *slog.Logger
	notifier notify.Notifier
	obs      Observer

	workersMu sync.Mutex
	workers   WorkerObserver

	mu          sync.RWMutex
	endpoints   map[string]spool.Endpoint
	endpointsAt time.Time // when the cache was loaded
	// endpointsGen counts the edits made here, so that a reload that read the store before an
	// edit does not undo it.
	endpointsGen int
	// endpointsChanged is set by a notification of notify.Endpoints; reloading allows one
	// reload at a time (freshEndpoints).
	endpointsChanged *notify.Flag
	reloading        sync.Mutex

	draining  chan struct{}
	drainOnce sync.Once

	// gates holds a *takeGate per endpoint (see Take).
	gates sync.Map

	stopOnce sync.Once
	cancel   context.CancelFunc
	done     chan struct{}
}

// New returns an engine. Call Start to load endpoints and run the sweeper.
func New(cfg Config) (*Engine, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Engine{
		cfg:       cfg,
		store:     cfg.Store,
		clock:     cfg.Clock,
		log:       cfg.Logger,
		notifier:  cfg.Notifier,
		obs:       cfg.Observer,
		endpoints: make(map[string]spool.Endpoint),
		draining:  make(chan struct{}),
	}, nil
}

// Config returns the engine's effective configuration (defaults filled in).
func (e *Engine) Config() Config { return e.cfg }

// Start loads the endpoints and starts the sweeper. The sweeper runs until Stop, every
// SweepInterval while this process leads.
func (e *Engine) Start(ctx context.Context) error {
	e.endpointsChanged = notify.NewFlag(e.notifier, notify.Endpoints)
	if err := e.loadEndpoints(ctx); err != nil {
		return err
	}
	if err := e.upgradeStored(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	e.cancel = cancel
	e.done = make(chan struct{})
	go e.sweepLoop(ctx)
	return nil
}

// Stop stops the sweeper and waits for it. Idempotent; it does not close the store.
func (e *Engine) Stop() {
	e.stopOnce.Do(func() {
		e.Drain()
		if e.cancel != nil {
			e.cancel()
			<-e.done
		}
		if e.endpointsChanged != nil {
			e.endpointsChanged.Close()
		}
	})
}

// Draining reports whether Drain has been called.
func (e *Engine) Draining() bool {
	select {
	case <-e.draining:
		return true
	default:
		return false
	}
}

// Drain makes every long-poll and wait answer at once, now and from now on: the first step of a
// graceful shutdown. Idempotent.
func (e *Engine) Drain() { e.drainOnce.Do(func() { close(e.draining) }) }

func (e *Engine) sweepLoop(ctx context.Context) {
	defer close(e.done)
	leader.Run(ctx, e.cfg.Leader, e.clock, e.cfg.SweepInterval, func(ctx context.Context) {
		if _, err := e.Sweep(ctx); err != nil && ctx.Err() == nil {
			e.log.Error("sweep failed", "err", err)
		}
	})
}

// poll is notify.Poll on the engine's notifier and clock: it calls look until it reports done,
// waiting between looks for a notification of topic (or the safety recheck), for at most wait;
// done is false when wait ran out or the engine drained (with a nil error) or ctx ended (with its
// error).
func poll[T any](ctx context.Context, e *Engine, topic notify.Topic, wait time.Duration, look func() (T, bool, error)) (T, bool, error) {
	return notify.Poll(ctx, e.notifier, e.clock, topic, notify.Wait{For: wait, Recheck: e.cfg.Recheck, Done: e.draining}, look)
}

// now is the clock's time at millisecond precision: the precision the stores keep, so a job read
// back compares equal to the one written.
func (e *Engine) now() time.Time { return e.clock.Now().Truncate(time.Millisecond) }

// translate turns store sentinels into coded errors for the wire.
func translate(err error, what string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return spool.Errorf(spool.CodeNotFound, "%s not found", what)
	case errors.Is(err, store.ErrClosed):
		return &spool.Error{Code: spool.CodeUnavailable, Message: "server is shutting down"}
	}
	var coded *spool.Error
	if errors.As(err, &coded) {
		return err
	}
	return fmt.Errorf("%s: %w", what, err)
}
