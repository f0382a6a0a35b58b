package spoolworker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"iter"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool/spoolworker"
)

// modes is a handler for local test mode: it switches on input.mode.
var modes = spoolworker.HandlerFunc(func(ctx context.Context, job *spoolworker.Job) (any, error) {
	var in struct {
		Mode string `json:"mode"`
		Name string `json:"name"`
	}
	if err := job.Decode(&in); err != nil {
		return nil, err
	}
	switch in.Mode {
	case "error":
		return nil, errors.New("it broke")
	case "stream":
		if err := job.Progress("halfway"); err != nil {
			return nil, err
		}
		return iter.Seq[string](func(yield func(string) bool) {
			_ = yield("a") && yield("b")
		}), nil
	case "timeout":
		<-ctx.Done()
		return nil, context.Cause(ctx)
	case "id":
		s3, ok := job.S3Config()
		return map[string]any{"id": job.ID, "s3": ok && s3.BucketName == "b"}, nil
	}
	return map[string]string{"hello": in.Name}, nil
})

// TestRunLocal is runpod-python's --test_input: the handler runs once with no server and the
// result is printed as the job-done body.
func TestRunLocal(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, input, out, err string
	}{
		{"value", `{"input":{"name":"Ada"}}`, `{"output":{"hello":"Ada"}}`, ""},
		{"error", `{"input":{"mode":"error"}}`, `{"error":"it broke"}`, "spoolworker: job local_test failed: it broke"},
		{"stream aggregated", `{"input":{"mode":"stream"}}`, `{"output":["a","b"]}`, ""},
		{"job fields", `{"id":"mine","input":{"mode":"id"},"s3Config":{"bucketName":"b"}}`, `{"output":{"id":"mine","s3":true}}`, ""},
		{"default id", `{"input":{"mode":"id"}}`, `{"output":{"id":"local_test","s3":false}}`, ""},
		{"no input", `{"nothing":1}`, "", `test input has no "input"`},
		{"null input", `{"input":null}`, "", `test input has no "input"`},
		{"not an object", `[1]`, "", "test input"},
		{"timeout", `{"input":{"mode":"timeout"},"policy":{"executionTimeout":20}}`, "", "execution timeout ran out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			err := spoolworker.RunLocal(context.Background(), modes, json.RawMessage(tc.input), &out)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
			} else {
				require.NoError(t, err)
			}
			if tc.out != "" {
				require.Equal(t, tc.out+"\n", out.String())
			} else {
				require.Empty(t, out.String())
			}
		})
	}
}

func TestRunLocalPanic(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	err := spoolworker.RunLocal(context.Background(), spoolworker.HandlerFunc(func(context.Context, *spoolworker.Job) (any, error) {
		var m map[string]int
		//lint:ignore SA5000 the panic is what this test recovers from
		m["boom"]++ // assignment to a nil map
		return nil, nil
	}), json.RawMessage(`{"input":{}}`), &out)
	require.ErrorContains(t, err, "assignment to entry in nil map")
	var body struct{ Error string }
	require.NoError(t, json.Unmarshal(out.Bytes(), &body))
	var rep map[string]string
	require.NoError(t, json.Unmarshal([]byte(body.Error), &rep))
	require.Equal(t, "runtime.plainError", rep["error_type"])
	require.Equal(t, "unknown", rep["worker_id"])
	require.Equal(t, "unknown", rep["hostname"])
	require.Contains(t, rep["error_traceback"], "TestRunLocalPanic")
}

// TestStartLocal: Start runs local test mode with --test_input, whatever the environment.
func TestStartLocal(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--test_input", `{"input":{"name":"Ada"}}`},
		{"-v", `--test_input={"input":{"name":"Ada"}}`},
	} {
		var out bytes.Buffer
		env := map[string]string{spoolworker.EnvTakeURL: "http://127.0.0.1:1/v2/ep/job-take/$ID?"}
		err := spoolworker.Start(context.Background(), modes, args, func(k string) string { return env[k] },
			spoolworker.Config{LocalOutput: &out})
		require.NoError(t, err)
		require.Equal(t, `{"output":{"hello":"Ada"}}`+"\n", out.String())
	}
	err := spoolworker.Start(context.Background(), modes, []string{"--test_input"}, func(string) string { return "" }, spoolworker.Config{})
	require.ErrorContains(t, err, "--test_input needs a JSON value")
}

// TestStartTestInputFile: without RUNPOD_WEBHOOK_GET_JOB, Start reads test_input.json from the
// working directory, and fails when there is none. (Not parallel: it changes directory.)
func TestStartTestInputFile(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	noEnv := func(string) string { return "" }
	err := spoolworker.Start(context.Background(), modes, nil, noEnv, spoolworker.Config{})
	require.ErrorContains(t, err, "RUNPOD_WEBHOOK_GET_JOB is not set and there is no --test_input and no test_input.json")

	require.NoError(t, os.WriteFile(filepath.Join(dir, spoolworker.TestInputFile), []byte(`{"input":{"name":"file"}}`), 0o600))
	var out bytes.Buffer
	require.NoError(t, spoolworker.Start(context.Background(), modes, nil, noEnv, spoolworker.Config{LocalOutput: &out}))
	require.Equal(t, `{"output":{"hello":"file"}}`+"\n", out.String())
}

func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	runpod := map[string]string{
		"RUNPOD_WEBHOOK_GET_JOB":     "https://api.runpod.ai/v2/ep1/job-take/$ID?gpu=NVIDIA+H200",
		"RUNPOD_WEBHOOK_POST_OUTPUT": "https://api.runpod.ai/v2/ep1/job-done/$RUNPOD_POD_ID/$ID?gpu=NVIDIA+H200",
		"RUNPOD_WEBHOOK_POST_STREAM": "https://api.runpod.ai/v2/ep1/job-stream/$RUNPOD_POD_ID/$ID?gpu=NVIDIA+H200",
		"RUNPOD_WEBHOOK_PING":        "https://api.runpod.ai/v2/ep1/ping/$RUNPOD_POD_ID?gpu=NVIDIA+H200",
		"RUNPOD_PING_INTERVAL":       "2500",
		"RUNPOD_POD_ID":              "pod-7",
		"RUNPOD_AI_API_KEY":          "rpa_key",
		"RUNPOD_POD_HOSTNAME":        "host-7",
	}
	with := func(over map[string]string) func(string) string {
		return func(k string) string {
			if v, ok := over[k]; ok {
				return v
			}
			return runpod[k]
		}
	}
	cfg, err := spoolworker.ConfigFromEnv(with(nil))
	require.NoError(t, err)
	require.Equal(t, spoolworker.Config{
		TakeURL:      runpod["RUNPOD_WEBHOOK_GET_JOB"],
		DoneURL:      runpod["RUNPOD_WEBHOOK_POST_OUTPUT"],
		StreamURL:    runpod["RUNPOD_WEBHOOK_POST_STREAM"],
		PingURL:      runpod["RUNPOD_WEBHOOK_PING"],
		PingInterval: 2 * time.Second, // integer-divided, as runpod-python does
		WorkerID:     "pod-7",
		APIKey:       "rpa_key",
		Hostname:     "host-7",
	}, cfg)
	w, err := spoolworker.New(cfg, modes)
	require.NoError(t, err)
	require.Equal(t, "pod-7", w.ID())

	for _, tc := range []struct {
		name         string
		over         map[string]string
		interval     time.Duration
		pings, newID bool
	}{
		{"unset interval", map[string]string{"RUNPOD_PING_INTERVAL": ""}, 10 * time.Second, true, false},
		{"under a second", map[string]string{"RUNPOD_PING_INTERVAL": "500"}, time.Second, true, false},
		{"no pod id", map[string]string{"RUNPOD_POD_ID": ""}, 2 * time.Second, false, true},
		{"no key", map[string]string{"RUNPOD_AI_API_KEY": ""}, 2 * time.Second, false, false},
	} {
		cfg, err := spoolworker.ConfigFromEnv(with(tc.over))
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.interval, cfg.PingInterval, tc.name)
		require.Equal(t, tc.pings, cfg.PingURL != "", tc.name)
		if tc.newID {
			require.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, cfg.WorkerID)
		} else {
			require.Equal(t, "pod-7", cfg.WorkerID)
		}
	}
	_, err = spoolworker.ConfigFromEnv(with(map[string]string{"RUNPOD_PING_INTERVAL": "10s"}))
	require.ErrorContains(t, err, "RUNPOD_PING_INTERVAL")
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	good := spoolworker.ConfigFor("http://127.0.0.1:8080", "ep", "k")
	_, err := spoolworker.New(good, nil)
	require.ErrorContains(t, err, "Handler")
	for _, tc := range []struct {
		name string
		edit func(*spoolworker.Config)
		err  string
	}{
		{"no take URL", func(c *spoolworker.Config) { c.TakeURL = "" }, "TakeURL is required"},
		{"no done URL", func(c *spoolworker.Config) { c.DoneURL = "" }, "DoneURL is required"},
		{"not http", func(c *spoolworker.Config) { c.PingURL = "ftp://x/ping" }, "PingURL must be an http(s) URL"},
		{"negative concurrency", func(c *spoolworker.Config) { c.Concurrency = -1 }, "Concurrency"},
		{"negative backoff", func(c *spoolworker.Config) { c.RetryBackoff = []time.Duration{-1} }, "RetryBackoff"},
	} {
		cfg := good
		tc.edit(&cfg)
		_, err := spoolworker.New(cfg, modes)
		require.ErrorContains(t, err, tc.err, tc.name)
	}
	w, err := spoolworker.New(good, modes)
	require.NoError(t, err)
	require.Equal(t, 1, w.Concurrency())
}

// TestStartWorkerFromEnv runs Start with a RunPod-shaped environment (templates with a query
// part) against the real server, and checks every URL it builds from the templates.
func TestStartWorkerFromEnv(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOpts{})
	base := s.proxy.URL() + "/v2/ep/"
	env := map[string]string{
		"RUNPOD_WEBHOOK_GET_JOB":     base + "job-take/$ID?gpu=X",
		"RUNPOD_WEBHOOK_POST_OUTPUT": base + "job-done/$RUNPOD_POD_ID/$ID?gpu=X",
		"RUNPOD_WEBHOOK_POST_STREAM": base + "job-stream/$RUNPOD_POD_ID/$ID?gpu=X",
		"RUNPOD_WEBHOOK_PING":        base + "ping/$RUNPOD_POD_ID?gpu=X",
		"RUNPOD_PING_INTERVAL":       "1000",
		"RUNPOD_POD_ID":              "pod-1",
		"RUNPOD_AI_API_KEY":          s.workerKey,
	}
	ctx, cancel := context.WithCancel(s.ctx)
	done := make(chan error, 1)
	go func() {
		done <- spoolworker.Start(ctx, modes, nil, func(k string) string { return env[k] },
			spoolworker.Config{Logger: testLogger(), AggregateStream: true})
	}()
	id := s.submit(`{"input":{"mode":"stream"}}`)
	st := s.final(id)
	require.Equal(t, "COMPLETED", st.Status)
	require.JSONEq(t, `["a","b"]`, string(st.Output))
	ping := s.proxy.waitFor(func(r record) bool { return r.is("ping", "") && r.Status != 0 })
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(waitLimit):
		t.Fatal("Start did not return")
	}

	require.Equal(t, "/v2/ep/ping/pod-1", ping.Path)
	require.Equal(t, "gpu=X", strings.SplitN(ping.Query, "&", 2)[0])
	require.Contains(t, ping.Query, "&runpod_version="+url.QueryEscape(spoolworker.Version))
	take := s.proxy.waitFor(func(r record) bool { return r.is("job-take", "") })
	require.Equal(t, "/v2/ep/job-take/pod-1", take.Path)
	require.Equal(t, "gpu=X&job_in_progress=0&include=attempt", take.Query)
	stop := s.proxy.waitFor(func(r record) bool { return r.is("job-stop", "") })
	require.Equal(t, "/v2/ep/job-stop/pod-1", stop.Path)
	require.Equal(t, "gpu=X", stop.Query)
	var got []string
	for _, r := range s.proxy.filter(func(r record) bool { return r.is("job-done", id) || r.is("job-stream", id) }) {
		got = append(got, r.Path+"?"+r.Query+" "+string(r.Body))
	}
	require.Equal(t, []string{
		"/v2/ep/job-done/pod-1/" + id + `?gpu=X&isStream=false&attempt=1 {"status":"IN_PROGRESS","output":"halfway"}`,
		"/v2/ep/job-stream/pod-1/" + id + `?gpu=X&isStream=false&attempt=1 {"output":"a"}`,
		"/v2/ep/job-stream/pod-1/" + id + `?gpu=X&isStream=false&attempt=1 {"output":"b"}`,
		"/v2/ep/job-done/pod-1/" + id + `?gpu=X&isStream=true&attempt=1 {"output":["a","b"]}`,
	}, got)
}
