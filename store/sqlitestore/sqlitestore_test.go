package sqlitestore_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
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
		CreatedAt: t0, QueuedAt: t0, Deadline: t0.Add(time.Hour),
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
		"journal_mode": "wal",
		"synchronous":  "2", // FULL: every commit is fsync'd
		"foreign_keys": "1",
		"busy_timeout": "5000",
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
	_, err := s.AppendChunk(ctx, store.AppendChunkParams{ID: "j0", Data: json.RawMessage(`"chunk"`)})
	require.NoError(t, err)
	updated, err := s.UpdateJob(ctx, store.UpdateJobParams{ID: "j1", Apply: func(j *spool.Job) error {
		j.State, j.Output = spool.StateCompleted, json.RawMessage(`42`)
		return nil
	}})
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
		got, err := s.GetJob(ctx, "j1")
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
	with, err := s.GetJob(ctx, "with")
	require.NoError(t, err)
	require.True(t, with.HadS3Config)
	require.JSONEq(t, `{"accessId":"a"}`, string(with.S3ConfigSealed), "left for the engine to seal at its start")
	without, err := s.GetJob(ctx, "without")
	require.NoError(t, err)
	require.False(t, without.HadS3Config)
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
	require.NoError(t, s.CreateJob(ctx, store.CreateJobParams{Job: job("dup")}))
	before := s.Stats()

	release, waitBlock := blockWriter(t, s)
	errBoom := errors.New("boom")
	writes := []func() error{
		func() error { return s.CreateJob(ctx, store.CreateJobParams{Job: job("a")}) },
		func() error { return s.CreateJob(ctx, store.CreateJobParams{Job: job("dup")}) },
		func() error {
			_, err := s.UpdateJob(ctx, store.UpdateJobParams{ID: "a", Apply: func(j *spool.Job) error {
				j.Error = "changed"
				return errBoom
			}})
			return err
		},
		func() error {
			_, err := s.UpdateJob(ctx, store.UpdateJobParams{ID: "dup", Apply: func(*spool.Job) error { panic("bug") }})
			return err
		},
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
	require.ErrorIs(t, errs[2], errBoom)
	require.ErrorContains(t, errs[3], "panicked: bug")
	require.NoError(t, errs[4])
	a, err := s.GetJob(ctx, "a")
	require.NoError(t, err)
	require.Empty(t, a.Error)
	_, err = s.GetJob(ctx, "b")
	require.NoError(t, err)

	after := s.Stats()
	require.Equal(t, before.Batches+2, after.Batches, "the blocker, then every queued write in one batch")
	require.Equal(t, before.Ops+1+int64(len(writes)), after.Ops)
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

	_, err := s.GetJob(t.Context(), "j")
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
