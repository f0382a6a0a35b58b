package httplimit

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/wire"
)

// BodiesConfig bounds request bodies.
type BodiesConfig struct {
	// MaxBody is the largest body any route accepts (the routes enforce their own limits with
	// 413). Required.
	MaxBody int64
	// Memory bounds the bytes of request bodies being received at once; a request that would go
	// over it gets 503 with Retry-After, its body read into nothing. Defaults to 256 MiB; at
	// least MaxBody.
	Memory int64
	// Timeout is the time any body has to arrive, plus its size at MinRate. Defaults to 10 s.
	Timeout time.Duration
	// MinRate, in bytes per second, is the slowest a body may arrive. Defaults to 64 KiB/s: a
	// 10 MB body then has 10 s + 160 s.
	MinRate int64
	// Crowded, when set, reports whether connections are scarce (Conns.Crowded): a refusal then
	// closes at once instead of reading what its client is still sending, so that refused
	// requests (those of clients without a key, say) cannot keep connections others need.
	Crowded func() bool
}

// Defaults of BodiesConfig.
const (
	DefaultBodyMemory  = 256 << 20
	DefaultBodyTimeout = 10 * time.Second
	DefaultBodyMinRate = 64 << 10
)

// An answer given without reading the body (a 401, a 413) reads the rest of it into nothing
// after it is sent, for as long as the client keeps sending (each read may wait refusalDrainIdle),
// at most refusalDrainTime and refusalDrainBytes in all: so that closing does not reset the
// connection under an answer the client has not read yet (the kernel discards it on a reset, and
// a client that writes its whole body before it reads, as most do, sees only "connection reset"),
// while a client that stops sending cannot hold the connection. When connections are scarce
// (BodiesConfig.Crowded) it closes at once.
const (
	refusalDrainIdle  = time.Second
	refusalDrainTime  = 10 * time.Second
	refusalDrainBytes = 64 << 20
)

// Bodies bounds the request bodies of a handler: the time to receive one, the memory of all being
// received, and the connection of an answer that did not read its body (closed, not drained).
//
// The memory is reserved when the handler first reads the body, not when the request arrives:
// handlers authenticate first, so a client without a key never holds any of it. A known length
// is reserved whole at that first read; an unknown one (chunked) as it arrives.
type Bodies struct {
	cfg      BodiesConfig
	used     atomic.Int64
	refused  atomic.Int64 // requests refused for the budget
	timedOut atomic.Int64 // bodies that did not arrive in time
}

// NewBodies checks cfg and returns its Bodies.
func NewBodies(cfg BodiesConfig) (*Bodies, error) {
	if cfg.Memory == 0 {
		cfg.Memory = DefaultBodyMemory
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultBodyTimeout
	}
	if cfg.MinRate == 0 {
		cfg.MinRate = DefaultBodyMinRate
	}
	switch {
	case cfg.MaxBody <= 0:
		return nil, errors.New("httplimit: MaxBody is required")
	case cfg.Memory < cfg.MaxBody:
		return nil, fmt.Errorf("httplimit: the body memory (%d bytes) must hold at least the largest body (%d bytes)", cfg.Memory, cfg.MaxBody)
	case cfg.Timeout < 0 || cfg.MinRate < 0:
		return nil, errors.New("httplimit: the body timeout and rate must not be negative")
	}
	return &Bodies{cfg: cfg}, nil
}

// BodyStats are the counters of a Bodies.
type BodyStats struct {
	// InFlight is the bytes reserved for bodies being received now; Memory is the bound.
	InFlight, Memory int64
	// Refused counts requests refused for the memory bound; TimedOut, bodies that were too slow.
	Refused, TimedOut int64
}

// Stats returns the current reservation and the counters.
func (b *Bodies) Stats() BodyStats {
	return BodyStats{InFlight: b.used.Load(), Memory: b.cfg.Memory, Refused: b.refused.Load(), TimedOut: b.timedOut.Load()}
}

// Deadline is how long a body of size bytes may take to arrive.
func (b *Bodies) Deadline(size int64) time.Duration {
	return b.cfg.Timeout + time.Duration(float64(size)/float64(b.cfg.MinRate)*float64(time.Second))
}

func (b *Bodies) reserve(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.cfg.Memory {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

func (b *Bodies) release(n int64) { b.used.Add(-n) }

// busy is the answer over the memory bound.
var busy = &spool.Error{Code: spool.CodeUnavailable, RetryAfter: 1,
	Message: "the server is receiving too many request bodies at once; retry shortly"}

// Handler bounds the bodies of the requests next serves.
func (b *Bodies) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		// A length over MaxBody is the route's 413 to give, without reading.
		size := r.ContentLength
		if size < 0 || size > b.cfg.MaxBody {
			size = b.cfg.MaxBody
		}
		rc := http.NewResponseController(w)
		deadline := time.Now().Add(b.Deadline(size))
		_ = rc.SetReadDeadline(deadline)
		body := &body{src: r.Body, b: b, rc: rc, limit: b.Deadline(size), length: r.ContentLength}
		if r.ContentLength > b.cfg.MaxBody {
			body.length = -1 // never read whole: charged as it arrives, if read at all
		}
		defer func() { b.release(body.reserved) }()
		r.Body = body
		gw := &guardedWriter{ResponseWriter: w, body: body}
		next.ServeHTTP(gw, r)
		if body.refused {
			// Read the rest into nothing (no memory, within the body's deadline), so that the
			// client, which is still sending, gets its 503 rather than a reset connection.
			_, _ = io.Copy(io.Discard, body.src)
			return
		}
		if !body.eof {
			// The server would read the rest to reuse the connection, for as long as the
			// client takes; the answer said Connection: close instead, and lingers briefly.
			crowded := b.cfg.Crowded != nil && b.cfg.Crowded()
			if !crowded && r.Header.Get("Expect") == "" {
				linger(rc, body.src, deadline)
			}
			// The server itself would read up to 256 KiB of the rest, waiting for it.
			_ = rc.SetReadDeadline(time.Unix(1, 0))
		}
	})
}

// linger sends the answer, then reads what is left of the body into nothing (see
// refusalDrainIdle), never past the body's own deadline; the connection then closes (the answer
// said so). It is not called for a client that asked to continue first: it sends nothing after a
// final answer.
func linger(rc *http.ResponseController, src io.Reader, deadline time.Time) {
	_ = rc.Flush()
	end := time.Now().Add(refusalDrainTime)
	if deadline.Before(end) {
		end = deadline
	}
	buf := make([]byte, 32<<10)
	for read := 0; read < refusalDrainBytes; {
		next := time.Now().Add(refusalDrainIdle)
		if end.Before(next) {
			next = end
		}
		_ = rc.SetReadDeadline(next)
		n, err := src.Read(buf)
		read += n
		if err != nil {
			return
		}
	}
}

// body reads a request body, charging an unknown length to the budget as it arrives, clearing
// the read deadline at the end (it would otherwise end the long wait of a /runsync or a
// long-poll: the server's own read of the connection after the body shares that deadline) and
// turning a timeout into an error that says what happened.
type body struct {
	src      io.ReadCloser
	b        *Bodies
	rc       *http.ResponseController
	limit    time.Duration
	length   int64 // the declared length, reserved at the first read; -1: charged as it arrives
	reserved int64
	refused  bool // over the memory bound: the handler got busy
	eof      bool
}

func (d *body) Read(p []byte) (int, error) {
	switch {
	case d.refused:
		return 0, busy
	case d.eof:
		return 0, io.EOF
	case d.length > 0 && d.reserved == 0:
		if !d.b.reserve(d.length) {
			return 0, d.refuse()
		}
		d.reserved = d.length
	}
	n, err := d.src.Read(p)
	if n > 0 && d.length < 0 {
		if !d.b.reserve(int64(n)) {
			return 0, d.refuse()
		}
		d.reserved += int64(n)
	}
	switch {
	case err == io.EOF:
		d.eof = true
		_ = d.rc.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		d.b.timedOut.Add(1)
		return n, spool.Errorf(spool.CodeTimeout, "the request body did not arrive within %s (bodies must arrive at %s/s or faster)",
			d.limit.Round(time.Second), wire.FormatSize(d.b.cfg.MinRate))
	}
	return n, err
}

func (d *body) refuse() error {
	d.refused = true
	d.b.refused.Add(1)
	return busy
}

func (d *body) Close() error { return d.src.Close() }

// guardedWriter closes the connection of an answer given before the body was read to its end:
// the server would otherwise read the rest first, and a client that announced a body and never
// sends it would hold the connection for ever (for a 401 as much as for a 200).
type guardedWriter struct {
	http.ResponseWriter
	body  *body
	wrote bool
}

func (g *guardedWriter) WriteHeader(code int) {
	if !g.wrote {
		g.wrote = true
		if !g.body.eof && !g.body.refused {
			g.Header().Set("Connection", "close")
		}
	}
	g.ResponseWriter.WriteHeader(code)
}

func (g *guardedWriter) Write(p []byte) (int, error) {
	if !g.wrote {
		g.WriteHeader(http.StatusOK)
	}
	return g.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection (Flush, deadlines).
func (g *guardedWriter) Unwrap() http.ResponseWriter { return g.ResponseWriter }
