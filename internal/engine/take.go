package engine

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/notify"
	"github.com/spool-run/spool/store"
)

// Handout is a job handed to a worker: the job as its take wrote it (with its input), and its
// s3Config opened for that worker's job-take answer, and for nothing else (nil when it has none).
type Handout struct {
	Job      *spool.Job
	S3Config json.RawMessage
}

// Take hands up to n queued jobs of endpoint to a worker, waiting up to wait for one to arrive
// (a long-poll). It returns nothing and no error when wait runs out or the engine drains.
func (e *Engine) Take(ctx context.Context, endpoint, worker string, n int, wait time.Duration) ([]Handout, error) {
	if _, err := e.Endpoint(endpoint); err != nil {
		return nil, err
	}
	n = max(n, 1)
	gate := e.gate(endpoint)
	handouts, _, err := poll(ctx, e, notify.Work(endpoint), wait, func() ([]Handout, bool, error) {
		if e.Draining() {
			return nil, false, nil
		}
		// Whether more jobs are queued than are being claimed is all the gate needs: a bounded
		// count, which a shared store answers without counting a deep queue.
		queued, err := e.store.CountQueued(ctx, store.CountQueuedParams{Endpoint: endpoint, Limit: gate.wanted(n)})
		if err != nil {
			return nil, false, translate(err, "queue of "+endpoint)
		}
		if !gate.enter(queued, n) {
			return nil, false, nil // as many jobs as are queued are being claimed: wait
		}
		h, err := e.takeOpenable(ctx, endpoint, worker, n)
		if gate.leave(n) && (len(h) > 0 || err != nil) {
			// Takers turned away meanwhile look again, in case this claim left jobs behind. A
			// claim that found nothing (the queued jobs expired, or another replica took them)
			// wakes nobody: the turned-away takers would find nothing either, and waking them
			// would go round for as long as an expired job is counted as queued.
			e.notifier.Notify(notify.Work(endpoint))
		}
		return h, len(h) > 0, err
	})
	return handouts, err
}

// takeGate keeps the idle takers of an endpoint from all claiming at once. Every submission
// wakes every taker waiting on the endpoint; without the gate each would run a claim through
// the store's writer, and with 64 idle workers one job cost 64 write transactions, 63 of them
// empty. A taker claims only while fewer jobs are being claimed than are queued (a count the
// embedded store keeps in memory, and PostgreSQL bounds); the others wait again, and are woken
// once the claims in flight end, in case a claim came back short.
type takeGate struct {
	mu       sync.Mutex
	claiming int  // jobs asked for by the claims in flight
	turned   bool // a taker was turned away since the last claim ended
}

func (e *Engine) gate(endpoint string) *takeGate {
	if g, ok := e.gates.Load(endpoint); ok {
		return g.(*takeGate)
	}
	g, _ := e.gates.LoadOrStore(endpoint, &takeGate{})
	return g.(*takeGate)
}

// wanted is how many queued jobs would let a taker asking for n jobs claim now.
func (g *takeGate) wanted(n int) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.claiming + n
}

// enter reports whether a taker asking for n jobs may claim, with queued jobs in the queue (or
// at least that many: a count bounded by wanted).
func (g *takeGate) enter(queued, n int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if queued <= g.claiming {
		g.turned = queued > 0 || g.claiming > 0
		return false
	}
	g.claiming += n
	return true
}

// leave ends a claim of n jobs; it reports whether takers were turned away meanwhile.
func (g *takeGate) leave(n int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.claiming -= n
	turned := g.turned
	g.turned = false
	return turned
}

// takeOpenable claims jobs and opens their s3Configs; a job whose s3Config does not open (the
// server's key changed while it was queued) fails instead of going out without it. When every job
// claimed failed so, it claims again, so a waiting worker is not sent away while others wait.
func (e *Engine) takeOpenable(ctx context.Context, endpoint, worker string, n int) ([]Handout, error) {
	for {
		now := e.now()
		jobs, err := e.store.ClaimJobs(ctx, store.ClaimJobsParams{Endpoint: endpoint, Max: n, Now: now, Change: claim(worker, now)})
		if err != nil {
			return nil, translate(err, "take jobs")
		}
		if len(jobs) == 0 {
			return nil, nil
		}
		changes := make([]Change, len(jobs))
		for i, j := range jobs {
			changes[i] = Change{Cause: CauseTake, From: spool.StateInQueue, Job: j}
		}
		e.after(changes...)
		handouts := make([]Handout, 0, len(jobs))
		var unopenable []store.JobUpdate
		for _, j := range jobs {
			s3, err := e.openS3Config(j)
			if err != nil {
				e.log.Error("a taken job's s3Config cannot be decrypted; the job fails", "job", j.ID, "endpoint", j.Endpoint)
				// The worker never got the job: nobody to tell to stop.
				unopenable = append(unopenable, endByServer(j, spool.StateFailed, undecryptableS3Config, false, now))
				continue
			}
			handouts = append(handouts, Handout{Job: j, S3Config: s3})
		}
		if _, err := e.write(ctx, CauseUndecryptable, now, unopenable...); err != nil {
			if len(handouts) == 0 {
				return nil, translate(err, "fail undecryptable jobs")
			}
			// The jobs that open go out; those that do not stay with this worker, which never
			// gets them, until its pings (which do not list them) or their timeout end them.
			e.log.Error("fail undecryptable jobs", "err", err)
		}
		if len(handouts) > 0 {
			return handouts, nil
		}
	}
}

// Release puts jobs whose take answer never reached the worker (its connection dropped first)
// back in the queue, as for a lost worker.
func (e *Engine) Release(ctx context.Context, jobs []*spool.Job) error {
	now := e.now()
	updates := make([]store.JobUpdate, len(jobs))
	for i, j := range jobs {
		updates[i] = e.loseWorker(j, "its take request was dropped before the job was delivered", now)
	}
	_, err := e.write(ctx, CauseUndelivered, now, updates...)
	return translate(err, "release jobs")
}
