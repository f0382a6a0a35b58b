package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"github.com/spool-run/spool"
)

// The counts CountJobs and QueueDepth report are kept in memory, so that /health and the
// maxQueue check of every submission cost a map lookup instead of an aggregate over every
// retained job of the endpoint. Only the writer goroutine changes them, and only with what a
// committed transaction did: each job write records how it moves a job between counts (a
// jobMove), the writer keeps an op's moves once it has succeeded, and publishes the
// batch's once COMMIT succeeded. Open loads them with one aggregate query. Every write of the
// jobs table must record its moves; TestCountsFollowWrites recounts after each of a random mix
// of them.

// jobSlot is what one job contributes to its endpoint's counts.
type jobSlot struct {
	endpoint     string
	state        spool.State
	low, retried bool
	// queuedAt is the job's queued_at (unix ms). unknownQueuedAt marks the slot a job left when a
	// write changed its queued_at: the old value is not returned by the UPDATE.
	queuedAt        int64
	unknownQueuedAt bool
}

func slotOf(j *spool.Job) jobSlot {
	return jobSlot{endpoint: j.Endpoint, state: j.State, low: j.Policy.LowPriority, retried: j.Retries > 0, queuedAt: millis(j.QueuedAt)}
}

// jobMove takes a job out of from (unless it is new) and puts it into to (unless it is gone).
type jobMove struct {
	from, to *jobSlot
}

// endpointCounts are the counts of one endpoint's jobs.
type endpointCounts struct {
	byState map[spool.State]int
	retried int
	// normal and low count the IN_QUEUE jobs of each priority, running the IN_PROGRESS
	// normal-priority ones.
	normal, low, running int
	// oldest is the queued_at of the oldest queued normal-priority job, when normal > 0. stale
	// says a job that may have been that one left the queue: the writer looks it up again before
	// it commits, so a published entry is never stale.
	oldest int64
	stale  bool
}

func (c *endpointCounts) clone() *endpointCounts {
	d := *c
	d.byState = make(map[spool.State]int, len(c.byState))
	for st, n := range c.byState {
		d.byState[st] = n
	}
	return &d
}

func (c *endpointCounts) empty() bool {
	for _, n := range c.byState {
		if n != 0 {
			return false
		}
	}
	return true
}

// add adds n jobs (n < 0 removes them) of slot, the oldest of them queued at slot.queuedAt.
func (c *endpointCounts) add(slot jobSlot, n int) {
	c.byState[slot.state] += n
	if c.byState[slot.state] == 0 {
		delete(c.byState, slot.state)
	}
	if slot.retried {
		c.retried += n
	}
	switch {
	case slot.state == spool.StateInQueue && slot.low:
		c.low += n
	case slot.state == spool.StateInQueue:
		c.addQueued(slot, n)
	case slot.state == spool.StateInProgress && !slot.low:
		c.running += n
	}
}

// addQueued counts n queued normal-priority jobs in or out, keeping oldest: a job joining can
// only make it older, a job leaving that was (or may have been) the oldest makes it stale.
func (c *endpointCounts) addQueued(slot jobSlot, n int) {
	was := c.normal
	c.normal += n
	switch {
	case c.normal == 0:
		c.oldest, c.stale = 0, false
	case n > 0 && was == 0:
		c.oldest, c.stale = slot.queuedAt, false
	case n > 0:
		c.oldest = min(c.oldest, slot.queuedAt)
	case slot.unknownQueuedAt || slot.queuedAt <= c.oldest:
		c.stale = true
	}
}

// counts holds the published counts, and the writer's pending changes to them.
type counts struct {
	mu        sync.RWMutex
	endpoints map[string]*endpointCounts // published entries are replaced, never changed

	// The rest belongs to the writer goroutine.
	op    []jobMove                  // the moves of the write running now
	batch map[string]*endpointCounts // the endpoints the batch's kept writes changed
}

func newCounts() *counts {
	return &counts{endpoints: make(map[string]*endpointCounts), batch: make(map[string]*endpointCounts)}
}

// moved records that the write running now moved a job; from or to is nil for a job inserted or
// deleted. A job that stays in the same slot is not recorded.
func (c *counts) moved(from, to *jobSlot) {
	if from != nil && to != nil && *from == *to {
		return
	}
	c.op = append(c.op, jobMove{from, to})
}

// beginOp starts a write: nothing it records counts until keepOp.
func (c *counts) beginOp() { c.op = c.op[:0] }

// keepOp adds the moves of the write that just succeeded to the batch.
func (c *counts) keepOp() {
	for _, m := range c.op {
		if m.from != nil {
			c.entry(m.from.endpoint).add(*m.from, -1)
		}
		if m.to != nil {
			c.entry(m.to.endpoint).add(*m.to, 1)
		}
	}
	c.beginOp()
}

// entry returns the batch's copy of an endpoint's counts, copying the published one at first use.
func (c *counts) entry(endpoint string) *endpointCounts {
	if e, ok := c.batch[endpoint]; ok {
		return e
	}
	e := &endpointCounts{byState: make(map[spool.State]int)}
	if pub, ok := c.endpoints[endpoint]; ok { // only the writer changes the map: no lock to read it
		e = pub.clone()
	}
	c.batch[endpoint] = e
	return e
}

// oldestQueued finds the oldest queued normal-priority job of an endpoint in jobs_queue order: one
// seek, wherever the queue is long.
const oldestQueued = `SELECT queued_at FROM jobs INDEXED BY jobs_queue
	WHERE endpoint = ? AND state = 'IN_QUEUE' AND low_priority = 0 ORDER BY queued_at LIMIT 1`

// settle looks up the oldest queued job of each endpoint whose oldest the batch made stale, in
// the batch's transaction, before it commits.
func (c *counts) settle(ctx context.Context, tx queryer) error {
	for ep, e := range c.batch {
		if !e.stale {
			continue
		}
		err := tx.QueryRowContext(ctx, oldestQueued, ep).Scan(&e.oldest)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("oldest queued job of %s: %w", ep, err)
		}
		e.stale = false
	}
	return nil
}

// publish makes the batch's counts those that reads see, once its transaction has committed.
func (c *counts) publish() {
	if len(c.batch) == 0 {
		return
	}
	c.mu.Lock()
	for ep, e := range c.batch {
		if e.empty() {
			delete(c.endpoints, ep)
		} else {
			c.endpoints[ep] = e
		}
	}
	c.mu.Unlock()
	clear(c.batch)
}

// discard forgets the batch's changes: its transaction was rolled back.
func (c *counts) discard() {
	c.beginOp()
	clear(c.batch)
}

// get returns the published counts of an endpoint; nil if it has no jobs. The entry is never
// changed once published, so the caller may read it without the lock.
func (c *counts) get(endpoint string) *endpointCounts {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.endpoints[endpoint]
}

// countAll is the one aggregate Open runs to load the counts: a scan of the table (no index
// holds every job's state: keeping one would cost two index writes per job for this one query).
const countAll = `SELECT endpoint, state, low_priority, COUNT(*), SUM(retries > 0), MIN(queued_at)
	FROM jobs GROUP BY endpoint, state, low_priority`

// load replaces the counts with a count of the jobs table, before the writer starts.
func (c *counts) load(ctx context.Context, q queryer) error {
	rows, err := q.QueryContext(ctx, countAll)
	if err != nil {
		return fmt.Errorf("count jobs: %w", err)
	}
	defer rows.Close()
	loaded := newCounts()
	for rows.Next() {
		var (
			slot       jobSlot
			state      string
			n, retried int
		)
		if err := rows.Scan(&slot.endpoint, &state, &slot.low, &n, &retried, &slot.queuedAt); err != nil {
			return fmt.Errorf("count jobs: %w", err)
		}
		slot.state = spool.State(state)
		e := loaded.entry(slot.endpoint)
		e.add(slot, n)
		e.retried += retried
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("count jobs: %w", err)
	}
	loaded.publish()
	c.mu.Lock()
	c.endpoints = loaded.endpoints
	c.mu.Unlock()
	return nil
}
