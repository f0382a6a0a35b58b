package engine

import "sync"

// hub wakes goroutines that wait for a change: long-poll takes wait on their endpoint's queue,
// /runsync, /status-sync and /stream?wait on their job, job-stop polls on their worker. The engine
// signals a key right after the commit that changed it, so waiters never poll the store on a timer.
type hub struct {
	mu      sync.Mutex
	entries map[string]*hubEntry
}

// hubEntry is one generation of waiters of a key; refs counts those still waiting, so that an
// entry nobody waits on any more (a /status-sync of an unknown id that timed out) is dropped
// instead of staying in the map for ever.
type hubEntry struct {
	ch   chan struct{}
	refs int
}

func newHub() *hub { return &hub{entries: make(map[string]*hubEntry)} }

// wait returns a channel closed at the next notify of key, and a release function the caller must
// call once it stops waiting. Take the channel before reading the state it guards, so that a
// change committed in between is not missed.
func (h *hub) wait(key string) (<-chan struct{}, func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.entries[key]
	if !ok {
		e = &hubEntry{ch: make(chan struct{})}
		h.entries[key] = e
	}
	e.refs++
	return e.ch, func() { h.release(key, e) }
}

func (h *hub) release(key string, e *hubEntry) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e.refs--
	if e.refs == 0 && h.entries[key] == e {
		delete(h.entries, key)
	}
}

// notify wakes every waiter of key. A key nobody waits on costs one map lookup.
func (h *hub) notify(key string) {
	h.mu.Lock()
	e, ok := h.entries[key]
	if ok {
		delete(h.entries, key)
	}
	h.mu.Unlock()
	if ok {
		close(e.ch)
	}
}

// size is the number of keys with waiters (for tests).
func (h *hub) size() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.entries)
}

func queueKey(endpoint string) string { return "q/" + endpoint }
func jobKey(id string) string         { return "j/" + id }
func stopKey(worker string) string    { return "s/" + worker }
