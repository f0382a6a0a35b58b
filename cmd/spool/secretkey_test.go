package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool/internal/secret"
)

// TestSecretKeySources: SPOOL_SECRET_KEY, then secrets.keyFile, then <data>/secret.key made on
// the first start with mode 0600 and kept across starts; loose permissions and bad keys refuse
// to start without quoting the key.
func TestSecretKeySources(t *testing.T) {
	t.Parallel()
	quiet := slog.New(slog.DiscardHandler)
	probe := func(t *testing.T, s *secret.Sealer) []byte {
		t.Helper()
		b, err := s.Seal([]byte("x"), []byte("id"))
		require.NoError(t, err)
		return b
	}
	opens := func(s *secret.Sealer, sealed []byte) bool {
		_, err := s.Open(sealed, []byte("id"))
		return err == nil
	}

	data := t.TempDir()
	cfg, err := loadConfig(writeConfig(t, "data: "+data+"\n"), envMap(nil))
	require.NoError(t, err)
	first, err := openSealer(cfg, quiet)
	require.NoError(t, err)
	st, err := os.Stat(filepath.Join(data, "secret.key"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	sealed := probe(t, first)
	again, err := openSealer(cfg, quiet)
	require.NoError(t, err)
	require.True(t, opens(again, sealed), "the generated key is kept across starts")

	require.NoError(t, os.Chmod(filepath.Join(data, "secret.key"), 0o640))
	_, err = openSealer(cfg, quiet)
	require.ErrorContains(t, err, "chmod 600", "a group-readable key refuses to start")

	key := secret.GenerateKey()
	keyFile := filepath.Join(t.TempDir(), "k")
	require.NoError(t, os.WriteFile(keyFile, []byte(secret.EncodeKey(key)), 0o400))
	cfg, err = loadConfig(writeConfig(t, "data: "+data+"\nsecrets:\n  keyFile: "+keyFile+"\n"), envMap(nil))
	require.NoError(t, err)
	fromFile, err := openSealer(cfg, quiet)
	require.NoError(t, err)
	sealed = probe(t, fromFile)

	env := envMap(map[string]string{"SPOOL_SECRET_KEY": secret.EncodeKey(key)})
	cfg, err = loadConfig(writeConfig(t, "data: "+data+"\nsecrets:\n  keyFile: /nonexistent\n"), env)
	require.NoError(t, err)
	fromEnv, err := openSealer(cfg, quiet)
	require.NoError(t, err, "SPOOL_SECRET_KEY wins over secrets.keyFile")
	require.True(t, opens(fromEnv, sealed), "the same key from the environment and from the file")

	_, err = loadConfig("", envMap(map[string]string{"SPOOL_SECRET_KEY": "CANARY-not-a-key"}))
	require.ErrorContains(t, err, "SPOOL_SECRET_KEY")
	require.NotContains(t, err.Error(), "CANARY")
}
