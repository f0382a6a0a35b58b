package autoscale

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/spool-run/spool"
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
	// Pods, when set, runs the image workers instead of Containers: as pods of a cluster.
	Pods Provider
	// NoContainers says why Containers is nil, for the error of an image worker.
	NoContainers string
	// Connect, when set, is tried again (at most every ConnectEvery) when an image worker starts
	// while Containers is nil: a daemon that started after Spool is found without a restart.
	Connect      func() (Provider, error)
	ConnectEvery time.Duration
	// Clock times the retries. Required with Connect.
	Now func() time.Time

	mu        sync.Mutex
	owner     map[string]Provider
	lastTried time.Time
}

// containers returns the container provider, trying to connect again when it is due.
func (r *Router) containers() (Provider, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.Containers == nil && r.Connect != nil && r.Now().Sub(r.lastTried) >= r.ConnectEvery {
		r.lastTried = r.Now()
		if p, err := r.Connect(); err != nil {
			r.NoContainers = err.Error()
		} else {
			r.Containers = p
		}
	}
	return r.Containers, r.NoContainers
}

var _ Provider = (*Router)(nil)

// Adopt implements Adopter: the pods a previous run left, when pods run the image workers.
func (r *Router) Adopt(ctx context.Context, exited func(Exit)) ([]Adoptee, error) {
	ad, ok := r.Pods.(Adopter)
	if !ok {
		return nil, nil
	}
	found, err := ad.Adopt(ctx, func(x Exit) {
		r.mu.Lock()
		delete(r.owner, x.ID)
		r.mu.Unlock()
		exited(x)
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.owner == nil {
		r.owner = map[string]Provider{}
	}
	for _, w := range found {
		r.owner[w.WorkerID] = r.Pods
	}
	return found, err
}

// Release implements Releaser: a pod worker is let go, left running; others stay.
func (r *Router) Release(id string) bool {
	rel, ok := r.of(id).(Releaser)
	if !ok || !rel.Release(id) {
		return false
	}
	r.mu.Lock()
	delete(r.owner, id)
	r.mu.Unlock()
	return true
}

// SchedulesGPUs implements GPUScheduler: image workers placed by a cluster find their GPUs there.
func (r *Router) SchedulesGPUs(spec spool.WorkerSpec) bool {
	gs, ok := r.Pods.(GPUScheduler)
	return spec.Image != "" && ok && gs.SchedulesGPUs(spec)
}

func (r *Router) of(id string) Provider {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.owner[id]
}

// Start implements Provider.
func (r *Router) Start(ctx context.Context, w WorkerSpec, exited func(Exit)) error {
	p := r.Processes
	if w.Spec.Image != "" && r.Pods != nil {
		p = r.Pods
	} else if w.Spec.Image != "" {
		c, why := r.containers()
		if c == nil {
			return fmt.Errorf("start worker %s: image workers need a Docker daemon (%s)", w.WorkerID, why)
		}
		p = c
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

// Close implements Provider: the providers close at once, so that their draining workers share
// the grace.
func (r *Router) Close() {
	r.mu.Lock()
	containers := r.Containers
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range []Provider{r.Processes, containers, r.Pods} {
		if p != nil {
			wg.Go(p.Close)
		}
	}
	wg.Wait()
}
