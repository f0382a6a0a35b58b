// Package bench measures what Spool adds to the cost of running a job: end-to-end throughput and
// the server's CPU per job, /runsync and pickup latency, /run acknowledgements, and a deep queue,
// each against a baseline server with no store measured in the same run (see Baseline).
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spool-run/spool/spoolclient"
	"github.com/spool-run/spool/spoolworker"
)

// Config says what to measure and how much.
type Config struct {
	// Binary is the spool binary: its serve command is the server measured (on a fresh temporary
	// data directory for each cell), its hidden bench-baseline command the baseline. Required.
	Binary string
	// URL and Key measure a running server instead (its endpoint "bench" must exist and Key must
	// be an admin key); its CPU and memory are then not measured, and it is not fresh per cell.
	URL, Key string
	// Dir holds the temporary data directories. Defaults to the system's.
	Dir string
	// Store is the store of the servers the bench starts: "" for the embedded SQLite store, or
	// a postgres:// URL of a loopback server, where each server gets a schema of its own,
	// dropped afterwards. The deep-queue cell needs the embedded store (it fills the file
	// directly) and is skipped on PostgreSQL.
	Store string
	// Runs is how many times each cell runs (interleaved with the baseline); the report gives
	// medians. Defaults to 3.
	Runs int
	// Jobs is the number of jobs of each throughput cell. Defaults to 20,000.
	Jobs int
	// Workers lists the worker slots of the throughput cells. Defaults to 16 and 64.
	Workers []int
	// Batch is how many jobs a worker takes at once (its concurrency; job-take-batch when over
	// 1). Defaults to 1.
	Batch int
	// Clients is the number of concurrent submitters. Defaults to 32.
	Clients int
	// Samples is the number of /runsync and pickup measurements. Defaults to 2,000.
	Samples int
	// Deep is the number of jobs queued for the deep-queue cell; 0 skips it.
	Deep int
	// Progress, when set, is told what runs and how far it got.
	Progress func(cell string, frac float64)
}

// Quick returns a configuration that finishes in well under a minute: a smoke test, not a
// measurement.
func Quick(binary string) Config {
	return Config{Binary: binary, Runs: 1, Jobs: 300, Workers: []int{4}, Clients: 8, Samples: 30, Deep: 1000}
}

func (c Config) withDefaults() Config {
	if c.Runs <= 0 {
		c.Runs = 3
	}
	if c.Jobs <= 0 {
		c.Jobs = 20000
	}
	if len(c.Workers) == 0 {
		c.Workers = []int{16, 64}
	}
	if c.Batch <= 0 {
		c.Batch = 1
	}
	if c.Clients <= 0 {
		c.Clients = 32
	}
	if c.Samples <= 0 {
		c.Samples = 2000
	}
	return c
}

// Row is one figure of the report: Spool's (the median of its runs), the baseline's when there
// is one, and their ratio.
type Row struct {
	Name     string    `json:"name"`
	Unit     string    `json:"unit"`
	Spool    float64   `json:"spool"`
	Baseline *float64  `json:"baseline,omitempty"`
	Ratio    *float64  `json:"ratio,omitempty"` // spool / baseline
	Runs     []float64 `json:"runs"`
	// BaselineRuns are the baseline's figures, run by run.
	BaselineRuns []float64 `json:"baselineRuns,omitempty"`
}

// Report is what Run measured.
type Report struct {
	Machine struct {
		CPUs      int    `json:"cpus"`
		GoVersion string `json:"goVersion"`
		OS        string `json:"os"`
	} `json:"machine"`
	Store   string  `json:"store"` // sqlite, postgres, or the URL measured
	Runs    int     `json:"runs"`
	Jobs    int     `json:"jobs"`
	Batch   int     `json:"batch"`
	Deep    int     `json:"deep"`
	Rows    []Row   `json:"rows"`
	Seconds float64 `json:"seconds"`
}

// Run measures. It stops every server it started before it returns.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg = cfg.withDefaults()
	if cfg.Binary == "" {
		return nil, errors.New("bench: Binary is required")
	}
	start := time.Now()
	b := &bencher{cfg: cfg, hc: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}}}
	defer b.hc.CloseIdleConnections()
	rep := &Report{Store: "sqlite", Runs: cfg.Runs, Jobs: cfg.Jobs, Batch: cfg.Batch, Deep: cfg.Deep}
	switch {
	case cfg.URL != "":
		rep.Store = "the server at " + cfg.URL
	case cfg.Store != "":
		rep.Store, rep.Deep, cfg.Deep = "postgres", 0, 0
	}
	rep.Machine.CPUs, rep.Machine.GoVersion, rep.Machine.OS = runtime.NumCPU(), runtime.Version(), runtime.GOOS+"/"+runtime.GOARCH

	for _, w := range cfg.Workers {
		var thr, cpu pair
		for run := range cfg.Runs {
			for _, base := range []bool{false, true} { // interleaved: the machine's drift hits both
				b.progress(fmt.Sprintf("throughput, %d workers (run %d/%d)", w, run+1, cfg.Runs), 0)
				r, err := b.throughput(ctx, base, w)
				if err != nil {
					return nil, err
				}
				thr.add(base, r.jobsPerSec)
				cpu.add(base, r.cpuPerJob)
			}
		}
		rep.Rows = append(rep.Rows, thr.row(fmt.Sprintf("/run → COMPLETED, %d workers", w), "jobs/s"))
		rep.Rows = append(rep.Rows, cpu.row(fmt.Sprintf("server CPU per job, %d workers", w), "µs"))
	}

	var p50, p90, p99, pmax, pick, acks, ackCPU pair
	for run := range cfg.Runs {
		for _, base := range []bool{false, true} {
			b.progress(fmt.Sprintf("latency (run %d/%d)", run+1, cfg.Runs), 0)
			l, err := b.latency(ctx, base)
			if err != nil {
				return nil, err
			}
			p50.add(base, ms(l.sync.pct(50)))
			p90.add(base, ms(l.sync.pct(90)))
			p99.add(base, ms(l.sync.pct(99)))
			pmax.add(base, ms(l.sync.pct(100)))
			pick.add(base, ms(l.pickup.pct(50)))
			b.progress(fmt.Sprintf("/run acknowledgements (run %d/%d)", run+1, cfg.Runs), 0)
			a, err := b.acks(ctx, base)
			if err != nil {
				return nil, err
			}
			acks.add(base, a.perSec)
			ackCPU.add(base, a.cpuPerAck)
		}
	}
	rep.Rows = append(rep.Rows,
		p50.row("/runsync p50, 1 warm worker", "ms"), p90.row("/runsync p90", "ms"),
		p99.row("/runsync p99", "ms"), pmax.row("/runsync max", "ms"),
		pick.row("idle pickup p50 (/run → worker has it)", "ms"),
		acks.row(fmt.Sprintf("/run alone, %d clients", cfg.Clients), "jobs/s"),
		ackCPU.row("server CPU per /run", "µs"))

	if cfg.Deep > 0 {
		b.progress("deep queue", 0)
		d, err := b.deep(ctx)
		if err != nil {
			return nil, err
		}
		rep.Rows = append(rep.Rows, d...)
	}
	rep.Seconds = time.Since(start).Seconds()
	b.progress("done", 1)
	return rep, nil
}

type bencher struct {
	cfg Config
	hc  *http.Client
}

func (b *bencher) progress(cell string, frac float64) {
	if b.cfg.Progress != nil {
		b.cfg.Progress(cell, frac)
	}
}

// start starts a fresh server (or returns the one given by URL, with a no-op stop).
func (b *bencher) start(ctx context.Context, baseline bool) (*target, error) {
	switch {
	case baseline:
		return startBaseline(ctx, b.cfg.Binary)
	case b.cfg.URL != "":
		return &target{name: "spool", url: b.cfg.URL, key: b.cfg.Key, stop: func() error { return nil }}, nil
	}
	return startSpool(ctx, b.cfg.Binary, b.cfg.Dir, b.cfg.Store)
}

// pair collects the runs of one figure for Spool and the baseline.
type pair struct{ spool, base []float64 }

func (p *pair) add(baseline bool, v float64) {
	if baseline {
		p.base = append(p.base, v)
	} else {
		p.spool = append(p.spool, v)
	}
}

func (p *pair) row(name, unit string) Row {
	r := Row{Name: name, Unit: unit, Spool: median(p.spool), Runs: p.spool}
	if len(p.base) > 0 {
		m := median(p.base)
		r.Baseline, r.BaselineRuns = &m, p.base
		if m != 0 && !isNaN(r.Spool) {
			ratio := r.Spool / m
			r.Ratio = &ratio
		}
	}
	return r
}

func isNaN(f float64) bool { return f != f }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// durations is a sample of latencies.
type durations []time.Duration

// pct is the p-th percentile (nearest rank); 100 is the maximum.
func (d durations) pct(p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// quiet discards the workers' logs: the bench reports its own errors.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// workers runs slots worker slots against t (slots/Batch workers, each taking Batch jobs at
// once) until the returned stop is called; handle runs for each job.
func (b *bencher) workers(ctx context.Context, t *target, slots int, handle func(*spoolworker.Job)) (stop func(), err error) {
	n := max(1, slots/b.cfg.Batch)
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range n {
		wc := spoolworker.ConfigFor(t.url, Endpoint, t.key)
		wc.WorkerID = fmt.Sprintf("bench-%d", i)
		wc.Concurrency = b.cfg.Batch
		wc.Logger = quiet
		w, err := spoolworker.New(wc, spoolworker.HandlerFunc(func(_ context.Context, j *spoolworker.Job) (any, error) {
			if handle != nil {
				handle(j)
			}
			return j.Input, nil
		}))
		if err != nil {
			cancel()
			wg.Wait()
			return nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = w.Run(wctx)
		}()
	}
	return func() { cancel(); wg.Wait() }, nil
}

// submit sends n jobs with Clients concurrent submitters; each acknowledgement calls acked.
func (b *bencher) submit(ctx context.Context, t *target, n int, acked func()) error {
	ep := spoolclient.New(t.url, t.key, spoolclient.WithHTTPClient(b.hc)).Endpoint(Endpoint)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, b.cfg.Clients)
	for range b.cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) || ctx.Err() != nil {
					return
				}
				if _, err := ep.Run(ctx, spoolclient.Request{Input: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}); err != nil {
					errs <- fmt.Errorf("/run on %s: %w", t.name, err)
					return
				}
				if acked != nil {
					acked()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// awaitCompleted waits until /health counts at least n completed jobs, for at most limit.
func (b *bencher) awaitCompleted(ctx context.Context, t *target, n int, limit time.Duration) error {
	ep := spoolclient.New(t.url, t.key, spoolclient.WithHTTPClient(b.hc)).Endpoint(Endpoint)
	deadline := time.Now().Add(limit)
	for pause := time.Millisecond; ; pause = min(2*pause, 50*time.Millisecond) {
		h, err := ep.Health(ctx)
		if err != nil {
			return fmt.Errorf("/health on %s: %w", t.name, err)
		}
		if h.Jobs.Completed >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d of %d jobs completed after %s", t.name, h.Jobs.Completed, n, limit)
		}
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// countTo returns a handler that counts jobs and closes reached when the count reaches n.
func countTo(n int) (func(*spoolworker.Job), <-chan struct{}) {
	var count atomic.Int64
	reached := make(chan struct{})
	return func(*spoolworker.Job) {
		if count.Add(1) == int64(n) {
			close(reached)
		}
	}, reached
}

func (b *bencher) cpu(t *target) time.Duration {
	if t.pid == 0 {
		return 0
	}
	d, err := cpuTime(t.pid)
	if err != nil {
		return 0
	}
	return d
}

type throughputResult struct{ jobsPerSec, cpuPerJob float64 }

// throughput submits Jobs jobs to a fresh server with workers running and times them from the
// first submission to the last completion on the server's /health.
func (b *bencher) throughput(ctx context.Context, baseline bool, slots int) (_ throughputResult, err error) {
	t, err := b.start(ctx, baseline)
	if err != nil {
		return throughputResult{}, err
	}
	defer func() { err = errors.Join(err, t.stop()) }()
	handle, reached := countTo(b.cfg.Jobs)
	stop, err := b.workers(ctx, t, slots, handle)
	if err != nil {
		return throughputResult{}, err
	}
	defer stop()
	cpu0, start := b.cpu(t), time.Now()
	var acked atomic.Int64
	if err := b.submit(ctx, t, b.cfg.Jobs, func() {
		if n := acked.Add(1); n%256 == 0 {
			b.progress("", float64(n)/float64(b.cfg.Jobs))
		}
	}); err != nil {
		return throughputResult{}, err
	}
	select {
	case <-reached:
	case <-ctx.Done():
		return throughputResult{}, ctx.Err()
	}
	if err := b.awaitCompleted(ctx, t, b.cfg.Jobs, time.Minute); err != nil {
		return throughputResult{}, err
	}
	elapsed, cpu := time.Since(start), b.cpu(t)-cpu0
	return throughputResult{
		jobsPerSec: float64(b.cfg.Jobs) / elapsed.Seconds(),
		cpuPerJob:  float64(cpu) / float64(time.Microsecond) / float64(b.cfg.Jobs),
	}, nil
}

type latencyResult struct{ sync, pickup durations }

// latency measures /runsync round trips with one warm worker, then idle pickups: a /run while
// the worker long-polls, until its handler has the job.
func (b *bencher) latency(ctx context.Context, baseline bool) (_ latencyResult, err error) {
	t, err := b.start(ctx, baseline)
	if err != nil {
		return latencyResult{}, err
	}
	defer func() { err = errors.Join(err, t.stop()) }()
	picked := make(chan time.Time, 1)
	stop, err := b.workers(ctx, t, 1, func(*spoolworker.Job) {
		select {
		case picked <- time.Now():
		default:
		}
	})
	if err != nil {
		return latencyResult{}, err
	}
	defer stop()
	ep := spoolclient.New(t.url, t.key, spoolclient.WithHTTPClient(b.hc)).Endpoint(Endpoint)
	var res latencyResult
	warm := max(10, b.cfg.Samples/20)
	for i := range warm + b.cfg.Samples {
		t0 := time.Now()
		j, err := ep.RunSync(ctx, spoolclient.Request{Input: json.RawMessage(`{"sync":true}`)}, 30*time.Second)
		if err != nil {
			return res, fmt.Errorf("/runsync on %s: %w", t.name, err)
		}
		if j.Status != spoolclient.StatusCompleted {
			return res, fmt.Errorf("/runsync on %s: job %s is %s after 30 s", t.name, j.ID, j.Status)
		}
		if i >= warm {
			res.sync = append(res.sync, time.Since(t0))
		}
		<-picked
		if i%16 == 0 {
			b.progress("", float64(i)/float64(2*(warm+b.cfg.Samples)))
		}
	}
	for i := range b.cfg.Samples / 2 {
		// Let the worker's result post finish and its next long-poll start.
		time.Sleep(5 * time.Millisecond)
		t0 := time.Now()
		if _, err := ep.Run(ctx, spoolclient.Request{Input: json.RawMessage(`{"pickup":true}`)}); err != nil {
			return res, fmt.Errorf("/run on %s: %w", t.name, err)
		}
		select {
		case t1 := <-picked:
			res.pickup = append(res.pickup, t1.Sub(t0))
		case <-time.After(30 * time.Second):
			return res, fmt.Errorf("%s: no pickup within 30 s", t.name)
		case <-ctx.Done():
			return res, ctx.Err()
		}
		if i%16 == 0 {
			b.progress("", 0.5+float64(i)/float64(b.cfg.Samples))
		}
	}
	return res, nil
}

type acksResult struct{ perSec, cpuPerAck float64 }

// acks submits Jobs jobs with no worker running.
func (b *bencher) acks(ctx context.Context, baseline bool) (_ acksResult, err error) {
	t, err := b.start(ctx, baseline)
	if err != nil {
		return acksResult{}, err
	}
	defer func() { err = errors.Join(err, t.stop()) }()
	cpu0, start := b.cpu(t), time.Now()
	if err := b.submit(ctx, t, b.cfg.Jobs, nil); err != nil {
		return acksResult{}, err
	}
	elapsed, cpu := time.Since(start), b.cpu(t)-cpu0
	return acksResult{
		perSec:    float64(b.cfg.Jobs) / elapsed.Seconds(),
		cpuPerAck: float64(cpu) / float64(time.Microsecond) / float64(b.cfg.Jobs),
	}, nil
}

// deep queues Deep jobs on Spool, then measures /health, the server's memory and the rate at
// which 16 workers drain Jobs of them, against the rate on a queue of just Jobs jobs.
func (b *bencher) deep(ctx context.Context) ([]Row, error) {
	drain := min(b.cfg.Jobs, b.cfg.Deep)
	rate := func(queued int, measure func(*target) error) (float64, error) {
		t, err := b.start(ctx, false)
		if err != nil {
			return 0, err
		}
		defer func() { _ = t.stop() }()
		var acked atomic.Int64
		if err := b.submit(ctx, t, queued, func() {
			if n := acked.Add(1); n%1024 == 0 {
				b.progress("", 0.9*float64(n)/float64(queued))
			}
		}); err != nil {
			return 0, err
		}
		if measure != nil {
			if err := measure(t); err != nil {
				return 0, err
			}
		}
		handle, reached := countTo(drain)
		start := time.Now()
		stop, err := b.workers(ctx, t, 16, handle)
		if err != nil {
			return 0, err
		}
		defer stop()
		select {
		case <-reached:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if err := b.awaitCompleted(ctx, t, drain, time.Minute); err != nil {
			return 0, err
		}
		return float64(drain) / time.Since(start).Seconds(), nil
	}
	var health durations
	var mem float64
	deepRate, err := rate(b.cfg.Deep, func(t *target) error {
		ep := spoolclient.New(t.url, t.key, spoolclient.WithHTTPClient(b.hc)).Endpoint(Endpoint)
		for range 21 {
			t0 := time.Now()
			if _, err := ep.Health(ctx); err != nil {
				return fmt.Errorf("/health: %w", err)
			}
			health = append(health, time.Since(t0))
		}
		if t.pid != 0 {
			r, err := rss(t.pid)
			if err != nil {
				return err
			}
			mem = float64(r) / (1 << 20)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	b.progress("deep queue: shallow reference", 0.95)
	shallowRate, err := rate(drain, nil)
	if err != nil {
		return nil, err
	}
	ratio := deepRate / shallowRate
	return []Row{
		{Name: fmt.Sprintf("/health p50, %d queued", b.cfg.Deep), Unit: "ms", Spool: ms(health.pct(50)), Runs: []float64{ms(health.pct(50))}},
		{Name: fmt.Sprintf("server RSS, %d queued", b.cfg.Deep), Unit: "MiB", Spool: mem, Runs: []float64{mem}},
		{Name: fmt.Sprintf("take rate, %d queued (ratio: to %d queued)", b.cfg.Deep, drain), Unit: "jobs/s", Spool: deepRate,
			Baseline: &shallowRate, Ratio: &ratio, Runs: []float64{deepRate}, BaselineRuns: []float64{shallowRate}},
	}, nil
}
