package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// PutKey implements store.Store. A key whose hash belongs to another key is refused with
// store.ErrConflict: lookups by hash must find one key.
func (s *Store) PutKey(ctx context.Context, k spool.Key) error {
	var endpoints any // NULL for nil, so that nil and empty lists stay apart
	if k.Endpoints != nil {
		b, err := json.Marshal(k.Endpoints)
		if err != nil {
			return fmt.Errorf("put key %s: %w", k.ID, err)
		}
		endpoints = string(b)
	}
	return s.do(ctx, func(ctx context.Context, tx queryer) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO keys (id, hash, name, scope, endpoints, read_only, source, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)
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
	keys, err := readAll(ctx, s, scanKey, `SELECT id, hash, name, scope, endpoints, read_only, source, created_at
		FROM keys ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	return keys, nil
}

func scanKey(row scanner) (spool.Key, error) {
	var (
		k         spool.Key
		scope     string
		endpoints sql.NullString
		created   int64
	)
	if err := row.Scan(&k.ID, &k.Hash, &k.Name, &scope, &endpoints, &k.ReadOnly, &k.Source, &created); err != nil {
		return k, err
	}
	if endpoints.Valid {
		if err := json.Unmarshal([]byte(endpoints.String), &k.Endpoints); err != nil {
			return k, fmt.Errorf("decode endpoints of key %s: %w", k.ID, err)
		}
	}
	k.Scope, k.CreatedAt = spool.Scope(scope), fromMillis(created)
	return k, nil
}

// DeleteKey implements store.Store.
func (s *Store) DeleteKey(ctx context.Context, id string) error {
	return s.do(ctx, func(ctx context.Context, tx queryer) error {
		return deleteOne(ctx, tx, "DELETE FROM keys WHERE id = ?", id, "delete key")
	})
}
