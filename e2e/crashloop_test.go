package e2e_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// crashLoopSize is how much a crash loop does. The loop ends once both figures are reached; limit
// bounds its time.
type crashLoopSize struct {
	jobs, kills int
	limit       time.Duration
}

var (
	// crashLoopCI runs in every `go test ./e2e/`.
	crashLoopCI = crashLoopSize{jobs: 2000, kills: 20, limit: 150 * time.Second}
	// crashLoopSoak runs with SPOOL_SOAK=1, e.g.
	// SPOOL_SOAK=1 go test -race -count=1 -timeout 60m ./e2e/ -run CrashLoop
	crashLoopSoak = crashLoopSize{jobs: 10000, kills: 60, limit: 40 * time.Minute}
)

const crashLoopConfig = `
retention:
  run: 24h
workers:
  lostAfter: 3s
  takeWait: 1s
  maxRetries: 1000
endpoints:
  - name: ep
`

// crashTarget is the server the clients and workers of a crash loop talk to: its URL, and
// whether it is up. Requests that fail while it is down wait for the restart instead of spinning.
type crashTarget struct {
	mu        sync.Mutex
	base      string
	up        chan struct{} // closed while the server is up
	restarted chan struct{} // closed (and replaced) at every restart
}

func newCrashTarget(base string) *crashTarget {
	c := &crashTarget{base: base, up: make(chan struct{}), restarted: make(chan struct{})}
	close(c.up)
	return c
}

func (c *crashTarget) current() (string, chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.base, c.up
}

// down is called just before the kill, so that every failure the kill causes finds it down.
func (c *crashTarget) down() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.up = make(chan struct{})
}

func (c *crashTarget) setUp(base string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.base = base
	close(c.up)
	close(c.restarted)
	c.restarted = make(chan struct{})
}

// awaitUp waits until the server is up and returns its URL; "" once ctx ends.
func (c *crashTarget) awaitUp(ctx context.Context) string {
	_, up := c.current()
	select {
	case <-up:
		base, _ := c.current()
		return base
	case <-ctx.Done():
		return ""
	}
}

// nextRestart returns a channel closed at the next restart.
func (c *crashTarget) nextRestart() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.restarted
}

// pacer spreads a life's share of submissions evenly over the life.
type pacer struct {
	mu          sync.Mutex
	start       time.Time
	life        time.Duration
	base, quota int64 // acknowledged submissions when the life began; its share
}

// newLife starts a life of the server: of the jobs not yet acknowledged, an even share for each
// of the kills still to come.
func (p *pacer) newLife(life time.Duration, acked, jobs, killsLeft int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.start, p.life, p.base = time.Now(), life, acked
	p.quota = (max(0, jobs-acked) + killsLeft - 1) / killsLeft
}

// await waits until the next submission is due (acked is the count so far); false once ctx
// ends. A restart ends the wait too: the next life has its own share.
func (p *pacer) await(ctx context.Context, target *crashTarget, acked int64) bool {
	p.mu.Lock()
	var wait time.Duration
	switch {
	case p.life == 0:
	case p.quota == 0:
		wait = time.Until(p.start.Add(p.life)) + time.Second // none this life
	default:
		due := p.start.Add(p.life * time.Duration(acked-p.base) / time.Duration(p.quota))
		wait = time.Until(due)
	}
	p.mu.Unlock()
	if wait <= 0 {
		return ctx.Err() == nil
	}
	restarted := target.nextRestart()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-restarted:
	case <-ctx.Done():
	}
	return ctx.Err() == nil
}

// crashWorker imitates a worker of the runpod-python kind that outlives server crashes: each
// slot takes one job (job-take), "runs" it and posts the result (job-done); a ping loop lists
// the jobs held. retryConnErrors picks the result-post behaviour: runpod-python 1.12 retries
// only 5xx answers (2 s, then 3 s; docs/worker-protocol.md §4) and drops a result whose
// post hit a connection error, so the job is recovered by the server's lost-worker rules; Spool's
// Go worker SDK (and the task's model of a retrying worker) also retries connection errors, 3
// attempts in all, so the server sees repeats of posts it may already have committed.
type crashWorker struct {
	id              string
	target          *crashTarget
	rec             *recorder
	pinger          *recorder
	retryConnErrors bool
	seq             atomic.Int64

	mu   sync.Mutex
	held map[string]int // job → slots running it
}

func (w *crashWorker) hold(id string, d int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.held[id] += d
	if w.held[id] <= 0 {
		delete(w.held, id)
	}
}

func (w *crashWorker) heldIDs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return sortedKeys(w.held)
}

// slot takes and runs jobs until ctx ends (at most maxTakes polls).
func (w *crashWorker) slot(ctx context.Context, maxTakes int) {
	for range maxTakes {
		base := w.target.awaitUp(ctx)
		if base == "" {
			return
		}
		id, input, typ, _, _ := w.rec.take(ctx, base, "ep", w.id, len(w.heldIDs()) > 0)
		if ctx.Err() != nil {
			return
		}
		if typ != evOK || id == "" {
			continue // a 204 polls again at once; a failure waits for the server in awaitUp
		}
		w.hold(id, 1)
		out := fmt.Sprintf(`{"echo": %s, "by": %q, "n": %d}`, input, w.id, w.seq.Add(1))
		w.post(ctx, id, out)
		w.hold(id, -1)
	}
}

func (w *crashWorker) post(ctx context.Context, id, out string) {
	pauses := []time.Duration{2 * time.Second, 3 * time.Second}
	for attempt := 0; ; attempt++ {
		base := w.target.awaitUp(ctx)
		if base == "" {
			return
		}
		typ, _, err := w.rec.result(ctx, base, "ep", w.id, id, out)
		if typ != evUnknown || ctx.Err() != nil || attempt == len(pauses) {
			return
		}
		if err != nil {
			if !w.retryConnErrors {
				return // runpod-python drops it
			}
			continue // awaitUp: the next attempt goes to the restarted server
		}
		// A 5xx: the SDK's FibonacciRetry pause.
		t := time.NewTimer(pauses[attempt])
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// pingLoop sends runpod-python's heartbeat every second with the held jobs (unrecorded: a ping
// changes no job; its answer is ignored, as the SDK ignores it).
func (w *crashWorker) pingLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if base, _ := w.target.current(); base != "" {
			u := newRPURLs(workerEnv(base, "ep", w.id, w.pinger.key)).pingURL(w.heldIDs())
			_, _ = w.pinger.send(ctx, "GET", u, pingHeader(w.pinger.key), nil, 2*time.Second)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// TestCrashLoopHistory is the crash-safety proof: clients submit (/run) and runpod-python-style
// workers take and complete jobs while the server is SIGKILLed every 1-3 s (random, from a
// logged seed) and restarted on the same data directory and port, until crashLoopCI's jobs were
// acknowledged and its kills made (crashLoopSoak with SPOOL_SOAK=1; SPOOL_CRASH_SEED=n reuses a
// logged seed's kill intervals). Then a last kill and restart, a drain, and the history check:
// nothing acknowledged lost, nothing unexpected, nothing duplicated, no state regression
// (docs/contract.md §2 Durability, §3).
func TestCrashLoopHistory(t *testing.T) {
	t.Parallel()
	size := crashLoopCI
	if os.Getenv("SPOOL_SOAK") == "1" {
		size = crashLoopSoak
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("SPOOL_CRASH_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		require.NoError(t, err, "SPOOL_CRASH_SEED must be an unsigned integer")
		seed = n
	}
	t.Logf("crash loop: seed %d (SPOOL_CRASH_SEED=%d reuses its kill intervals), %d jobs, %d kills", seed, seed, size.jobs, size.kills)
	rng := rand.New(rand.NewPCG(seed, 0x5b001))
	start := time.Now()

	srv := startServer(t, serverOpts{Config: crashLoopConfig})
	target := newCrashTarget(srv.URL)
	h := &history{}
	run := strings.ToLower(newSecret()[6:14]) // makes this run's nonces unique

	ctx, cancel := context.WithCancel(context.Background())
	clientsCtx, stopClients := context.WithCancel(ctx)
	var clients, workers sync.WaitGroup
	var recorders []*recorder
	defer func() { // also on a failed require: nothing outlives the test
		cancel()
		clients.Wait()
		workers.Wait()
		for _, r := range recorders {
			r.close()
		}
	}()

	// Clients: each life of the server gets an even share of the jobs still to submit, paced over
	// the life (pacer), so that kills land among submissions; a server too slow for the pace
	// keeps the clients busy all the time.
	var acked atomic.Int64
	var knownMu sync.Mutex
	var known []string
	knownGrew := make(chan struct{}) // closed and replaced whenever known grows
	pace := &pacer{}
	for c := range 4 {
		rec := newRecorder(h, fmt.Sprintf("client-%d", c), srv.Keys.Client)
		recorders = append(recorders, rec)
		clients.Add(1)
		go func() {
			defer clients.Done()
			for i := range 3 * size.jobs {
				if !pace.await(clientsCtx, target, acked.Load()) {
					return
				}
				base := target.awaitUp(clientsCtx)
				if base == "" {
					return
				}
				input := fmt.Sprintf(`{"nonce": "%s-c%d-%d", "client": %d, "i": %d}`, run, c, i, c, i)
				id, typ, _, _ := rec.submit(clientsCtx, base, "ep", input, "")
				if typ == evOK {
					acked.Add(1)
					knownMu.Lock()
					known = append(known, id)
					close(knownGrew)
					knownGrew = make(chan struct{})
					knownMu.Unlock()
				}
			}
		}()
	}

	// Workers: two that retry result posts on connection errors, two that drop them as
	// runpod-python does; two slots each, and a ping loop.
	for i := range 4 {
		w := &crashWorker{
			id: fmt.Sprintf("w%d", i), target: target, retryConnErrors: i%2 == 0, held: map[string]int{},
			rec:    newRecorder(h, fmt.Sprintf("worker-w%d", i), srv.Keys.Worker),
			pinger: newRecorder(h, fmt.Sprintf("pinger-w%d", i), srv.Keys.Worker),
		}
		recorders = append(recorders, w.rec, w.pinger)
		workers.Add(3)
		go func() { defer workers.Done(); w.pingLoop(ctx) }()
		for range 2 {
			go func() { defer workers.Done(); w.slot(ctx, 20*size.jobs) }()
		}
	}

	// A reader follows the acknowledged jobs in order, long-polling each until it ends
	// (/status-sync), and reads a random older one every tenth time, so that the history holds
	// observations of jobs across the kills.
	reader := newRecorder(h, "reader", srv.Keys.Client)
	recorders = append(recorders, reader)
	readerRng := rand.New(rand.NewPCG(seed, 2))
	workers.Add(1)
	go func() {
		defer workers.Done()
		next := 0
		for i := range 20 * size.jobs {
			knownMu.Lock()
			n, grown := len(known), knownGrew
			id := ""
			switch {
			case i%10 == 9 && n > 0:
				id = known[readerRng.IntN(n)]
			case next < n:
				id = known[next]
				next++
			}
			knownMu.Unlock()
			if id == "" {
				select { // wait for the next acknowledged job
				case <-grown:
				case <-ctx.Done():
					return
				}
				continue
			}
			base := target.awaitUp(ctx)
			if base == "" {
				return
			}
			reader.read(ctx, base, "ep", id, 2000)
		}
	}()

	// The kill loop.
	deadline := time.Now().Add(size.limit)
	kills, samePort := 0, 0
	restart := func() {
		target.down()
		srv.Kill()
		kills++
		opts := srv.Opts
		opts.Addr = ""
		if u, err := url.Parse(srv.URL); err == nil && portFree(u.Host) {
			opts.Addr = u.Host // the same port: clients and workers keep their URL
			samePort++
		}
		srv = startServer(t, opts)
		target.setUp(srv.URL)
	}
	for kills < 10*size.kills {
		if kills >= size.kills && acked.Load() >= int64(size.jobs) {
			break
		}
		require.True(t, time.Now().Before(deadline), "the crash loop did not reach %d acknowledged jobs and %d kills within %s: %d acknowledged, %d kills",
			size.jobs, size.kills, size.limit, acked.Load(), kills)
		// Pacing the kills is the point of the test: the server lives 1-3 s.
		life := time.Second + time.Duration(rng.Int64N(int64(2*time.Second)))
		pace.newLife(life, acked.Load(), int64(size.jobs), int64(max(1, size.kills-kills)))
		up := time.NewTimer(life)
		<-up.C
		restart()
	}
	loopTime := time.Since(start)
	stopClients()
	clients.Wait()
	restart() // the final restart, with no submission in flight
	drainStart := time.Now()
	drainJobs(t, srv, "ep", 2*time.Minute)
	cancel()
	workers.Wait()
	drainTime := time.Since(drainStart)

	events := h.snapshot(t)
	final := readBack(t, srv, "ep", knownJobIDs(events))
	rep := checkHistory(events, final)
	reads := 0
	for _, e := range events {
		if e.Type == evInvoke && e.Kind == opRead {
			reads++
		}
	}
	t.Logf("crash loop summary: seed %d, %d kills (%d restarts on the same port), %d jobs on the server, %d acknowledged submits (of %d), %d acknowledged results, %d unknown outcomes (submit %d, take %d, result %d, read %d), %d reads, %d events; loop %s, drain %s, total %s",
		seed, kills, samePort, rep.Jobs, rep.AckedSubmits, rep.Submits, rep.AckedResults, rep.unknowns(),
		rep.Unknown[opSubmit], rep.Unknown[opTake], rep.Unknown[opResult], rep.Unknown[opRead], reads, len(events),
		loopTime.Round(time.Millisecond), drainTime.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	require.True(t, rep.ok(), "history check failed (seed %d):\n%s", seed, rep)
	h.requireNoAnomalies(t)
	for id, j := range final {
		require.Equal(t, "COMPLETED", j.State, "job %s after the drain: %+v", id, j)
	}
	srv.Stop()
}

// portFree reports whether addr can be listened on now (a killed server's port is free unless
// another process took it meanwhile).
func portFree(addr string) bool {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	return ln.Close() == nil
}
