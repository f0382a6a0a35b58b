package secret_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool/internal/secret"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSealOpen(t *testing.T) {
	t.Parallel()
	s, err := secret.New(bytes.Repeat([]byte{7}, secret.KeySize))
	require.NoError(t, err)
	plain := []byte(`{"accessSecret":"CANARY-secret-value"}`)
	a, err := s.Seal(plain, []byte("job-1"))
	require.NoError(t, err)
	b, err := s.Seal(plain, []byte("job-1"))
	require.NoError(t, err)

	require.Len(t, a, len(plain)+secret.Overhead)
	require.Equal(t, byte(1), a[0], "version byte")
	require.NotEqual(t, a, b, "a random nonce per seal")
	require.False(t, bytes.Contains(a, []byte("CANARY")), "the plaintext does not show through")
	require.True(t, secret.IsSealed(a))
	require.False(t, secret.IsSealed(plain))

	got, err := s.Open(a, []byte("job-1"))
	require.NoError(t, err)
	require.Equal(t, plain, got)

	// Another job's id, another key, a flipped bit, an unknown version, a short value: none opens.
	_, err = s.Open(a, []byte("job-2"))
	require.ErrorIs(t, err, secret.ErrOpen)
	_, err = secret.NewRandom().Open(a, []byte("job-1"))
	require.ErrorIs(t, err, secret.ErrOpen)
	for i := range a {
		c := bytes.Clone(a)
		c[i] ^= 0x01
		_, err = s.Open(c, []byte("job-1"))
		require.ErrorIs(t, err, secret.ErrOpen, "byte %d flipped", i)
	}
	_, err = s.Open(a[:secret.Overhead-1], []byte("job-1"))
	require.ErrorIs(t, err, secret.ErrOpen)
	require.NotContains(t, err.Error(), "CANARY")
}

func TestNewRejectsBadKeys(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 16, 31, 33, 64} {
		_, err := secret.New(make([]byte, n))
		require.Error(t, err, "%d bytes", n)
	}
}

func TestParseKey(t *testing.T) {
	t.Parallel()
	k := secret.GenerateKey()
	for _, s := range []string{
		secret.EncodeKey(k),
		"  " + secret.EncodeKey(k) + "\n",
		strings.TrimRight(secret.EncodeKey(k), "="),
	} {
		got, err := secret.ParseKey(s)
		require.NoError(t, err)
		require.Equal(t, k, got)
	}
	const canary = "not-base64-CANARY!!"
	for _, bad := range []string{"", canary, secret.EncodeKey(k[:16])} {
		_, err := secret.ParseKey(bad)
		require.Error(t, err)
		require.NotContains(t, err.Error(), "CANARY", "a bad key is never quoted")
	}
}

func TestLoadOrCreateKeyFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "secret.key")
	k, created, err := secret.LoadOrCreateKeyFile(path)
	require.NoError(t, err)
	require.True(t, created)
	require.Len(t, k, secret.KeySize)
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	again, created, err := secret.LoadOrCreateKeyFile(path)
	require.NoError(t, err)
	require.False(t, created, "an existing key is kept")
	require.Equal(t, k, again)

	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file is left behind")
}

func TestLoadOrCreateKeyFileConcurrent(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "secret.key")
	keys := make([][]byte, 8)
	errs := make([]error, len(keys))
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() { keys[i], _, errs[i] = secret.LoadOrCreateKeyFile(path) })
	}
	wg.Wait()
	for i := range keys {
		require.NoError(t, errs[i])
		require.Equal(t, keys[0], keys[i], "every starter ends up with the one key on disk")
	}
}

func TestReadKeyFileRefusesLoosePermissions(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "secret.key")
	require.NoError(t, os.WriteFile(path, []byte(secret.EncodeKey(secret.GenerateKey())), 0o600))
	require.NoError(t, os.Chmod(path, 0o644))
	_, err := secret.ReadKeyFile(path)
	require.ErrorContains(t, err, "chmod 600")
	_, _, err = secret.LoadOrCreateKeyFile(path)
	require.ErrorContains(t, err, "chmod 600", "a readable key is refused, not replaced")

	require.NoError(t, os.Chmod(path, 0o400))
	_, err = secret.ReadKeyFile(path)
	require.NoError(t, err, "owner read-only is fine")

	bad := filepath.Join(t.TempDir(), "bad.key")
	require.NoError(t, os.WriteFile(bad, []byte("CANARY"), 0o600))
	_, err = secret.ReadKeyFile(bad)
	require.Error(t, err)
	require.NotContains(t, err.Error(), "CANARY")
}

func TestDerive(t *testing.T) {
	t.Parallel()
	key := secret.GenerateKey()
	a, err := secret.New(key)
	require.NoError(t, err)
	b, err := secret.New(bytes.Clone(key))
	require.NoError(t, err)
	require.Len(t, a.Derive("x"), 32)
	require.Equal(t, a.Derive("x"), b.Derive("x"), "the same secret derives the same key")
	require.NotEqual(t, a.Derive("x"), a.Derive("y"), "each purpose its own key")
	require.NotEqual(t, key, a.Derive("x"), "never the sealing key itself")
}
