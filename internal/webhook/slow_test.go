package webhook_test

import (
	"bufio"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/webhook"
)

// hijacked runs fn on the raw connection of each request (to misbehave below HTTP), and waits for
// every such handler when the test ends.
type hijacked struct {
	stop chan struct{}
	wg   sync.WaitGroup
}

func newHijacked(t *testing.T) *hijacked {
	h := &hijacked{stop: make(chan struct{})}
	t.Cleanup(func() { close(h.stop); h.wg.Wait() })
	return h
}

func (h *hijacked) handler(fn func(w *bufio.ReadWriter, stop <-chan struct{})) func(int, http.ResponseWriter, *http.Request) {
	return func(_ int, w http.ResponseWriter, _ *http.Request) {
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		h.wg.Add(1)
		defer h.wg.Done()
		defer conn.Close()
		fn(rw, h.stop)
	}
}

// TestSlowReceivers: a receiver that hangs, one that drips a byte a second, one that streams a
// 100 MB body and one that streams endless headers: each attempt ends by its timeout (or sooner),
// at most MaxResponseBytes are read (memory stays flat, the stream is cut off), and deliveries to
// another receiver flow meanwhile. Not parallel: it measures the heap.
func TestSlowReceivers(t *testing.T) {
	f := newFixture(t)
	const timeout = 4 * time.Second
	f.putEndpoint("slow", func(ep *spool.Endpoint) { ep.WebhookTimeoutMs = timeout.Milliseconds(); ep.WebhookAttempts = 1 })
	h := newHijacked(t)

	hung := f.receiver(hang)
	var dripped atomic.Int64
	drip := f.receiver(h.handler(func(w *bufio.ReadWriter, stop <-chan struct{}) {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for _, b := range []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") {
			if w.WriteByte(b) != nil || w.Flush() != nil {
				return
			}
			dripped.Add(1)
			select {
			case <-tick.C:
			case <-stop:
				return
			}
		}
	}))
	var streamed atomic.Int64
	stream := f.receiver(func(_ int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		chunk := make([]byte, 32<<10)
		for streamed.Load() < 100<<20 {
			n, err := w.Write(chunk)
			streamed.Add(int64(n))
			if err != nil || r.Context().Err() != nil {
				return
			}
		}
	})
	var headerBytes atomic.Int64
	headers := f.receiver(h.handler(func(w *bufio.ReadWriter, stop <-chan struct{}) {
		line := "X-Pad: " + strings.Repeat("a", 1000) + "\r\n"
		if _, err := w.WriteString("HTTP/1.1 200 OK\r\n"); err != nil {
			return
		}
		for headerBytes.Load() < 100<<20 {
			select {
			case <-stop:
				return
			default:
			}
			n, err := w.WriteString(line)
			headerBytes.Add(int64(n))
			if err != nil || w.Flush() != nil {
				return
			}
		}
	}))
	fast := f.receiver(status(http.StatusOK))

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	slow := map[string]string{
		"hang":    f.enqueue("slow", hung.URL),
		"drip":    f.enqueue("slow", drip.URL),
		"stream":  f.enqueue("slow", stream.URL),
		"headers": f.enqueue("slow", headers.URL),
	}
	f.waitFor("the hanging and dripping attempts to start", func() bool {
		a, _ := hung.activeNow()
		return a == 1 && dripped.Load() >= 1
	})

	var fastJobs []string
	for range 20 {
		fastJobs = append(fastJobs, f.enqueue("ep", fast.URL))
	}
	f.waitFor("the fast deliveries", func() bool {
		for _, id := range fastJobs {
			if f.delivery(id).State != spool.DeliveryDelivered {
				return false
			}
		}
		return true
	})
	active, _ := hung.activeNow()
	require.Equal(t, 1, active, "the fast receiver's 20 deliveries went through while the hung attempt was in flight")
	require.Equal(t, spool.DeliveryPending, f.delivery(slow["hang"]).State)

	ended := map[string]spool.WebhookDelivery{}
	for name, id := range slow {
		f.waitFor(name+" to end", func() bool { return f.delivery(id).State != spool.DeliveryPending })
		ended[name] = f.delivery(id)
	}
	for name, d := range ended {
		require.Len(t, d.History, 1, name)
		require.Less(t, d.History[0].Duration, timeout+2*time.Second, "%s: the attempt ends by its timeout", name)
	}
	for _, name := range []string{"hang", "drip"} {
		require.Equal(t, spool.DeliveryFailed, ended[name].State, name)
		require.Contains(t, ended[name].History[0].Error, "timed out after 4s", name)
		require.GreaterOrEqual(t, ended[name].History[0].Duration, timeout-100*time.Millisecond, name)
	}
	require.Less(t, dripped.Load(), int64(10), "the drip was cut off")
	// A 2xx with an endless body: the status decides; 64 KiB are read, then the connection is cut.
	require.Equal(t, spool.DeliveryDelivered, ended["stream"].State)
	require.Less(t, streamed.Load(), int64(32<<20), "far less than 100 MB left the receiver")
	require.Equal(t, spool.DeliveryFailed, ended["headers"].State)
	require.Contains(t, ended["headers"].History[0].Error, "headers exceeded")
	require.Less(t, headerBytes.Load(), int64(32<<20))

	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	require.Less(t, grown, int64(16<<20), "the heap stays flat (grew by %d bytes)", grown)
	require.LessOrEqual(t, webhook.MaxResponseBytes, 64<<10)
	t.Logf("streamed %d, header bytes %d, dripped %d, heap grew %d", streamed.Load(), headerBytes.Load(), dripped.Load(), grown)
}
