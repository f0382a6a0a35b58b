// Package auth holds Spool's API keys and decides what each may do (docs/contract.md §1, §2): a Keyring
// of static keys (config file, SPOOL_ADMIN_KEY) and stored keys (made through /api/keys), looked up
// by the hash of the presented secret, and the scope rules of the three surfaces.
package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/notify"
	"github.com/spool-run/spool/store"
)

// Key sources.
const (
	SourceConfig = "config" // the config file
	SourceEnv    = "env"    // SPOOL_ADMIN_KEY
	SourceAPI    = "api"    // made through /api/keys (stored)
)

// Config configures a Keyring.
type Config struct {
	// Store holds the keys made through the API. Required.
	Store store.Store
	// Clock paces reloads from the store. Defaults to the wall clock.
	Clock clock.Clock
	// Static are the keys from the config file and the environment, each with Hash and Scope set.
	// They cannot be deleted through the API. An empty Source defaults to "config"; an empty ID is
	// derived from the hash, so that every replica shows the same ID.
	Static []spool.Key
	// ReloadInterval is the least time between two reloads from the store caused by an unknown
	// key, so that a key made on another replica is found without letting unknown keys hammer the
	// store. Defaults to 1 s.
	ReloadInterval time.Duration
	// MaxAge is how long the cached stored keys are trusted before a request reloads them, which
	// bounds how long a key deleted on another replica keeps working here when a notification of
	// the deletion is lost. Defaults to 30 s.
	MaxAge time.Duration
	// Tokens, when set, authenticates the per-worker tokens it mints (without the store).
	Tokens *WorkerTokens
	// Notifier, when set, carries key changes between keyrings (replicas): Create and Delete
	// notify notify.Keys, and a keyring notified of a change reloads at its next request. Nil
	// leaves other replicas to ReloadInterval and MaxAge.
	Notifier notify.Notifier
}

func (c Config) withDefaults() Config {
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.ReloadInterval == 0 {
		c.ReloadInterval = time.Second
	}
	if c.MaxAge == 0 {
		c.MaxAge = 30 * time.Second
	}
	return c
}

// Keyring authenticates API keys. It is safe for concurrent use.
type Keyring struct {
	cfg    Config
	store  store.Store
	clock  clock.Clock
	static map[string]*spool.Key // by hash
	order  []*spool.Key          // static keys in config order

	reload sync.Mutex // serializes reloads

	mu       sync.RWMutex
	stored   map[string]*spool.Key // by hash
	loadedAt time.Time
	loaded   bool

	changed *notify.Flag // nil without a Notifier
}

// NewKeyring checks the static keys and loads the stored ones.
func NewKeyring(ctx context.Context, cfg Config) (*Keyring, error) {
	cfg = cfg.withDefaults()
	if cfg.Store == nil {
		return nil, errors.New("auth: Store is required")
	}
	if cfg.ReloadInterval < 0 || cfg.MaxAge < 0 {
		return nil, errors.New("auth: ReloadInterval and MaxAge must not be negative")
	}
	k := &Keyring{
		cfg:    cfg,
		store:  cfg.Store,
		clock:  cfg.Clock,
		static: make(map[string]*spool.Key, len(cfg.Static)),
		stored: map[string]*spool.Key{},
	}
	ids := map[string]bool{}
	for i, sk := range cfg.Static {
		sk := sk
		sk.Endpoints = slices.Clone(sk.Endpoints)
		if !strings.HasPrefix(sk.Hash, "sha256:") || len(sk.Hash) != len("sha256:")+64 {
			return nil, fmt.Errorf("auth: static key %d (%q): hash must be \"sha256:\" and 64 hex digits", i, sk.Name)
		}
		if err := checkKey(&sk); err != nil {
			return nil, fmt.Errorf("auth: static key %d (%q): %s", i, sk.Name, spool.ErrorMessage(err))
		}
		if sk.Source == "" {
			sk.Source = SourceConfig
		}
		if sk.ID == "" {
			sk.ID = "key_" + sk.Source + "_" + sk.Hash[len("sha256:"):][:12]
		}
		if ids[sk.ID] {
			return nil, fmt.Errorf("auth: two static keys have the id %q", sk.ID)
		}
		if _, dup := k.static[sk.Hash]; dup {
			return nil, fmt.Errorf("auth: static key %q has the same secret as another static key", sk.Name)
		}
		ids[sk.ID] = true
		k.static[sk.Hash] = &sk
		k.order = append(k.order, &sk)
	}
	if cfg.Notifier != nil {
		k.changed = notify.NewFlag(cfg.Notifier, notify.Keys) // before the load: no change slips between
	}
	if err := k.load(ctx); err != nil {
		return nil, err
	}
	return k, nil
}

// EnvAdminKey is the static admin key given by its secret, as SPOOL_ADMIN_KEY does.
func EnvAdminKey(secret string) spool.Key {
	return spool.Key{
		ID: "key_env_admin", Name: "SPOOL_ADMIN_KEY", Scope: spool.ScopeAdmin,
		Hash: spool.HashKey(secret), Source: SourceEnv,
	}
}

// load replaces the cache of stored keys with the store's keys.
func (k *Keyring) load(ctx context.Context) error {
	keys, err := k.store.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("load keys: %w", err)
	}
	m := make(map[string]*spool.Key, len(keys))
	for i := range keys {
		sk := keys[i]
		if sk.Source == "" {
			sk.Source = SourceAPI
		}
		m[sk.Hash] = &sk
	}
	now := k.clock.Now()
	k.mu.Lock()
	k.stored = m
	k.loadedAt = now
	k.loaded = true
	k.mu.Unlock()
	return nil
}

// maybeReload reloads the stored keys when the cache is older than min, once for all the
// goroutines that ask at the same time.
func (k *Keyring) maybeReload(ctx context.Context, min time.Duration) error {
	k.reload.Lock()
	defer k.reload.Unlock()
	k.mu.RLock()
	fresh := k.loaded && k.clock.Now().Sub(k.loadedAt) < min
	k.mu.RUnlock()
	if fresh {
		return nil
	}
	return k.load(ctx)
}

func (k *Keyring) lookup(hash string) (*spool.Key, bool) {
	if sk, ok := k.static[hash]; ok {
		return sk, true
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	sk, ok := k.stored[hash]
	return sk, ok
}

func (k *Keyring) stale() bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.clock.Now().Sub(k.loadedAt) >= k.cfg.MaxAge
}

// ParseHeader returns the key in an Authorization value: "Bearer <key>" (the prefix in any case)
// or the raw key, as runpod-python workers send it.
func ParseHeader(v string) string {
	v = strings.TrimSpace(v)
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		v = strings.TrimSpace(v[7:])
	}
	return v
}

// Authenticate returns the key an Authorization header value names. A missing or unknown key is
// CodeUnauthorized. The secret is compared by looking up its hash, so the time taken does not
// depend on how much of a secret matches a real key.
func (k *Keyring) Authenticate(ctx context.Context, header string) (*spool.Key, error) {
	secret := ParseHeader(header)
	if secret == "" {
		return nil, spool.Errorf(spool.CodeUnauthorized, "missing API key: send the header Authorization: Bearer <key>")
	}
	if strings.HasPrefix(secret, tokenPrefix) && k.cfg.Tokens != nil {
		if key, ok := k.cfg.Tokens.lookup(secret); ok {
			return key, nil
		}
		return nil, spool.Errorf(spool.CodeUnauthorized, "unknown API key")
	}
	return k.AuthenticateHash(ctx, spool.HashKey(secret))
}

// AuthenticateHash finds the key whose secret has hash (spool.HashKey), as Authenticate does for
// the secret itself: the dashboard's sessions hold the hash, never the key.
func (k *Keyring) AuthenticateHash(ctx context.Context, hash string) (*spool.Key, error) {
	if k.changed != nil && k.changed.Take() {
		// Created or deleted by another keyring; if the store cannot tell, MaxAge still bounds it.
		_ = k.maybeReload(ctx, 0)
	}
	sk, ok := k.lookup(hash)
	if _, isStatic := k.static[hash]; ok && !isStatic && k.stale() {
		// Perhaps deleted on another replica; if the store cannot tell, trust the cache.
		if err := k.maybeReload(ctx, k.cfg.MaxAge); err == nil {
			sk, ok = k.lookup(hash)
		}
	}
	if !ok {
		// Perhaps made on another replica a moment ago.
		if err := k.maybeReload(ctx, k.cfg.ReloadInterval); err != nil {
			return nil, storeErr(err)
		}
		sk, ok = k.lookup(hash)
	}
	if !ok {
		return nil, spool.Errorf(spool.CodeUnauthorized, "unknown API key")
	}
	return cloneKey(sk), nil
}

func cloneKey(sk *spool.Key) *spool.Key {
	c := *sk
	c.Endpoints = slices.Clone(sk.Endpoints)
	return &c
}

// checkKey validates a key's scope, endpoints and flags.
func checkKey(k *spool.Key) error {
	switch {
	case !k.Scope.Valid():
		return spool.Errorf(spool.CodeInvalid, "scope must be admin, client or worker")
	case len(k.Name) > 200:
		return spool.Errorf(spool.CodeInvalid, "name must be at most 200 characters")
	case k.Scope == spool.ScopeAdmin && len(k.Endpoints) > 0:
		return spool.Errorf(spool.CodeInvalid, "endpoints cannot be set on an admin key: it may use every endpoint")
	case k.ReadOnly && k.Scope == spool.ScopeWorker:
		return spool.Errorf(spool.CodeInvalid, "readOnly applies to client and admin keys only")
	}
	for _, e := range k.Endpoints {
		if !spool.ValidEndpointName(e) {
			return spool.Errorf(spool.CodeInvalid, "endpoints: %q is not a valid endpoint name", e)
		}
	}
	return nil
}

// Create makes a key from k's Name, Scope, Endpoints and ReadOnly, stores its hash and returns
// the secret, which is never shown again, with the stored key.
func (k *Keyring) Create(ctx context.Context, req spool.Key) (string, spool.Key, error) {
	nk := spool.Key{
		ID:        spool.NewID("key_"),
		Name:      req.Name,
		Scope:     req.Scope,
		Endpoints: slices.Clone(req.Endpoints),
		ReadOnly:  req.ReadOnly,
		Source:    SourceAPI,
		CreatedAt: k.clock.Now().UTC().Truncate(time.Millisecond),
	}
	if err := checkKey(&nk); err != nil {
		return "", spool.Key{}, err
	}
	secret := spool.NewKeySecret()
	nk.Hash = spool.HashKey(secret)
	if err := k.store.PutKey(ctx, nk); err != nil {
		return "", spool.Key{}, storeErr(fmt.Errorf("store key: %w", err))
	}
	k.mu.Lock()
	k.stored[nk.Hash] = cloneKey(&nk)
	k.mu.Unlock()
	k.notify()
	nk.Hash = ""
	return secret, nk, nil
}

// List returns every key, static ones first, then the stored ones oldest first. Hashes are
// cleared.
func (k *Keyring) List(ctx context.Context) ([]spool.Key, error) {
	stored, err := k.store.ListKeys(ctx)
	if err != nil {
		return nil, storeErr(fmt.Errorf("list keys: %w", err))
	}
	out := make([]spool.Key, 0, len(k.order)+len(stored))
	for _, sk := range k.order {
		c := *cloneKey(sk)
		c.Hash = ""
		out = append(out, c)
	}
	for _, sk := range stored {
		if _, shadowed := k.static[sk.Hash]; shadowed {
			continue
		}
		if sk.Source == "" {
			sk.Source = SourceAPI
		}
		sk.Hash = ""
		out = append(out, sk)
	}
	return out, nil
}

// Delete deletes a stored key. A static key (config file, environment) cannot be deleted this way,
// nor can the last admin key: both are CodeConflict. An unknown id is CodeNotFound.
func (k *Keyring) Delete(ctx context.Context, id string) error {
	for _, sk := range k.order {
		if sk.ID == id {
			return spool.Errorf(spool.CodeConflict,
				"key %s comes from the %s and cannot be deleted through the API", id, sourceName(sk.Source))
		}
	}
	stored, err := k.store.ListKeys(ctx)
	if err != nil {
		return storeErr(fmt.Errorf("list keys: %w", err))
	}
	var target *spool.Key
	admins := 0
	for _, sk := range k.order {
		if sk.Scope == spool.ScopeAdmin {
			admins++
		}
	}
	for i := range stored {
		if _, shadowed := k.static[stored[i].Hash]; shadowed {
			continue
		}
		if stored[i].Scope == spool.ScopeAdmin {
			admins++
		}
		if stored[i].ID == id {
			target = &stored[i]
		}
	}
	if target == nil {
		return spool.Errorf(spool.CodeNotFound, "key %s not found", id)
	}
	if target.Scope == spool.ScopeAdmin && admins <= 1 {
		return spool.Errorf(spool.CodeConflict, "key %s is the last admin key; create another admin key first", id)
	}
	if err := k.store.DeleteKey(ctx, id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return spool.Errorf(spool.CodeNotFound, "key %s not found", id)
		}
		return storeErr(fmt.Errorf("delete key: %w", err))
	}
	k.mu.Lock()
	delete(k.stored, target.Hash)
	k.mu.Unlock()
	k.notify()
	return nil
}

// notify tells the other keyrings that the stored keys changed.
func (k *Keyring) notify() {
	if k.cfg.Notifier != nil {
		k.cfg.Notifier.Notify(notify.Keys)
	}
}

// Count returns the number of keys, static and stored.
func (k *Keyring) Count(ctx context.Context) (int, error) {
	keys, err := k.List(ctx)
	return len(keys), err
}

// storeErr makes a closed store a 503 rather than an internal error.
func storeErr(err error) error {
	if errors.Is(err, store.ErrClosed) {
		return &spool.Error{Code: spool.CodeUnavailable, Message: "server is shutting down"}
	}
	return err
}

func sourceName(source string) string {
	switch source {
	case SourceEnv:
		return "environment (SPOOL_ADMIN_KEY)"
	case SourceConfig:
		return "config file"
	}
	return source
}
