package engine

import (
	"context"
	"fmt"
	"sort"

	"github.com/spool-run/spool"
)

// The engine keeps every endpoint in memory: each submission and take looks its endpoint up, and
// that must not cost a store read.

func (e *Engine) loadEndpoints(ctx context.Context) error {
	eps, err := e.store.ListEndpoints(ctx)
	if err != nil {
		return fmt.Errorf("load endpoints: %w", err)
	}
	m := make(map[string]spool.Endpoint, len(eps))
	for _, ep := range eps {
		m[ep.Name] = ep
	}
	e.mu.Lock()
	e.endpoints = m
	e.mu.Unlock()
	return nil
}

// Endpoint returns one endpoint; CodeNotFound when there is none by that name.
func (e *Engine) Endpoint(name string) (spool.Endpoint, error) {
	e.mu.RLock()
	ep, ok := e.endpoints[name]
	e.mu.RUnlock()
	if !ok {
		return spool.Endpoint{}, spool.Errorf(spool.CodeNotFound, "endpoint %q not found", name)
	}
	return ep, nil
}

// Endpoints returns every endpoint, by name.
func (e *Engine) Endpoints() []spool.Endpoint {
	e.mu.RLock()
	out := make([]spool.Endpoint, 0, len(e.endpoints))
	for _, ep := range e.endpoints {
		out = append(out, ep)
	}
	e.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// PutEndpoint validates and stores an endpoint, creating or replacing it. It reports whether the
// endpoint is new. Changes take effect for the next submission and take.
func (e *Engine) PutEndpoint(ctx context.Context, ep spool.Endpoint) (spool.Endpoint, bool, error) {
	if err := ep.Validate(); err != nil {
		return spool.Endpoint{}, false, err
	}
	now := e.now()
	e.mu.RLock()
	old, exists := e.endpoints[ep.Name]
	e.mu.RUnlock()
	ep.CreatedAt = now
	if exists {
		ep.CreatedAt = old.CreatedAt
	}
	ep.UpdatedAt = now
	if err := e.store.PutEndpoint(ctx, ep); err != nil {
		return spool.Endpoint{}, false, translate(err, "endpoint "+ep.Name)
	}
	e.mu.Lock()
	e.endpoints[ep.Name] = ep
	e.mu.Unlock()
	// Waiting takes re-read the endpoint (its timeouts) on their next attempt.
	e.hub.notify(queueKey(ep.Name))
	return ep, !exists, nil
}

// DeleteEndpoint deletes an endpoint that has no queued or running jobs.
func (e *Engine) DeleteEndpoint(ctx context.Context, name string) error {
	if _, err := e.Endpoint(name); err != nil {
		return err
	}
	counts, err := e.store.CountJobs(ctx, name)
	if err != nil {
		return translate(err, "endpoint "+name)
	}
	if n := counts.ByState[spool.StateInQueue] + counts.ByState[spool.StateInProgress]; n > 0 {
		return spool.Errorf(spool.CodeConflict,
			"endpoint %q has %d queued or running jobs; purge or cancel them first", name, n)
	}
	if err := e.store.DeleteEndpoint(ctx, name); err != nil {
		return translate(err, "endpoint "+name)
	}
	e.mu.Lock()
	delete(e.endpoints, name)
	e.mu.Unlock()
	e.hub.notify(queueKey(name))
	return nil
}
