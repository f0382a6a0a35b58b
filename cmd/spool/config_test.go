package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/spool-run/spool"
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
	require.Len(t, c.Endpoints, 2)
	require.Equal(t, spool.NewEndpoint("echo"), withoutSource(c.Endpoints[0]),
		"the first endpoint shows every setting at its default")
	require.Equal(t, "config", c.Endpoints[0].Source)
	require.Equal(t, &spool.WorkerSpec{Command: "go", Args: []string{"run", "./examples/worker"}, Env: map[string]string{"LOG_LEVEL": "info"}, Dir: "."},
		c.Endpoints[1].Worker)
	require.Len(t, c.Keys, 1)
	require.True(t, c.Keys[0].ReadOnly)
}

func withoutSource(ep spool.Endpoint) spool.Endpoint {
	ep.Source = ""
	return ep
}

// TestExampleConfigIsComplete: every setting the config file can hold appears in
// spool.example.yaml (uncommented, so that the file also checks its values), at every depth.
func TestExampleConfigIsComplete(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../spool.example.yaml")
	require.NoError(t, err)
	// Settings shown switched off ("#: key: value") count, once switched on: they must parse.
	b = regexp.MustCompile(`(?m)^(\s*)#: `).ReplaceAll(b, []byte("$1"))
	all, err := loadConfig(writeConfig(t, string(b)), envMap(nil))
	require.NoError(t, err, "the example with every setting switched on")
	require.Equal(t, "ghcr.io/me/whisper-worker:1.2", all.Endpoints[2].Worker.Image)
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal(b, &doc))
	present := map[string]bool{}
	var walk func(n *yaml.Node, at string)
	walk = func(n *yaml.Node, at string) {
		switch n.Kind {
		case yaml.DocumentNode:
			walk(n.Content[0], at)
		case yaml.SequenceNode:
			for _, item := range n.Content {
				walk(item, at+"[]")
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				key := joinSetting(at, n.Content[i].Value)
				present[key] = true
				if !strings.HasSuffix(key, ".env") { // env holds the user's names, not settings
					walk(n.Content[i+1], key)
				}
			}
		}
	}
	walk(&doc, "")

	var want []string
	var settings func(t reflect.Type, at string)
	settings = func(t reflect.Type, at string) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			if t.Kind() == reflect.Slice {
				at += "[]"
			}
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || t == durationType {
			return
		}
		for name, ft := range settingsOf(t) {
			key := joinSetting(at, name)
			want = append(want, key)
			settings(ft, key)
		}
	}
	settings(reflect.TypeFor[fileConfig](), "")
	require.Greater(t, len(want), 60, "the walk finds the settings")
	for _, key := range want {
		require.True(t, present[strings.TrimSuffix(key, "[]")], "spool.example.yaml lacks the setting %s", key)
	}
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

// TestConfigMergeKeys: YAML merge keys share settings between sections, and what they merge is
// checked like the rest.
func TestConfigMergeKeys(t *testing.T) {
	t.Parallel()
	_, err := loadConfig(writeConfig(t, `
x-limits: &limits
  run: 1048576
limits:
  <<: *limits
  chunk: 2048
`+"x-ep: &ep\n  workersMax: 7\n  idleTimeout: 9s\nendpoints:\n  - <<: *ep\n    name: a\n"), envMap(nil))
	require.Error(t, err, "x- sections are not settings")
	require.Contains(t, err.Error(), `unknown setting "x-limits"`)

	c, err := loadConfig(writeConfig(t, "limits: &l\n  run: 1048576\nendpoints:\n  - &ep\n    name: a\n    workersMax: 7\n  - <<: *ep\n    name: b\n"), envMap(nil))
	require.NoError(t, err)
	require.EqualValues(t, 1048576, c.Limits.Run)
	require.Equal(t, 7, c.Endpoints[1].WorkersMax, "merged")
	require.Equal(t, "b", c.Endpoints[1].Name)

	_, err = loadConfig(writeConfig(t, "endpoints:\n  - &ep\n    name: a\n    workersMax: 7\n  - <<: *ep\n    name: b\n    idleTimout: 1s\n"), envMap(nil))
	require.ErrorContains(t, err, `unknown setting "idleTimout" in "endpoints[1]"`)
	_, err = loadConfig(writeConfig(t, "workers: &w\n  lostAftr: 5s\nlimits:\n  <<: *w\n"), envMap(nil))
	require.ErrorContains(t, err, `unknown setting "lostAftr"`)
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	cases := map[string]struct{ body, want string }{
		"unknown field":       {"adrs: x\n", `spool.yaml:1: unknown setting "adrs" (did you mean "addr"?)`},
		"wrong case":          {"loglevel: debug\n", `spool.yaml:1: unknown setting "loglevel" (did you mean "logLevel"?)`},
		"misspelt nested":     {"addr: x\nworkers:\n  lostAftr: 5s\n", `spool.yaml:3: unknown setting "lostAftr" in "workers" (did you mean "lostAfter"?)`},
		"nothing close":       {"workers:\n  zzzzzzzz: 1\n", `spool.yaml:2: unknown setting "zzzzzzzz" in "workers"` + "\x00"},
		"misspelt endpoint":   {"endpoints:\n  - name: a\n    idleTimout: 10s\n", `spool.yaml:3: unknown setting "idleTimout" in "endpoints[0]" (did you mean "idleTimeout"?)`},
		"misspelt worker":     {"endpoints:\n  - name: a\n    worker:\n      comand: x\n", `spool.yaml:4: unknown setting "comand" in "endpoints[0].worker" (did you mean "command"?)`},
		"the API's name":      {"endpoints:\n  - name: a\n    ttlMs: 5000\n", `spool.yaml:3: unknown setting "ttlMs" in "endpoints[0]" (in the config file it is "ttl", a duration such as 24h)`},
		"bad endpoint":        {"endpoints:\n  - name: a\n    executionTimeout: 5s\n", `spool.yaml:2: endpoints[0] ("a"): executionTimeout (in milliseconds) must be greater than 5000`},
		"idle in ms":          {"endpoints:\n  - name: a\n    idleTimeout: 1500ms\n", "idleTimeout must be whole seconds, got 1.5s"},
		"bad endpoint name":   {"endpoints:\n  - name: 'a b'\n", "name must be"},
		"duplicate endpoint":  {"endpoints:\n  - name: a\n  - name: a\n", "defined twice"},
		"plaintext key":       {"keys:\n  - name: k\n    scope: admin\n    hash: secret\n", "hash must be"},
		"bad scope":           {"keys:\n  - name: k\n    scope: root\n    hash: sha256:00\n", "scope must be"},
		"take wait too long":  {"workers:\n  takeWait: 90s\n", "spool.yaml: workers.takeWait must be between 1s and 90s"},
		"lost before a poll":  {"workers:\n  takeWait: 40s\n", "workers.lostAfter (30s) must be longer than workers.takeWait (40s)"},
		"bad log level":       {"logLevel: loud\n", "logLevel"},
		"negative limit":      {"limits:\n  run: -1\n", "limits.run"},
		"bad duration syntax": {"retention:\n  run: soon\n", `spool.yaml:2: "retention.run" must be a duration such as 30s, 5m or 1h30m, not "soon"`},
		"duration sans unit":  {"endpoints:\n  - name: a\n    idleTimeout: 5\n", `spool.yaml:3: "endpoints[0].idleTimeout": 5 has no unit; write a duration such as 5s, 5ms or 5m`},
		"number as text":      {"limits:\n  run: big\n", `spool.yaml:2: "limits.run" must be a whole number, not "big"`},
		"list as text":        {"workers:\n  gpus: 0,1\n", `spool.yaml:2: "workers.gpus" must be a list`},
		"section as value":    {"workers: fast\n", `spool.yaml:1: "workers" must be a mapping of settings`},
		"bad bool":            {"keys:\n  - name: k\n    readOnly: maybe\n", `spool.yaml:3: "keys[0].readOnly" must be true or false, not "maybe"`},
		"yaml syntax":         {"addr: [x\n", "spool.yaml:"},
		"duplicate setting":   {"addr: a\naddr: b\n", `spool.yaml:2: mapping key "addr" already defined at line 1`},
		"container url":       {"workers:\n  docker:\n    serverURL: host:8080\n", "workers.docker.serverURL must be an http(s) URL"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := writeConfig(t, c.body)
			_, err := loadConfig(p, envMap(nil))
			require.Error(t, err)
			msg := strings.ReplaceAll(err.Error(), p, "spool.yaml")
			if want, whole := strings.CutSuffix(c.want, "\x00"); whole {
				require.Equal(t, want, msg)
				return
			}
			require.Contains(t, msg, c.want)
			require.NotContains(t, msg, "struct", "no Go types")
			require.NotContains(t, msg, "main.", "no Go types")
		})
	}
	_, err := loadConfig(filepath.Join(t.TempDir(), "missing.yaml"), envMap(nil))
	require.Error(t, err, "an explicitly named config file must exist")
}

// TestLogFormat: the server logs text by default and JSON when asked, one object per line.
func TestLogFormat(t *testing.T) {
	t.Parallel()
	c, err := loadConfig("", envMap(map[string]string{"SPOOL_LOG_FORMAT": "json"}))
	require.NoError(t, err)
	var b strings.Builder
	newLogger(c, &b).Info("job finished", "job", "j1", "state", "COMPLETED")
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(b.String()), &m), b.String())
	require.Equal(t, "job finished", m["msg"])
	require.Equal(t, "j1", m["job"])

	c, err = loadConfig("", envMap(nil))
	require.NoError(t, err)
	b.Reset()
	newLogger(c, &b).Info("job finished", "job", "j1")
	require.Contains(t, b.String(), `msg="job finished" job=j1`)

	_, err = loadConfig("", envMap(map[string]string{"SPOOL_LOG_FORMAT": "xml"}))
	require.ErrorContains(t, err, "logFormat (or SPOOL_LOG_FORMAT, --log-format) must be text or json")
	out, err := exec.Command(spoolBin, "serve", "--check-config", "--data", t.TempDir(), "--log-format", "xml").CombinedOutput()
	require.Error(t, err, "the flag is checked too")
	require.Contains(t, string(out), "must be text or json")
	out, err = exec.Command(spoolBin, "serve", "--check-config", "--data", t.TempDir(), "--log-format", "json").CombinedOutput()
	require.NoError(t, err, "%s", out)
}
