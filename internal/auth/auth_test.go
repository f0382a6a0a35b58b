package auth_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/auth"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/notify"
	"github.com/spool-run/spool/store"
	"github.com/spool-run/spool/store/sqlitestore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "spool.db"))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, st.Close()) })
	return st
}

const envSecret = "spool_envadminsecret"

func newKeyring(t *testing.T, st store.Store, fake *clock.Fake, static ...spool.Key) *auth.Keyring {
	t.Helper()
	k, err := auth.NewKeyring(context.Background(), auth.Config{Store: st, Clock: fake, Static: static})
	require.NoError(t, err)
	return k
}

func TestAuthenticate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fake := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfgKey := spool.Key{Name: "ci", Scope: spool.ScopeWorker, Hash: spool.HashKey("cfg-secret"), Endpoints: []string{"ep"}}
	k := newKeyring(t, openStore(t), fake, auth.EnvAdminKey(envSecret), cfgKey)
	secret, created, err := k.Create(ctx, spool.Key{Name: "c", Scope: spool.ScopeClient})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(secret, "spool_"))
	require.True(t, strings.HasPrefix(created.ID, "key_"))
	require.Empty(t, created.Hash)

	cases := []struct {
		header string
		id     string
		scope  spool.Scope
		code   spool.Code
	}{
		{"Bearer " + envSecret, "key_env_admin", spool.ScopeAdmin, ""},
		{"bearer " + envSecret, "key_env_admin", spool.ScopeAdmin, ""},
		{"BEARER   " + envSecret + " ", "key_env_admin", spool.ScopeAdmin, ""},
		{envSecret, "key_env_admin", spool.ScopeAdmin, ""},
		{"cfg-secret", "", spool.ScopeWorker, ""},
		{"Bearer " + secret, created.ID, spool.ScopeClient, ""},
		{secret, created.ID, spool.ScopeClient, ""},
		{"", "", "", spool.CodeUnauthorized},
		{"Bearer ", "", "", spool.CodeUnauthorized},
		{"Bearer nope", "", "", spool.CodeUnauthorized},
		{"Basic " + envSecret, "", "", spool.CodeUnauthorized},
		{envSecret + "x", "", "", spool.CodeUnauthorized},
	}
	for _, c := range cases {
		key, err := k.Authenticate(ctx, c.header)
		if c.code != "" {
			require.Equal(t, c.code, spool.ErrorCode(err), "header %q", c.header)
			require.Nil(t, key)
			continue
		}
		require.NoError(t, err, "header %q", c.header)
		require.Equal(t, c.scope, key.Scope)
		if c.id != "" {
			require.Equal(t, c.id, key.ID)
		}
	}
	key, err := k.Authenticate(ctx, "cfg-secret")
	require.NoError(t, err)
	require.Equal(t, auth.SourceConfig, key.Source)
	require.True(t, strings.HasPrefix(key.ID, "key_config_"))
	key.Endpoints[0] = "mutated" // callers get copies
	key, err = k.Authenticate(ctx, "cfg-secret")
	require.NoError(t, err)
	require.Equal(t, []string{"ep"}, key.Endpoints)
}

func TestReloadAcrossReplicas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fake := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	st := openStore(t)
	a := newKeyring(t, st, fake, auth.EnvAdminKey(envSecret))
	b := newKeyring(t, st, fake, auth.EnvAdminKey(envSecret))

	secret, created, err := a.Create(ctx, spool.Key{Name: "w", Scope: spool.ScopeWorker})
	require.NoError(t, err)
	// b loaded less than a second ago: the miss does not reload yet.
	_, err = b.Authenticate(ctx, secret)
	require.Equal(t, spool.CodeUnauthorized, spool.ErrorCode(err))
	fake.Advance(time.Second)
	key, err := b.Authenticate(ctx, secret)
	require.NoError(t, err)
	require.Equal(t, created.ID, key.ID)

	// A key deleted on a works on b until b's cache is older than MaxAge.
	_, _, err = a.Create(ctx, spool.Key{Name: "admin2", Scope: spool.ScopeAdmin})
	require.NoError(t, err)
	require.NoError(t, a.Delete(ctx, created.ID))
	_, err = a.Authenticate(ctx, secret)
	require.Equal(t, spool.CodeUnauthorized, spool.ErrorCode(err))
	_, err = b.Authenticate(ctx, secret)
	require.NoError(t, err)
	fake.Advance(30 * time.Second)
	_, err = b.Authenticate(ctx, secret)
	require.Equal(t, spool.CodeUnauthorized, spool.ErrorCode(err))
}

// TestNotifiedAcrossReplicas: with a shared notifier, a key made or deleted on one keyring takes
// effect on the other at its next request, without waiting for ReloadInterval or MaxAge.
func TestNotifiedAcrossReplicas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fake := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	st := openStore(t)
	hub := notify.NewHub()
	open := func() *auth.Keyring {
		k, err := auth.NewKeyring(ctx, auth.Config{Store: st, Clock: fake, Notifier: hub, Static: []spool.Key{auth.EnvAdminKey(envSecret)}})
		require.NoError(t, err)
		return k
	}
	a, b := open(), open()
	secret, _, err := a.Create(ctx, spool.Key{Name: "w", Scope: spool.ScopeWorker})
	require.NoError(t, err)
	_, err = b.Authenticate(ctx, secret)
	require.NoError(t, err, "made on a a moment ago, known to b at once")

	all, err := a.List(ctx)
	require.NoError(t, err)
	for _, key := range all {
		if key.Name == "w" {
			require.NoError(t, a.Delete(ctx, key.ID))
		}
	}
	_, err = b.Authenticate(ctx, secret)
	require.Equal(t, spool.CodeUnauthorized, spool.ErrorCode(err), "revoked on a, refused by b at once")
}

func TestCreateValidation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fake := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	k := newKeyring(t, openStore(t), fake)
	cases := []struct {
		key  spool.Key
		want string
	}{
		{spool.Key{Name: "x", Scope: "root"}, "scope must be"},
		{spool.Key{Name: "x"}, "scope must be"},
		{spool.Key{Name: "x", Scope: spool.ScopeAdmin, Endpoints: []string{"ep"}}, "endpoints cannot be set on an admin key"},
		{spool.Key{Name: "x", Scope: spool.ScopeWorker, ReadOnly: true}, "readOnly applies to client and admin keys only"},
		{spool.Key{Name: "x", Scope: spool.ScopeClient, Endpoints: []string{"bad name"}}, "not a valid endpoint name"},
		{spool.Key{Name: strings.Repeat("n", 201), Scope: spool.ScopeClient}, "at most 200"},
	}
	for _, c := range cases {
		_, _, err := k.Create(ctx, c.key)
		require.Equal(t, spool.CodeInvalid, spool.ErrorCode(err))
		require.Contains(t, err.Error(), c.want)
	}
	n, err := k.Count(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
}

func TestDeleteRules(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fake := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfgAdmin := spool.Key{ID: "cfg-admin", Name: "ops", Scope: spool.ScopeAdmin, Hash: spool.HashKey("ops-secret")}

	t.Run("static keys cannot be deleted", func(t *testing.T) {
		t.Parallel()
		k := newKeyring(t, openStore(t), fake, auth.EnvAdminKey(envSecret), cfgAdmin)
		for _, id := range []string{"key_env_admin", "cfg-admin"} {
			err := k.Delete(ctx, id)
			require.Equal(t, spool.CodeConflict, spool.ErrorCode(err))
			require.Contains(t, err.Error(), "cannot be deleted")
		}
		require.Equal(t, spool.CodeNotFound, spool.ErrorCode(k.Delete(ctx, "key_nope")))
	})

	t.Run("last admin key", func(t *testing.T) {
		t.Parallel()
		k := newKeyring(t, openStore(t), fake)
		_, a1, err := k.Create(ctx, spool.Key{Name: "a1", Scope: spool.ScopeAdmin})
		require.NoError(t, err)
		_, c1, err := k.Create(ctx, spool.Key{Name: "c1", Scope: spool.ScopeClient})
		require.NoError(t, err)
		err = k.Delete(ctx, a1.ID)
		require.Equal(t, spool.CodeConflict, spool.ErrorCode(err))
		require.Contains(t, err.Error(), "last admin key")
		s2, a2, err := k.Create(ctx, spool.Key{Name: "a2", Scope: spool.ScopeAdmin})
		require.NoError(t, err)
		require.NoError(t, k.Delete(ctx, a1.ID))
		require.NoError(t, k.Delete(ctx, c1.ID))
		require.Equal(t, spool.CodeConflict, spool.ErrorCode(k.Delete(ctx, a2.ID)))
		keys, err := k.List(ctx)
		require.NoError(t, err)
		require.Len(t, keys, 1)
		require.Equal(t, a2.ID, keys[0].ID)
		require.Empty(t, keys[0].Hash)
		require.Equal(t, auth.SourceAPI, keys[0].Source)
		_, err = k.Authenticate(ctx, s2)
		require.NoError(t, err)
	})

	t.Run("stored admin deletable when a static admin exists", func(t *testing.T) {
		t.Parallel()
		k := newKeyring(t, openStore(t), fake, auth.EnvAdminKey(envSecret))
		_, a1, err := k.Create(ctx, spool.Key{Name: "a1", Scope: spool.ScopeAdmin})
		require.NoError(t, err)
		require.NoError(t, k.Delete(ctx, a1.ID))
		n, err := k.Count(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, n)
	})
}

func TestStaticKeyValidation(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	cases := []spool.Key{
		{Name: "nohash", Scope: spool.ScopeAdmin},
		{Name: "badhash", Scope: spool.ScopeAdmin, Hash: "md5:abc"},
		{Name: "badscope", Scope: "root", Hash: spool.HashKey("x")},
	}
	for _, c := range cases {
		_, err := auth.NewKeyring(context.Background(), auth.Config{Store: st, Static: []spool.Key{c}})
		require.Error(t, err, c.Name)
	}
	_, err := auth.NewKeyring(context.Background(), auth.Config{Store: st, Static: []spool.Key{
		{Name: "a", Scope: spool.ScopeAdmin, Hash: spool.HashKey("same")},
		{Name: "b", Scope: spool.ScopeClient, Hash: spool.HashKey("same")},
	}})
	require.Error(t, err)
	_, err = auth.NewKeyring(context.Background(), auth.Config{})
	require.Error(t, err)
}

func TestAuthorize(t *testing.T) {
	t.Parallel()
	admin := &spool.Key{Scope: spool.ScopeAdmin}
	client := &spool.Key{Scope: spool.ScopeClient}
	clientEP := &spool.Key{Scope: spool.ScopeClient, Endpoints: []string{"ep"}}
	readOnly := &spool.Key{Scope: spool.ScopeClient, ReadOnly: true}
	adminRO := &spool.Key{Scope: spool.ScopeAdmin, ReadOnly: true}
	worker := &spool.Key{Scope: spool.ScopeWorker}
	workerEP := &spool.Key{Scope: spool.ScopeWorker, Endpoints: []string{"ep"}}
	cases := []struct {
		name    string
		key     *spool.Key
		surface auth.Surface
		ep      string
		write   bool
		want    string // "" allowed, else a substring of the 403 message
	}{
		{"admin everywhere/client", admin, auth.Client, "x", true, ""},
		{"admin everywhere/worker", admin, auth.Worker, "x", true, ""},
		{"admin everywhere/admin", admin, auth.Admin, "", true, ""},
		{"read-only admin reads /api", adminRO, auth.Admin, "", false, ""},
		{"read-only admin reads a job", adminRO, auth.Client, "x", false, ""},
		{"read-only admin writes /api", adminRO, auth.Admin, "", true, "read-only admin key"},
		{"read-only admin cancels", adminRO, auth.Client, "x", true, "read-only admin key"},
		{"read-only admin takes jobs", adminRO, auth.Worker, "x", false, "read-only admin key"},
		{"client any endpoint", client, auth.Client, "x", true, ""},
		{"client listed endpoint", clientEP, auth.Client, "ep", true, ""},
		{"client other endpoint", clientEP, auth.Client, "other", false, `client key for endpoint "other"`},
		{"read-only read", readOnly, auth.Client, "x", false, ""},
		{"read-only write", readOnly, auth.Client, "x", true, "read/write client key"},
		{"client on worker", client, auth.Worker, "x", true, "needs a worker or admin key"},
		{"client on admin", client, auth.Admin, "", true, "needs an admin key"},
		{"worker any endpoint", worker, auth.Worker, "x", true, ""},
		{"worker listed endpoint", workerEP, auth.Worker, "ep", true, ""},
		{"worker other endpoint", workerEP, auth.Worker, "other", true, `worker key for endpoint "other"`},
		{"worker on client", worker, auth.Client, "x", false, "needs a client or admin key"},
		{"worker on admin", worker, auth.Admin, "", false, "needs an admin key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			err := auth.Authorize(c.key, c.surface, c.ep, c.write)
			if c.want == "" {
				require.NoError(t, err)
				return
			}
			require.Equal(t, spool.CodeForbidden, spool.ErrorCode(err))
			require.Contains(t, err.Error(), c.want)
		})
	}
}
