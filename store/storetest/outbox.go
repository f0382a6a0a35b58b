package storetest

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// message returns an outbox message created at t0 + d.
func message(id, url string, d time.Duration) *spool.WebhookMessage {
	return &spool.WebhookMessage{ID: id, URL: url, Payload: json.RawMessage(`{"id":"` + id + `","status":"COMPLETED"}`), CreatedAt: at(d)}
}

func deliveries(t *testing.T, s store.Store, jobID string) []spool.WebhookDelivery {
	t.Helper()
	ds, err := s.ListDeliveries(t.Context(), jobID)
	require.NoError(t, err)
	return normDeliveries(ds)
}

// normDeliveries puts every time in UTC, for comparisons by instant.
func normDeliveries(ds []spool.WebhookDelivery) []spool.WebhookDelivery {
	out := make([]spool.WebhookDelivery, len(ds))
	for i, d := range ds {
		d.NextAttemptAt, d.CreatedAt, d.FinishedAt = d.NextAttemptAt.UTC(), d.CreatedAt.UTC(), d.FinishedAt.UTC()
		if d.History != nil {
			h := make([]spool.DeliveryAttempt, len(d.History))
			for k, a := range d.History {
				a.At = a.At.UTC()
				h[k] = a
			}
			d.History = h
		}
		out[i] = d
	}
	return out
}

// pending is the delivery a message of job j on endpoint ep becomes.
func pending(m *spool.WebhookMessage, jobID, ep string) spool.WebhookDelivery {
	return spool.WebhookDelivery{
		ID: m.ID, JobID: jobID, Endpoint: ep, URL: m.URL, Host: spool.WebhookHost(m.URL), Payload: m.Payload,
		State: spool.DeliveryPending, NextAttemptAt: m.CreatedAt.UTC(), CreatedAt: m.CreatedAt.UTC(),
	}
}

// testOutboxWithJob checks that an update with Webhook set enqueues the delivery its Outbox builds
// from the job as written, in the same transaction, and only then.
func testOutboxWithJob(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	hooked := func(id, url string) *spool.Job {
		return with(queued(id, "ep"), func(j *spool.Job) { j.Webhook = url })
	}
	create(t, s, hooked("u1", "https://Example.COM/hook?a=1"), hooked("u2", "http://h.test:8080/x"), queued("plain", "ep"), hooked("gone", "https://example.com/"))
	complete := func(id string) store.JobUpdate {
		return store.JobUpdate{ID: id, Expect: store.Expect{State: spool.StateInQueue}, Webhook: true, Change: store.JobChange{
			Set:   store.SetState | store.SetOutput | store.SetRetention | store.SetDeleteAt,
			State: spool.StateCompleted, Output: json.RawMessage(`"out-` + id + `"`), RetentionMs: time.Hour.Milliseconds(),
		}}
	}
	var built []*spool.Job
	outbox := func(j *spool.Job) *spool.WebhookMessage {
		built = append(built, j.Clone())
		return message("msg_"+j.ID, j.Webhook, time.Second)
	}

	changed, err := s.UpdateJobs(ctx, store.UpdateJobsParams{Now: t0, Outbox: outbox, Updates: []store.JobUpdate{complete("u1"), complete("plain")}})
	require.NoError(t, err)
	require.Equal(t, []string{"u1", "plain"}, ids(changed))
	require.Len(t, built, 1, "a job without a webhook has no delivery")
	requireJob(t, get(t, s, "u1"), built[0])
	require.Equal(t, json.RawMessage(`"out-u1"`), built[0].Output, "Outbox sees the job as written")
	require.NotNil(t, built[0].Input, "and all of it")
	want := pending(message("msg_u1", "https://Example.COM/hook?a=1", time.Second), "u1", "ep")
	require.Equal(t, "example.com:443", want.Host)
	require.Equal(t, []spool.WebhookDelivery{want}, deliveries(t, s, "u1"))
	require.Empty(t, deliveries(t, s, "plain"))

	// An update whose expectation fails, or without Webhook, enqueues nothing; nor does a nil message.
	built = nil
	noHook := complete("u2")
	noHook.Webhook = false
	_, err = s.UpdateJobs(ctx, store.UpdateJobsParams{Now: t0, Outbox: outbox, Updates: []store.JobUpdate{complete("u1"), noHook}})
	require.NoError(t, err)
	require.Empty(t, built)
	require.Len(t, deliveries(t, s, "u1"), 1)
	require.Empty(t, deliveries(t, s, "u2"))
	require.NoError(t, s.CreateJob(ctx, store.CreateJobParams{Job: hooked("u3", "https://example.com/")}))
	_, err = s.UpdateJobs(ctx, store.UpdateJobsParams{Now: t0, Outbox: func(*spool.Job) *spool.WebhookMessage { return nil },
		Updates: []store.JobUpdate{complete("u3")}})
	require.NoError(t, err)
	require.Empty(t, deliveries(t, s, "u3"))

	// A delivery id is unique: a second message with the same id fails the write, job included.
	create(t, s, hooked("dup", "https://example.com/"))
	_, err = s.UpdateJobs(ctx, store.UpdateJobsParams{Now: t0, Updates: []store.JobUpdate{complete("dup")},
		Outbox: func(*spool.Job) *spool.WebhookMessage { return message("msg_u1", "https://example.com/", 0) }})
	require.Error(t, err)
	require.Equal(t, spool.StateInQueue, get(t, s, "dup").State)

	// Deliveries outlive their job.
	_, err = s.UpdateJobs(ctx, store.UpdateJobsParams{Now: t0, Outbox: outbox, Updates: []store.JobUpdate{{
		ID: "gone", Expect: store.Expect{State: spool.StateInQueue}, Webhook: true,
		Change: store.JobChange{Set: store.SetState | store.SetRetention | store.SetDeleteAt, State: spool.StateCancelled},
	}}})
	require.NoError(t, err)
	n, err := s.DeleteJobs(ctx, store.DeleteJobsParams{Before: t0})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Len(t, deliveries(t, s, "gone"), 1, "retention deletes the job, not its delivery")
}

func testCreateDelivery(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	d := spool.WebhookDelivery{
		ID: "msg_re", JobID: "j", Endpoint: "ep", URL: "https://example.com/h", Payload: json.RawMessage(`{"a": 1}`),
		CreatedAt: at(time.Minute), RedeliveryOf: "msg_orig",
		// Ignored: a new delivery is pending with no attempts.
		State: spool.DeliveryDelivered, Attempts: 5, Lease: 9, LastError: "x",
	}
	require.NoError(t, s.CreateDelivery(ctx, store.CreateDeliveryParams{Delivery: d}))
	require.Equal(t, []spool.WebhookDelivery{{
		ID: "msg_re", JobID: "j", Endpoint: "ep", URL: "https://example.com/h", Host: "example.com:443",
		Payload: json.RawMessage(`{"a": 1}`), State: spool.DeliveryPending,
		NextAttemptAt: at(time.Minute).UTC(), CreatedAt: at(time.Minute).UTC(), RedeliveryOf: "msg_orig",
	}}, deliveries(t, s, "j"))
	require.ErrorIs(t, s.CreateDelivery(ctx, store.CreateDeliveryParams{Delivery: d}), store.ErrConflict)

	none, err := s.ListDeliveries(ctx, "nobody")
	require.NoError(t, err)
	require.Empty(t, none)

	// ListDeliveries: one job's deliveries only, oldest (first inserted) first.
	for _, id := range []string{"msg_z", "msg_a", "msg_m"} {
		require.NoError(t, s.CreateDelivery(ctx, store.CreateDeliveryParams{Delivery: spool.WebhookDelivery{
			ID: id, JobID: "k", Endpoint: "ep", URL: "http://a.test/", Payload: json.RawMessage(`1`), CreatedAt: t0,
		}}))
	}
	require.Equal(t, []string{"msg_z", "msg_a", "msg_m"}, deliveryIDs(deliveries(t, s, "k")))
	require.Len(t, deliveries(t, s, "j"), 1)
}

// seedDeliveries creates deliveries msg_<name> of job j, due at t0 + due, to the given URLs.
func seedDeliveries(t *testing.T, s store.Store, rows ...struct {
	name string
	url  string
	due  time.Duration
}) {
	t.Helper()
	for _, r := range rows {
		require.NoError(t, s.CreateDelivery(t.Context(), store.CreateDeliveryParams{Delivery: spool.WebhookDelivery{
			ID: "msg_" + r.name, JobID: "j", Endpoint: "ep", URL: r.url, Payload: json.RawMessage(`{}`), CreatedAt: at(r.due),
		}}))
	}
}

type row = struct {
	name string
	url  string
	due  time.Duration
}

func deliveryIDs(ds []spool.WebhookDelivery) []string {
	out := make([]string, 0, len(ds))
	for _, d := range ds {
		out = append(out, d.ID)
	}
	return out
}

func testClaimDeliveries(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	const a, b, c = "http://a.test/", "http://b.test/", "https://c.test/"
	seedDeliveries(t, s,
		row{"a1", a, 0}, row{"b1", b, time.Second}, row{"a2", a, 2 * time.Second}, row{"a3", a, 3 * time.Second},
		row{"c1", c, 4 * time.Second}, row{"later", b, time.Hour},
	)
	claim := func(p store.ClaimDeliveriesParams) []spool.WebhookDelivery {
		t.Helper()
		ds, err := s.ClaimDeliveries(ctx, p)
		require.NoError(t, err)
		return ds
	}
	lease := func(string) time.Duration { return 30 * time.Second }

	none := claim(store.ClaimDeliveriesParams{Now: at(time.Hour), Limit: 0, Lease: lease})
	require.Empty(t, none, "Limit 0 claims nothing")

	// Due rows in due order; Limit and Exclude bound them.
	got := claim(store.ClaimDeliveriesParams{Now: at(3 * time.Second), Limit: 2, Exclude: []string{"msg_b1"}, Lease: lease})
	require.Equal(t, []string{"msg_a1", "msg_a2"}, deliveryIDs(got))
	for _, d := range got {
		require.Equal(t, at(3*time.Second+30*time.Second).UTC(), d.NextAttemptAt.UTC(), "due again when the lease ends")
		require.Equal(t, int64(1), d.Lease)
		require.Equal(t, spool.DeliveryPending, d.State)
		require.Equal(t, "a.test:80", d.Host)
		require.Equal(t, "ep", d.Endpoint)
		require.JSONEq(t, `{}`, string(d.Payload))
	}

	// Claimed rows are not due until their lease ends; per-host bounds apply.
	got = claim(store.ClaimDeliveriesParams{Now: at(5 * time.Second), Limit: 10, PerHost: 1, Lease: lease})
	require.Equal(t, []string{"msg_b1", "msg_a3", "msg_c1"}, deliveryIDs(got))

	// Leases run out: claimable again, with a new token. HostLimits overrides PerHost.
	got = claim(store.ClaimDeliveriesParams{Now: at(time.Minute), Limit: 10, PerHost: 5,
		HostLimits: map[string]int{"a.test:80": 1, "c.test:443": 0}, Lease: lease})
	require.Equal(t, []string{"msg_a1", "msg_b1"}, deliveryIDs(got), "a.test bounded to 1, c.test to 0")
	require.Equal(t, int64(2), got[0].Lease)
	require.Equal(t, at(time.Minute+30*time.Second).UTC(), got[0].NextAttemptAt.UTC())

	// A nil Lease means one minute.
	got = claim(store.ClaimDeliveriesParams{Now: at(2 * time.Minute), Limit: 1, HostLimits: map[string]int{"a.test:80": 0}})
	require.Equal(t, []string{"msg_c1"}, deliveryIDs(got))
	require.Equal(t, at(3*time.Minute).UTC(), got[0].NextAttemptAt.UTC())

	// Finished deliveries are never claimed.
	_, err := s.RecordAttempt(ctx, store.RecordAttemptParams{ID: "msg_c1", Lease: got[0].Lease, State: spool.DeliveryFailed, Now: at(2 * time.Minute)})
	require.NoError(t, err)
	got = claim(store.ClaimDeliveriesParams{Now: at(2 * time.Hour), Limit: 10, Lease: lease})
	require.ElementsMatch(t, []string{"msg_a1", "msg_a2", "msg_a3", "msg_b1", "msg_later"}, deliveryIDs(got))
}

func testRecordAttempt(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	seedDeliveries(t, s, row{"d", "http://a.test/", 0})
	claimOne := func(now time.Time) spool.WebhookDelivery {
		t.Helper()
		ds, err := s.ClaimDeliveries(ctx, store.ClaimDeliveriesParams{Now: now, Limit: 1})
		require.NoError(t, err)
		require.Len(t, ds, 1)
		return ds[0]
	}

	// A failed attempt: pending again, due at NextAttemptAt.
	c := claimOne(t0)
	a1 := spool.DeliveryAttempt{At: t0, StatusCode: 500, Error: "HTTP 500", Duration: 12 * time.Millisecond}
	d, err := s.RecordAttempt(ctx, store.RecordAttemptParams{ID: "msg_d", Lease: c.Lease, Attempt: &a1,
		State: spool.DeliveryPending, NextAttemptAt: at(10 * time.Second), Now: t0})
	require.NoError(t, err)
	require.Equal(t, 1, d.Attempts)
	require.Equal(t, spool.DeliveryPending, d.State)
	require.Equal(t, at(10*time.Second).UTC(), d.NextAttemptAt.UTC())
	require.Equal(t, 500, d.LastStatus)
	require.Equal(t, "HTTP 500", d.LastError)
	require.True(t, d.FinishedAt.IsZero())

	// The same claim cannot record twice (its lease token is spent only by a new claim, but a
	// second record of a stale token conflicts).
	c2 := claimOne(at(10 * time.Second))
	_, err = s.RecordAttempt(ctx, store.RecordAttemptParams{ID: "msg_d", Lease: c.Lease, Attempt: &a1, State: spool.DeliveryDelivered, Now: t0})
	require.ErrorIs(t, err, store.ErrConflict, "a stale claim conflicts")

	// Released unused (shutdown): not counted, due at once.
	d, err = s.RecordAttempt(ctx, store.RecordAttemptParams{ID: "msg_d", Lease: c2.Lease, State: spool.DeliveryPending,
		NextAttemptAt: at(10 * time.Second), Now: at(10 * time.Second)})
	require.NoError(t, err)
	require.Equal(t, 1, d.Attempts)
	require.Equal(t, 500, d.LastStatus)

	// Delivered: finished.
	c3 := claimOne(at(10 * time.Second))
	a2 := spool.DeliveryAttempt{At: at(10 * time.Second), StatusCode: 204, Duration: time.Second}
	d, err = s.RecordAttempt(ctx, store.RecordAttemptParams{ID: "msg_d", Lease: c3.Lease, Attempt: &a2,
		State: spool.DeliveryDelivered, Now: at(11 * time.Second)})
	require.NoError(t, err)
	require.Equal(t, spool.DeliveryDelivered, d.State)
	require.Equal(t, 2, d.Attempts)
	require.Equal(t, at(11*time.Second).UTC(), d.FinishedAt.UTC())
	require.Equal(t, 204, d.LastStatus)
	require.Empty(t, d.LastError)

	// Finished deliveries take no more attempts.
	_, err = s.RecordAttempt(ctx, store.RecordAttemptParams{ID: "msg_d", Lease: c3.Lease, Attempt: &a2, State: spool.DeliveryFailed, Now: t0})
	require.ErrorIs(t, err, store.ErrConflict)
	_, err = s.RecordAttempt(ctx, store.RecordAttemptParams{ID: "msg_nope", Lease: 1, State: spool.DeliveryFailed, Now: t0})
	require.ErrorIs(t, err, store.ErrNotFound)

	got := deliveries(t, s, "j")
	require.Len(t, got, 1)
	require.Equal(t, []spool.DeliveryAttempt{
		{N: 1, At: t0.UTC(), StatusCode: 500, Error: "HTTP 500", Duration: 12 * time.Millisecond},
		{N: 2, At: at(10 * time.Second).UTC(), StatusCode: 204, Duration: time.Second},
	}, got[0].History)
	require.Equal(t, spool.DeliveryDelivered, got[0].State)
	require.Equal(t, int64(3), got[0].Lease)
}

func testNextDeliveryDue(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	next := func(after time.Time) (time.Time, bool) {
		t.Helper()
		n, ok, err := s.NextDeliveryDue(ctx, after)
		require.NoError(t, err)
		return n.UTC(), ok
	}
	_, ok := next(time.Time{})
	require.False(t, ok, "nothing pending")

	seedDeliveries(t, s, row{"early", "http://a.test/", time.Second}, row{"late", "http://a.test/", time.Hour})
	n, ok := next(time.Time{})
	require.True(t, ok)
	require.Equal(t, at(time.Second).UTC(), n)
	n, _ = next(at(time.Second))
	require.Equal(t, at(time.Hour).UTC(), n, "only deliveries due after After count")
	_, ok = next(at(time.Hour))
	require.False(t, ok)

	// A claimed delivery is due at its lease end; a finished one no longer counts.
	ds, err := s.ClaimDeliveries(ctx, store.ClaimDeliveriesParams{Now: at(time.Second), Limit: 1})
	require.NoError(t, err)
	n, _ = next(at(time.Second))
	require.Equal(t, at(time.Minute+time.Second).UTC(), n)
	_, err = s.RecordAttempt(ctx, store.RecordAttemptParams{ID: ds[0].ID, Lease: ds[0].Lease,
		Attempt: &spool.DeliveryAttempt{At: at(time.Second), StatusCode: 200}, State: spool.DeliveryDelivered, Now: at(time.Second)})
	require.NoError(t, err)
	n, ok = next(time.Time{})
	require.True(t, ok)
	require.Equal(t, at(time.Hour).UTC(), n)
}

func testDeleteDeliveries(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	seedDeliveries(t, s, row{"ok", "http://a.test/", 0}, row{"bad", "http://a.test/", 0},
		row{"recent", "http://a.test/", 0}, row{"open", "http://a.test/", 0})
	finish := func(id string, state spool.DeliveryState, when time.Time) {
		t.Helper()
		ds, err := s.ClaimDeliveries(ctx, store.ClaimDeliveriesParams{Now: at(time.Hour), Limit: 10})
		require.NoError(t, err)
		for _, d := range ds {
			st, now := spool.DeliveryPending, at(time.Hour)
			if d.ID == id {
				st, now = state, when
			}
			_, err := s.RecordAttempt(ctx, store.RecordAttemptParams{ID: d.ID, Lease: d.Lease, State: st, NextAttemptAt: t0,
				Now: now, Attempt: &spool.DeliveryAttempt{At: t0, StatusCode: 200}})
			require.NoError(t, err)
		}
	}
	finish("msg_ok", spool.DeliveryDelivered, at(time.Minute))
	finish("msg_bad", spool.DeliveryFailed, at(2*time.Minute))
	finish("msg_recent", spool.DeliveryDelivered, at(time.Hour))

	n, err := s.DeleteDeliveries(ctx, store.DeleteDeliveriesParams{Before: at(2 * time.Minute), Limit: 1})
	require.NoError(t, err)
	require.Equal(t, 1, n, "Limit bounds the sweep")
	n, err = s.DeleteDeliveries(ctx, store.DeleteDeliveriesParams{Before: at(2 * time.Minute)})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	left := deliveries(t, s, "j")
	require.ElementsMatch(t, []string{"msg_recent", "msg_open"}, deliveryIDs(left), "pending and recently finished deliveries stay")
	for _, d := range left {
		require.NotEmpty(t, d.History)
	}
}
