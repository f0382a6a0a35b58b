package httplimit_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool/internal/httplimit"
	"github.com/spool-run/spool/internal/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve runs h on a loopback listener behind conns (if any) and returns its address.
func serve(t *testing.T, h http.Handler, conns *httplimit.Conns) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: time.Hour}
	if conns != nil {
		ln = conns.Listener(ln)
		srv.ConnState = conns.ConnState
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// dial opens a raw connection and writes s.
func dial(t *testing.T, addr, s string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	if s != "" {
		_, err = io.WriteString(c, s)
		require.NoError(t, err)
	}
	return c
}

// closedByServer reports whether the server closed c (after whatever answer it wrote), waiting at
// most 10 s: the time bounds the test's failure, not what the test measures.
func closedByServer(t *testing.T, c net.Conn) (answer string, closed bool) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return string(b), false
	}
	return string(b), true
}

func get(t *testing.T, addr string) (int, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/", nil)
	require.NoError(t, err)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	res, err := tr.RoundTrip(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode, nil
}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })

// TestConnsEvictTheUnfinished: at the cap, connections that never finish their headers make room
// for one that does, oldest first; none of them blocks it.
func TestConnsEvictTheUnfinished(t *testing.T) {
	t.Parallel()
	conns := httplimit.NewConns(4, nil)
	addr := serve(t, okHandler, conns)
	var slow []net.Conn
	for range 4 {
		slow = append(slow, dial(t, addr, "POST /v2/y/run HTTP/1.1\r\nHost: x\r\n"))
	}
	for i := range 3 {
		status, err := get(t, addr)
		require.NoError(t, err, "request %d", i)
		require.Equal(t, 200, status)
	}
	// How many were evicted depends on whether each request's connection was closed before the
	// next came (the client closes it after the answer); at least the oldest slow one went.
	st := conns.Stats()
	require.GreaterOrEqual(t, st.Evicted, int64(1))
	require.LessOrEqual(t, st.Open, 4)
	_, closed := closedByServer(t, slow[0])
	require.True(t, closed, "the oldest slow connection was evicted")
}

// TestConnsRefuseWhenAllAreBusy: when every connection is inside a request, a new one is closed
// at once rather than queued; it is counted.
func TestConnsRefuseWhenAllAreBusy(t *testing.T) {
	t.Parallel()
	conns := httplimit.NewConns(2, nil)
	release := make(chan struct{})
	inside := make(chan struct{}, 2)
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inside <- struct{}{}
		<-release
	}), conns)
	var busy []net.Conn
	for range 2 {
		busy = append(busy, dial(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		<-inside
	}
	c := dial(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	answer, closed := closedByServer(t, c)
	require.True(t, closed)
	require.Empty(t, answer)
	require.EqualValues(t, 1, conns.Stats().Refused)
	close(release)
	for _, b := range busy {
		require.NoError(t, b.SetReadDeadline(time.Now().Add(10*time.Second)))
		line, err := bufio.NewReader(b).ReadString('\n')
		require.NoError(t, err)
		require.Contains(t, line, "200")
	}
}

func newBodies(t *testing.T, cfg httplimit.BodiesConfig) *httplimit.Bodies {
	t.Helper()
	b, err := httplimit.NewBodies(cfg)
	require.NoError(t, err)
	return b
}

// TestRefusalClosesInsteadOfDraining: an answer given without reading the announced body (a 401
// here) closes the connection; the server does not wait for a body that never comes.
func TestRefusalClosesInsteadOfDraining(t *testing.T) {
	t.Parallel()
	b := newBodies(t, httplimit.BodiesConfig{MaxBody: 1 << 20})
	addr := serve(t, b.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no key", http.StatusUnauthorized)
	})), nil)
	c := dial(t, addr, "POST /v2/y/run HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
	answer, closed := closedByServer(t, c)
	require.True(t, closed, "the connection is closed, not kept to drain the body")
	require.Contains(t, answer, "401")
	require.Contains(t, answer, "Connection: close")
	require.Zero(t, b.Stats().InFlight)

	// A client that does send its body still gets the whole answer (the server drained it).
	c = dial(t, addr, "POST /v2/y/run HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
	answer, closed = closedByServer(t, c)
	require.True(t, closed)
	require.Contains(t, answer, "no key")
}

// TestCrowdedRefusalClosesAtOnce: while connections are scarce a refusal does not wait for the
// body at all (it would otherwise wait up to a second for bytes that never come), so refused
// clients cannot hold the connections others need.
func TestCrowdedRefusalClosesAtOnce(t *testing.T) {
	t.Parallel()
	var asked atomic.Int64
	b := newBodies(t, httplimit.BodiesConfig{MaxBody: 1 << 20, Crowded: func() bool { asked.Add(1); return true }})
	addr := serve(t, b.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no key", http.StatusUnauthorized)
	})), nil)
	c := dial(t, addr, "POST /v2/y/run HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
	// Half the idle wait of a linger: closed by then only if it never lingered.
	require.NoError(t, c.SetReadDeadline(time.Now().Add(500*time.Millisecond)))
	answer, err := io.ReadAll(c)
	require.NoError(t, err, "the connection was kept open to wait for the body")
	require.Contains(t, string(answer), "401")
	require.EqualValues(t, 1, asked.Load())
}

// TestRefusalReachesAClientStillSending: a client that writes its whole (too large) body before it
// reads, as most HTTP clients do, gets the 413 that was sent before the body was read, not a
// reset connection: the server reads the rest into nothing before it closes.
func TestRefusalReachesAClientStillSending(t *testing.T) {
	t.Parallel()
	const size = 24 << 20 // more than the loopback socket buffers hold
	b := newBodies(t, httplimit.BodiesConfig{MaxBody: 1 << 20, Memory: 1 << 20})
	addr := serve(t, b.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := wire.ReadBody(w, r, 1<<20)
		wire.WriteError(w, err)
	})), nil)
	for range 3 {
		c := dial(t, addr, fmt.Sprintf("POST /v2/y/run HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size))
		require.NoError(t, c.SetWriteDeadline(time.Now().Add(10*time.Second)))
		_, err := c.Write(make([]byte, size))
		require.NoError(t, err, "the server reset the connection under a client still sending its body")
		answer, closed := closedByServer(t, c)
		require.True(t, closed)
		require.Contains(t, answer, "413")
		require.Contains(t, answer, "exceeds")
	}
	require.Zero(t, b.Stats().InFlight)
}

// TestSlowBodyTimesOut: a body that trickles in slower than the minimum rate ends with 408 at its
// deadline, and its connection closes.
func TestSlowBodyTimesOut(t *testing.T) {
	t.Parallel()
	b := newBodies(t, httplimit.BodiesConfig{MaxBody: 1 << 20, Timeout: 200 * time.Millisecond, MinRate: 1 << 20})
	addr := serve(t, b.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := wire.ReadBody(w, r, 1<<20); err != nil {
			wire.WriteError(w, err)
			return
		}
		w.WriteHeader(http.StatusOK)
	})), nil)
	c := dial(t, addr, "POST /v2/y/run HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
	answer, closed := closedByServer(t, c)
	require.True(t, closed)
	require.Contains(t, answer, "408")
	require.Contains(t, answer, "the request body did not arrive within")
	require.EqualValues(t, 1, b.Stats().TimedOut)
	require.Zero(t, b.Stats().InFlight)
}

// TestBodyDeadlineEndsWithTheBody: once the body is read, a handler may wait past the body's
// deadline (a /runsync, a long-poll) without the connection being cut.
func TestBodyDeadlineEndsWithTheBody(t *testing.T) {
	t.Parallel()
	b := newBodies(t, httplimit.BodiesConfig{MaxBody: 1 << 20, Timeout: 50 * time.Millisecond, MinRate: 1 << 20})
	addr := serve(t, b.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := wire.ReadBody(w, r, 1<<20)
		if err != nil {
			wire.WriteError(w, err)
			return
		}
		// Wall-clock time past the deadline is what is tested here.
		select {
		case <-time.After(300 * time.Millisecond):
			_, _ = w.Write(body)
		case <-r.Context().Done():
		}
	})), nil)
	c := dial(t, addr, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	got, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	require.Equal(t, "hello", string(got))
	require.Empty(t, res.Header.Get("Connection"), "a read body keeps the connection")
}

// TestBodyMemoryBound: bodies being received are bounded in total; beyond, 503 with Retry-After,
// the body read into nothing so that the client gets its answer; the reservation is taken when
// the handler reads (after it authenticated) and returned when the request ends.
func TestBodyMemoryBound(t *testing.T) {
	t.Parallel()
	b := newBodies(t, httplimit.BodiesConfig{MaxBody: 100, Memory: 100})
	hold := make(chan struct{})
	read := make(chan struct{}, 1)
	addr := serve(t, b.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/unread" {
			read <- struct{}{}
			<-hold
			http.Error(w, "no key", http.StatusUnauthorized)
			return
		}
		if _, err := wire.ReadBody(w, r, 100); err != nil {
			wire.WriteError(w, err)
			return
		}
		if r.URL.Path == "/hold" {
			read <- struct{}{}
			<-hold
		}
		w.WriteHeader(http.StatusOK)
	})), nil)
	post := func(path string, n int, chunked bool) net.Conn {
		body := strings.Repeat("x", n)
		if chunked {
			return dial(t, addr, fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", path, n, body))
		}
		return dial(t, addr, fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", path, n, body))
	}
	answer := func(c net.Conn) *http.Response {
		t.Helper()
		require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, res.Body)
		return res
	}
	// A handler that never reads (one that refuses the key) reserves nothing.
	unread := post("/unread", 90, false)
	<-read
	require.Zero(t, b.Stats().InFlight)
	holder := post("/hold", 80, false)
	<-read
	require.EqualValues(t, 80, b.Stats().InFlight)
	for _, chunked := range []bool{false, true} {
		res := answer(post("/", 40, chunked))
		require.Equal(t, 503, res.StatusCode, "chunked=%v", chunked)
		require.Equal(t, "1", res.Header.Get("Retry-After"))
		require.Empty(t, res.Header.Get("Connection"), "the body was read into nothing; the connection stays")
	}
	require.EqualValues(t, 2, b.Stats().Refused)
	close(hold)
	require.Equal(t, 200, answer(holder).StatusCode)
	require.Equal(t, 401, answer(unread).StatusCode)
	// The reservation is released after the handler; bodies that fit go through again.
	for _, chunked := range []bool{false, true} {
		require.Equal(t, 200, answer(post("/", 40, chunked)).StatusCode, "chunked=%v", chunked)
	}
	require.Zero(t, b.Stats().InFlight)
}

func TestBodiesConfig(t *testing.T) {
	t.Parallel()
	_, err := httplimit.NewBodies(httplimit.BodiesConfig{})
	require.ErrorContains(t, err, "MaxBody")
	_, err = httplimit.NewBodies(httplimit.BodiesConfig{MaxBody: 10, Memory: 5})
	require.ErrorContains(t, err, "must hold at least the largest body")
	b := newBodies(t, httplimit.BodiesConfig{MaxBody: 20 << 20})
	require.Equal(t, 10*time.Second+320*time.Second, b.Deadline(20<<20), "20 MB at 64 KiB/s")
}

// TestConnsUnderTLS: behind TLS the server sees its connections wrapped, and the cap must still
// tell busy ones from idle ones: at the cap, two requests in progress are not evicted for a third.
func TestConnsUnderTLS(t *testing.T) {
	t.Parallel()
	conns := httplimit.NewConns(2, nil)
	release := make(chan struct{})
	inside := make(chan struct{}, 2)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/busy" {
			inside <- struct{}{}
			<-release
		}
		w.WriteHeader(http.StatusOK)
	}))
	srv.Listener = conns.Listener(srv.Listener)
	srv.Config.ConnState = conns.ConnState
	srv.StartTLS()
	t.Cleanup(srv.Close)
	busy := make(chan error, 2)
	for range 2 {
		tr := srv.Client().Transport.(*http.Transport).Clone()
		t.Cleanup(tr.CloseIdleConnections)
		go func() {
			res, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Get(srv.URL + "/busy")
			if err == nil {
				_ = res.Body.Close()
			}
			busy <- err
		}()
		<-inside
	}
	tr := srv.Client().Transport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	_, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(srv.URL + "/")
	require.Error(t, err, "the third connection is refused: both others are busy")
	close(release)
	for range 2 {
		require.NoError(t, <-busy, "a request in progress is never evicted")
	}
	require.Zero(t, conns.Stats().Evicted)
}
