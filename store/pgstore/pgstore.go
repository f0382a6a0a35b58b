// Package pgstore is Spool's PostgreSQL store, for several replicas sharing one database.
//
// Every write is one transaction: a single statement where one suffices (a claim, a submission
// with its input, a chunk append), an explicit transaction otherwise (a batch of updates with
// their webhook outbox rows, a delivery's attempt). The hot single statements (submissions,
// claims, a job's end) go through the pipeline (pipeline.go), which under load sends those
// waiting as one transaction in one round trip, and runs them again one by one if any fails. A method that returns nil has committed, and
// a commit is durable only as PostgreSQL makes it so: with synchronous_commit off the server
// acknowledges commits it may lose in a crash, and Spool acknowledges to its clients only writes
// that survive one, so Open refuses a session where it is off. Once a write has been sent it is
// not cancelled with the caller's context: PostgreSQL cannot say whether a statement cancelled
// in flight had committed, and a write that returns the caller's context error must not have
// happened (store.Store). A multi-statement write honours the context until its COMMIT.
//
// Dispatch is FOR UPDATE SKIP LOCKED: a claim locks the queued jobs it picks and skips those
// another claim holds, so replicas claiming from the same queue never block each other nor get
// the same job. Counts and queue positions are SQL aggregates over partial indexes: several
// replicas write the table, so no process can keep them in memory.
//
// The schema is created and migrated at Open, all pending migrations in one transaction under a
// transaction-scoped advisory lock keyed by the schema, so replicas starting together migrate it
// once; a schema newer than this binary knows is refused rather than written with old
// assumptions.
//
// Payloads (inputs, outputs, progress, chunks, webhook bodies) are BYTEA, not jsonb: the store
// hands back the bytes a client sent (whitespace, key order, number spelling), and nil apart from
// empty, which jsonb's normalisation would not. So is a job's error, which a worker posts and may
// hold a NUL that a text column refuses. Times are BIGINT unix milliseconds, 0 for the zero time,
// as in sqlitestore, so that both stores answer alike.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/spool-run/spool/store"
)

// DefaultMaxConns bounds the pool unless the URL sets pool_max_conns. A claim or a write holds a
// connection for a round trip or a few; more connections than this mostly add contention on the
// server.
const DefaultMaxConns = 16

// Store is the PostgreSQL implementation of store.Store. It is safe for concurrent use.
type Store struct {
	pool     *pgxpool.Pool
	pipeline *pipeline  // the hot single-statement writes, batched under load
	commits  commitHook // see OnCommit

	// mu guards closed: every method holds it shared for its whole call, so Close, which takes it
	// exclusively, waits for the calls in flight before it closes the pool.
	mu        sync.RWMutex
	closed    bool
	closeOnce sync.Once
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at connString (a postgres:// or postgresql:// URL, or a
// key=value connection string; PGPASSWORD and the password file apply as libpq's do), checks that
// commits are durable and brings the schema up to date. The store lives in the session's
// current_schema() (set search_path in the URL to choose it). The pool holds at most
// DefaultMaxConns connections unless the URL sets pool_max_conns (pgxpool's other pool_
// parameters apply too). Errors never carry the password.
func Open(ctx context.Context, connString string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, redact(fmt.Sprintf("open postgres store %s: invalid connection string", describe(connString, nil)),
			err, secrets(connString, nil))
	}
	if !strings.Contains(connString, "pool_max_conns") {
		cfg.MaxConns = DefaultMaxConns
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "spool"
	}
	where := describe(connString, cfg)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, redact("open postgres store "+where, err, secrets(connString, cfg))
	}
	if err := prepare(ctx, pool); err != nil {
		pool.Close()
		return nil, redact("open postgres store "+where, err, secrets(connString, cfg))
	}
	s := &Store{pool: pool}
	s.pipeline = newPipeline(pool, &s.commits)
	return s, nil
}

// OnCommit sets what is told of each write transaction the store commits: how long it took, from
// its first statement to the server's acknowledgement of its COMMIT (the WAL flush included; not
// the wait for a pooled connection), and how many writes it held: the statements of a pipelined
// batch (pipeline.go), 1 for any other write (a single statement, or one method's transaction).
// A write that fails, or a transaction rolled back, is not reported. f runs on the goroutine that
// committed, before the writes' callers return, so it must be quick; nil stops the reports.
func (s *Store) OnCommit(f func(d time.Duration, writes int)) {
	if f == nil {
		s.commits.f.Store(nil)
		return
	}
	s.commits.f.Store(&f)
}

// commitHook holds the function OnCommit set, if any.
type commitHook struct {
	f atomic.Pointer[func(d time.Duration, writes int)]
}

// committed tells the hook, if set, of a write transaction that started at start and has just
// committed with writes writes. Unset, it costs an atomic load.
func (h *commitHook) committed(start time.Time, writes int) {
	if f := h.f.Load(); f != nil {
		(*f)(time.Since(start), writes)
	}
}

// prepare checks the session's durability and migrates the schema.
func prepare(ctx context.Context, pool *pgxpool.Pool) error {
	if err := pool.Ping(ctx); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	var syncCommit string
	if err := pool.QueryRow(ctx, "SHOW synchronous_commit").Scan(&syncCommit); err != nil {
		return fmt.Errorf("read synchronous_commit: %w", err)
	}
	if strings.EqualFold(syncCommit, "off") {
		return errors.New("synchronous_commit is off: PostgreSQL would acknowledge commits that a crash can lose, " +
			"and Spool acknowledges only durable writes; set it to on (or local, remote_write, remote_apply) " +
			"for the server, the database or Spool's role")
	}
	return migrate(ctx, pool, migrations)
}

// Close waits for the calls in flight and closes the pool. Later calls return nil; every other
// method returns store.ErrClosed afterwards.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.closeOnce.Do(func() { // a concurrent Close returns once the pool is closed
		s.pipeline.close() // no call is in flight: the lock above waited for them
		s.pool.Close()
	})
	return nil
}

// querier is what the statements need; the pool and a transaction both satisfy it, so the same
// code serves a single-statement write and a step of a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// enter marks a call in flight, or says the store is closed. The caller runs leave when done.
func (s *Store) enter() error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return store.ErrClosed
	}
	return nil
}

func (s *Store) leave() { s.mu.RUnlock() }

// read runs fn on the pool. A context that has already ended fails the call before it reaches
// the server.
func (s *Store) read(ctx context.Context, fn func(q querier) error) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return err
	}
	return unavailable(fn(s.pool))
}

// write runs fn, a write of one statement (its own transaction), on a connection of the pool. The
// context is checked once, before: after that fn gets a context that is not cancelled with it, so
// that a caller whose context ends while the statement runs is not told "not applied" about a
// statement that committed. Its values still reach fn. A write that returns nil is reported to
// OnCommit.
func (s *Store) write(ctx context.Context, fn func(ctx context.Context, q querier) error) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	if err := ctx.Err(); err != nil {
		return err
	}
	ctx = context.WithoutCancel(ctx)
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return unavailable(err)
	}
	defer conn.Release()
	start := time.Now()
	if err := fn(ctx, conn); err != nil {
		return unavailable(err)
	}
	s.commits.committed(start, 1)
	return nil
}

// pipeWrite runs st, one statement, through the pipeline: batched with the other statements
// waiting at that moment, or by itself when there are none. The context is honoured until a
// writer takes the statement, as write's is until the statement is sent.
func (s *Store) pipeWrite(ctx context.Context, st statement) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	return s.pipe(ctx, st)
}

// deadlockAttempts bounds the runs of a transaction that PostgreSQL aborts to break a deadlock.
const deadlockAttempts = 3

// writeTx runs fn in a transaction and commits it. fn and its statements honour ctx: if it ends
// before the COMMIT, the transaction is rolled back and the call returns the context's error.
// The COMMIT itself is not cancelled with ctx, for the reason write gives. A panic in fn rolls
// back and goes on. The isolation is READ COMMITTED: row locks, and the conditions of each
// UPDATE that PostgreSQL re-checks on the latest version of a row, do the work. A transaction
// aborted to break a deadlock changed nothing, so it runs again: fn must set its results afresh
// on each run.
func (s *Store) writeTx(ctx context.Context, fn func(ctx context.Context, tx pgx.Tx) error) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	for attempt := 1; ; attempt++ {
		err := s.runTx(ctx, fn)
		if !isDeadlock(err) || attempt == deadlockAttempts || ctx.Err() != nil {
			return unavailable(err)
		}
	}
}

// unavailableError marks an error of the connection (not of the SQL) as store.ErrUnavailable,
// keeping the cause.
type unavailableError struct{ cause error }

func (e unavailableError) Error() string   { return e.cause.Error() }
func (e unavailableError) Unwrap() []error { return []error{store.ErrUnavailable, e.cause} }

// unavailable marks err as store.ErrUnavailable when it says the database could not be reached
// or the connection was lost (a restart, a failover, a terminated backend): the engine then
// answers 503 with Retry-After rather than 500.
func unavailable(err error) error {
	if err == nil || errors.Is(err, store.ErrUnavailable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err // the caller's context ended: that is its answer, whatever the connection did
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03", // shutdown, crash, starting up
			pgErr.Code == "53300", // too many connections
			pgErr.Code == "25006": // read-only transaction: a standby after a failover
			return unavailableError{err}
		}
		return err
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connectErr), errors.As(err, &netErr), pgconn.SafeToRetry(err), pgconn.Timeout(err),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return unavailableError{err}
	}
	return err
}

// runTx runs fn in one transaction, and reports it to OnCommit once it has committed.
func (s *Store) runTx(ctx context.Context, fn func(ctx context.Context, tx pgx.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// Released after the rollback below: a connection left in a transaction (a failed rollback,
	// a failed COMMIT) is discarded by the pool, and the server then aborts the transaction.
	defer conn.Release()
	start := time.Now()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	if err := fn(ctx, tx); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	committed = true
	if err := tx.Commit(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	s.commits.committed(start, 1)
	return nil
}

// uniqueViolation is PostgreSQL's SQLSTATE for a duplicate key.
const uniqueViolation = "23505"

// isDeadlock reports whether err is PostgreSQL's abort of a transaction caught in a deadlock.
func isDeadlock(err error) bool {
	var e *pgconn.PgError
	return errors.As(err, &e) && e.Code == "40P01"
}

// isUnique reports whether err is a UNIQUE or PRIMARY KEY violation.
func isUnique(err error) bool {
	var e *pgconn.PgError
	return errors.As(err, &e) && e.Code == uniqueViolation
}

// notFound turns pgx.ErrNoRows into store.ErrNotFound and leaves other errors alone.
func notFound(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	return err
}

// describe is the connection string as an error may show it: user, host, port and database,
// never a password nor any other parameter (sslpassword, a password in an odd place). With cfg
// nil (the string did not parse) it shows what a URL parser finds, or nothing.
func describe(connString string, cfg *pgxpool.Config) string {
	if cfg != nil {
		c := cfg.ConnConfig
		return fmt.Sprintf("postgres://%s@%s/%s", url.PathEscape(c.User), hostPort(c.Host, c.Port), url.PathEscape(c.Database))
	}
	if hasURLScheme(connString) {
		if u, err := url.Parse(connString); err == nil {
			return fmt.Sprintf("postgres://%s@%s/%s", url.PathEscape(u.User.Username()), u.Host, strings.TrimPrefix(u.EscapedPath(), "/"))
		}
		return "(an unparsable postgres URL)"
	}
	return "(a key=value connection string)"
}

func hostPort(host string, port uint16) string {
	if strings.HasPrefix(host, "/") { // a Unix socket directory
		return url.PathEscape(host) + fmt.Sprintf(":%d", port)
	}
	if strings.Contains(host, ":") { // IPv6
		return fmt.Sprintf("[%s]:%d", host, port)
	}
	return fmt.Sprintf("%s:%d", host, port)
}

func hasURLScheme(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// secrets lists the strings an error about connString must not show: the password from the
// parsed configuration, and what looks like one in the string itself (which may not have
// parsed), raw and unescaped, and PGPASSWORD's.
func secrets(connString string, cfg *pgxpool.Config) []string {
	var out []string
	add := func(s string) {
		if s == "" {
			return
		}
		out = append(out, s)
		if u, err := url.PathUnescape(s); err == nil && u != s {
			out = append(out, u)
		}
		if u, err := url.QueryUnescape(s); err == nil && u != s {
			out = append(out, u)
		}
	}
	if cfg != nil {
		add(cfg.ConnConfig.Password) // fallback hosts share it
	}
	add(os.Getenv("PGPASSWORD"))
	if hasURLScheme(connString) {
		rest := connString[strings.Index(connString, "://")+3:]
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if _, pw, ok := strings.Cut(rest[:at], ":"); ok {
				add(pw)
			}
		}
	}
	// password=... and sslpassword=... as URL query parameters or key=value pairs, quoted or not.
	for rest := connString; ; {
		i := strings.Index(rest, "password")
		if i < 0 {
			break
		}
		rest = strings.TrimLeft(rest[i+len("password"):], " ")
		if !strings.HasPrefix(rest, "=") {
			continue
		}
		v := strings.TrimLeft(rest[1:], " ")
		if strings.HasPrefix(v, "'") {
			if end := strings.Index(v[1:], "'"); end >= 0 {
				add(v[1 : 1+end])
			}
			v = strings.TrimPrefix(v, "'")
		}
		if end := strings.IndexAny(v, "& '"); end >= 0 {
			v = v[:end]
		}
		add(v)
	}
	return out
}

// redactedError is an error of Open whose text has been scrubbed of the secrets. It unwraps to
// the causes a caller may test for (the context's error, a server error) and not to the driver's
// errors, whose text may quote the connection string.
type redactedError struct {
	msg    string
	causes []error
}

func (e *redactedError) Error() string   { return e.msg }
func (e *redactedError) Unwrap() []error { return e.causes }

// redact builds the error "prefix: err" with every secret replaced.
func redact(prefix string, err error, secrets []string) error {
	msg := prefix + ": " + err.Error()
	for _, s := range secrets {
		msg = strings.ReplaceAll(msg, s, "xxxxx")
	}
	e := &redactedError{msg: msg}
	for _, target := range []error{context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, target) {
			e.causes = append(e.causes, target)
		}
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		e.causes = append(e.causes, pgErr)
	}
	return e
}
