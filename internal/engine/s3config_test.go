package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/secret"
	"github.com/spool-run/spool/store"
	"github.com/spool-run/spool/store/sqlitestore"
)

const s3Canary = `{"accessId":"AKIA-CANARY-ID","accessSecret":"CANARY-SECRET","bucketName":"canary-bucket","endpointUrl":"http://127.0.0.1:9/canary"}`

// TestS3ConfigIsSealedAndOpensOnlyForTheHolder: what the store keeps is ciphertext bound to the
// job id; only a job a worker holds opens, and the terminal state erases it.
func TestS3ConfigIsSealedAndOpensOnlyForTheHolder(t *testing.T) {
	t.Parallel()
	key := secret.GenerateKey()
	sealer, err := secret.New(key)
	require.NoError(t, err)
	f := newFixture(t, func(c *engine.Config) { c.Sealer = sealer })

	j := f.submit(t, engine.SubmitParams{S3Config: json.RawMessage(s3Canary)})
	stored := f.whole(t, j.ID)
	require.True(t, stored.HadS3Config)
	require.NotEmpty(t, stored.S3ConfigSealed)
	require.False(t, bytes.Contains(stored.S3ConfigSealed, []byte("CANARY")), "the store holds ciphertext only")
	plain, err := sealer.Open(stored.S3ConfigSealed, []byte(j.ID))
	require.NoError(t, err, "sealed under the configured key, with the job id as associated data")
	require.JSONEq(t, s3Canary, string(plain))
	_, err = sealer.Open(stored.S3ConfigSealed, []byte("another-job"))
	require.Error(t, err)

	_, err = f.eng.OpenS3Config(stored)
	require.Error(t, err, "a queued job's s3Config opens for nobody")

	taken := f.takeHandout(t, "w")
	require.JSONEq(t, s3Canary, string(taken.S3Config), "the holder's take answer gets the plaintext")
	got, err := f.eng.OpenS3Config(taken.Job)
	require.NoError(t, err)
	require.JSONEq(t, s3Canary, string(got))

	none := f.submit(t, engine.SubmitParams{})
	require.False(t, f.job(t, none.ID).HadS3Config)
	require.Nil(t, f.takeHandout(t, "w2").S3Config, "a job without s3Config has none to open")

	_, err = f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w", JobID: j.ID, Output: json.RawMessage(`1`)})
	require.NoError(t, err)
	done := f.whole(t, j.ID)
	require.Nil(t, done.S3ConfigSealed, "erased once terminal")
	require.True(t, done.HadS3Config)
}

// TestS3ConfigErasedOnEveryTerminalPath: cancel, purge, TTL expiry, execution timeout, handler
// failure and a lost worker past its retries all erase the ciphertext.
func TestS3ConfigErasedOnEveryTerminalPath(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *engine.Config) { c.MaxRetries = 1 })
	s3 := engine.SubmitParams{S3Config: json.RawMessage(s3Canary)}
	erased := func(id string) {
		t.Helper()
		j := f.whole(t, id)
		require.True(t, j.State.Terminal(), "%s is %s", id, j.State)
		require.Nil(t, j.S3ConfigSealed, "%s (%s) keeps no ciphertext", id, j.State)
	}

	cancelled := f.submit(t, s3)
	_, err := f.eng.Cancel(f.ctx, "ep", cancelled.ID)
	require.NoError(t, err)
	erased(cancelled.ID)

	purged := f.submit(t, s3)
	_, err = f.eng.PurgeQueue(f.ctx, "ep")
	require.NoError(t, err)
	erased(purged.ID)

	failed := f.submit(t, s3)
	f.takeOne(t, "w")
	_, err = f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w", JobID: failed.ID, Error: strp("boom")})
	require.NoError(t, err)
	erased(failed.ID)

	timedOut := f.submit(t, engine.SubmitParams{S3Config: s3.S3Config, ExecutionTimeoutMs: i64p(10_000)})
	f.takeOne(t, "w")
	expired := f.submit(t, engine.SubmitParams{S3Config: s3.S3Config, TTLMs: i64p(10_000)})
	f.clock.Advance(11 * time.Second)
	f.sweep(t)
	erased(timedOut.ID)
	erased(expired.ID)

	// A lost worker: first a requeue (the job is not terminal; the ciphertext stays and opens
	// for the next holder only), then FAILED past MaxRetries.
	lost := f.submit(t, s3)
	first := f.takeOne(t, "lost-1")
	_, err = f.eng.LoseWorkerJobs(f.ctx, "lost-1", "gone")
	require.NoError(t, err)
	requeued := f.whole(t, lost.ID)
	require.Equal(t, spool.StateInQueue, requeued.State)
	require.NotEmpty(t, requeued.S3ConfigSealed, "still queued: kept for the next holder")
	_, err = f.eng.OpenS3Config(first)
	require.NoError(t, err, "a job value the first holder got earlier is its own business")
	_, err = f.eng.OpenS3Config(requeued)
	require.Error(t, err, "the requeued job opens for nobody until it is taken again")
	second := f.takeHandout(t, "lost-2")
	require.Equal(t, lost.ID, second.Job.ID)
	require.JSONEq(t, s3Canary, string(second.S3Config), "the new holder gets the s3Config")
	_, err = f.eng.LoseWorkerJobs(f.ctx, "lost-2", "gone")
	require.NoError(t, err)
	erased(lost.ID)
}

// TestRetryRefusesAJobWhoseS3ConfigWasErased: /retry of a FAILED job that had an s3Config answers
// 400 (the s3Config is gone) instead of running it without; other jobs still retry.
func TestRetryRefusesAJobWhoseS3ConfigWasErased(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	j := f.submit(t, engine.SubmitParams{S3Config: json.RawMessage(s3Canary)})
	f.takeOne(t, "w")
	_, err := f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w", JobID: j.ID, Error: strp("boom")})
	require.NoError(t, err)
	_, err = f.eng.Retry(f.ctx, "ep", j.ID)
	requireCode(t, err, spool.CodeInvalid)
	require.ErrorContains(t, err, "s3Config")
	require.ErrorContains(t, err, "submit the job again")
	require.NotContains(t, err.Error(), "CANARY")
	require.Equal(t, spool.StateFailed, f.job(t, j.ID).State, "nothing changed")

	plain := f.submit(t, engine.SubmitParams{})
	f.takeOne(t, "w")
	_, err = f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w", JobID: plain.ID, Error: strp("boom")})
	require.NoError(t, err)
	_, err = f.eng.Retry(f.ctx, "ep", plain.ID)
	require.NoError(t, err)
}

// TestTakeFailsAJobWhoseS3ConfigCannotBeDecrypted: after the server key changed, a queued job's
// s3Config cannot be opened; the take fails that job with a clear error instead of handing it out
// without its s3Config, and hands out the next one.
func TestTakeFailsAJobWhoseS3ConfigCannotBeDecrypted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "spool.db")
	open := func(sealer engine.Sealer) (*engine.Engine, func()) {
		st, err := sqlitestore.Open(ctx, path)
		require.NoError(t, err)
		eng, err := engine.New(engine.Config{Store: st, Clock: clock.NewFake(t0), SweepInterval: time.Hour, Sealer: sealer})
		require.NoError(t, err)
		require.NoError(t, eng.Start(ctx))
		return eng, func() { eng.Stop(); require.NoError(t, st.Close()) }
	}
	eng, stop := open(secret.NewRandom())
	_, _, err := eng.PutEndpoint(ctx, spool.NewEndpoint("ep"))
	require.NoError(t, err)
	lockedOut, err := eng.Submit(ctx, engine.SubmitParams{Endpoint: "ep", Input: json.RawMessage(`1`), S3Config: json.RawMessage(s3Canary)})
	require.NoError(t, err)
	fine, err := eng.Submit(ctx, engine.SubmitParams{Endpoint: "ep", Input: json.RawMessage(`2`)})
	require.NoError(t, err)
	stop()

	eng, stop = open(secret.NewRandom()) // another key
	defer stop()
	handouts, err := eng.Take(ctx, "ep", "w", 1, 0)
	require.NoError(t, err)
	require.Len(t, handouts, 1)
	require.Equal(t, fine.ID, handouts[0].Job.ID)
	got, err := eng.JobAnyEndpoint(ctx, lockedOut.ID)
	require.NoError(t, err)
	require.Equal(t, spool.StateFailed, got.State)
	require.Contains(t, got.Error, "cannot be decrypted")
	require.Nil(t, got.S3ConfigSealed)
	require.False(t, got.StopPending, "the worker never got it")
}

// TestStartUpgradesLegacyJobs: a queued job that an older version stored with a plaintext
// s3Config, and without a retention, is sealed when the engine starts, gets the configured
// retention, and still reaches its worker.
func TestStartUpgradesLegacyJobs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "spool.db")
	st, err := sqlitestore.Open(ctx, path)
	require.NoError(t, err)
	require.NoError(t, st.CreateJob(ctx, store.CreateJobParams{Job: &spool.Job{
		ID: "legacy", Endpoint: "ep", State: spool.StateInQueue, Input: json.RawMessage(`1`),
		S3ConfigSealed: []byte(s3Canary), // what an older version stored
		Policy:         spool.Policy{ExecutionTimeoutMs: spool.DefaultExecutionTimeoutMs, TTLMs: spool.DefaultTTLMs},
		CreatedAt:      t0, QueuedAt: t0, ExpiresAt: t0.Add(time.Hour),
	}}))
	eng, err := engine.New(engine.Config{Store: st, Clock: clock.NewFake(t0), SweepInterval: time.Hour,
		Retention: spool.Retention{Run: 7 * time.Minute}})
	require.NoError(t, err)
	require.NoError(t, eng.Start(ctx))
	defer func() { eng.Stop(); require.NoError(t, st.Close()) }()
	_, _, err = eng.PutEndpoint(ctx, spool.NewEndpoint("ep"))
	require.NoError(t, err)

	j, err := st.GetJob(ctx, store.GetJobParams{ID: "legacy", With: store.AllPayloads})
	require.NoError(t, err)
	require.True(t, secret.IsSealed(j.S3ConfigSealed))
	require.True(t, j.HadS3Config)
	require.False(t, bytes.Contains(j.S3ConfigSealed, []byte("CANARY")))
	require.Equal(t, (7 * time.Minute).Milliseconds(), j.RetentionMs)
	handouts, err := eng.Take(ctx, "ep", "w", 1, 0)
	require.NoError(t, err)
	require.Len(t, handouts, 1)
	require.JSONEq(t, s3Canary, string(handouts[0].S3Config))
}

// TestS3ConfigNeverInTheDatabaseFile: the raw SQLite file and its WAL never hold the plaintext,
// while the job waits, runs or after it ended.
func TestS3ConfigNeverInTheDatabaseFile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "spool.db")
	st, err := sqlitestore.Open(ctx, path)
	require.NoError(t, err)
	eng, err := engine.New(engine.Config{Store: st, Clock: clock.NewFake(t0), SweepInterval: time.Hour})
	require.NoError(t, err)
	require.NoError(t, eng.Start(ctx))
	_, _, err = eng.PutEndpoint(ctx, spool.NewEndpoint("ep"))
	require.NoError(t, err)
	requireNoCanary := func(when string) {
		t.Helper()
		for _, name := range []string{"spool.db", "spool.db-wal", "spool.db-shm"} {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if os.IsNotExist(err) {
				continue
			}
			require.NoError(t, err)
			for _, c := range []string{"CANARY", "canary-bucket", "127.0.0.1:9/canary"} {
				require.False(t, bytes.Contains(b, []byte(c)), "%s holds %q %s", name, c, when)
			}
		}
	}
	j, err := eng.Submit(ctx, engine.SubmitParams{Endpoint: "ep", Input: json.RawMessage(`1`), S3Config: json.RawMessage(s3Canary)})
	require.NoError(t, err)
	requireNoCanary("while queued")
	_, err = eng.Take(ctx, "ep", "w", 1, 0)
	require.NoError(t, err)
	requireNoCanary("while running")
	_, err = eng.Done(ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w", JobID: j.ID, Output: json.RawMessage(`1`)})
	require.NoError(t, err)
	requireNoCanary("after the end")
	eng.Stop()
	require.NoError(t, st.Close())
	requireNoCanary("after the store closed")
}
