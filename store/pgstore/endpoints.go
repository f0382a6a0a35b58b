package pgstore

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// PutEndpoint implements store.Store. The store has no clock: the caller sets UpdatedAt (and
// CreatedAt for a new endpoint; when zero, UpdatedAt stands in). Replacing an endpoint keeps the
// CreatedAt already stored.
func (s *Store) PutEndpoint(ctx context.Context, e spool.Endpoint) error {
	spec, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("put endpoint %s: %w", e.Name, err)
	}
	created := e.CreatedAt
	if created.IsZero() {
		created = e.UpdatedAt
	}
	return s.write(ctx, func(ctx context.Context, q querier) error {
		_, err := q.Exec(ctx, `INSERT INTO endpoints (name, spec, created_at, updated_at)
			VALUES ($1, $2, $3, $4)
			ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at`,
			e.Name, string(spec), millis(created), millis(e.UpdatedAt))
		if err != nil {
			return fmt.Errorf("put endpoint %s: %w", e.Name, err)
		}
		return nil
	})
}

const selectEndpoints = "SELECT spec, created_at, updated_at FROM endpoints"

func scanEndpoint(row scanner) (spool.Endpoint, error) {
	var (
		spec             string
		created, updated int64
	)
	// Decoded over the defaults, so that a setting added after the endpoint was stored takes its
	// default rather than a zero.
	e := spool.NewEndpoint("")
	if err := row.Scan(&spec, &created, &updated); err != nil {
		return e, err
	}
	if err := json.Unmarshal([]byte(spec), &e); err != nil {
		return e, fmt.Errorf("decode endpoint: %w", err)
	}
	e.CreatedAt, e.UpdatedAt = fromMillis(created), fromMillis(updated)
	return e, nil
}

// GetEndpoint implements store.Store.
func (s *Store) GetEndpoint(ctx context.Context, name string) (spool.Endpoint, error) {
	var e spool.Endpoint
	err := s.read(ctx, func(q querier) error {
		var err error
		e, err = scanEndpoint(q.QueryRow(ctx, selectEndpoints+" WHERE name = $1", name))
		return notFound(err)
	})
	if err != nil {
		return spool.Endpoint{}, fmt.Errorf("get endpoint %s: %w", name, err)
	}
	return e, nil
}

// ListEndpoints implements store.Store.
func (s *Store) ListEndpoints(ctx context.Context) ([]spool.Endpoint, error) {
	var eps []spool.Endpoint
	err := s.read(ctx, func(q querier) error {
		var err error
		eps, err = queryAll(ctx, q, scanEndpoint, selectEndpoints+" ORDER BY name")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list endpoints: %w", err)
	}
	return eps, nil
}

// DeleteEndpoint implements store.Store. The endpoint's jobs and workers are left alone.
func (s *Store) DeleteEndpoint(ctx context.Context, name string) error {
	return s.deleteOne(ctx, "DELETE FROM endpoints WHERE name = $1", name, "delete endpoint")
}

// deleteOne runs a DELETE of one row by key; store.ErrNotFound when there was none.
func (s *Store) deleteOne(ctx context.Context, query, key, what string) error {
	err := s.write(ctx, func(ctx context.Context, q querier) error {
		tag, err := q.Exec(ctx, query, key)
		if err == nil && tag.RowsAffected() == 0 {
			err = store.ErrNotFound
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, key, err)
	}
	return nil
}
