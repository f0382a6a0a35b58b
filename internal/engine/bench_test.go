package engine_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/store/sqlitestore"
)

// BenchmarkSubmitTakeDone pushes b.N jobs through submit → take → done on the SQLite store with the
// wall clock: clients submit from b.RunParallel goroutines while 8 workers take and complete them.
// It reports jobs/s; compare runs of the same machine, never absolute numbers across machines.
func BenchmarkSubmitTakeDone(b *testing.B) {
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(b.TempDir(), "spool.db"))
	require.NoError(b, err)
	defer st.Close()
	eng, err := engine.New(engine.Config{Store: st})
	require.NoError(b, err)
	require.NoError(b, eng.Start(ctx))
	defer eng.Stop()
	_, _, err = eng.PutEndpoint(ctx, spool.NewEndpoint("bench"))
	require.NoError(b, err)

	done := make(chan struct{}, b.N)
	workCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			worker := "w" + string(rune('a'+w))
			for workCtx.Err() == nil {
				handouts, err := eng.Take(workCtx, "bench", worker, 4, 100*time.Millisecond)
				if err != nil {
					return
				}
				for _, h := range handouts {
					j := h.Job
					if _, err := eng.Done(ctx, engine.DoneParams{Endpoint: "bench", WorkerID: worker, JobID: j.ID, Output: j.Input}); err != nil {
						b.Error(err)
						return
					}
					done <- struct{}{}
				}
			}
		}()
	}

	// Many concurrent clients, as a server sees them: group commit needs concurrency to group.
	b.SetParallelism(16)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := eng.Submit(ctx, engine.SubmitParams{Endpoint: "bench", Input: json.RawMessage(`{"x":1}`)}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	for range b.N {
		<-done
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	wg.Wait()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "jobs/s")
}
