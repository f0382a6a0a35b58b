package e2e_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestJobLogs: the lines a worker Spool started writes about a job (runpod-python's JSON and
// text forms) and the progress it reports are kept per job and answered by
// GET /api/jobs/{id}/logs; lines about no job are not.
func TestJobLogs(t *testing.T) {
	t.Parallel()
	worker := buildExample(t, "./internal/autoscale/testdata/worker")
	s := startServer(t, serverOpts{Config: "endpoints:\n  - name: logs\n    workersMax: 1\n    worker:\n      command: " + worker + "\n"})
	r := s.do(t, "POST", "/v2/logs/runsync?wait=60000", adminHeader(s), []byte(`{"input":{"log":["loading model","step 1 | of 2"]}}`))
	require.Equal(t, 200, r.Code, "%s", r)
	var job struct{ ID, Status string }
	require.NoError(t, json.Unmarshal(r.Body, &job))
	require.Equal(t, "COMPLETED", job.Status, "%s", r)

	type entry struct{ At, Worker, Kind, Level, Message string }
	var got struct {
		ID      string
		Entries []entry
		Dropped int
	}
	// The lines reach the index from the worker's pipes, which may lag behind its result.
	eventually(t, 30*time.Second, func() bool {
		r = s.do(t, "GET", "/api/jobs/"+job.ID+"/logs", adminHeader(s), nil)
		require.Equal(t, 200, r.Code, "%s", r)
		require.NoError(t, json.Unmarshal(r.Body, &got))
		return len(got.Entries) >= 5
	}, func() string { return "not all lines indexed: " + r.String() })
	require.Equal(t, job.ID, got.ID)
	require.Zero(t, got.Dropped)
	count := map[string]int{}
	for _, e := range got.Entries {
		require.NotEmpty(t, e.Worker)
		require.NotEmpty(t, e.At)
		count[e.Kind+"/"+e.Level+"/"+e.Message]++
	}
	require.Equal(t, map[string]int{
		"log/INFO/loading model": 1, "log/INFO/step 1 | of 2": 1, // JSON lines
		"log/WARN/loading model": 1, "log/WARN/step 1 | of 2": 1, // text lines
		`progress//{"logged":2}`: 1,
	}, count)

	// A job with no lines has an empty log; an unknown job is a 404; the route is the admin's.
	r = s.do(t, "GET", "/api/jobs/no-such-job-1/logs", adminHeader(s), nil)
	require.Equal(t, http.StatusNotFound, r.Code, "%s", r)
	r = s.do(t, "GET", "/api/jobs/"+job.ID+"/logs", http.Header{"Authorization": {"Bearer " + s.Keys.Client}}, nil)
	require.Equal(t, http.StatusForbidden, r.Code, "%s", r)
}
