package pgstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// Migrations is the number of migrations this package knows.
var Migrations = len(migrations)

// QueryRow runs a query on the store's pool, for tests that look behind its back.
func (s *Store) QueryRow(ctx context.Context, query string, args ...any) pgx.Row {
	return s.pool.QueryRow(ctx, query, args...)
}

// Exec runs a statement on the store's pool.
func (s *Store) Exec(ctx context.Context, query string, args ...any) error {
	_, err := s.pool.Exec(ctx, query, args...)
	return err
}

// plan is PostgreSQL's plan for query with args, one node a line.
func (s *Store) plan(ctx context.Context, query string, args ...any) (string, error) {
	rows, err := s.pool.Query(ctx, "EXPLAIN "+query, args...)
	if err != nil {
		return "", err
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return strings.Join(lines, "\n"), err
}

// claimForPlan is a typical claim of endpoint's jobs and its arguments.
func claimForPlan(endpoint string) (string, []any, error) {
	ps := params{args: []any{endpoint, int64(1)}}
	set, err := setClause(store.JobChange{
		Set:   store.SetState | store.SetWorkerID | store.IncAttempt | store.SetTakenAt | store.SetTimeoutAt,
		State: spool.StateInProgress, WorkerID: "w", TakenAt: time.UnixMilli(1),
	}, time.UnixMilli(1), &ps)
	return claimQuery(set, 1), ps.args, err
}

// ClaimPlan is the plan of a claim of endpoint's jobs.
func (s *Store) ClaimPlan(ctx context.Context, endpoint string) (string, error) {
	query, args, err := claimForPlan(endpoint)
	if err != nil {
		return "", err
	}
	return s.plan(ctx, query, args...)
}

// GenericClaimPlan is the generic plan of a claim of endpoint's jobs: the plan PostgreSQL may
// settle on for a statement a connection keeps prepared, made without the parameters' values.
func (s *Store) GenericClaimPlan(ctx context.Context, endpoint string) (string, error) {
	query, args, err := claimForPlan(endpoint)
	if err != nil {
		return "", err
	}
	pooled, err := s.pool.Acquire(ctx)
	if err != nil {
		return "", err
	}
	// Taken from the pool and closed: the session's settings and its prepared statement go with it.
	conn := pooled.Hijack()
	defer conn.Close(context.WithoutCancel(ctx))
	literals := make([]string, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case string:
			literals[i] = "'" + strings.ReplaceAll(v, "'", "''") + "'"
		default:
			literals[i] = fmt.Sprint(v)
		}
	}
	for _, stmt := range []string{"SET plan_cache_mode = force_generic_plan", "PREPARE claim_plan AS " + query} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return "", err
		}
	}
	rows, err := conn.Query(ctx, "EXPLAIN EXECUTE claim_plan("+strings.Join(literals, ", ")+")", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return "", err
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return strings.Join(lines, "\n"), err
}

// PositionPlan is the plan of a queue position.
func (s *Store) PositionPlan(ctx context.Context, endpoint, id string) (string, error) {
	return s.plan(ctx, positionQuery, id, endpoint)
}

// QueueDepthPlan is the plan of a queue depth.
func (s *Store) QueueDepthPlan(ctx context.Context, endpoint string) (string, error) {
	return s.plan(ctx, queueDepthQuery, endpoint)
}

// CountJobsPlan is the plan of CountJobs.
func (s *Store) CountJobsPlan(ctx context.Context, endpoint string) (string, error) {
	return s.plan(ctx, countJobsQuery, endpoint)
}

// FindJobsPlan is the plan of the query FindJobs makes of f.
func (s *Store) FindJobsPlan(ctx context.Context, f store.JobFilter) (string, error) {
	query, args, err := findJobsQuery(f)
	if err != nil {
		return "", err
	}
	return s.plan(ctx, query, args...)
}

// HeldJobsPlan is the plan of the query HeldJobs makes of p.
func (s *Store) HeldJobsPlan(ctx context.Context, p store.HeldJobsParams) (string, error) {
	query, args := heldJobsQuery(p)
	return s.plan(ctx, query, args...)
}

// ListJobsPlan is the plan of the query ListJobs makes of p.
func (s *Store) ListJobsPlan(ctx context.Context, p store.ListJobsParams) (string, error) {
	query, args, err := listJobsQuery(p)
	if err != nil {
		return "", err
	}
	return s.plan(ctx, query, args...)
}

// DeleteJobsPlan is the plan of a retention sweep.
func (s *Store) DeleteJobsPlan(ctx context.Context, before time.Time) (string, error) {
	return s.plan(ctx, deleteJobsQuery, millis(before), int64(100))
}

// ClaimDeliveriesPlan is the plan of the pick of ClaimDeliveries.
func (s *Store) ClaimDeliveriesPlan(ctx context.Context) (string, error) {
	return s.plan(ctx, claimDeliveriesQuery, int64(1), []string{}, int64(10), []string{}, []int64{}, int64(2))
}

// WriteTx runs fn as the store runs its transactions.
func (s *Store) WriteTx(ctx context.Context, fn func(ctx context.Context, tx pgx.Tx) error) error {
	return s.writeTx(ctx, fn)
}

// MaxConns is the bound of the store's pool.
func (s *Store) MaxConns() int32 { return s.pool.Config().MaxConns }

// Unavailable is unavailable, for a table test of what counts as a lost database.
var Unavailable = unavailable

// PipelineStats returns the pipeline's counters: statements, batches of more than one, reruns.
func (s *Store) PipelineStats() (statements, batches, rerun int64) {
	return s.pipeline.statements.Load(), s.pipeline.batches.Load(), s.pipeline.rerun.Load()
}

// ReportCommit tells OnCommit's function, if any, of a commit that started at start, as the
// store's writes do.
func (s *Store) ReportCommit(start time.Time, writes int) { s.commits.committed(start, writes) }
