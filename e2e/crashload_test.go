package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestCrashUnderLoadLosesNothingAcknowledged kills the server with SIGKILL while clients submit
// and a worker takes and completes jobs, so the kill lands in the middle of group commits. Every
// submission that got a 200 must exist after the restart, and every job-done that got a 200 must
// still be COMPLETED with its output: a 2xx is sent only after the commit (docs/contract.md §2
// Durability).
func TestCrashUnderLoadLosesNothingAcknowledged(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverOpts{Config: "endpoints:\n  - name: ep\n"})
	client := http.Header{"Authorization": {"Bearer " + srv.Keys.Admin}, "Content-Type": {"application/json"}}
	worker := http.Header{"Authorization": {srv.Keys.Worker}}

	var (
		mu        sync.Mutex
		submitted []string
		completed = map[string]string{}
		wg        sync.WaitGroup
	)
	stop := make(chan struct{})
	// Eight clients submit until the server dies (bounded: at most 2000 requests each).
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				select {
				case <-stop:
					return
				default:
				}
				body := []byte(fmt.Sprintf(`{"input":{"c":%d,"i":%d}}`, c, i))
				r, err := srv.try("POST", "/v2/ep/run", client, body, 10*time.Second)
				if err != nil || r.Code != http.StatusOK {
					return // the server is gone
				}
				var v struct{ ID string }
				if json.Unmarshal(r.Body, &v) != nil || v.ID == "" {
					return
				}
				mu.Lock()
				submitted = append(submitted, v.ID)
				mu.Unlock()
			}
		}()
	}
	// One worker takes batches and completes them.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 2000 {
			select {
			case <-stop:
				return
			default:
			}
			r, err := srv.try("GET", "/v2/ep/job-take-batch/w1?batch_size=8", worker, nil, 10*time.Second)
			if err != nil || (r.Code != http.StatusOK && r.Code != http.StatusNoContent) {
				return
			}
			if r.Code == http.StatusNoContent {
				continue
			}
			var jobs []struct {
				ID    string
				Input json.RawMessage
			}
			if json.Unmarshal(r.Body, &jobs) != nil {
				return
			}
			for _, j := range jobs {
				out := fmt.Sprintf(`{"output":{"echo":%s}}`, j.Input)
				r, err := srv.try("POST", "/v2/ep/job-done/w1/"+j.ID, worker, []byte(out), 10*time.Second)
				if err != nil || r.Code != http.StatusOK {
					return
				}
				mu.Lock()
				completed[j.ID] = string(j.Input)
				mu.Unlock()
			}
		}
	}()

	// Kill once enough work is acknowledged, while the load is still running.
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		n, m := len(submitted), len(completed)
		mu.Unlock()
		if n >= 300 && m >= 50 {
			break
		}
		require.True(t, time.Now().Before(deadline), "load too slow: %d submitted, %d completed", n, m)
		// Wait for progress on the server instead of sleeping: a long-poll that returns quickly.
		srv.try("GET", "/healthz", nil, nil, time.Second)
	}
	srv.Kill()
	close(stop)
	wg.Wait()

	srv = srv.Restart(t)
	mu.Lock()
	defer mu.Unlock()
	t.Logf("acknowledged before the kill: %d submissions, %d results", len(submitted), len(completed))
	for _, id := range submitted {
		r := srv.do(t, "GET", "/v2/ep/status/"+id, client, nil)
		require.Equal(t, http.StatusOK, r.Code, "acknowledged job %s lost: %s", id, r)
	}
	for id, in := range completed {
		r := srv.do(t, "GET", "/v2/ep/status/"+id, client, nil)
		require.Equal(t, http.StatusOK, r.Code, "completed job %s lost: %s", id, r)
		var v struct {
			Status string
			Output struct{ Echo json.RawMessage }
		}
		require.NoError(t, json.Unmarshal(r.Body, &v))
		require.Equal(t, "COMPLETED", v.Status, "acknowledged result of %s lost: %s", id, r)
		require.JSONEq(t, in, string(v.Output.Echo))
	}
}
