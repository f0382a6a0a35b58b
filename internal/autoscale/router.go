package autoscale

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Statuser is a Provider that can say what a worker does before it runs ("pulling image 43%").
type Statuser interface {
	Status(id string) string
}

// Router is the Provider of a server whose endpoints may run processes and containers: each
// worker goes to the provider of its spec, a container image to Containers and a command to
// Processes. Containers may be nil (no Docker daemon): image workers then fail to start, saying so.
type Router struct {
	Processes, Containers Provider
	// NoContainers says why Containers is nil, for the error of an image worker.
	NoContainers string

	mu    sync.Mutex
	owner map[string]Provider
}

var _ Provider = (*Router)(nil)

func (r *Router) of(id string) Provider {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.owner[id]
}

// Start implements Provider.
func (r *Router) Start(ctx context.Context, w WorkerSpec, exited func(Exit)) error {
	p := r.Processes
	if w.Spec.Image != "" {
		if r.Containers == nil {
			return fmt.Errorf("start worker %s: image workers need a Docker daemon (%s)", w.WorkerID, r.NoContainers)
		}
		p = r.Containers
	}
	r.mu.Lock()
	if r.owner == nil {
		r.owner = map[string]Provider{}
	}
	r.owner[w.WorkerID] = p
	r.mu.Unlock()
	forget := func() {
		r.mu.Lock()
		delete(r.owner, w.WorkerID)
		r.mu.Unlock()
	}
	err := p.Start(ctx, w, func(x Exit) {
		forget()
		exited(x)
	})
	if err != nil {
		forget()
	}
	return err
}

// Stop implements Provider.
func (r *Router) Stop(id string, grace time.Duration) {
	if p := r.of(id); p != nil {
		p.Stop(id, grace)
	}
}

// Kill implements Provider.
func (r *Router) Kill(id string) {
	if p := r.of(id); p != nil {
		p.Kill(id)
	}
}

// Logs implements Provider.
func (r *Router) Logs(id string) []string {
	if p := r.of(id); p != nil {
		return p.Logs(id)
	}
	return nil
}

// Status implements Statuser.
func (r *Router) Status(id string) string {
	if s, ok := r.of(id).(Statuser); ok {
		return s.Status(id)
	}
	return ""
}

// Close implements Provider: both providers close at once, so that their draining workers share
// the grace.
func (r *Router) Close() {
	var wg sync.WaitGroup
	for _, p := range []Provider{r.Processes, r.Containers} {
		if p != nil {
			wg.Go(p.Close)
		}
	}
	wg.Wait()
}
