package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// deliveryColumns lists the columns of a spool.WebhookDelivery, in the order of scanDelivery.
const deliveryColumns = `id, job_id, endpoint, url, host, payload, state, attempts, next_attempt_at, lease,
	created_at, finished_at, last_status, last_error, redelivery_of`

const selectDeliveries = `SELECT ` + deliveryColumns + ` FROM webhook_deliveries`

const insertDelivery = `INSERT INTO webhook_deliveries (` + deliveryColumns + `)
	VALUES (?,?,?,?,?,?,?,?,?,?, ?,?,?,?,?)`

func scanDelivery(row scanner) (spool.WebhookDelivery, error) {
	var (
		d                      spool.WebhookDelivery
		state                  string
		next, created, finishd int64
	)
	err := row.Scan(&d.ID, &d.JobID, &d.Endpoint, &d.URL, &d.Host, rawDest{&d.Payload}, &state, &d.Attempts,
		&next, &d.Lease, &created, &finishd, &d.LastStatus, &d.LastError, &d.RedeliveryOf)
	if err != nil {
		return d, err
	}
	d.State = spool.DeliveryState(state)
	d.NextAttemptAt, d.CreatedAt, d.FinishedAt = fromMillis(next), fromMillis(created), fromMillis(finishd)
	return d, nil
}

func queryDeliveries(ctx context.Context, q queryer, query string, args ...any) ([]spool.WebhookDelivery, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []spool.WebhookDelivery
	for rows.Next() {
		d, err := scanDelivery(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// newDeliveryArgs are the insert arguments of a new pending delivery, due at its creation.
func newDeliveryArgs(d spool.WebhookDelivery) []any {
	return []any{
		d.ID, d.JobID, d.Endpoint, d.URL, spool.WebhookHost(d.URL), blob(d.Payload), string(spool.DeliveryPending),
		0, millis(d.CreatedAt), 0, millis(d.CreatedAt), 0, 0, "", d.RedeliveryOf,
	}
}

// CreateDelivery implements store.Store.
func (s *Store) CreateDelivery(ctx context.Context, p store.CreateDeliveryParams) error {
	id, args := p.Delivery.ID, newDeliveryArgs(p.Delivery)
	return s.do(ctx, func(ctx context.Context, tx queryer) error {
		_, err := tx.ExecContext(ctx, insertDelivery, args...)
		switch {
		case isUnique(err):
			return fmt.Errorf("create delivery %s: %w", id, store.ErrConflict)
		case err != nil:
			return fmt.Errorf("create delivery %s: %w", id, err)
		}
		return nil
	})
}

// ClaimDeliveries implements store.Store. The per-host bound is one window query: each due row is
// ranked within its host, and a CASE gives the bound of the hosts HostLimits names.
func (s *Store) ClaimDeliveries(ctx context.Context, p store.ClaimDeliveriesParams) ([]spool.WebhookDelivery, error) {
	if p.Limit <= 0 {
		return nil, nil
	}
	where := "state = ? AND next_attempt_at <= ?"
	args := []any{string(spool.DeliveryPending), millis(p.Now)}
	if len(p.Exclude) > 0 {
		where += " AND id NOT IN (" + placeholders(len(p.Exclude)) + ")"
		for _, id := range p.Exclude {
			args = append(args, id)
		}
	}
	perHost := int64(p.PerHost)
	if perHost <= 0 {
		perHost = 1 << 62
	}
	bound := "?"
	var boundArgs []any
	if len(p.HostLimits) > 0 {
		var b strings.Builder
		b.WriteString("CASE host")
		for host, n := range p.HostLimits {
			b.WriteString(" WHEN ? THEN ?")
			boundArgs = append(boundArgs, host, max(n, 0))
		}
		b.WriteString(" ELSE ? END")
		bound = b.String()
	}
	boundArgs = append(boundArgs, perHost)
	query := `SELECT ` + deliveryColumns + ` FROM (
		SELECT *, ROW_NUMBER() OVER (PARTITION BY host ORDER BY next_attempt_at, seq) AS host_rank
		FROM webhook_deliveries WHERE ` + where + `
	) WHERE host_rank <= ` + bound + ` ORDER BY next_attempt_at, seq LIMIT ?`
	args = append(append(args, boundArgs...), p.Limit)
	lease := p.Lease
	if lease == nil {
		lease = func(string) time.Duration { return time.Minute }
	}
	return doResult(ctx, s, func(ctx context.Context, tx queryer) ([]spool.WebhookDelivery, error) {
		ds, err := queryDeliveries(ctx, tx, query, args...)
		if err != nil {
			return nil, fmt.Errorf("claim deliveries: %w", err)
		}
		for i := range ds {
			d := &ds[i]
			d.NextAttemptAt = p.Now.Add(lease(d.Endpoint)).Truncate(time.Millisecond).UTC()
			d.Lease++
			if _, err := tx.ExecContext(ctx, "UPDATE webhook_deliveries SET next_attempt_at = ?, lease = ? WHERE id = ?",
				millis(d.NextAttemptAt), d.Lease, d.ID); err != nil {
				return nil, fmt.Errorf("claim delivery %s: %w", d.ID, err)
			}
		}
		return ds, nil
	})
}

// RecordAttempt implements store.Store.
func (s *Store) RecordAttempt(ctx context.Context, p store.RecordAttemptParams) (spool.WebhookDelivery, error) {
	switch p.State {
	case spool.DeliveryPending, spool.DeliveryDelivered, spool.DeliveryFailed:
	default:
		return spool.WebhookDelivery{}, fmt.Errorf("sqlitestore: record attempt of %s: bad state %q", p.ID, p.State)
	}
	return doResult(ctx, s, func(ctx context.Context, tx queryer) (spool.WebhookDelivery, error) {
		d, err := scanDelivery(tx.QueryRowContext(ctx, selectDeliveries+" WHERE id = ?", p.ID))
		if err != nil {
			return d, fmt.Errorf("record attempt of %s: %w", p.ID, notFound(err))
		}
		if d.State != spool.DeliveryPending || d.Lease != p.Lease {
			return spool.WebhookDelivery{}, fmt.Errorf("record attempt of %s: lease %d is not the current claim: %w", p.ID, p.Lease, store.ErrConflict)
		}
		if a := p.Attempt; a != nil {
			d.Attempts++
			d.LastStatus, d.LastError = a.StatusCode, a.Error
			if _, err := tx.ExecContext(ctx, `INSERT INTO webhook_attempts (delivery_id, n, at, status_code, error, duration_ms)
				VALUES (?, ?, ?, ?, ?, ?)`, d.ID, d.Attempts, millis(a.At), a.StatusCode, a.Error, a.Duration.Milliseconds()); err != nil {
				return spool.WebhookDelivery{}, fmt.Errorf("record attempt of %s: %w", p.ID, err)
			}
		}
		d.State = p.State
		if p.State == spool.DeliveryPending {
			d.NextAttemptAt = p.NextAttemptAt.Truncate(time.Millisecond).UTC()
		} else {
			d.FinishedAt = p.Now.Truncate(time.Millisecond).UTC()
		}
		_, err = tx.ExecContext(ctx, `UPDATE webhook_deliveries SET state = ?, attempts = ?, next_attempt_at = ?,
			finished_at = ?, last_status = ?, last_error = ? WHERE id = ?`,
			string(d.State), d.Attempts, millis(d.NextAttemptAt), millis(d.FinishedAt), d.LastStatus, d.LastError, d.ID)
		if err != nil {
			return spool.WebhookDelivery{}, fmt.Errorf("record attempt of %s: %w", p.ID, err)
		}
		return d, nil
	})
}

// ListDeliveries implements store.Store. Both reads run in one read transaction, so the
// attempts match the deliveries.
func (s *Store) ListDeliveries(ctx context.Context, jobID string) ([]spool.WebhookDelivery, error) {
	var out []spool.WebhookDelivery
	err := s.read(func(queryer) error {
		// A transaction: one snapshot for every query (the prepared statements are for single ones).
		tx, err := s.readDB.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback() }()
		if out, err = queryDeliveries(ctx, tx, selectDeliveries+" WHERE job_id = ? ORDER BY seq", jobID); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT a.delivery_id, a.n, a.at, a.status_code, a.error, a.duration_ms
			FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
			WHERE d.job_id = ? ORDER BY a.delivery_id, a.n`, jobID)
		if err != nil {
			return err
		}
		defer rows.Close()
		index := make(map[string]int, len(out))
		for i, d := range out {
			index[d.ID] = i
		}
		for rows.Next() {
			var (
				id        string
				a         spool.DeliveryAttempt
				at, durMs int64
			)
			if err := rows.Scan(&id, &a.N, &at, &a.StatusCode, &a.Error, &durMs); err != nil {
				return err
			}
			a.At, a.Duration = fromMillis(at), time.Duration(durMs)*time.Millisecond
			if i, ok := index[id]; ok {
				out[i].History = append(out[i].History, a)
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
	var next sql.NullInt64
	err := s.read(func(db queryer) error {
		return db.QueryRowContext(ctx, "SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE state = ? AND next_attempt_at > ?",
			string(spool.DeliveryPending), millis(after)).Scan(&next)
	})
	if err != nil {
		return time.Time{}, false, fmt.Errorf("next delivery due: %w", err)
	}
	if !next.Valid {
		return time.Time{}, false, nil
	}
	return time.UnixMilli(next.Int64).UTC(), true, nil
}

// DeleteDeliveries implements store.Store. Attempts go with their delivery through ON DELETE
// CASCADE.
func (s *Store) DeleteDeliveries(ctx context.Context, p store.DeleteDeliveriesParams) (int, error) {
	limit := p.Limit
	if limit <= 0 {
		limit = -1
	}
	return doResult(ctx, s, func(ctx context.Context, tx queryer) (int, error) {
		res, err := tx.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE seq IN (
			SELECT seq FROM webhook_deliveries WHERE state IN (?, ?) AND finished_at <= ? LIMIT ?)`,
			string(spool.DeliveryDelivered), string(spool.DeliveryFailed), millis(p.Before), limit)
		if err != nil {
			return 0, fmt.Errorf("delete deliveries: %w", err)
		}
		n, err := res.RowsAffected()
		return int(n), err
	})
}
