package pgstore

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// PutKey implements store.Store. A key whose hash belongs to another key is refused with
// store.ErrConflict: lookups by hash must find one key.
func (s *Store) PutKey(ctx context.Context, k spool.Key) error {
	var endpoints *string // NULL for nil, so that nil and empty lists stay apart
	if k.Endpoints != nil {
		b, err := json.Marshal(k.Endpoints)
		if err != nil {
			return fmt.Errorf("put key %s: %w", k.ID, err)
		}
		endpoints = new(string(b))
	}
	return s.write(ctx, func(ctx context.Context, q querier) error {
		_, err := q.Exec(ctx, `INSERT INTO keys (id, hash, name, scope, endpoints, read_only, source, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
			ON CONFLICT (id) DO UPDATE SET hash = excluded.hash, name = excluded.name, scope = excluded.scope,
				endpoints = excluded.endpoints, read_only = excluded.read_only, source = excluded.source,
				created_at = excluded.created_at`,
			k.ID, k.Hash, k.Name, string(k.Scope), endpoints, k.ReadOnly, k.Source, millis(k.CreatedAt))
		switch {
		case isUnique(err):
			return fmt.Errorf("put key %s: hash in use: %w", k.ID, store.ErrConflict)
		case err != nil:
			return fmt.Errorf("put key %s: %w", k.ID, err)
		}
		return nil
	})
}

// ListKeys implements store.Store. Keys created in the same millisecond come by id.
func (s *Store) ListKeys(ctx context.Context) ([]spool.Key, error) {
	var keys []spool.Key
	err := s.read(ctx, func(q querier) error {
		var err error
		keys, err = queryAll(ctx, q, scanKey, `SELECT id, hash, name, scope, endpoints, read_only, source, created_at
			FROM keys ORDER BY created_at, id`)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	return keys, nil
}

func scanKey(row scanner) (spool.Key, error) {
	var (
		k         spool.Key
		scope     string
		endpoints *string
		created   int64
	)
	if err := row.Scan(&k.ID, &k.Hash, &k.Name, &scope, &endpoints, &k.ReadOnly, &k.Source, &created); err != nil {
		return k, err
	}
	if endpoints != nil {
		if err := json.Unmarshal([]byte(*endpoints), &k.Endpoints); err != nil {
			return k, fmt.Errorf("decode endpoints of key %s: %w", k.ID, err)
		}
	}
	k.Scope, k.CreatedAt = spool.Scope(scope), fromMillis(created)
	return k, nil
}

// DeleteKey implements store.Store.
func (s *Store) DeleteKey(ctx context.Context, id string) error {
	return s.deleteOne(ctx, "DELETE FROM keys WHERE id = $1", id, "delete key")
}
