// Package autoscale runs the workers of endpoints that declare how a worker starts. Each tick, for
// each endpoint, it observes (the queue's depth and the fleet's record of its workers), decides
// (decide: a pure function of what it observed) and acts (starts, stops, restarts or kills workers
// through a Provider, and reports each to the fleet). It hands out GPUs from a node-level pool and
// restarts crashed workers with exponential backoff. Worker states are not its business: the fleet
// computes them from what the autoscaler reports.
package autoscale

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/fleet"
	"github.com/spool-run/spool/internal/leader"
	"github.com/spool-run/spool/store"
)

// Config configures an Autoscaler.
type Config struct {
	// Engine is the job engine. Required.
	Engine *engine.Engine
	// Fleet records the workers. Required.
	Fleet *fleet.Fleet
	// Store answers how deep each endpoint's queue is. Required; the engine's store.
	Store store.Store
	// Provider runs the workers. Required.
	Provider Provider
	// ServerURL is the base URL workers reach the server at, e.g. http://127.0.0.1:8080.
	// Required.
	ServerURL string
	// ContainerURL, when set, is the base URL container workers (an image spec) reach the server
	// at instead, for containers that do not share the host's network.
	ContainerURL string
	// WorkerKey returns the key handed to a worker as RUNPOD_AI_API_KEY: a token that speaks for
	// that worker of that endpoint only (auth.WorkerTokens). Required.
	WorkerKey func(endpoint, worker string) string
	// GPUs is the node's GPU pool (device ids for CUDA_VISIBLE_DEVICES). Defaults to none.
	GPUs []string
	// Clock is the time source. Defaults to the wall clock.
	Clock clock.Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// OnRestart, when set, is told of each worker replaced: reason is "failed" (it exited, did
	// not start or did not ask for a job in time), "overdue" (it ran a job the server ended past
	// cancelGrace) or "refresh" (its result asked for it, stopPod). For metrics.
	OnRestart func(endpoint, reason string)
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
	case c.Engine == nil || c.Fleet == nil || c.Store == nil:
		return errors.New("autoscale: Engine, Fleet and Store are required")
	case c.Provider == nil:
		return errors.New("autoscale: Provider is required")
	case c.ServerURL == "":
		return errors.New("autoscale: ServerURL is required")
	case c.WorkerKey == nil:
		return errors.New("autoscale: WorkerKey is required")
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

// Autoscaler is the control loop. It is safe for concurrent use.
type Autoscaler struct {
	cfg   Config
	eng   *engine.Engine
	fleet *fleet.Fleet
	prov  Provider
	clk   clock.Clock
	log   *slog.Logger

	tickMu sync.Mutex // one Tick at a time

	gpuMu   sync.Mutex
	gpuUsed map[string]string // gpu -> worker id, until its process has exited

	exitMu sync.Mutex
	exits  []Exit
	wake   chan struct{}

	adopted             bool // since it last took the lead, the workers left running were adopted (Adopter); under tickMu
	startOnce, stopOnce sync.Once
	cancel              context.CancelFunc
	done                chan struct{}
}

// New returns an autoscaler.
func New(cfg Config) (*Autoscaler, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Autoscaler{
		cfg: cfg, eng: cfg.Engine, fleet: cfg.Fleet, prov: cfg.Provider, clk: cfg.Clock, log: cfg.Logger,
		gpuUsed: map[string]string{}, wake: make(chan struct{}, 1),
	}, nil
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
	wasLeading := false
	for {
		leading := a.cfg.Leader.Leading()
		switch {
		case leading && !wasLeading:
			// Leading again: the workers of the replicas that led meanwhile are ours to adopt.
			a.tickMu.Lock()
			a.adopted = false
			a.tickMu.Unlock()
		case !leading && wasLeading:
			a.release(ctx)
		}
		wasLeading = leading
		if leading { // otherwise another replica runs the workers
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
		for _, w := range a.fleet.Processes() {
			a.prov.Stop(w, a.cfg.StopGrace)
		}
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

// Tick runs the control loop once: it handles exits, then observes, decides and acts for every
// endpoint with a worker spec. Tests call it directly after moving a fake clock.
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
	if !a.adopted {
		if err := a.adopt(ctx, eps, now); err != nil {
			// Starting workers beside those not adopted yet would run twice as many.
			return errors.Join(append(errs, err)...)
		}
		a.adopted = true
	}
	// Slots of endpoints deleted or no longer run by Spool: stop what holds no job.
	for _, name := range a.fleet.Endpoints() {
		if _, ok := eps[name]; ok {
			continue
		}
		slots, err := a.fleet.Slots(ctx, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, s := range slots {
			if len(s.Jobs) == 0 {
				a.remove(s)
			}
		}
	}
	names := make([]string, 0, len(eps))
	for n := range eps {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		obs, err := a.observe(ctx, eps[n], now)
		if err != nil {
			errs = append(errs, fmt.Errorf("endpoint %s: %w", n, err))
			continue
		}
		if err := a.act(ctx, obs, decide(obs)); err != nil {
			errs = append(errs, fmt.Errorf("endpoint %s: %w", n, err))
		}
	}
	return errors.Join(errs...)
}

// release lets go of the workers that outlive this replica's lead (Releaser): they stay running
// for the new leader to adopt, instead of being stopped when this replica stops.
func (a *Autoscaler) release(ctx context.Context) {
	rel, ok := a.prov.(Releaser)
	if !ok {
		return
	}
	a.tickMu.Lock()
	defer a.tickMu.Unlock()
	for _, name := range a.fleet.Endpoints() {
		slots, err := a.fleet.Slots(ctx, name)
		if err != nil {
			a.log.Warn("release the workers of a lost lead", "endpoint", name, "err", err)
			continue
		}
		for _, s := range slots {
			if s.Worker != "" && rel.Release(s.Worker) {
				a.fleet.RemoveSlot(s.ID)
				a.releaseGPUs(s.Worker)
				a.log.Info("worker left to the new leader", "endpoint", name, "worker", s.Worker)
			}
		}
	}
}

// adopt takes over the workers a previous run (or leader) left running, when the provider can
// (Adopter): each becomes a slot of its endpoint, initializing until it asks for a job, as a
// started one; those of endpoints Spool no longer runs are stopped.
func (a *Autoscaler) adopt(ctx context.Context, eps map[string]spool.Endpoint, now time.Time) error {
	ad, ok := a.prov.(Adopter)
	if !ok {
		return nil
	}
	found, err := ad.Adopt(ctx, a.exited)
	if err != nil {
		return fmt.Errorf("adopt the workers left running: %w", err)
	}
	for _, w := range found {
		if _, ok := eps[w.Endpoint]; !ok {
			a.log.Info("stopping a worker left running for an endpoint without workers", "endpoint", w.Endpoint, "worker", w.WorkerID)
			a.prov.Stop(w.WorkerID, a.cfg.StopGrace)
			continue
		}
		id := w.WorkerID
		launch := fleet.Launch{Worker: id, Logs: func() []string { return a.prov.Logs(id) }}
		if st, ok := a.prov.(Statuser); ok {
			launch.Status = func() string { return st.Status(id) }
		}
		a.fleet.Launched(a.fleet.AddSlots(w.Endpoint, 1)[0], launch, now)
		a.log.Info("worker adopted", "endpoint", w.Endpoint, "worker", id)
	}
	return nil
}

// observe reads what decide needs of an endpoint: its queue and its workers.
func (a *Autoscaler) observe(ctx context.Context, ep spool.Endpoint, now time.Time) (observation, error) {
	q, err := a.cfg.Store.QueueDepth(ctx, ep.Name)
	if err != nil {
		return observation{}, fmt.Errorf("queue depth: %w", err)
	}
	slots, err := a.fleet.Slots(ctx, ep.Name)
	if err != nil {
		return observation{}, err
	}
	return observation{
		Endpoint: ep, Now: now, Queue: q, Slots: slots,
		InitTimeout: a.cfg.InitTimeout, CancelGrace: a.cfg.CancelGrace,
	}, nil
}

// act carries out a plan, in order: replacements and failures, scale-in, scale-out, starts.
func (a *Autoscaler) act(ctx context.Context, obs observation, p plan) error {
	ep, now := obs.Endpoint, obs.Now
	bySlot := make(map[int]fleet.Slot, len(obs.Slots))
	for _, s := range obs.Slots {
		bySlot[s.ID] = s
	}
	var errs []error
	for _, r := range p.Kill {
		// It runs a job the server ended: kill it now; its jobs go back to the queue.
		a.log.Info("worker replaced", "endpoint", ep.Name, "worker", r.Worker, "why", r.Why)
		a.restarted(ep.Name, "overdue")
		a.prov.Kill(r.Worker)
		a.fleet.LetGo(r.Slot)
		if _, err := a.eng.LoseWorkerJobs(ctx, r.Worker, "worker "+r.Why); err != nil {
			errs = append(errs, err)
		}
	}
	for _, r := range p.Restart {
		// It asked for a restart and holds no job: stop it gracefully.
		a.log.Info("worker replaced", "endpoint", ep.Name, "worker", r.Worker, "why", r.Why)
		a.restarted(ep.Name, "refresh")
		a.prov.Stop(r.Worker, a.cfg.StopGrace)
		a.fleet.RestartHandled(r.Worker)
		a.fleet.LetGo(r.Slot)
	}
	for _, r := range p.Fail {
		why := r.Why
		if st, ok := a.prov.(Statuser); ok && st.Status(r.Worker) != "" {
			why += " (" + st.Status(r.Worker) + ")" // Unschedulable: 0/4 nodes…, pulling image 43%
		}
		if err := a.fail(ctx, bySlot[r.Slot], why, nil, now); err != nil {
			errs = append(errs, err)
		}
	}
	if p.Add > 0 || len(p.Remove) > 0 {
		a.log.Info("autoscaler scaling", "endpoint", ep.Name, "from", len(obs.Slots),
			"to", len(obs.Slots)+p.Add-len(p.Remove), "wanted", p.Wanted, "why", p.Why)
	}
	for _, id := range p.Remove {
		a.log.Info("worker stopped (scale in)", "endpoint", ep.Name, "worker", bySlot[id].Worker)
		a.remove(bySlot[id])
	}
	for _, id := range p.Start {
		// A throttled slot starts as the worker it was shown as.
		name := ""
		if s := bySlot[id]; s.State == spool.WorkerThrottled {
			name = s.LastWorker
		}
		a.start(ctx, id, name, ep, now)
	}
	for _, id := range a.fleet.AddSlots(ep.Name, p.Add) {
		a.start(ctx, id, "", ep, now)
	}
	a.fleet.Ticked(ep.Name, p.Wanted)
	return errors.Join(errs...)
}

// handleExit handles the end of a worker process. Exits of processes the loop already let go
// (stopped, killed, replaced) find no slot and only free GPUs, unless the process took a job
// meanwhile.
func (a *Autoscaler) handleExit(ctx context.Context, x Exit, now time.Time) error {
	// Only now that the process is gone may another worker have its GPUs.
	a.releaseGPUs(x.ID)
	status := "exit status 0"
	if x.Err != nil {
		status = x.Err.Error()
	}
	s, ok := a.fleet.SlotOf(x.ID)
	if !ok {
		// A worker retired by scale-in or a replacement. A job the server still thinks it holds
		// was handed to it after its stop (its take answer went to a process on its way out) or
		// not finished: the process is gone, so the job goes back to the queue now rather than
		// after the worker is declared lost, whatever its exit status.
		_, err := a.eng.LoseWorkerJobs(ctx, x.ID, "it exited after being stopped ("+status+")")
		return err
	}
	return a.fail(ctx, s, "exited unexpectedly ("+status+")", x.Logs, now)
}

// fail makes a slot unhealthy: its process is killed (if still running), its jobs requeued at
// once, and it restarts after an exponential backoff.
func (a *Autoscaler) fail(ctx context.Context, s fleet.Slot, why string, logs []string, now time.Time) error {
	id := s.Worker
	if logs == nil && id != "" {
		logs = a.prov.Logs(id)
	}
	if id != "" {
		a.prov.Kill(id)
	}
	failures := s.Failures
	if now.Sub(s.StartedAt) >= a.cfg.BackoffReset {
		failures = 0
	}
	failures++
	delay := a.cfg.BackoffBase << min(failures-1, 30)
	if delay > a.cfg.BackoffMax || delay <= 0 {
		delay = a.cfg.BackoffMax
	}
	a.fleet.Failed(s.ID, "worker "+id+" "+why+"; restart in "+delay.String(), logs, failures, now, now.Add(delay))
	a.log.Warn("worker unhealthy", "endpoint", s.Endpoint, "worker", id, "why", why, "restartIn", delay)
	a.restarted(s.Endpoint, "failed")
	if id == "" {
		return nil
	}
	_, err := a.eng.LoseWorkerJobs(ctx, id, "worker "+why)
	return err
}

func (a *Autoscaler) restarted(endpoint, reason string) {
	if a.cfg.OnRestart != nil {
		a.cfg.OnRestart(endpoint, reason)
	}
}

// remove stops a slot's process (gracefully) and drops the slot.
func (a *Autoscaler) remove(s fleet.Slot) {
	if s.Worker != "" {
		a.prov.Stop(s.Worker, a.cfg.StopGrace)
	}
	a.fleet.RemoveSlot(s.ID)
}

// start launches a process for a slot as worker id (a new id when ""), or marks it throttled
// when the pool lacks GPUs.
func (a *Autoscaler) start(ctx context.Context, slotID int, id string, ep spool.Endpoint, now time.Time) {
	if id == "" {
		id = ep.Name + "-" + randomHex(6)
	}
	var (
		gpus     []string
		gpuCount int
	)
	if gs, ok := a.prov.(GPUScheduler); ok && gs.SchedulesGPUs(*ep.Worker) {
		gpuCount = ep.GPUCount // the cluster's scheduler finds them
	} else {
		var free int
		gpus, free = a.takeGPUs(id, ep.GPUCount)
		if ep.GPUCount > 0 && gpus == nil {
			a.fleet.Throttled(slotID, id, fmt.Sprintf("needs %d GPUs; %d of the pool's %d are free", ep.GPUCount, free, len(a.cfg.GPUs)), now)
			return
		}
	}
	launch := fleet.Launch{Worker: id, GPUs: gpus, Logs: func() []string { return a.prov.Logs(id) }}
	if st, ok := a.prov.(Statuser); ok {
		launch.Status = func() string { return st.Status(id) }
	}
	a.fleet.Launched(slotID, launch, now)
	err := a.prov.Start(ctx, WorkerSpec{
		Endpoint: ep.Name, WorkerID: id, Env: a.env(ep, id, gpus, gpuCount), GPUs: gpus, GPUCount: gpuCount, Spec: *ep.Worker,
	}, a.exited)
	if err != nil {
		a.log.Warn("worker start failed", "endpoint", ep.Name, "worker", id, "err", err)
		a.releaseGPUs(id) // no process, so no exit will free them
		if s, ok := a.fleet.SlotOf(id); ok {
			_ = a.fail(ctx, s, "could not start: "+err.Error(), []string{}, now)
		}
		return
	}
	a.log.Info("worker started", "endpoint", ep.Name, "worker", id, "gpus", gpus)
}

// takeGPUs takes n free GPUs of the pool for worker id; nil (and how many are free) when the pool
// has fewer.
func (a *Autoscaler) takeGPUs(id string, n int) ([]string, int) {
	if n <= 0 {
		return nil, 0
	}
	a.gpuMu.Lock()
	defer a.gpuMu.Unlock()
	var gpus []string
	for _, g := range a.cfg.GPUs {
		if _, used := a.gpuUsed[g]; !used {
			gpus = append(gpus, g)
			if len(gpus) == n {
				break
			}
		}
	}
	if len(gpus) < n {
		return nil, len(gpus)
	}
	for _, g := range gpus {
		a.gpuUsed[g] = id
	}
	return gpus, len(gpus)
}

// releaseGPUs gives the GPUs of a worker back to the pool.
func (a *Autoscaler) releaseGPUs(id string) {
	a.gpuMu.Lock()
	defer a.gpuMu.Unlock()
	for g, w := range a.gpuUsed {
		if w == id {
			delete(a.gpuUsed, g)
		}
	}
}

// env is the RunPod environment of a worker (docs/contract.md §4) plus its GPUs: those of the
// local pool, or a count a cluster's scheduler provides.
func (a *Autoscaler) env(ep spool.Endpoint, id string, gpus []string, gpuCount int) map[string]string {
	server := a.cfg.ServerURL
	if ep.Worker != nil && ep.Worker.Image != "" && a.cfg.ContainerURL != "" {
		server = a.cfg.ContainerURL
	}
	base := strings.TrimRight(server, "/") + "/v2/" + ep.Name
	env := map[string]string{
		"RUNPOD_WEBHOOK_GET_JOB":         base + "/job-take/$ID?",
		"RUNPOD_WEBHOOK_POST_OUTPUT":     base + "/job-done/$RUNPOD_POD_ID/$ID?",
		"RUNPOD_WEBHOOK_POST_STREAM":     base + "/job-stream/$RUNPOD_POD_ID/$ID?",
		"RUNPOD_WEBHOOK_PING":            base + "/ping/$RUNPOD_POD_ID?",
		"RUNPOD_PING_INTERVAL":           strconv.FormatInt(a.cfg.PingInterval.Milliseconds(), 10),
		"RUNPOD_POD_ID":                  id,
		"RUNPOD_POD_HOSTNAME":            id,
		"RUNPOD_AI_API_KEY":              a.cfg.WorkerKey(ep.Name, id),
		"RUNPOD_ENDPOINT_ID":             ep.Name,
		"RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
		"RUNPOD_GPU_COUNT":               strconv.Itoa(len(gpus) + gpuCount),
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

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
