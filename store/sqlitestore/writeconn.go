package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// maxStmts bounds the statement cache. The writer runs a few dozen distinct statements (filters
// of UpdateJobs vary a little); the bound only guards against a caller generating unbounded SQL.
const maxStmts = 256

// writeConn is the writer goroutine's connection. It keeps each statement prepared for reuse:
// parsing a statement costs about as much as running a small INSERT, and the writer is the
// bottleneck of the whole store. Only the writer goroutine uses it, so it needs no lock.
type writeConn struct {
	conn  *sql.Conn
	stmts map[string]*sql.Stmt
}

func newWriteConn(conn *sql.Conn) *writeConn {
	return &writeConn{conn: conn, stmts: make(map[string]*sql.Stmt)}
}

// stmt returns the prepared statement for query, or nil when the cache is full.
func (w *writeConn) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := w.stmts[query]; ok {
		return st, nil
	}
	if len(w.stmts) >= maxStmts {
		return nil, nil
	}
	st, err := w.conn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	w.stmts[query] = st
	return st, nil
}

func (w *writeConn) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := w.stmt(ctx, query)
	switch {
	case err != nil:
		return nil, err
	case st == nil:
		return w.conn.ExecContext(ctx, query, args...)
	}
	return st.ExecContext(ctx, args...)
}

func (w *writeConn) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := w.stmt(ctx, query)
	switch {
	case err != nil:
		return nil, err
	case st == nil:
		return w.conn.QueryContext(ctx, query, args...)
	}
	return st.QueryContext(ctx, args...)
}

// QueryRowContext cannot report a prepare error by itself, so it falls back to an unprepared
// query, which reports the same error through Row.Scan.
func (w *writeConn) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := w.stmt(ctx, query)
	if err != nil || st == nil {
		return w.conn.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// Close closes the cached statements; the connection itself belongs to the Store.
func (w *writeConn) Close() error {
	var errs []error
	for q, st := range w.stmts {
		errs = append(errs, st.Close())
		delete(w.stmts, q)
	}
	return errors.Join(errs...)
}

// readPool is the read pool with its statements kept prepared, as the writer keeps its own: a
// /runsync or a long-poll reads its job at every wake, and parsing the query cost as much as
// running it. A *sql.Stmt of a *sql.DB prepares itself on each pooled connection as it is used.
type readPool struct {
	db    *sql.DB
	mu    sync.Mutex
	stmts map[string]*sql.Stmt
}

func newReadPool(db *sql.DB) *readPool {
	return &readPool{db: db, stmts: make(map[string]*sql.Stmt)}
}

// stmt returns the prepared statement for query, or nil when the cache is full.
func (p *readPool) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st, ok := p.stmts[query]; ok {
		return st, nil
	}
	if len(p.stmts) >= maxStmts {
		return nil, nil
	}
	st, err := p.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	p.stmts[query] = st
	return st, nil
}

func (p *readPool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return p.db.ExecContext(ctx, query, args...) // the pool is query_only: nothing to keep
}

func (p *readPool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := p.stmt(ctx, query)
	switch {
	case err != nil:
		return nil, err
	case st == nil:
		return p.db.QueryContext(ctx, query, args...)
	}
	return st.QueryContext(ctx, args...)
}

// QueryRowContext falls back to an unprepared query on a prepare error, which Row.Scan reports.
func (p *readPool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := p.stmt(ctx, query)
	if err != nil || st == nil {
		return p.db.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// Close closes the statements and the pool.
func (p *readPool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for q, st := range p.stmts {
		errs = append(errs, st.Close())
		delete(p.stmts, q)
	}
	return errors.Join(append(errs, p.db.Close())...)
}
