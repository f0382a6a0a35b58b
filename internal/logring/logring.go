// Package logring keeps the last lines a worker wrote, for /api/workers and for the report of its
// exit: a fixed number of lines, the oldest dropped first.
package logring

import (
	"slices"
	"sync"
)

// Ring keeps the last n lines. It is safe for concurrent use.
type Ring struct {
	mu   sync.Mutex
	buf  []string
	next int
	full bool
}

// New returns a ring of n lines (none kept when n is 0).
func New(n int) *Ring { return &Ring{buf: make([]string, n)} }

// Add keeps line, dropping the oldest when the ring is full.
func (r *Ring) Add(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.buf) == 0 {
		return
	}
	r.buf[r.next] = line
	r.next = (r.next + 1) % len(r.buf)
	r.full = r.full || r.next == 0
}

// Lines returns the lines kept, oldest first.
func (r *Ring) Lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.full {
		return slices.Clone(r.buf[:r.next])
	}
	return append(slices.Clone(r.buf[r.next:]), r.buf[:r.next]...)
}
