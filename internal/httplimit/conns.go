// Package httplimit bounds what clients can hold of the server before anyone is authenticated:
// connections (a cap, with the connections that have not sent a whole request evicted first),
// the time to send a request body (a read deadline sized by the body), and the memory of request
// bodies in flight (a byte budget). It also closes the connection of every answer given without
// reading the body, instead of draining it, so that a refused request cannot pin a connection by
// never sending the body it announced.
package httplimit

import (
	"container/list"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Conns caps the connections the server holds at once. When a new connection would go over the
// cap, the oldest connection that is not in the middle of a request (still sending its headers,
// or idle between requests) is closed to make room; only when every connection is busy with a
// request is the new one closed at once. An attacker who opens connections and never completes a
// request therefore cannot lock out a client that does (a health check, a worker's poll), and the
// server never runs out of file descriptors.
type Conns struct {
	max int
	log *slog.Logger

	mu   sync.Mutex
	open int
	// waiting holds the connections between requests (http.StateNew, http.StateIdle), oldest
	// first: the ones to evict.
	waiting *list.List

	evicted, refused atomic.Int64
	lastWarn         atomic.Int64 // unix seconds of the last warning
}

// NewConns returns a cap of max connections. max <= 0 picks DefaultMaxConns.
func NewConns(max int, log *slog.Logger) *Conns {
	if max <= 0 {
		max = DefaultMaxConns()
	}
	if log == nil {
		log = slog.Default()
	}
	return &Conns{max: max, log: log, waiting: list.New()}
}

// DefaultMaxConns is three quarters of the process's file descriptor limit (Go raises the soft
// limit to the hard one at start): the rest stays for the store, the workers' pipes and the
// webhook deliveries. 1024 when the limit cannot be read.
func DefaultMaxConns() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 {
		return 1024
	}
	n := rl.Cur / 4 * 3
	if n > 1<<20 {
		n = 1 << 20
	}
	return max(int(n), 16)
}

// Max is the cap.
func (c *Conns) Max() int { return c.max }

// Crowded reports whether at least half the cap is open: connections are then too scarce for a
// refused request to keep one while its client finishes sending (Bodies' linger).
func (c *Conns) Crowded() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.max > 0 && 2*c.open >= c.max
}

// ConnStats are the counters of a Conns.
type ConnStats struct {
	Open             int
	Evicted, Refused int64
}

// Stats returns the connections open now and the connections evicted or refused so far.
func (c *Conns) Stats() ConnStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return ConnStats{Open: c.open, Evicted: c.evicted.Load(), Refused: c.refused.Load()}
}

// Listener wraps ln so that its connections count against the cap.
func (c *Conns) Listener(ln net.Listener) net.Listener { return &listener{Listener: ln, c: c} }

// ConnState is the http.Server.ConnState hook that tells the cap which connections are in a
// request. The server must use both Listener and ConnState.
func (c *Conns) ConnState(nc net.Conn, st http.ConnState) {
	if t, isTLS := nc.(*tls.Conn); isTLS {
		nc = t.NetConn() // a TLS server wraps the listener's connections
	}
	tc, ok := nc.(*conn)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if tc.closed {
		return
	}
	switch st {
	case http.StateNew, http.StateIdle:
		if tc.elem != nil {
			c.waiting.MoveToBack(tc.elem)
		} else {
			tc.elem = c.waiting.PushBack(tc)
		}
	case http.StateActive, http.StateHijacked, http.StateClosed:
		if tc.elem != nil {
			c.waiting.Remove(tc.elem)
			tc.elem = nil
		}
	}
}

type listener struct {
	net.Listener
	c *Conns
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if tc := l.c.admit(nc); tc != nil {
			return tc, nil
		}
	}
}

// admit counts nc in, evicting the oldest waiting connection when at the cap; it returns nil,
// having closed nc, when every connection is in a request.
func (c *Conns) admit(nc net.Conn) *conn {
	c.mu.Lock()
	var victim *conn
	if c.open >= c.max {
		front := c.waiting.Front()
		if front == nil {
			c.refused.Add(1)
			c.mu.Unlock()
			_ = nc.Close()
			c.warn()
			return nil
		}
		victim = front.Value.(*conn)
		c.waiting.Remove(front)
		victim.elem = nil
		c.closeLocked(victim)
		c.evicted.Add(1)
	}
	c.open++
	tc := &conn{Conn: nc, c: c}
	// Waiting from the start: a connection that never completes its headers is the first to go.
	tc.elem = c.waiting.PushBack(tc)
	c.mu.Unlock()
	if victim != nil {
		_ = victim.Conn.Close()
		c.warn()
	}
	return tc
}

// closeLocked uncounts tc once; the caller closes the socket.
func (c *Conns) closeLocked(tc *conn) {
	if tc.closed {
		return
	}
	tc.closed = true
	c.open--
	if tc.elem != nil {
		c.waiting.Remove(tc.elem)
		tc.elem = nil
	}
}

// warn logs that the cap was reached, at most once a minute: under an attack every connection
// would log.
func (c *Conns) warn() {
	now := time.Now().Unix()
	last := c.lastWarn.Load()
	if now-last < 60 || !c.lastWarn.CompareAndSwap(last, now) {
		return
	}
	c.log.Warn("connection limit reached: closing connections that have not sent a whole request",
		"max", c.max, "evicted", c.evicted.Load(), "refused", c.refused.Load())
}

// conn is a counted connection. Its fields other than Conn are guarded by c.mu.
type conn struct {
	net.Conn
	c      *Conns
	elem   *list.Element
	closed bool
}

func (tc *conn) Close() error {
	tc.c.mu.Lock()
	tc.c.closeLocked(tc)
	tc.c.mu.Unlock()
	err := tc.Conn.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil // evicted
	}
	return err
}
