package auth_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/auth"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/spooltest"
)

// TestWorkerTokens: a minted token authenticates as a worker key of its one endpoint, bound to its
// one worker; a token altered anywhere, or minted by another server (another start), does not.
func TestWorkerTokens(t *testing.T) {
	t.Parallel()
	tokens := auth.NewWorkerTokens()
	k, err := auth.NewKeyring(t.Context(), auth.Config{Store: openStore(t), Clock: clock.NewFake(spooltest.Start), Tokens: tokens})
	require.NoError(t, err)
	tok := tokens.Mint("ep", "ep-1f3a")
	require.True(t, strings.HasPrefix(tok, "spoolw1."))
	require.NotContains(t, tok, " ")

	key, err := k.Authenticate(t.Context(), tok) // raw, as runpod-python sends it
	require.NoError(t, err)
	require.Equal(t, spool.ScopeWorker, key.Scope)
	require.Equal(t, []string{"ep"}, key.Endpoints)
	require.Equal(t, "ep-1f3a", key.WorkerID)
	require.NoError(t, auth.Authorize(key, auth.Worker, "ep", true))
	require.Equal(t, spool.CodeForbidden, spool.ErrorCode(auth.Authorize(key, auth.Worker, "other", true)))
	require.Equal(t, spool.CodeForbidden, spool.ErrorCode(auth.Authorize(key, auth.Client, "ep", false)))

	bad := []string{
		auth.NewWorkerTokens().Mint("ep", "ep-1f3a"),          // another start's
		strings.Replace(tok, "spoolw1.ZXA", "spoolw1.ZXB", 1), // endpoint changed
		tok[:len(tok)-1] + otherChar(tok[len(tok)-1:]),        // MAC changed
		tokens.Mint("ep", "ep-1f3a") + ".x",                   // extra part
		"spoolw1.",
	}
	bad = append(bad, strings.Join(strings.Split(tok, ".")[:3], ".")+"."+strings.Split(tokens.Mint("ep", "ep-2"), ".")[3]) // another worker's MAC
	for _, b := range bad {
		_, err := k.Authenticate(t.Context(), b)
		require.Equal(t, spool.CodeUnauthorized, spool.ErrorCode(err), "%q", b)
	}

	// A keyring without Tokens knows no token.
	plain := newKeyring(t, openStore(t), clock.NewFake(spooltest.Start))
	_, err = plain.Authenticate(t.Context(), tok)
	require.Equal(t, spool.CodeUnauthorized, spool.ErrorCode(err))
}

// otherChar returns a base64url character other than c, so that a changed token never equals
// the original (a fixed replacement would, once in 64 tokens).
func otherChar(c string) string {
	if c == "A" {
		return "B"
	}
	return "A"
}

// TestWorkerTokensWithKey: minters under the same key (replicas with the same secret) take each
// other's tokens; under another key, nothing.
func TestWorkerTokensWithKey(t *testing.T) {
	t.Parallel()
	key := bytes.Repeat([]byte{7}, 32)
	a, b := auth.NewWorkerTokensWithKey(key), auth.NewWorkerTokensWithKey(key)
	other := auth.NewWorkerTokensWithKey(bytes.Repeat([]byte{8}, 32))
	ctx := context.Background()
	st := openStore(t)
	fake := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	ringB, err := auth.NewKeyring(ctx, auth.Config{Store: st, Clock: fake, Tokens: b})
	require.NoError(t, err)
	k, err := ringB.Authenticate(ctx, a.Mint("gpu", "gpu-1"))
	require.NoError(t, err, "a token minted by another replica")
	require.Equal(t, "gpu-1", k.WorkerID)
	ringOther, err := auth.NewKeyring(ctx, auth.Config{Store: st, Clock: fake, Tokens: other})
	require.NoError(t, err)
	_, err = ringOther.Authenticate(ctx, a.Mint("gpu", "gpu-1"))
	require.Equal(t, spool.CodeUnauthorized, spool.ErrorCode(err))
}
