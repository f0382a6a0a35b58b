package webhook_test

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/webhook"
	"github.com/spool-run/spool/spoolclient"
)

// TestRunPodScheduleRetriesThenDelivers: 500, 500, 200 gives exactly three attempts, 10 s apart
// on the injected clock, all with the same webhook-id, and the delivery is delivered.
func TestRunPodScheduleRetriesThenDelivers(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	rc := f.receiver(func(n int, w http.ResponseWriter, _ *http.Request) {
		if n < 3 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	j := f.completeJob("ep", rc.URL+"/hook", `{"ok":true}`)
	before, err := f.eng.JobAnyEndpoint(f.ctx, j.ID)
	require.NoError(t, err)

	f.waitFor("attempt 1", func() bool { return f.delivery(j.ID).Attempts == 1 })
	f.waitIdle()
	require.Equal(t, 1, rc.count(), "no retry before 10 s have passed")
	f.clock.Advance(9999 * time.Millisecond)
	f.waitIdle()
	require.Equal(t, 1, rc.count(), "no retry before 10 s have passed")
	f.clock.Advance(time.Millisecond)
	f.waitFor("attempt 2", func() bool { return f.delivery(j.ID).Attempts == 2 })
	f.waitIdle()
	f.clock.Advance(10 * time.Second)
	f.waitFor("attempt 3", func() bool { return f.delivery(j.ID).State == spool.DeliveryDelivered })

	after, err := f.eng.JobAnyEndpoint(f.ctx, j.ID)
	require.NoError(t, err)
	require.Equal(t, before, after, "the webhook never changes the job")

	// Nothing more, however long we wait.
	f.clock.Advance(24 * time.Hour)
	f.waitIdle()
	require.Equal(t, 3, rc.count())

	d := f.delivery(j.ID)
	require.Equal(t, []time.Duration{0, 10 * time.Second, 20 * time.Second}, attemptTimes(d))
	require.Equal(t, []int{500, 500, 200}, attemptCodes(d))
	require.Equal(t, "HTTP 500", d.History[0].Error)
	require.Empty(t, d.History[2].Error)
	for _, r := range rc.requests() {
		require.Equal(t, d.ID, r.Header.Get("webhook-id"), "one webhook-id across attempts")
		require.Equal(t, "application/json", r.Header.Get("Content-Type"))
		require.Empty(t, r.Header.Get("webhook-signature"), "no secret, no signature")
	}
	require.Equal(t, []string{"http_error", "http_error", "success"}, f.obs.outcomes("ep"))
}

// TestRunPodScheduleGivesUp: a receiver that always fails gets exactly three attempts, 10 s
// apart; then the delivery has failed, and the job is still COMPLETED.
func TestRunPodScheduleGivesUp(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	rc := f.receiver(status(http.StatusInternalServerError))
	j := f.completeJob("ep", rc.URL, `"out"`)
	ds := f.waitFinished(j.ID, 10*time.Second)
	require.Len(t, ds, 1)
	d := ds[0]
	require.Equal(t, spool.DeliveryFailed, d.State)
	require.Equal(t, 3, d.Attempts)
	require.Equal(t, []time.Duration{0, 10 * time.Second, 20 * time.Second}, attemptTimes(d))
	require.Equal(t, t0.Add(20*time.Second), d.FinishedAt)

	got, err := f.eng.JobAnyEndpoint(f.ctx, j.ID)
	require.NoError(t, err)
	require.Equal(t, spool.StateCompleted, got.State, "the job's state never depends on its webhook")
	require.JSONEq(t, `"out"`, string(got.Output))

	f.clock.Advance(24 * time.Hour)
	f.waitIdle()
	require.Equal(t, 3, rc.count(), "given up: no fourth attempt")
}

// TestFailuresOfEveryKind: a timeout, a refused connection and a redirect (never followed) each
// count as a failed attempt and are retried; any 2xx is a success.
func TestFailuresOfEveryKind(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.putEndpoint("slow", func(ep *spool.Endpoint) { ep.WebhookTimeoutMs = 200; ep.WebhookAttempts = 2 })
	f.putEndpoint("two", func(ep *spool.Endpoint) { ep.WebhookAttempts = 2 })

	hung := f.receiver(hang)
	target := f.receiver(status(200))
	redirect := f.receiver(func(_ int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/elsewhere", http.StatusFound)
	})

	const token = "/hook?token=tok-canary"
	timedOut := f.completeJob("slow", hung.URL+token, `1`)
	refused := f.completeJob("two", "http://"+closedPort(t)+token, `1`)
	redirected := f.completeJob("two", redirect.URL+token, `1`)

	for _, c := range []struct {
		job     *spool.Job
		outcome string
		errPart string
		code    int
	}{
		{timedOut, "timeout", "timed out after 200ms", 0},
		{refused, "network_error", "connection refused", 0},
		{redirected, "http_error", "redirects are not followed", 302},
	} {
		d := f.waitFinished(c.job.ID, 10*time.Second)[0]
		require.Equal(t, spool.DeliveryFailed, d.State, c.outcome)
		require.Equal(t, 2, d.Attempts, "%s: a failure is retried", c.outcome)
		for _, a := range d.History {
			require.Equal(t, c.code, a.StatusCode, c.outcome)
			require.Contains(t, a.Error, c.errPart, c.outcome)
			require.NotContains(t, a.Error, "tok-canary", "errors do not quote the URL")
		}
		j, err := f.eng.JobAnyEndpoint(f.ctx, c.job.ID)
		require.NoError(t, err)
		require.Equal(t, spool.StateCompleted, j.State)
	}
	require.Equal(t, 0, target.count(), "redirects are never followed")
	require.Equal(t, 2, hung.count())
	require.Equal(t, []string{"timeout", "timeout"}, f.obs.outcomes("slow"))

	// Any 2xx is a success, at the first attempt.
	for _, code := range []int{200, 201, 202, 204, 299} {
		rc := f.receiver(status(code))
		j := f.completeJob("ep", rc.URL, `1`)
		d := f.waitFinished(j.ID, 10*time.Second)[0]
		require.Equal(t, spool.DeliveryDelivered, d.State, code)
		require.Equal(t, []int{code}, attemptCodes(d))
	}
}

// TestExponentialSchedule: an endpoint can choose a longer schedule; waits double up to the cap,
// with jitter in the upper half.
func TestExponentialSchedule(t *testing.T) {
	t.Parallel()
	s := spool.WebhookSchedule{Backoff: spool.WebhookBackoffExponential, Delay: time.Minute, MaxDelay: time.Hour}
	none := func(time.Duration) time.Duration { return 0 }
	full := func(m time.Duration) time.Duration { return m }
	for attempt, want := range map[int]time.Duration{1: time.Minute, 2: 2 * time.Minute, 3: 4 * time.Minute, 7: time.Hour, 60: time.Hour} {
		require.Equal(t, want, webhook.Backoff(s, attempt, full), "attempt %d, no jitter taken off", attempt)
		require.Equal(t, want/2, webhook.Backoff(s, attempt, none), "attempt %d, all jitter", attempt)
	}
	require.Equal(t, 10*time.Second, webhook.Backoff(spool.DefaultWebhookSchedule(), 2, full), "fixed")

	f := newFixture(t, func(o *fixtureOpts) {
		o.webhook = func(c *webhook.Config) { c.Jitter = func(m time.Duration) time.Duration { return m } }
	})
	f.putEndpoint("long", func(ep *spool.Endpoint) {
		ep.WebhookAttempts, ep.WebhookBackoff, ep.WebhookDelayMs, ep.WebhookMaxDelayMs = 5, "exponential", 60000, 180000
	})
	rc := f.receiver(status(503))
	j := f.completeJob("long", rc.URL, `1`)
	d := f.waitFinished(j.ID, time.Minute)[0]
	require.Equal(t, []time.Duration{0, time.Minute, 3 * time.Minute, 6 * time.Minute, 9 * time.Minute}, attemptTimes(d))
}

// TestSignatures: with two secrets (rotation) every attempt carries one signature per secret,
// each a valid Standard Webhooks signature of id.timestamp.body.
func TestSignatures(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	s1, s2 := spool.NewWebhookSecret(), spool.NewWebhookSecret()
	f.putEndpoint("signed", func(ep *spool.Endpoint) { ep.WebhookSecret = s1 + " " + s2 })
	rc := f.receiver(status(204))
	j := f.completeJob("signed", rc.URL, `{"x":1}`)
	f.waitFinished(j.ID, 10*time.Second)
	reqs := rc.requests()
	require.Len(t, reqs, 1)
	h := reqs[0].Header
	require.Equal(t, "1800000000", h.Get("webhook-timestamp"), "unix seconds of the injected clock")
	keys, err := spool.ParseWebhookSecrets(s1 + " " + s2)
	require.NoError(t, err)
	want := webhook.Sign(keys, h.Get("webhook-id"), 1800000000, reqs[0].Body)
	require.Equal(t, want, h.Get("webhook-signature"))
	require.Len(t, strings.Fields(h.Get("webhook-signature")), 2)
	for _, sig := range strings.Fields(h.Get("webhook-signature")) {
		require.True(t, strings.HasPrefix(sig, "v1,"))
	}
	// What a receiver does: the SDK's Verify accepts either secret (rotation), not a third.
	now := time.Unix(1800000000, 0)
	require.NoError(t, spoolclient.Verify(s1, h, reqs[0].Body, now, 0))
	require.NoError(t, spoolclient.Verify(s2, h, reqs[0].Body, now, 0))
	require.ErrorIs(t, spoolclient.Verify(spool.NewWebhookSecret(), h, reqs[0].Body, now, 0), spoolclient.ErrWebhookSignature)
	require.ErrorIs(t, spoolclient.Verify(s1, h, append(reqs[0].Body, ' '), now, 0), spoolclient.ErrWebhookSignature)
}

// TestPerHostConcurrency: a receiver that hangs gets at most PerHost attempts at once, and
// deliveries to another host flow meanwhile.
func TestPerHostConcurrency(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	f := newFixture(t, func(o *fixtureOpts) {
		o.webhook = func(c *webhook.Config) { c.PerHost, c.Concurrency = 2, 8 }
	})
	slow := f.receiver(func(_ int, w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.WriteHeader(200)
	})
	fast := f.receiver(status(200))
	var slowJobs, fastJobs []string
	for range 5 {
		slowJobs = append(slowJobs, f.enqueue("ep", slow.URL))
	}
	f.waitFor("two slow attempts in flight", func() bool { a, _ := slow.activeNow(); return a == 2 })
	for range 6 {
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
	active, maxActive := slow.activeNow()
	require.Equal(t, 2, active, "the slow receiver still holds its two attempts")
	require.Equal(t, 2, maxActive, "never more than PerHost at once")
	require.Equal(t, 2, slow.count())
	close(release)
	f.waitFor("the slow deliveries", func() bool {
		for _, id := range slowJobs {
			if f.delivery(id).State != spool.DeliveryDelivered {
				return false
			}
		}
		return true
	})
	_, maxActive = slow.activeNow()
	require.Equal(t, 2, maxActive)
}

// TestRedeliver: a redelivery resends the stored payload under a new webhook-id.
func TestRedeliver(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	rc := f.receiver(status(200))
	j := f.completeJob("ep", rc.URL, `{"v":1}`)
	first := f.waitFinished(j.ID, 10*time.Second)[0]

	d, err := f.eng.Redeliver(f.ctx, j.ID)
	require.NoError(t, err)
	require.NotEqual(t, first.ID, d.ID)
	require.Equal(t, first.ID, d.RedeliveryOf)
	ds := f.waitFinished(j.ID, 10*time.Second)
	require.Len(t, ds, 2)
	require.Equal(t, spool.DeliveryDelivered, ds[1].State)
	reqs := rc.requests()
	require.Len(t, reqs, 2)
	require.Equal(t, reqs[0].Body, reqs[1].Body, "the stored payload, byte for byte")
	require.Equal(t, first.ID, reqs[0].Header.Get("webhook-id"))
	require.Equal(t, d.ID, reqs[1].Header.Get("webhook-id"))

	// A job without a webhook has nothing to redeliver; an unknown job is not found.
	plain := f.submit(engine.SubmitParams{})
	_, err = f.eng.Redeliver(f.ctx, plain.ID)
	require.Equal(t, spool.CodeInvalid, spool.ErrorCode(err))
	_, err = f.eng.Redeliver(f.ctx, "nope")
	require.Equal(t, spool.CodeNotFound, spool.ErrorCode(err))
	none, err := f.eng.WebhookDeliveries(f.ctx, plain.ID)
	require.NoError(t, err)
	require.Empty(t, none)
}

// TestDeliveryOutlivesJob: retention deletes the job; its pending delivery still goes out with
// the payload stored when the job ended, and stays listed.
func TestDeliveryOutlivesJob(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(o *fixtureOpts) {
		o.engine = func(c *engine.Config) { c.Retention = spool.Retention{Run: 5 * time.Second, Sync: 5 * time.Second} }
	})
	rc := f.receiver(func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.WriteHeader(500)
			return
		}
		w.WriteHeader(200)
	})
	j := f.completeJob("ep", rc.URL, `{"kept":true}`)
	f.waitFor("attempt 1", func() bool { return f.delivery(j.ID).Attempts == 1 })
	f.waitIdle()
	f.clock.Advance(6 * time.Second)
	res, err := f.eng.Sweep(f.ctx)
	require.NoError(t, err)
	require.Equal(t, 1, res.Deleted)
	_, err = f.eng.JobAnyEndpoint(f.ctx, j.ID)
	require.Equal(t, spool.CodeNotFound, spool.ErrorCode(err))
	f.clock.Advance(4 * time.Second)
	ds := f.waitFinished(j.ID, 10*time.Second)
	require.Equal(t, spool.DeliveryDelivered, ds[0].State)
	reqs := rc.requests()
	require.Equal(t, reqs[0].Body, reqs[1].Body)
	require.Equal(t, `{"kept":true}`, string(jsonObject(t, reqs[1].Body)["output"]))
	listed, err := f.eng.WebhookDeliveries(f.ctx, j.ID)
	require.NoError(t, err)
	require.Len(t, listed, 1)
}

// TestFinishedDeliveriesAreSwept: finished deliveries are kept for Retention, then deleted.
func TestFinishedDeliveriesAreSwept(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(o *fixtureOpts) {
		o.webhook = func(c *webhook.Config) { c.Retention = 48 * time.Hour }
	})
	rc := f.receiver(status(200))
	j := f.completeJob("ep", rc.URL, `1`)
	f.waitFinished(j.ID, 10*time.Second)
	f.clock.Advance(47 * time.Hour)
	f.d.Sweep(f.ctx)
	require.Len(t, f.deliveries(j.ID), 1)
	f.clock.Advance(time.Hour)
	f.d.Sweep(f.ctx)
	require.Empty(t, f.deliveries(j.ID))
}

// TestStopGivesClaimsBack: Stop cuts off an attempt in flight after its grace and gives the claim
// back uncounted, so the delivery is due at once after a restart.
func TestStopGivesClaimsBack(t *testing.T) {
	t.Parallel()
	path := t.TempDir() + "/spool.db"
	f := newFixture(t, func(o *fixtureOpts) { o.path = path })
	rc := f.receiver(func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			<-r.Context().Done()
			return
		}
		w.WriteHeader(200)
	})
	j := f.completeJob("ep", rc.URL, `1`)
	f.waitFor("the first request", func() bool { return rc.count() == 1 })
	f.close()

	g := newFixture(t, func(o *fixtureOpts) { o.path = path; o.clock = f.clock })
	d := g.waitFinished(j.ID, time.Second)[0]
	require.Equal(t, spool.DeliveryDelivered, d.State)
	require.Equal(t, 1, d.Attempts, "the cut-off attempt was not counted")
	require.Equal(t, []time.Duration{0}, attemptTimes(d), "due at once after the restart")
	reqs := rc.requests()
	require.Len(t, reqs, 2)
	require.Equal(t, reqs[0].Header.Get("webhook-id"), reqs[1].Header.Get("webhook-id"))
}

// TestCrashBeforeDelivery: the terminal transition commits with its delivery, and the process dies
// before any attempt; the next process on the same file delivers it.
func TestCrashBeforeDelivery(t *testing.T) {
	t.Parallel()
	path := t.TempDir() + "/spool.db"
	f := newFixture(t, func(o *fixtureOpts) { o.path = path; o.noDispatcher = true })
	rc := f.receiver(status(200))
	j := f.completeJob("ep", rc.URL, `{"a":1}`)
	d := f.delivery(j.ID)
	require.Equal(t, spool.DeliveryPending, d.State, "committed with the terminal transition")
	f.crash()
	require.Equal(t, 0, rc.count())

	g := newFixture(t, func(o *fixtureOpts) { o.path = path; o.clock = f.clock })
	got := g.waitFinished(j.ID, time.Second)[0]
	require.Equal(t, spool.DeliveryDelivered, got.State)
	require.Equal(t, d.ID, got.ID)
	reqs := rc.requests()
	require.Len(t, reqs, 1)
	require.Equal(t, d.ID, reqs[0].Header.Get("webhook-id"))
	require.Equal(t, `{"a":1}`, string(jsonObject(t, reqs[0].Body)["output"]))
}

// TestCrashMidAttempt: the process dies while an attempt is in flight (its outcome never
// recorded); after a restart the delivery is due again when the claim's lease runs out, and both
// requests carry the same webhook-id.
func TestCrashMidAttempt(t *testing.T) {
	t.Parallel()
	path := t.TempDir() + "/spool.db"
	f := newFixture(t, func(o *fixtureOpts) { o.path = path })
	rc := f.receiver(func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			<-r.Context().Done()
			return
		}
		w.WriteHeader(200)
	})
	j := f.completeJob("ep", rc.URL, `{"a":1}`)
	f.waitFor("the first request", func() bool { return rc.count() == 1 })
	f.crash()

	g := newFixture(t, func(o *fixtureOpts) { o.path = path; o.clock = f.clock })
	g.waitIdle()
	require.Equal(t, 1, rc.count(), "the claim holds until its lease runs out")
	d := g.delivery(j.ID)
	require.Equal(t, spool.DeliveryPending, d.State)
	require.Equal(t, t0.Add(10*time.Second+5*time.Second), d.NextAttemptAt, "lease: the timeout plus a margin")
	g.clock.Advance(15 * time.Second)
	d = g.waitFinished(j.ID, time.Second)[0]
	require.Equal(t, spool.DeliveryDelivered, d.State)
	reqs := rc.requests()
	require.Len(t, reqs, 2, "delivered twice: at least once")
	require.Equal(t, d.ID, reqs[0].Header.Get("webhook-id"))
	require.Equal(t, d.ID, reqs[1].Header.Get("webhook-id"), "both carry the same webhook-id")
	require.Equal(t, reqs[0].Body, reqs[1].Body)
}

// switchLeader is a Leader a test turns on and off.
type switchLeader struct{ on atomic.Bool }

func (l *switchLeader) Leading() bool { return l.on.Load() }

// TestOnlyTheLeaderDelivers: a dispatcher on a replica that does not lead claims nothing, however
// long it waits; once it leads, the pending delivery goes out.
func TestOnlyTheLeaderDelivers(t *testing.T) {
	t.Parallel()
	lead := &switchLeader{}
	f := newFixture(t, func(o *fixtureOpts) {
		o.webhook = func(c *webhook.Config) { c.Leader = lead }
	})
	rc := f.receiver(status(http.StatusOK))
	j := f.completeJob("ep", rc.URL, `"out"`)
	f.waitIdle()
	f.clock.Advance(time.Hour)
	f.waitIdle()
	require.Zero(t, rc.count(), "not the leader: nothing is claimed")
	require.Equal(t, spool.DeliveryPending, f.delivery(j.ID).State)

	lead.on.Store(true)
	f.clock.Advance(time.Minute) // the next rescan
	f.waitFor("delivered", func() bool { return f.delivery(j.ID).State == spool.DeliveryDelivered })
	require.Equal(t, 1, rc.count())
}
