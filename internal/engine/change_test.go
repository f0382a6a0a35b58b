package engine

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
)

// TestEffectsOfEveryTransition is the table of what each change must cause, one row per
// transition the state machine allows and per change that keeps the state; a transition missing
// from it fails the test.
func TestEffectsOfEveryTransition(t *testing.T) {
	t.Parallel()
	q, p, c, f, x, o := spool.StateInQueue, spool.StateInProgress, spool.StateCompleted, spool.StateFailed, spool.StateCancelled, spool.StateTimedOut
	type row struct {
		cause  Cause
		from   spool.State
		job    spool.Job // the job as written; ID "j", endpoint "ep"
		worker string    // the worker that held it before
		want   []string
	}
	held := func(st spool.State, mod func(*spool.Job)) spool.Job {
		j := spool.Job{State: st, WorkerID: "w"}
		if mod != nil {
			mod(&j)
		}
		return j
	}
	stop := func(j *spool.Job) { j.StopPending = true }
	hooked := func(j *spool.Job) { j.Webhook = "https://h/"; j.StopPending = true }
	rows := []row{
		{CauseSubmit, "", spool.Job{State: q}, "", []string{"work/ep", "submitted"}},
		{CauseTake, q, held(p, nil), "", []string{"started", "handed w"}},
		{CauseProgress, p, held(p, nil), "w", nil},
		{CauseChunk, p, held(p, nil), "w", []string{"job/j"}},
		{CauseResult, p, held(c, func(j *spool.Job) { j.EndedByWorker = true }), "w", []string{"job/j", "finished COMPLETED", "released w"}},
		{CauseResult, p, held(c, func(j *spool.Job) { j.EndedByWorker, j.StopPod, j.Webhook = true, true, "https://h/" }), "w",
			[]string{"job/j", "webhooks", "finished COMPLETED", "released w", "restart w"}},
		{CauseResult, p, held(f, func(j *spool.Job) { j.EndedByWorker = true }), "w", []string{"job/j", "finished FAILED", "released w"}},
		{CauseCancel, q, spool.Job{State: x}, "", []string{"job/j", "finished CANCELLED"}},
		{CauseCancel, p, held(x, hooked), "w", []string{"job/j", "webhooks", "stop/w", "finished CANCELLED", "released w", "must stop w"}},
		{CausePurge, q, spool.Job{State: x}, "", []string{"job/j", "finished CANCELLED"}},
		{CauseExpire, q, spool.Job{State: o}, "", []string{"job/j", "finished TIMED_OUT"}},
		{CauseTimeout, p, held(o, stop), "w", []string{"job/j", "stop/w", "finished TIMED_OUT", "released w", "must stop w"}},
		{CauseLostWorker, p, spool.Job{State: q}, "w", []string{"work/ep", "requeued lost_worker", "released w"}},
		{CauseLostWorker, p, held(f, nil), "w", []string{"job/j", "finished FAILED", "released w"}},
		{CauseUndelivered, p, spool.Job{State: q}, "w", []string{"work/ep", "requeued undelivered", "released w"}},
		{CauseUndecryptable, p, held(f, nil), "w", []string{"job/j", "finished FAILED", "released w"}},
		{CauseRetry, f, spool.Job{State: q}, "", []string{"work/ep", "requeued retry"}},
		{CauseRetry, o, spool.Job{State: q}, "", []string{"work/ep", "requeued retry"}},
		{CauseStopResent, x, held(x, stop), "", []string{"stop/w", "must stop w"}},
		{CauseStopsDelivered, x, held(x, nil), "", nil},
		{CauseRetention, c, held(c, stop), "", nil},
	}
	covered := map[[2]spool.State]bool{}
	for _, r := range rows {
		j := r.job
		j.ID, j.Endpoint = "j", "ep"
		got := describe(effectsOf(Change{Cause: r.cause, From: r.from, Worker: r.worker, Job: &j}))
		want := slices.Clone(r.want)
		slices.Sort(want)
		require.Equal(t, want, got, "%s: %s -> %s", r.cause, r.from, j.State)
		covered[[2]spool.State{r.from, j.State}] = true
	}
	for _, from := range spool.States {
		for _, to := range spool.States {
			if spool.CanTransition(from, to) {
				require.True(t, covered[[2]spool.State{from, to}], "no row for the transition %s -> %s", from, to)
			}
		}
	}
}

// describe lists effects as the table writes them, sorted.
func describe(fx effects) []string {
	var out []string
	for _, t := range fx.topics {
		out = append(out, string(t))
	}
	if fx.submitted {
		out = append(out, "submitted")
	}
	if fx.started {
		out = append(out, "started")
	}
	if fx.finished != "" {
		out = append(out, "finished "+string(fx.finished))
	}
	if fx.requeued != "" {
		out = append(out, "requeued "+fx.requeued)
	}
	for _, w := range []struct{ what, worker string }{
		{"handed", fx.handedTo}, {"released", fx.releasedBy}, {"must stop", fx.mustStop}, {"restart", fx.restartAsks},
	} {
		if w.worker != "" {
			out = append(out, w.what+" "+w.worker)
		}
	}
	slices.Sort(out)
	if len(out) == 0 {
		return nil
	}
	return out
}
