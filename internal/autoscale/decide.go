package autoscale

import (
	"fmt"
	"slices"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/fleet"
)

// observation is what a tick saw of one endpoint.
type observation struct {
	Endpoint spool.Endpoint
	Now      time.Time
	Queue    spool.QueueDepth
	// Slots are the endpoint's workers as the fleet records them, in the order they were made.
	Slots                    []fleet.Slot
	InitTimeout, CancelGrace time.Duration
}

// plan is what a tick does to one endpoint's workers, in this order.
type plan struct {
	// Wanted is the number of workers the endpoint should have, and Why says why in words.
	Wanted int
	Why    string
	// Kill ends processes at once and replaces them: they run a job the server ended (cancel,
	// timeout) past the cancel grace.
	Kill []action
	// Restart stops processes gracefully and replaces them: a result asked for it (stopPod).
	Restart []action
	// Fail kills processes that did not ask for a job within the init timeout; their slots
	// restart after a backoff.
	Fail []action
	// Remove drops slots (scale-in), stopping their processes gracefully.
	Remove []int
	// Add adds slots (scale-out), each started at once.
	Add int
	// Start starts processes for slots that have none: replaced ones, and throttled or failed
	// ones whose restart is due.
	Start []int
}

// action is what is done to one slot's process, and why.
type action struct {
	Slot   int
	Worker string
	Why    string
}

// decide is the autoscaler's policy for one endpoint: a pure function of what the tick observed.
func decide(o observation) plan {
	var p plan
	// model is a slot as it will be once the replacements and failures are done: a replaced
	// process is a new one, initializing; a failed one is gone.
	type model struct {
		id        int
		process   bool
		state     spool.WorkerState
		jobs      int
		idleSince time.Time
		startNow  bool // it gets a process this tick
	}
	models := make([]model, 0, len(o.Slots))
	for _, s := range o.Slots {
		m := model{id: s.ID, process: s.Worker != "", state: s.State, jobs: len(s.Jobs), idleSince: s.IdleSince}
		if m.jobs > 0 {
			m.idleSince = o.Now
		}
		replaced := func() { // a new process, at once
			m.state, m.jobs, m.idleSince, m.startNow = spool.WorkerInitializing, 0, o.Now, true
		}
		switch {
		case !m.process:
			m.startNow = s.State != spool.WorkerUnhealthy || !o.Now.Before(s.RestartAt)
		case overdueStop(s, o) != "":
			p.Kill = append(p.Kill, action{s.ID, s.Worker, "did not stop job " + overdueStop(s, o) + " within " +
				o.CancelGrace.String() + " of its cancellation or timeout"})
			replaced()
		case s.FirstTake.IsZero() && o.Now.Sub(s.StartedAt) >= o.InitTimeout:
			p.Fail = append(p.Fail, action{s.ID, s.Worker, "did not ask for a job within its init timeout of " + o.InitTimeout.String()})
			m.process, m.state, m.jobs = false, spool.WorkerUnhealthy, 0
		case s.RestartAsked && m.jobs == 0:
			p.Restart = append(p.Restart, action{s.ID, s.Worker, "asked to be restarted (stopPod)"})
			replaced()
		}
		models = append(models, m)
	}

	q := QueueState{Normal: o.Queue.Normal, InProgress: o.Queue.Running, Workers: len(models)}
	if !o.Queue.OldestNormal.IsZero() {
		q.OldestWait = o.Now.Sub(o.Queue.OldestNormal)
	}
	for _, m := range models {
		if m.jobs > 0 {
			q.Busy++
		}
		if m.state == spool.WorkerInitializing {
			q.Initializing++
		}
	}
	p.Wanted, p.Why = WantedWhy(o.Endpoint, q)

	// Scale in: surplus slots go, those without a process first, never one holding a job, one
	// with a process only after idleTimeout without work.
	removed := map[int]bool{}
	if surplus := len(models) - p.Wanted; surplus > 0 {
		idle := time.Duration(o.Endpoint.IdleTimeout) * time.Second
		rank := func(m model) int {
			switch {
			case !m.process:
				return 0
			case m.state == spool.WorkerInitializing:
				return 2
			default:
				return 1
			}
		}
		order := slices.Clone(models)
		slices.SortStableFunc(order, func(x, y model) int { return rank(x) - rank(y) })
		for _, m := range order {
			if surplus == 0 {
				break
			}
			if m.process && (m.jobs > 0 || o.Now.Sub(m.idleSince) < idle) {
				continue
			}
			p.Remove = append(p.Remove, m.id)
			removed[m.id] = true
			surplus--
		}
		if len(p.Remove) > 0 {
			p.Why += fmt.Sprintf("; idle workers go after idleTimeout %ds", o.Endpoint.IdleTimeout)
		}
	}
	p.Add = max(p.Wanted-len(models), 0)
	for _, m := range models {
		if m.startNow && !removed[m.id] {
			p.Start = append(p.Start, m.id)
		}
	}
	return p
}

// overdueStop returns the first (by id) job the slot's worker was told to stop more than the
// cancel grace ago, or "".
func overdueStop(s fleet.Slot, o observation) string {
	var overdue []string
	for id, since := range s.MustStop {
		if o.Now.Sub(since) >= o.CancelGrace {
			overdue = append(overdue, id)
		}
	}
	if len(overdue) == 0 {
		return ""
	}
	slices.Sort(overdue)
	return overdue[0]
}
