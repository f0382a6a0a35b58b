package pgstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrations are applied in order, each once; migrations[i] brings the schema to version i+1.
// Never edit a released migration: append a new one.
//
// Conventions (those of sqlitestore, so both stores answer alike): times are BIGINT unix
// milliseconds with 0 for the zero time; payloads are BYTEA, NULL for nil, so that nil and empty
// survive a round trip and the bytes come back as they were sent; booleans are BOOLEAN.
//
// State conditions are spelled as literals, in the partial indexes and in the queries alike: the
// planner uses a partial index only when it can prove the query implies its predicate, which it
// cannot from a bound parameter in a cached (generic) plan.
var migrations = []string{
	// 1: the schema sqlitestore reached at its version 5.
	`
CREATE TABLE jobs (
	-- seq orders jobs by insertion: the FIFO tie-break of ClaimJobs, and the key of job_inputs.
	seq                  BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id                   TEXT    NOT NULL UNIQUE,
	endpoint             TEXT    NOT NULL,
	state                TEXT    NOT NULL,
	webhook              TEXT    NOT NULL,
	execution_timeout_ms BIGINT  NOT NULL,
	ttl_ms               BIGINT  NOT NULL,
	retention_ms         BIGINT  NOT NULL,
	low_priority         BOOLEAN NOT NULL,
	sync                 BOOLEAN NOT NULL,
	created_at           BIGINT  NOT NULL,
	queued_at            BIGINT  NOT NULL,
	taken_at             BIGINT  NOT NULL,
	finished_at          BIGINT  NOT NULL,
	expires_at           BIGINT  NOT NULL,
	timeout_at           BIGINT  NOT NULL,
	delete_at            BIGINT  NOT NULL,
	worker_id            TEXT    NOT NULL,
	attempt              INTEGER NOT NULL,
	retries              INTEGER NOT NULL,
	-- BYTEA: a worker's error may hold a NUL, which TEXT refuses.
	error                BYTEA   NOT NULL,
	stop_pod             BOOLEAN NOT NULL,
	ended_by_worker      BOOLEAN NOT NULL,
	stop_pending         BOOLEAN NOT NULL,
	stream_count         BIGINT  NOT NULL,
	stream_cursor        BIGINT  NOT NULL,
	had_s3_config        BOOLEAN NOT NULL,
	s3_config            BYTEA,
	progress             BYTEA,
	output               BYTEA
) WITH (fillfactor = 90); -- room on the page for the HOT updates of progress and stream counters

-- A job's input never changes: in a table of its own, no update of the head copies it.
CREATE TABLE job_inputs (
	seq   BIGINT PRIMARY KEY REFERENCES jobs (seq) ON DELETE CASCADE,
	input BYTEA  NOT NULL -- no row for a nil input
);

-- ClaimJobs, QueuePosition and QueueDepth: an endpoint's queue in dispatch order.
CREATE INDEX jobs_queue ON jobs (endpoint, low_priority, queued_at, seq) WHERE state = 'IN_QUEUE';
-- HeldJobs of an endpoint (/health, the autoscaler) and QueueDepth's running jobs.
CREATE INDEX jobs_running ON jobs (endpoint, worker_id, taken_at) WHERE state = 'IN_PROGRESS';
-- The sweeper: queued jobs past their TTL, running jobs past their timeout, terminal jobs past
-- their retention.
CREATE INDEX jobs_expiry ON jobs (expires_at) WHERE state = 'IN_QUEUE';
CREATE INDEX jobs_timeout ON jobs (timeout_at) WHERE state = 'IN_PROGRESS';
CREATE INDEX jobs_retention ON jobs (delete_at) WHERE state IN ('COMPLETED','FAILED','CANCELLED','TIMED_OUT');
-- Jobs of a worker: stop signals, HeldJobs of a worker, DeleteWorkers' "holds no job" check.
CREATE INDEX jobs_worker ON jobs (worker_id);
-- ListJobs of one endpoint, newest first; state and retries ride along so that CountJobs counts
-- an endpoint's jobs from this index alone.
CREATE INDEX jobs_list ON jobs (endpoint, created_at, id) INCLUDE (state, retries);

CREATE TABLE stream_chunks (
	job_id TEXT   NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
	seq    BIGINT NOT NULL,
	data   BYTEA,
	PRIMARY KEY (job_id, seq)
);

CREATE TABLE workers (
	id         TEXT   PRIMARY KEY,
	endpoint   TEXT   NOT NULL,
	first_seen BIGINT NOT NULL,
	last_seen  BIGINT NOT NULL,
	version    TEXT   NOT NULL
);

-- spec is the whole spool.Endpoint as JSON (text: it is only ever decoded by Spool); the
-- timestamps beside it are authoritative, because the store (not the caller) decides what
-- CreatedAt a replaced endpoint keeps.
CREATE TABLE endpoints (
	name       TEXT   PRIMARY KEY,
	spec       TEXT   NOT NULL,
	created_at BIGINT NOT NULL,
	updated_at BIGINT NOT NULL
);

CREATE TABLE keys (
	id         TEXT    PRIMARY KEY,
	hash       TEXT    NOT NULL UNIQUE,
	name       TEXT    NOT NULL,
	scope      TEXT    NOT NULL,
	endpoints  TEXT,   -- JSON array, NULL for nil
	read_only  BOOLEAN NOT NULL,
	source     TEXT    NOT NULL,
	created_at BIGINT  NOT NULL
);

-- The webhook outbox. Rows outlive their job (no foreign key to jobs): retention deletes jobs, a
-- separate sweep deletes finished deliveries.
CREATE TABLE webhook_deliveries (
	seq             BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id              TEXT    NOT NULL UNIQUE,
	job_id          TEXT    NOT NULL,
	endpoint        TEXT    NOT NULL,
	url             TEXT    NOT NULL,
	host            TEXT    NOT NULL,
	payload         BYTEA,
	state           TEXT    NOT NULL,
	attempts        INTEGER NOT NULL,
	next_attempt_at BIGINT  NOT NULL,
	lease           BIGINT  NOT NULL,
	created_at      BIGINT  NOT NULL,
	finished_at     BIGINT  NOT NULL,
	last_status     INTEGER NOT NULL,
	last_error      TEXT    NOT NULL,
	redelivery_of   TEXT    NOT NULL
);

-- ClaimDeliveries and NextDeliveryDue: pending rows by due time.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, seq) WHERE state = 'pending';
-- DeleteDeliveries: finished rows by finish time.
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (finished_at) WHERE state IN ('delivered','failed');
-- ListDeliveries of a job.
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id);

CREATE TABLE webhook_attempts (
	delivery_id TEXT    NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
	n           INTEGER NOT NULL,
	at          BIGINT  NOT NULL,
	status_code INTEGER NOT NULL,
	error       TEXT    NOT NULL,
	duration_ms BIGINT  NOT NULL,
	PRIMARY KEY (delivery_id, n)
);
`,
	// 2: the dashboard's sessions (store.SessionStore).
	`
CREATE TABLE sessions (
	hash       TEXT   PRIMARY KEY,
	key_hash   TEXT   NOT NULL,
	created_at BIGINT NOT NULL,
	expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);
`,
}

// migrationLock is the advisory lock that serialises migrations of one schema: a fixed string
// and the schema, so that stores in different schemas of a database (tests, tenants) never wait
// for each other.
const migrationLock = `SELECT pg_advisory_xact_lock(hashtextextended('spool-run/spool schema migration ' || COALESCE(current_schema(), ''), 0))`

// migrate brings the schema of the session's current_schema() up to migs (migrations, or a
// prefix of it in tests), applying every pending migration in one transaction. The advisory lock
// is taken first, so that of replicas starting together one migrates and the others find the
// schema up to date once it has committed.
func migrate(ctx context.Context, pool *pgxpool.Pool, migs []string) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, migrationLock); err != nil {
			return fmt.Errorf("lock the schema for migration: %w", err)
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass('spool_schema_version') IS NOT NULL`).Scan(&exists); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if !exists {
			// One row per migration applied: applied_at is for humans inspecting the database.
			if _, err := tx.Exec(ctx, `CREATE TABLE spool_schema_version (
				version    INTEGER     PRIMARY KEY,
				applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
			)`); err != nil {
				return fmt.Errorf("create spool_schema_version: %w", err)
			}
		}
		var current int
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM spool_schema_version`).Scan(&current); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if current > len(migs) {
			return fmt.Errorf("schema version %d is newer than this binary knows (%d): run a newer Spool", current, len(migs))
		}
		for i := current; i < len(migs); i++ {
			if _, err := tx.Exec(ctx, migs[i]); err != nil {
				return fmt.Errorf("migrate to version %d: %w", i+1, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO spool_schema_version (version) VALUES ($1)`, i+1); err != nil {
				return fmt.Errorf("migrate to version %d: %w", i+1, err)
			}
		}
		return nil
	})
}
