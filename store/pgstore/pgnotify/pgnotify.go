// Package pgnotify is the notify.Notifier of Spool replicas that share one PostgreSQL database:
// a notification wakes the waiters of its topic in this process at once, and in every other
// replica through LISTEN/NOTIFY within milliseconds.
//
// What can go wrong, and why no answer is lost:
//   - The listening connection drops (a PostgreSQL restart, a terminated backend, a network
//     blip): notifications sent meanwhile never arrive. The listener reconnects with backoff, and
//     once it listens again it wakes every local waiter, which looks at the store again.
//   - Notifications come faster than they can be sent: the queue to the sender is bounded, and
//     when it overflows the sender tells the other replicas to wake everything instead.
//   - Either way, every waiter also rechecks the store on its safety interval (notify.Wait).
//
// The replicas of one database listen on a channel named after the schema, so Spools in two
// schemas of one database do not wake each other.
package pgnotify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/spool-run/spool/internal/notify"
	"github.com/spool-run/spool/store/pgstore"
)

const (
	// maxPayload is under PostgreSQL's 8000-byte limit on a NOTIFY payload.
	maxPayload = 7900
	// queueSize bounds the topics waiting for the sender.
	queueSize = 8192
	// everything is the topic that wakes every waiter of a replica that receives it.
	everything = "*"
)

// Config configures a Notifier.
type Config struct {
	// URL is the database's postgres:// URL (the store's).
	URL string
	// Logger receives reconnects and overflows. Defaults to discarding.
	Logger *slog.Logger
	// MaxBackoff bounds the wait between two attempts to listen again. Defaults to 5s.
	MaxBackoff time.Duration
}

// Notifier implements notify.Notifier across replicas. Start it with New; Close stops it.
type Notifier struct {
	hub     *notify.Hub
	log     *slog.Logger
	url     string
	channel string // the LISTEN channel, per schema
	origin  string // this replica's id, so that it ignores its own notifications
	backoff time.Duration

	send     *pgxpool.Pool
	queue    chan notify.Topic
	overflow atomic.Bool

	cancel context.CancelFunc
	wg     sync.WaitGroup

	stats counters
	pid   atomic.Uint32 // the listening connection's backend, for tests that cut it
}

type counters struct{ received, reconnects, overflows atomic.Int64 }

// Stats counts what a Notifier did since New.
type Stats struct {
	Received   int64 // notifications from other replicas
	Reconnects int64 // times the listening connection was made again
	Overflows  int64 // times the sender's queue was full and everything was woken instead
}

var _ notify.Notifier = (*Notifier)(nil)

// New connects, starts listening and sending, and returns once this replica listens: a change
// notified by another replica after New returns wakes this replica's waiters.
func New(ctx context.Context, cfg Config) (*Notifier, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	// One sender connection: the notifications of one replica go out in order.
	pool, err := pgstore.SmallPool(ctx, cfg.URL, 1)
	if err != nil {
		return nil, fmt.Errorf("pgnotify: %w", err)
	}
	var schema string
	if err := pool.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgnotify: %w", err)
	}
	id := make([]byte, 8)
	_, _ = rand.Read(id) // never fails (crypto/rand)
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n := &Notifier{
		hub: notify.NewHub(), log: cfg.Logger, url: cfg.URL, channel: ChannelName(schema), origin: hex.EncodeToString(id),
		backoff: cfg.MaxBackoff, send: pool, queue: make(chan notify.Topic, queueSize), cancel: cancel,
	}
	// The first LISTEN is made here, so that a URL or a server that does not work fails New
	// instead of retrying in the background for ever.
	conn, err := n.connect(ctx)
	if err != nil {
		cancel()
		pool.Close()
		return nil, err
	}
	n.wg.Add(2)
	go n.listen(runCtx, conn)
	go n.sendLoop(runCtx)
	return n, nil
}

// ChannelName is the LISTEN channel of the Spool whose tables are in schema.
func ChannelName(schema string) string { return "spool." + schema }

// Subscribe implements notify.Notifier.
func (n *Notifier) Subscribe(t notify.Topic) (<-chan struct{}, func()) { return n.hub.Subscribe(t) }

// Notify implements notify.Notifier: local waiters wake now, the other replicas' as soon as the
// sender has sent the topics. It never blocks.
func (n *Notifier) Notify(topics ...notify.Topic) {
	n.hub.Notify(topics...)
	for _, t := range topics {
		select {
		case n.queue <- t:
		default:
			n.overflow.Store(true)
		}
	}
}

// Stats returns the counters.
func (n *Notifier) Stats() Stats {
	return Stats{Received: n.stats.received.Load(), Reconnects: n.stats.reconnects.Load(), Overflows: n.stats.overflows.Load()}
}

// Close stops listening and sending; topics still queued are dropped (the other replicas'
// rechecks cover them). Idempotent.
func (n *Notifier) Close() {
	n.cancel()
	n.wg.Wait()
	n.send.Close()
}

// sendLoop sends the queued topics, as few NOTIFYs as their size allows.
func (n *Notifier) sendLoop(ctx context.Context) {
	defer n.wg.Done()
	const maxBatch = 1024
	batch := make([]notify.Topic, 0, maxBatch)
	for {
		select {
		case <-ctx.Done():
			return
		case t := <-n.queue:
			batch = append(batch[:0], t)
		}
	drain:
		for len(batch) < maxBatch {
			select {
			case t := <-n.queue:
				batch = append(batch, t)
			default:
				break drain
			}
		}
		if n.overflow.Swap(false) {
			n.stats.overflows.Add(1)
			n.log.Warn("notifications came faster than they could be sent; the other replicas wake every waiter instead")
			batch = append(batch[:0], everything)
		}
		for _, payload := range Payloads(n.origin, batch) {
			if _, err := n.send.Exec(ctx, "SELECT pg_notify($1, $2)", n.channel, payload); err != nil {
				if ctx.Err() != nil {
					return
				}
				// The other replicas recheck on their safety interval; tell them at the next send
				// to look at everything, since these topics are lost.
				n.overflow.Store(true)
				n.log.Warn("could not notify the other replicas; they will recheck", "err", err)
				break
			}
		}
	}
}

// Payloads encodes topics as NOTIFY payloads of at most maxPayload bytes: the origin, then one
// topic a line. Repeated topics go once.
func Payloads(origin string, topics []notify.Topic) []string {
	var out []string
	var b strings.Builder
	seen := make(map[notify.Topic]bool, len(topics))
	for _, t := range topics {
		if seen[t] || t == "" || strings.ContainsRune(string(t), '\n') || len(origin)+1+len(t) > maxPayload {
			continue // a topic that cannot be sent whole is left to the rechecks
		}
		seen[t] = true
		if b.Len() > 0 && b.Len()+1+len(t) > maxPayload {
			out = append(out, b.String())
			b.Reset()
		}
		if b.Len() == 0 {
			b.WriteString(origin)
		}
		b.WriteByte('\n')
		b.WriteString(string(t))
	}
	if b.Len() > 0 {
		out = append(out, b.String())
	}
	return out
}

// parsePayload is the inverse of Payloads.
func parsePayload(p string) (origin string, topics []notify.Topic) {
	origin, rest, _ := strings.Cut(p, "\n")
	for line := range strings.SplitSeq(rest, "\n") {
		if line != "" {
			topics = append(topics, notify.Topic(line))
		}
	}
	return origin, topics
}

// listen keeps a connection listening, starting with conn, and turns the other replicas'
// notifications into wake-ups of this replica's waiters.
func (n *Notifier) listen(ctx context.Context, conn *pgx.Conn) {
	defer n.wg.Done()
	wait := 50 * time.Millisecond
	first := true
	for ctx.Err() == nil {
		var err error
		if !first {
			conn, err = n.connect(ctx)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			n.log.Warn("cannot listen for the other replicas' notifications; retrying", "err", err, "in", wait)
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			wait = min(2*wait, n.backoff)
			continue
		}
		wait = 50 * time.Millisecond
		n.pid.Store(conn.PgConn().PID())
		if first {
			first = false
		} else {
			n.stats.reconnects.Add(1)
			n.log.Info("listening for the other replicas' notifications again")
			// Whatever was notified while nobody listened is lost: every waiter looks again.
			n.hub.NotifyAll()
		}
		n.receive(ctx, conn)
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = conn.Close(closeCtx)
		cancel()
	}
}

func (n *Notifier) connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgstore.Connect(ctx, n.url)
	if err != nil {
		return nil, fmt.Errorf("pgnotify: connect: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{n.channel}.Sanitize()); err != nil {
		_ = conn.Close(ctx)
		return nil, fmt.Errorf("pgnotify: listen: %w", err)
	}
	return conn, nil
}

// receive hands notifications to the hub until the connection fails or ctx ends.
func (n *Notifier) receive(ctx context.Context, conn *pgx.Conn) {
	for {
		m, err := conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() == nil {
				n.log.Warn("lost the connection that listens for the other replicas' notifications", "err", err)
			}
			return
		}
		origin, topics := parsePayload(m.Payload)
		if origin == n.origin {
			continue // this replica's own: its waiters woke when it was sent
		}
		n.stats.received.Add(1)
		for _, t := range topics {
			if t == everything {
				n.hub.NotifyAll()
				break
			}
		}
		n.hub.Notify(topics...)
	}
}
