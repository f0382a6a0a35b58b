package pgstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
	"github.com/spool-run/spool/store/pgstore"
	"github.com/spool-run/spool/store/pgstore/pgtest"
	"github.com/spool-run/spool/store/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var t0 = time.UnixMilli(1_700_000_000_000)

func openAt(t testing.TB, url string) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(context.Background(), url)
	require.NoError(t, err)
	return s
}

// newStore opens a store in a fresh schema; it is closed, then the schema dropped, when t ends.
func newStore(t testing.TB) *pgstore.Store {
	t.Helper()
	s := openAt(t, pgtest.URL(t))
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func job(id string) *spool.Job {
	return &spool.Job{
		ID: id, Endpoint: "ep", State: spool.StateInQueue, Input: json.RawMessage(`{"n":1}`),
		Policy:    spool.Policy{ExecutionTimeoutMs: spool.DefaultExecutionTimeoutMs, TTLMs: spool.DefaultTTLMs},
		CreatedAt: t0, QueuedAt: t0, ExpiresAt: t0.Add(time.Hour), RetentionMs: 60_000,
	}
}

// claimChange is the change of a claim by worker w.
func claimChange(w string) store.JobChange {
	return store.JobChange{Set: store.SetState | store.SetWorkerID | store.IncAttempt | store.SetTakenAt | store.SetTimeoutAt,
		State: spool.StateInProgress, WorkerID: w, TakenAt: t0}
}

func TestConformance(t *testing.T) {
	pgtest.BaseURL(t) // skips without a server
	storetest.Run(t, func(t *testing.T) store.Store {
		// storetest closes the store in a cleanup registered after pgtest's, so before the
		// schema is dropped.
		return openAt(t, pgtest.URL(t))
	})
}

// TestReopen checks that what a store acknowledged is there for the next store on the same
// schema, and that opening an up-to-date schema applies no migration again.
func TestReopen(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := pgtest.URL(t)

	s := openAt(t, url)
	for i := range 3 {
		require.NoError(t, s.CreateJob(ctx, store.CreateJobParams{Job: job(fmt.Sprint("j", i))}))
	}
	_, err := s.AppendChunk(ctx, store.AppendChunkParams{ID: "j0", Expect: store.Expect{State: spool.StateInQueue}, Data: json.RawMessage(`"chunk"`)})
	require.NoError(t, err)
	_, err = s.UpdateJobs(ctx, store.UpdateJobsParams{Now: t0, Updates: []store.JobUpdate{{
		ID: "j1", Expect: store.Expect{State: spool.StateInQueue},
		Change: store.JobChange{Set: store.SetState | store.SetOutput, State: spool.StateCompleted, Output: json.RawMessage(`42`)},
	}}})
	require.NoError(t, err)
	updated, err := s.GetJob(ctx, store.GetJobParams{ID: "j1", With: store.AllPayloads})
	require.NoError(t, err)
	ep := spool.NewEndpoint("ep")
	ep.CreatedAt, ep.UpdatedAt = t0, t0
	require.NoError(t, s.PutEndpoint(ctx, ep))
	require.NoError(t, s.PutKey(ctx, spool.Key{ID: "k", Hash: "h", Scope: spool.ScopeAdmin, CreatedAt: t0}))
	require.NoError(t, s.TouchWorker(ctx, store.TouchWorkerParams{ID: "w", Endpoint: "ep", Now: t0}))
	require.NoError(t, s.CreateDelivery(ctx, store.CreateDeliveryParams{Delivery: spool.WebhookDelivery{
		ID: "msg", JobID: "j1", Endpoint: "ep", URL: "https://example.com/", CreatedAt: t0,
	}}))
	require.NoError(t, s.Close())

	for range 2 {
		s = openAt(t, url)
		require.Equal(t, pgstore.Migrations, schemaVersions(t, s), "each migration applied once")

		jobs, err := s.ListJobs(ctx, store.ListJobsParams{})
		require.NoError(t, err)
		require.Len(t, jobs, 3)
		got, err := s.GetJob(ctx, store.GetJobParams{ID: "j1", With: store.AllPayloads})
		require.NoError(t, err)
		require.Equal(t, updated, got)
		_, chunks, err := s.ReadChunks(ctx, store.ReadChunksParams{ID: "j0"})
		require.NoError(t, err)
		require.Equal(t, []spool.Chunk{{Seq: 1, Data: json.RawMessage(`"chunk"`)}}, chunks)
		_, err = s.GetEndpoint(ctx, "ep")
		require.NoError(t, err)
		keys, err := s.ListKeys(ctx)
		require.NoError(t, err)
		require.Len(t, keys, 1)
		workers, err := s.ListWorkers(ctx, store.ListWorkersParams{})
		require.NoError(t, err)
		require.Len(t, workers, 1)
		ds, err := s.ListDeliveries(ctx, "j1")
		require.NoError(t, err)
		require.Len(t, ds, 1)
		require.NoError(t, s.Close())
	}
}

// schemaVersions checks that the applied migrations are 1 to n, each once, and returns n.
func schemaVersions(t *testing.T, s *pgstore.Store) int {
	t.Helper()
	var n, lowest, highest int
	require.NoError(t, s.QueryRow(t.Context(),
		"SELECT COUNT(*), COALESCE(MIN(version), 0), COALESCE(MAX(version), 0) FROM spool_schema_version").Scan(&n, &lowest, &highest))
	require.Equal(t, 1, lowest)
	require.Equal(t, n, highest)
	return n
}

// TestMigrationRace opens stores on a fresh schema at once: the advisory lock lets one migrate,
// and the others find the schema up to date (a second CREATE TABLE would fail their Open).
func TestMigrationRace(t *testing.T) {
	t.Parallel()
	const racers = 6
	url := pgtest.URL(t)
	stores := make([]*pgstore.Store, racers)
	errs := make([]error, racers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range racers {
		wg.Go(func() {
			<-start
			stores[i], errs[i] = pgstore.Open(t.Context(), url)
		})
	}
	close(start)
	wg.Wait()
	for _, s := range stores {
		if s != nil {
			t.Cleanup(func() { require.NoError(t, s.Close()) })
		}
	}
	require.NoError(t, errors.Join(errs...))
	require.Equal(t, pgstore.Migrations, schemaVersions(t, stores[0]))
	// Every store works on the one schema.
	for i, s := range stores {
		require.NoError(t, s.CreateJob(t.Context(), store.CreateJobParams{Job: job(fmt.Sprint("j", i))}))
	}
	jobs, err := stores[0].ListJobs(t.Context(), store.ListJobsParams{})
	require.NoError(t, err)
	require.Len(t, jobs, racers)
}

// TestSchemasAreApart: stores in two schemas of one database see only their own jobs, and
// migrate without waiting for each other.
func TestSchemasAreApart(t *testing.T) {
	t.Parallel()
	a, b := newStore(t), newStore(t)
	require.NoError(t, a.CreateJob(t.Context(), store.CreateJobParams{Job: job("j")}))
	require.NoError(t, b.CreateJob(t.Context(), store.CreateJobParams{Job: job("j")}), "no conflict across schemas")
	jobs, err := b.ListJobs(t.Context(), store.ListJobsParams{})
	require.NoError(t, err)
	require.Len(t, jobs, 1)
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	require.NoError(t, openAt(t, url).Close())
	pgtest.Exec(t, url, fmt.Sprintf("UPDATE spool_schema_version SET version = %d WHERE version = %d",
		pgstore.Migrations+1, pgstore.Migrations))

	_, err := pgstore.Open(t.Context(), url)
	require.ErrorContains(t, err, fmt.Sprintf("schema version %d is newer than this binary knows (%d)",
		pgstore.Migrations+1, pgstore.Migrations))
}

// TestOpenRefusesAsynchronousCommit: with synchronous_commit off, a commit PostgreSQL
// acknowledges can be lost in a crash; Spool acknowledges only durable writes.
func TestOpenRefusesAsynchronousCommit(t *testing.T) {
	t.Parallel()
	_, err := pgstore.Open(t.Context(), pgtest.WithParam(pgtest.URL(t), "synchronous_commit", "off"))
	require.ErrorContains(t, err, "synchronous_commit is off")

	s := openAt(t, pgtest.WithParam(pgtest.URL(t), "synchronous_commit", "local"))
	require.NoError(t, s.Close())
}

// TestOpenErrorsHidePassword: whatever fails, parsing or connecting, the error names where the
// store was to connect and never shows the password. No server is needed: port 1 of the loopback
// refuses connections.
func TestOpenErrorsHidePassword(t *testing.T) {
	t.Parallel()
	const pw = "Sup3r-s3cret_pw"
	for name, connString := range map[string]string{
		"refused":             "postgres://spool:" + pw + "@127.0.0.1:1/spooldb?sslmode=disable&connect_timeout=5",
		"refused, postgresql": "postgresql://spool:" + pw + "@127.0.0.1:1/spooldb?sslmode=disable",
		"escaped":             "postgres://spool:" + strings.Replace(pw, "-", "%2D", 1) + "@127.0.0.1:1/spooldb?sslmode=disable",
		"query parameter":     "postgres://spool@127.0.0.1:1/spooldb?sslmode=disable&password=" + pw,
		"bad port":            "postgres://spool:" + pw + "@127.0.0.1:notaport/spooldb",
		"bad escape":          "postgres://spool:" + pw + "%zz@127.0.0.1:1/spooldb",
		"bad parameter":       "postgres://spool:" + pw + "@127.0.0.1:1/spooldb?sslmode=sometimes",
		"bad pool size":       "postgres://spool:" + pw + "@127.0.0.1:1/spooldb?pool_max_conns=none",
		"key=value refused":   "host=127.0.0.1 port=1 user=spool password=" + pw + " dbname=spooldb sslmode=disable",
		"key=value quoted":    "host=127.0.0.1 port=1 user=spool password='" + pw + " x' dbname=spooldb sslmode=disable",
		"key=value bad":       "host=127.0.0.1 port=nope user=spool password=" + pw + " dbname=spooldb",
		"key=value unclosed":  "host=127.0.0.1 user=spool password='" + pw,
		"not a URL":           "postgres://spool:" + pw + "@[::1",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, err := pgstore.Open(t.Context(), connString)
			if s != nil {
				require.NoError(t, s.Close())
			}
			require.Error(t, err)
			t.Log(err)
			require.NotContains(t, err.Error(), pw)
			require.NotContains(t, err.Error(), "s3cret")
			require.Contains(t, err.Error(), "open postgres store")
			require.NotContains(t, fmt.Sprintf("%+v", err), pw)
			for e := errors.Unwrap(err); e != nil; e = errors.Unwrap(e) {
				require.NotContains(t, e.Error(), pw)
			}
		})
	}
	t.Run("says where", func(t *testing.T) {
		t.Parallel()
		_, err := pgstore.Open(t.Context(), "postgres://spool:"+pw+"@127.0.0.1:1/spooldb?sslmode=disable")
		require.ErrorContains(t, err, "postgres://spool@127.0.0.1:1/spooldb")
	})
}

// TestOpenCanceled: an Open whose context has ended says so, through errors.Is.
func TestOpenCanceled(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := pgstore.Open(ctx, "postgres://spool:pw@127.0.0.1:1/spooldb?sslmode=disable")
	require.ErrorIs(t, err, context.Canceled)
}

// createJobs creates n jobs from concurrent goroutines.
func createJobs(t testing.TB, s store.Store, n int, mk func(i int) *spool.Job) {
	t.Helper()
	const writers = 8
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := w; i < n && errs[w] == nil; i += writers {
				errs[w] = s.CreateJob(context.Background(), store.CreateJobParams{Job: mk(i)})
			}
		})
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
}

// fillForPlans gives the planner a table worth planning: thousands of jobs over a few endpoints,
// mostly finished, some queued and running, and fresh statistics.
func fillForPlans(t *testing.T, s *pgstore.Store) {
	t.Helper()
	ctx := t.Context()
	// Rows inserted directly: the plans depend on the data, not on how it came.
	require.NoError(t, s.Exec(ctx, `INSERT INTO jobs (id, endpoint, state, webhook, execution_timeout_ms, ttl_ms,
		retention_ms, low_priority, sync, created_at, queued_at, taken_at, finished_at, expires_at, timeout_at,
		delete_at, worker_id, attempt, retries, error, stop_pod, ended_by_worker, stop_pending, stream_count,
		stream_cursor, had_s3_config)
		SELECT 'j' || i, 'ep' || (i % 4),
			CASE WHEN i % 10 = 0 THEN 'IN_QUEUE' WHEN i % 10 = 1 THEN 'IN_PROGRESS' ELSE 'COMPLETED' END,
			'', 600000, 86400000, 60000, i % 3 = 0, false, 1700000000000 + i, 1700000000000 + i,
			CASE WHEN i % 10 >= 1 THEN 1700000001000 + i ELSE 0 END,
			CASE WHEN i % 10 >= 2 THEN 1700000002000 + i ELSE 0 END,
			CASE WHEN i % 10 = 0 THEN 1700003600000 + i ELSE 0 END,
			CASE WHEN i % 10 = 1 THEN 1700000601000 + i ELSE 0 END,
			CASE WHEN i % 10 >= 2 THEN 1700000062000 + i ELSE 0 END,
			CASE WHEN i % 10 >= 1 THEN 'w' || (i % 50) ELSE '' END, 1, 0, ''::bytea, false, false, false, 0, 0, false
		FROM generate_series(1, 20000) AS i`))
	require.NoError(t, s.Exec(ctx, `INSERT INTO job_inputs (seq, input) SELECT seq, '{"n":1}'::bytea FROM jobs`))
	require.NoError(t, s.Exec(ctx, `INSERT INTO workers (id, endpoint, first_seen, last_seen, version)
		SELECT 'w' || i, 'ep' || (i % 4), 1700000000000, 1700000000000 + i, '' FROM generate_series(0, 49) AS i`))
	require.NoError(t, s.Exec(ctx, `INSERT INTO webhook_deliveries (id, job_id, endpoint, url, host, payload, state,
		attempts, next_attempt_at, lease, created_at, finished_at, last_status, last_error, redelivery_of)
		SELECT 'msg' || i, 'j' || i, 'ep', 'https://h' || (i % 7) || '.test/', 'h' || (i % 7) || '.test:443', '{}'::bytea,
			CASE WHEN i % 20 = 0 THEN 'pending' ELSE 'delivered' END, 1, 1700000000000 + i, 1, 1700000000000 + i,
			CASE WHEN i % 20 = 0 THEN 0 ELSE 1700000001000 + i END, 200, '', ''
		FROM generate_series(1, 5000) AS i`))
	// VACUUM too, as autovacuum would have: it marks the pages all-visible, which is what makes
	// an index-only scan worth it.
	require.NoError(t, s.Exec(ctx, "VACUUM ANALYZE"))
}

// TestQueueQueriesUseTheQueueIndex: the claim walks jobs_queue in dispatch order (no sort: it
// stops at its limit), and the queue's counts and positions read ranges of it.
func TestQueueQueriesUseTheQueueIndex(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	fillForPlans(t, s)
	ctx := t.Context()

	plan, err := s.ClaimPlan(ctx, "ep1")
	require.NoError(t, err)
	t.Logf("claim:\n%s", plan)
	require.Contains(t, plan, "Index Scan using jobs_queue on jobs")
	require.Contains(t, plan, "LockRows")
	require.NotContains(t, plan, "Sort")
	require.NotContains(t, plan, "Seq Scan")

	// Each connection prepares the claim once and may then run it with a generic plan, which
	// knows the endpoint only as a parameter: the queue index must still be the plan.
	plan, err = s.GenericClaimPlan(ctx, "ep1")
	require.NoError(t, err)
	t.Logf("claim, generic plan:\n%s", plan)
	require.Contains(t, plan, "Index Scan using jobs_queue on jobs")
	require.NotContains(t, plan, "Sort")
	require.NotContains(t, plan, "Seq Scan")

	plan, err = s.PositionPlan(ctx, "ep0", "j10")
	require.NoError(t, err)
	t.Logf("queue position:\n%s", plan)
	require.Contains(t, plan, "jobs_queue")
	require.NotContains(t, plan, "Seq Scan")

	plan, err = s.QueueDepthPlan(ctx, "ep0")
	require.NoError(t, err)
	t.Logf("queue depth:\n%s", plan)
	require.Contains(t, plan, "jobs_queue")
	require.Contains(t, plan, "jobs_running")
	require.NotContains(t, plan, "Seq Scan")
}

// TestQueriesUseTheirIndexes: the sweeps, the lists and the counts read the index made for them,
// not every retained job.
func TestQueriesUseTheirIndexes(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	fillForPlans(t, s)
	ctx := t.Context()
	check := func(name, plan string, err error, want ...string) {
		t.Helper()
		require.NoError(t, err, name)
		t.Logf("%s:\n%s", name, plan)
		for _, w := range want {
			require.Contains(t, plan, w, name)
		}
		require.NotContains(t, plan, "Seq Scan on jobs", name)
	}
	for name, tc := range map[string]struct {
		f    store.JobFilter
		want string
	}{
		"expiry sweep":  {store.JobFilter{States: []spool.State{spool.StateInQueue}, ExpiresBy: t0, Limit: 500}, "jobs_expiry"},
		"timeout sweep": {store.JobFilter{States: []spool.State{spool.StateInProgress}, TimesOutBy: t0, Limit: 500}, "jobs_timeout"},
		"stop signals":  {store.JobFilter{Endpoint: "ep1", WorkerID: "w1", StopPending: true}, "jobs_worker"},
		"purge":         {store.JobFilter{Endpoint: "ep1", States: []spool.State{spool.StateInQueue}, Limit: 500}, "jobs_queue"},
		"ids":           {store.JobFilter{IDs: []string{"j1", "j2"}}, "jobs_id_key"},
	} {
		plan, err := s.FindJobsPlan(ctx, tc.f)
		check(name, plan, err, tc.want)
	}
	plan, err := s.HeldJobsPlan(ctx, store.HeldJobsParams{Endpoint: "ep1"})
	check("held jobs of an endpoint", plan, err, "jobs_running")
	plan, err = s.HeldJobsPlan(ctx, store.HeldJobsParams{WorkerID: "w1"})
	check("held jobs of a worker", plan, err, "jobs_worker")
	plan, err = s.ListJobsPlan(ctx, store.ListJobsParams{Endpoint: "ep1", Limit: 50})
	check("list of an endpoint", plan, err, "Index Scan Backward using jobs_list")
	plan, err = s.ListJobsPlan(ctx, store.ListJobsParams{Endpoint: "ep1", Limit: 50, Before: t0.Add(time.Second), BeforeID: "j5"})
	check("page of an endpoint", plan, err, "Index Scan Backward using jobs_list")
	plan, err = s.CountJobsPlan(ctx, "ep1")
	check("count jobs", plan, err, "Index Only Scan using jobs_list")
	for _, before := range []time.Time{t0, time.UnixMilli(1700000062100), t0.Add(time.Hour)} {
		plan, err = s.DeleteJobsPlan(ctx, before)
		check("retention sweep", plan, err, "jobs_retention")
	}
	plan, err = s.ClaimDeliveriesPlan(ctx)
	require.NoError(t, err)
	t.Logf("claim deliveries:\n%s", plan)
	require.Contains(t, plan, "webhook_deliveries_due")
	require.NotContains(t, plan, "Seq Scan on webhook_deliveries")
}

// TestHeadWritesLeaveTheInputAlone: claiming, progress, stop flags and the result rewrite the
// job's head, never its input's row.
func TestHeadWritesLeaveTheInputAlone(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := t.Context()
	big := job("big")
	big.Input = json.RawMessage(`"` + strings.Repeat("x", 1<<20) + `"`)
	require.NoError(t, s.CreateJob(ctx, store.CreateJobParams{Job: big}))
	version := func(table string) string {
		t.Helper()
		var v string
		require.NoError(t, s.QueryRow(ctx, "SELECT xmin::text || ' ' || ctid::text FROM "+table+
			" WHERE seq = (SELECT seq FROM jobs WHERE id = 'big')").Scan(&v))
		return v
	}
	input, head := version("job_inputs"), version("jobs")

	claimed, err := s.ClaimJobs(ctx, store.ClaimJobsParams{Endpoint: "ep", Max: 1, Now: t0, Change: claimChange("w")})
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	require.Equal(t, big.Input, claimed[0].Input)
	held := store.Expect{State: spool.StateInProgress, WorkerID: "w"}
	for _, c := range []store.JobChange{
		{Set: store.SetProgress, Progress: json.RawMessage(`{"step":1}`)},
		{Set: store.SetError, Error: "x"},
		{Set: store.SetState | store.SetOutput | store.SetProgress | store.SetFinishedAt | store.SetDeleteAt | store.SetStopPending,
			State: spool.StateCompleted, Output: json.RawMessage(`"done"`), FinishedAt: t0, StopPending: true},
	} {
		changed, err := s.UpdateJobs(ctx, store.UpdateJobsParams{Now: t0, Updates: []store.JobUpdate{{ID: "big", Expect: held, Change: c}}})
		require.NoError(t, err)
		require.Len(t, changed, 1)
		held.State = changed[0].State
		require.NotEqual(t, head, version("jobs"), "the head was written")
		head = version("jobs")
		require.Equal(t, input, version("job_inputs"), "the input's row was not")
	}
	got, err := s.GetJob(ctx, store.GetJobParams{ID: "big", With: store.AllPayloads})
	require.NoError(t, err)
	require.Equal(t, big.Input, got.Input)
}

// TestTouchWorkerNeverGoesBack: sightings that commit out of order keep the latest LastSeen.
func TestTouchWorkerNeverGoesBack(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := t.Context()
	require.NoError(t, s.TouchWorker(ctx, store.TouchWorkerParams{ID: "w", Endpoint: "ep", Now: t0.Add(time.Minute)}))
	require.NoError(t, s.TouchWorker(ctx, store.TouchWorkerParams{ID: "w", Endpoint: "ep", Now: t0}))
	workers, err := s.ListWorkers(ctx, store.ListWorkersParams{})
	require.NoError(t, err)
	require.Len(t, workers, 1)
	require.True(t, workers[0].LastSeen.Equal(t0.Add(time.Minute)))
	require.True(t, workers[0].FirstSeen.Equal(t0.Add(time.Minute)))
}

// TestErrorWithNUL: a worker's error may hold any character JSON can carry, NUL included.
func TestErrorWithNUL(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := t.Context()
	j := job("j")
	j.Error = "bad\x00byte é"
	require.NoError(t, s.CreateJob(ctx, store.CreateJobParams{Job: j}))
	changed, err := s.UpdateJobs(ctx, store.UpdateJobsParams{Now: t0, Updates: []store.JobUpdate{{
		ID: "j", Expect: store.Expect{State: spool.StateInQueue}, Change: store.JobChange{Set: store.SetError, Error: "again\x00"},
	}}})
	require.NoError(t, err)
	require.Len(t, changed, 1)
	require.Equal(t, "again\x00", changed[0].Error)
}

// TestCloseWaitsForCalls: Close lets the calls in flight finish; the calls after it fail with
// store.ErrClosed, and change nothing.
func TestCloseWaitsForCalls(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	s := openAt(t, url)
	const writers = 8
	var created atomic.Int64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := 0; ; i++ {
				err := s.CreateJob(context.Background(), store.CreateJobParams{Job: job(fmt.Sprintf("w%d-%d", w, i))})
				if errors.Is(err, store.ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				created.Add(1)
			}
		})
	}
	for created.Load() < 50 {
		runtime.Gosched()
	}
	require.NoError(t, s.Close())
	wg.Wait()

	s = openAt(t, url)
	defer func() { require.NoError(t, s.Close()) }()
	counts, err := s.CountJobs(t.Context(), "ep")
	require.NoError(t, err)
	require.Equal(t, int(created.Load()), counts.ByState[spool.StateInQueue], "every acknowledged write, and no other")
}

func BenchmarkCreateJobParallel(b *testing.B) {
	s := openAt(b, pgtest.WithParam(pgtest.URL(b), "pool_max_conns", "32"))
	b.Cleanup(func() { require.NoError(b, s.Close()) })
	ctx := context.Background()
	var next atomic.Int64
	b.SetParallelism(32) // many concurrent clients, as behind an HTTP server
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprint("j", next.Add(1))
			if err := s.CreateJob(ctx, store.CreateJobParams{Job: job(id)}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkClaimJobsParallel claims queued jobs one at a time from many goroutines, as idle
// workers' takes do; the queue is filled before the timer starts.
func BenchmarkClaimJobsParallel(b *testing.B) {
	s := openAt(b, pgtest.WithParam(pgtest.URL(b), "pool_max_conns", "16"))
	b.Cleanup(func() { require.NoError(b, s.Close()) })
	ctx := context.Background()
	createJobs(b, s, b.N, func(i int) *spool.Job { return job(fmt.Sprint("j", i)) })
	claim := store.JobChange{Set: store.SetState | store.SetWorkerID | store.SetTakenAt | store.IncAttempt,
		State: spool.StateInProgress, WorkerID: "w", TakenAt: t0}
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.ClaimJobs(ctx, store.ClaimJobsParams{Endpoint: "ep", Max: 1, Now: t0, Change: claim}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestOpposedBatches: two batches updating the same jobs in opposite orders can deadlock in
// PostgreSQL, which then aborts one; the store runs that one again, and neither caller sees it.
func TestOpposedBatches(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := t.Context()
	const n = 20
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprint("j", i)
		require.NoError(t, s.CreateJob(ctx, store.CreateJobParams{Job: job(ids[i])}))
	}
	batch := func(ids []string, v string) []store.JobUpdate {
		us := make([]store.JobUpdate, len(ids))
		for i, id := range ids {
			us[i] = store.JobUpdate{ID: id, Expect: store.Expect{State: spool.StateInQueue}, Change: store.JobChange{Set: store.SetError, Error: v}}
		}
		return us
	}
	reversed := slices.Clone(ids)
	slices.Reverse(reversed)
	for round := range 30 {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for k, order := range [][]string{ids, reversed} {
			wg.Go(func() {
				changed, err := s.UpdateJobs(ctx, store.UpdateJobsParams{Now: t0, Updates: batch(order, fmt.Sprint(round, k))})
				if err == nil && len(changed) != n {
					err = fmt.Errorf("%d of %d changed", len(changed), n)
				}
				errs[k] = err
			})
		}
		wg.Wait()
		require.NoError(t, errors.Join(errs...), "round %d", round)
	}
}

// TestDeadlockRunsAgain: a transaction PostgreSQL aborts to break a deadlock changed nothing and
// runs again, a bounded number of times.
func TestDeadlockRunsAgain(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := t.Context()
	deadlock := &pgconn.PgError{Code: "40P01", Message: "deadlock detected"}
	runs := 0
	err := s.WriteTx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		runs++
		var n int
		if err := tx.QueryRow(ctx, "SELECT COUNT(*) FROM workers").Scan(&n); err != nil {
			return err
		}
		require.Zero(t, n, "the aborted run left nothing")
		if _, err := tx.Exec(ctx, "INSERT INTO workers VALUES ('w', 'ep', 1, 1, '')"); err != nil {
			return err
		}
		if runs == 1 {
			return fmt.Errorf("insert: %w", deadlock)
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 2, runs)

	runs = 0
	err = s.WriteTx(ctx, func(context.Context, pgx.Tx) error { runs++; return deadlock })
	require.ErrorIs(t, err, deadlock)
	require.Equal(t, 3, runs)
}

// TestPoolBound: the pool holds DefaultMaxConns connections unless the URL says otherwise.
func TestPoolBound(t *testing.T) {
	t.Parallel()
	if strings.Contains(pgtest.BaseURL(t), "pool_max_conns") {
		t.Skip(pgtest.Env + " sets pool_max_conns")
	}
	url := pgtest.URL(t) // which sets pool_max_conns
	s := openAt(t, url)
	require.Equal(t, int32(4), s.MaxConns())
	require.NoError(t, s.Close())

	unbound := pgtest.WithParam(pgtest.BaseURL(t), "search_path", pgtest.NewSchema(t))
	require.NotContains(t, unbound, "pool_max_conns")
	s = openAt(t, unbound)
	require.Equal(t, int32(pgstore.DefaultMaxConns), s.MaxConns())
	require.NoError(t, s.Close())
}

// TestUnavailableErrors: errors of the connection are store.ErrUnavailable (503 and retry), errors
// of the SQL and the caller's context are not.
func TestUnavailableErrors(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, connectErr := pgx.Connect(ctx, "postgres://spool@127.0.0.1:1/spool?connect_timeout=2")
	require.Error(t, connectErr)
	for _, err := range []error{
		connectErr,
		fmt.Errorf("claim jobs of ep: %w", &pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}),
		&pgconn.PgError{Code: "08006"},
		&pgconn.PgError{Code: "25006"},
		fmt.Errorf("read: %w", io.ErrUnexpectedEOF),
	} {
		got := pgstore.Unavailable(err)
		require.ErrorIs(t, got, store.ErrUnavailable, "%v", err)
		require.ErrorIs(t, got, err, "the cause is kept")
	}
	for _, err := range []error{
		&pgconn.PgError{Code: "23505"},
		fmt.Errorf("get job x: %w", store.ErrNotFound),
		context.Canceled,
		fmt.Errorf("write: %w", context.DeadlineExceeded),
		errors.New("sqlitestore: a claim must move the jobs out of IN_QUEUE"),
	} {
		require.NotErrorIs(t, pgstore.Unavailable(err), store.ErrUnavailable, "%v", err)
	}
	require.NoError(t, pgstore.Unavailable(nil))
}

// TestClaimPlanOnOneDeepQueue: one endpoint with a deep queue (the shape of a load test, and of
// a busy single-endpoint deployment), analyzed: the claim, planned generically as a connection
// that keeps it prepared would, still walks jobs_queue and sorts nothing.
func TestClaimPlanOnOneDeepQueue(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := t.Context()
	require.NoError(t, s.Exec(ctx, `INSERT INTO jobs (id, endpoint, state, webhook, execution_timeout_ms, ttl_ms,
		retention_ms, low_priority, sync, created_at, queued_at, taken_at, finished_at, expires_at, timeout_at,
		delete_at, worker_id, attempt, retries, error, stop_pod, ended_by_worker, stop_pending, stream_count,
		stream_cursor, had_s3_config)
		SELECT 'q' || i, 'only', CASE WHEN i % 3 = 0 THEN 'COMPLETED' ELSE 'IN_QUEUE' END,
			'', 600000, 86400000, 60000, false, false, 1700000000000 + i, 1700000000000 + i, 0, 0,
			1700086400000 + i, 0, 0, '', 0, 0, ''::bytea, false, false, false, 0, 0, false
		FROM generate_series(1, 30000) AS i`))
	require.NoError(t, s.Exec(ctx, "VACUUM ANALYZE"))
	plan, err := s.GenericClaimPlan(ctx, "only")
	require.NoError(t, err)
	t.Logf("claim, generic plan:\n%s", plan)
	require.Contains(t, plan, "Index Scan using jobs_queue on jobs")
	require.NotContains(t, plan, "Sort")
	require.NotContains(t, plan, "jobs_expiry")
	n, err := s.CountQueued(ctx, store.CountQueuedParams{Endpoint: "only", Limit: 3})
	require.NoError(t, err)
	require.Equal(t, 3, n)
}

// TestPipelineBatchesAndIsolatesFailures: many concurrent submissions go out in batches, and a
// duplicate among them fails alone (its batch is rolled back and each statement runs again by
// itself), while every other submission of that batch is applied once.
func TestPipelineBatchesAndIsolatesFailures(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := t.Context()
	require.NoError(t, s.CreateJob(ctx, store.CreateJobParams{Job: job("dup")}))
	const writers, each = 32, 20
	submitConcurrently(t, s, writers, each, "dup")
	n, err := s.CountQueued(ctx, store.CountQueuedParams{Endpoint: "ep", Limit: 10000})
	require.NoError(t, err)
	require.Equal(t, writers*each, n, "every submission once, the duplicate not twice")
	statements, batches, rerun := s.PipelineStats()
	t.Logf("pipeline: %d statements, %d batches, %d rerun", statements, batches, rerun)
	require.Positive(t, batches, "concurrent writes share batches")
	require.LessOrEqual(t, rerun, int64(1), "only the duplicate's batch ran again")
}

// TestConnectTakesThePoolsURL: the store URL may carry pool settings (pgtest's does:
// pool_max_conns), which a single connection must not send to the server; a URL that does not
// parse fails without quoting it.
func TestConnectTakesThePoolsURL(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	require.Contains(t, url, "pool_max_conns")
	conn, err := pgstore.Connect(t.Context(), url)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	require.NoError(t, conn.Ping(t.Context()))
	pool, err := pgstore.SmallPool(t.Context(), url, 1)
	require.NoError(t, err)
	defer pool.Close()
	require.EqualValues(t, 1, pool.Config().MaxConns)

	const password = "pw-not-in-errors-9c1"
	_, err = pgstore.Connect(t.Context(), "postgres://u:"+password+"@[bad")
	require.Error(t, err)
	require.NotContains(t, err.Error(), password)
	_, err = pgstore.SmallPool(t.Context(), "postgres://u:"+password+"@[bad", 1)
	require.Error(t, err)
	require.NotContains(t, err.Error(), password)
}

// submitConcurrently makes writers goroutines submit each jobs apiece at once, one of them (the
// 11th of the 8th writer) with the id dup, which must already exist: it alone is refused.
func submitConcurrently(t *testing.T, s *pgstore.Store, writers, each int, dup string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("w%d-%d", w, i)
				if w == 7 && i == 10 {
					id = dup
				}
				errs[w*each+i] = s.CreateJob(t.Context(), store.CreateJobParams{Job: job(id)})
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if i == 7*each+10 {
			require.ErrorIs(t, err, store.ErrConflict)
			continue
		}
		require.NoError(t, err, "submission %d", i)
	}
}
