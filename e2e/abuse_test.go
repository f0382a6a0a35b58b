package e2e_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// These tests repeat the attacks of an outside review against the built binary, each with the
// bound it must hold asserted from the server's own /metrics.

// metric reads one sample of /metrics ("name" or `name{label="v"}`).
func (s *server) metric(t *testing.T, name string) float64 {
	t.Helper()
	r := s.do(t, "GET", "/metrics", nil, nil)
	require.Equal(t, 200, r.Code)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(r.Body)
	require.NotNil(t, m, "no %s in /metrics", name)
	v, err := strconv.ParseFloat(string(m[1]), 64)
	require.NoError(t, err)
	return v
}

// rawConn opens a TCP connection to the server and writes s.
func (s *server) rawConn(t *testing.T, msg string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	if msg != "" {
		_, err = io.WriteString(c, msg)
		require.NoError(t, err)
	}
	return c
}

// readUntilClosed reads c until the server closes it; a read that is still waiting after bound
// fails the test (the bound is a failure's limit, not a measurement).
func readUntilClosed(t *testing.T, c net.Conn, bound time.Duration) string {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(bound)))
	b, err := io.ReadAll(c)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the server kept the connection open for %s; it sent %q", bound, b)
	return string(b)
}

// TestAbuseConnectionsAreBounded: requests that announce a body and never send it, without a key,
// are answered 401 and closed at once; connections that never finish their headers cannot lock
// out the server's own health checks; the server never holds more connections than its cap.
func TestAbuseConnectionsAreBounded(t *testing.T) {
	t.Parallel()
	const capConns = 48
	srv := startServer(t, serverOpts{Config: fmt.Sprintf("endpoints:\n  - name: y\nlimits:\n  connections: %d\n", capConns)})

	// 1. 200 bodiless requests without a key: each gets its 401 and its connection closes.
	var wg sync.WaitGroup
	answers := make(chan string, 200)
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
			if err != nil {
				answers <- "dial: " + err.Error()
				return
			}
			defer c.Close()
			_, _ = io.WriteString(c, "POST /v2/y/run HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			b, err := io.ReadAll(c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				answers <- "still open: " + err.Error()
				return
			}
			answers <- string(b) // a connection refused at the cap may end with a reset
		}()
	}
	wg.Wait()
	close(answers)
	for a := range answers {
		// Connections over the cap may be refused outright (an empty answer); none stays open.
		require.True(t, a == "" || strings.HasPrefix(a, "HTTP/1.1 401"), "%.200s", a)
	}

	// 2. Twice the cap of connections that never finish their headers: the health check and a
	// submission still get through, and the open connections never exceed the cap.
	for range 2 * capConns {
		srv.rawConn(t, "POST /v2/y/run HTTP/1.1\r\nHost: x\r\n")
	}
	client := http.Header{"Authorization": {"Bearer " + srv.Keys.Client}, "Content-Type": {"application/json"}}
	for range 5 {
		r, err := srv.try("GET", "/v2/y/health", client, nil, 30*time.Second)
		require.NoError(t, err)
		require.Equal(t, 200, r.Code, r.String())
		r, err = srv.try("POST", "/v2/y/run", client, []byte(`{"input":1}`), 30*time.Second)
		require.NoError(t, err)
		require.Equal(t, 200, r.Code, r.String())
	}
	require.LessOrEqual(t, srv.metric(t, "spool_http_connections"), float64(capConns))
	require.Equal(t, float64(capConns), srv.metric(t, "spool_http_connections_max"))
	require.Positive(t, srv.metric(t, `spool_http_connections_closed_total{reason="evicted"}`))
}

// TestAbuseSlowBodyIsCutOff: a body trickled in slower than limits.bodyMinRate, with a valid key,
// ends with 408 at its deadline and its connection closes.
func TestAbuseSlowBodyIsCutOff(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverOpts{Config: "endpoints:\n  - name: y\nlimits:\n  bodyTimeout: 1s\n  bodyMinRate: 1048576\n"})
	c := srv.rawConn(t, "POST /v2/y/run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+srv.Keys.Client+
		"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
	// One more byte a little later: a trickle, not silence.
	_, err := io.WriteString(c, `"`)
	require.NoError(t, err)
	answer := readUntilClosed(t, c, 30*time.Second)
	require.True(t, strings.HasPrefix(answer, "HTTP/1.1 408"), "%.300s", answer)
	require.Contains(t, answer, "the request body did not arrive within")
	require.Equal(t, 1.0, srv.metric(t, `spool_http_bodies_refused_total{reason="slow"}`))
}

// TestAbuseBodyMemoryIsBounded: bodies being received count against limits.bodyMemory; beyond
// it a request gets 503 with Retry-After, its body read into nothing. With 60 clients each
// sending 10 MB at once, the server's heap stays near the bound instead of the ~2 GiB it reached
// when every body was read, grown and copied without one.
func TestAbuseBodyMemoryIsBounded(t *testing.T) {
	t.Parallel()
	const bound = 64 << 20
	srv := startServer(t, serverOpts{Config: fmt.Sprintf("endpoints:\n  - name: y\nlimits:\n  bodyMemory: %d\n", bound)})
	header := "POST /v2/y/run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + srv.Keys.Client +
		"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
	body := append(append([]byte(`{"input":"`), bytes.Repeat([]byte("x"), 10<<20-13)...), `"}`...)

	// Six announced 10 MB bodies are reserved in full once the server starts reading them
	// (after the key check), before their bytes arrive; the seventh does not fit.
	var held []net.Conn
	for range 6 {
		held = append(held, srv.rawConn(t, fmt.Sprintf(header, len(body))))
	}
	require.Eventually(t, func() bool { return srv.metric(t, "spool_http_body_bytes") == float64(6*len(body)) },
		30*time.Second, 10*time.Millisecond)
	seventh := srv.rawConn(t, fmt.Sprintf(header, len(body)))
	_, err := seventh.Write(body)
	require.NoError(t, err)
	res, err := http.ReadResponse(bufio.NewReader(seventh), nil)
	require.NoError(t, err)
	require.Equal(t, 503, res.StatusCode)
	require.Equal(t, "1", res.Header.Get("Retry-After"))
	_ = res.Body.Close()
	for _, c := range held {
		_, err := c.Write(body)
		require.NoError(t, err)
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		require.NoError(t, err)
		require.Equal(t, 200, res.StatusCode)
		_ = res.Body.Close()
	}

	// 60 clients at once, once each: those over the bound are told to retry, and none fails.
	client := http.Header{"Authorization": {"Bearer " + srv.Keys.Client}, "Content-Type": {"application/json"}}
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := srv.try("POST", "/v2/y/run", client, body, 2*time.Minute)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				codes[-1]++
				return
			}
			codes[r.Code]++
		}()
	}
	wg.Wait()
	require.Equal(t, 60, codes[200]+codes[503], "every client got 200 or 503: %v", codes)
	require.Positive(t, codes[200], "%v", codes)
	require.Zero(t, srv.metric(t, "spool_http_body_bytes"))
	// HeapSys only grows, so it holds the peak: the bound, the stored jobs' way through the
	// store, the collector's headroom and the runtime's own (150-300 MiB under -race on a busy
	// machine), well under the 600 MiB that 60 bodies held at once would take at the very least
	// (~2 GiB before the bound).
	peak := srv.metric(t, "go_memstats_heap_sys_bytes")
	t.Logf("heap peak %.0f MiB with a body bound of %d MiB; responses %v", peak/(1<<20), bound>>20, codes)
	require.Less(t, peak, float64(bound+384<<20), "the heap grew past the body bound towards 60 bodies' worth")
}

// TestAbusePingsPinNothing: 120 invented worker ids, each pinging with lists of long job ids the
// server never made (the attack took the heap from 0.6 MB to 138 MB, for good), leave no stop
// signal behind, at most one sighting per worker under the cap, and a heap that does not keep
// what they sent.
func TestAbusePingsPinNothing(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverOpts{Config: "endpoints:\n  - name: y\n"})
	heapBefore := srv.metric(t, "go_memstats_heap_inuse_bytes")
	const workers, pings, ids = 120, 3, 120 // 43,200 ids of 900 bytes: ~39 MB sent
	var wg sync.WaitGroup
	codes := make(chan int, workers*pings)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range pings {
				list := make([]string, ids)
				for i := range list {
					list[i] = fmt.Sprintf("%d-%d-%d-", w, p, i) + strings.Repeat("a", 890)
				}
				path := fmt.Sprintf("/v2/y/ping/fake-worker-%d?gpu=x&job_id=%s&runpod_version=1.12.0", w, strings.Join(list, ","))
				r, err := srv.try("GET", path, pingHeader(srv.Keys.Worker), nil, time.Minute)
				if err != nil {
					codes <- -1
					continue
				}
				codes <- r.Code
			}
		}()
		if w%8 == 7 {
			wg.Wait() // 8 workers at a time
		}
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		require.Equal(t, http.StatusOK, c)
	}
	require.Zero(t, srv.metric(t, "spool_worker_stop_signals"), "ids the server never made are not remembered")
	sightings := srv.metric(t, "spool_worker_sightings")
	require.LessOrEqual(t, sightings, float64(workers))
	require.LessOrEqual(t, sightings, srv.metric(t, "spool_worker_sightings_max"))
	heapAfter := srv.metric(t, "go_memstats_heap_inuse_bytes")
	t.Logf("heap in use %.1f MB before, %.1f MB after %d pings listing %d ids (%.0f MB sent); %v sightings",
		heapBefore/1e6, heapAfter/1e6, workers*pings, workers*pings*ids, float64(workers*pings*ids*900)/1e6, sightings)
	// What the attack sent would stay in the heap if anything kept it; garbage awaiting the
	// collector stays well under it (the heap of a fresh server is a few MB).
	require.Less(t, heapAfter-heapBefore, float64(20<<20), "the heap kept what the pings sent")
}
