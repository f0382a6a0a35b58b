package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// maxStmts bounds a statement cache. The store runs a few dozen distinct statements (filters vary
// a little); the bound only guards against a caller generating unbounded SQL.
const maxStmts = 256

// preparer is what a prepared connection wraps: the writer's *sql.Conn or the read pool's *sql.DB.
type preparer interface {
	queryer
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
}

// prepared keeps each statement prepared for reuse: parsing a statement costs about as much as
// running a small INSERT. The writer is the bottleneck of the whole store, and a /runsync or a
// long-poll reads its job at every wake. On the read pool, a *sql.Stmt of the *sql.DB prepares
// itself on each pooled connection as it is used; the mutex is uncontended on the writer's.
type prepared struct {
	base  preparer
	mu    sync.Mutex
	stmts map[string]*sql.Stmt
}

func newPrepared(base preparer) *prepared {
	return &prepared{base: base, stmts: make(map[string]*sql.Stmt)}
}

// stmt returns the prepared statement for query, or nil when the cache is full.
func (p *prepared) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st, ok := p.stmts[query]; ok {
		return st, nil
	}
	if len(p.stmts) >= maxStmts {
		return nil, nil
	}
	st, err := p.base.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	p.stmts[query] = st
	return st, nil
}

func (p *prepared) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := p.stmt(ctx, query)
	switch {
	case err != nil:
		return nil, err
	case st == nil:
		return p.base.ExecContext(ctx, query, args...)
	}
	return st.ExecContext(ctx, args...)
}

func (p *prepared) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := p.stmt(ctx, query)
	switch {
	case err != nil:
		return nil, err
	case st == nil:
		return p.base.QueryContext(ctx, query, args...)
	}
	return st.QueryContext(ctx, args...)
}

// QueryRowContext cannot report a prepare error by itself, so it falls back to an unprepared
// query, which reports the same error through Row.Scan.
func (p *prepared) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := p.stmt(ctx, query)
	if err != nil || st == nil {
		return p.base.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// Close closes the cached statements; the connection or pool itself belongs to the Store.
func (p *prepared) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for q, st := range p.stmts {
		errs = append(errs, st.Close())
		delete(p.stmts, q)
	}
	return errors.Join(errs...)
}
