package autoscale_test

import (
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/engine"
)

// TestHealthAndTickReadNoPayloads: with 1,000 jobs of 1 MB input each running, /health, the
// autoscaler's tick and /api/workers allocate a few hundred kilobytes, not the gigabyte that
// reading the jobs' payloads would take. Not parallel: it measures the process's allocations.
func TestHealthAndTickReadNoPayloads(t *testing.T) {
	const jobs, inputBytes = 1000, 1 << 20
	e := newEnv(t, envOpts{})
	e.endpoint("ep", func(ep *spool.Endpoint) { ep.WorkersMax = 0 }) // observed every tick, never started
	input := json.RawMessage(`"` + strings.Repeat("x", inputBytes-2) + `"`)
	var wg sync.WaitGroup
	errs := make(chan error, jobs)
	for i := range 32 {
		wg.Go(func() {
			for range jobs / 32 {
				if _, err := e.eng.Submit(e.ctx, engine.SubmitParams{Endpoint: "ep", Input: input}); err != nil {
					errs <- err
				}
			}
			if i < jobs%32 {
				if _, err := e.eng.Submit(e.ctx, engine.SubmitParams{Endpoint: "ep", Input: input}); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	taken := 0
	for w := 0; taken < jobs; w++ {
		worker := fmt.Sprint("w", w)
		require.NoError(t, e.fleet.Seen(e.ctx, "ep", worker))
		handouts, err := e.eng.Take(e.ctx, "ep", worker, 100, 0)
		require.NoError(t, err)
		require.NotEmpty(t, handouts)
		taken += len(handouts)
	}

	var health struct {
		Jobs struct {
			InProgress int `json:"inProgress"`
		} `json:"jobs"`
	}
	var workers struct {
		Workers []struct{ Jobs []string } `json:"workers"`
	}
	e.get("/v2/ep/health", &health) // warm up: the first requests set up connections and caches
	e.tick()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 3 {
		e.get("/v2/ep/health", &health)
		e.tick()
		e.get("/api/workers?endpoint=ep", &workers)
	}
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("3 × (/health, a tick, /api/workers) with %d running jobs of %d bytes: %d bytes allocated", jobs, inputBytes, allocated)
	require.Equal(t, jobs, health.Jobs.InProgress)
	held := 0
	for _, w := range workers.Workers {
		held += len(w.Jobs)
	}
	require.Equal(t, jobs, held)
	// Reading the payloads would take 3 GB; the bound leaves room for the rows, maps and JSON of
	// 1,000 jobs and catches a read of as few as 16 inputs.
	require.Less(t, allocated, uint64(16*inputBytes), "a job's payload was read")
}
