package sqlitestore_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
	"github.com/spool-run/spool/store/sqlitestore"
	"github.com/spool-run/spool/store/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var t0 = time.UnixMilli(1_700_000_000_000)

func openAt(t testing.TB, path string) *sqlitestore.Store {
	t.Helper()
	s, err := sqlitestore.Open(context.Background(), path)
	require.NoError(t, err)
	return s
}

// newStore opens a store on a fresh file that is closed when t ends.
func newStore(t testing.TB) *sqlitestore.Store {
	t.Helper()
	s := openAt(t, filepath.Join(t.TempDir(), "spool.db"))
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func job(id string) *spool.Job {
	return &spool.Job{
		ID: id, Endpoint: "ep", State: spool.StateInQueue, Input: json.RawMessage(`{"n":1}`),
		CreatedAt: t0, QueuedAt: t0, ExpiresAt: t0.Add(time.Hour), RetentionMs: 60_000,
	}
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openAt(t, filepath.Join(t.TempDir(), "spool.db"))
	})
}

func TestPragmas(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	for pragma, want := range map[string]string{
		"journal_mode":  "wal",
		"synchronous":   "2", // FULL: every commit is fsync'd
		"foreign_keys":  "1",
		"busy_timeout":  "5000",
		"secure_delete": "2", // FAST: freed content is zeroed on the pages written anyway
	} {
		got, err := s.WriterPragma(t.Context(), pragma)
		require.NoError(t, err)
		require.Equal(t, want, got, pragma)
	}
}

// TestReopen checks that what a store acknowledged is in the file after Close, and that opening
// an up-to-date file applies no migration twice.
func TestReopen(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "spool.db")

	s := openAt(t, path)
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
	require.NoError(t, s.Close())
	require.NoFileExists(t, path+"-wal", "Close checkpoints the WAL into the main file")

	for range 2 {
		s = openAt(t, path)
		versions, err := s.SchemaVersions(ctx)
		require.NoError(t, err)
		require.Len(t, versions, sqlitestore.Migrations)

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
		require.NoError(t, s.Close())
	}
}

// TestMigrationHadS3Config: a file from before migration 3 keeps its jobs, and those that still
// carry an s3Config are marked as having had one.
func TestMigrationHadS3Config(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "spool.db")
	const cols = `(id, endpoint, state, input, webhook, s3_config, execution_timeout_ms, ttl_ms, low_priority, sync,
		created_at, queued_at, taken_at, finished_at, deadline, worker_id, attempt, retries, output, error,
		stop_pod, ended_by_worker, stop_pending, retention_ms, stream_count, stream_cursor)`
	require.NoError(t, sqlitestore.CreateAtVersion(ctx, path, 2,
		`INSERT INTO jobs `+cols+` VALUES ('with', 'ep', 'IN_QUEUE', X'31', '', CAST('{"accessId":"a"}' AS BLOB),
			600000, 86400000, 0, 0, 1, 1, 0, 0, 2, '', 0, 0, NULL, '', 0, 0, 0, 0, 0, 0)`,
		`INSERT INTO jobs `+cols+` VALUES ('without', 'ep', 'IN_QUEUE', X'31', '', NULL,
			600000, 86400000, 0, 0, 1, 1, 0, 0, 2, '', 0, 0, NULL, '', 0, 0, 0, 0, 0, 0)`))
	s := openAt(t, path)
	defer func() { require.NoError(t, s.Close()) }()
	versions, err := s.SchemaVersions(ctx)
	require.NoError(t, err)
	require.Len(t, versions, sqlitestore.Migrations)
	with, err := s.GetJob(ctx, store.GetJobParams{ID: "with", With: store.AllPayloads})
	require.NoError(t, err)
	require.True(t, with.HadS3Config)
	require.JSONEq(t, `{"accessId":"a"}`, string(with.S3ConfigSealed), "left for the engine to seal at its start")
	without, err := s.GetJob(ctx, store.GetJobParams{ID: "without"})
	require.NoError(t, err)
	require.False(t, without.HadS3Config)
}

// TestMigrationDeadlinesAndPayloads: a file from before migration 4 keeps every job, chunk and
// delivery; the one deadline becomes the one of the job's state, a running job's output becomes
// its progress, and inputs move to their own table.
func TestMigrationDeadlinesAndPayloads(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "spool.db")
	const cols = `(id, endpoint, state, input, webhook, s3_config, execution_timeout_ms, ttl_ms, low_priority, sync,
		created_at, queued_at, taken_at, finished_at, deadline, worker_id, attempt, retries, output, error,
		stop_pod, ended_by_worker, stop_pending, retention_ms, stream_count, stream_cursor, had_s3_config)`
	require.NoError(t, sqlitestore.CreateAtVersion(ctx, path, 3,
		`INSERT INTO jobs `+cols+` VALUES ('q', 'ep', 'IN_QUEUE', CAST('{"n":1}' AS BLOB), '', X'01', 600000, 86400000, 0, 0,
			1, 1, 0, 0, 100, '', 0, 0, NULL, '', 0, 0, 0, 0, 0, 0, 1)`,
		`INSERT INTO jobs `+cols+` VALUES ('r', 'ep', 'IN_PROGRESS', CAST('{"n":2}' AS BLOB), '', NULL, 600000, 86400000, 0, 1,
			1, 1, 2, 0, 200, 'w', 1, 0, CAST('"half"' AS BLOB), '', 0, 0, 0, 0, 0, 0, 0)`,
		`INSERT INTO jobs `+cols+` VALUES ('c', 'ep', 'COMPLETED', NULL, 'https://example.com/', NULL, 600000, 86400000, 0, 0,
			1, 1, 2, 3, 300, 'w', 1, 0, CAST('"done"' AS BLOB), '', 0, 1, 0, 5000, 2, 0, 0)`,
		`INSERT INTO stream_chunks (job_id, seq, data) VALUES ('c', 1, CAST('"a"' AS BLOB)), ('c', 2, CAST('"b"' AS BLOB))`,
		`INSERT INTO webhook_deliveries (id, job_id, endpoint, url, host, payload, state, attempts, next_attempt_at, lease,
			created_at, finished_at, last_status, last_error, redelivery_of)
			VALUES ('msg_c', 'c', 'ep', 'https://example.com/', 'example.com:443', NULL, 'pending', 0, 3, 0, 3, 0, 0, '', '')`))
	s := openAt(t, path)
	defer func() { require.NoError(t, s.Close()) }()
	fk, err := s.WriterPragma(ctx, "foreign_keys")
	require.NoError(t, err)
	require.Equal(t, "1", fk, "foreign keys are on again after the migration")

	get := func(id string) *spool.Job {
		j, err := s.GetJob(ctx, store.GetJobParams{ID: id, With: store.AllPayloads})
		require.NoError(t, err)
		return j
	}
	q, r, c := get("q"), get("r"), get("c")
	ms := func(n int64) time.Time { return time.UnixMilli(n).UTC() }
	require.Equal(t, []time.Time{ms(100), {}, {}}, []time.Time{q.ExpiresAt, q.TimeoutAt, q.DeleteAt})
	require.Equal(t, []time.Time{{}, ms(200), {}}, []time.Time{r.ExpiresAt, r.TimeoutAt, r.DeleteAt})
	require.Equal(t, []time.Time{{}, {}, ms(300)}, []time.Time{c.ExpiresAt, c.TimeoutAt, c.DeleteAt})
	require.Equal(t, `{"n":1}`, string(q.Input))
	require.Equal(t, []byte{1}, q.S3ConfigSealed)
	require.Equal(t, `"half"`, string(r.Progress))
	require.Nil(t, r.Output)
	require.Equal(t, `"done"`, string(c.Output))
	require.Nil(t, c.Progress)
	require.Nil(t, c.Input)
	require.Equal(t, []int64{0, 0, 5_000}, []int64{q.RetentionMs, r.RetentionMs, c.RetentionMs}, "left to the engine")
	_, chunks, err := s.ReadChunks(ctx, store.ReadChunksParams{ID: "c"})
	require.NoError(t, err)
	require.Len(t, chunks, 2)
	ds, err := s.ListDeliveries(ctx, "c")
	require.NoError(t, err)
	require.Len(t, ds, 1)

	n, err := s.DeleteJobs(ctx, store.DeleteJobsParams{Before: ms(300)})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	_, chunks, err = s.ReadChunks(ctx, store.ReadChunksParams{ID: "c"})
	require.ErrorIs(t, err, store.ErrNotFound)
	require.Empty(t, chunks)
}

// TestHeadWritesLeaveTheInputAlone: claiming, progress, stop flags and the result rewrite the
// job's head, never its input: the WAL grows by a few pages, not by the input's size.
func TestHeadWritesLeaveTheInputAlone(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "spool.db")
	s := openAt(t, path)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	ctx := t.Context()
	// A connection of its own checkpoints the WAL into the file and empties it, and says how
	// many frames (pages) it held: what the writes since the previous checkpoint wrote.
	db, err := sql.Open("sqlite", path)
	require.NoError(t, err)
	defer db.Close()
	checkpoint := func() int {
		var busy, frames, done int
		// A passive checkpoint reports the frames; a truncating one reports zeros once it has
		// emptied the log.
		require.NoError(t, db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &done))
		require.NoError(t, db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &done, &done))
		require.Zero(t, busy)
		return frames
	}
	const inputBytes = 2 << 20 // under the 1,000 pages at which SQLite checkpoints by itself
	big := job("big")
	big.Input = json.RawMessage(`"` + strings.Repeat("x", inputBytes) + `"`)
	checkpoint()
	require.NoError(t, s.CreateJob(ctx, store.CreateJobParams{Job: big}))
	require.Greater(t, checkpoint()*4096, inputBytes, "the insert wrote the input")

	claimed, err := s.ClaimJobs(ctx, store.ClaimJobsParams{Endpoint: "ep", Max: 1, Now: t0, Change: store.JobChange{
		Set:   store.SetState | store.SetWorkerID | store.IncAttempt | store.SetTakenAt | store.SetTimeoutAt,
		State: spool.StateInProgress, WorkerID: "w", TakenAt: t0,
	}})
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	require.Len(t, claimed[0].Input, inputBytes+2)
	held := store.Expect{State: spool.StateInProgress, WorkerID: "w"}
	for _, c := range []store.JobChange{
		{Set: store.SetProgress, Progress: json.RawMessage(`{"step":1}`)},
		{Set: store.SetProgress, Progress: json.RawMessage(`{"step":2, "more":"text"}`)},
		{Set: store.SetState | store.SetOutput | store.SetProgress | store.SetFinishedAt | store.SetDeleteAt | store.SetStopPending,
			State: spool.StateCompleted, Output: json.RawMessage(`"done"`), FinishedAt: t0, StopPending: true},
	} {
		changed, err := s.UpdateJobs(ctx, store.UpdateJobsParams{Now: t0, Updates: []store.JobUpdate{{ID: "big", Expect: held, Change: c}}})
		require.NoError(t, err)
		require.Len(t, changed, 1)
		held.State = changed[0].State
	}
	frames := checkpoint()
	t.Logf("four writes of a job with a %d-byte input wrote %d pages", inputBytes, frames)
	require.Less(t, frames*4096, inputBytes/16)
}

// TestFindJobsUsesIndexes: the queries of the sweeps and of a worker's jobs use the index made
// for them, not a scan of every retained job.
func TestFindJobsUsesIndexes(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	for want, f := range map[string]store.JobFilter{
		"jobs_expiry":  {States: []spool.State{spool.StateInQueue}, ExpiresBy: t0, Limit: 500},
		"jobs_timeout": {States: []spool.State{spool.StateInProgress}, TimesOutBy: t0, Limit: 500},
		"jobs_worker":  {Endpoint: "ep", WorkerID: "w", StopPending: true},
		"jobs_worker ": {Endpoint: "ep", WorkerID: "w", States: []spool.State{spool.StateInProgress}},
		"jobs_queue":   {Endpoint: "ep", States: []spool.State{spool.StateInQueue}, Limit: 500},
	} {
		plan, err := s.FindJobsPlan(t.Context(), f)
		require.NoError(t, err)
		require.Contains(t, plan, "USING INDEX "+strings.TrimSpace(want), "%+v", f)
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "spool.db")
	require.NoError(t, openAt(t, path).Close())

	db, err := sql.Open("sqlite", path)
	require.NoError(t, err)
	_, err = db.Exec("INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)", sqlitestore.Migrations+1)
	require.NoError(t, err)
	require.NoError(t, db.Close())

	_, err = sqlitestore.Open(t.Context(), path)
	require.ErrorContains(t, err, "newer")
}

func TestOpenMissingDir(t *testing.T) {
	t.Parallel()
	_, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "missing", "spool.db"))
	require.Error(t, err)
}

// TestOddPath checks that characters SQLite's URI parser treats specially reach the filesystem
// unchanged.
func TestOddPath(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "a?b#c%20d.db")
	s := openAt(t, path)
	require.NoError(t, s.CreateJob(t.Context(), store.CreateJobParams{Job: job("j")}))
	require.NoError(t, s.Close())
	require.FileExists(t, path)
}

// TestGroupCommit checks that concurrent writes share transactions. It counts, it does not time.
func TestGroupCommit(t *testing.T) {
	t.Parallel()
	const writers, perWriter = 64, 20
	s := newStore(t)
	start := make(chan struct{})
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			<-start
			for i := range perWriter {
				if err := s.CreateJob(t.Context(), store.CreateJobParams{Job: job(fmt.Sprintf("w%d-%d", w, i))}); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	st := s.Stats()
	t.Logf("%d ops in %d batches (%.1f ops/batch)", st.Ops, st.Batches, float64(st.Ops)/float64(st.Batches))
	require.Equal(t, int64(writers*perWriter), st.Ops)
	require.Less(t, st.Batches, st.Ops/2)
	require.Zero(t, st.Retried, "a batch of successes runs once, without savepoints")
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
}

// blockWriter parks the writer and returns a function that lets it go.
func blockWriter(t *testing.T, s *sqlitestore.Store) (release func(), wait func()) {
	t.Helper()
	started, rel := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- s.BlockWriter(context.Background(), started, rel) }()
	<-started
	var once sync.Once
	release = func() { once.Do(func() { close(rel) }) }
	t.Cleanup(release)
	return release, func() { require.NoError(t, <-done) }
}

// waitQueued waits until n writes are queued behind a blocked writer.
func waitQueued(t *testing.T, s *sqlitestore.Store, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for s.Queued() < n {
		require.NoError(t, ctx.Err(), "only %d of %d writes queued", s.Queued(), n)
		runtime.Gosched()
	}
}

// TestBatchIsolation puts failing and succeeding writes in one transaction: each failure undoes
// only its own write.
func TestBatchIsolation(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := t.Context()
	hooked := func(id string) *spool.Job {
		j := job(id)
		j.Webhook = "https://example.com/hook"
		return j
	}
	require.NoError(t, s.CreateJob(ctx, store.CreateJobParams{Job: hooked("dup")}))
	require.NoError(t, s.CreateDelivery(ctx, store.CreateDeliveryParams{Delivery: spool.WebhookDelivery{
		ID: "msg_taken", JobID: "x", Endpoint: "ep", URL: "https://example.com/", CreatedAt: t0,
	}}))
	before := s.Stats()

	release, waitBlock := blockWriter(t, s)
	finish := func(id string, outbox func(*spool.Job) *spool.WebhookMessage) func() error {
		return func() error {
			_, err := s.UpdateJobs(ctx, store.UpdateJobsParams{Now: t0, Outbox: outbox, Updates: []store.JobUpdate{{
				ID: id, Expect: store.Expect{State: spool.StateInQueue}, Webhook: true,
				Change: store.JobChange{Set: store.SetState | store.SetError, State: spool.StateFailed, Error: "changed"},
			}}})
			return err
		}
	}
	writes := []func() error{
		func() error { return s.CreateJob(ctx, store.CreateJobParams{Job: hooked("a")}) },
		func() error { return s.CreateJob(ctx, store.CreateJobParams{Job: job("dup")}) },
		// The job's write succeeds, its delivery does not (the id is taken): both are undone.
		finish("a", func(*spool.Job) *spool.WebhookMessage {
			return &spool.WebhookMessage{ID: "msg_taken", URL: "https://example.com/", CreatedAt: t0}
		}),
		finish("dup", func(*spool.Job) *spool.WebhookMessage { panic("bug") }),
		func() error { return s.CreateJob(ctx, store.CreateJobParams{Job: job("b")}) },
	}
	errs := make([]error, len(writes))
	var wg sync.WaitGroup
	for i, w := range writes {
		wg.Go(func() { errs[i] = w() })
		waitQueued(t, s, i+1) // one at a time, so the batch runs them in this order
	}
	release()
	waitBlock()
	wg.Wait()

	require.NoError(t, errs[0])
	require.ErrorIs(t, errs[1], store.ErrConflict)
	require.Error(t, errs[2])
	require.ErrorContains(t, errs[3], "panicked: bug")
	require.NoError(t, errs[4])
	for _, id := range []string{"a", "dup"} {
		j, err := s.GetJob(ctx, store.GetJobParams{ID: id})
		require.NoError(t, err)
		require.Empty(t, j.Error, id)
		require.Equal(t, spool.StateInQueue, j.State, id)
	}
	_, err := s.GetJob(ctx, store.GetJobParams{ID: "b"})
	require.NoError(t, err)

	after := s.Stats()
	require.Equal(t, before.Batches+2, after.Batches, "the blocker, then every queued write in one batch")
	require.Equal(t, before.Ops+1+int64(len(writes)), after.Ops)
	require.Equal(t, before.Retried+1, after.Retried, "the batch with failures ran again, with savepoints")
}

// TestCancelWhileQueued: a write whose context ends before the writer picks it up never happens.
func TestCancelWhileQueued(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	release, waitBlock := blockWriter(t, s)

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.CreateJob(ctx, store.CreateJobParams{Job: job("j")}) }()
	waitQueued(t, s, 1)
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	release()
	waitBlock()

	_, err := s.GetJob(t.Context(), store.GetJobParams{ID: "j"})
	require.ErrorIs(t, err, store.ErrNotFound)
	require.Equal(t, int64(1), s.Stats().Ops, "only the blocker ran")
}

// TestCancelAfterPickup: once the writer runs a write, its caller gets the commit's result even if
// its context ends meanwhile, so a committed write is never reported as failed.
func TestCancelAfterPickup(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx, cancel := context.WithCancel(t.Context())
	started, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- s.BlockWriter(ctx, started, release) }()
	<-started
	cancel()
	close(release)
	require.NoError(t, <-done)
}

// TestCloseDrains: writes queued when Close is called are committed before it returns.
func TestCloseDrains(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "spool.db")
	s := openAt(t, path)
	release, waitBlock := blockWriter(t, s)
	const n = 10
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = s.CreateJob(context.Background(), store.CreateJobParams{Job: job(fmt.Sprint("j", i))})
		})
	}
	waitQueued(t, s, n)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	release()
	waitBlock()
	require.NoError(t, <-closed)
	wg.Wait()
	require.NoError(t, errors.Join(errs...))

	s = openAt(t, path)
	defer func() { require.NoError(t, s.Close()) }()
	jobs, err := s.ListJobs(t.Context(), store.ListJobsParams{})
	require.NoError(t, err)
	require.Len(t, jobs, n)
}

func BenchmarkCreateJobSerial(b *testing.B) {
	s := newStore(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		i++
		if err := s.CreateJob(ctx, store.CreateJobParams{Job: job(fmt.Sprint("j", i))}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCreateJobParallel(b *testing.B) {
	s := newStore(b)
	ctx := context.Background()
	var next atomic.Int64
	b.SetParallelism(32) // many concurrent clients, as behind an HTTP server
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprint("j", next.Add(1))
			if err := s.CreateJob(ctx, store.CreateJobParams{Job: job(id)}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	st := s.Stats()
	b.ReportMetric(float64(st.Ops)/float64(st.Batches), "ops/batch")
}

// TestQueueQueriesUseTheQueueIndex: the claim walks jobs_queue in dispatch order (no sort, it
// stops at its limit) and a queue position counts a range of it.
func TestQueueQueriesUseTheQueueIndex(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	plan, err := s.ClaimPlan(t.Context())
	require.NoError(t, err)
	require.Contains(t, plan, "USING INDEX jobs_queue (endpoint=?)")
	require.NotContains(t, plan, "TEMP B-TREE")
	plan, err = s.PositionPlan(t.Context())
	require.NoError(t, err)
	require.Contains(t, plan, "jobs_queue")
	require.NotContains(t, plan, "SCAN j")
	t.Logf("queue position: %s", plan)
}

// TestHeldJobsUseTheirIndexes: the running jobs of an endpoint come from jobs_running, not from
// a walk of every job the endpoint keeps (a million queued ones made /health take 200 ms); a
// worker's from jobs_worker.
func TestHeldJobsUseTheirIndexes(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	for want, p := range map[string]store.HeldJobsParams{
		"jobs_running (endpoint=?)":  {Endpoint: "ep"},
		"jobs_worker (worker_id=?)":  {Endpoint: "ep", WorkerID: "w"},
		"jobs_worker (worker_id=?) ": {WorkerID: "w"},
	} {
		plan, err := s.HeldJobsPlan(t.Context(), p)
		require.NoError(t, err)
		require.Contains(t, plan, "INDEX "+strings.TrimSpace(want), "%+v", p)
	}
}

// BenchmarkClaimJobsParallel claims queued jobs one at a time from many goroutines, as idle
// workers' takes do; the queue is filled before the timer starts.
func BenchmarkClaimJobsParallel(b *testing.B) {
	s := newStore(b)
	ctx := context.Background()
	for i := range b.N {
		if err := s.CreateJob(ctx, store.CreateJobParams{Job: job(fmt.Sprint("j", i))}); err != nil {
			b.Fatal(err)
		}
	}
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
	st := s.Stats()
	b.ReportMetric(float64(st.Ops)/float64(st.Batches), "ops/batch")
}
