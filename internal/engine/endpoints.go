package engine

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/notify"
)

// The engine keeps every endpoint in memory: each submission and take looks its endpoint up, and
// that must not cost a store read. The cache reloads on its next use after a notification of
// notify.Endpoints (an edit here or on another replica) or after Config.Recheck without one.

func (e *Engine) loadEndpoints(ctx context.Context) error {
	e.mu.RLock()
	gen := e.endpointsGen
	e.mu.RUnlock()
	eps, err := e.store.ListEndpoints(ctx)
	if err != nil {
		return fmt.Errorf("load endpoints: %w", err)
	}
	m := make(map[string]spool.Endpoint, len(eps))
	for _, ep := range eps {
		m[ep.Name] = ep
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.endpointsGen != gen {
		// An edit here committed after the read began: the cache holds it and this read may not.
		// The edit's notification makes the next use reload.
		return nil
	}
	e.endpoints = m
	e.endpointsAt = e.clock.Now()
	return nil
}

// freshEndpoints reloads the endpoint cache when it was notified of a change or is older than
// Config.Recheck. One caller reloads while the others go on with the cache as it is, leaving the
// notification to it; a failed reload keeps the cache and is tried again at the next use.
func (e *Engine) freshEndpoints() {
	if e.endpointsChanged == nil { // before Start
		return
	}
	if !e.reloading.TryLock() {
		return
	}
	defer e.reloading.Unlock()
	e.mu.RLock()
	stale := e.clock.Now().Sub(e.endpointsAt) >= e.cfg.Recheck
	e.mu.RUnlock()
	if !e.endpointsChanged.Take() && !stale {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.loadEndpoints(ctx); err != nil {
		e.log.Warn("reload endpoints", "err", err)
	}
}

// Endpoint returns one endpoint; CodeNotFound when there is none by that name.
func (e *Engine) Endpoint(name string) (spool.Endpoint, error) {
	e.freshEndpoints()
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
	e.freshEndpoints()
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
	e.endpointsGen++
	e.mu.Unlock()
	// Other replicas reload their caches; waiting takes re-read the endpoint (its timeouts).
	e.notifier.Notify(notify.Endpoints, notify.Work(ep.Name))
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
	e.endpointsGen++
	e.mu.Unlock()
	e.notifier.Notify(notify.Endpoints, notify.Work(name))
	return nil
}
