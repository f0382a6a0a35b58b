package metrics_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/metrics"
	"github.com/spool-run/spool/store/sqlitestore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	require.Equal(t, 200, rec.Code)
	b, err := io.ReadAll(rec.Body)
	require.NoError(t, err)
	return string(b)
}

func TestJobLifecycleIsCounted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "spool.db"))
	require.NoError(t, err)
	defer st.Close()
	m := metrics.New(metrics.Config{
		Store:      st,
		Endpoints:  func() []string { return []string{"ep"} },
		StoreStats: func() (int64, int64) { s := st.Stats(); return s.Batches, s.Ops },
	})
	eng, err := engine.New(engine.Config{Store: st, Observer: m})
	require.NoError(t, err)
	require.NoError(t, eng.Start(ctx))
	defer eng.Stop()
	_, _, err = eng.PutEndpoint(ctx, spool.NewEndpoint("ep"))
	require.NoError(t, err)

	const canary = "canary-secret-4f1d"
	s3 := json.RawMessage(`{"accessId":"` + canary + `","accessSecret":"` + canary + `","bucketName":"b","endpointUrl":"http://127.0.0.1:9"}`)
	a, err := eng.Submit(ctx, engine.SubmitParams{Endpoint: "ep", Input: json.RawMessage(`1`), S3Config: s3})
	require.NoError(t, err)
	_, err = eng.Submit(ctx, engine.SubmitParams{Endpoint: "ep", Input: json.RawMessage(`2`)})
	require.NoError(t, err)
	handouts, err := eng.Take(ctx, "ep", "w", 1, 0)
	require.NoError(t, err)
	require.Equal(t, a.ID, handouts[0].Job.ID)
	_, err = eng.Done(ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w", JobID: a.ID, Error: new(string)})
	require.NoError(t, err)

	out := scrape(t, m)
	require.Contains(t, out, `spool_jobs_submitted_total{endpoint="ep"} 2`)
	require.Contains(t, out, `spool_jobs_started_total{endpoint="ep"} 1`)
	require.Contains(t, out, `spool_jobs_finished_total{endpoint="ep",state="FAILED"} 1`)
	require.Contains(t, out, `spool_jobs{endpoint="ep",state="IN_QUEUE"} 1`)
	require.Contains(t, out, `spool_jobs{endpoint="ep",state="FAILED"} 1`)
	require.Contains(t, out, "spool_store_commits_total")
	require.Regexp(t, `spool_build_info\{goversion="go[^"]+",revision="[^"]*",version="[^"]+"\} 1`, out)
	require.NotContains(t, out, canary)
	require.NotContains(t, out, a.ID, "job ids are not labels")
}
