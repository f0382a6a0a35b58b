package engine_test

import (
	"encoding/json"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/notify"
	"github.com/spool-run/spool/internal/secret"
)

// recorder is a Notifier and both observers that write down, in order, every notification and
// every event the engine emits.
type recorder struct {
	*notify.Hub
	mu     sync.Mutex
	events []string
}

func newRecorder() *recorder { return &recorder{Hub: notify.NewHub()} }

func (r *recorder) add(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

// take returns what was recorded since the last take, sorted: one operation's effects, whose
// order does not matter.
func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.events
	r.events = nil
	sort.Strings(out)
	return out
}

func (r *recorder) Notify(topics ...notify.Topic) {
	for _, t := range topics {
		r.add("notify " + string(t))
	}
	r.Hub.Notify(topics...)
}

func (r *recorder) JobSubmitted(ep string)                { r.add("submitted " + ep) }
func (r *recorder) JobStarted(ep string, _ time.Duration) { r.add("started " + ep) }
func (r *recorder) JobFinished(ep string, st spool.State, _ time.Duration, _ bool) {
	r.add("finished " + ep + " " + string(st))
}
func (r *recorder) JobRequeued(ep, reason string) { r.add("requeued " + ep + " " + reason) }
func (r *recorder) JobHanded(worker, _ string)    { r.add("handed " + worker) }
func (r *recorder) JobReleased(worker, _ string)  { r.add("released " + worker) }
func (r *recorder) JobMustStop(worker, _ string)  { r.add("must stop " + worker) }
func (r *recorder) RestartAsked(worker string)    { r.add("restart " + worker) }
func (r *recorder) withID(events []string, id, as string) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e
		if len(e) > len(id) && e[len(e)-len(id):] == id {
			out[i] = e[:len(e)-len(id)] + as
		}
	}
	return out
}

// TestEveryTransitionNotifiesOnce drives every transition of the state machine, and the changes
// that keep the state, through the engine, and checks each emits exactly the notifications and
// events it must: each once, and nothing else.
func TestEveryTransitionNotifiesOnce(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	var sealer engine.Sealer = secret.NewRandom()
	f := newFixture(t, func(c *engine.Config) {
		c.Notifier, c.Observer, c.MaxRetries = rec, rec, 1
		c.WebhookPayload = func(j *spool.Job) json.RawMessage { return json.RawMessage(`{}`) }
		c.Sealer = sealer
	})
	f.eng.ObserveWorkers(rec)
	hook := "https://example.com/hook"
	expect := func(what string, id string, want ...string) {
		t.Helper()
		got := rec.take()
		if id != "" {
			got = rec.withID(got, id, "ID")
		}
		slices.Sort(want)
		if len(want) == 0 {
			require.Empty(t, got, what)
			return
		}
		require.Equal(t, want, got, what)
	}
	rec.take()

	// IN_QUEUE -> IN_PROGRESS -> COMPLETED, with progress and a chunk on the way.
	j := f.submit(t, engine.SubmitParams{Webhook: hook})
	expect("submit", "", "notify work/ep", "submitted ep")
	f.takeOne(t, "w")
	expect("take", j.ID, "started ep", "handed w")
	_, err := f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w", JobID: j.ID, InProgress: true, Output: json.RawMessage(`1`)})
	require.NoError(t, err)
	expect("progress", j.ID) // nobody waits for progress
	require.NoError(t, f.eng.AppendChunk(f.ctx, "ep", "w", j.ID, 0, json.RawMessage(`"c"`)))
	expect("chunk", j.ID, "notify job/ID")
	_, err = f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w", JobID: j.ID, StopPod: true})
	require.NoError(t, err)
	expect("result", j.ID, "notify job/ID", "notify webhooks", "finished ep COMPLETED", "released w", "restart w")
	_, err = f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w", JobID: j.ID, StopPod: true})
	require.NoError(t, err)
	expect("a repeated result", j.ID)
	_, err = f.eng.SetRetention(f.ctx, "ep", j.ID, time.Hour)
	require.NoError(t, err)
	expect("retention", j.ID)

	// IN_PROGRESS -> FAILED by the worker, then FAILED -> IN_QUEUE (/retry).
	j = f.submit(t, engine.SubmitParams{})
	f.takeOne(t, "w")
	rec.take()
	_, err = f.eng.Done(f.ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w", JobID: j.ID, Error: strp("boom")})
	require.NoError(t, err)
	expect("failure", j.ID, "notify job/ID", "finished ep FAILED", "released w")
	_, err = f.eng.Retry(f.ctx, "ep", j.ID)
	require.NoError(t, err)
	expect("retry", j.ID, "notify work/ep", "requeued ep retry")

	// IN_QUEUE -> CANCELLED, IN_PROGRESS -> CANCELLED, and the stop signal's delivery.
	_, err = f.eng.Cancel(f.ctx, "ep", j.ID)
	require.NoError(t, err)
	expect("cancel queued", j.ID, "notify job/ID", "finished ep CANCELLED")
	j = f.submit(t, engine.SubmitParams{Webhook: hook})
	f.takeOne(t, "w")
	rec.take()
	_, err = f.eng.Cancel(f.ctx, "ep", j.ID)
	require.NoError(t, err)
	expect("cancel running", j.ID, "notify job/ID", "notify stop/w", "notify webhooks", "finished ep CANCELLED", "released w", "must stop w")
	_, err = f.eng.Cancel(f.ctx, "ep", j.ID)
	require.NoError(t, err)
	expect("cancel a terminal job", j.ID)
	ids, err := f.eng.AckStops(f.ctx, "ep", "w")
	require.NoError(t, err)
	require.Equal(t, []string{j.ID}, ids)
	expect("stop signal delivered", j.ID)
	_, err = f.eng.Reconcile(f.ctx, engine.ReconcileParams{Endpoint: "ep", WorkerID: "w", JobIDs: []string{j.ID}})
	require.NoError(t, err)
	expect("stop signal sent again", j.ID, "notify stop/w", "must stop w")

	// IN_QUEUE -> CANCELLED by a purge: one notification per job, none for the queue.
	a, b := f.submit(t, engine.SubmitParams{}), f.submit(t, engine.SubmitParams{})
	rec.take()
	n, err := f.eng.PurgeQueue(f.ctx, "ep")
	require.NoError(t, err)
	require.Equal(t, 2, n)
	expect("purge", "", "notify job/"+a.ID, "notify job/"+b.ID, "finished ep CANCELLED", "finished ep CANCELLED")

	// IN_QUEUE -> TIMED_OUT (TTL) and IN_PROGRESS -> TIMED_OUT (execution timeout), in one sweep.
	running := f.submit(t, engine.SubmitParams{ExecutionTimeoutMs: i64p(10_000)})
	f.takeOne(t, "w")
	queued := f.submit(t, engine.SubmitParams{TTLMs: i64p(10_000), Webhook: hook})
	rec.take()
	f.clock.Advance(10 * time.Second)
	f.sweep(t)
	expect("sweep", "", "notify job/"+queued.ID, "notify job/"+running.ID, "notify stop/w", "notify webhooks",
		"finished ep TIMED_OUT", "finished ep TIMED_OUT", "released w", "must stop w")

	// IN_PROGRESS -> IN_QUEUE (lost worker, undelivered take), then FAILED past the retries.
	j = f.submit(t, engine.SubmitParams{})
	f.takeOne(t, "w")
	rec.take()
	_, err = f.eng.LoseWorkerJobs(f.ctx, "w", "gone")
	require.NoError(t, err)
	expect("lost worker", j.ID, "notify work/ep", "requeued ep lost_worker", "released w")
	taken := f.takeOne(t, "w2")
	rec.take()
	require.NoError(t, f.eng.Release(f.ctx, []*spool.Job{taken}))
	expect("lost past the retries", j.ID, "notify job/ID", "finished ep FAILED", "released w2")
	j = f.submit(t, engine.SubmitParams{})
	taken = f.takeOne(t, "w3")
	rec.take()
	require.NoError(t, f.eng.Release(f.ctx, []*spool.Job{taken}))
	expect("undelivered", j.ID, "notify work/ep", "requeued ep undelivered", "released w3")
}
