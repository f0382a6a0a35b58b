package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// deliveryColumns lists the columns of a spool.WebhookDelivery, in the order of scanDelivery.
const deliveryColumns = `d.id, d.job_id, d.endpoint, d.url, d.host, d.payload, d.state, d.attempts, d.next_attempt_at, d.lease,
	d.created_at, d.finished_at, d.last_status, d.last_error, d.redelivery_of`

const selectDeliveries = `SELECT ` + deliveryColumns + ` FROM webhook_deliveries d`

const insertDelivery = `INSERT INTO webhook_deliveries (id, job_id, endpoint, url, host, payload, state, attempts,
	next_attempt_at, lease, created_at, finished_at, last_status, last_error, redelivery_of)
	VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10, $11,$12,$13,$14,$15)`

func scanDelivery(row scanner, extra ...any) (spool.WebhookDelivery, error) {
	var (
		d                       spool.WebhookDelivery
		state                   string
		payload                 []byte
		next, created, finished int64
	)
	err := row.Scan(append([]any{&d.ID, &d.JobID, &d.Endpoint, &d.URL, &d.Host, &payload, &state, &d.Attempts,
		&next, &d.Lease, &created, &finished, &d.LastStatus, &d.LastError, &d.RedeliveryOf}, extra...)...)
	if err != nil {
		return d, err
	}
	d.Payload, d.State = rawJSON(payload), spool.DeliveryState(state)
	d.NextAttemptAt, d.CreatedAt, d.FinishedAt = fromMillis(next), fromMillis(created), fromMillis(finished)
	return d, nil
}

// newDeliveryArgs are the insert arguments of a new pending delivery, due at its creation.
func newDeliveryArgs(d spool.WebhookDelivery) []any {
	return []any{
		d.ID, d.JobID, d.Endpoint, d.URL, spool.WebhookHost(d.URL), bytea(d.Payload), string(spool.DeliveryPending),
		0, millis(d.CreatedAt), int64(0), millis(d.CreatedAt), int64(0), 0, "", d.RedeliveryOf,
	}
}

// CreateDelivery implements store.Store.
func (s *Store) CreateDelivery(ctx context.Context, p store.CreateDeliveryParams) error {
	id, args := p.Delivery.ID, newDeliveryArgs(p.Delivery)
	return s.write(ctx, func(ctx context.Context, q querier) error {
		_, err := q.Exec(ctx, insertDelivery, args...)
		switch {
		case isUnique(err):
			return fmt.Errorf("create delivery %s: %w", id, store.ErrConflict)
		case err != nil:
			return fmt.Errorf("create delivery %s: %w", id, err)
		}
		return nil
	})
}

// claimDeliveriesQuery picks and locks the deliveries to claim. The per-host bound is a window:
// each due row is ranked within its host, and its host's bound is HostLimits' ($4, $5) or PerHost
// ($6). $1 is now, $2 the ids to leave out, $3 the limit. Rows another claim holds are skipped;
// the lock re-checks that a row is still pending and due, in case a claim committed meanwhile.
const claimDeliveriesQuery = `WITH ranked AS (
		SELECT d.seq, d.next_attempt_at,
			ROW_NUMBER() OVER (PARTITION BY d.host ORDER BY d.next_attempt_at, d.seq) AS host_rank,
			COALESCE((SELECT l.n FROM unnest($4::text[], $5::bigint[]) AS l(host, n) WHERE l.host = d.host), $6) AS host_limit
		FROM webhook_deliveries d
		WHERE d.state = 'pending' AND d.next_attempt_at <= $1 AND NOT (d.id = ANY($2::text[]))
	), picked AS (
		SELECT seq FROM ranked WHERE host_rank <= host_limit ORDER BY next_attempt_at, seq LIMIT $3
	)
	SELECT ` + deliveryColumns + `, d.seq FROM webhook_deliveries d
	WHERE d.seq IN (SELECT seq FROM picked) AND d.state = 'pending' AND d.next_attempt_at <= $1
	ORDER BY d.next_attempt_at, d.seq
	FOR UPDATE SKIP LOCKED`

// ClaimDeliveries implements store.Store: the deliveries are picked and locked, then their leases
// (which depend on their endpoints) are written in one UPDATE, in one transaction.
func (s *Store) ClaimDeliveries(ctx context.Context, p store.ClaimDeliveriesParams) ([]spool.WebhookDelivery, error) {
	if p.Limit <= 0 {
		return nil, nil
	}
	// Empty arrays, not NULL: "id = ANY(NULL)" is NULL, which would leave every row out.
	exclude := append([]string{}, p.Exclude...)
	hosts, bounds := make([]string, 0, len(p.HostLimits)), make([]int64, 0, len(p.HostLimits))
	for host, n := range p.HostLimits {
		hosts, bounds = append(hosts, host), append(bounds, int64(max(n, 0)))
	}
	perHost := int64(p.PerHost)
	if perHost <= 0 {
		perHost = 1 << 62
	}
	lease := p.Lease
	if lease == nil {
		lease = func(string) time.Duration { return time.Minute }
	}
	var ds []spool.WebhookDelivery
	err := s.writeTx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		ds, err = queryAll(ctx, tx, func(row scanner) (spool.WebhookDelivery, error) {
			var seq int64
			return scanDelivery(row, &seq)
		}, claimDeliveriesQuery, millis(p.Now), exclude, int64(p.Limit), hosts, bounds, perHost)
		if err != nil || len(ds) == 0 {
			return err
		}
		ids, nexts := make([]string, len(ds)), make([]int64, len(ds))
		for i := range ds {
			d := &ds[i]
			d.NextAttemptAt = p.Now.Add(lease(d.Endpoint)).Truncate(time.Millisecond).UTC()
			d.Lease++
			ids[i], nexts[i] = d.ID, millis(d.NextAttemptAt)
		}
		_, err = tx.Exec(ctx, `UPDATE webhook_deliveries d SET next_attempt_at = u.next, lease = d.lease + 1
			FROM unnest($1::text[], $2::bigint[]) AS u(id, next) WHERE d.id = u.id`, ids, nexts)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("claim deliveries: %w", err)
	}
	return ds, nil
}

// RecordAttempt implements store.Store. The delivery's row is locked while its lease is checked,
// so of two records of one claim, one applies and the other conflicts.
func (s *Store) RecordAttempt(ctx context.Context, p store.RecordAttemptParams) (spool.WebhookDelivery, error) {
	switch p.State {
	case spool.DeliveryPending, spool.DeliveryDelivered, spool.DeliveryFailed:
	default:
		return spool.WebhookDelivery{}, fmt.Errorf("record attempt of %s: pgstore: bad state %q", p.ID, p.State)
	}
	var d spool.WebhookDelivery
	err := s.writeTx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		d, err = scanDelivery(tx.QueryRow(ctx, selectDeliveries+" WHERE d.id = $1 FOR UPDATE", p.ID))
		if err != nil {
			return notFound(err)
		}
		if d.State != spool.DeliveryPending || d.Lease != p.Lease {
			return fmt.Errorf("lease %d is not the current claim: %w", p.Lease, store.ErrConflict)
		}
		if a := p.Attempt; a != nil {
			d.Attempts++
			d.LastStatus, d.LastError = a.StatusCode, a.Error
			if _, err := tx.Exec(ctx, `INSERT INTO webhook_attempts (delivery_id, n, at, status_code, error, duration_ms)
				VALUES ($1, $2, $3, $4, $5, $6)`, d.ID, d.Attempts, millis(a.At), a.StatusCode, a.Error, a.Duration.Milliseconds()); err != nil {
				return err
			}
		}
		d.State = p.State
		if p.State == spool.DeliveryPending {
			d.NextAttemptAt = p.NextAttemptAt.Truncate(time.Millisecond).UTC()
		} else {
			d.FinishedAt = p.Now.Truncate(time.Millisecond).UTC()
		}
		_, err = tx.Exec(ctx, `UPDATE webhook_deliveries SET state = $1, attempts = $2, next_attempt_at = $3,
			finished_at = $4, last_status = $5, last_error = $6 WHERE id = $7`,
			string(d.State), d.Attempts, millis(d.NextAttemptAt), millis(d.FinishedAt), d.LastStatus, d.LastError, d.ID)
		return err
	})
	if err != nil {
		return spool.WebhookDelivery{}, fmt.Errorf("record attempt of %s: %w", p.ID, err)
	}
	return d, nil
}

// ListDeliveries implements store.Store. One statement reads the deliveries with their attempts,
// so the attempts match the deliveries.
func (s *Store) ListDeliveries(ctx context.Context, jobID string) ([]spool.WebhookDelivery, error) {
	var out []spool.WebhookDelivery
	err := s.read(ctx, func(q querier) error {
		rows, err := q.Query(ctx, `SELECT `+deliveryColumns+`, a.n, a.at, a.status_code, a.error, a.duration_ms
			FROM webhook_deliveries d LEFT JOIN webhook_attempts a ON a.delivery_id = d.id
			WHERE d.job_id = $1 ORDER BY d.seq, a.n`, jobID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				n, status *int
				at, durMs *int64
				errText   *string
			)
			d, err := scanDelivery(rows, &n, &at, &status, &errText, &durMs)
			if err != nil {
				return err
			}
			if len(out) == 0 || out[len(out)-1].ID != d.ID {
				out = append(out, d)
			}
			if n != nil {
				last := &out[len(out)-1]
				last.History = append(last.History, spool.DeliveryAttempt{
					N: *n, At: fromMillis(*at), StatusCode: *status, Error: *errText, Duration: time.Duration(*durMs) * time.Millisecond,
				})
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list deliveries of job %s: %w", jobID, err)
	}
	return out, nil
}

// NextDeliveryDue implements store.Store.
func (s *Store) NextDeliveryDue(ctx context.Context, after time.Time) (time.Time, bool, error) {
	var next *int64
	err := s.read(ctx, func(q querier) error {
		return q.QueryRow(ctx, `SELECT MIN(next_attempt_at) FROM webhook_deliveries
			WHERE state = 'pending' AND next_attempt_at > $1`, millis(after)).Scan(&next)
	})
	if err != nil {
		return time.Time{}, false, fmt.Errorf("next delivery due: %w", err)
	}
	if next == nil {
		return time.Time{}, false, nil
	}
	return time.UnixMilli(*next).UTC(), true, nil
}

// DeleteDeliveries implements store.Store. Attempts go with their delivery through ON DELETE
// CASCADE.
func (s *Store) DeleteDeliveries(ctx context.Context, p store.DeleteDeliveriesParams) (int, error) {
	var n int64
	err := s.write(ctx, func(ctx context.Context, q querier) error {
		tag, err := q.Exec(ctx, `DELETE FROM webhook_deliveries WHERE seq IN (
			SELECT seq FROM webhook_deliveries WHERE state IN ('delivered','failed') AND finished_at <= $1
			LIMIT $2 FOR UPDATE SKIP LOCKED)`, millis(p.Before), limit(p.Limit))
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("delete deliveries: %w", err)
	}
	return int(n), nil
}
