package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func envMap(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "spool.yaml")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	return p
}

func TestExampleConfigIsValid(t *testing.T) {
	t.Parallel()
	c, err := loadConfig("../../spool.example.yaml", envMap(nil))
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:8080", c.Addr)
	require.Equal(t, 30*time.Minute, c.Retention.Run)
	require.Equal(t, time.Minute, c.Retention.Runsync)
	require.Len(t, c.Endpoints, 1)
	ep := c.Endpoints[0]
	require.Equal(t, "echo", ep.Name)
	require.Equal(t, "config", ep.Source)
	require.Len(t, c.Keys, 1)
	require.True(t, c.Keys[0].ReadOnly)
}

func TestConfigDefaultsAndEnv(t *testing.T) {
	t.Parallel()
	// No file at all: defaults. (The default ./spool.yaml is looked up in the working directory,
	// which for this test is the package directory, where there is none.)
	c, err := loadConfig("", envMap(nil))
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:8080", c.Addr)
	require.Equal(t, "./spool-data", c.Data)
	require.Equal(t, 20*time.Second, c.Workers.TakeWait)
	require.Equal(t, 30*time.Second, c.Workers.LostAfter)

	p := writeConfig(t, "addr: 127.0.0.1:9000\nendpoints:\n  - name: a\n    workersMax: 0\n")
	c, err = loadConfig("", envMap(map[string]string{"SPOOL_CONFIG": p, "SPOOL_ADDR": "127.0.0.1:9100", "SPOOL_ADMIN_KEY": "k"}))
	require.NoError(t, err)
	require.Equal(t, p, c.Path)
	require.Equal(t, "127.0.0.1:9100", c.Addr, "the environment overrides the file")
	require.Equal(t, "k", c.AdminKey)
	require.Zero(t, c.Endpoints[0].WorkersMax, "an explicit 0 stays 0")
	require.Equal(t, 5, c.Endpoints[0].IdleTimeout, "an omitted setting keeps its default")
	require.EqualValues(t, 600000, c.Endpoints[0].ExecutionTimeoutMs)
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	cases := map[string]struct{ body, want string }{
		"unknown field":       {"adress: x\n", "field adress not found"},
		"misspelt endpoint":   {"endpoints:\n  - name: a\n    idleTimout: 10\n", "line 3: field idleTimout not found"},
		"misspelt worker":     {"endpoints:\n  - name: a\n    worker:\n      comand: x\n", "field comand not found"},
		"bad endpoint":        {"endpoints:\n  - name: a\n    executionTimeoutMs: 5000\n", "executionTimeoutMs must be greater than 5000"},
		"bad endpoint name":   {"endpoints:\n  - name: 'a b'\n", "name must be"},
		"duplicate endpoint":  {"endpoints:\n  - name: a\n  - name: a\n", "defined twice"},
		"plaintext key":       {"keys:\n  - name: k\n    scope: admin\n    hash: secret\n", "hash must be"},
		"bad scope":           {"keys:\n  - name: k\n    scope: root\n    hash: sha256:00\n", "scope must be"},
		"take wait too long":  {"workers:\n  takeWait: 90s\n", "takeWait"},
		"lost before a poll":  {"workers:\n  takeWait: 40s\n", "workers.lostAfter (30s) must be longer than workers.takeWait (40s)"},
		"bad log level":       {"logLevel: loud\n", "logLevel"},
		"negative limit":      {"limits:\n  run: -1\n", "limits.run"},
		"bad duration syntax": {"retention:\n  run: soon\n", "line 2: cannot unmarshal"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := loadConfig(writeConfig(t, c.body), envMap(nil))
			require.Error(t, err)
			require.Contains(t, err.Error(), c.want)
		})
	}
	_, err := loadConfig(filepath.Join(t.TempDir(), "missing.yaml"), envMap(nil))
	require.Error(t, err, "an explicitly named config file must exist")
}
