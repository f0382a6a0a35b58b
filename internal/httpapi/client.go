package httpapi

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/auth"
	"github.com/spool-run/spool/internal/failpoint"
	"github.com/spool-run/spool/internal/wire"
)

// routesClient mounts the RunPod client API (docs/contract.md §2, docs/client-api.md §5).
func (s *server) routesClient(mux *http.ServeMux) {
	mux.HandleFunc("POST /v2/{endpoint}/run", s.client(true, s.run))
	mux.HandleFunc("POST /v2/{endpoint}/runsync", s.client(true, s.runsync))
	for _, m := range []string{"GET", "POST"} {
		// /status?ttl= deletes a result early, so it is a write; a plain /status is a read.
		mux.HandleFunc(m+" /v2/{endpoint}/status/{id}", s.clientWriteIf(func(r *http.Request) bool { return r.URL.Query().Has("ttl") }, s.status))
		mux.HandleFunc(m+" /v2/{endpoint}/status-sync/{id}", s.client(false, s.statusSync))
		mux.HandleFunc(m+" /v2/{endpoint}/stream/{id}", s.client(false, s.stream))
	}
	mux.HandleFunc("POST /v2/{endpoint}/cancel/{id}", s.client(true, s.cancel))
	mux.HandleFunc("POST /v2/{endpoint}/retry/{id}", s.client(true, s.retry))
	mux.HandleFunc("POST /v2/{endpoint}/purge-queue", s.client(true, s.purge))
	mux.HandleFunc("GET /v2/{endpoint}/health", s.client(false, s.health))
}

// client wraps a client-API handler with the key check (before any body is read); write says
// whether read-only keys are refused. The handler's error, if any, is rendered.
func (s *server) client(write bool, h func(http.ResponseWriter, *http.Request, string) error) http.HandlerFunc {
	return s.clientWriteIf(func(*http.Request) bool { return write }, h)
}

// clientWriteIf is client for routes whose request decides whether it writes.
func (s *server) clientWriteIf(write func(*http.Request) bool, h func(http.ResponseWriter, *http.Request, string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ep := r.PathValue("endpoint")
		key, err := s.authorize(r, auth.Client, ep, write(r))
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if key.Scope == spool.ScopeAdmin && key.ReadOnly && strings.Contains(r.Pattern, "/stream/") && !wantsEventStream(r) {
			// A viewer must not take chunks from the client waiting for them: /stream drains.
			s.fail(w, r, spool.Errorf(spool.CodeForbidden, "a read-only admin key may not consume a job's stream; "+
				"read it with Accept: text/event-stream or GET /api/jobs/{id}/chunks"))
			return
		}
		if err := h(w, r, ep); err != nil {
			// The client went away while we waited: nobody to answer. A body that arrived too
			// slowly ends the request's context too, but its client is still there to be told.
			if r.Context().Err() != nil && spool.ErrorCode(err) != spool.CodeTimeout {
				return
			}
			s.fail(w, r, err)
		}
	}
}

func (s *server) run(w http.ResponseWriter, r *http.Request, ep string) error {
	return s.submit(w, r, ep, false)
}

func (s *server) runsync(w http.ResponseWriter, r *http.Request, ep string) error {
	return s.submit(w, r, ep, true)
}

func (s *server) submit(w http.ResponseWriter, r *http.Request, ep string, sync bool) error {
	var wait time.Duration
	limit := s.cfg.RunLimit
	if sync {
		var err error
		if wait, err = waitParam(r, s.cfg.RunSyncWait, MinRunSyncWaitMs); err != nil {
			return err
		}
		limit = s.cfg.RunSyncLimit
	}
	body, err := wire.ReadBody(w, r, limit)
	if err != nil {
		return err
	}
	p, err := decodeSubmit(body)
	if err != nil {
		return err
	}
	p.Endpoint, p.Sync = ep, sync
	j, err := s.eng.Submit(r.Context(), p)
	if err != nil {
		return err
	}
	failpoint.Hit(failpoint.AfterSubmitCommit)
	if !sync {
		wire.WriteJSON(w, http.StatusOK, wire.JobStatus(j))
		return nil
	}
	wire.ExtendWriteDeadline(w, wait)
	done, err := s.eng.WaitTerminal(r.Context(), ep, j.ID, wait)
	if err != nil {
		return err
	}
	if done.State.Terminal() {
		wire.WriteJSON(w, http.StatusOK, wire.Job(done))
	} else {
		wire.WriteJSON(w, http.StatusOK, wire.JobStatus(done))
	}
	return nil
}

// waitParam reads ?wait= in milliseconds: def when absent or empty, clamped to [lo, 300000].
func waitParam(r *http.Request, def time.Duration, lo int64) (time.Duration, error) {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return def, nil
	}
	ms, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil {
		return 0, invalid("wait must be an integer number of milliseconds")
	}
	ms = min(max(ms, lo), MaxWaitMs)
	return time.Duration(ms) * time.Millisecond, nil
}

func (s *server) status(w http.ResponseWriter, r *http.Request, ep string) error {
	wire.DiscardBody(r)
	id := r.PathValue("id")
	var j *spool.Job
	var err error
	if q := r.URL.Query(); q.Has("ttl") {
		ttl, perr := strconv.ParseInt(strings.TrimSpace(q.Get("ttl")), 10, 64)
		if perr != nil || ttl < 1 || ttl > spool.MaxTTLMs {
			return spool.Errorf(spool.CodeInvalid, "ttl must be a positive integer number of milliseconds, at most %d", spool.MaxTTLMs)
		}
		j, err = s.eng.SetRetention(r.Context(), ep, id, time.Duration(ttl)*time.Millisecond)
	} else {
		j, err = s.eng.Job(r.Context(), ep, id)
	}
	if err != nil {
		return err
	}
	wire.WriteJSON(w, http.StatusOK, wire.Job(j))
	return nil
}

func (s *server) statusSync(w http.ResponseWriter, r *http.Request, ep string) error {
	wire.DiscardBody(r)
	wait, err := waitParam(r, s.cfg.StatusSyncWait, 0)
	if err != nil {
		return err
	}
	wire.ExtendWriteDeadline(w, wait)
	j, err := s.eng.WaitTerminal(r.Context(), ep, r.PathValue("id"), wait)
	if err != nil {
		return err
	}
	wire.WriteJSON(w, http.StatusOK, wire.Job(j))
	return nil
}

func (s *server) stream(w http.ResponseWriter, r *http.Request, ep string) error {
	wire.DiscardBody(r)
	wait, err := waitParam(r, 0, 0)
	if err != nil {
		return err
	}
	if wantsEventStream(r) {
		return s.streamEvents(w, r, ep)
	}
	wire.ExtendWriteDeadline(w, wait)
	j, chunks, err := s.eng.Stream(r.Context(), ep, r.PathValue("id"), wait)
	if err != nil {
		return err
	}
	wire.WriteJSON(w, http.StatusOK, wire.Stream(j, chunks))
	return nil
}

func (s *server) cancel(w http.ResponseWriter, r *http.Request, ep string) error {
	wire.DiscardBody(r)
	j, err := s.eng.Cancel(r.Context(), ep, r.PathValue("id"))
	if err != nil {
		return err
	}
	wire.WriteJSON(w, http.StatusOK, wire.Job(j))
	return nil
}

func (s *server) retry(w http.ResponseWriter, r *http.Request, ep string) error {
	wire.DiscardBody(r)
	j, err := s.eng.Retry(r.Context(), ep, r.PathValue("id"))
	if err != nil {
		return err
	}
	wire.WriteJSON(w, http.StatusOK, wire.JobStatus(j))
	return nil
}

func (s *server) purge(w http.ResponseWriter, r *http.Request, ep string) error {
	wire.DiscardBody(r)
	n, err := s.eng.PurgeQueue(r.Context(), ep)
	if err != nil {
		return err
	}
	wire.WriteJSON(w, http.StatusOK, struct {
		Removed int    `json:"removed"`
		Status  string `json:"status"`
	}{n, "completed"})
	return nil
}

type healthView struct {
	Jobs struct {
		Completed  int `json:"completed"`
		Failed     int `json:"failed"`
		InProgress int `json:"inProgress"`
		InQueue    int `json:"inQueue"`
		Retried    int `json:"retried"`
	} `json:"jobs"`
	Workers struct {
		Idle         int `json:"idle"`
		Initializing int `json:"initializing"`
		Ready        int `json:"ready"`
		Running      int `json:"running"`
		Throttled    int `json:"throttled"`
		Unhealthy    int `json:"unhealthy"`
	} `json:"workers"`
}

func (s *server) health(w http.ResponseWriter, r *http.Request, ep string) error {
	counts, err := s.eng.Counts(r.Context(), ep)
	if err != nil {
		return err
	}
	workers, err := s.fleet.Counts(r.Context(), ep)
	if err != nil {
		return err
	}
	var v healthView
	v.Jobs.Completed = counts.ByState[spool.StateCompleted]
	v.Jobs.Failed = counts.ByState[spool.StateFailed]
	v.Jobs.InProgress = counts.ByState[spool.StateInProgress]
	v.Jobs.InQueue = counts.ByState[spool.StateInQueue]
	v.Jobs.Retried = counts.Retried
	v.Workers.Idle = workers.Idle
	v.Workers.Initializing = workers.Initializing
	v.Workers.Ready = workers.Ready()
	v.Workers.Running = workers.Running
	v.Workers.Throttled = workers.Throttled
	v.Workers.Unhealthy = workers.Unhealthy
	wire.WriteJSON(w, http.StatusOK, v)
	return nil
}
