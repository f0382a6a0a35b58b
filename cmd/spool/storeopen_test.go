package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
	"github.com/spool-run/spool/store/pgstore/pgtest"
)

// TestStoreSetting: the store setting selects a backend, and no error or description of it ever
// shows a URL's password.
func TestStoreSetting(t *testing.T) {
	t.Parallel()
	const password = "s3cr3t-pw-7f2a"
	for _, v := range []string{"", "sqlite", "postgres://spool:" + password + "@db:5432/spool", "postgresql://db/spool"} {
		c, err := loadConfig("", envMap(map[string]string{"SPOOL_STORE": v}))
		require.NoError(t, err, "store %q", v)
		require.Equal(t, v, c.Store)
		require.NotContains(t, describeStore(c), password)
	}
	c, err := loadConfig("", envMap(map[string]string{"SPOOL_STORE": "postgres://spool:" + password + "@db:5432/spool?sslmode=require"}))
	require.NoError(t, err)
	require.Equal(t, "postgres://spool:xxxxx@db:5432/spool", describeStore(c))
	require.Equal(t, "sqlite in ./spool-data", describeStore(&config{fileConfig: fileConfig{Data: "./spool-data"}}))

	for _, v := range []string{"mysql://root:" + password + "@db/spool", "redis", "/var/lib/" + password} {
		_, err := loadConfig("", envMap(map[string]string{"SPOOL_STORE": v}))
		require.Error(t, err, v)
		require.Contains(t, err.Error(), "store")
		require.NotContains(t, err.Error(), password)
	}
	p := writeConfig(t, "store: sqlit\n")
	_, err = loadConfig(p, envMap(nil))
	require.ErrorContains(t, err, "must be sqlite or a postgres:// URL")
}

// TestCheckConfigShowsTheStoreWithoutItsPassword runs serve --check-config with a PostgreSQL URL.
func TestCheckConfigShowsTheStoreWithoutItsPassword(t *testing.T) {
	t.Parallel()
	cmd := newServeCmd(envMap(map[string]string{"SPOOL_CONFIG": "/nonexistent/none.yaml"}))
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SetArgs([]string{"--config", writeConfig(t, "addr: 127.0.0.1:0\n"), "--store", "postgres://u:hunter2-x@127.0.0.1:5432/db", "--check-config"})
	require.NoError(t, cmd.ExecuteContext(context.Background()))
	require.Contains(t, out.String(), "store postgres://u:xxxxx@127.0.0.1:5432/db")
	require.NotContains(t, out.String(), "hunter2-x")
}

// TestPostgresNeedsASharedSecretKey: replicas on one database must seal with one key, so a
// PostgreSQL store without an explicit key refuses to start rather than make one up per replica.
func TestPostgresNeedsASharedSecretKey(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig("", envMap(map[string]string{"SPOOL_STORE": "postgres://u:pw@127.0.0.1:1/db", "SPOOL_DATA": t.TempDir()}))
	require.NoError(t, err)
	_, err = openServer(t.Context(), cfg, io.Discard)
	require.ErrorContains(t, err, "SPOOL_SECRET_KEY or secrets.keyFile")
}

// TestServeMakesItsDataDirectory: on the embedded store, a data directory that does not exist yet
// is made (owner only) before anything is written into it, the secret key file first.
func TestServeMakesItsDataDirectory(t *testing.T) {
	t.Parallel()
	data := filepath.Join(t.TempDir(), "new", "data")
	cfg, err := loadConfig("", envMap(map[string]string{"SPOOL_DATA": data, "SPOOL_ADDR": "127.0.0.1:0"}))
	require.NoError(t, err)
	srv, err := openServer(t.Context(), cfg, io.Discard)
	require.NoError(t, err)
	srv.abort()
	fi, err := os.Stat(data)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
	_, err = os.Stat(filepath.Join(data, secretKeyFile))
	require.NoError(t, err)
}

// TestDevKeepsItsOwnData: spool dev's default data directory is not spool serve's, so the demo's
// endpoints and keys never mix with a real server's.
func TestDevKeepsItsOwnData(t *testing.T) {
	t.Parallel()
	cmd := newDevCmd(envMap(nil))
	require.Equal(t, devDataDir, cmd.Flags().Lookup("data").DefValue)
	require.NotEqual(t, newServeCmd(envMap(nil)).Flags().Lookup("data").DefValue, devDataDir)
}

// TestOpenStoreReportsCommits: both stores tell the metrics of their commits (onCommit), with
// the time each took and the writes it held. The PostgreSQL case needs SPOOL_TEST_POSTGRES.
func TestOpenStoreReportsCommits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		store func(t *testing.T) string
	}{
		{"sqlite", func(*testing.T) string { return "sqlite" }},
		{"postgres", func(t *testing.T) string { return pgtest.URL(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := &config{fileConfig: fileConfig{Data: t.TempDir(), Store: tc.store(t)}}
			o, err := openStore(t.Context(), cfg, slog.New(slog.DiscardHandler))
			require.NoError(t, err)
			defer func() { require.NoError(t, o.Close()) }()
			require.NotNil(t, o.onCommit)
			var (
				mu     sync.Mutex
				writes []int
			)
			o.onCommit(func(d time.Duration, n int) {
				mu.Lock()
				defer mu.Unlock()
				require.Positive(t, d)
				writes = append(writes, n)
			})
			now := time.Now().UTC().Truncate(time.Millisecond)
			for _, id := range []string{"a", "b"} {
				require.NoError(t, o.CreateJob(t.Context(), store.CreateJobParams{Job: &spool.Job{
					ID: id, Endpoint: "ep", State: spool.StateInQueue, Input: json.RawMessage(`{}`),
					Policy:    spool.Policy{ExecutionTimeoutMs: spool.DefaultExecutionTimeoutMs, TTLMs: spool.DefaultTTLMs},
					CreatedAt: now, QueuedAt: now, ExpiresAt: now.Add(time.Hour), RetentionMs: 60_000,
				}}))
			}
			mu.Lock()
			defer mu.Unlock()
			require.Equal(t, []int{1, 1}, writes, "two writes one after the other: two commits of one write")
		})
	}
}
