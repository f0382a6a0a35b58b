package engine

import "sync"

// hub wakes goroutines that wait for a change: long-poll takes wait on their endpoint's queue,
// /runsync, /status-sync and /stream?wait on their job, job-stop polls on their worker. The engine
// signals a key right after the commit that changed it, so waiters never poll the store on a timer.
type hub struct {
	mu      sync.Mutex
	waiters map[string]chan struct{}
}

func newHub() *hub { return &hub{waiters: make(map[string]chan struct{})} }

// wait returns a channel closed at the next notify of key. Take the channel before reading the
// state it guards, so that a change committed in between is not missed.
func (h *hub) wait(key string) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch, ok := h.waiters[key]
	if !ok {
		ch = make(chan struct{})
		h.waiters[key] = ch
	}
	return ch
}

// notify wakes every waiter of key. A key nobody waits on costs one map lookup.
func (h *hub) notify(key string) {
	h.mu.Lock()
	ch, ok := h.waiters[key]
	if ok {
		delete(h.waiters, key)
	}
	h.mu.Unlock()
	if ok {
		close(ch)
	}
}

func queueKey(endpoint string) string { return "q/" + endpoint }
func jobKey(id string) string         { return "j/" + id }
func stopKey(worker string) string    { return "s/" + worker }
