package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// jobColumns lists every column of a spool.Job, in the order of jobArgs and scanJob.
const jobColumns = `id, endpoint, state, input, webhook, s3_config,
	execution_timeout_ms, ttl_ms, low_priority, sync,
	created_at, queued_at, taken_at, finished_at, deadline,
	worker_id, attempt, retries, output, error,
	stop_pod, ended_by_worker, stop_pending, retention_ms, stream_count, stream_cursor,
	had_s3_config`

const (
	selectJobs = `SELECT ` + jobColumns + ` FROM jobs`
	insertJob  = `INSERT INTO jobs (` + jobColumns + `)
		VALUES (?,?,?,?,?,?, ?,?,?,?, ?,?,?,?,?, ?,?,?,?,?, ?,?,?,?,?,?, ?)`
	// updateJob writes back every column but id, which names the row; the arguments are
	// jobArgs(j)[1:] followed by the id.
	updateJob = `UPDATE jobs SET endpoint = ?, state = ?, input = ?, webhook = ?, s3_config = ?,
		execution_timeout_ms = ?, ttl_ms = ?, low_priority = ?, sync = ?,
		created_at = ?, queued_at = ?, taken_at = ?, finished_at = ?, deadline = ?,
		worker_id = ?, attempt = ?, retries = ?, output = ?, error = ?,
		stop_pod = ?, ended_by_worker = ?, stop_pending = ?, retention_ms = ?, stream_count = ?, stream_cursor = ?,
		had_s3_config = ?
		WHERE id = ?`
)

// takeJobs selects the next jobs to hand out. The index is forced: without statistics the
// planner may prefer jobs_deadline, which matches nearly every queued job of every endpoint and
// then needs a sort, where jobs_take yields the rows already in dispatch order and stops at the
// limit.
const takeJobs = selectJobs + ` INDEXED BY jobs_take
	WHERE endpoint = ? AND state = ? AND deadline > ?
	ORDER BY low_priority, queued_at, seq LIMIT ?`

// terminalStates is the SQL list of the states DeleteJobs may purge.
const terminalStates = `'COMPLETED','FAILED','CANCELLED','TIMED_OUT'`

func jobArgs(j *spool.Job) []any {
	return []any{
		j.ID, j.Endpoint, string(j.State), blob(j.Input), j.Webhook, blob(j.S3ConfigSealed),
		j.Policy.ExecutionTimeoutMs, j.Policy.TTLMs, j.Policy.LowPriority, j.Sync,
		millis(j.CreatedAt), millis(j.QueuedAt), millis(j.TakenAt), millis(j.FinishedAt), millis(j.Deadline),
		j.WorkerID, j.Attempt, j.Retries, blob(j.Output), j.Error,
		j.StopPod, j.EndedByWorker, j.StopPending, j.RetentionMs, j.StreamCount, j.StreamCursor,
		j.HadS3Config,
	}
}

type scanner interface{ Scan(dest ...any) error }

// readAll runs a query on the read pool and scans every row of its answer with scan.
func readAll[T any](ctx context.Context, s *Store, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	var out []T
	err := s.read(func(db *sql.DB) error {
		rows, err := db.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			v, err := scan(rows)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		return rows.Err()
	})
	return out, err
}

func scanJob(row scanner) (*spool.Job, error) {
	var (
		j                                          spool.Job
		state                                      string
		created, queued, taken, finished, deadline int64
	)
	err := row.Scan(
		&j.ID, &j.Endpoint, &state, rawDest{&j.Input}, &j.Webhook, bytesDest{&j.S3ConfigSealed},
		&j.Policy.ExecutionTimeoutMs, &j.Policy.TTLMs, &j.Policy.LowPriority, &j.Sync,
		&created, &queued, &taken, &finished, &deadline,
		&j.WorkerID, &j.Attempt, &j.Retries, rawDest{&j.Output}, &j.Error,
		&j.StopPod, &j.EndedByWorker, &j.StopPending, &j.RetentionMs, &j.StreamCount, &j.StreamCursor,
		&j.HadS3Config,
	)
	if err != nil {
		return nil, err
	}
	j.State = spool.State(state)
	j.CreatedAt, j.QueuedAt, j.TakenAt = fromMillis(created), fromMillis(queued), fromMillis(taken)
	j.FinishedAt, j.Deadline = fromMillis(finished), fromMillis(deadline)
	return &j, nil
}

// millis is the stored form of a time: unix milliseconds, 0 for the zero time.
func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// fromMillis inverts millis. Times come back in UTC, whatever location they were stored from.
func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// blob binds a RawMessage: NULL for nil, a (possibly empty) BLOB otherwise.
func blob(b json.RawMessage) any {
	if b == nil {
		return nil
	}
	return []byte(b)
}

// rawDest scans a BLOB column into a RawMessage, keeping nil (NULL) apart from empty. Scanning
// into *[]byte would not: the driver reports an empty BLOB as a nil []byte, which database/sql
// copies to nil, while a Scanner still sees the typed nil.
type rawDest struct{ dst *json.RawMessage }

func (r rawDest) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*r.dst = nil
	case []byte:
		*r.dst = append(json.RawMessage{}, v...)
	case string:
		*r.dst = json.RawMessage(v)
	default:
		return fmt.Errorf("scan %T into json.RawMessage", src)
	}
	return nil
}

// bytesDest is rawDest for a plain []byte column.
type bytesDest struct{ dst *[]byte }

func (b bytesDest) Scan(src any) error {
	var r json.RawMessage
	if err := (rawDest{&r}).Scan(src); err != nil {
		return err
	}
	*b.dst = r
	return nil
}

// queryJobs runs a job query and decodes every row. Rows are read to the end before the caller
// writes anything, so the writer never has a statement open while it updates the same table.
func queryJobs(ctx context.Context, q queryer, query string, args ...any) ([]*spool.Job, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var jobs []*spool.Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, j)
	}
	return jobs, rows.Err()
}

// loadJob reads one job; store.ErrNotFound if absent.
func loadJob(ctx context.Context, q queryer, id string) (*spool.Job, error) {
	j, err := scanJob(q.QueryRowContext(ctx, selectJobs+" WHERE id = ?", id))
	return j, notFound(err)
}

// saveJob writes j back, with its Outbox message (if any) in the same transaction.
func saveJob(ctx context.Context, q queryer, j *spool.Job) error {
	args := jobArgs(j)
	if _, err := q.ExecContext(ctx, updateJob, append(args[1:], args[0])...); err != nil {
		return err
	}
	return insertOutbox(ctx, q, j)
}

// apply runs fn on a copy of j. It returns the job to report and whether it must be written:
// the changed copy, or j itself when fn skips (so that a skip never leaks a half-made change);
// any other error from fn is returned as is.
func apply(j *spool.Job, fn func(*spool.Job) error) (*spool.Job, bool, error) {
	next := j.Clone()
	err := fn(next)
	switch {
	case errors.Is(err, store.ErrSkip):
		return j, false, nil
	case err != nil:
		return nil, false, err
	case next.ID != j.ID:
		return nil, false, fmt.Errorf("sqlitestore: apply changed the id of job %s to %s", j.ID, next.ID)
	}
	return next, true, nil
}

// applyAll applies fn to each job and writes back those it changed, returning them in order. The
// first error other than ErrSkip aborts: the caller's savepoint then undoes the writes made so far.
func applyAll(ctx context.Context, tx queryer, jobs []*spool.Job, fn func(*spool.Job) error) ([]*spool.Job, error) {
	changed := make([]*spool.Job, 0, len(jobs))
	for _, j := range jobs {
		next, write, err := apply(j, fn)
		if err != nil {
			return nil, err
		}
		if !write {
			continue
		}
		if err := saveJob(ctx, tx, next); err != nil {
			return nil, fmt.Errorf("save job %s: %w", j.ID, err)
		}
		changed = append(changed, next)
	}
	return changed, nil
}

var errNilApply = errors.New("sqlitestore: nil Apply")

// CreateJob implements store.Store.
func (s *Store) CreateJob(ctx context.Context, p store.CreateJobParams) error {
	if p.Job == nil {
		return errors.New("sqlitestore: create job: nil job")
	}
	id, args := p.Job.ID, jobArgs(p.Job) // encoded here, off the writer goroutine
	outbox := &spool.Job{ID: p.Job.ID, Endpoint: p.Job.Endpoint, Outbox: p.Job.Outbox}
	err := s.do(ctx, func(ctx context.Context, tx queryer) error {
		_, err := tx.ExecContext(ctx, insertJob, args...)
		switch {
		case isUnique(err):
			return fmt.Errorf("create job %s: %w", id, store.ErrConflict)
		case err != nil:
			return fmt.Errorf("create job %s: %w", id, err)
		}
		return insertOutbox(ctx, tx, outbox)
	})
	if err == nil {
		p.Job.Outbox = nil
	}
	return err
}

// GetJob implements store.Store.
func (s *Store) GetJob(ctx context.Context, id string) (*spool.Job, error) {
	var j *spool.Job
	err := s.read(func(db *sql.DB) error {
		var err error
		j, err = loadJob(ctx, db, id)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", id, err)
	}
	return j, nil
}

// ListJobs implements store.Store.
func (s *Store) ListJobs(ctx context.Context, p store.ListJobsParams) ([]*spool.Job, error) {
	var where []string
	var args []any
	if p.Endpoint != "" {
		where, args = append(where, "endpoint = ?"), append(args, p.Endpoint)
	}
	if len(p.States) > 0 {
		where, args = append(where, "state IN ("+placeholders(len(p.States))+")"), appendStates(args, p.States)
	}
	switch {
	case !p.Before.IsZero() && p.BeforeID != "":
		ms := millis(p.Before)
		where = append(where, "(created_at < ? OR (created_at = ? AND id < ?))")
		args = append(args, ms, ms, p.BeforeID)
	case !p.Before.IsZero():
		where, args = append(where, "created_at < ?"), append(args, millis(p.Before))
	}
	limit := p.Limit
	if limit <= 0 {
		limit = 100
	}
	query := selectJobs + whereClause(where) + " ORDER BY created_at DESC, id DESC LIMIT ?"
	var jobs []*spool.Job
	err := s.read(func(db *sql.DB) error {
		var err error
		jobs, err = queryJobs(ctx, db, query, append(args, limit)...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return jobs, nil
}

// UpdateJob implements store.Store.
func (s *Store) UpdateJob(ctx context.Context, p store.UpdateJobParams) (*spool.Job, error) {
	if p.Apply == nil {
		return nil, errNilApply
	}
	return doResult(ctx, s, func(ctx context.Context, tx queryer) (*spool.Job, error) {
		j, err := loadJob(ctx, tx, p.ID)
		if err != nil {
			return nil, fmt.Errorf("update job %s: %w", p.ID, err)
		}
		next, write, err := apply(j, p.Apply)
		if err != nil || !write {
			return next, err
		}
		if err := saveJob(ctx, tx, next); err != nil {
			return nil, fmt.Errorf("update job %s: %w", p.ID, err)
		}
		return next, nil
	})
}

// UpdateJobs implements store.Store.
func (s *Store) UpdateJobs(ctx context.Context, p store.UpdateJobsParams) ([]*spool.Job, error) {
	if p.Apply == nil {
		return nil, errNilApply
	}
	query, args := filterQuery(p.Filter)
	return doResult(ctx, s, func(ctx context.Context, tx queryer) ([]*spool.Job, error) {
		jobs, err := queryJobs(ctx, tx, query, args...)
		if err != nil {
			return nil, fmt.Errorf("update jobs: select: %w", err)
		}
		return applyAll(ctx, tx, jobs, p.Apply)
	})
}

// filterQuery turns a JobFilter into a SELECT; zero fields do not filter.
func filterQuery(f store.JobFilter) (string, []any) {
	var where []string
	var args []any
	if f.Endpoint != "" {
		where, args = append(where, "endpoint = ?"), append(args, f.Endpoint)
	}
	if len(f.States) > 0 {
		where, args = append(where, "state IN ("+placeholders(len(f.States))+")"), appendStates(args, f.States)
	}
	if f.WorkerID != "" {
		where, args = append(where, "worker_id = ?"), append(args, f.WorkerID)
	}
	if !f.DeadlineBefore.IsZero() {
		where, args = append(where, "deadline <= ?"), append(args, millis(f.DeadlineBefore))
	}
	if f.StopPending {
		where = append(where, "stop_pending = 1")
	}
	if !f.WorkerSeenBefore.IsZero() {
		// A job without a worker names no worker, so it is never "held by a lost worker".
		where = append(where, `worker_id <> '' AND NOT EXISTS (
			SELECT 1 FROM workers w WHERE w.id = jobs.worker_id AND w.last_seen > ?)`)
		args = append(args, millis(f.WorkerSeenBefore))
	}
	limit := f.Limit
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	// No ORDER BY: with a Limit, a sort would read every match on every call of a sweep that
	// works through a large backlog a batch at a time.
	return selectJobs + whereClause(where) + " LIMIT ?", append(args, limit)
}

// TakeJobs implements store.Store.
func (s *Store) TakeJobs(ctx context.Context, p store.TakeJobsParams) ([]*spool.Job, error) {
	if p.Apply == nil {
		return nil, errNilApply
	}
	return doResult(ctx, s, func(ctx context.Context, tx queryer) ([]*spool.Job, error) {
		// The single writer is the lock: no other transaction can run between this SELECT and
		// the UPDATEs that follow, so concurrent takes never see the same job.
		jobs, err := queryJobs(ctx, tx, takeJobs, p.Endpoint, string(spool.StateInQueue), millis(p.Now), max(p.Max, 0))
		if err != nil {
			return nil, fmt.Errorf("take jobs of %s: %w", p.Endpoint, err)
		}
		return applyAll(ctx, tx, jobs, p.Apply)
	})
}

// DeleteJobs implements store.Store. Chunks go with their job through ON DELETE CASCADE.
func (s *Store) DeleteJobs(ctx context.Context, p store.DeleteJobsParams) (int, error) {
	limit := p.Limit
	if limit <= 0 {
		limit = -1
	}
	return doResult(ctx, s, func(ctx context.Context, tx queryer) (int, error) {
		res, err := tx.ExecContext(ctx, `DELETE FROM jobs WHERE seq IN (
			SELECT seq FROM jobs WHERE state IN (`+terminalStates+`) AND deadline <= ? LIMIT ?)`, millis(p.Before), limit)
		if err != nil {
			return 0, fmt.Errorf("delete jobs: %w", err)
		}
		n, err := res.RowsAffected()
		return int(n), err
	})
}

// CountJobs implements store.Store.
func (s *Store) CountJobs(ctx context.Context, endpoint string) (store.JobCounts, error) {
	counts := store.JobCounts{ByState: make(map[spool.State]int, len(spool.States))}
	for _, st := range spool.States {
		counts.ByState[st] = 0
	}
	err := s.read(func(db *sql.DB) error {
		rows, err := db.QueryContext(ctx, `SELECT state, COUNT(*), SUM(retries > 0)
			FROM jobs WHERE endpoint = ? GROUP BY state`, endpoint)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var state string
			var n, retried int
			if err := rows.Scan(&state, &n, &retried); err != nil {
				return err
			}
			counts.ByState[spool.State(state)] = n
			counts.Retried += retried
		}
		return rows.Err()
	})
	if err != nil {
		return store.JobCounts{}, fmt.Errorf("count jobs of %s: %w", endpoint, err)
	}
	return counts, nil
}

func appendStates(args []any, states []spool.State) []any {
	for _, st := range states {
		args = append(args, string(st))
	}
	return args
}

func whereClause(conds []string) string {
	if len(conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(conds, " AND ")
}

// QueueStats implements store.Store. Both queries are served by the jobs_take index.
func (s *Store) QueueStats(ctx context.Context, p store.QueueStatsParams) (store.QueueStats, error) {
	var qs store.QueueStats
	err := s.read(func(db *sql.DB) error {
		var oldest sql.NullInt64
		err := db.QueryRowContext(ctx, `SELECT COALESCE(SUM(state = ?1 AND low_priority = 0), 0),
			COALESCE(SUM(state = ?1 AND low_priority <> 0), 0),
			COALESCE(SUM(state = ?2 AND low_priority = 0), 0),
			MIN(CASE WHEN state = ?1 AND low_priority = 0 THEN queued_at END)
			FROM jobs WHERE endpoint = ?3 AND state IN (?1, ?2)`,
			string(spool.StateInQueue), string(spool.StateInProgress), p.Endpoint).Scan(&qs.Normal, &qs.Low, &qs.Running, &oldest)
		if err != nil {
			return err
		}
		if oldest.Valid {
			qs.OldestNormal = fromMillis(oldest.Int64)
		}
		if p.JobID == "" {
			return nil
		}
		err = db.QueryRowContext(ctx, `SELECT 1 + (SELECT COUNT(*) FROM jobs j
				WHERE j.endpoint = me.endpoint AND j.state = me.state
				AND (j.low_priority, j.queued_at, j.seq) < (me.low_priority, me.queued_at, me.seq))
			FROM jobs me WHERE me.id = ? AND me.endpoint = ? AND me.state = ?`,
			p.JobID, p.Endpoint, string(spool.StateInQueue)).Scan(&qs.Position)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		return err
	})
	if err != nil {
		return store.QueueStats{}, fmt.Errorf("queue stats of %s: %w", p.Endpoint, err)
	}
	return qs, nil
}
