package auth

import (
	"net/http"

	"github.com/spool-run/spool"
)

// Surface is one of the three API surfaces, each with its own scope rule (docs/contract.md §1).
type Surface int

const (
	// Client is the RunPod client API (/v2/{endpoint}/run, /status, ...): admin keys, and client
	// keys that allow the endpoint (read-only ones for reads only).
	Client Surface = iota
	// Worker is the RunPod worker protocol (/v2/{endpoint}/job-take, ...): admin keys, and worker
	// keys that allow the endpoint.
	Worker
	// Admin is /api: admin keys only (read-only ones for reads only).
	Admin
)

// Authorize checks that key may use surface on endpoint ("" when the route has none); write says
// whether the operation changes something (for read-only client keys: only /status,
// /status-sync, /stream and /health are reads). A key without the scope gives CodeForbidden with
// a message that says what the route needs.
func Authorize(key *spool.Key, surface Surface, endpoint string, write bool) error {
	if key.Scope == spool.ScopeAdmin {
		// A read-only admin key (the dashboard's viewers, monitoring) reads everything and
		// changes nothing; it speaks for no worker.
		if key.ReadOnly && (write || surface == Worker) {
			return spool.Errorf(spool.CodeForbidden, "this key is a read-only admin key: it may read, not change anything")
		}
		return nil
	}
	switch surface {
	case Admin:
		return spool.Errorf(spool.CodeForbidden, "this route needs an admin key; this key has the %s scope", key.Scope)
	case Client:
		if key.Scope != spool.ScopeClient {
			return spool.Errorf(spool.CodeForbidden, "this route needs a client or admin key; this key has the %s scope", key.Scope)
		}
		if !key.AllowsEndpoint(endpoint) {
			return spool.Errorf(spool.CodeForbidden, "this route needs a client key for endpoint %q; this key is limited to other endpoints", endpoint)
		}
		if write && key.ReadOnly {
			return spool.Errorf(spool.CodeForbidden, "this route needs a read/write client key; this key is read-only")
		}
		return nil
	case Worker:
		if key.Scope != spool.ScopeWorker {
			return spool.Errorf(spool.CodeForbidden, "this route needs a worker or admin key; this key has the %s scope", key.Scope)
		}
		if !key.AllowsEndpoint(endpoint) {
			return spool.Errorf(spool.CodeForbidden, "this route needs a worker key for endpoint %q; this key is limited to other endpoints", endpoint)
		}
		return nil
	}
	return spool.Errorf(spool.CodeForbidden, "this key may not use this route")
}

// Check authenticates the request's Authorization header and authorizes it for surface,
// endpoint and write (see Authorize): 401 for a missing or unknown key, 403 for a known key
// without the scope.
func (k *Keyring) Check(r *http.Request, surface Surface, endpoint string, write bool) (*spool.Key, error) {
	key, err := k.Authenticate(r.Context(), r.Header.Get("Authorization"))
	if err != nil {
		return nil, err
	}
	if err := Authorize(key, surface, endpoint, write); err != nil {
		return nil, err
	}
	return key, nil
}
