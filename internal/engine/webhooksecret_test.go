package engine_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/notify"
	"github.com/spool-run/spool/internal/secret"
	"github.com/spool-run/spool/internal/webhook"
	"github.com/spool-run/spool/spoolclient"
	"github.com/spool-run/spool/store/sqlitestore"
)

// secretServer is an engine on a database file that outlives it, so that a test can start the
// server again, with the same key or another one.
type secretServer struct {
	t    *testing.T
	ctx  context.Context
	dir  string
	path string
}

func newSecretServer(t *testing.T) *secretServer {
	dir := t.TempDir()
	return &secretServer{t: t, ctx: context.Background(), dir: dir, path: filepath.Join(dir, "spool.db")}
}

// start opens the store and starts an engine on it under sealer; stop undoes it.
func (s *secretServer) start(sealer engine.Sealer, log *slog.Logger) (eng *engine.Engine, stop func(), err error) {
	st, err := sqlitestore.Open(s.ctx, s.path)
	require.NoError(s.t, err)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	eng, err = engine.New(engine.Config{Store: st, Clock: clock.NewFake(t0), SweepInterval: time.Hour, Sealer: sealer, Logger: log})
	require.NoError(s.t, err)
	if err := eng.Start(s.ctx); err != nil {
		require.NoError(s.t, st.Close())
		return nil, nil, err
	}
	return eng, func() { eng.Stop(); require.NoError(s.t, st.Close()) }, nil
}

func (s *secretServer) mustStart(sealer engine.Sealer) (*engine.Engine, func()) {
	eng, stop, err := s.start(sealer, nil)
	require.NoError(s.t, err)
	return eng, stop
}

// stored is the endpoint as the store holds it, read with the engine stopped.
func (s *secretServer) stored(name string) spool.Endpoint {
	st, err := sqlitestore.Open(s.ctx, s.path)
	require.NoError(s.t, err)
	defer func() { require.NoError(s.t, st.Close()) }()
	ep, err := st.GetEndpoint(s.ctx, name)
	require.NoError(s.t, err)
	return ep
}

// requireNotInFiles checks that none of the database's files holds any of the needles.
func (s *secretServer) requireNotInFiles(when string, needles ...string) {
	s.t.Helper()
	for _, name := range []string{"spool.db", "spool.db-wal", "spool.db-shm"} {
		b, err := os.ReadFile(filepath.Join(s.dir, name))
		if os.IsNotExist(err) {
			continue
		}
		require.NoError(s.t, err)
		for _, n := range needles {
			require.False(s.t, bytes.Contains(b, []byte(n)), "%s holds the webhook secret %s", name, when)
		}
	}
}

// secretNeedles are the forms of a webhook secret a database file must not hold: the whole
// secret, and its key in the base64 the secret is written in and in another base64 alphabet.
func secretNeedles(t *testing.T, whsec string) []string {
	keys, err := spool.DecodeWebhookSecrets(whsec)
	require.NoError(t, err)
	require.Len(t, keys, 1)
	return []string{whsec, strings.TrimPrefix(whsec, "whsec_"), base64.RawURLEncoding.EncodeToString(keys[0])}
}

func newSealer(t *testing.T) *secret.Sealer {
	s, err := secret.New(secret.GenerateKey())
	require.NoError(t, err)
	return s
}

// requireSigns checks that the endpoint's secret, as the engine hands it to the webhook
// dispatcher, signs a message the receiver verifies with the secret it was given.
func requireSigns(t *testing.T, ep spool.Endpoint, receiverSecret string) {
	t.Helper()
	keys, err := spool.ParseWebhookSecrets(ep.WebhookSecret)
	require.NoError(t, err)
	body := []byte(`{"id":"job","status":"COMPLETED"}`)
	h := http.Header{}
	h.Set(webhook.HeaderID, "msg_1")
	h.Set(webhook.HeaderTimestamp, "1800000000")
	h.Set(webhook.HeaderSignature, webhook.Sign(keys, "msg_1", 1_800_000_000, body))
	require.NoError(t, spoolclient.Verify(receiverSecret, h, body, time.Unix(1_800_000_000, 0), 0))
}

// TestWebhookSecretIsSealedAtRest: the store keeps an endpoint's webhookSecret sealed under the
// server's key and bound to the endpoint, so the database files never hold it; the engine hands it
// open to its callers, also after a restart.
func TestWebhookSecretIsSealedAtRest(t *testing.T) {
	t.Parallel()
	srv := newSecretServer(t)
	sealer := newSealer(t)
	whsec := spool.NewWebhookSecret()
	needles := secretNeedles(t, whsec)

	eng, stop := srv.mustStart(sealer)
	ep := spool.NewEndpoint("ep")
	ep.WebhookSecret = whsec
	put, _, err := eng.PutEndpoint(srv.ctx, ep)
	require.NoError(t, err)
	require.Equal(t, whsec, put.WebhookSecret, "the caller gets the endpoint as it gave it")
	got, err := eng.Endpoint("ep")
	require.NoError(t, err)
	require.Equal(t, whsec, got.WebhookSecret)
	srv.requireNotInFiles("while the server runs", needles...)
	stop()
	srv.requireNotInFiles("after the store closed", needles...)

	stored := srv.stored("ep")
	require.True(t, strings.HasPrefix(stored.WebhookSecret, "sealed:"), "the store holds the sealed form")
	sealed, err := base64.RawStdEncoding.DecodeString(strings.TrimPrefix(stored.WebhookSecret, "sealed:"))
	require.NoError(t, err)
	plain, err := sealer.Open(sealed, []byte("webhookSecret\x00ep"))
	require.NoError(t, err, "sealed under the server's key, bound to the endpoint")
	require.Equal(t, whsec, string(plain))

	eng, stop = srv.mustStart(sealer)
	defer stop()
	got, err = eng.Endpoint("ep")
	require.NoError(t, err)
	requireSigns(t, got, whsec)
	require.Equal(t, []spool.Endpoint{got}, eng.Endpoints())

	none := spool.NewEndpoint("plain")
	_, _, err = eng.PutEndpoint(srv.ctx, none)
	require.NoError(t, err)
	got, err = eng.Endpoint("plain")
	require.NoError(t, err)
	require.Empty(t, got.WebhookSecret, "no secret stays no secret")
}

// TestWebhookSecretBoundToItsEndpoint: a sealed secret copied onto another endpoint's row does not
// open there.
func TestWebhookSecretBoundToItsEndpoint(t *testing.T) {
	t.Parallel()
	srv := newSecretServer(t)
	sealer := newSealer(t)
	eng, stop := srv.mustStart(sealer)
	ep := spool.NewEndpoint("a")
	ep.WebhookSecret = spool.NewWebhookSecret()
	_, _, err := eng.PutEndpoint(srv.ctx, ep)
	require.NoError(t, err)
	stop()

	copied := srv.stored("a")
	copied.Name = "b"
	st, err := sqlitestore.Open(srv.ctx, srv.path)
	require.NoError(t, err)
	require.NoError(t, st.PutEndpoint(srv.ctx, copied))
	require.NoError(t, st.Close())
	_, _, err = srv.start(sealer, nil)
	require.ErrorContains(t, err, "endpoint b: its webhookSecret cannot be decrypted")
}

// TestStartSealsLegacyWebhookSecrets: a webhookSecret an older version stored in plaintext is
// sealed in the store when the engine starts, once, and still signs what the receiver verifies.
func TestStartSealsLegacyWebhookSecrets(t *testing.T) {
	t.Parallel()
	srv := newSecretServer(t)
	sealer := newSealer(t)
	whsec := spool.NewWebhookSecret()
	st, err := sqlitestore.Open(srv.ctx, srv.path)
	require.NoError(t, err)
	legacy := spool.NewEndpoint("legacy")
	legacy.WebhookSecret = whsec // what an older version stored
	legacy.CreatedAt, legacy.UpdatedAt = t0.Add(-time.Hour), t0.Add(-time.Minute)
	require.NoError(t, st.PutEndpoint(srv.ctx, legacy))
	other := spool.NewEndpoint("other")
	other.WebhookSecret = spool.NewWebhookSecret()
	require.NoError(t, st.PutEndpoint(srv.ctx, other))
	require.NoError(t, st.PutEndpoint(srv.ctx, spool.NewEndpoint("unsigned")))
	require.NoError(t, st.Close())

	eng, stop := srv.mustStart(sealer)
	got, err := eng.Endpoint("legacy")
	require.NoError(t, err)
	requireSigns(t, got, whsec)
	stop()
	srv.requireNotInFiles("after the upgrade", secretNeedles(t, whsec)...)
	sealed := srv.stored("legacy")
	require.True(t, strings.HasPrefix(sealed.WebhookSecret, "sealed:"))
	require.True(t, sealed.CreatedAt.Equal(legacy.CreatedAt) && sealed.UpdatedAt.Equal(legacy.UpdatedAt),
		"sealing is no edit: the timestamps stay")
	require.True(t, strings.HasPrefix(srv.stored("other").WebhookSecret, "sealed:"))
	require.Empty(t, srv.stored("unsigned").WebhookSecret)

	eng, stop = srv.mustStart(sealer)
	defer stop()
	require.Equal(t, sealed.WebhookSecret, srv.stored("legacy").WebhookSecret, "a second start seals nothing again")
	got, err = eng.Endpoint("legacy")
	require.NoError(t, err)
	requireSigns(t, got, whsec)
}

// TestStartRefusesAWebhookSecretItCannotOpen: under another key, the engine does not start,
// with an error that names the endpoint and the remedy and not the secret; nothing in the store
// changes, so the right key starts it again.
func TestStartRefusesAWebhookSecretItCannotOpen(t *testing.T) {
	t.Parallel()
	srv := newSecretServer(t)
	sealer := newSealer(t)
	whsec := spool.NewWebhookSecret()
	eng, stop := srv.mustStart(sealer)
	ep := spool.NewEndpoint("signed")
	ep.WebhookSecret = whsec
	_, _, err := eng.PutEndpoint(srv.ctx, ep)
	require.NoError(t, err)
	stop()
	before := srv.stored("signed")

	_, _, err = srv.start(newSealer(t), nil)
	require.Error(t, err)
	require.ErrorIs(t, err, secret.ErrOpen)
	for _, want := range []string{"endpoint signed", "webhookSecret cannot be decrypted", "SPOOL_SECRET_KEY", "set a new one"} {
		require.ErrorContains(t, err, want)
	}
	for _, n := range append(secretNeedles(t, whsec), before.WebhookSecret) {
		require.NotContains(t, err.Error(), n)
	}
	require.Equal(t, before, srv.stored("signed"), "a refused start changes nothing")

	eng, stop = srv.mustStart(sealer)
	defer stop()
	got, err := eng.Endpoint("signed")
	require.NoError(t, err)
	requireSigns(t, got, whsec)
}

// syncBuffer is a bytes.Buffer that a logger may write to from any goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestReloadSkipsAWebhookSecretItCannotOpen: a replica running under another key (a
// misconfiguration) cannot open what the other one sealed. Its cache reload logs the endpoint
// and keeps the version it had, or leaves an endpoint it never had out, rather than failing
// every reload or handing the dispatcher a secret it cannot sign with; the other endpoints
// still reload.
func TestReloadSkipsAWebhookSecretItCannotOpen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "spool.db"))
	require.NoError(t, err)
	hub := notify.NewHub()
	var logs syncBuffer
	start := func(log *slog.Logger) *engine.Engine {
		eng, err := engine.New(engine.Config{Store: st, Clock: clock.NewFake(t0), SweepInterval: time.Hour,
			Notifier: hub, Sealer: newSealer(t), Logger: log})
		require.NoError(t, err)
		require.NoError(t, eng.Start(ctx))
		return eng
	}
	a := start(slog.New(slog.DiscardHandler))
	b := start(slog.New(slog.NewTextHandler(&logs, nil)))
	defer func() { a.Stop(); b.Stop(); require.NoError(t, st.Close()) }()

	mine := spool.NewEndpoint("shared")
	mine.WebhookSecret = spool.NewWebhookSecret()
	_, _, err = b.PutEndpoint(ctx, mine)
	require.NoError(t, err)
	theirs := mine
	theirs.WebhookSecret = spool.NewWebhookSecret()
	theirs.WorkersMax = 7
	_, _, err = a.PutEndpoint(ctx, theirs)
	require.NoError(t, err)
	fresh := spool.NewEndpoint("fresh")
	fresh.WebhookSecret = spool.NewWebhookSecret()
	_, _, err = a.PutEndpoint(ctx, fresh)
	require.NoError(t, err)
	_, _, err = a.PutEndpoint(ctx, spool.NewEndpoint("unsigned"))
	require.NoError(t, err)

	_, err = b.Endpoint("unsigned")
	require.NoError(t, err, "the reload went through for the endpoints B can open")
	got, err := b.Endpoint("shared")
	require.NoError(t, err)
	require.Equal(t, mine.WebhookSecret, got.WebhookSecret, "B keeps the version it could open")
	require.Equal(t, 3, got.WorkersMax)
	_, err = b.Endpoint("fresh")
	requireCode(t, err, spool.CodeNotFound)

	out := logs.String()
	require.Contains(t, out, "level=ERROR")
	require.Contains(t, out, "endpoint=shared")
	require.Contains(t, out, "endpoint=fresh")
	for _, s := range []string{mine.WebhookSecret, theirs.WebhookSecret, fresh.WebhookSecret} {
		require.NotContains(t, out, strings.TrimPrefix(s, "whsec_"))
	}
	require.NotContains(t, out, "sealed:")

	got, err = a.Endpoint("shared")
	require.NoError(t, err)
	require.Equal(t, theirs.WebhookSecret, got.WebhookSecret, "A, under the key that sealed it, opens it")
}
