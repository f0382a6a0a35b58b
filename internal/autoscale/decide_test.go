package autoscale

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/fleet"
)

// TestDecide is the table of the autoscaler's policy: what one tick does to an endpoint's workers
// for what it observed.
func TestDecide(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	ep := func(mod func(*spool.Endpoint)) spool.Endpoint {
		e := spool.NewEndpoint("ep")
		e.Worker = &spool.WorkerSpec{Command: "w"}
		e.WorkersMax, e.IdleTimeout = 3, 5
		e.ScalerType, e.ScalerValue = spool.ScalerRequestCount, 1
		if mod != nil {
			mod(&e)
		}
		return e
	}
	// Slots: a started worker that asked for work (idle unless it holds jobs), one still
	// initializing, and slots without a process.
	up := func(id int, jobs ...string) fleet.Slot {
		st := spool.WorkerIdle
		if len(jobs) > 0 {
			st = spool.WorkerRunning
		}
		return fleet.Slot{ID: id, Worker: "w" + string(rune('0'+id)), State: st, StartedAt: ago(time.Hour),
			FirstTake: ago(time.Hour), IdleSince: ago(time.Minute), Jobs: jobs}
	}
	starting := func(id int, since time.Duration) fleet.Slot {
		return fleet.Slot{ID: id, Worker: "w" + string(rune('0'+id)), State: spool.WorkerInitializing, StartedAt: ago(since), IdleSince: ago(since)}
	}
	unhealthy := func(id int, restartIn time.Duration) fleet.Slot {
		return fleet.Slot{ID: id, State: spool.WorkerUnhealthy, Failures: 1, RestartAt: now.Add(restartIn)}
	}
	throttled := func(id int) fleet.Slot { return fleet.Slot{ID: id, State: spool.WorkerThrottled} }
	with := func(s fleet.Slot, mod func(*fleet.Slot)) fleet.Slot { mod(&s); return s }
	act := func(slot int, worker, why string) []action { return []action{{slot, worker, why}} }

	for _, tc := range []struct {
		name  string
		ep    spool.Endpoint
		queue spool.QueueDepth
		slots []fleet.Slot
		want  plan
	}{
		{"nothing to do", ep(nil), spool.QueueDepth{}, nil, plan{}},
		{"a worker per queued job, up to the max", ep(nil), spool.QueueDepth{Normal: 5}, nil, plan{Wanted: 3, Add: 3}},
		{"low priority starts nothing", ep(nil), spool.QueueDepth{Low: 5}, nil, plan{}},
		{"workersMin stays up", ep(func(e *spool.Endpoint) { e.WorkersMin = 1 }), spool.QueueDepth{}, []fleet.Slot{up(1)},
			plan{Wanted: 1}},
		{"idle past idleTimeout goes", ep(nil), spool.QueueDepth{}, []fleet.Slot{up(1)}, plan{Remove: []int{1}}},
		{"idle for less than idleTimeout stays", ep(nil), spool.QueueDepth{},
			[]fleet.Slot{with(up(1), func(s *fleet.Slot) { s.IdleSince = ago(4 * time.Second) })}, plan{}},
		{"a worker holding a job never goes", ep(nil), spool.QueueDepth{}, []fleet.Slot{up(1, "j")}, plan{}},
		{"slots without a process go first", ep(nil), spool.QueueDepth{Normal: 1},
			[]fleet.Slot{up(1), unhealthy(2, time.Minute)}, plan{Wanted: 1, Remove: []int{2}}},
		{"an unhealthy slot restarts once its backoff is over", ep(nil), spool.QueueDepth{Normal: 1},
			[]fleet.Slot{unhealthy(1, 0)}, plan{Wanted: 1, Start: []int{1}}},
		{"an unhealthy slot waits for its backoff", ep(nil), spool.QueueDepth{Normal: 1},
			[]fleet.Slot{unhealthy(1, time.Second)}, plan{Wanted: 1}},
		{"a throttled slot tries again", ep(nil), spool.QueueDepth{Normal: 1}, []fleet.Slot{throttled(1)},
			plan{Wanted: 1, Start: []int{1}}},
		{"no job asked for within the init timeout", ep(nil), spool.QueueDepth{Normal: 1}, []fleet.Slot{starting(1, 2*time.Minute)},
			plan{Wanted: 1, Fail: act(1, "w1", "did not ask for a job within its init timeout of 2m0s")}},
		{"initializing within the init timeout", ep(nil), spool.QueueDepth{Normal: 1}, []fleet.Slot{starting(1, time.Minute)},
			plan{Wanted: 1}},
		{"a stopped job still running past the cancel grace", ep(nil), spool.QueueDepth{},
			[]fleet.Slot{with(up(1), func(s *fleet.Slot) {
				s.MustStop = map[string]time.Time{"b": ago(time.Minute), "a": ago(11 * time.Second), "c": ago(time.Second)}
			})},
			plan{Kill: act(1, "w1", "did not stop job a within 10s of its cancellation or timeout"), Start: []int{1}}},
		{"within the cancel grace", ep(nil), spool.QueueDepth{},
			[]fleet.Slot{with(up(1, "j"), func(s *fleet.Slot) { s.MustStop = map[string]time.Time{"a": ago(9 * time.Second)} })},
			plan{}},
		{"stopPod restarts an idle worker", ep(nil), spool.QueueDepth{Normal: 1},
			[]fleet.Slot{with(up(1), func(s *fleet.Slot) { s.RestartAsked = true })},
			plan{Wanted: 1, Restart: act(1, "w1", "asked to be restarted (stopPod)"), Start: []int{1}}},
		{"stopPod waits for the worker's jobs", ep(nil), spool.QueueDepth{Running: 1},
			[]fleet.Slot{with(up(1, "j"), func(s *fleet.Slot) { s.RestartAsked = true })}, plan{Wanted: 1}},
		{"queue delay: the first worker at once", ep(func(e *spool.Endpoint) { e.ScalerType, e.ScalerValue = spool.ScalerQueueDelay, 4 }),
			spool.QueueDepth{Normal: 2, OldestNormal: ago(time.Second)}, nil, plan{Wanted: 1, Add: 1}},
		{"queue delay: one more past the delay", ep(func(e *spool.Endpoint) { e.ScalerType, e.ScalerValue = spool.ScalerQueueDelay, 4 }),
			spool.QueueDepth{Normal: 2, Running: 1, OldestNormal: ago(5 * time.Second)}, []fleet.Slot{up(1, "j")},
			plan{Wanted: 2, Add: 1}},
		{"queue delay: not while one starts", ep(func(e *spool.Endpoint) { e.ScalerType, e.ScalerValue = spool.ScalerQueueDelay, 4 }),
			spool.QueueDepth{Normal: 2, Running: 1, OldestNormal: ago(5 * time.Second)}, []fleet.Slot{up(1, "j"), starting(2, time.Second)},
			plan{Wanted: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := decide(observation{Endpoint: tc.ep, Now: now, Queue: tc.queue, Slots: tc.slots,
				InitTimeout: 2 * time.Minute, CancelGrace: 10 * time.Second})
			require.NotEmpty(t, got.Why, "every plan says why")
			got.Why = "" // TestWantedWhy checks the words
			require.Equal(t, tc.want, got)
		})
	}
}

// TestWantedWhy: the reason logged with a scaling decision says what the scaler saw and which
// bound applied.
func TestWantedWhy(t *testing.T) {
	t.Parallel()
	rc := spool.NewEndpoint("ep")
	rc.ScalerType, rc.ScalerValue, rc.WorkersMax = spool.ScalerRequestCount, 2, 3
	qd := spool.NewEndpoint("ep")
	qd.WorkersMin = 1
	for _, c := range []struct {
		ep  spool.Endpoint
		q   QueueState
		n   int
		why string
	}{
		{rc, QueueState{Normal: 3, InProgress: 1}, 2, "REQUEST_COUNT: 3 queued + 1 running at 2 per worker"},
		{rc, QueueState{Normal: 9}, 3, "REQUEST_COUNT: 9 queued + 0 running at 2 per worker; capped at workersMax 3"},
		{qd, QueueState{}, 1, "QUEUE_DELAY: none queued, 0 busy; workersMin 1"},
		{qd, QueueState{Normal: 2, OldestWait: 6250 * time.Millisecond, Workers: 1}, 2,
			"QUEUE_DELAY: the oldest of 2 queued waited 6.3s, over scalerValue 4s"},
		{qd, QueueState{Normal: 2, OldestWait: 6 * time.Second, Workers: 2, Initializing: 1}, 2,
			"QUEUE_DELAY: 2 queued, the oldest for 6s (scalerValue 4s, 1 starting)"},
	} {
		n, why := WantedWhy(c.ep, c.q)
		require.Equal(t, c.n, n, c.why)
		require.Equal(t, c.why, why)
		require.Equal(t, n, Wanted(c.ep, c.q))
	}
}
