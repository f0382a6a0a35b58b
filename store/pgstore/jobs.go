package pgstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// A job is two rows: its head, with the payloads that change (output, progress, the sealed
// s3Config) as the last columns of jobs, and its input, which never changes, in job_inputs. Every
// write of a job that changes an indexed column (its state, its worker) writes a new version of
// the whole jobs row; the input is not in it, so it is never copied, nor WAL-logged again.

// headColumns lists the columns of a job's head, in the order scanJob reads them.
const headColumns = `jobs.id, jobs.endpoint, jobs.state, jobs.webhook,
	jobs.execution_timeout_ms, jobs.ttl_ms, jobs.retention_ms, jobs.low_priority, jobs.sync,
	jobs.created_at, jobs.queued_at, jobs.taken_at, jobs.finished_at,
	jobs.expires_at, jobs.timeout_at, jobs.delete_at,
	jobs.worker_id, jobs.attempt, jobs.retries, jobs.error,
	jobs.stop_pod, jobs.ended_by_worker, jobs.stop_pending, jobs.stream_count, jobs.stream_cursor,
	jobs.had_s3_config`

// inputColumn reads a job's input beside its head, in a statement on jobs alone (RETURNING).
const inputColumn = `(SELECT job_inputs.input FROM job_inputs WHERE job_inputs.seq = jobs.seq)`

// allColumns is every column of a job, in the order scanJob reads them with store.AllPayloads.
const allColumns = headColumns + `, jobs.output, jobs.progress, jobs.s3_config, ` + inputColumn

// insertJob inserts a job and, in the same statement, its input, unless that is nil ($30).
const insertJob = `WITH j AS (
	INSERT INTO jobs (id, endpoint, state, webhook,
		execution_timeout_ms, ttl_ms, retention_ms, low_priority, sync,
		created_at, queued_at, taken_at, finished_at,
		expires_at, timeout_at, delete_at,
		worker_id, attempt, retries, error,
		stop_pod, ended_by_worker, stop_pending, stream_count, stream_cursor,
		had_s3_config, s3_config, progress, output)
	VALUES ($1,$2,$3,$4, $5,$6,$7,$8,$9, $10,$11,$12,$13, $14,$15,$16, $17,$18,$19,$20,
		$21,$22,$23,$24,$25, $26,$27,$28,$29)
	RETURNING seq)
INSERT INTO job_inputs (seq, input) SELECT seq, $30::bytea FROM j WHERE $30::bytea IS NOT NULL`

// terminalStates is the SQL list of the terminal states, spelled as the partial index on delete_at
// spells them.
const terminalStates = `'COMPLETED','FAILED','CANCELLED','TIMED_OUT'`

var errEmptyChange = errors.New("pgstore: a change that sets nothing")

func errInvalidState(st spool.State) error { return fmt.Errorf("not a job state: %q", st) }

func jobArgs(j *spool.Job) []any {
	return []any{
		j.ID, j.Endpoint, string(j.State), j.Webhook,
		j.Policy.ExecutionTimeoutMs, j.Policy.TTLMs, j.RetentionMs, j.Policy.LowPriority, j.Sync,
		millis(j.CreatedAt), millis(j.QueuedAt), millis(j.TakenAt), millis(j.FinishedAt),
		millis(j.ExpiresAt), millis(j.TimeoutAt), millis(j.DeleteAt),
		j.WorkerID, j.Attempt, j.Retries, text(j.Error),
		j.StopPod, j.EndedByWorker, j.StopPending, j.StreamCount, j.StreamCursor,
		j.HadS3Config, bytea(j.S3ConfigSealed), bytea(j.Progress), bytea(j.Output),
		bytea(j.Input),
	}
}

// selectJobs is the SELECT of jobs with the payloads with names, in scanJob's order.
func selectJobs(with store.Payloads) string {
	return "SELECT " + jobColumns(with) + " FROM jobs"
}

// jobColumns lists the columns of a job with the payloads with names, in scanJob's order.
func jobColumns(with store.Payloads) string {
	cols := headColumns
	if with&store.PayloadOutput != 0 {
		cols += ", jobs.output, jobs.progress"
	}
	if with&store.PayloadS3Config != 0 {
		cols += ", jobs.s3_config"
	}
	if with&store.PayloadInput != 0 {
		cols += ", " + inputColumn
	}
	return cols
}

type scanner interface{ Scan(dest ...any) error }

// scanJob reads a row of jobColumns(with), and then extra, the columns that follow.
func scanJob(row scanner, with store.Payloads, extra ...any) (*spool.Job, error) {
	var (
		j                                spool.Job
		state                            string
		created, queued, taken, finished int64
		expires, timeout, deleteAt       int64
		errText                          []byte
		output, progress, input          []byte
	)
	dest := []any{
		&j.ID, &j.Endpoint, &state, &j.Webhook,
		&j.Policy.ExecutionTimeoutMs, &j.Policy.TTLMs, &j.RetentionMs, &j.Policy.LowPriority, &j.Sync,
		&created, &queued, &taken, &finished,
		&expires, &timeout, &deleteAt,
		&j.WorkerID, &j.Attempt, &j.Retries, &errText,
		&j.StopPod, &j.EndedByWorker, &j.StopPending, &j.StreamCount, &j.StreamCursor,
		&j.HadS3Config,
	}
	if with&store.PayloadOutput != 0 {
		dest = append(dest, &output, &progress)
	}
	if with&store.PayloadS3Config != 0 {
		dest = append(dest, &j.S3ConfigSealed)
	}
	if with&store.PayloadInput != 0 {
		dest = append(dest, &input)
	}
	if err := row.Scan(append(dest, extra...)...); err != nil {
		return nil, err
	}
	j.State, j.Error = spool.State(state), string(errText)
	j.Output, j.Progress, j.Input = rawJSON(output), rawJSON(progress), rawJSON(input)
	j.CreatedAt, j.QueuedAt, j.TakenAt, j.FinishedAt = fromMillis(created), fromMillis(queued), fromMillis(taken), fromMillis(finished)
	j.ExpiresAt, j.TimeoutAt, j.DeleteAt = fromMillis(expires), fromMillis(timeout), fromMillis(deleteAt)
	return &j, nil
}

// rawJSON is a scanned BYTEA as a payload: nil for NULL, the (fresh) bytes otherwise.
func rawJSON(b []byte) json.RawMessage {
	if b == nil {
		return nil
	}
	return json.RawMessage(b)
}

// queryAll runs a query and scans every row of its answer with scan.
func queryAll[T any](ctx context.Context, q querier, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.Query(ctx, query, args...)
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

// loadJob reads one job; store.ErrNotFound if absent.
func loadJob(ctx context.Context, q querier, id string, with store.Payloads) (*spool.Job, error) {
	j, err := scanJob(q.QueryRow(ctx, selectJobs(with)+" WHERE jobs.id = $1", id), with)
	return j, notFound(err)
}

// CreateJob implements store.Store: one statement inserts the head and the input.
func (s *Store) CreateJob(ctx context.Context, p store.CreateJobParams) error {
	if p.Job == nil {
		return errors.New("pgstore: create job: nil job")
	}
	id, args := p.Job.ID, jobArgs(p.Job)
	err := s.pipeWrite(ctx, statement{sql: insertJob, args: args})
	switch {
	case isUnique(err):
		return fmt.Errorf("create job %s: %w", id, store.ErrConflict)
	case err != nil:
		return fmt.Errorf("create job %s: %w", id, err)
	}
	return nil
}

// GetJob implements store.Store.
func (s *Store) GetJob(ctx context.Context, p store.GetJobParams) (*spool.Job, error) {
	var j *spool.Job
	err := s.read(ctx, func(q querier) error {
		var err error
		j, err = loadJob(ctx, q, p.ID, p.With)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", p.ID, err)
	}
	return j, nil
}

// ListJobs implements store.Store.
func (s *Store) ListJobs(ctx context.Context, p store.ListJobsParams) ([]*spool.Job, error) {
	query, args, err := listJobsQuery(p)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	var jobs []*spool.Job
	err = s.read(ctx, func(q querier) error {
		var err error
		jobs, err = queryAll(ctx, q, jobScanner(p.With), query, args...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return jobs, nil
}

// listJobsQuery pages through jobs newest first: of an endpoint, a backward walk of jobs_list
// from the cursor, whose row comparison is a bound of that index.
func listJobsQuery(p store.ListJobsParams) (string, []any, error) {
	var ps params
	w := newWhere(&ps)
	if p.Endpoint != "" {
		w.add("jobs.endpoint = ?", p.Endpoint)
	}
	if err := w.states(p.States); err != nil {
		return "", nil, err
	}
	switch {
	case !p.Before.IsZero() && p.BeforeID != "":
		w.add("(jobs.created_at, jobs.id) < (?, ?)", millis(p.Before), p.BeforeID)
	case !p.Before.IsZero():
		w.add("jobs.created_at < ?", millis(p.Before))
	}
	n := p.Limit
	if n <= 0 {
		n = 100
	}
	return selectJobs(p.With) + w.String() + " ORDER BY jobs.created_at DESC, jobs.id DESC LIMIT " + ps.add(int64(n)), ps.args, nil
}

// FindJobs implements store.Store.
func (s *Store) FindJobs(ctx context.Context, f store.JobFilter) ([]*spool.Job, error) {
	query, args, err := findJobsQuery(f)
	if err != nil {
		return nil, fmt.Errorf("find jobs: %w", err)
	}
	var jobs []*spool.Job
	err = s.read(ctx, func(q querier) error {
		var err error
		jobs, err = queryAll(ctx, q, jobScanner(f.With), query, args...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("find jobs: %w", err)
	}
	return jobs, nil
}

func findJobsQuery(f store.JobFilter) (string, []any, error) {
	var ps params
	w := newWhere(&ps)
	if len(f.IDs) > 0 {
		// One array parameter: the statement is the same whatever the number of ids.
		w.add("jobs.id = ANY(?)", f.IDs)
	}
	if f.Endpoint != "" {
		w.add("jobs.endpoint = ?", f.Endpoint)
	}
	if err := w.states(f.States); err != nil {
		return "", nil, err
	}
	if f.WorkerID != "" {
		w.add("jobs.worker_id = ?", f.WorkerID)
	}
	if f.StopPending {
		w.add("jobs.stop_pending")
	}
	if !f.ExpiresBy.IsZero() {
		w.add("jobs.expires_at <= ?", millis(f.ExpiresBy))
	}
	if !f.TimesOutBy.IsZero() {
		w.add("jobs.timeout_at <= ?", millis(f.TimesOutBy))
	}
	// No ORDER BY: with a Limit, a sort would read every match on every call of a sweep that
	// works through a large backlog a batch at a time.
	return selectJobs(f.With) + w.String() + " LIMIT " + ps.add(limit(f.Limit)), ps.args, nil
}

// UpdateJobs implements store.Store. Each update is one UPDATE whose WHERE is its expectation,
// re-checked by PostgreSQL on the latest version of the row once it holds the row's lock, so an
// update racing another write of the job applies only if the job still is as expected.
func (s *Store) UpdateJobs(ctx context.Context, p store.UpdateJobsParams) ([]*spool.Job, error) {
	type stmt struct {
		query string
		args  []any
		// full: the statement returns the whole job, for the outbox.
		full bool
		// hookless is the same update of a job without a webhook only, returning its head.
		hookless string
	}
	stmts := make([]stmt, len(p.Updates))
	for i, u := range p.Updates {
		var ps params
		set, err := setClause(u.Change, p.Now, &ps)
		if err != nil {
			return nil, fmt.Errorf("update job %s: %w", u.ID, err)
		}
		w := newWhere(&ps)
		w.add("jobs.id = ?", u.ID)
		w.expect(u.Expect)
		full := u.Webhook && p.Outbox != nil
		cols := headColumns
		if full {
			cols = allColumns
		}
		update := "UPDATE jobs SET " + set + w.String()
		stmts[i] = stmt{query: update + " RETURNING " + cols, args: ps.args, full: full,
			hookless: update + " AND jobs.webhook = '' RETURNING " + headColumns}
	}
	if len(stmts) == 1 && stmts[0].full {
		// A job's end that may enqueue a webhook needs a transaction (the update, then the
		// delivery built from the job as written), four round trips. Most jobs have no webhook:
		// their end is tried first as one statement that applies only to such a job.
		j, err := s.updateOne(ctx, stmts[0].hookless, stmts[0].args)
		switch {
		case err != nil:
			return nil, fmt.Errorf("update jobs: update job %s: %w", p.Updates[0].ID, err)
		case j != nil:
			return []*spool.Job{j}, nil
		}
		// It has a webhook, or is not as expected: the transaction below finds out which.
	}
	run := func(ctx context.Context, q querier) ([]*spool.Job, error) {
		var changed []*spool.Job
		for i, u := range p.Updates {
			st := stmts[i]
			with := store.Payloads(0)
			if st.full {
				with = store.AllPayloads
			}
			j, err := scanJob(q.QueryRow(ctx, st.query, st.args...), with)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
				continue // gone, or not as expected
			case err != nil:
				return nil, fmt.Errorf("update job %s: %w", u.ID, err)
			}
			if st.full {
				if j.Webhook != "" {
					if err := enqueueWebhook(ctx, q, j, p.Outbox); err != nil {
						return nil, err
					}
				}
				// The caller gets the head; Outbox may keep the whole job it was given.
				h := *j
				h.Input, h.Output, h.Progress, h.S3ConfigSealed = nil, nil, nil, nil
				j = &h
			}
			changed = append(changed, j)
		}
		return changed, nil
	}
	var changed []*spool.Job
	runOn := func(ctx context.Context, q querier) error {
		var err error
		changed, err = run(ctx, q)
		return err
	}
	var err error
	if len(stmts) == 1 && !stmts[0].full {
		// One statement is a transaction by itself: no BEGIN and COMMIT round trips.
		var j *spool.Job
		if j, err = s.updateOne(ctx, stmts[0].query, stmts[0].args); j != nil {
			changed = []*spool.Job{j}
		}
	} else {
		ids := lockOrder(p.Updates)
		err = s.writeTx(ctx, func(ctx context.Context, tx pgx.Tx) error {
			if len(ids) > 1 {
				// Two batches that lock the same jobs in different orders would deadlock: each
				// takes its locks in the order of the ids first, as every batch does.
				if _, err := tx.Exec(ctx, `SELECT 1 FROM jobs WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE`, ids); err != nil {
					return fmt.Errorf("lock jobs: %w", err)
				}
			}
			return runOn(ctx, tx)
		})
	}
	if err != nil {
		return nil, fmt.Errorf("update jobs: %w", err)
	}
	return changed, nil
}

// updateOne runs an UPDATE … RETURNING of one job's head through the pipeline; nil when no job
// matched (gone, or not as expected).
func (s *Store) updateOne(ctx context.Context, query string, args []any) (*spool.Job, error) {
	var j *spool.Job
	err := s.pipeWrite(ctx, statement{sql: query, args: args, read: func(rows pgx.Rows) error {
		j = nil // a batch rolled back reads its rows again
		if rows.Next() {
			var err error
			j, err = scanJob(rows, 0)
			return err
		}
		return nil
	}})
	return j, err
}

// lockOrder returns the distinct ids of updates, sorted.
func lockOrder(updates []store.JobUpdate) []string {
	ids := make([]string, len(updates))
	for i, u := range updates {
		ids[i] = u.ID
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// enqueueWebhook builds the delivery of a job just written, from the whole job, and inserts it
// in the same transaction.
func enqueueWebhook(ctx context.Context, q querier, j *spool.Job, build func(*spool.Job) *spool.WebhookMessage) error {
	m := build(j)
	if m == nil {
		return nil
	}
	_, err := q.Exec(ctx, insertDelivery, newDeliveryArgs(spool.WebhookDelivery{
		ID: m.ID, JobID: j.ID, Endpoint: j.Endpoint, URL: m.URL, Payload: m.Payload, CreatedAt: m.CreatedAt,
	})...)
	switch {
	case isUnique(err):
		return fmt.Errorf("enqueue webhook of job %s: delivery %s: %w", j.ID, m.ID, store.ErrConflict)
	case err != nil:
		return fmt.Errorf("enqueue webhook of job %s: %w", j.ID, err)
	}
	return nil
}

// claimQuery is the claim of at most limit jobs with the SET list set: $1 and $2 are the endpoint
// and now. The subquery walks jobs_queue in dispatch order and stops at the limit; FOR UPDATE
// SKIP LOCKED takes the jobs no concurrent claim holds, and re-checks the conditions of one that
// a write committed meanwhile (a cancel), so the UPDATE moves only jobs still queued. RETURNING
// gives rows in no promised order; the caller restores dispatch order from seq.
//
// Two things keep the planner on that walk once a connection runs the statement with a generic
// plan. The limit is a literal: a parameter is planned as a tenth of the rows, and with one deep
// queue that made the planner prefer jobs_expiry and a sort of the whole queue at every claim
// (4 ms of database CPU a job). And expires_at is compared as an expression (+ 0), so no index
// on it is a candidate at all: it is a filter on the few rows the walk reads.
func claimQuery(set string, limit int) string {
	return "UPDATE jobs SET " + set + ` WHERE jobs.seq IN (
		SELECT seq FROM jobs WHERE endpoint = $1 AND state = 'IN_QUEUE' AND expires_at + 0 > $2
		ORDER BY low_priority, queued_at, seq LIMIT ` + strconv.Itoa(limit) + ` FOR UPDATE SKIP LOCKED)
	RETURNING ` + headColumns + ", jobs.s3_config, " + inputColumn + ", jobs.seq"
}

// ClaimJobs implements store.Store, in one statement.
func (s *Store) ClaimJobs(ctx context.Context, p store.ClaimJobsParams) ([]*spool.Job, error) {
	if p.Max <= 0 {
		return nil, nil
	}
	if p.Change.Set&store.SetState == 0 || p.Change.State == spool.StateInQueue {
		return nil, fmt.Errorf("claim jobs of %s: pgstore: a claim must move the jobs out of IN_QUEUE", p.Endpoint)
	}
	ps := params{args: []any{p.Endpoint, millis(p.Now)}}
	set, err := setClause(p.Change, p.Now, &ps)
	if err != nil {
		return nil, fmt.Errorf("claim jobs of %s: %w", p.Endpoint, err)
	}
	query := claimQuery(set, p.Max)
	type claimed struct {
		job *spool.Job
		seq int64
	}
	var got []claimed
	err = s.pipeWrite(ctx, statement{sql: query, args: ps.args, read: func(rows pgx.Rows) error {
		got = got[:0] // a batch rolled back reads its rows again
		for rows.Next() {
			var c claimed
			var err error
			if c.job, err = scanJob(rows, store.PayloadS3Config|store.PayloadInput, &c.seq); err != nil {
				return err
			}
			got = append(got, c)
		}
		return nil
	}})
	if err != nil {
		return nil, fmt.Errorf("claim jobs of %s: %w", p.Endpoint, err)
	}
	slices.SortFunc(got, func(a, b claimed) int {
		return cmp.Or(cmpBool(a.job.Policy.LowPriority, b.job.Policy.LowPriority), a.job.QueuedAt.Compare(b.job.QueuedAt), cmp.Compare(a.seq, b.seq))
	})
	jobs := make([]*spool.Job, len(got))
	for i, c := range got {
		jobs[i] = c.job
	}
	return jobs, nil
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// deleteJobsQuery deletes up to $2 terminal jobs whose retention ended by $1, the oldest first.
// The order is jobs_retention's: it keeps the planner on that index (which stops at the limit)
// even when it overestimates the matches, as the delete_at of 0 that every unfinished job has
// makes it do.
const deleteJobsQuery = `DELETE FROM jobs WHERE seq IN (
	SELECT seq FROM jobs WHERE state IN (` + terminalStates + `) AND delete_at <= $1
	ORDER BY delete_at LIMIT $2 FOR UPDATE SKIP LOCKED)`

// DeleteJobs implements store.Store. Inputs and chunks go with their job through ON DELETE
// CASCADE. Jobs another transaction holds (a retention being changed) are left for the next sweep.
func (s *Store) DeleteJobs(ctx context.Context, p store.DeleteJobsParams) (int, error) {
	var n int64
	err := s.write(ctx, func(ctx context.Context, q querier) error {
		tag, err := q.Exec(ctx, deleteJobsQuery, millis(p.Before), limit(p.Limit))
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("delete jobs: %w", err)
	}
	return int(n), nil
}

const countJobsQuery = `SELECT state, COUNT(*), COUNT(*) FILTER (WHERE retries > 0)
	FROM jobs WHERE endpoint = $1 GROUP BY state`

// CountJobs implements store.Store: one aggregate over the endpoint's entries of jobs_list,
// which carries each job's state and retries.
func (s *Store) CountJobs(ctx context.Context, endpoint string) (spool.JobCounts, error) {
	counts := spool.JobCounts{ByState: make(map[spool.State]int, len(spool.States))}
	for _, st := range spool.States {
		counts.ByState[st] = 0
	}
	err := s.read(ctx, func(q querier) error {
		rows, err := q.Query(ctx, countJobsQuery, endpoint)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				state      string
				n, retried int
			)
			if err := rows.Scan(&state, &n, &retried); err != nil {
				return err
			}
			counts.ByState[spool.State(state)] = n
			counts.Retried += retried
		}
		return rows.Err()
	})
	if err != nil {
		return spool.JobCounts{}, fmt.Errorf("count jobs of %s: %w", endpoint, err)
	}
	return counts, nil
}

// queueDepthQuery counts an endpoint's queue from jobs_queue (the oldest queued normal-priority
// job is its first entry of that priority: an ORDER BY … LIMIT 1 reads that one entry, where a
// generic plan of MIN read them all) and its running jobs from jobs_running.
const queueDepthQuery = `SELECT
	(SELECT COUNT(*) FROM jobs WHERE endpoint = $1 AND state = 'IN_QUEUE' AND low_priority = false),
	(SELECT COUNT(*) FROM jobs WHERE endpoint = $1 AND state = 'IN_QUEUE' AND low_priority = true),
	(SELECT COUNT(*) FROM jobs WHERE endpoint = $1 AND state = 'IN_PROGRESS' AND low_priority = false),
	(SELECT queued_at FROM jobs WHERE endpoint = $1 AND state = 'IN_QUEUE' AND low_priority = false
		ORDER BY low_priority, queued_at, seq LIMIT 1)`

// QueueDepth implements store.Store.
func (s *Store) QueueDepth(ctx context.Context, endpoint string) (spool.QueueDepth, error) {
	var (
		d      spool.QueueDepth
		oldest *int64
	)
	err := s.read(ctx, func(q querier) error {
		return q.QueryRow(ctx, queueDepthQuery, endpoint).Scan(&d.Normal, &d.Low, &d.Running, &oldest)
	})
	if err != nil {
		return spool.QueueDepth{}, fmt.Errorf("queue depth of %s: %w", endpoint, err)
	}
	if oldest != nil && d.Normal > 0 {
		d.OldestNormal = fromMillis(*oldest)
	}
	return d, nil
}

// countQueuedQuery counts at most limit entries of the endpoint's queue index, however deep it
// is. The limit is a literal for the reason claimQuery gives.
func countQueuedQuery(limit int) string {
	return `SELECT COUNT(*) FROM (SELECT 1 FROM jobs
	WHERE endpoint = $1 AND state = 'IN_QUEUE' LIMIT ` + strconv.Itoa(limit) + `) q`
}

// CountQueued implements store.Store. It counts up to the next power of two of the limit, so
// that the limits the take gate asks for (the claims in flight, plus one) make a few statements
// to keep prepared rather than one each.
func (s *Store) CountQueued(ctx context.Context, p store.CountQueuedParams) (int, error) {
	if p.Limit <= 0 {
		return 0, nil
	}
	var n int
	err := s.read(ctx, func(q querier) error {
		return q.QueryRow(ctx, countQueuedQuery(1<<bits.Len(uint(p.Limit-1))), p.Endpoint).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("count queue of %s: %w", p.Endpoint, err)
	}
	return min(n, p.Limit), nil
}

// positionQuery counts the queued jobs of the endpoint ahead of the job, in dispatch order: a
// range of jobs_queue, bounded by a row comparison on its columns.
const positionQuery = `SELECT 1 + (SELECT COUNT(*) FROM jobs j
		WHERE j.endpoint = me.endpoint AND j.state = 'IN_QUEUE'
		AND (j.low_priority, j.queued_at, j.seq) < (me.low_priority, me.queued_at, me.seq))
	FROM jobs me WHERE me.id = $1 AND me.endpoint = $2 AND me.state = 'IN_QUEUE'`

// QueuePosition implements store.Store.
func (s *Store) QueuePosition(ctx context.Context, p store.QueuePositionParams) (int, error) {
	var pos int
	err := s.read(ctx, func(q querier) error {
		err := q.QueryRow(ctx, positionQuery, p.JobID, p.Endpoint).Scan(&pos)
		if errors.Is(err, pgx.ErrNoRows) {
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
	var held []store.HeldJob
	err := s.read(ctx, func(q querier) error {
		var err error
		held, err = queryAll(ctx, q, func(row scanner) (store.HeldJob, error) {
			var h store.HeldJob
			var taken int64
			err := row.Scan(&h.WorkerID, &h.JobID, &h.Attempt, &h.Retries, &taken)
			h.TakenAt = fromMillis(taken)
			return h, err
		}, query, args...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("held jobs: %w", err)
	}
	return held, nil
}

// heldJobsQuery selects the running jobs HeldJobs asks for: of an endpoint through jobs_running,
// of a worker through jobs_worker.
func heldJobsQuery(p store.HeldJobsParams) (string, []any) {
	var ps params
	w := newWhere(&ps)
	w.add("jobs.state = 'IN_PROGRESS'")
	if p.Endpoint != "" {
		w.add("jobs.endpoint = ?", p.Endpoint)
	}
	if p.WorkerID != "" {
		w.add("jobs.worker_id = ?", p.WorkerID)
	}
	if !p.SeenBefore.IsZero() {
		w.seenBefore(p.SeenBefore)
	}
	return "SELECT jobs.worker_id, jobs.id, jobs.attempt, jobs.retries, jobs.taken_at FROM jobs" + w.String() +
		" ORDER BY jobs.worker_id, jobs.taken_at, jobs.seq", ps.args
}
