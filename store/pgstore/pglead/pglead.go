// Package pglead elects one leader among the Spool replicas that share a PostgreSQL database: the
// replica holding a session advisory lock on a connection of its own leads, and runs the loops
// that must run once per cluster (the sweeper, the lost-worker sweep, the webhook dispatcher, the
// autoscaler).
//
// The lock lives as long as its connection: when the leader dies, PostgreSQL ends its session and
// releases the lock, and another replica takes it at its next try (within Config.Retry). The
// session asks the server to probe the client with TCP keepalives, so that a leader whose machine
// vanished without closing the connection loses the lock within seconds rather than hours. A
// leader checks its connection every Retry and stops leading as soon as the check fails; the
// loops it runs make targeted, conditional writes, so two replicas that both believe they lead
// for a moment do no harm beyond repeated work.
package pglead

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/leader"
	"github.com/spool-run/spool/store/pgstore"
)

// Config configures a Lease.
type Config struct {
	// URL is the database's postgres:// URL (the store's).
	URL string
	// Retry is how often a follower tries to take the lock, and how often the leader checks its
	// connection. Defaults to 1s.
	Retry time.Duration
	// Logger receives changes of leadership. Defaults to discarding.
	Logger *slog.Logger
	// Clock paces the tries. Defaults to the wall clock.
	Clock clock.Clock
}

// Lease implements leader.Leader.
type Lease struct {
	cfg     Config
	leading atomic.Bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	changes atomic.Int64
	pid     atomic.Uint32 // the backend of the lock's connection, for tests that cut it
}

var _ leader.Leader = (*Lease)(nil)

// New starts trying to lead; it returns at once. Close gives the lock up.
func New(ctx context.Context, cfg Config) *Lease {
	if cfg.Retry <= 0 {
		cfg.Retry = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l := &Lease{cfg: cfg, cancel: cancel}
	l.wg.Add(1)
	go l.run(runCtx)
	return l
}

// Leading implements leader.Leader.
func (l *Lease) Leading() bool { return l.leading.Load() }

// Changes counts the times this replica started or stopped leading.
func (l *Lease) Changes() int64 { return l.changes.Load() }

// Close stops leading and closes the lock's connection, which releases the lock at once.
// Idempotent.
func (l *Lease) Close() {
	l.cancel()
	l.wg.Wait()
}

func (l *Lease) set(leading bool, why string, err error) {
	if l.leading.Swap(leading) == leading {
		return
	}
	l.changes.Add(1)
	if leading {
		l.cfg.Logger.Info("this replica leads: it runs the sweeper, the webhook dispatcher and the autoscaler")
	} else {
		l.cfg.Logger.Warn("this replica no longer leads", "why", why, "err", err)
	}
}

// run holds a connection and, on it, tries for the lock every Retry; once it has it, it checks the
// connection every Retry instead.
func (l *Lease) run(ctx context.Context) {
	defer l.wg.Done()
	var conn *pgx.Conn
	defer func() {
		l.set(false, "shutting down", nil)
		if conn != nil {
			closeConn(conn)
		}
	}()
	for {
		if conn == nil {
			var err error
			if conn, err = l.connect(ctx); err != nil && ctx.Err() == nil {
				l.cfg.Logger.Debug("cannot reach the database to lead; retrying", "err", err)
			}
		}
		if conn != nil {
			if err := l.round(ctx, conn); err != nil {
				l.set(false, "lost the connection that holds the lock", err)
				closeConn(conn)
				conn = nil
			}
		}
		t := l.cfg.Clock.NewTimer(l.cfg.Retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
	}
}

// round takes the lock, or checks that the connection holding it is alive.
func (l *Lease) round(ctx context.Context, conn *pgx.Conn) error {
	qctx, cancel := context.WithTimeout(ctx, l.cfg.Retry)
	defer cancel()
	if l.leading.Load() {
		return conn.Ping(qctx)
	}
	var got bool
	if err := conn.QueryRow(qctx, "SELECT pg_try_advisory_lock(hashtext('spool.leader.' || current_schema()))").Scan(&got); err != nil {
		return err
	}
	if got {
		l.set(true, "", nil)
	}
	return nil
}

func (l *Lease) connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgstore.Connect(ctx, l.cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("pglead: connect: %w", err)
	}
	// The server notices a vanished client within about 10 s (5 s idle, then 3 probes 2 s apart).
	if _, err := conn.Exec(ctx, "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3"); err != nil {
		closeConn(conn)
		return nil, fmt.Errorf("pglead: keepalives: %w", err)
	}
	l.pid.Store(conn.PgConn().PID())
	return conn, nil
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}
