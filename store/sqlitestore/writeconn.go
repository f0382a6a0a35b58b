package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
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
