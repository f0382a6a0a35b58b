package sqlitestore

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// A job is two rows: its head, with the payloads it changes (output, progress, the sealed
// s3Config) as the last columns of the jobs table, and its input, which never changes, in
// job_inputs. So a write of the head never rewrites a large input (SQLite rewrites a whole row,
// overflow pages included, whenever its size changes), and a read of the head stops before the
// payloads.

// headColumns lists the columns of a job's head, in the order of headArgs and scanHead.
const headColumns = `jobs.id, jobs.endpoint, jobs.state, jobs.webhook,
	jobs.execution_timeout_ms, jobs.ttl_ms, jobs.retention_ms, jobs.low_priority, jobs.sync,
	jobs.created_at, jobs.queued_at, jobs.taken_at, jobs.finished_at,
	jobs.expires_at, jobs.timeout_at, jobs.delete_at,
	jobs.worker_id, jobs.attempt, jobs.retries, jobs.error,
	jobs.stop_pod, jobs.ended_by_worker, jobs.stop_pending, jobs.stream_count, jobs.stream_cursor,
	jobs.had_s3_config`

const insertJob = `INSERT INTO jobs (id, endpoint, state, webhook,
	execution_timeout_ms, ttl_ms, retention_ms, low_priority, sync,
	created_at, queued_at, taken_at, finished_at,
	expires_at, timeout_at, delete_at,
	worker_id, attempt, retries, error,
	stop_pod, ended_by_worker, stop_pending, stream_count, stream_cursor,
	had_s3_config, s3_config, progress, output)
	VALUES (?,?,?,?, ?,?,?,?,?, ?,?,?,?, ?,?,?, ?,?,?,?, ?,?,?,?,?, ?,?,?,?)`

const insertInput = `INSERT INTO job_inputs (seq, input) VALUES (?, ?)`

// terminalStates is the SQL list of the terminal states, spelled as the partial index on delete_at
// spells them: SQLite uses a partial index only for a query that repeats its condition.
const terminalStates = `'COMPLETED','FAILED','CANCELLED','TIMED_OUT'`

func jobArgs(j *spool.Job) []any {
	return []any{
		j.ID, j.Endpoint, string(j.State), j.Webhook,
		j.Policy.ExecutionTimeoutMs, j.Policy.TTLMs, j.RetentionMs, j.Policy.LowPriority, j.Sync,
		millis(j.CreatedAt), millis(j.QueuedAt), millis(j.TakenAt), millis(j.FinishedAt),
		millis(j.ExpiresAt), millis(j.TimeoutAt), millis(j.DeleteAt),
		j.WorkerID, j.Attempt, j.Retries, j.Error,
		j.StopPod, j.EndedByWorker, j.StopPending, j.StreamCount, j.StreamCursor,
		j.HadS3Config, blob(j.S3ConfigSealed), blob(j.Progress), blob(j.Output),
	}
}

// selectJobs is the SELECT of jobs with the payloads with names, and what to scan them into.
func selectJobs(with store.Payloads) string {
	cols := headColumns
	from := " FROM jobs"
	if with&store.PayloadOutput != 0 {
		cols += ", jobs.output, jobs.progress"
	}
	if with&store.PayloadS3Config != 0 {
		cols += ", jobs.s3_config"
	}
	if with&store.PayloadInput != 0 {
		cols += ", job_inputs.input"
		from += " LEFT JOIN job_inputs ON job_inputs.seq = jobs.seq"
	}
	return "SELECT " + cols + from
}

type scanner interface{ Scan(dest ...any) error }

// scanJob reads a row of selectJobs(with).
func scanJob(row scanner, with store.Payloads) (*spool.Job, error) {
	var (
		j                                spool.Job
		state                            string
		created, queued, taken, finished int64
		expires, timeout, deleteAt       int64
	)
	dest := []any{
		&j.ID, &j.Endpoint, &state, &j.Webhook,
		&j.Policy.ExecutionTimeoutMs, &j.Policy.TTLMs, &j.RetentionMs, &j.Policy.LowPriority, &j.Sync,
		&created, &queued, &taken, &finished,
		&expires, &timeout, &deleteAt,
		&j.WorkerID, &j.Attempt, &j.Retries, &j.Error,
		&j.StopPod, &j.EndedByWorker, &j.StopPending, &j.StreamCount, &j.StreamCursor,
		&j.HadS3Config,
	}
	if with&store.PayloadOutput != 0 {
		dest = append(dest, rawDest{&j.Output}, rawDest{&j.Progress})
	}
	if with&store.PayloadS3Config != 0 {
		dest = append(dest, bytesDest{&j.S3ConfigSealed})
	}
	if with&store.PayloadInput != 0 {
		dest = append(dest, rawDest{&j.Input})
	}
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	j.State = spool.State(state)
	j.CreatedAt, j.QueuedAt, j.TakenAt, j.FinishedAt = fromMillis(created), fromMillis(queued), fromMillis(taken), fromMillis(finished)
	j.ExpiresAt, j.TimeoutAt, j.DeleteAt = fromMillis(expires), fromMillis(timeout), fromMillis(deleteAt)
	return &j, nil
}

// readAll runs a query on the read pool and scans every row of its answer with scan.
func readAll[T any](ctx context.Context, s *Store, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	var out []T
	err := s.read(func(db queryer) error {
		var err error
		out, err = queryAll(ctx, db, scan, query, args...)
		return err
	})
	return out, err
}

// queryAll runs a query and scans every row of its answer. Rows are read to the end before the
// caller writes anything, so the writer never has a statement open while it updates the table.
func queryAll[T any](ctx context.Context, q queryer, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func jobScanner(with store.Payloads) func(scanner) (*spool.Job, error) {
	return func(row scanner) (*spool.Job, error) { return scanJob(row, with) }
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
func blob(b []byte) any {
	if b == nil {
		return nil
	}
	return b
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

// loadJob reads one job in the caller's transaction; store.ErrNotFound if absent.
func loadJob(ctx context.Context, q queryer, id string, with store.Payloads) (*spool.Job, error) {
	j, err := scanJob(q.QueryRowContext(ctx, selectJobs(with)+" WHERE jobs.id = ?", id), with)
	return j, notFound(err)
}

// CreateJob implements store.Store.
func (s *Store) CreateJob(ctx context.Context, p store.CreateJobParams) error {
	if p.Job == nil {
		return errors.New("sqlitestore: create job: nil job")
	}
	id, args := p.Job.ID, jobArgs(p.Job) // encoded here, off the writer goroutine
	slot := slotOf(p.Job)
	// Not copied: a 10 MB input would cost 10 MB more per submission. The caller does not change
	// a job's input once it hands it over (CreateJobParams).
	input := p.Job.Input
	return s.do(ctx, func(ctx context.Context, tx queryer) error {
		res, err := tx.ExecContext(ctx, insertJob, args...)
		switch {
		case isUnique(err):
			return fmt.Errorf("create job %s: %w", id, store.ErrConflict)
		case err != nil:
			return fmt.Errorf("create job %s: %w", id, err)
		}
		s.counts.moved(nil, &slot)
		if input == nil {
			return nil
		}
		seq, err := res.LastInsertId()
		if err != nil {
			return fmt.Errorf("create job %s: %w", id, err)
		}
		if _, err := tx.ExecContext(ctx, insertInput, seq, []byte(input)); err != nil {
			return fmt.Errorf("create job %s: input: %w", id, err)
		}
		return nil
	})
}

// GetJob implements store.Store.
func (s *Store) GetJob(ctx context.Context, p store.GetJobParams) (*spool.Job, error) {
	var j *spool.Job
	err := s.read(func(db queryer) error {
		var err error
		j, err = loadJob(ctx, db, p.ID, p.With)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", p.ID, err)
	}
	return j, nil
}

// ListJobs implements store.Store.
func (s *Store) ListJobs(ctx context.Context, p store.ListJobsParams) ([]*spool.Job, error) {
	var w where
	if p.Endpoint != "" {
		w.add("jobs.endpoint = ?", p.Endpoint)
	}
	if err := w.states(p.States); err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	switch {
	case !p.Before.IsZero() && p.BeforeID != "":
		ms := millis(p.Before)
		w.add("(jobs.created_at < ? OR (jobs.created_at = ? AND jobs.id < ?))", ms, ms, p.BeforeID)
	case !p.Before.IsZero():
		w.add("jobs.created_at < ?", millis(p.Before))
	}
	limit := p.Limit
	if limit <= 0 {
		limit = 100
	}
	query := selectJobs(p.With) + w.String() + " ORDER BY jobs.created_at DESC, jobs.id DESC LIMIT ?"
	jobs, err := readAll(ctx, s, jobScanner(p.With), query, append(w.args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return jobs, nil
}

// FindJobs implements store.Store.
func (s *Store) FindJobs(ctx context.Context, f store.JobFilter) ([]*spool.Job, error) {
	query, args, err := findJobsQuery(f)
	if err != nil {
		return nil, fmt.Errorf("find jobs: %w", err)
	}
	jobs, err := readAll(ctx, s, jobScanner(f.With), query, args...)
	if err != nil {
		return nil, fmt.Errorf("find jobs: %w", err)
	}
	return jobs, nil
}

func findJobsQuery(f store.JobFilter) (string, []any, error) {
	var w where
	if len(f.IDs) > 0 {
		args := make([]any, len(f.IDs))
		for i, id := range f.IDs {
			args[i] = id
		}
		w.add("jobs.id IN ("+placeholders(len(f.IDs))+")", args...)
	}
	switch {
	case f.Endpoint != "" && f.WorkerID != "":
		// A worker holds few jobs: the unary + keeps the planner, which has no statistics, from
		// walking an endpoint's jobs (jobs_list, jobs_queue) instead of the worker's (jobs_worker).
		w.add("+jobs.endpoint = ?", f.Endpoint)
	case f.Endpoint != "":
		w.add("jobs.endpoint = ?", f.Endpoint)
	}
	if err := w.states(f.States); err != nil {
		return "", nil, err
	}
	if f.WorkerID != "" {
		w.add("jobs.worker_id = ?", f.WorkerID)
	}
	if f.StopPending {
		w.add("jobs.stop_pending = 1")
	}
	if !f.ExpiresBy.IsZero() {
		w.add("jobs.expires_at <= ?", millis(f.ExpiresBy))
	}
	if !f.TimesOutBy.IsZero() {
		w.add("jobs.timeout_at <= ?", millis(f.TimesOutBy))
	}
	limit := f.Limit
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	// No ORDER BY: with a Limit, a sort would read every match on every call of a sweep that
	// works through a large backlog a batch at a time.
	return selectJobs(f.With) + w.String() + " LIMIT ?", append(w.args, limit), nil
}

// where builds a WHERE clause from conditions and their arguments.
type where struct {
	conds []string
	args  []any
}

func (w *where) add(cond string, args ...any) {
	w.conds = append(w.conds, cond)
	w.args = append(w.args, args...)
}

// states adds the condition that the state is one of states, spelled out rather than bound, and
// as "state = 'X'" for one state: SQLite uses a partial index (the sweeps' jobs_expiry and
// jobs_timeout) only for a query that repeats the index's condition as it is written.
func (w *where) states(states []spool.State) error {
	list := make([]string, len(states))
	for i, st := range states {
		if !st.Valid() {
			return fmt.Errorf("not a job state: %q", st)
		}
		list[i] = "'" + string(st) + "'"
	}
	switch len(list) {
	case 0:
	case 1:
		w.add("jobs.state = " + list[0])
	default:
		w.add("jobs.state IN (" + strings.Join(list, ",") + ")")
	}
	return nil
}

func (w *where) String() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// expect adds the conditions of a store.Expect.
func (w *where) expect(e store.Expect) {
	w.add("jobs.state = ?", string(e.State))
	if e.Endpoint != "" {
		w.add("jobs.endpoint = ?", e.Endpoint)
	}
	if e.WorkerID != "" {
		w.add("jobs.worker_id = ?", e.WorkerID)
	}
	if e.Exact {
		w.add("jobs.attempt = ? AND jobs.retries = ?", e.Attempt, e.Retries)
	} else if e.Attempt > 0 {
		w.add("jobs.attempt = ?", e.Attempt)
	}
	switch e.StopPending {
	case store.FlagSet:
		w.add("jobs.stop_pending = 1")
	case store.FlagClear:
		w.add("jobs.stop_pending = 0")
	}
	if !e.WorkerSeenBefore.IsZero() {
		w.seenBefore(e.WorkerSeenBefore)
	}
}

// seenBefore adds that the job's worker was last seen at or before t, or never.
func (w *where) seenBefore(t time.Time) {
	w.add(`NOT EXISTS (SELECT 1 FROM workers WHERE workers.id = jobs.worker_id AND workers.last_seen > ?)`, millis(t))
}

var errEmptyChange = errors.New("sqlitestore: a change that sets nothing")

// setClause is the SET list of a change and its arguments, now being the base of the deadlines.
// The order of the columns is fixed, so that a change of the same fields makes the same
// statement, which the writer keeps prepared.
func setClause(c store.JobChange, now time.Time) (string, []any, error) {
	if c.Set == 0 {
		return "", nil, errEmptyChange
	}
	var cols []string
	var args []any
	set := func(f store.Fields, col string, v any) {
		if c.Set&f != 0 {
			cols, args = append(cols, col+" = ?"), append(args, v)
		}
	}
	set(store.SetState, "state", string(c.State))
	set(store.SetWorkerID, "worker_id", c.WorkerID)
	set(store.SetOutput, "output", blob(c.Output))
	set(store.SetProgress, "progress", blob(c.Progress))
	set(store.SetError, "error", c.Error)
	set(store.SetS3Config, "s3_config", blob(c.S3ConfigSealed))
	set(store.SetHadS3Config, "had_s3_config", c.HadS3Config)
	set(store.SetStopPod, "stop_pod", c.StopPod)
	set(store.SetEndedByWorker, "ended_by_worker", c.EndedByWorker)
	set(store.SetStopPending, "stop_pending", c.StopPending)
	set(store.SetRetention, "retention_ms", c.RetentionMs)
	set(store.SetQueuedAt, "queued_at", millis(c.QueuedAt))
	set(store.SetTakenAt, "taken_at", millis(c.TakenAt))
	set(store.SetFinishedAt, "finished_at", millis(c.FinishedAt))
	if c.Set&store.IncAttempt != 0 {
		cols = append(cols, "attempt = attempt + 1")
	}
	if c.Set&store.IncRetries != 0 {
		cols = append(cols, "retries = retries + 1")
	}
	if c.Set&store.SetExpiresAt != 0 {
		cols, args = append(cols, "expires_at = ? + ttl_ms"), append(args, millis(now))
	}
	if c.Set&store.SetTimeoutAt != 0 {
		cols, args = append(cols, "timeout_at = ? + execution_timeout_ms"), append(args, millis(now))
	}
	if c.Set&store.SetDeleteAt != 0 {
		// The right-hand sides of an UPDATE see the row as it was: a retention set by this same
		// change must be added as the value, not as the column.
		if c.Set&store.SetRetention != 0 {
			cols, args = append(cols, "delete_at = ?"), append(args, millis(now)+c.RetentionMs)
		} else {
			cols, args = append(cols, "delete_at = ? + retention_ms"), append(args, millis(now))
		}
	}
	return strings.Join(cols, ", "), args, nil
}

// UpdateJobs implements store.Store.
func (s *Store) UpdateJobs(ctx context.Context, p store.UpdateJobsParams) ([]*spool.Job, error) {
	type stmt struct {
		query string
		args  []any
	}
	// The statements are built here, off the writer goroutine.
	stmts := make([]stmt, len(p.Updates))
	for i, u := range p.Updates {
		set, args, err := setClause(u.Change, p.Now)
		if err != nil {
			return nil, fmt.Errorf("update job %s: %w", u.ID, err)
		}
		var w where
		w.add("jobs.id = ?", u.ID)
		w.expect(u.Expect)
		stmts[i] = stmt{"UPDATE jobs SET " + set + w.String() + " RETURNING " + headColumns, append(args, w.args...)}
	}
	return doResult(ctx, s, func(ctx context.Context, tx queryer) ([]*spool.Job, error) {
		var changed []*spool.Job
		for i, u := range p.Updates {
			j, err := scanJob(tx.QueryRowContext(ctx, stmts[i].query, stmts[i].args...), 0)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				continue // gone, or not as expected
			case err != nil:
				return nil, fmt.Errorf("update job %s: %w", u.ID, err)
			}
			if u.Webhook && j.Webhook != "" && p.Outbox != nil {
				if err := enqueueWebhook(ctx, tx, j.ID, p.Outbox); err != nil {
					return nil, err
				}
			}
			s.counts.moved(slotBefore(j, u.Expect.State, u.Change), new(slotOf(j)))
			changed = append(changed, j)
		}
		return changed, nil
	})
}

// slotBefore is the slot of a job that a change has just moved out of state, from the job as
// written: no change sets the endpoint or the priority, and the retries and queued_at it changes
// are those it names.
func slotBefore(j *spool.Job, state spool.State, c store.JobChange) *jobSlot {
	slot := slotOf(j)
	slot.state = state
	if c.Set&store.IncRetries != 0 {
		slot.retried = j.Retries > 1
	}
	if c.Set&store.SetQueuedAt != 0 {
		slot.queuedAt, slot.unknownQueuedAt = 0, true
	}
	return &slot
}

// enqueueWebhook builds the delivery of a job just written, from the whole job, and inserts it
// in the same transaction.
func enqueueWebhook(ctx context.Context, tx queryer, id string, build func(*spool.Job) *spool.WebhookMessage) error {
	full, err := loadJob(ctx, tx, id, store.AllPayloads)
	if err != nil {
		return fmt.Errorf("enqueue webhook of job %s: %w", id, err)
	}
	m := build(full)
	if m == nil {
		return nil
	}
	_, err = tx.ExecContext(ctx, insertDelivery, newDeliveryArgs(spool.WebhookDelivery{
		ID: m.ID, JobID: full.ID, Endpoint: full.Endpoint, URL: m.URL, Payload: m.Payload, CreatedAt: m.CreatedAt,
	})...)
	if err != nil {
		return fmt.Errorf("enqueue webhook of job %s: %w", id, err)
	}
	return nil
}

// claimable selects the next jobs to hand out. The index is forced: without statistics the
// planner may prefer another, which matches nearly every queued job of every endpoint and then
// needs a sort, where jobs_queue yields the rows already in dispatch order and stops at the limit.
// The literal state is what lets SQLite use that partial index.
const claimable = ` FROM jobs INDEXED BY jobs_queue
	WHERE endpoint = ? AND state = 'IN_QUEUE' AND expires_at > ?`

// ClaimJobs implements store.Store.
func (s *Store) ClaimJobs(ctx context.Context, p store.ClaimJobsParams) ([]*spool.Job, error) {
	if p.Max <= 0 {
		return nil, nil
	}
	if p.Change.Set&store.SetState == 0 || p.Change.State == spool.StateInQueue {
		return nil, errors.New("sqlitestore: a claim must move the jobs out of IN_QUEUE")
	}
	set, setArgs, err := setClause(p.Change, p.Now)
	if err != nil {
		return nil, fmt.Errorf("claim jobs of %s: %w", p.Endpoint, err)
	}
	// Most polls of an idle endpoint find nothing: the counts (published after each commit) say
	// so without queueing behind the writer or reading the file. A job committed after this look
	// wakes the poller, which then looks again.
	if c := s.counts.get(p.Endpoint); c == nil || c.normal+c.low == 0 {
		return nil, nil
	}
	// One statement picks, moves and returns the jobs, with their inputs: the writer is the lock,
	// so no other transaction runs between the pick and the move, and concurrent claims never see
	// the same job. RETURNING gives rows in no promised order; seq restores dispatch order.
	claim := claimQuery(set)
	args := append(setArgs, p.Endpoint, millis(p.Now), p.Max)
	return doResult(ctx, s, func(ctx context.Context, tx queryer) ([]*spool.Job, error) {
		claimed, err := queryAll(ctx, tx, scanClaimed, claim, args...)
		if err != nil {
			return nil, fmt.Errorf("claim jobs of %s: %w", p.Endpoint, err)
		}
		slices.SortFunc(claimed, func(a, b seqJob) int {
			return cmp.Or(cmpBool(a.Policy.LowPriority, b.Policy.LowPriority), a.QueuedAt.Compare(b.QueuedAt), cmp.Compare(a.seq, b.seq))
		})
		jobs := make([]*spool.Job, len(claimed))
		for i, c := range claimed {
			s.counts.moved(slotBefore(c.Job, spool.StateInQueue, p.Change), new(slotOf(c.Job)))
			jobs[i] = c.Job
		}
		return jobs, nil
	})
}

// claimQuery is the claim with the SET list set; its last arguments are the endpoint, now and the
// most jobs to claim.
func claimQuery(set string) string {
	return "UPDATE jobs SET " + set + " WHERE seq IN (SELECT seq" + claimable +
		" ORDER BY low_priority, queued_at, seq LIMIT ?) RETURNING " + headColumns +
		", jobs.s3_config, (SELECT input FROM job_inputs WHERE job_inputs.seq = jobs.seq), jobs.seq"
}

// seqJob is a claimed job with its place in the table, which breaks ties in dispatch order.
type seqJob struct {
	*spool.Job
	seq int64
}

func scanClaimed(row scanner) (seqJob, error) {
	var c seqJob
	var err error
	c.Job, err = scanJob(extraColumn{row, &c.seq}, store.PayloadS3Config|store.PayloadInput)
	return c, err
}

// extraColumn scans one column more than scanJob knows of, the last of the row.
type extraColumn struct {
	row  scanner
	dest any
}

func (e extraColumn) Scan(dest ...any) error { return e.row.Scan(append(dest, e.dest)...) }

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// DeleteJobs implements store.Store. Inputs and chunks go with their job through ON DELETE
// CASCADE.
func (s *Store) DeleteJobs(ctx context.Context, p store.DeleteJobsParams) (int, error) {
	limit := p.Limit
	if limit <= 0 {
		limit = -1
	}
	return doResult(ctx, s, func(ctx context.Context, tx queryer) (int, error) {
		// RETURNING tells the counts what went; the rows are read to the end by queryAll.
		gone, err := queryAll(ctx, tx, func(row scanner) (jobSlot, error) {
			var slot jobSlot
			var state string
			err := row.Scan(&slot.endpoint, &state, &slot.low, &slot.retried, &slot.queuedAt)
			slot.state = spool.State(state)
			return slot, err
		}, `DELETE FROM jobs WHERE seq IN (
			SELECT seq FROM jobs WHERE state IN (`+terminalStates+`) AND delete_at <= ? LIMIT ?)
			RETURNING endpoint, state, low_priority <> 0, retries > 0, queued_at`, millis(p.Before), limit)
		if err != nil {
			return 0, fmt.Errorf("delete jobs: %w", err)
		}
		for i := range gone {
			s.counts.moved(&gone[i], nil)
		}
		return len(gone), nil
	})
}

// CountJobs implements store.Store, from the counts the writer keeps (counts.go).
func (s *Store) CountJobs(ctx context.Context, endpoint string) (spool.JobCounts, error) {
	counts := spool.JobCounts{ByState: make(map[spool.State]int, len(spool.States))}
	for _, st := range spool.States {
		counts.ByState[st] = 0
	}
	err := s.read(func(queryer) error {
		if c := s.counts.get(endpoint); c != nil {
			for st, n := range c.byState {
				counts.ByState[st] = n
			}
			counts.Retried = c.retried
		}
		return nil
	})
	if err != nil {
		return spool.JobCounts{}, fmt.Errorf("count jobs of %s: %w", endpoint, err)
	}
	return counts, nil
}

// QueueDepth implements store.Store, from the counts the writer keeps (counts.go).
func (s *Store) QueueDepth(ctx context.Context, endpoint string) (spool.QueueDepth, error) {
	var d spool.QueueDepth
	err := s.read(func(queryer) error {
		if c := s.counts.get(endpoint); c != nil {
			d = spool.QueueDepth{Normal: c.normal, Low: c.low, Running: c.running}
			if c.normal > 0 {
				d.OldestNormal = fromMillis(c.oldest)
			}
		}
		return nil
	})
	if err != nil {
		return spool.QueueDepth{}, fmt.Errorf("queue depth of %s: %w", endpoint, err)
	}
	return d, nil
}

// CountQueued implements store.Store, from the counts in memory.
func (s *Store) CountQueued(_ context.Context, p store.CountQueuedParams) (int, error) {
	n := 0
	err := s.read(func(queryer) error {
		if c := s.counts.get(p.Endpoint); c != nil {
			n = c.normal + c.low
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("count queue of %s: %w", p.Endpoint, err)
	}
	return max(0, min(n, p.Limit)), nil
}

// positionQuery counts the queued jobs of the endpoint ahead of the job, in dispatch order: a
// range of jobs_queue.
const positionQuery = `SELECT 1 + (SELECT COUNT(*) FROM jobs j
		WHERE j.endpoint = me.endpoint AND j.state = 'IN_QUEUE'
		AND (j.low_priority, j.queued_at, j.seq) < (me.low_priority, me.queued_at, me.seq))
	FROM jobs me WHERE me.id = ? AND me.endpoint = ? AND me.state = 'IN_QUEUE'`

// QueuePosition implements store.Store.
func (s *Store) QueuePosition(ctx context.Context, p store.QueuePositionParams) (int, error) {
	var pos int
	err := s.read(func(db queryer) error {
		err := db.QueryRowContext(ctx, positionQuery,
			p.JobID, p.Endpoint).Scan(&pos)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("queue position of job %s: %w", p.JobID, err)
	}
	return pos, nil
}

// HeldJobs implements store.Store.
func (s *Store) HeldJobs(ctx context.Context, p store.HeldJobsParams) ([]store.HeldJob, error) {
	query, args := heldJobsQuery(p)
	held, err := readAll(ctx, s, func(row scanner) (store.HeldJob, error) {
		var h store.HeldJob
		var taken int64
		err := row.Scan(&h.WorkerID, &h.JobID, &h.Attempt, &h.Retries, &taken)
		h.TakenAt = fromMillis(taken)
		return h, err
	}, query, args...)
	if err != nil {
		return nil, fmt.Errorf("held jobs: %w", err)
	}
	return held, nil
}

// heldJobsQuery selects the running jobs HeldJobs asks for: of an endpoint, through jobs_running
// (/health and the autoscaler ask every tick, however many jobs the endpoint keeps); of a worker,
// through jobs_worker.
func heldJobsQuery(p store.HeldJobsParams) (string, []any) {
	var w where
	w.add("jobs.state = 'IN_PROGRESS'")
	switch {
	case p.Endpoint != "" && p.WorkerID != "":
		w.add("+jobs.endpoint = ?", p.Endpoint) // the worker's jobs, not the endpoint's (see findJobsQuery)
	case p.Endpoint != "":
		w.add("jobs.endpoint = ?", p.Endpoint)
	}
	if p.WorkerID != "" {
		w.add("jobs.worker_id = ?", p.WorkerID)
	}
	if !p.SeenBefore.IsZero() {
		w.seenBefore(p.SeenBefore)
	}
	return "SELECT jobs.worker_id, jobs.id, jobs.attempt, jobs.retries, jobs.taken_at FROM jobs" + w.String() +
		" ORDER BY jobs.worker_id, jobs.taken_at, jobs.seq", w.args
}
