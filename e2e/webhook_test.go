package e2e_test

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// hookReceiver is a webhook receiver in the test process, on loopback. Requests are numbered
// from 1; handle decides each answer.
type hookReceiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	got    []hookRequest
	arrive chan int // the number of each request, as it arrives
}

type hookRequest struct {
	Header http.Header
	Body   []byte
}

func newHookReceiver(t *testing.T, handle func(n int, w http.ResponseWriter, r *http.Request)) *hookReceiver {
	h := &hookReceiver{arrive: make(chan int, 100)}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		h.mu.Lock()
		h.got = append(h.got, hookRequest{Header: r.Header.Clone(), Body: body})
		n := len(h.got)
		h.mu.Unlock()
		h.arrive <- n
		handle(n, w, r)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookReceiver) requests() []hookRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookRequest(nil), h.got...)
}

// await waits for request n to arrive.
func (h *hookReceiver) await(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case got := <-h.arrive:
			if got >= n {
				return
			}
		case <-deadline.C:
			t.Fatalf("webhook request %d did not arrive within %s", n, timeout)
		}
	}
}

// verifySignature checks a Standard Webhooks signature by hand: v1,<base64 HMAC-SHA256 of
// "id.timestamp.body"> under the secret's bytes.
func verifySignature(t *testing.T, secret string, r hookRequest) {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	require.NoError(t, err)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(r.Header.Get("webhook-id") + "." + r.Header.Get("webhook-timestamp") + "."))
	mac.Write(r.Body)
	require.Equal(t, "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)), r.Header.Get("webhook-signature"))
}

func adminHeader(s *server) http.Header {
	return http.Header{"Authorization": {"Bearer " + s.Keys.Admin}}
}

// TestWebhookSurvivesCrash kills the server with SIGKILL while the webhook of a finished job is
// being delivered (the receiver holds the request: the attempt's outcome is never recorded), and
// starts it again on the same data: the webhook arrives, signed, and both arrivals carry the same
// webhook-id (docs/contract.md §2: the outbox is durable; delivery is at least once).
func TestWebhookSurvivesCrash(t *testing.T) {
	t.Parallel()
	secretBytes := make([]byte, 32)
	_, _ = rand.Read(secretBytes)
	secret := "whsec_" + base64.StdEncoding.EncodeToString(secretBytes)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	rcv := newHookReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			select { // hold the first attempt until the server dies
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	srv := startServer(t, serverOpts{Config: `
webhooks:
  allowCIDRs: ["127.0.0.1/32"]
endpoints:
  - name: ep
    webhookSecret: "` + secret + `"
    webhookTimeout: 3s
    webhookDelay: 1s
`})

	// The secret is never shown.
	r := srv.do(t, "GET", "/api/endpoints/ep", adminHeader(srv), nil)
	require.Equal(t, 200, r.Code, "%s", r)
	require.NotContains(t, string(r.Body), base64.StdEncoding.EncodeToString(secretBytes))
	require.Contains(t, string(r.Body), `"hasWebhookSecret":true`)

	const canary = "CANARY-e2e-41c9"
	client := srv.SDK(styleGo, "ep")
	id := client.Submit(t, `{"input":{"prompt":"hi"},"webhook":"`+rcv.srv.URL+`/hook?k=1",`+
		`"s3Config":{"accessId":"`+canary+`","accessSecret":"`+canary+`","bucketName":"b","endpointUrl":"https://s3.example"}}`)
	w := newPlainWorker(srv, "ep", "w-1")
	job := w.TakeOne(t)
	require.Equal(t, id, str(t, job, "id"))
	require.Equal(t, http.StatusOK, w.Done(t, id, `{"output":{"answer":42}}`).Code)

	rcv.await(t, 1, time.Minute)
	srv.Kill()
	srv = srv.Restart(t)
	rcv.await(t, 2, time.Minute)

	reqs := rcv.requests()
	require.GreaterOrEqual(t, len(reqs), 2)
	webhookID := reqs[0].Header.Get("webhook-id")
	require.True(t, strings.HasPrefix(webhookID, "msg_"), webhookID)
	for _, q := range reqs {
		require.Equal(t, webhookID, q.Header.Get("webhook-id"), "every arrival carries the same webhook-id")
		require.Equal(t, "application/json", q.Header.Get("Content-Type"))
		verifySignature(t, secret, q)
		require.NotContains(t, string(q.Body), canary, "never s3Config")
		m := fields(t, q.Body)
		require.Equal(t, id, str(t, m, "id"))
		require.Equal(t, "COMPLETED", str(t, m, "status"))
		require.JSONEq(t, `{"answer":42}`, string(m["output"]))
		require.JSONEq(t, `{"prompt":"hi"}`, string(m["input"]))
		require.Equal(t, rcv.srv.URL+"/hook?k=1", str(t, m, "webhook"))
		require.Equal(t, "w-1", str(t, m, "workerId"))
	}

	// The delivery's record: delivered, its last attempt a 204.
	d := awaitDelivery(t, srv, id, "delivered")
	t.Logf("attempts recorded: %+v (a cut-off attempt is never recorded)", d.Attempts)
	require.Equal(t, webhookID, d.ID)
	require.Equal(t, 204, d.Attempts[len(d.Attempts)-1].StatusCode)

	r = srv.do(t, "GET", "/metrics", nil, nil)
	require.Contains(t, string(r.Body), `spool_webhook_attempts_total{endpoint="ep",outcome="success"} 1`)
	require.Contains(t, string(r.Body), `spool_webhook_deliveries_total{endpoint="ep",outcome="delivered"} 1`)
	srv.Stop()
}

// TestWebhookTargetsAreGuarded: without an allowlist the built binary refuses a loopback
// receiver at dial time, records why, and the receiver sees nothing; a non-http(s) webhook is
// refused at submission.
func TestWebhookTargetsAreGuarded(t *testing.T) {
	t.Parallel()
	rcv := newHookReceiver(t, func(int, http.ResponseWriter, *http.Request) {})
	srv := startServer(t, serverOpts{Config: `
endpoints:
  - name: ep
    webhookAttempts: 1
`})
	client := srv.SDK(styleGo, "ep")
	r := client.Run(t, `{"input":1,"webhook":"ftp://files.example/x"}`)
	require.Equal(t, http.StatusBadRequest, r.Code, "%s", r)
	r = client.Run(t, `{"input":1,"webhook":"http://user:pw@hooks.example/x"}`)
	require.Equal(t, http.StatusBadRequest, r.Code, "%s", r)

	id := client.Submit(t, `{"input":1,"webhook":"`+rcv.srv.URL+`/hook"}`)
	require.Equal(t, http.StatusOK, client.Cancel(t, id).Code)

	d := awaitDelivery(t, srv, id, "failed")
	require.Len(t, d.Attempts, 1)
	require.Zero(t, d.Attempts[0].StatusCode)
	require.Contains(t, d.Attempts[0].Error, "refused to connect to 127.0.0.1: a loopback address")
	require.Empty(t, rcv.requests(), "the receiver on loopback was never reached")
	srv.Stop()
}

type deliveryRecord struct {
	ID, Status string
	Attempts   []struct {
		StatusCode int
		Error      string
	}
}

// awaitDelivery polls GET /api/jobs/{id}/webhook (every 100 ms, for at most a minute: the record
// follows the receiver's answer closely, and there is no long-poll for it) until the job's only
// delivery has the wanted status, and returns it.
func awaitDelivery(t *testing.T, srv *server, id, status string) deliveryRecord {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last resp
	for range 600 {
		last = srv.do(t, "GET", "/api/jobs/"+id+"/webhook", adminHeader(srv), nil)
		require.Equal(t, 200, last.Code, "%s", last)
		var v struct{ Deliveries []deliveryRecord }
		require.NoError(t, json.Unmarshal(last.Body, &v))
		if len(v.Deliveries) == 1 && v.Deliveries[0].Status == status {
			return v.Deliveries[0]
		}
		<-tick.C
	}
	require.Failf(t, "timeout", "the delivery of job %s did not become %s: %s", id, status, last)
	return deliveryRecord{}
}
