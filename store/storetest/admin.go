package storetest

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

func testWorkers(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	touch := func(id, ep string, now time.Time, version string) {
		t.Helper()
		require.NoError(t, s.TouchWorker(ctx, store.TouchWorkerParams{ID: id, Endpoint: ep, Now: now, Version: version}))
	}
	touch("w1", "e1", t0, "1.2.0")
	touch("w2", "e2", at(time.Second), "")
	touch("w1", "e1", at(10*time.Second), "") // "" keeps the stored version

	workers, err := s.ListWorkers(ctx, store.ListWorkersParams{})
	require.NoError(t, err)
	require.ElementsMatch(t, []store.WorkerRecord{
		{ID: "w1", Endpoint: "e1", FirstSeen: t0.UTC(), LastSeen: at(10 * time.Second).UTC(), Version: "1.2.0"},
		{ID: "w2", Endpoint: "e2", FirstSeen: at(time.Second).UTC(), LastSeen: at(time.Second).UTC()},
	}, normWorkers(workers))

	touch("w1", "e1", at(11*time.Second), "1.3.0")
	workers, err = s.ListWorkers(ctx, store.ListWorkersParams{Endpoint: "e1"})
	require.NoError(t, err)
	require.Equal(t, []store.WorkerRecord{
		{ID: "w1", Endpoint: "e1", FirstSeen: t0.UTC(), LastSeen: at(11 * time.Second).UTC(), Version: "1.3.0"},
	}, normWorkers(workers))

	workers, err = s.ListWorkers(ctx, store.ListWorkersParams{Endpoint: "nobody"})
	require.NoError(t, err)
	require.Empty(t, workers)
}

func normWorkers(ws []store.WorkerRecord) []store.WorkerRecord {
	out := make([]store.WorkerRecord, len(ws))
	for i, w := range ws {
		w.FirstSeen, w.LastSeen = w.FirstSeen.UTC(), w.LastSeen.UTC()
		out[i] = w
	}
	return out
}

func testDeleteWorkers(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	for _, w := range []struct {
		id   string
		seen time.Duration
	}{{"old-idle", 0}, {"old-busy", 0}, {"old-done", 0}, {"recent", time.Minute}} {
		require.NoError(t, s.TouchWorker(ctx, store.TouchWorkerParams{ID: w.id, Endpoint: "ep", Now: at(w.seen)}))
	}
	create(t, s,
		with(queued("busy", "ep"), func(j *spool.Job) { j.State, j.WorkerID = spool.StateInProgress, "old-busy" }),
		with(queued("done", "ep"), func(j *spool.Job) { j.State, j.WorkerID = spool.StateCompleted, "old-done" }),
	)

	n, err := s.DeleteWorkers(ctx, store.DeleteWorkersParams{SeenBefore: at(30 * time.Second)})
	require.NoError(t, err)
	require.Equal(t, 2, n)
	workers, err := s.ListWorkers(ctx, store.ListWorkersParams{})
	require.NoError(t, err)
	var left []string
	for _, w := range workers {
		left = append(left, w.ID)
	}
	require.ElementsMatch(t, []string{"old-busy", "recent"}, left, "a worker holding an IN_PROGRESS job is kept")
}

// normEndpoint puts an endpoint's times in UTC, for comparisons by instant.
func normEndpoint(e spool.Endpoint) spool.Endpoint {
	e.CreatedAt, e.UpdatedAt = e.CreatedAt.UTC(), e.UpdatedAt.UTC()
	return e
}

func testEndpoints(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	alpha := spool.NewEndpoint("alpha")
	alpha.WorkersMin, alpha.WorkersMax, alpha.GPUCount, alpha.MaxQueue = 1, 7, 2, 50
	alpha.ScalerType, alpha.ScalerValue = spool.ScalerRequestCount, 9
	alpha.Worker = &spool.WorkerSpec{
		Command: "/usr/bin/python3",
		Args:    []string{"-u", "handler.py"},
		Env:     map[string]string{"MODEL": "tiny", "EMPTY": ""},
		Dir:     "/srv/worker",
	}
	alpha.Source, alpha.CreatedAt, alpha.UpdatedAt = "api", t0, t0

	require.NoError(t, s.PutEndpoint(ctx, alpha))
	got, err := s.GetEndpoint(ctx, "alpha")
	require.NoError(t, err)
	require.Equal(t, normEndpoint(alpha), normEndpoint(got))

	// Replacing keeps the stored CreatedAt, whatever the caller passes.
	replaced := spool.NewEndpoint("alpha")
	replaced.WorkersMax, replaced.Source = 1, "config"
	replaced.CreatedAt, replaced.UpdatedAt = at(time.Hour), at(time.Hour)
	require.NoError(t, s.PutEndpoint(ctx, replaced))
	got, err = s.GetEndpoint(ctx, "alpha")
	require.NoError(t, err)
	want := replaced
	want.CreatedAt = t0
	require.Equal(t, normEndpoint(want), normEndpoint(got))
	require.Nil(t, got.Worker)

	for _, name := range []string{"gamma", "beta"} {
		e := spool.NewEndpoint(name)
		e.CreatedAt, e.UpdatedAt = at(time.Minute), at(time.Minute)
		require.NoError(t, s.PutEndpoint(ctx, e))
	}
	list, err := s.ListEndpoints(ctx)
	require.NoError(t, err)
	require.Len(t, list, 3)
	require.Equal(t, []string{"alpha", "beta", "gamma"}, []string{list[0].Name, list[1].Name, list[2].Name})
	require.Equal(t, normEndpoint(want), normEndpoint(list[0]))

	require.NoError(t, s.DeleteEndpoint(ctx, "alpha"))
	_, err = s.GetEndpoint(ctx, "alpha")
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorIs(t, s.DeleteEndpoint(ctx, "alpha"), store.ErrNotFound)
	list, err = s.ListEndpoints(ctx)
	require.NoError(t, err)
	require.Len(t, list, 2)
}

func normKeys(ks []spool.Key) []spool.Key {
	out := make([]spool.Key, len(ks))
	for i, k := range ks {
		k.CreatedAt = k.CreatedAt.UTC()
		out[i] = k
	}
	return out
}

func testKeys(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	ci := spool.Key{
		ID: "key_ci", Name: "ci", Scope: spool.ScopeClient, Endpoints: []string{"alpha", "beta"},
		ReadOnly: true, Hash: spool.HashKey("secret-ci"), Source: "api", CreatedAt: at(time.Second),
	}
	admin := spool.Key{ID: "key_admin", Name: "admin", Scope: spool.ScopeAdmin, Hash: spool.HashKey("secret-admin"),
		Source: "config", CreatedAt: t0}
	require.NoError(t, s.PutKey(ctx, ci))
	require.NoError(t, s.PutKey(ctx, admin))

	keys, err := s.ListKeys(ctx)
	require.NoError(t, err)
	require.Equal(t, normKeys([]spool.Key{admin, ci}), normKeys(keys), "oldest first")
	require.Nil(t, keys[0].Endpoints)

	// Replace by id, keeping the hash.
	ci.Name, ci.ReadOnly, ci.Endpoints = "ci-renamed", false, []string{"gamma"}
	require.NoError(t, s.PutKey(ctx, ci))
	keys, err = s.ListKeys(ctx)
	require.NoError(t, err)
	require.Equal(t, normKeys([]spool.Key{admin, ci}), normKeys(keys))

	// A hash identifies one key.
	thief := spool.Key{ID: "key_other", Name: "other", Scope: spool.ScopeWorker, Hash: admin.Hash, CreatedAt: at(time.Minute)}
	require.ErrorIs(t, s.PutKey(ctx, thief), store.ErrConflict)

	require.NoError(t, s.DeleteKey(ctx, "key_ci"))
	require.ErrorIs(t, s.DeleteKey(ctx, "key_ci"), store.ErrNotFound)
	keys, err = s.ListKeys(ctx)
	require.NoError(t, err)
	require.Equal(t, normKeys([]spool.Key{admin}), normKeys(keys))
}

func testClose(t *testing.T, open opener) {
	s := open(t)
	ctx := t.Context()
	create(t, s, queued("j", "ep"))
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "Close is idempotent")

	calls := map[string]func() error{
		"CreateJob": func() error { return s.CreateJob(ctx, store.CreateJobParams{Job: queued("k", "ep")}) },
		"GetJob":    func() error { _, err := s.GetJob(ctx, store.GetJobParams{ID: "j"}); return err },
		"ListJobs":  func() error { _, err := s.ListJobs(ctx, store.ListJobsParams{}); return err },
		"FindJobs":  func() error { _, err := s.FindJobs(ctx, store.JobFilter{}); return err },
		"UpdateJobs": func() error {
			_, err := s.UpdateJobs(ctx, store.UpdateJobsParams{Now: t0, Updates: []store.JobUpdate{
				{ID: "j", Expect: store.Expect{State: spool.StateInQueue}, Change: store.JobChange{Set: store.SetError}},
			}})
			return err
		},
		"ClaimJobs": func() error {
			_, err := s.ClaimJobs(ctx, store.ClaimJobsParams{Endpoint: "ep", Max: 1, Now: t0, Change: claim("w")})
			return err
		},
		"DeleteJobs": func() error { _, err := s.DeleteJobs(ctx, store.DeleteJobsParams{Before: t0}); return err },
		"CountJobs":  func() error { _, err := s.CountJobs(ctx, "ep"); return err },
		"QueueDepth": func() error { _, err := s.QueueDepth(ctx, "ep"); return err },
		"QueuePosition": func() error {
			_, err := s.QueuePosition(ctx, store.QueuePositionParams{Endpoint: "ep", JobID: "j"})
			return err
		},
		"HeldJobs": func() error { _, err := s.HeldJobs(ctx, store.HeldJobsParams{}); return err },
		"AppendChunk": func() error {
			_, err := s.AppendChunk(ctx, store.AppendChunkParams{ID: "j", Expect: store.Expect{State: spool.StateInQueue}, Data: json.RawMessage(`1`)})
			return err
		},
		"ReadChunks": func() error { _, _, err := s.ReadChunks(ctx, store.ReadChunksParams{ID: "j"}); return err },
		"DrainChunks": func() error {
			_, _, err := s.ReadChunks(ctx, store.ReadChunksParams{ID: "j", Drain: true})
			return err
		},
		"TouchWorker":    func() error { return s.TouchWorker(ctx, store.TouchWorkerParams{ID: "w", Now: t0}) },
		"ListWorkers":    func() error { _, err := s.ListWorkers(ctx, store.ListWorkersParams{}); return err },
		"DeleteWorkers":  func() error { _, err := s.DeleteWorkers(ctx, store.DeleteWorkersParams{SeenBefore: t0}); return err },
		"PutEndpoint":    func() error { return s.PutEndpoint(ctx, spool.NewEndpoint("e")) },
		"GetEndpoint":    func() error { _, err := s.GetEndpoint(ctx, "e"); return err },
		"ListEndpoints":  func() error { _, err := s.ListEndpoints(ctx); return err },
		"DeleteEndpoint": func() error { return s.DeleteEndpoint(ctx, "e") },
		"PutKey":         func() error { return s.PutKey(ctx, spool.Key{ID: "k", Hash: "h"}) },
		"ListKeys":       func() error { _, err := s.ListKeys(ctx); return err },
		"DeleteKey":      func() error { return s.DeleteKey(ctx, "k") },
		"CreateDelivery": func() error {
			return s.CreateDelivery(ctx, store.CreateDeliveryParams{Delivery: spool.WebhookDelivery{ID: "msg_1", URL: "http://a.test/"}})
		},
		"ClaimDeliveries": func() error {
			_, err := s.ClaimDeliveries(ctx, store.ClaimDeliveriesParams{Now: t0, Limit: 1})
			return err
		},
		"RecordAttempt": func() error {
			_, err := s.RecordAttempt(ctx, store.RecordAttemptParams{ID: "msg_1", State: spool.DeliveryFailed, Now: t0})
			return err
		},
		"ListDeliveries":  func() error { _, err := s.ListDeliveries(ctx, "j"); return err },
		"NextDeliveryDue": func() error { _, _, err := s.NextDeliveryDue(ctx, t0); return err },
		"DeleteDeliveries": func() error {
			_, err := s.DeleteDeliveries(ctx, store.DeleteDeliveriesParams{Before: t0})
			return err
		},
	}
	for name, call := range calls {
		require.ErrorIs(t, call(), store.ErrClosed, name)
	}
}

func testSessions(t *testing.T, open opener) {
	st := open(t)
	s, ok := st.(store.SessionStore)
	require.True(t, ok, "the store keeps the dashboard's sessions")
	ctx := t.Context()
	a := store.Session{Hash: spool.HashKey("session-a"), KeyHash: spool.HashKey("key-1"), CreatedAt: t0, ExpiresAt: at(time.Hour)}
	b := store.Session{Hash: spool.HashKey("session-b"), KeyHash: spool.HashKey("key-1"), CreatedAt: t0, ExpiresAt: at(2 * time.Hour)}
	require.NoError(t, s.PutSession(ctx, a))
	require.NoError(t, s.PutSession(ctx, b))
	require.ErrorIs(t, s.PutSession(ctx, a), store.ErrConflict)

	got, err := s.GetSession(ctx, a.Hash)
	require.NoError(t, err)
	require.Equal(t, a.KeyHash, got.KeyHash)
	require.True(t, a.ExpiresAt.Equal(got.ExpiresAt) && a.CreatedAt.Equal(got.CreatedAt), "%+v", got)
	_, err = s.GetSession(ctx, spool.HashKey("never"))
	require.ErrorIs(t, err, store.ErrNotFound)

	// Expired sessions go; the others stay.
	n, err := s.DeleteSessionsBefore(ctx, at(time.Hour))
	require.NoError(t, err)
	require.Equal(t, 1, n)
	_, err = s.GetSession(ctx, a.Hash)
	require.ErrorIs(t, err, store.ErrNotFound)

	// Signing out deletes; twice is fine.
	require.NoError(t, s.DeleteSession(ctx, b.Hash))
	require.NoError(t, s.DeleteSession(ctx, b.Hash))
	_, err = s.GetSession(ctx, b.Hash)
	require.ErrorIs(t, err, store.ErrNotFound)
}
