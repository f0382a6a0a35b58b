// Package notify is the seam between what changes Spool's state and everything that waits for a
// change: long-poll takes wait for work on their endpoint, /runsync, /status-sync and /stream?wait
// for their job, job-stop polls for their worker, and the caches of endpoints and keys for an edit.
// A Notifier carries only "this topic changed", never the change: a waiter wakes and reads the
// store. Hub is the implementation within one process; a notifier shared by several replicas
// (PostgreSQL LISTEN/NOTIFY) implements the same interface.
//
// A notification between processes can be lost (a listening connection that reconnects), so every
// waiter also looks at the store again on a slow safety interval (Poll's Recheck): a lost
// notification delays an answer, it never loses one.
package notify

import (
	"context"
	"sync"
	"time"

	"github.com/spool-run/spool/internal/clock"
)

// Topic names what changed.
type Topic string

// Job is the topic of one job: its state, progress or stream changed.
func Job(id string) Topic { return "job/" + Topic(id) }

// Work is the topic of an endpoint's queue: a job may be there to take (a submission, a requeue,
// a retry), or the endpoint's settings changed.
func Work(endpoint string) Topic { return "work/" + Topic(endpoint) }

// Stop is the topic of a worker's job-stop channel: it must be told to stop a job.
func Stop(worker string) Topic { return "stop/" + Topic(worker) }

const (
	// Endpoints: an endpoint was created, changed or deleted.
	Endpoints Topic = "endpoints"
	// Keys: an API key was created or deleted.
	Keys Topic = "keys"
	// Webhooks: a webhook delivery was enqueued.
	Webhooks Topic = "webhooks"
)

// Notifier wakes the waiters of a topic.
type Notifier interface {
	// Subscribe returns a channel closed at the next Notify of t, and a function the caller must
	// call once it stops waiting. Subscribe before reading the state the topic guards, so that a
	// change committed in between is not missed.
	Subscribe(t Topic) (<-chan struct{}, func())
	// Notify wakes every subscriber of each topic. Call it after the change has committed. It
	// must not block: it runs on request paths.
	Notify(topics ...Topic)
}

// Hub is the Notifier of one process. The zero value is not usable; call NewHub.
type Hub struct {
	mu      sync.Mutex
	entries map[Topic]*entry
}

// entry is one generation of subscribers of a topic; refs counts those still waiting, so that a
// topic nobody waits on any more (a /status-sync of an unknown id that timed out) is dropped
// instead of staying in the map for ever.
type entry struct {
	ch   chan struct{}
	refs int
}

var _ Notifier = (*Hub)(nil)

// NewHub returns an empty hub.
func NewHub() *Hub { return &Hub{entries: make(map[Topic]*entry)} }

// Subscribe implements Notifier.
func (h *Hub) Subscribe(t Topic) (<-chan struct{}, func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.entries[t]
	if !ok {
		e = &entry{ch: make(chan struct{})}
		h.entries[t] = e
	}
	e.refs++
	var once sync.Once
	return e.ch, func() { once.Do(func() { h.release(t, e) }) }
}

func (h *Hub) release(t Topic, e *entry) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e.refs--
	if e.refs == 0 && h.entries[t] == e {
		delete(h.entries, t)
	}
}

// Notify implements Notifier. A topic nobody waits on costs one map lookup.
func (h *Hub) Notify(topics ...Topic) {
	for _, t := range topics {
		h.mu.Lock()
		e, ok := h.entries[t]
		if ok {
			delete(h.entries, t)
		}
		h.mu.Unlock()
		if ok {
			close(e.ch)
		}
	}
}

// NotifyAll wakes every subscriber of every topic: a notifier between processes calls it when it
// may have missed notifications (its listening connection was down), so that every waiter looks
// at the store again at once instead of at its next safety recheck.
func (h *Hub) NotifyAll() {
	h.mu.Lock()
	entries := h.entries
	h.entries = make(map[Topic]*entry)
	h.mu.Unlock()
	for _, e := range entries {
		close(e.ch)
	}
}

// Topics is the number of topics with subscribers (for tests: nothing leaks).
func (h *Hub) Topics() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.entries)
}

// Wait says how Poll waits.
type Wait struct {
	// For bounds the whole wait; 0 or less looks once.
	For time.Duration
	// Recheck is the safety interval: without a notification, look again this often. 0 means
	// never (only a Hub, which loses nothing, may do without).
	Recheck time.Duration
	// Done, when closed, ends the wait at once (a draining server).
	Done <-chan struct{}
}

// Poll calls look until it reports done, waiting between looks for a notification of topic, for
// at most w.For in all, and looking again every w.Recheck even when none came. It returns look's
// last value and whether look was done: done is false when the wait ran out or w.Done closed (with
// a nil error) or ctx ended (with its error). The subscription is taken before each look, so a
// change committed during a look wakes the next wait. Each wait holds exactly one timer of clk.
func Poll[T any](ctx context.Context, n Notifier, clk clock.Clock, topic Topic, w Wait, look func() (T, bool, error)) (T, bool, error) {
	deadline := clk.Now().Add(w.For)
	for {
		ch, release := n.Subscribe(topic)
		v, done, err := look()
		left := deadline.Sub(clk.Now())
		if err != nil || done || left <= 0 {
			release()
			return v, done, err
		}
		if w.Recheck > 0 {
			left = min(left, w.Recheck)
		}
		again, err := sleep(ctx, ch, release, clk.NewTimer(left), w.Done)
		if err != nil {
			return v, false, err
		}
		if !again {
			return v, false, nil
		}
	}
}

// sleep blocks until ch closes, the timer fires, done closes or ctx ends, then releases the
// subscription. It reports whether to look again (a notification or a recheck).
func sleep(ctx context.Context, ch <-chan struct{}, release func(), t clock.Timer, done <-chan struct{}) (bool, error) {
	defer release()
	defer t.Stop()
	select {
	case <-ch:
		return true, nil
	case <-t.C():
		return true, nil
	case <-done:
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// Flag remembers that a topic was notified, for a cache that reloads lazily on its next use
// instead of running a goroutine per subscription.
type Flag struct {
	n     Notifier
	topic Topic

	mu      sync.Mutex
	ch      <-chan struct{}
	release func()
}

// NewFlag subscribes to topic.
func NewFlag(n Notifier, topic Topic) *Flag {
	f := &Flag{n: n, topic: topic}
	f.ch, f.release = n.Subscribe(topic)
	return f
}

// Take reports whether topic was notified since NewFlag or the previous Take that reported true,
// and subscribes again when it was. Call it before reloading, so that a change committed during
// the reload sets the flag again.
func (f *Flag) Take() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.ch:
	default:
		return false
	}
	f.release()
	f.ch, f.release = f.n.Subscribe(f.topic)
	return true
}

// Close drops the subscription.
func (f *Flag) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.release()
}
