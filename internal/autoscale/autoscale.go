// Package autoscale runs the workers of endpoints that declare how a worker starts: the control
// loop computes how many each endpoint wants from its normal-priority queue, starts them through
// a Provider (process/ runs local processes), stops idle ones after idleTimeout, restarts crashed
// ones with exponential backoff, hands out GPUs from a node-level pool and reports worker states
// to the engine (Workers, Health, wait reasons).
package autoscale

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/leader"
	"github.com/spool-run/spool/store"
)

// Config configures an Autoscaler.
type Config struct {
	// Engine is the job engine. Required.
	Engine *engine.Engine
	// Provider runs the workers. Required.
	Provider Provider
	// ServerURL is the base URL workers reach the server at, e.g. http://127.0.0.1:8080.
	// Required.
	ServerURL string
	// APIKey is the worker-scoped key handed to workers as RUNPOD_AI_API_KEY. Required.
	APIKey string
	// GPUs is the node's GPU pool (device ids for CUDA_VISIBLE_DEVICES). Defaults to none.
	GPUs []string
	// Clock is the time source. Defaults to the wall clock.
	Clock clock.Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Interval is the time between ticks of Start's loop. Defaults to 1 s.
	Interval time.Duration
	// InitTimeout is how long a started worker may take to ask for its first job before it is
	// declared unhealthy. Defaults to 2 min.
	InitTimeout time.Duration
	// StopGrace is the time between SIGTERM and SIGKILL when a worker is stopped. Defaults to 30 s.
	StopGrace time.Duration
	// CancelGrace is how long a worker may go on running a job the server ended (cancel,
	// timeout) before its process is killed and replaced. Defaults to 10 s.
	CancelGrace time.Duration
	// BackoffBase and BackoffMax bound the exponential restart delay of a crashing worker.
	// Default to 1 s and 5 min.
	BackoffBase, BackoffMax time.Duration
	// BackoffReset: a worker that ran this long before it crashed starts its backoff over.
	// Defaults to 10 min.
	BackoffReset time.Duration
	// PingInterval is RUNPOD_PING_INTERVAL. Defaults to 10 s.
	PingInterval time.Duration
	// Leader says whether this process runs workers: a replica that does not lead skips its
	// ticks. Defaults to leader.Always.
	Leader leader.Leader
}

func (c Config) withDefaults() Config {
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Leader == nil {
		c.Leader = leader.Always{}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.Interval, time.Second)
	def(&c.InitTimeout, 2*time.Minute)
	def(&c.StopGrace, 30*time.Second)
	def(&c.CancelGrace, 10*time.Second)
	def(&c.BackoffBase, time.Second)
	def(&c.BackoffMax, 5*time.Minute)
	def(&c.BackoffReset, 10*time.Minute)
	def(&c.PingInterval, 10*time.Second)
	return c
}

func (c Config) validate() error {
	switch {
	case c.Engine == nil:
		return errors.New("autoscale: Engine is required")
	case c.Provider == nil:
		return errors.New("autoscale: Provider is required")
	case c.ServerURL == "":
		return errors.New("autoscale: ServerURL is required")
	case c.APIKey == "":
		return errors.New("autoscale: APIKey is required")
	case c.Interval < 0 || c.InitTimeout < 0 || c.StopGrace < 0 || c.CancelGrace < 0 ||
		c.BackoffBase < 0 || c.BackoffMax < c.BackoffBase || c.PingInterval < 0:
		return errors.New("autoscale: durations must not be negative, BackoffMax not under BackoffBase")
	}
	seen := map[string]bool{}
	for _, g := range c.GPUs {
		if g == "" || seen[g] {
			return fmt.Errorf("autoscale: GPU ids must be non-empty and distinct (%q)", g)
		}
		seen[g] = true
	}
	return nil
}

// slot is one worker the autoscaler runs or wants: a live process (initializing, idle,
// running), or none (throttled: no GPUs; unhealthy: waiting for its restart).
type slot struct {
	endpoint  string
	id        string // current worker id; "" before the first start
	live      bool   // a process is running as id
	state     string
	gpus      []string
	startedAt time.Time
	firstTake time.Time
	lastBusy  time.Time
	jobs      []string
	failures  int
	restartAt time.Time
	err       string
	logs      []string // of the last exited process
}

// endpointView is what the last tick saw of an endpoint, for wait reasons.
type endpointView struct {
	managed  bool
	max      int
	wanted   int
	states   map[string]int
	gpuShort bool
}

// coldStarts sums the time from start to first take of an endpoint's workers.
type coldStarts struct {
	count       int
	last, total time.Duration
}

// Autoscaler is the control loop. It is safe for concurrent use.
type Autoscaler struct {
	cfg  Config
	eng  *engine.Engine
	prov Provider
	clk  clock.Clock
	log  *slog.Logger

	tickMu sync.Mutex // one Tick at a time

	mu           sync.Mutex
	slots        []*slot
	gpuUsed      map[string]string // gpu -> worker id
	views        map[string]endpointView
	retired      map[string]bool
	retiredOrder []string
	cold         map[string]coldStarts

	exitMu sync.Mutex
	exits  []Exit
	wake   chan struct{}

	startOnce, stopOnce sync.Once
	cancel              context.CancelFunc
	done                chan struct{}
}

var _ engine.Fleet = (*Autoscaler)(nil)

// New returns an autoscaler and registers it with the engine as its Fleet.
func New(cfg Config) (*Autoscaler, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	a := &Autoscaler{
		cfg: cfg, eng: cfg.Engine, prov: cfg.Provider, clk: cfg.Clock, log: cfg.Logger,
		gpuUsed: map[string]string{}, views: map[string]endpointView{}, retired: map[string]bool{},
		cold: map[string]coldStarts{}, wake: make(chan struct{}, 1),
	}
	cfg.Engine.SetFleet(a)
	return a, nil
}

// Start runs Tick every Interval, and at once when a worker exits, until Stop.
func (a *Autoscaler) Start(ctx context.Context) error {
	a.startOnce.Do(func() {
		ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		a.cancel = cancel
		a.done = make(chan struct{})
		go a.loop(ctx)
	})
	return nil
}

func (a *Autoscaler) loop(ctx context.Context) {
	defer close(a.done)
	for {
		if a.cfg.Leader.Leading() { // otherwise another replica runs the workers
			if err := a.Tick(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("autoscale tick failed", "err", err)
			}
		}
		t := a.clk.NewTimer(a.cfg.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		case <-a.wake:
			t.Stop()
		}
	}
}

// Stop ends the loop and stops every worker: SIGTERM, then SIGKILL after StopGrace, and waits
// until all are gone. Call it while the server still accepts results, so that draining workers
// can post theirs. Idempotent.
func (a *Autoscaler) Stop() {
	a.stopOnce.Do(func() {
		if a.cancel != nil {
			a.cancel()
			<-a.done
		}
		a.tickMu.Lock()
		defer a.tickMu.Unlock()
		a.mu.Lock()
		for _, s := range a.slots {
			if s.live {
				a.prov.Stop(s.id, a.cfg.StopGrace)
			}
		}
		a.mu.Unlock()
		a.prov.Close()
	})
}

// Wake returns a channel that receives when a worker exits (tests wait on it).
func (a *Autoscaler) Wake() <-chan struct{} { return a.wake }

func (a *Autoscaler) exited(x Exit) {
	a.exitMu.Lock()
	a.exits = append(a.exits, x)
	a.exitMu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Tick runs the control loop once: it handles exits, reads every endpoint's queue and workers,
// and starts, stops, restarts or kills workers. Tests call it directly after moving a fake clock.
func (a *Autoscaler) Tick(ctx context.Context) error {
	a.tickMu.Lock()
	defer a.tickMu.Unlock()
	now := a.clk.Now()

	a.exitMu.Lock()
	exits := a.exits
	a.exits = nil
	a.exitMu.Unlock()
	var errs []error
	for _, x := range exits {
		if err := a.handleExit(ctx, x, now); err != nil {
			errs = append(errs, err)
		}
	}

	eps := map[string]spool.Endpoint{}
	for _, ep := range a.eng.Endpoints() {
		if ep.Worker != nil {
			eps[ep.Name] = ep
		}
	}
	// Slots of endpoints deleted or no longer run by Spool: stop what holds no job.
	for _, s := range a.snapshotSlots() {
		if _, ok := eps[s.endpoint]; !ok && len(s.jobs) == 0 {
			a.removeSlot(s)
		}
	}
	names := make([]string, 0, len(eps))
	for n := range eps {
		names = append(names, n)
	}
	sort.Strings(names)
	views := map[string]endpointView{}
	for _, n := range names {
		v, err := a.tickEndpoint(ctx, eps[n], now)
		if err != nil {
			errs = append(errs, fmt.Errorf("endpoint %s: %w", n, err))
			continue
		}
		views[n] = v
	}
	a.mu.Lock()
	a.views = views
	a.mu.Unlock()
	return errors.Join(errs...)
}

func (a *Autoscaler) snapshotSlots() []*slot {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.slots)
}

func (a *Autoscaler) findSlot(id string) *slot {
	for _, s := range a.slots {
		if s.live && s.id == id {
			return s
		}
	}
	return nil
}

// handleExit handles the end of a worker process. Exits of processes the loop already let go
// (stopped, killed, replaced) find no live slot and change nothing.
func (a *Autoscaler) handleExit(ctx context.Context, x Exit, now time.Time) error {
	a.mu.Lock()
	// Only now that the process is gone may another worker have its GPUs.
	a.releaseGPUs(x.ID)
	s := a.findSlot(x.ID)
	a.mu.Unlock()
	if s == nil {
		// A worker retired by scale-in or a restart. It may have taken a job between the tick's
		// snapshot and its stop; if it did not finish cleanly, that job goes back to the queue
		// now rather than after the worker is declared lost.
		if x.Err != nil {
			_, err := a.cfg.Engine.LoseWorkerJobs(ctx, x.ID, "it exited after being stopped ("+x.Err.Error()+")")
			return err
		}
		return nil
	}
	why := "exited unexpectedly"
	if x.Err != nil {
		why += " (" + x.Err.Error() + ")"
	} else {
		why += " (exit status 0)"
	}
	return a.fail(ctx, s, why, x.Logs, now)
}

// fail marks a slot unhealthy: its process is killed (if still running), its jobs requeued at
// once, and it is restarted after an exponential backoff.
func (a *Autoscaler) fail(ctx context.Context, s *slot, why string, logs []string, now time.Time) error {
	id := s.id
	if logs == nil {
		logs = a.prov.Logs(id)
	}
	a.prov.Kill(id)
	a.mu.Lock()
	if now.Sub(s.startedAt) >= a.cfg.BackoffReset {
		s.failures = 0
	}
	s.failures++
	delay := a.cfg.BackoffBase << min(s.failures-1, 30)
	if delay > a.cfg.BackoffMax || delay <= 0 {
		delay = a.cfg.BackoffMax
	}
	s.restartAt = now.Add(delay)
	s.state = engine.WorkerUnhealthy
	s.err = "worker " + id + " " + why + "; restart in " + delay.String()
	s.logs = logs
	a.letGo(s)
	a.mu.Unlock()
	a.log.Warn("worker unhealthy", "endpoint", s.endpoint, "worker", id, "why", why, "restartIn", delay)
	_, err := a.eng.LoseWorkerJobs(ctx, id, "worker "+why)
	return err
}

// letGo forgets a slot's process (a.mu held): its id is retired. Its GPUs stay taken until the
// process has exited (handleExit), so that a replacement never shares a device with it.
func (a *Autoscaler) letGo(s *slot) {
	s.gpus = nil
	if s.id != "" {
		a.retired[s.id] = true
		a.retiredOrder = append(a.retiredOrder, s.id)
		if len(a.retiredOrder) > 10000 {
			delete(a.retired, a.retiredOrder[0])
			a.retiredOrder = a.retiredOrder[1:]
		}
		a.eng.Forget(s.id)
	}
	s.live = false
	s.jobs = nil
	s.firstTake = time.Time{}
}

// removeSlot stops a slot's process (gracefully) and drops the slot.
func (a *Autoscaler) removeSlot(s *slot) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s.live {
		a.prov.Stop(s.id, a.cfg.StopGrace)
	}
	a.letGo(s)
	a.slots = slices.DeleteFunc(a.slots, func(x *slot) bool { return x == s })
}

func (a *Autoscaler) endpointSlots(name string) []*slot {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*slot
	for _, s := range a.slots {
		if s.endpoint == name {
			out = append(out, s)
		}
	}
	return out
}

func (a *Autoscaler) tickEndpoint(ctx context.Context, ep spool.Endpoint, now time.Time) (endpointView, error) {
	qs, err := a.eng.QueueStats(ctx, ep.Name, "")
	if err != nil {
		return endpointView{}, err
	}
	held, err := a.eng.HeldJobs(ctx, ep.Name)
	if err != nil {
		return endpointView{}, err
	}
	// Observe the live workers.
	for _, s := range a.endpointSlots(ep.Name) {
		if !s.live {
			continue
		}
		act, _ := a.eng.WorkerActivity(s.id)
		a.mu.Lock()
		s.jobs = held[s.id]
		if s.firstTake.IsZero() && !act.FirstTake.IsZero() {
			s.firstTake = act.FirstTake
			c := a.cold[ep.Name]
			d := max(act.FirstTake.Sub(s.startedAt), 0)
			c.count++
			c.last, c.total = d, c.total+d
			a.cold[ep.Name] = c
		}
		if act.LastJob.After(s.lastBusy) {
			s.lastBusy = act.LastJob
		}
		if len(s.jobs) > 0 {
			s.lastBusy = now
		}
		switch {
		case s.firstTake.IsZero():
			s.state = engine.WorkerInitializing
		case len(s.jobs) > 0:
			s.state = engine.WorkerRunning
		default:
			s.state = engine.WorkerIdle
		}
		s.err = ""
		a.mu.Unlock()

		// A job the server ended is still running on it past the grace: kill and replace.
		replaced := false
		for jobID, since := range act.MustStop {
			if now.Sub(since) >= a.cfg.CancelGrace {
				if err := a.replace(ctx, s, ep, "did not stop job "+jobID+" within "+a.cfg.CancelGrace.String()+
					" of its cancellation or timeout", now, true); err != nil {
					return endpointView{}, err
				}
				replaced = true
				break
			}
		}
		if replaced || !s.live {
			continue
		}
		switch {
		case s.firstTake.IsZero() && now.Sub(s.startedAt) >= a.cfg.InitTimeout:
			if err := a.fail(ctx, s, "did not ask for a job within its init timeout of "+a.cfg.InitTimeout.String(), nil, now); err != nil {
				return endpointView{}, err
			}
		case act.StopPod && len(s.jobs) == 0:
			a.eng.ClearStopPod(s.id)
			if err := a.replace(ctx, s, ep, "asked to be restarted (stopPod)", now, false); err != nil {
				return endpointView{}, err
			}
		}
	}

	slots := a.endpointSlots(ep.Name)
	q := QueueState{Normal: qs.Normal, InProgress: qs.Running, Workers: len(slots)}
	if !qs.OldestNormal.IsZero() {
		q.OldestWait = now.Sub(qs.OldestNormal)
	}
	for _, s := range slots {
		if len(s.jobs) > 0 {
			q.Busy++
		}
		if s.state == engine.WorkerInitializing {
			q.Initializing++
		}
	}
	wanted := Wanted(ep, q)

	// Scale in: surplus slots go, those without a process first, never one holding a job, a live
	// one only after idleTimeout without work.
	if surplus := len(slots) - wanted; surplus > 0 {
		idle := time.Duration(ep.IdleTimeout) * time.Second
		order := slices.Clone(slots)
		rank := func(s *slot) int {
			switch {
			case !s.live:
				return 0
			case s.state == engine.WorkerInitializing:
				return 2
			default:
				return 1
			}
		}
		slices.SortStableFunc(order, func(x, y *slot) int { return rank(x) - rank(y) })
		for _, s := range order {
			if surplus == 0 {
				break
			}
			if s.live && (len(s.jobs) > 0 || now.Sub(s.lastBusy) < idle) {
				continue
			}
			a.log.Info("worker stopped (scale in)", "endpoint", ep.Name, "worker", s.id)
			a.removeSlot(s)
			surplus--
		}
	}
	// Scale out.
	a.mu.Lock()
	for n := len(slots); n < wanted; n++ {
		a.slots = append(a.slots, &slot{endpoint: ep.Name})
	}
	a.mu.Unlock()

	// Start what has no process and may start.
	view := endpointView{managed: true, max: ep.WorkersMax, wanted: wanted, states: map[string]int{}}
	for _, s := range a.endpointSlots(ep.Name) {
		if !s.live && (s.state != engine.WorkerUnhealthy || !now.Before(s.restartAt)) {
			a.start(ctx, s, ep, now)
		}
		a.mu.Lock()
		view.states[s.state]++
		if s.state == engine.WorkerThrottled {
			view.gpuShort = true
		}
		a.mu.Unlock()
	}
	return view, nil
}

// replace ends a slot's process and starts a new one at once (no backoff): the process was
// healthy but must go (stopPod, or it ran a stopped job). kill skips the graceful stop.
func (a *Autoscaler) replace(ctx context.Context, s *slot, ep spool.Endpoint, why string, now time.Time, kill bool) error {
	id := s.id
	a.log.Info("worker replaced", "endpoint", ep.Name, "worker", id, "why", why)
	if kill {
		a.prov.Kill(id)
	} else {
		a.prov.Stop(id, a.cfg.StopGrace)
	}
	a.mu.Lock()
	a.letGo(s)
	s.state = ""
	a.mu.Unlock()
	if kill {
		if _, err := a.eng.LoseWorkerJobs(ctx, id, "worker "+why); err != nil {
			return err
		}
	}
	a.start(ctx, s, ep, now)
	return nil
}

// start launches a process for a slot, or marks it throttled when the pool lacks GPUs.
func (a *Autoscaler) start(ctx context.Context, s *slot, ep spool.Endpoint, now time.Time) {
	a.mu.Lock()
	var gpus []string
	if ep.GPUCount > 0 {
		for _, g := range a.cfg.GPUs {
			if _, used := a.gpuUsed[g]; !used {
				gpus = append(gpus, g)
				if len(gpus) == ep.GPUCount {
					break
				}
			}
		}
		if len(gpus) < ep.GPUCount {
			s.state = engine.WorkerThrottled
			s.err = fmt.Sprintf("needs %d GPUs; %d of the pool's %d are free", ep.GPUCount, len(gpus), len(a.cfg.GPUs))
			a.mu.Unlock()
			return
		}
	}
	id := ep.Name + "-" + randomHex(6)
	for _, g := range gpus {
		a.gpuUsed[g] = id
	}
	s.id, s.gpus, s.live, s.startedAt, s.lastBusy = id, gpus, true, now, now
	s.firstTake, s.jobs, s.state = time.Time{}, nil, engine.WorkerInitializing
	a.mu.Unlock()

	a.eng.Manage(id)
	err := a.prov.Start(ctx, WorkerSpec{
		Endpoint: ep.Name, WorkerID: id, Env: a.env(ep, id, gpus), GPUs: gpus, Spec: *ep.Worker,
	}, a.exited)
	if err != nil {
		a.log.Warn("worker start failed", "endpoint", ep.Name, "worker", id, "err", err)
		a.mu.Lock()
		a.releaseGPUs(id) // no process, so no exit will free them
		a.mu.Unlock()
		_ = a.fail(ctx, s, "could not start: "+err.Error(), nil, now)
		return
	}
	a.log.Info("worker started", "endpoint", ep.Name, "worker", id, "gpus", gpus)
}

// env is the RunPod environment of a worker (CONTRACT.md §4) plus its GPUs.
func (a *Autoscaler) env(ep spool.Endpoint, id string, gpus []string) map[string]string {
	base := strings.TrimRight(a.cfg.ServerURL, "/") + "/v2/" + ep.Name
	env := map[string]string{
		"RUNPOD_WEBHOOK_GET_JOB":         base + "/job-take/$ID?",
		"RUNPOD_WEBHOOK_POST_OUTPUT":     base + "/job-done/$RUNPOD_POD_ID/$ID?",
		"RUNPOD_WEBHOOK_POST_STREAM":     base + "/job-stream/$RUNPOD_POD_ID/$ID?",
		"RUNPOD_WEBHOOK_PING":            base + "/ping/$RUNPOD_POD_ID?",
		"RUNPOD_PING_INTERVAL":           strconv.FormatInt(a.cfg.PingInterval.Milliseconds(), 10),
		"RUNPOD_POD_ID":                  id,
		"RUNPOD_POD_HOSTNAME":            id,
		"RUNPOD_AI_API_KEY":              a.cfg.APIKey,
		"RUNPOD_ENDPOINT_ID":             ep.Name,
		"RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
	}
	if len(gpus) > 0 {
		env["CUDA_VISIBLE_DEVICES"] = strings.Join(gpus, ",")
		env["NVIDIA_VISIBLE_DEVICES"] = strings.Join(gpus, ",")
	} else if ep.GPUCount == 0 && len(a.cfg.GPUs) > 0 {
		// A CPU worker on a GPU node sees no GPU.
		env["CUDA_VISIBLE_DEVICES"] = ""
		env["NVIDIA_VISIBLE_DEVICES"] = "void"
	}
	return env
}

// releaseGPUs gives the GPUs of a worker back to the pool (a.mu held).
func (a *Autoscaler) releaseGPUs(id string) {
	for g, w := range a.gpuUsed {
		if w == id {
			delete(a.gpuUsed, g)
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ManagedWorkers implements engine.Fleet.
func (a *Autoscaler) ManagedWorkers(endpoint string) []engine.ManagedWorker {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []engine.ManagedWorker
	for i, s := range a.slots {
		if endpoint != "" && s.endpoint != endpoint {
			continue
		}
		m := engine.ManagedWorker{
			ID: s.id, Endpoint: s.endpoint, State: s.state, GPUs: slices.Clone(s.gpus), Error: s.err,
		}
		if s.live {
			m.StartedAt = s.startedAt
			m.LogTail = tail(a.prov.Logs(s.id), 20)
		} else {
			m.LogTail = tail(s.logs, 20)
			// Not running: the old id is retired; name the slot.
			m.ID = s.endpoint + "-" + s.state + "-" + strconv.Itoa(i)
		}
		out = append(out, m)
	}
	return out
}

func tail(lines []string, n int) []string {
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return slices.Clone(lines)
}

// Retired implements engine.Fleet.
func (a *Autoscaler) Retired(worker string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.retired[worker]
}

// ColdStarts implements engine.Fleet: the cold-start times (start to first job-take request)
// of each endpoint's workers.
func (a *Autoscaler) ColdStarts() map[string]engine.ColdStart {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]engine.ColdStart, len(a.cold))
	for k, v := range a.cold {
		out[k] = engine.ColdStart{Count: v.count, Last: v.last, Avg: v.total / time.Duration(v.count)}
	}
	return out
}

// WaitReason implements engine.Fleet, from what the last tick saw.
func (a *Autoscaler) WaitReason(j *spool.Job, qs store.QueueStats) (string, bool) {
	ep, err := a.eng.Endpoint(j.Endpoint)
	if err != nil || ep.Worker == nil {
		return "", false
	}
	a.mu.Lock()
	v, ticked := a.views[j.Endpoint]
	a.mu.Unlock()
	st := v.states
	up := st[engine.WorkerIdle] + st[engine.WorkerRunning]
	switch {
	case j.Policy.LowPriority:
		return engine.WaitLowPriorityIdle, true
	case !ticked:
		return engine.WaitNoWorkersYet, true
	case st[engine.WorkerUnhealthy] > 0 && up == 0:
		return engine.WaitUnhealthy, true
	case v.gpuShort:
		return engine.WaitGPUsUnavailable, true
	case st[engine.WorkerInitializing] > 0:
		return engine.WaitInitializing, true
	case ep.WorkersMax == 0 || (up > 0 && up >= ep.WorkersMax):
		return engine.WaitMaxWorkers, true
	case up == 0 && v.wanted == 0:
		return engine.WaitNoWorkersYet, true
	default:
		return engine.WaitScalingUp, true
	}
}
