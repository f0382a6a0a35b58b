package spoolclient_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool/spoolclient"
)

// TestRunStatusLifecycle follows one job through Run and Status: the submission's fields reach the
// worker exactly (input byte for byte, policy in ms, webhook, s3Config), progress shows while
// IN_PROGRESS, and the finished job decodes with its times.
func TestRunStatusLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.worker("w1")
	input := json.RawMessage(` { "prompt": "héllo <b>&", "n": 1.50, "big": 12345678901234567890 } `)
	j, err := e.ep.Run(e.ctx, spoolclient.Request{
		Input:   input,
		Webhook: "https://example.invalid/hook?a=1&b=2",
		Policy:  &spoolclient.Policy{ExecutionTimeout: 30 * time.Second, TTL: time.Minute, LowPriority: true},
		S3Config: &spoolclient.S3Config{AccessID: "AK", AccessSecret: "SK", BucketName: "b",
			EndpointURL: "http://127.0.0.1:9000"},
	})
	require.NoError(t, err)
	require.Equal(t, spoolclient.StatusInQueue, j.Status)
	require.NotEmpty(t, j.ID)
	require.False(t, strings.HasPrefix(j.ID, "sync-"))
	require.False(t, j.Terminal())
	require.NoError(t, j.Err())

	st, err := e.ep.Status(e.ctx, j.ID)
	require.NoError(t, err)
	require.Equal(t, spoolclient.Job{ID: j.ID, Status: spoolclient.StatusInQueue}, *st)

	e.fake.Advance(1500 * time.Millisecond)
	p := w.take()
	require.Equal(t, `{ "prompt": "héllo <b>&", "n": 1.50, "big": 12345678901234567890 }`, string(p["input"]))
	require.JSONEq(t, `{"executionTimeout":30000,"lowPriority":true,"ttl":60000}`, string(p["policy"]))
	require.JSONEq(t, `"https://example.invalid/hook?a=1&b=2"`, string(p["webhook"]))
	require.JSONEq(t, `{"accessId":"AK","accessSecret":"SK","bucketName":"b","endpointUrl":"http://127.0.0.1:9000"}`, string(p["s3Config"]))

	w.progress(j.ID, `{"pct":50}`)
	st, err = e.ep.Status(e.ctx, j.ID)
	require.NoError(t, err)
	require.Equal(t, spoolclient.StatusInProgress, st.Status)
	require.Equal(t, 1500*time.Millisecond, st.DelayTime)
	require.Equal(t, `{"pct":50}`, string(st.Output))
	require.Equal(t, "w1", st.WorkerID)

	e.fake.Advance(2500 * time.Millisecond)
	w.done(j.ID, `{"output":{"text":"hi <there>","n":2}}`)
	st, err = e.ep.Status(e.ctx, j.ID)
	require.NoError(t, err)
	require.True(t, st.Terminal())
	require.NoError(t, st.Err())
	require.Equal(t, spoolclient.Job{ID: j.ID, Status: spoolclient.StatusCompleted, DelayTime: 1500 * time.Millisecond,
		ExecutionTime: 2500 * time.Millisecond, Output: json.RawMessage(`{"text":"hi <there>","n":2}`), WorkerID: "w1"}, *st)
	var out struct {
		Text string `json:"text"`
		N    int    `json:"n"`
	}
	require.NoError(t, st.DecodeOutput(&out))
	require.Equal(t, "hi <there>", out.Text)
	require.Equal(t, 2, out.N)

	// The Job marshals back to the wire shape.
	b, err := json.Marshal(st)
	require.NoError(t, err)
	require.JSONEq(t, `{"id":"`+j.ID+`","status":"COMPLETED","delayTime":1500,"executionTime":2500,
		"output":{"text":"hi <there>","n":2},"workerId":"w1"}`, string(b))

	// Every call above was one plain request, with the key as a Bearer token.
	reqs := e.rec.requests()
	require.Equal(t, []string{"POST /v2/ep/run", "GET /v2/ep/status/" + j.ID, "GET /v2/ep/status/" + j.ID,
		"GET /v2/ep/status/" + j.ID}, reqs)
}

// TestRequestEncoding: Go values are encoded without HTML escaping, a bad json.RawMessage fails
// before any request, and a missing input is the server's 400.
func TestRequestEncoding(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.worker("w1")
	_, err := e.ep.Run(e.ctx, spoolclient.Request{Input: map[string]any{"s": "<a&b>", "list": []int{1, 2}}})
	require.NoError(t, err)
	require.Equal(t, `{"list":[1,2],"s":"<a&b>"}`, string(w.take()["input"]))

	_, err = e.ep.Run(e.ctx, spoolclient.Request{Input: json.RawMessage(`{"a":`)})
	require.ErrorContains(t, err, "not valid JSON")
	_, err = e.ep.Run(e.ctx, spoolclient.Request{Input: func() {}})
	require.ErrorContains(t, err, "encode Request.Input")
	require.Equal(t, []string{"POST /v2/ep/run"}, e.rec.requests())

	_, err = e.ep.Run(e.ctx, spoolclient.Request{})
	require.ErrorIs(t, err, spoolclient.ErrBadRequest)
	require.ErrorContains(t, err, `"input" is required`)
	_, err = e.ep.Run(e.ctx, spoolclient.Request{Input: 1, Policy: &spoolclient.Policy{ExecutionTimeout: time.Second}})
	require.ErrorIs(t, err, spoolclient.ErrBadRequest)
	require.ErrorContains(t, err, "executionTimeout")
}

type result struct {
	job *spoolclient.Job
	err error
}

// TestRunSyncWithinWait: a job that ends while /runsync waits is returned by that one request.
func TestRunSyncWithinWait(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.worker("w1")
	got := make(chan result, 1)
	go func() {
		j, err := e.ep.RunSync(e.ctx, spoolclient.Request{Input: "x"}, 5*time.Second)
		got <- result{j, err}
	}()
	id := w.takeID() // waits for the submission
	w.done(id, `{"output":"done"}`)
	r := recv(t, got)
	require.NoError(t, r.err)
	require.Equal(t, id, r.job.ID)
	require.True(t, strings.HasPrefix(id, "sync-"), id)
	require.Equal(t, spoolclient.StatusCompleted, r.job.Status)
	require.Equal(t, `"done"`, string(r.job.Output))
	require.Equal(t, []string{"POST /v2/ep/runsync?wait=5000"}, e.rec.requests())
}

// TestRunSyncPastItsWait: when /runsync's wait runs out with the job still queued or running,
// RunSync goes on with /status-sync long-polls and returns the job as it ends, whichever way.
func TestRunSyncPastItsWait(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		takeFirst bool   // taken before the runsync wait runs out: it answers IN_PROGRESS
		result    string // the worker's job-done body
		want      spoolclient.Status
		wantErr   string
	}{
		{"queued then completed", false, `{"output":{"ok":true}}`, spoolclient.StatusCompleted, ""},
		{"running then failed", true, `{"error":"boom"}`, spoolclient.StatusFailed, "boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			w := e.worker("w1")
			got := make(chan result, 1)
			statusSync := e.rec.on("/status-sync/")
			id := ""
			e.advanceWhenWaiting(2*time.Second, func() {
				go func() {
					j, err := e.ep.RunSync(e.ctx, spoolclient.Request{Input: 1}, 2*time.Second)
					got <- result{j, err}
				}()
				if tc.takeFirst {
					id = w.takeID()
				}
			})
			wait(t, statusSync) // /runsync answered without the result; RunSync went on waiting
			if !tc.takeFirst {
				id = w.takeID()
			}
			w.done(id, tc.result)
			r := recv(t, got)
			require.NoError(t, r.err, "a job that ended FAILED is not an error of RunSync")
			require.Equal(t, id, r.job.ID)
			require.Equal(t, tc.want, r.job.Status)
			reqs := e.rec.requests()
			require.Equal(t, []string{"POST /v2/ep/runsync?wait=2000", "GET /v2/ep/status-sync/" + id + "?wait=2000"}, reqs)
			if tc.wantErr == "" {
				require.NoError(t, r.job.Err())
				require.JSONEq(t, `{"ok":true}`, string(r.job.Output))
				return
			}
			var je *spoolclient.JobError
			require.ErrorAs(t, r.job.Err(), &je)
			require.Equal(t, spoolclient.JobError{ID: id, Status: spoolclient.StatusFailed, Message: tc.wantErr}, *je)
			require.Equal(t, "job "+id+" ended FAILED: boom", je.Error())
		})
	}
}

// TestRunSyncDeadline: with a ctx deadline, every wait is cut to end before it, and when it comes
// RunSync returns the job as last seen (its id usable) with context.DeadlineExceeded.
func TestRunSyncDeadline(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withRealClock())
	ctx, cancel := context.WithTimeout(e.ctx, 2500*time.Millisecond)
	defer cancel()
	j, err := e.ep.RunSync(ctx, spoolclient.Request{Input: 1}, 0)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotNil(t, j)
	require.True(t, strings.HasPrefix(j.ID, "sync-"))
	require.Equal(t, spoolclient.StatusInQueue, j.Status)
	reqs := e.rec.requests()
	require.GreaterOrEqual(t, len(reqs), 2)
	require.True(t, strings.HasPrefix(reqs[0], "POST /v2/ep/runsync?wait="), reqs[0])
	ms := func(r string) int64 {
		n, err := strconv.ParseInt(r[strings.LastIndex(r, "=")+1:], 10, 64)
		require.NoError(t, err)
		return n
	}
	require.InDelta(t, 2250, ms(reqs[0]), 150, "the first wait ends before the deadline: %v", reqs)
	for _, r := range reqs[1:] {
		require.True(t, strings.HasPrefix(r, "GET /v2/ep/status-sync/"+j.ID+"?wait="), r)
		require.Less(t, ms(r), int64(300))
	}
	// The job went on.
	st, err := e.ep.Status(e.ctx, j.ID)
	require.NoError(t, err)
	require.Equal(t, spoolclient.StatusInQueue, st.Status)
}

// TestStatusSyncAndWait: StatusSync is one long-poll that answers as it is when its wait runs out;
// Wait keeps polling until the job ends.
func TestStatusSyncAndWait(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.worker("w1")
	j, err := e.ep.Run(e.ctx, spoolclient.Request{Input: 1})
	require.NoError(t, err)

	got := make(chan result, 2)
	e.advanceWhenWaiting(3*time.Second, func() {
		go func() {
			j, err := e.ep.StatusSync(e.ctx, j.ID, 3*time.Second)
			got <- result{j, err}
		}()
	})
	r := recv(t, got)
	require.NoError(t, r.err)
	require.Equal(t, spoolclient.StatusInQueue, r.job.Status)

	require.Equal(t, j.ID, w.takeID())
	e.rec.requests()
	first := e.rec.on("/status-sync/")
	e.advanceWhenWaiting(time.Minute, func() {
		go func() {
			j, err := e.ep.Wait(e.ctx, j.ID, time.Minute)
			got <- result{j, err}
		}()
		wait(t, first)
		first = e.rec.on("/status-sync/") // now the second
	})
	wait(t, first) // the first long-poll ran out with the job IN_PROGRESS; Wait asked again
	w.done(j.ID, `{"output":7}`)
	r = recv(t, got)
	require.NoError(t, r.err)
	require.Equal(t, spoolclient.StatusCompleted, r.job.Status)
	require.Equal(t, `7`, string(r.job.Output))
	require.Equal(t, []string{"GET /v2/ep/status-sync/" + j.ID + "?wait=60000", "GET /v2/ep/status-sync/" + j.ID + "?wait=60000"}, e.rec.requests())

	// A terminal job answers at once, whatever the wait; wait 0 asks for the default 90 s.
	e.rec.requests()
	st, err := e.ep.StatusSync(e.ctx, j.ID, 0)
	require.NoError(t, err)
	require.Equal(t, spoolclient.StatusCompleted, st.Status)
	st, err = e.ep.Wait(e.ctx, j.ID, 0)
	require.NoError(t, err)
	require.Equal(t, spoolclient.StatusCompleted, st.Status)
	require.Equal(t, []string{"GET /v2/ep/status-sync/" + j.ID + "?wait=90000", "GET /v2/ep/status-sync/" + j.ID + "?wait=90000"}, e.rec.requests())

	// An unknown job: ErrNotFound, and no job.
	st, err = e.ep.Wait(e.ctx, "nope", 0)
	require.ErrorIs(t, err, spoolclient.ErrNotFound)
	require.Nil(t, st)
}
