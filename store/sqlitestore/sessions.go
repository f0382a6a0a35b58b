package sqlitestore

import (
	"context"
	"fmt"
	"time"

	"github.com/spool-run/spool/store"
)

// PutSession implements store.SessionStore.
func (s *Store) PutSession(ctx context.Context, se store.Session) error {
	return s.do(ctx, func(ctx context.Context, tx queryer) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO sessions (hash, key_hash, created_at, expires_at) VALUES (?, ?, ?, ?)`,
			se.Hash, se.KeyHash, millis(se.CreatedAt), millis(se.ExpiresAt))
		if isUnique(err) {
			return fmt.Errorf("put session: %w", store.ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("put session: %w", err)
		}
		return nil
	})
}

// GetSession implements store.SessionStore.
func (s *Store) GetSession(ctx context.Context, hash string) (store.Session, error) {
	var (
		se               store.Session
		created, expires int64
	)
	err := s.read(func(db queryer) error {
		return notFound(db.QueryRowContext(ctx, `SELECT hash, key_hash, created_at, expires_at FROM sessions WHERE hash = ?`, hash).
			Scan(&se.Hash, &se.KeyHash, &created, &expires))
	})
	if err != nil {
		return store.Session{}, fmt.Errorf("get session: %w", err)
	}
	se.CreatedAt, se.ExpiresAt = fromMillis(created), fromMillis(expires)
	return se, nil
}

// DeleteSession implements store.SessionStore.
func (s *Store) DeleteSession(ctx context.Context, hash string) error {
	return s.do(ctx, func(ctx context.Context, tx queryer) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE hash = ?`, hash); err != nil {
			return fmt.Errorf("delete session: %w", err)
		}
		return nil
	})
}

// DeleteSessionsBefore implements store.SessionStore.
func (s *Store) DeleteSessionsBefore(ctx context.Context, t time.Time) (int, error) {
	var n int64
	err := s.do(ctx, func(ctx context.Context, tx queryer) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE expires_at <= ?`, millis(t))
		if err != nil {
			return fmt.Errorf("delete expired sessions: %w", err)
		}
		n, err = res.RowsAffected()
		return err
	})
	return int(n), err
}
