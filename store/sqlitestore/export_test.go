package sqlitestore

import (
	"context"
	"database/sql"
	"strings"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// WriterPragma reads a pragma on the write connection, through the writer like any write.
func (s *Store) WriterPragma(ctx context.Context, name string) (string, error) {
	return doResult(ctx, s, func(ctx context.Context, tx queryer) (string, error) {
		var v string
		err := tx.QueryRowContext(ctx, "PRAGMA "+name).Scan(&v)
		return v, err
	})
}

// SchemaVersions lists the applied migrations.
func (s *Store) SchemaVersions(ctx context.Context) ([]int, error) {
	rows, err := s.readDB.QueryContext(ctx, "SELECT version FROM schema_migrations ORDER BY version")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var vs []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	return vs, rows.Err()
}

// Migrations is the number of migrations this package knows.
var Migrations = len(migrations)

// BlockWriter occupies the writer: it closes started once the writer runs it, then waits for
// release. Writes submitted meanwhile queue up behind it.
func (s *Store) BlockWriter(ctx context.Context, started chan<- struct{}, release <-chan struct{}) error {
	return s.do(ctx, func(context.Context, queryer) error {
		close(started)
		<-release
		return nil
	})
}

// Queued reports how many writes wait for the writer.
func (s *Store) Queued() int { return len(s.ops) }

// CreateAtVersion creates a database at path with only the first v migrations applied, and runs
// stmts on it: a file as an older binary left it.
func CreateAtVersion(ctx context.Context, path string, v int, stmts ...string) error {
	db, err := sql.Open("sqlite", dsn(path, "journal_mode(WAL)"))
	if err != nil {
		return err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := migrateTo(ctx, conn, migrations[:v]); err != nil {
		return err
	}
	for _, q := range stmts {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// FindJobsPlan is SQLite's plan for the query FindJobs makes of f, one step a line.
func (s *Store) FindJobsPlan(ctx context.Context, f store.JobFilter) (string, error) {
	query, args, err := findJobsQuery(f)
	if err != nil {
		return "", err
	}
	return s.plan(ctx, query, args...)
}

// RecountJobs counts an endpoint's jobs with the aggregate CountJobs ran before the counts were
// kept in memory: the reference the tests hold the counts to, and the baseline of the benchmarks.
func (s *Store) RecountJobs(ctx context.Context, endpoint string) (spool.JobCounts, error) {
	counts := spool.JobCounts{ByState: make(map[spool.State]int, len(spool.States))}
	for _, st := range spool.States {
		counts.ByState[st] = 0
	}
	type row struct {
		state      string
		n, retried int
	}
	rows, err := readAll(ctx, s, func(sc scanner) (row, error) {
		var r row
		return r, sc.Scan(&r.state, &r.n, &r.retried)
	}, `SELECT state, COUNT(*), SUM(retries > 0) FROM jobs WHERE endpoint = ? GROUP BY state`, endpoint)
	if err != nil {
		return spool.JobCounts{}, err
	}
	for _, r := range rows {
		counts.ByState[spool.State(r.state)] = r.n
		counts.Retried += r.retried
	}
	return counts, nil
}

// RecountQueue is the aggregate QueueDepth ran before the counts were kept in memory.
func (s *Store) RecountQueue(ctx context.Context, endpoint string) (spool.QueueDepth, error) {
	var d spool.QueueDepth
	err := s.read(func(db queryer) error {
		var oldest sql.NullInt64
		err := db.QueryRowContext(ctx, `SELECT COALESCE(SUM(state = 'IN_QUEUE' AND low_priority = 0), 0),
			COALESCE(SUM(state = 'IN_QUEUE' AND low_priority <> 0), 0),
			COALESCE(SUM(state = 'IN_PROGRESS' AND low_priority = 0), 0),
			MIN(CASE WHEN state = 'IN_QUEUE' AND low_priority = 0 THEN queued_at END)
			FROM jobs WHERE endpoint = ? AND state IN ('IN_QUEUE', 'IN_PROGRESS')`,
			endpoint).Scan(&d.Normal, &d.Low, &d.Running, &oldest)
		if oldest.Valid {
			d.OldestNormal = fromMillis(oldest.Int64)
		}
		return err
	})
	return d, err
}

// RecountAll recounts every endpoint's jobs in one read transaction, with two GROUP BYs over the
// whole table: what CountJobs and QueueDepth must report for each endpoint that has jobs.
func (s *Store) RecountAll(ctx context.Context) (map[string]spool.JobCounts, map[string]spool.QueueDepth, error) {
	counts := make(map[string]spool.JobCounts)
	depths := make(map[string]spool.QueueDepth)
	err := s.read(func(queryer) error {
		// A transaction: one snapshot for every query (the prepared statements are for single ones).
		tx, err := s.readDB.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback() }() // read-only: nothing to commit
		rows, err := tx.QueryContext(ctx, `SELECT endpoint, state, COUNT(*), SUM(retries > 0) FROM jobs GROUP BY endpoint, state`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var ep, state string
			var n, retried int
			if err := rows.Scan(&ep, &state, &n, &retried); err != nil {
				return err
			}
			c, ok := counts[ep]
			if !ok {
				c = spool.JobCounts{ByState: make(map[spool.State]int, len(spool.States))}
				for _, st := range spool.States {
					c.ByState[st] = 0
				}
			}
			c.ByState[spool.State(state)] = n
			c.Retried += retried
			counts[ep] = c
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = tx.QueryContext(ctx, `SELECT endpoint, COALESCE(SUM(state = 'IN_QUEUE' AND low_priority = 0), 0),
			COALESCE(SUM(state = 'IN_QUEUE' AND low_priority <> 0), 0),
			COALESCE(SUM(state = 'IN_PROGRESS' AND low_priority = 0), 0),
			MIN(CASE WHEN state = 'IN_QUEUE' AND low_priority = 0 THEN queued_at END)
			FROM jobs GROUP BY endpoint`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var ep string
			var d spool.QueueDepth
			var oldest sql.NullInt64
			if err := rows.Scan(&ep, &d.Normal, &d.Low, &d.Running, &oldest); err != nil {
				return err
			}
			if oldest.Valid {
				d.OldestNormal = fromMillis(oldest.Int64)
			}
			depths[ep] = d
		}
		return rows.Err()
	})
	return counts, depths, err
}

// FailBatch is a write that makes the transaction it runs in fail as a whole. Run without
// savepoints it fails (there is none to release), so the writer runs the batch again with them;
// then it releases its own, the writer's RELEASE fails, and the writer rolls back every write of
// the batch.
func (s *Store) FailBatch(ctx context.Context) error {
	return s.do(ctx, func(ctx context.Context, tx queryer) error {
		_, err := tx.ExecContext(ctx, "RELEASE op")
		return err
	})
}

// OldestQueuedPlan is SQLite's plan for the lookup of an endpoint's oldest queued job.
func (s *Store) OldestQueuedPlan(ctx context.Context) (string, error) {
	return s.plan(ctx, oldestQueued, "ep")
}

// BulkQueue inserts n queued normal-priority jobs of endpoint, ids prefix0 to prefix<n-1>, queued
// one millisecond apart from queuedAt, straight into the file at path (a database no store has
// open): a large queue in a second, for benchmarks.
func BulkQueue(ctx context.Context, path, endpoint, prefix string, n int, queuedAt time.Time) error {
	db, err := sql.Open("sqlite", dsn(path, "journal_mode(WAL)"))
	if err != nil {
		return err
	}
	defer db.Close()
	q := millis(queuedAt)
	_, err = db.ExecContext(ctx, `WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)
		INSERT INTO jobs (id, endpoint, state, webhook, execution_timeout_ms, ttl_ms, retention_ms,
			low_priority, sync, created_at, queued_at, taken_at, finished_at, expires_at, timeout_at,
			delete_at, worker_id, attempt, retries, error, stop_pod, ended_by_worker, stop_pending,
			stream_count, stream_cursor, had_s3_config)
		SELECT ? || i, ?, 'IN_QUEUE', '', 600000, 86400000, 60000,
			0, 0, ? + i, ? + i, 0, 0, ? + i + 86400000, 0,
			0, '', 0, 0, '', 0, 0, 0,
			0, 0, 0
		FROM n`, n, prefix, endpoint, q, q, q)
	return err
}

// ClaimPlan and PositionPlan are SQLite's plans for a claim and for a queue position.
func (s *Store) ClaimPlan(ctx context.Context) (string, error) {
	return s.plan(ctx, claimQuery("state = ?"), "IN_PROGRESS", "ep", 0, 1)
}

func (s *Store) PositionPlan(ctx context.Context) (string, error) {
	return s.plan(ctx, positionQuery, "j", "ep")
}

// plan is SQLite's plan for query, one step a line.
func (s *Store) plan(ctx context.Context, query string, args ...any) (string, error) {
	steps, err := readAll(ctx, s, func(row scanner) (string, error) {
		var id, parent, unused int
		var detail string
		return detail, row.Scan(&id, &parent, &unused, &detail)
	}, "EXPLAIN QUERY PLAN "+query, args...)
	return strings.Join(steps, "\n"), err
}

// HeldJobsPlan is SQLite's plan for HeldJobs with p.
func (s *Store) HeldJobsPlan(ctx context.Context, p store.HeldJobsParams) (string, error) {
	query, args := heldJobsQuery(p)
	return s.plan(ctx, query, args...)
}
