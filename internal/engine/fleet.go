package engine

import (
	"context"
	"sync"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/notify"
	"github.com/spool-run/spool/store"
)

// Worker states the autoscaler adds for the workers it starts (CONTRACT.md §4).
const (
	WorkerInitializing = "initializing"
	WorkerThrottled    = "throttled"
	WorkerUnhealthy    = "unhealthy"
)

// Wait reasons of a queued job (GET /api/jobs/{id}).
const (
	WaitNoWorkersYet    = "no_workers_yet"
	WaitScalingUp       = "scaling_up"
	WaitInitializing    = "workers_initializing"
	WaitMaxWorkers      = "max_workers_reached"
	WaitUnhealthy       = "workers_unhealthy"
	WaitGPUsUnavailable = "gpus_unavailable"
	WaitLowPriorityIdle = "low_priority_waits_for_idle_worker"
)

// Fleet is the autoscaler as the engine's read paths see it: the states of the workers it runs
// and why a queued job waits. Its methods are called without engine locks held and must not call
// back into Engine.Workers, Engine.Health or Engine.WaitInfo.
type Fleet interface {
	// ManagedWorkers lists the workers the fleet runs (or wants: throttled and unhealthy ones)
	// for endpoint ("" for all).
	ManagedWorkers(endpoint string) []ManagedWorker
	// Retired reports whether worker is one the fleet started and has since stopped: its sighting
	// in the store is history, not a live worker.
	Retired(worker string) bool
	// WaitReason explains why a queued job of a fleet-run endpoint waits; ok is false for an
	// endpoint whose workers the fleet does not run.
	WaitReason(j *spool.Job, qs store.QueueStats) (reason string, ok bool)
	// ColdStarts reports, per endpoint, the time its workers took from start to first take.
	ColdStarts() map[string]ColdStart
}

// ColdStart summarises an endpoint's cold starts.
type ColdStart struct {
	Count     int
	Last, Avg time.Duration
}

// ColdStarts reports the fleet's cold starts per endpoint (none without a fleet).
func (e *Engine) ColdStarts() map[string]ColdStart {
	if f := e.getFleet(); f != nil {
		return f.ColdStarts()
	}
	return map[string]ColdStart{}
}

// ManagedWorker is a worker as the fleet reports it.
type ManagedWorker struct {
	ID        string
	Endpoint  string
	State     string
	GPUs      []string
	StartedAt time.Time
	LogTail   []string
	// Error says why an unhealthy or throttled worker is so.
	Error string
}

// Activity is what the engine saw a managed worker do (Engine.Manage).
type Activity struct {
	// FirstTake and LastTake are the first and the latest job-take requests.
	FirstTake, LastTake time.Time
	// LastJob is the latest take that handed the worker jobs.
	LastJob time.Time
	// LastPing is the latest heartbeat.
	LastPing time.Time
	// StopPod: a result of the worker asked for it to be restarted.
	StopPod bool
	// MustStop holds the jobs the server ended (cancel, timeout) while the worker ran them, with
	// when; an entry goes once the worker shows it stopped (a take request after it, or a ping
	// that no longer lists the job).
	MustStop map[string]time.Time
}

type fleetState struct {
	mu    sync.Mutex
	fleet Fleet
	acts  map[string]*Activity
}

// SetFleet makes the engine report the fleet's worker states (Workers, Health, WaitInfo).
func (e *Engine) SetFleet(f Fleet) {
	e.fleet.mu.Lock()
	e.fleet.fleet = f
	e.fleet.mu.Unlock()
}

func (e *Engine) getFleet() Fleet {
	e.fleet.mu.Lock()
	defer e.fleet.mu.Unlock()
	return e.fleet.fleet
}

// Manage starts recording the Activity of a worker the autoscaler started.
func (e *Engine) Manage(worker string) {
	e.fleet.mu.Lock()
	defer e.fleet.mu.Unlock()
	if e.fleet.acts == nil {
		e.fleet.acts = make(map[string]*Activity)
	}
	e.fleet.acts[worker] = &Activity{MustStop: map[string]time.Time{}}
}

// Forget stops recording a worker's Activity.
func (e *Engine) Forget(worker string) {
	e.fleet.mu.Lock()
	defer e.fleet.mu.Unlock()
	delete(e.fleet.acts, worker)
}

// WorkerActivity returns a copy of a managed worker's Activity.
func (e *Engine) WorkerActivity(worker string) (Activity, bool) {
	e.fleet.mu.Lock()
	defer e.fleet.mu.Unlock()
	a, ok := e.fleet.acts[worker]
	if !ok {
		return Activity{}, false
	}
	c := *a
	c.MustStop = make(map[string]time.Time, len(a.MustStop))
	for id, t := range a.MustStop {
		c.MustStop[id] = t
	}
	return c, true
}

// ClearStopPod forgets a handled stopPod request.
func (e *Engine) ClearStopPod(worker string) {
	e.fleet.mu.Lock()
	defer e.fleet.mu.Unlock()
	if a, ok := e.fleet.acts[worker]; ok {
		a.StopPod = false
	}
}

// activity runs fn on a managed worker's Activity; nothing for other workers.
func (e *Engine) activity(worker string, fn func(a *Activity, now time.Time)) {
	e.fleet.mu.Lock()
	defer e.fleet.mu.Unlock()
	if a, ok := e.fleet.acts[worker]; ok {
		fn(a, e.now())
	}
}

// noteTake records a job-take request (got == 0) or its answer with jobs.
func (e *Engine) noteTake(worker string, got int) {
	e.activity(worker, func(a *Activity, now time.Time) {
		if got > 0 {
			a.LastJob = now
			return
		}
		if a.FirstTake.IsZero() {
			a.FirstTake = now
		}
		a.LastTake = now
		for id, t := range a.MustStop {
			if !t.After(now) { // asking for work again: it is done with what it was told to stop
				delete(a.MustStop, id)
			}
		}
	})
}

// notePing records a heartbeat; a ping that lists its jobs (versioned) clears the stop
// obligations of the jobs it no longer lists.
func (e *Engine) notePing(worker string, jobIDs []string, trusted bool) {
	e.activity(worker, func(a *Activity, now time.Time) {
		a.LastPing = now
		if !trusted {
			return
		}
		listed := make(map[string]bool, len(jobIDs))
		for _, id := range jobIDs {
			listed[id] = true
		}
		for id := range a.MustStop {
			if !listed[id] {
				delete(a.MustStop, id)
			}
		}
	})
}

// noteJob records what a committed job change asks of its managed worker.
func (e *Engine) noteJob(j *spool.Job) {
	if j.WorkerID == "" {
		return
	}
	e.activity(j.WorkerID, func(a *Activity, now time.Time) {
		if j.StopPending {
			if _, ok := a.MustStop[j.ID]; !ok {
				a.MustStop[j.ID] = now
			}
		}
		if j.StopPod && j.EndedByWorker && j.State.Terminal() {
			a.StopPod = true
		}
	})
}

// HeldJobs maps each worker of endpoint to the ids of the IN_PROGRESS jobs it holds.
func (e *Engine) HeldJobs(ctx context.Context, endpoint string) (map[string][]string, error) {
	running, err := e.store.ListJobs(ctx, store.ListJobsParams{
		Endpoint: endpoint, States: []spool.State{spool.StateInProgress}, Limit: 100000,
	})
	if err != nil {
		return nil, translate(err, "list jobs")
	}
	held := make(map[string][]string)
	for _, j := range running {
		held[j.WorkerID] = append(held[j.WorkerID], j.ID)
	}
	return held, nil
}

// QueueStats describes an endpoint's queue (and a job's place in it when jobID is set).
func (e *Engine) QueueStats(ctx context.Context, endpoint, jobID string) (store.QueueStats, error) {
	qs, err := e.store.QueueStats(ctx, store.QueueStatsParams{Endpoint: endpoint, JobID: jobID})
	return qs, translate(err, "queue of "+endpoint)
}

// LoseWorkerJobs handles a worker known to be gone (its process exited or was killed) at once,
// without waiting for missed pings: every job it holds goes back to the queue, or fails once its
// retries are used up, with why in the error. It returns the number of jobs it changed.
func (e *Engine) LoseWorkerJobs(ctx context.Context, worker, why string) (int, error) {
	now := e.now()
	jobs, err := e.store.UpdateJobs(ctx, store.UpdateJobsParams{
		Filter: store.JobFilter{WorkerID: worker, States: []spool.State{spool.StateInProgress}},
		Apply: guarded(func(j *spool.Job) error {
			e.loseWorker(j, now, why)
			return nil
		}),
	})
	if err != nil {
		return 0, translate(err, "worker "+worker)
	}
	for _, j := range jobs {
		e.notifyJob(j)
		e.notifier.Notify(notify.Work(j.Endpoint))
		e.observeLoss(j, "lost_worker")
	}
	return len(jobs), nil
}

// WaitInfo says where a queued job stands: its position in dispatch order, how long it has
// waited and why.
type WaitInfo struct {
	Position int
	Wait     time.Duration
	Reason   string
}

// WaitInfo explains a queued job's wait; the zero WaitInfo for a job that is not queued.
func (e *Engine) WaitInfo(ctx context.Context, j *spool.Job) (WaitInfo, error) {
	if j.State != spool.StateInQueue {
		return WaitInfo{}, nil
	}
	qs, err := e.QueueStats(ctx, j.Endpoint, j.ID)
	if err != nil {
		return WaitInfo{}, err
	}
	info := WaitInfo{Position: qs.Position, Wait: max(e.now().Sub(j.QueuedAt), 0)}
	if f := e.getFleet(); f != nil {
		if r, ok := f.WaitReason(j, qs); ok {
			info.Reason = r
			return info, nil
		}
	}
	// Workers started outside Spool: all that is known is who was seen.
	ws, err := e.Workers(ctx, j.Endpoint)
	if err != nil {
		return WaitInfo{}, err
	}
	idle, live := 0, 0
	for _, w := range ws {
		switch w.State {
		case WorkerIdle:
			idle++
			live++
		case WorkerRunning:
			live++
		}
	}
	switch {
	case j.Policy.LowPriority && (qs.Normal > 0 || idle == 0):
		info.Reason = WaitLowPriorityIdle
	case live == 0:
		info.Reason = WaitNoWorkersYet
	default:
		info.Reason = WaitMaxWorkers // every worker there is holds a job
	}
	return info, nil
}

// mergeFleet overlays the fleet's states on the workers derived from sightings: a managed
// worker's state is the fleet's, retired workers are dropped, and managed workers not seen yet
// (initializing, throttled, unhealthy) are added.
func (e *Engine) mergeFleet(endpoint string, ws []WorkerInfo) []WorkerInfo {
	f := e.getFleet()
	if f == nil {
		return ws
	}
	managed := f.ManagedWorkers(endpoint)
	byID := make(map[string]ManagedWorker, len(managed))
	for _, m := range managed {
		byID[m.ID] = m
	}
	out := ws[:0]
	for _, w := range ws {
		if m, ok := byID[w.ID]; ok {
			w.State, w.GPUs, w.StartedAt, w.LogTail, w.Error = m.State, m.GPUs, m.StartedAt, m.LogTail, m.Error
			delete(byID, w.ID)
		} else if f.Retired(w.ID) {
			continue
		}
		out = append(out, w)
	}
	for _, m := range managed {
		if _, ok := byID[m.ID]; !ok {
			continue
		}
		out = append(out, WorkerInfo{
			Worker: store.Worker{ID: m.ID, Endpoint: m.Endpoint},
			State:  m.State, GPUs: m.GPUs, StartedAt: m.StartedAt, LogTail: m.LogTail, Error: m.Error,
		})
	}
	return out
}
