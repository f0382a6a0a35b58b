package fleet

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// facts is what a worker's state is computed from.
type facts struct {
	slot *slot     // the autoscaler's slot of the worker; nil for a worker started elsewhere
	act  *activity // what the slot's worker did; nil without a process
	held int       // the jobs it holds
	// lastSeen is when a worker started elsewhere was last seen; lostBefore the instant before
	// which that makes it lost.
	lastSeen, lostBefore time.Time
}

// stateOf is the one place that says what state a worker is in (docs/contract.md §4).
func stateOf(x facts) spool.WorkerState {
	switch {
	case x.slot != nil && x.slot.worker == "" && x.slot.throttled != "":
		return spool.WorkerThrottled
	case x.slot != nil && x.slot.worker == "" && x.slot.fault != "":
		return spool.WorkerUnhealthy
	case x.slot != nil && (x.act == nil || x.act.firstTake.IsZero()):
		return spool.WorkerInitializing // started, or about to be, and no job asked for yet
	case x.slot == nil && !x.lastSeen.After(x.lostBefore):
		return spool.WorkerLost
	case x.held > 0:
		return spool.WorkerRunning
	default:
		return spool.WorkerIdle
	}
}

// Worker is a worker as /api/workers shows it.
type Worker struct {
	ID       string
	Endpoint string
	State    spool.WorkerState
	// Jobs are the jobs it holds.
	Jobs []string
	// FirstSeen, LastSeen and Version are from its sightings (zero for a worker not seen yet).
	FirstSeen, LastSeen time.Time
	Version             string
	// GPUs, StartedAt, LogTail and Error are known for the workers the autoscaler runs; Error
	// says why an unhealthy or throttled worker is so, and Since since when.
	GPUs      []string
	StartedAt time.Time
	LogTail   []string
	Error     string
	Since     time.Time
}

// logTail is how many lines of a worker's output Workers shows.
const logTail = 20

// Workers lists the workers of an endpoint ("" for all): those seen (sightings), with the state
// of the autoscaler's slots for the workers it runs, and its slots not seen yet (initializing,
// throttled, unhealthy). Workers the autoscaler let go are history and not listed.
func (f *Fleet) Workers(ctx context.Context, endpoint string) ([]Worker, error) {
	seen, err := f.store.ListWorkers(ctx, store.ListWorkersParams{Endpoint: endpoint})
	if err != nil {
		return nil, fmt.Errorf("list workers: %w", err)
	}
	held, err := f.heldBy(ctx, endpoint)
	if err != nil {
		return nil, err
	}
	lostBefore := f.clock.Now().Add(-f.cfg.LostAfter)
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Worker, 0, len(seen))
	listed := map[string]bool{}
	byID := make(map[string]int, len(seen))
	for i, r := range seen {
		byID[r.ID] = i
		s := f.liveSlot(r.ID)
		if s == nil && f.retired.ids[r.ID] {
			continue
		}
		w := Worker{ID: r.ID, Endpoint: r.Endpoint, Jobs: held[r.ID], FirstSeen: r.FirstSeen, LastSeen: r.LastSeen, Version: r.Version}
		if s != nil {
			f.slotView(&w, s, len(w.Jobs))
			listed[r.ID] = true
		} else {
			w.State = stateOf(facts{held: len(w.Jobs), lastSeen: r.LastSeen, lostBefore: lostBefore})
		}
		out = append(out, w)
	}
	for _, s := range f.slots {
		if (endpoint != "" && s.endpoint != endpoint) || (s.worker != "" && listed[s.worker]) {
			continue
		}
		w := Worker{ID: s.worker, Endpoint: s.endpoint, Jobs: held[s.worker]}
		if s.worker == "" {
			w.Jobs = nil
		}
		f.slotView(&w, s, len(w.Jobs))
		if i, ok := byID[w.ID]; ok && s.worker == "" {
			// The worker that failed, as it was last seen.
			w.FirstSeen, w.LastSeen, w.Version = seen[i].FirstSeen, seen[i].LastSeen, seen[i].Version
		}
		out = append(out, w)
	}
	return out, nil
}

// slotView fills in what a slot adds to a worker (f.mu held).
func (f *Fleet) slotView(w *Worker, s *slot, held int) {
	var a *activity
	if s.worker != "" {
		a = f.acts[s.worker]
	}
	w.State = stateOf(facts{slot: s, act: a, held: held})
	w.GPUs, w.Error = slices.Clone(s.gpus), s.throttled+s.fault
	switch {
	case s.worker != "":
		w.StartedAt = s.startedAt
		if s.logs != nil {
			w.LogTail = tail(s.logs(), logTail)
		}
		if s.status != nil && w.State == spool.WorkerInitializing {
			w.Error = s.status()
		}
	default:
		// No process: the slot shows the worker that failed (its output kept) or the one it
		// will start (throttled).
		w.ID, w.Since = s.lastWorker, s.since
		if w.ID == "" {
			w.ID = s.endpoint + "-slot-" + strconv.Itoa(s.id) // a slot not tried yet
		}
		w.LogTail = tail(s.lastLogs, logTail)
	}
}

func tail(lines []string, n int) []string {
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return slices.Clone(lines)
}

// Counts is the number of an endpoint's workers in each state, as /health shows it.
type Counts struct {
	Idle, Initializing, Running, Throttled, Unhealthy int
}

// Ready counts the workers that are up and can work: idle or running.
func (c Counts) Ready() int { return c.Idle + c.Running }

// Counts counts an endpoint's workers by state. Lost workers are not counted: they are gone.
func (f *Fleet) Counts(ctx context.Context, endpoint string) (Counts, error) {
	ws, err := f.Workers(ctx, endpoint)
	if err != nil {
		return Counts{}, err
	}
	var c Counts
	for _, w := range ws {
		switch w.State {
		case spool.WorkerIdle:
			c.Idle++
		case spool.WorkerInitializing:
			c.Initializing++
		case spool.WorkerRunning:
			c.Running++
		case spool.WorkerThrottled:
			c.Throttled++
		case spool.WorkerUnhealthy:
			c.Unhealthy++
		}
	}
	return c, nil
}

// WaitReason says why a queued job waits (GET /api/jobs/{id}).
type WaitReason string

// Wait reasons.
const (
	WaitNoWorkersYet    WaitReason = "no_workers_yet"
	WaitScalingUp       WaitReason = "scaling_up"
	WaitInitializing    WaitReason = "workers_initializing"
	WaitMaxWorkers      WaitReason = "max_workers_reached"
	WaitUnhealthy       WaitReason = "workers_unhealthy"
	WaitGPUsUnavailable WaitReason = "gpus_unavailable"
	WaitLowPriorityIdle WaitReason = "low_priority_waits_for_idle_worker"
)

// WaitInfo says where a queued job stands.
type WaitInfo struct {
	// Position is its 1-based place in dispatch order.
	Position int
	// Wait is how long it has waited.
	Wait   time.Duration
	Reason WaitReason
}

// WaitInfo explains a queued job's wait; the zero WaitInfo for a job that is not queued.
func (f *Fleet) WaitInfo(ctx context.Context, j *spool.Job) (WaitInfo, error) {
	if j.State != spool.StateInQueue {
		return WaitInfo{}, nil
	}
	pos, err := f.store.QueuePosition(ctx, store.QueuePositionParams{Endpoint: j.Endpoint, JobID: j.ID})
	if err != nil {
		return WaitInfo{}, fmt.Errorf("queue position of job %s: %w", j.ID, err)
	}
	info := WaitInfo{Position: pos, Wait: max(f.clock.Now().Sub(j.QueuedAt), 0)}
	ep, err := f.eng.Endpoint(j.Endpoint)
	if err != nil {
		return WaitInfo{}, err
	}
	if ep.Worker == nil {
		info.Reason, err = f.reasonWithout(ctx, j)
		return info, err
	}
	f.mu.Lock()
	v, ticked := f.ticks[j.Endpoint]
	f.mu.Unlock()
	st := v.states
	up := st[spool.WorkerIdle] + st[spool.WorkerRunning]
	switch {
	case j.Policy.LowPriority:
		info.Reason = WaitLowPriorityIdle
	case !ticked:
		info.Reason = WaitNoWorkersYet
	case st[spool.WorkerUnhealthy] > 0 && up == 0:
		info.Reason = WaitUnhealthy
	case st[spool.WorkerThrottled] > 0:
		info.Reason = WaitGPUsUnavailable
	case st[spool.WorkerInitializing] > 0:
		info.Reason = WaitInitializing
	case ep.WorkersMax == 0 || (up > 0 && up >= ep.WorkersMax):
		info.Reason = WaitMaxWorkers
	case up == 0 && v.wanted == 0:
		info.Reason = WaitNoWorkersYet
	default:
		info.Reason = WaitScalingUp
	}
	return info, nil
}

// reasonWithout explains the wait of a job of an endpoint whose workers are started outside Spool:
// all that is known is who was seen.
func (f *Fleet) reasonWithout(ctx context.Context, j *spool.Job) (WaitReason, error) {
	ws, err := f.Workers(ctx, j.Endpoint)
	if err != nil {
		return "", err
	}
	idle, up := 0, 0
	for _, w := range ws {
		switch w.State {
		case spool.WorkerIdle:
			idle++
			up++
		case spool.WorkerRunning:
			up++
		}
	}
	if j.Policy.LowPriority {
		d, err := f.store.QueueDepth(ctx, j.Endpoint)
		if err != nil {
			return "", fmt.Errorf("queue depth of %s: %w", j.Endpoint, err)
		}
		if d.Normal > 0 || idle == 0 {
			return WaitLowPriorityIdle, nil
		}
	}
	if up == 0 {
		return WaitNoWorkersYet, nil
	}
	return WaitMaxWorkers, nil // every worker there is holds a job
}
