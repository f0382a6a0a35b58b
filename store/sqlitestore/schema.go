package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations are applied in order, each once, each in its own transaction; migrations[i] brings
// the schema to version i+1. Never edit a released migration: append a new one.
//
// Conventions: times are INTEGER unix milliseconds with 0 for the zero time; json.RawMessage
// values are BLOBs, NULL for nil, so that nil and empty survive a round trip; booleans are 0/1.
// Tables are STRICT so that a value of the wrong type is an error rather than silently stored.
var migrations = []string{
	// 1: everything.
	`
CREATE TABLE jobs (
	-- seq is the rowid: it orders jobs by insertion (the FIFO tie-break of TakeJobs) and, unlike
	-- an implicit rowid, VACUUM never renumbers it.
	seq                  INTEGER PRIMARY KEY,
	id                   TEXT    NOT NULL UNIQUE,
	endpoint             TEXT    NOT NULL,
	state                TEXT    NOT NULL,
	input                BLOB,
	webhook              TEXT    NOT NULL,
	s3_config            BLOB,
	execution_timeout_ms INTEGER NOT NULL,
	ttl_ms               INTEGER NOT NULL,
	low_priority         INTEGER NOT NULL,
	sync                 INTEGER NOT NULL,
	created_at           INTEGER NOT NULL,
	queued_at            INTEGER NOT NULL,
	taken_at             INTEGER NOT NULL,
	finished_at          INTEGER NOT NULL,
	deadline             INTEGER NOT NULL,
	worker_id            TEXT    NOT NULL,
	attempt              INTEGER NOT NULL,
	retries              INTEGER NOT NULL,
	output               BLOB,
	error                TEXT    NOT NULL,
	stop_pod             INTEGER NOT NULL,
	ended_by_worker      INTEGER NOT NULL,
	stop_pending         INTEGER NOT NULL,
	retention_ms         INTEGER NOT NULL,
	stream_count         INTEGER NOT NULL,
	stream_cursor        INTEGER NOT NULL
) STRICT;

-- TakeJobs: equality on (endpoint, state), then already in dispatch order.
CREATE INDEX jobs_take ON jobs (endpoint, state, low_priority, queued_at, seq);
-- The sweeper and DeleteJobs: jobs of a state whose deadline has passed.
CREATE INDEX jobs_deadline ON jobs (state, deadline);
-- Jobs of a worker (lost-worker requeue, DeleteWorkers' "holds no job" check).
CREATE INDEX jobs_worker ON jobs (worker_id);
-- ListJobs of one endpoint, newest first; CountJobs uses jobs_take.
CREATE INDEX jobs_list ON jobs (endpoint, created_at);

CREATE TABLE stream_chunks (
	job_id TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
	seq    INTEGER NOT NULL,
	data   BLOB,
	PRIMARY KEY (job_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE workers (
	id         TEXT    PRIMARY KEY,
	endpoint   TEXT    NOT NULL,
	first_seen INTEGER NOT NULL,
	last_seen  INTEGER NOT NULL,
	version    TEXT    NOT NULL
) STRICT;

-- spec is the whole spool.Endpoint as JSON; the timestamps beside it are authoritative, because
-- the store (not the caller) decides what CreatedAt a replaced endpoint keeps.
CREATE TABLE endpoints (
	name       TEXT    PRIMARY KEY,
	spec       TEXT    NOT NULL,
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
) STRICT;

CREATE TABLE keys (
	id         TEXT    PRIMARY KEY,
	hash       TEXT    NOT NULL UNIQUE,
	name       TEXT    NOT NULL,
	scope      TEXT    NOT NULL,
	endpoints  TEXT,    -- JSON array, NULL for nil
	read_only  INTEGER NOT NULL,
	source     TEXT    NOT NULL,
	created_at INTEGER NOT NULL
) STRICT;
`,
	// 2: the webhook outbox. Rows outlive their job (no foreign key to jobs): retention deletes
	// jobs, a separate sweep deletes finished deliveries.
	`
CREATE TABLE webhook_deliveries (
	seq             INTEGER PRIMARY KEY,
	id              TEXT    NOT NULL UNIQUE,
	job_id          TEXT    NOT NULL,
	endpoint        TEXT    NOT NULL,
	url             TEXT    NOT NULL,
	host            TEXT    NOT NULL,
	payload         BLOB,
	state           TEXT    NOT NULL,
	attempts        INTEGER NOT NULL,
	next_attempt_at INTEGER NOT NULL,
	lease           INTEGER NOT NULL,
	created_at      INTEGER NOT NULL,
	finished_at     INTEGER NOT NULL,
	last_status     INTEGER NOT NULL,
	last_error      TEXT    NOT NULL,
	redelivery_of   TEXT    NOT NULL
) STRICT;

-- ClaimDeliveries and NextDeliveryDue: pending rows by due time.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
-- DeleteDeliveries: finished rows by finish time.
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (state, finished_at);
-- ListDeliveries of a job.
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id);

CREATE TABLE webhook_attempts (
	delivery_id TEXT    NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
	n           INTEGER NOT NULL,
	at          INTEGER NOT NULL,
	status_code INTEGER NOT NULL,
	error       TEXT    NOT NULL,
	duration_ms INTEGER NOT NULL,
	PRIMARY KEY (delivery_id, n)
) STRICT, WITHOUT ROWID;
`,
	// 3: s3_config now holds the sealed (encrypted) s3Config; had_s3_config remembers that a job
	// had one after its terminal state erased it. Rows from before hold plaintext JSON there: the
	// engine seals them at its start.
	`
ALTER TABLE jobs ADD COLUMN had_s3_config INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET had_s3_config = 1 WHERE s3_config IS NOT NULL;
`,
	// 4: the one deadline column that meant three things becomes expires_at (IN_QUEUE),
	// timeout_at (IN_PROGRESS) and delete_at (terminal), each with a partial index for its sweep;
	// a running job's progress gets a column of its own instead of output; every job carries its
	// retention (0 for jobs from before: the engine gives queued and running ones the configured
	// retention at its start; terminal ones have their delete_at already); the payloads that
	// change (s3_config, progress, output) become the last columns, so that reading a job's head
	// stops before them; and inputs, which never change, move to job_inputs, so that no write of a
	// job rewrites its input. The table is rebuilt, as SQLite does such changes.
	`
CREATE TABLE jobs_v4 (
	seq                  INTEGER PRIMARY KEY,
	id                   TEXT    NOT NULL UNIQUE,
	endpoint             TEXT    NOT NULL,
	state                TEXT    NOT NULL,
	webhook              TEXT    NOT NULL,
	execution_timeout_ms INTEGER NOT NULL,
	ttl_ms               INTEGER NOT NULL,
	retention_ms         INTEGER NOT NULL,
	low_priority         INTEGER NOT NULL,
	sync                 INTEGER NOT NULL,
	created_at           INTEGER NOT NULL,
	queued_at            INTEGER NOT NULL,
	taken_at             INTEGER NOT NULL,
	finished_at          INTEGER NOT NULL,
	expires_at           INTEGER NOT NULL,
	timeout_at           INTEGER NOT NULL,
	delete_at            INTEGER NOT NULL,
	worker_id            TEXT    NOT NULL,
	attempt              INTEGER NOT NULL,
	retries              INTEGER NOT NULL,
	error                TEXT    NOT NULL,
	stop_pod             INTEGER NOT NULL,
	ended_by_worker      INTEGER NOT NULL,
	stop_pending         INTEGER NOT NULL,
	stream_count         INTEGER NOT NULL,
	stream_cursor        INTEGER NOT NULL,
	had_s3_config        INTEGER NOT NULL,
	s3_config            BLOB,
	progress             BLOB,
	output               BLOB
) STRICT;

INSERT INTO jobs_v4 SELECT seq, id, endpoint, state, webhook,
	execution_timeout_ms, ttl_ms, retention_ms, low_priority, sync,
	created_at, queued_at, taken_at, finished_at,
	CASE WHEN state = 'IN_QUEUE' THEN deadline ELSE 0 END,
	CASE WHEN state = 'IN_PROGRESS' THEN deadline ELSE 0 END,
	CASE WHEN state IN ('COMPLETED','FAILED','CANCELLED','TIMED_OUT') THEN deadline ELSE 0 END,
	worker_id, attempt, retries, error,
	stop_pod, ended_by_worker, stop_pending, stream_count, stream_cursor, had_s3_config,
	s3_config,
	CASE WHEN state = 'IN_PROGRESS' THEN output END,
	CASE WHEN state = 'IN_PROGRESS' THEN NULL ELSE output END
FROM jobs;

CREATE TABLE job_inputs (
	seq   INTEGER PRIMARY KEY REFERENCES jobs (seq) ON DELETE CASCADE,
	input BLOB
) STRICT;
INSERT INTO job_inputs (seq, input) SELECT seq, input FROM jobs WHERE input IS NOT NULL;

DROP TABLE jobs;
ALTER TABLE jobs_v4 RENAME TO jobs;

-- ClaimJobs, QueueDepth, QueuePosition and CountJobs: equality on (endpoint, state), then in
-- dispatch order.
CREATE INDEX jobs_take ON jobs (endpoint, state, low_priority, queued_at, seq);
-- The sweeper: queued jobs past their TTL, running jobs past their timeout, terminal jobs past
-- their retention.
CREATE INDEX jobs_expiry ON jobs (expires_at) WHERE state = 'IN_QUEUE';
CREATE INDEX jobs_timeout ON jobs (timeout_at) WHERE state = 'IN_PROGRESS';
CREATE INDEX jobs_retention ON jobs (delete_at) WHERE state IN ('COMPLETED','FAILED','CANCELLED','TIMED_OUT');
-- Jobs of a worker (lost-worker requeue, stop signals, DeleteWorkers' "holds no job" check).
CREATE INDEX jobs_worker ON jobs (worker_id);
-- ListJobs of one endpoint, newest first.
CREATE INDEX jobs_list ON jobs (endpoint, created_at);
`,
	// 5: jobs_take held every job, so each take and each end moved the job's entry within it. It
	// is split by what its queries ask: the queue (claims, the oldest queued job, queue
	// positions) and the running jobs of an endpoint (HeldJobs: /health, the autoscaler). A job
	// is in one of them while it is queued or running, and in neither once it ended. Counting
	// jobs by state, once at Open, scans the table instead.
	`
DROP INDEX jobs_take;
CREATE INDEX jobs_queue ON jobs (endpoint, low_priority, queued_at, seq) WHERE state = 'IN_QUEUE';
CREATE INDEX jobs_running ON jobs (endpoint, worker_id, taken_at) WHERE state = 'IN_PROGRESS';
`,
	// 6: the dashboard's sessions (store.SessionStore).
	`
CREATE TABLE sessions (
	hash       TEXT    PRIMARY KEY,
	key_hash   TEXT    NOT NULL,
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_expiry ON sessions (expires_at);
`,
}

// migrate brings the schema up to date. Each migration re-checks, inside its IMMEDIATE
// transaction, that it is still missing, so two processes opening a new file at once cannot both
// apply it.
func migrate(ctx context.Context, conn *sql.Conn) error { return migrateTo(ctx, conn, migrations) }

// migrateTo applies the pending ones of migs (a prefix of migrations, for tests of old schemas).
func migrateTo(ctx context.Context, conn *sql.Conn, migs []string) error {
	_, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		applied_at INTEGER NOT NULL
	)`)
	if err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	var current int
	if err := conn.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&current); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if current > len(migs) {
		return fmt.Errorf("schema version %d is newer than this binary knows (%d)", current, len(migs))
	}
	for i := current; i < len(migs); i++ {
		if err := applyMigration(ctx, conn, i+1, migs[i]); err != nil {
			return fmt.Errorf("migrate to version %d: %w", i+1, err)
		}
	}
	return nil
}

// applyMigration applies one migration with foreign keys off, as SQLite's procedure for
// rebuilding a table asks (dropping the old table would otherwise cascade to its children), and
// checks them before committing.
func applyMigration(ctx context.Context, conn *sql.Conn, version int, ddl string) (err error) {
	if _, err := conn.ExecContext(ctx, "PRAGMA foreign_keys = OFF"); err != nil {
		return err
	}
	defer func() {
		if _, ferr := conn.ExecContext(context.WithoutCancel(ctx), "PRAGMA foreign_keys = ON"); ferr != nil && err == nil {
			err = ferr
		}
	}()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_, _ = conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		}
	}()
	var n int
	if err := conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM schema_migrations WHERE version = ?", version).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		_, err = conn.ExecContext(ctx, "COMMIT")
		return err
	}
	if _, err := conn.ExecContext(ctx, ddl); err != nil {
		return err
	}
	var violations int
	if err := conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM pragma_foreign_key_check").Scan(&violations); err != nil {
		return err
	}
	if violations > 0 {
		return fmt.Errorf("%d rows violate a foreign key", violations)
	}
	// applied_at is for humans inspecting the file; SQLite's clock is fine for that.
	if _, err := conn.ExecContext(ctx,
		"INSERT INTO schema_migrations (version, applied_at) VALUES (?, CAST(unixepoch('subsec') * 1000 AS INTEGER))",
		version); err != nil {
		return err
	}
	_, err = conn.ExecContext(ctx, "COMMIT")
	return err
}
