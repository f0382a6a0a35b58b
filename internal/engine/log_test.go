package engine_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool/internal/engine"
)

// lockedBuffer is a bytes.Buffer for a logger's concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) records(t *testing.T) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
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
	var buf lockedBuffer
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
	for _, r := range buf.records(t) {
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
	buf.mu.Lock()
	defer buf.mu.Unlock()
	require.NotContains(t, buf.b.String(), canary, "no input or output in the log")
}
