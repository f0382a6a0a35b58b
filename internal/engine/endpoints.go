package engine

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/notify"
)

// The engine keeps every endpoint in memory: each submission and take looks its endpoint up, and
// that must not cost a store read. The cache reloads on its next use after a notification of
// notify.Endpoints (an edit here or on another replica) or after Config.Recheck without one.

// loadEndpoints reads every endpoint and opens its webhookSecret. At Start (the first load), an
// endpoint whose secret this server's key cannot open fails the load, and so the start: it almost
// always means the wrong key was configured, and a server that starts anyway could only send that
// endpoint's webhooks unsigned or not at all. On a later reload, such an endpoint (another replica
// sealed it under another key) keeps the version already cached, or stays out of the cache.
func (e *Engine) loadEndpoints(ctx context.Context) error {
	e.mu.RLock()
	gen := e.endpointsGen
	first := e.endpointsAt.IsZero() // Start's load: nothing was loaded before it
	e.mu.RUnlock()
	eps, err := e.store.ListEndpoints(ctx)
	if err != nil {
		return fmt.Errorf("load endpoints: %w", err)
	}
	m := make(map[string]spool.Endpoint, len(eps))
	var unopened []string
	for _, ep := range eps {
		opened, err := e.openEndpoint(ep)
		if err != nil {
			if first {
				return fmt.Errorf("load endpoints: %w; %s", err, unopenedSecretHelp)
			}
			e.log.Error("endpoint not reloaded: it keeps the version cached, if any", "endpoint", ep.Name, "err", err)
			unopened = append(unopened, ep.Name)
			continue
		}
		m[ep.Name] = opened
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.endpointsGen != gen {
		// An edit here committed after the read began: the cache holds it and this read may not.
		// The edit's notification makes the next use reload.
		return nil
	}
	for _, name := range unopened {
		if old, ok := e.endpoints[name]; ok {
			m[name] = old
		}
	}
	e.endpoints = m
	e.endpointsAt = e.clock.Now()
	return nil
}

// sealedSecretPrefix starts a webhookSecret as the engine stores it: the base64 of the sealed
// secret follows. A secret as an endpoint is given one starts with "whsec_" (Validate), so a stored
// value without the prefix is a plaintext one an older version left.
const sealedSecretPrefix = "sealed:"

// webhookSecretAD binds a sealed webhookSecret to its endpoint: copied onto another endpoint's row,
// it does not open. The prefix keeps it apart from the job ids s3Configs are bound to.
func webhookSecretAD(endpoint string) []byte { return []byte("webhookSecret\x00" + endpoint) }

// sealEndpoint returns ep as the store keeps it: with its webhookSecret sealed.
func (e *Engine) sealEndpoint(ep spool.Endpoint) (spool.Endpoint, error) {
	if ep.WebhookSecret == "" {
		return ep, nil
	}
	sealed, err := e.cfg.Sealer.Seal([]byte(ep.WebhookSecret), webhookSecretAD(ep.Name))
	if err != nil {
		return spool.Endpoint{}, fmt.Errorf("seal the webhookSecret of endpoint %s: %w", ep.Name, err)
	}
	ep.WebhookSecret = sealedSecretPrefix + base64.RawStdEncoding.EncodeToString(sealed)
	return ep, nil
}

// errUnopenedSecret is the error of an endpoint whose stored webhookSecret does not open.
var errUnopenedSecret = errors.New("its webhookSecret cannot be decrypted with this server's secret key")

// unopenedSecretHelp is what to do about errUnopenedSecret at start.
const unopenedSecretHelp = "start with the key that sealed it (SPOOL_SECRET_KEY, secrets.keyFile or " +
	"secret.key in the data directory); if that key is lost, delete the endpoint's webhookSecret " +
	"from the store and set a new one"

// openEndpoint returns a stored endpoint with its webhookSecret opened. A plaintext one that an
// older version stored is returned as it is (Start seals it in the store). Its errors name the
// endpoint and never quote the secret.
func (e *Engine) openEndpoint(ep spool.Endpoint) (spool.Endpoint, error) {
	enc, ok := strings.CutPrefix(ep.WebhookSecret, sealedSecretPrefix)
	if !ok {
		return ep, nil
	}
	sealed, err := base64.RawStdEncoding.DecodeString(enc)
	if err != nil {
		return spool.Endpoint{}, fmt.Errorf("endpoint %s: %w: the stored value is not base64", ep.Name, errUnopenedSecret)
	}
	plain, err := e.cfg.Sealer.Open(sealed, webhookSecretAD(ep.Name))
	if err != nil {
		return spool.Endpoint{}, fmt.Errorf("endpoint %s: %w: %w", ep.Name, errUnopenedSecret, err)
	}
	ep.WebhookSecret = string(plain)
	return ep, nil
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
		return e.missingEndpoint(name)
	}
	return ep, nil
}

// missingEndpoint looks up an endpoint the cache does not have: another replica may have created
// it a moment ago, before its notification arrived here. One indexed read; a name that is not
// there costs that read each time, which only authenticated callers can ask for.
func (e *Engine) missingEndpoint(name string) (spool.Endpoint, error) {
	notFound := spool.Errorf(spool.CodeNotFound, "endpoint %q not found", name)
	if e.endpointsChanged == nil { // before Start
		return spool.Endpoint{}, notFound
	}
	e.mu.RLock()
	gen := e.endpointsGen
	e.mu.RUnlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stored, err := e.store.GetEndpoint(ctx, name)
	if err != nil {
		return spool.Endpoint{}, notFound // absent, or the store failed: the cache's answer stands
	}
	ep, err := e.openEndpoint(stored)
	if err != nil {
		return spool.Endpoint{}, notFound
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if cached, ok := e.endpoints[name]; ok {
		return cached, nil // a reload or an edit got there first
	}
	if e.endpointsGen == gen { // no edit here since the read: it cannot undo a local delete
		e.endpoints[name] = ep
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
	// The store gets the secret sealed; the cache (and the caller) keep it open.
	stored, err := e.sealEndpoint(ep)
	if err != nil {
		return spool.Endpoint{}, false, err
	}
	if err := e.store.PutEndpoint(ctx, stored); err != nil {
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
