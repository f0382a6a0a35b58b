package pgstore

import (
	"context"
	"fmt"

	"github.com/spool-run/spool/store"
)

// TouchWorker implements store.Store. LastSeen only moves forward: two sightings whose writes
// commit out of order (two replicas, or two requests of one) must not make the worker look older
// than it is.
func (s *Store) TouchWorker(ctx context.Context, p store.TouchWorkerParams) error {
	now := millis(p.Now)
	return s.write(ctx, func(ctx context.Context, q querier) error {
		_, err := q.Exec(ctx, `INSERT INTO workers (id, endpoint, first_seen, last_seen, version)
			VALUES ($1, $2, $3, $3, $4)
			ON CONFLICT (id) DO UPDATE SET
				endpoint  = excluded.endpoint,
				last_seen = GREATEST(workers.last_seen, excluded.last_seen),
				version   = CASE WHEN excluded.version = '' THEN workers.version ELSE excluded.version END`,
			p.ID, p.Endpoint, now, p.Version)
		if err != nil {
			return fmt.Errorf("touch worker %s: %w", p.ID, err)
		}
		return nil
	})
}

// ListWorkers implements store.Store. Workers come by id.
func (s *Store) ListWorkers(ctx context.Context, p store.ListWorkersParams) ([]store.WorkerRecord, error) {
	query := "SELECT id, endpoint, first_seen, last_seen, version FROM workers"
	var args []any
	if p.Endpoint != "" {
		query, args = query+" WHERE endpoint = $1", append(args, p.Endpoint)
	}
	var workers []store.WorkerRecord
	err := s.read(ctx, func(q querier) error {
		var err error
		workers, err = queryAll(ctx, q, func(row scanner) (store.WorkerRecord, error) {
			var w store.WorkerRecord
			var first, last int64
			err := row.Scan(&w.ID, &w.Endpoint, &first, &last, &w.Version)
			w.FirstSeen, w.LastSeen = fromMillis(first), fromMillis(last)
			return w, err
		}, query+" ORDER BY id", args...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list workers: %w", err)
	}
	return workers, nil
}

// DeleteWorkers implements store.Store. "Not seen since SeenBefore" is last_seen <= SeenBefore,
// the same boundary as Expect.WorkerSeenBefore, so the sweeper can requeue a lost worker's jobs
// and forget the worker with one cutoff.
func (s *Store) DeleteWorkers(ctx context.Context, p store.DeleteWorkersParams) (int, error) {
	var n int64
	err := s.write(ctx, func(ctx context.Context, q querier) error {
		tag, err := q.Exec(ctx, `DELETE FROM workers WHERE last_seen <= $1 AND NOT EXISTS (
			SELECT 1 FROM jobs WHERE jobs.worker_id = workers.id AND jobs.state = 'IN_PROGRESS')`,
			millis(p.SeenBefore))
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("delete workers: %w", err)
	}
	return int(n), nil
}
