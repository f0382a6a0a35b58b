package spoolclient_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool/internal/spooltest"
	"github.com/spool-run/spool/spoolclient"
)

type item struct {
	chunk string
	err   error
}

// consume ranges over a Stream in the background; the channel closes when the iterator ends.
func consume(ctx context.Context, ep *spoolclient.Endpoint, id string) <-chan item {
	items := make(chan item, 64)
	go func() {
		defer close(items)
		for c, err := range ep.Stream(ctx, id) {
			items <- item{string(c.Output), err}
		}
	}()
	return items
}

// drain collects the rest of a consumed stream, failing if it does not end.
func drain(t *testing.T, items <-chan item) []item {
	t.Helper()
	var out []item
	deadline := time.After(10 * time.Second)
	for {
		select {
		case it, ok := <-items:
			if !ok {
				return out
			}
			out = append(out, it)
		case <-deadline:
			t.Fatalf("the stream did not end; got %v so far", out)
		}
	}
}

// TestStreamEndsOnEveryTerminalState: Stream yields each chunk as the worker posts it, and ends
// exactly when the job has ended and every chunk was yielded, for each way a job can end,
// CANCELLED included (runpod-python's stream never ends on it), and for a job that never ran.
func TestStreamEndsOnEveryTerminalState(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		policy  *spoolclient.Policy
		run     bool // taken by a worker, which streams "a", "b", "c"
		end     func(e *env, w *worker, id string)
		want    spoolclient.Status
		wantMsg string
	}{
		{name: "completed", run: true, want: spoolclient.StatusCompleted,
			end: func(e *env, w *worker, id string) { w.done(id, `{"output":[]}`) }},
		{name: "failed", run: true, want: spoolclient.StatusFailed, wantMsg: "boom",
			end: func(e *env, w *worker, id string) { w.done(id, `{"error":"boom"}`) }},
		{name: "cancelled", run: true, want: spoolclient.StatusCancelled,
			end: func(e *env, w *worker, id string) {
				j, err := e.ep.Cancel(e.ctx, id)
				require.NoError(e.t, err)
				require.Equal(e.t, spoolclient.StatusCancelled, j.Status)
			}},
		{name: "timed out running", run: true, want: spoolclient.StatusTimedOut, wantMsg: "execution timeout of 6000 ms exceeded",
			policy: &spoolclient.Policy{ExecutionTimeout: 6 * time.Second},
			end: func(e *env, w *worker, id string) {
				e.fake.Advance(7 * time.Second)
				res, err := e.eng.Sweep(e.ctx)
				require.NoError(e.t, err)
				require.Equal(e.t, 1, res.TimedOut)
			}},
		{name: "timed out in queue", run: false, want: spoolclient.StatusTimedOut, wantMsg: "ttl of 10000 ms",
			policy: &spoolclient.Policy{TTL: 10 * time.Second},
			end: func(e *env, w *worker, id string) {
				e.fake.Advance(11 * time.Second)
				res, err := e.eng.Sweep(e.ctx)
				require.NoError(e.t, err)
				require.Equal(e.t, 1, res.Expired)
			}},
		{name: "cancelled in queue", run: false, want: spoolclient.StatusCancelled,
			end: func(e *env, w *worker, id string) {
				_, err := e.ep.Cancel(e.ctx, id)
				require.NoError(e.t, err)
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			w := e.worker("w1")
			j, err := e.ep.Run(e.ctx, spoolclient.Request{Input: 1, Policy: tc.policy})
			require.NoError(t, err)
			var want []string
			items := consume(e.ctx, e.ep, j.ID)
			if tc.run {
				require.Equal(t, j.ID, w.takeID())
				// Each chunk arrives while the job runs, before the next is posted.
				w.chunk(j.ID, `"a"`)
				require.Equal(t, item{chunk: `"a"`}, recv(t, items))
				w.chunk(j.ID, `{"b": [1, 2]}`)
				require.Equal(t, item{chunk: `{"b": [1, 2]}`}, recv(t, items))
				w.chunk(j.ID, `"c"`) // may reach the reader only with the terminal answer
				want = []string{`"c"`}
			} else {
				spooltest.WaitTimers(t, e.fake, 2) // the sweeper's and the stream long-poll's
			}
			tc.end(e, w, j.ID)

			var chunks []string
			var final error
			rest := drain(t, items)
			for i, it := range rest {
				if it.err != nil {
					require.Equal(t, len(rest)-1, i, "an error is the last element")
					final = it.err
					continue
				}
				chunks = append(chunks, it.chunk)
			}
			require.Equal(t, want, chunks)
			if tc.want == spoolclient.StatusCompleted {
				require.NoError(t, final, "a completed job's stream ends without an error")
			} else {
				var je *spoolclient.JobError
				require.ErrorAs(t, final, &je)
				require.Equal(t, j.ID, je.ID)
				require.Equal(t, tc.want, je.Status)
				require.Contains(t, je.Message, tc.wantMsg)
			}

			// Reading the stream of the ended, drained job ends at once, with the same outcome.
			again := drain(t, consume(e.ctx, e.ep, j.ID))
			if tc.want == spoolclient.StatusCompleted {
				require.Empty(t, again)
			} else {
				require.Len(t, again, 1)
				var je *spoolclient.JobError
				require.ErrorAs(t, again[0].err, &je)
				require.Equal(t, tc.want, je.Status)
			}
			for _, r := range e.rec.requests() {
				if strings.Contains(r, "/stream/") {
					require.Equal(t, "GET /v2/ep/stream/"+j.ID+"?wait=30000", r)
				}
			}
		})
	}
}

// TestStreamStops: breaking out of the range loop stops reading; an ending ctx ends the stream with
// its error; an unknown job is ErrNotFound.
func TestStreamStops(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	w := e.worker("w1")
	j, err := e.ep.Run(e.ctx, spoolclient.Request{Input: 1})
	require.NoError(t, err)
	require.Equal(t, j.ID, w.takeID())
	w.chunk(j.ID, `1`)
	w.chunk(j.ID, `2`)
	e.rec.requests()
	n := 0
	for c, err := range e.ep.Stream(e.ctx, j.ID) {
		require.NoError(t, err)
		require.Equal(t, `1`, string(c.Output))
		var v int
		require.NoError(t, c.Decode(&v))
		require.Equal(t, 1, v)
		n++
		break
	}
	require.Equal(t, 1, n)
	require.Len(t, e.rec.requests(), 1, "no request after the loop stopped")

	ctx, cancel := context.WithCancel(e.ctx)
	sent := e.rec.on("/stream/")
	items := consume(ctx, e.ep, j.ID) // "2" was drained by the first read; this one long-polls
	wait(t, sent)
	cancel()
	rest := drain(t, items)
	require.Len(t, rest, 1)
	require.ErrorIs(t, rest[0].err, context.Canceled)

	rest = drain(t, consume(e.ctx, e.ep, "no-such-job"))
	require.Len(t, rest, 1)
	require.ErrorIs(t, rest[0].err, spoolclient.ErrNotFound)
	require.False(t, errors.Is(rest[0].err, spoolclient.ErrUnauthorized))
}
