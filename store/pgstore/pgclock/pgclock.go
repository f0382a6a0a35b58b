// Package pgclock is the clock of Spool replicas that share one PostgreSQL database: the
// database's clock, read through the local one. Leases, TTLs, execution timeouts, worker liveness
// and webhook schedules are all instants one replica writes and another compares with its own
// Now; with each replica on its own clock, a replica whose clock runs ahead would expire another's
// lease early. With every replica on the database's clock, they agree to within the error of one
// round trip.
//
// The offset between the local clock and the database's is measured at New and again every
// Refresh; between measurements the local clock (monotonic) carries the time. Timers are local: a
// duration is the same on every clock.
package pgclock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spool-run/spool/internal/clock"
)

// Querier runs one query; a *pgxpool.Pool or a *pgx.Conn is one.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Config configures a Clock.
type Config struct {
	// DB is where the database's time is read.
	DB Querier
	// Refresh is how often the offset is measured again. Defaults to 1m.
	Refresh time.Duration
	// Logger receives large corrections and failed measurements. Defaults to discarding.
	Logger *slog.Logger
	// Local is the clock that carries the time between measurements. Defaults to the wall clock.
	Local clock.Clock
}

// Clock implements clock.Clock on the database's time.
type Clock struct {
	cfg    Config
	offset atomic.Int64 // database time minus local time, in nanoseconds
	rtt    atomic.Int64 // the round trip of the last measurement: the bound on its error
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ clock.Clock = (*Clock)(nil)

// New measures the offset once, then keeps measuring it every cfg.Refresh until Close.
func New(ctx context.Context, cfg Config) (*Clock, error) {
	if cfg.DB == nil {
		return nil, errors.New("pgclock: no database")
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Local == nil {
		cfg.Local = clock.Real{}
	}
	c := &Clock{cfg: cfg}
	if err := c.measure(ctx); err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = cancel
	c.wg.Add(1)
	go c.refresh(runCtx)
	return c, nil
}

// Now is the database's time now, as last measured plus the local time elapsed since.
func (c *Clock) Now() time.Time {
	return c.cfg.Local.Now().Add(time.Duration(c.offset.Load()))
}

// NewTimer implements clock.Clock with a local timer.
func (c *Clock) NewTimer(d time.Duration) clock.Timer { return c.cfg.Local.NewTimer(d) }

// Offset is the database's time minus the local time, and the bound on its error (the round trip
// of its measurement).
func (c *Clock) Offset() (offset, uncertainty time.Duration) {
	return time.Duration(c.offset.Load()), time.Duration(c.rtt.Load())
}

// Close stops the measurements. Idempotent.
func (c *Clock) Close() {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
}

// samples is how many reads of the database's clock a measurement makes; it keeps the one with
// the shortest round trip, whose midpoint is the best guess (a busy machine delays some reads by
// milliseconds, and replicas' guesses must agree to well under that).
const samples = 5

// measure reads the database's clock and takes it to have been read halfway through the round
// trip of the quickest of samples reads.
func (c *Clock) measure(ctx context.Context) error {
	var offset, rtt time.Duration
	for i := range samples {
		before := c.cfg.Local.Now()
		var db time.Time
		if err := c.cfg.DB.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&db); err != nil {
			return fmt.Errorf("pgclock: read the database's clock: %w", err)
		}
		after := c.cfg.Local.Now()
		if d := after.Sub(before); i == 0 || d < rtt {
			rtt, offset = d, db.Sub(before.Add(d/2))
		}
	}
	if old := time.Duration(c.offset.Swap(int64(offset))); c.rtt.Load() != 0 && absDuration(offset-old) > time.Second {
		c.cfg.Logger.Warn("this machine's clock moved against the database's", "by", offset-old)
	}
	c.rtt.Store(max(int64(rtt), 1))
	return nil
}

func (c *Clock) refresh(ctx context.Context) {
	defer c.wg.Done()
	for {
		t := c.cfg.Local.NewTimer(c.cfg.Refresh)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := c.measure(mctx); err != nil && ctx.Err() == nil {
			// The last offset stays: clocks drift by milliseconds a day, not in a minute.
			c.cfg.Logger.Warn("could not read the database's clock; keeping the last offset", "err", err)
		}
		cancel()
	}
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
