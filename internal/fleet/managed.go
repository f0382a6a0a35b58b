package fleet

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// The workers the autoscaler runs. Each is a slot: a worker the autoscaler wants, with a process
// (starting, idle or running) or without one (throttled: no GPUs; unhealthy: waiting for its
// restart). The autoscaler reports what it does to a slot; the fleet keeps the record and says
// what state that makes.

type slot struct {
	id        int
	endpoint  string
	worker    string // the worker id of its process; "" without one
	startedAt time.Time
	gpus      []string
	logs      func() []string // the output of its process
	status    func() string   // what its process does before it runs ("pulling image 43%")
	lastLogs  []string        // the output of its last process that exited
	throttled string          // why it has no process: not enough GPUs
	fault     string          // why it has no process: it failed
	restartAt time.Time       // when a failed slot may start again
	failures  int             // its consecutive failures
	// Without a process, the slot is shown as the worker it was (the one that failed) or will be
	// (the id a throttled slot starts with), since when.
	lastWorker string
	since      time.Time
}

// activity is what a worker of a slot did.
type activity struct {
	// firstTake is its first job-take request: it ends the worker's cold start.
	firstTake time.Time
	// lastHanded and lastReleased are when it was last given a job and when it last stopped
	// holding one.
	lastHanded, lastReleased time.Time
	// stopPod: a result asked for the worker to be restarted.
	stopPod bool
	// mustStop holds the jobs the server ended while the worker ran them, with when; an entry
	// goes once the worker shows it stopped (a take request after it, or a ping that no longer
	// lists the job).
	mustStop map[string]time.Time
}

// coldStarts sums the time from start to first take of an endpoint's workers.
type coldStarts struct {
	count       int
	last, total time.Duration
}

// retiredSet remembers the workers the autoscaler let go: their sightings in the store are
// history, not live workers. It keeps the latest maxRetired.
type retiredSet struct {
	ids   map[string]bool
	order []string
}

const maxRetired = 10000

func (r *retiredSet) add(id string) {
	if r.ids == nil {
		r.ids = map[string]bool{}
	}
	r.ids[id] = true
	r.order = append(r.order, id)
	if len(r.order) > maxRetired {
		delete(r.ids, r.order[0])
		r.order = r.order[1:]
	}
}

// Slot is a worker the autoscaler runs, as it observes it: the record and what the worker did.
type Slot struct {
	ID       int
	Endpoint string
	// Worker is the id of its process; "" when it has none.
	Worker    string
	State     spool.WorkerState
	StartedAt time.Time
	GPUs      []string
	// FirstTake is its first job-take request (zero while it is initializing).
	FirstTake time.Time
	// Jobs are the jobs it holds.
	Jobs []string
	// IdleSince is when it last started, was given a job or finished one; it is idle since then
	// when it holds none.
	IdleSince time.Time
	// RestartAsked: a result asked for its restart (stopPod).
	RestartAsked bool
	// MustStop holds the jobs the server ended while it ran them, with when.
	MustStop map[string]time.Time
	// Failures counts its consecutive failures; RestartAt is when a failed slot may start again.
	Failures  int
	RestartAt time.Time
	// LastWorker, without a process, is the worker it was (it failed) or will start as (it is
	// throttled).
	LastWorker string
}

// Slots returns the slots of an endpoint as they are now, in the order the autoscaler made them.
//
// A worker seen through any replica since its start (its sightings are in the store) has asked
// for work even when this replica never saw it: workers reach every replica through a load
// balancer (pods through their Service), and one adopted busy with a job asks for none.
func (f *Fleet) Slots(ctx context.Context, endpoint string) ([]Slot, error) {
	held, err := f.heldBy(ctx, endpoint)
	if err != nil {
		return nil, err
	}
	seen, err := f.store.ListWorkers(ctx, store.ListWorkersParams{Endpoint: endpoint})
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range seen {
		s := f.liveSlot(r.ID)
		if a := f.acts[r.ID]; s != nil && a != nil && a.firstTake.IsZero() && !r.LastSeen.Before(s.startedAt) {
			f.coldStartEnded(a, s, r.LastSeen)
		}
	}
	var out []Slot
	for _, s := range f.slots {
		if s.endpoint == endpoint {
			out = append(out, f.view(s, held[s.worker]))
		}
	}
	return out, nil
}

// view is a slot as Slots shows it, holding jobs (f.mu held).
func (f *Fleet) view(s *slot, jobs []string) Slot {
	v := Slot{
		ID: s.id, Endpoint: s.endpoint, Worker: s.worker, StartedAt: s.startedAt, GPUs: slices.Clone(s.gpus),
		Failures: s.failures, RestartAt: s.restartAt, IdleSince: s.startedAt, LastWorker: s.lastWorker,
	}
	var a *activity
	if s.worker != "" {
		v.Jobs, a = jobs, f.acts[s.worker]
	}
	if a != nil {
		v.FirstTake, v.RestartAsked, v.MustStop = a.firstTake, a.stopPod, maps.Clone(a.mustStop)
		v.IdleSince = latest(s.startedAt, a.lastHanded, a.lastReleased)
	}
	v.State = stateOf(facts{slot: s, act: a, held: len(v.Jobs)})
	return v
}

func latest(ts ...time.Time) time.Time {
	var l time.Time
	for _, t := range ts {
		if t.After(l) {
			l = t
		}
	}
	return l
}

// heldBy maps each worker of endpoint ("" for all) to the jobs it holds, from the store's narrow
// query: no payload is read.
func (f *Fleet) heldBy(ctx context.Context, endpoint string) (map[string][]string, error) {
	held, err := f.store.HeldJobs(ctx, store.HeldJobsParams{Endpoint: endpoint})
	if err != nil {
		return nil, fmt.Errorf("held jobs: %w", err)
	}
	m := make(map[string][]string)
	for _, h := range held {
		m[h.WorkerID] = append(m[h.WorkerID], h.JobID)
	}
	return m, nil
}

// AddSlots adds n slots to an endpoint, without processes yet, and returns their ids.
func (f *Fleet) AddSlots(endpoint string, n int) []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := make([]int, n)
	for i := range n {
		f.nextSlot++
		f.slots = append(f.slots, &slot{id: f.nextSlot, endpoint: endpoint})
		ids[i] = f.nextSlot
	}
	return ids
}

// Launch is a process the autoscaler started for a slot.
type Launch struct {
	Worker string
	GPUs   []string
	// Logs returns the process's latest output lines, oldest first.
	Logs func() []string
	// Status, when set, says what the process does before it runs ("pulling image 43%").
	Status func() string
}

// Launched records that a slot's process started at now: the slot's worker is initializing until
// its first job-take request.
func (f *Fleet) Launched(slotID int, l Launch, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.slot(slotID)
	if s == nil {
		return
	}
	s.worker, s.gpus, s.logs, s.status, s.startedAt = l.Worker, slices.Clone(l.GPUs), l.Logs, l.Status, now
	s.throttled, s.fault, s.lastWorker, s.since = "", "", "", time.Time{}
	f.acts[l.Worker] = &activity{mustStop: map[string]time.Time{}}
}

// Throttled records that a slot could not start at now for want of GPUs, and why; worker is the
// id it is to start with once they are free.
func (f *Fleet) Throttled(slotID int, worker, why string, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.slot(slotID); s != nil {
		if s.throttled == "" || s.lastWorker != worker {
			s.since = now
		}
		s.throttled, s.lastWorker = why, worker
	}
}

// Failed records that a slot's process failed (or never started), why, with the output it left,
// the slot's consecutive failures and when it may start again: it is unhealthy until then. Its
// worker, if any, is let go.
func (f *Fleet) Failed(slotID int, why string, logs []string, failures int, now, restartAt time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.slot(slotID)
	if s == nil {
		return
	}
	if s.worker != "" {
		s.lastWorker = s.worker
	}
	f.letGo(s)
	s.fault, s.lastLogs, s.failures, s.restartAt, s.since = why, logs, failures, restartAt, now
}

// LetGo records that a slot's process was stopped or killed on purpose (a replacement, scale-in):
// its worker is retired, and the slot has no process until the next launch.
func (f *Fleet) LetGo(slotID int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.slot(slotID); s != nil {
		f.letGo(s)
	}
}

// RemoveSlot retires a slot's worker and drops the slot.
func (f *Fleet) RemoveSlot(slotID int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.slot(slotID); s != nil {
		f.letGo(s)
		f.slots = slices.DeleteFunc(f.slots, func(x *slot) bool { return x == s })
	}
}

// RestartHandled forgets a worker's request to be restarted (stopPod), once acted on.
func (f *Fleet) RestartHandled(worker string) {
	f.activity(worker, func(a *activity, _ *slot, _ time.Time) { a.stopPod = false })
}

// tickView is what the autoscaler's last tick left of an endpoint: how many workers it wanted and
// the states of its slots then. The wait reasons of queued jobs come from it, as the autoscaler's
// plans do, rather than from a moment between two ticks.
type tickView struct {
	wanted int
	states map[spool.WorkerState]int // idle stands for idle or running: both are up
}

// Ticked records the end of the autoscaler's tick of an endpoint, which wanted n workers.
func (f *Fleet) Ticked(endpoint string, wanted int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v := tickView{wanted: wanted, states: map[spool.WorkerState]int{}}
	for _, s := range f.slots {
		if s.endpoint == endpoint {
			v.states[stateOf(facts{slot: s, act: f.acts[s.worker]})]++
		}
	}
	f.ticks[endpoint] = v
}

// SlotOf returns the slot whose process runs as worker (without its Jobs).
func (f *Fleet) SlotOf(worker string) (Slot, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.liveSlot(worker); s != nil {
		return f.view(s, nil), true
	}
	return Slot{}, false
}

// Processes lists the workers of the slots that have a process.
func (f *Fleet) Processes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, s := range f.slots {
		if s.worker != "" {
			out = append(out, s.worker)
		}
	}
	return out
}

// Endpoints lists the endpoints that have slots.
func (f *Fleet) Endpoints() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, s := range f.slots {
		if !slices.Contains(out, s.endpoint) {
			out = append(out, s.endpoint)
		}
	}
	return out
}

// letGo retires a slot's worker (f.mu held). Its jobs are the caller's business.
func (f *Fleet) letGo(s *slot) {
	if s.worker != "" {
		f.retired.add(s.worker)
		delete(f.acts, s.worker)
	}
	s.worker, s.gpus, s.logs, s.status = "", nil, nil, nil
}

func (f *Fleet) slot(id int) *slot {
	for _, s := range f.slots {
		if s.id == id {
			return s
		}
	}
	return nil
}

// liveSlot returns the slot whose process runs as worker (f.mu held).
func (f *Fleet) liveSlot(worker string) *slot {
	if worker == "" {
		return nil
	}
	for _, s := range f.slots {
		if s.worker == worker {
			return s
		}
	}
	return nil
}

// ColdStart summarises an endpoint's cold starts: the time its workers took from start to their
// first job-take request.
type ColdStart struct {
	Count     int
	Last, Avg time.Duration
}

// ColdStarts reports the cold starts of each endpoint the autoscaler runs workers for.
func (f *Fleet) ColdStarts() map[string]ColdStart {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]ColdStart, len(f.cold))
	for ep, c := range f.cold {
		out[ep] = ColdStart{Count: c.count, Last: c.last, Avg: c.total / time.Duration(c.count)}
	}
	return out
}
