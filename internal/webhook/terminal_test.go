package webhook_test

import (
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/engine"
)

// TestFiresOnEveryTerminalState: COMPLETED, FAILED, CANCELLED (queued, running, purged) and
// TIMED_OUT (ttl and execution timeout) each POST the documented body, the /status object plus
// input and webhook, and never a byte of the job's s3Config (unique canary strings).
func TestFiresOnEveryTerminalState(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	rc := f.receiver(status(200))
	ctx := f.ctx

	const canary = "CANARY-7f3a9c"
	s3 := json.RawMessage(`{"accessId":"` + canary + `-id","accessSecret":"` + canary + `-secret","bucketName":"` +
		canary + `-bucket","endpointUrl":"https://` + strings.ToLower(canary) + `.example/s3","objectPath":"` + canary + `-path"}`)
	submit := func(name string, mod func(*engine.SubmitParams)) *spool.Job {
		p := engine.SubmitParams{
			Input:    json.RawMessage(`{"case": "` + name + `",  "n": [1, 2.50]}`),
			Webhook:  rc.URL + "/hook/" + name + "?sig=abc",
			S3Config: s3,
		}
		if mod != nil {
			mod(&p)
		}
		return f.submit(p)
	}
	want := map[string]spool.State{}
	ids := map[string]string{}
	run := func(name string, state spool.State, j *spool.Job) {
		want[name], ids[name] = state, j.ID
	}

	j := submit("completed", nil)
	f.take("ep")
	f.clock.Advance(1500 * time.Millisecond)
	_, err := f.eng.Done(ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w1", JobID: j.ID, Output: json.RawMessage(`{"answer": 42}`)})
	require.NoError(t, err)
	run("completed", spool.StateCompleted, j)

	j = submit("failed", nil)
	f.take("ep")
	msg := "handler raised ValueError"
	_, err = f.eng.Done(ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w1", JobID: j.ID, Error: &msg})
	require.NoError(t, err)
	run("failed", spool.StateFailed, j)

	j = submit("cancelled-queued", nil)
	_, err = f.eng.Cancel(ctx, "ep", j.ID)
	require.NoError(t, err)
	run("cancelled-queued", spool.StateCancelled, j)

	j = submit("cancelled-running", nil)
	f.take("ep")
	_, err = f.eng.Cancel(ctx, "ep", j.ID)
	require.NoError(t, err)
	run("cancelled-running", spool.StateCancelled, j)

	f.putEndpoint("purge", nil)
	p1 := submit("purged-1", func(p *engine.SubmitParams) { p.Endpoint = "purge" })
	p2 := submit("purged-2", func(p *engine.SubmitParams) { p.Endpoint = "purge" })
	n, err := f.eng.PurgeQueue(ctx, "purge")
	require.NoError(t, err)
	require.Equal(t, 2, n)
	run("purged-1", spool.StateCancelled, p1)
	run("purged-2", spool.StateCancelled, p2)

	ttl := int64(10000)
	expired := submit("ttl", func(p *engine.SubmitParams) { p.TTLMs = &ttl })
	exec := int64(6000)
	f.putEndpoint("exec", nil)
	slow := submit("execution-timeout", func(p *engine.SubmitParams) { p.Endpoint = "exec"; p.ExecutionTimeoutMs = &exec })
	f.take("exec")
	f.clock.Advance(11 * time.Second)
	res, err := f.eng.Sweep(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, res.Expired)
	require.Equal(t, 1, res.TimedOut)
	run("ttl", spool.StateTimedOut, expired)
	run("execution-timeout", spool.StateTimedOut, slow)

	f.waitFor("every webhook", func() bool { return rc.count() == len(want) })
	f.waitIdle()
	require.Equal(t, len(want), rc.count(), "one webhook per terminal transition")

	bodies := map[string]map[string]json.RawMessage{}
	for _, r := range rc.requests() {
		require.NotContains(t, string(r.Body), canary, "the webhook body never carries s3Config")
		require.NotContains(t, string(r.Body), strings.ToLower(canary))
		require.NotContains(t, string(r.Body), "s3Config")
		m := jsonObject(t, r.Body)
		bodies[jsonString(t, m["id"])] = m
	}
	for name, state := range want {
		id := ids[name]
		m, ok := bodies[id]
		require.True(t, ok, "%s: no webhook", name)
		job, err := f.eng.JobAnyEndpoint(ctx, id)
		require.NoError(t, err)
		require.Equal(t, state, job.State, name)
		require.Equal(t, string(state), jsonString(t, m["status"]), name)
		require.Equal(t, `{"case": "`+name+`",  "n": [1, 2.50]}`, string(m["input"]), "%s: input byte for byte", name)
		require.Equal(t, rc.URL+"/hook/"+name+"?sig=abc", jsonString(t, m["webhook"]), name)

		// The rest is the /status object of the job as it ended.
		wantKeys := []string{"id", "input", "status", "webhook"}
		if _, ok := job.DelayTime(); ok {
			wantKeys = append(wantKeys, "delayTime", "executionTime", "workerId")
		}
		if job.Output != nil {
			wantKeys = append(wantKeys, "output")
		}
		if job.Error != "" || job.State == spool.StateFailed {
			wantKeys = append(wantKeys, "error")
			require.Equal(t, job.Error, jsonString(t, m["error"]), name)
		}
		sort.Strings(wantKeys)
		require.Equal(t, wantKeys, keysOf(m), name)
	}
	require.JSONEq(t, `{"answer": 42}`, string(bodies[ids["completed"]]["output"]))
	require.Equal(t, "1500", string(bodies[ids["completed"]]["executionTime"]))
	require.Equal(t, msg, jsonString(t, bodies[ids["failed"]]["error"]))
	require.Equal(t, "purged", jsonString(t, bodies[ids["purged-1"]]["error"]))
	require.Contains(t, jsonString(t, bodies[ids["ttl"]]["error"]), "ttl")
	require.Contains(t, jsonString(t, bodies[ids["execution-timeout"]]["error"]), "execution timeout")

	// The outbox rows hold the same payloads; no canary there either.
	for name, id := range ids {
		d := f.delivery(id)
		require.Equal(t, spool.DeliveryDelivered, d.State, name)
		require.NotContains(t, string(d.Payload), canary)
	}
}

func keysOf(m map[string]json.RawMessage) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestNoWebhookNoDelivery: a job without a webhook enqueues nothing, and neither does a
// transition that is not terminal.
func TestNoWebhookNoDelivery(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	rc := f.receiver(status(http.StatusOK))
	plain := f.completeJob("ep", "", `1`)
	require.Empty(t, f.deliveries(plain.ID))

	j := f.submit(engine.SubmitParams{Webhook: rc.URL})
	f.take("ep")
	_, err := f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w1", JobID: j.ID, InProgress: true, Output: json.RawMessage(`"50%"`)})
	require.NoError(t, err)
	require.Empty(t, f.deliveries(j.ID), "progress is not an end")
	// A repeated result is applied once: one delivery.
	for range 2 {
		_, err = f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w1", JobID: j.ID, Output: json.RawMessage(`1`)})
		require.NoError(t, err)
	}
	require.Len(t, f.deliveries(j.ID), 1)
	f.waitFinished(j.ID, 10*time.Second)
	require.Equal(t, 1, rc.count())
}
