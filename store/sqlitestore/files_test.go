package sqlitestore_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// requireMode checks the permission bits of the files at paths.
func requireMode(t *testing.T, want os.FileMode, paths ...string) {
	t.Helper()
	for _, p := range paths {
		st, err := os.Stat(p)
		require.NoError(t, err)
		require.Equal(t, want, st.Mode().Perm(), "%s is %04o", filepath.Base(p), st.Mode().Perm())
	}
}

// TestDatabaseFilesAreOwnerOnly: a new database, its WAL and its shared-memory file are 0600
// whatever the umask allows, so that the data directory's mode is not all that keeps job data
// from other users.
func TestDatabaseFilesAreOwnerOnly(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "spool.db")
	s := openAt(t, path)
	defer func() { require.NoError(t, s.Close()) }()
	require.NoError(t, s.CreateJob(t.Context(), store.CreateJobParams{Job: job("a")}))
	requireMode(t, 0o600, path, path+"-wal", path+"-shm")
}

// TestOpenRestrictsLooseFiles: a database an older version left 0644, with the WAL and
// shared-memory files of a server still running on it, is 0600 once opened.
func TestOpenRestrictsLooseFiles(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "spool.db")
	running := openAt(t, path)
	defer func() { require.NoError(t, running.Close()) }()
	require.NoError(t, running.CreateJob(t.Context(), store.CreateJobParams{Job: job("a")}))
	files := []string{path, path + "-wal", path + "-shm"}
	for _, p := range files {
		require.NoError(t, os.Chmod(p, 0o644))
	}

	s := openAt(t, path)
	defer func() { require.NoError(t, s.Close()) }()
	requireMode(t, 0o600, files...)

	fresh := filepath.Join(t.TempDir(), "old.db")
	require.NoError(t, os.WriteFile(fresh, nil, 0o600))
	require.NoError(t, os.Chmod(fresh, 0o664))
	old := openAt(t, fresh)
	defer func() { require.NoError(t, old.Close()) }()
	requireMode(t, 0o600, fresh)
}

// TestReplacedValuesLeaveNoTrace: what a write replaces is zeroed in the file, not left in its
// free space: an upgrade that seals the plaintext secrets of endpoints relies on it.
func TestReplacedValuesLeaveNoTrace(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "spool.db")
	s := openAt(t, path)
	names := []string{"a", "b", "c"}
	for _, name := range names {
		ep := spool.NewEndpoint(name)
		ep.WebhookSecret = "whsec_CANARY" + name
		require.NoError(t, s.PutEndpoint(t.Context(), ep))
	}
	require.NoError(t, s.Close()) // the plaintext is in the database file now
	s = openAt(t, path)
	for _, name := range names {
		ep := spool.NewEndpoint(name)
		ep.WebhookSecret = "sealed:" + strings.Repeat("x", 100)
		require.NoError(t, s.PutEndpoint(t.Context(), ep))
	}
	require.NoError(t, s.Close()) // checkpoints the WAL into the file and removes it

	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.False(t, bytes.Contains(b, []byte("CANARY")), "a replaced value is still in the file")
	_, err = os.Stat(path + "-wal")
	require.ErrorIs(t, err, os.ErrNotExist)
}
