package engine_test

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool/internal/engine"
)

// records decodes the JSON lines a logger wrote.
func records(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), line)
		out = append(out, m)
	}
	return out
}

// TestJobTransitionsAreLogged: a job's acceptance is a debug line; its end, and a return to the
// queue, are one info line each, with its id, endpoint and worker; never its input or output.
func TestJobTransitionsAreLogged(t *testing.T) {
	t.Parallel()
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := newFixture(t, func(c *engine.Config) { c.Logger = log })
	const canary = "canary-log-71bc"
	j := f.submit(t, engine.SubmitParams{Endpoint: "ep", Input: json.RawMessage(`{"secret":"` + canary + `"}`)})
	f.takeOne(t, "w1")
	f.clock.Advance(1500 * time.Millisecond)
	_, err := f.eng.LoseWorkerJobs(f.ctx, "w1", "it stopped answering")
	require.NoError(t, err)
	f.takeOne(t, "w2")
	out := json.RawMessage(`{"echo":"` + canary + `"}`)
	_, err = f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w2", JobID: j.ID, Output: out})
	require.NoError(t, err)

	var got []string
	for _, r := range records(t, buf.String()) {
		if r["job"] != j.ID {
			continue
		}
		switch r["msg"] {
		case "job accepted":
			require.Equal(t, "DEBUG", r["level"])
			got = append(got, "accepted")
		case "job requeued":
			require.Equal(t, "INFO", r["level"])
			require.Equal(t, "w1", r["worker"])
			require.Equal(t, "lost_worker", r["reason"])
			got = append(got, "requeued")
		case "job finished":
			require.Equal(t, "INFO", r["level"])
			require.Equal(t, "ep", r["endpoint"])
			require.Equal(t, "COMPLETED", r["state"])
			require.Equal(t, "w2", r["worker"])
			require.Contains(t, r, "executionMs")
			got = append(got, "finished")
		}
	}
	require.Equal(t, []string{"accepted", "requeued", "finished"}, got)
	require.NotContains(t, buf.String(), canary, "no input or output in the log")
}
