package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/auth"
	"github.com/spool-run/spool/internal/jobstats"
	"github.com/spool-run/spool/internal/wire"
)

// Sessions authenticates the dashboard's signed-in browsers on /api and the client API's
// routes, in place of an Authorization header.
type Sessions interface {
	// Authenticate returns the key the request's session cookie speaks for; ok is false when the
	// request carries no session. write says the request changes something: the session must then
	// also carry its CSRF token.
	Authenticate(r *http.Request, write bool) (key *spool.Key, ok bool, err error)
}

// authorize authenticates the request by its Authorization header or, without one, by its
// dashboard session, and authorizes it for surface, endpoint and write (auth.Authorize).
//
// A session needs its CSRF token on every request of the client API, reads included: a read
// there may consume something (/stream drains chunks), and the dashboard reads through /api.
func (s *server) authorize(r *http.Request, surface auth.Surface, endpoint string, write bool) (*spool.Key, error) {
	if s.cfg.Sessions != nil && r.Header.Get("Authorization") == "" {
		key, ok, err := s.cfg.Sessions.Authenticate(r, write || surface == auth.Client)
		if ok {
			if err != nil {
				return nil, err
			}
			return key, auth.Authorize(key, surface, endpoint, write)
		}
	}
	return s.keys.Check(r, surface, endpoint, write)
}

type queueView struct {
	Normal int `json:"normal"`
	Low    int `json:"low"`
}

type workerCountsView struct {
	Idle         int `json:"idle"`
	Running      int `json:"running"`
	Initializing int `json:"initializing"`
	Throttled    int `json:"throttled"`
	Unhealthy    int `json:"unhealthy"`
}

type endpointOverview struct {
	Name       string           `json:"name"`
	Queue      queueView        `json:"queue"`
	InProgress int              `json:"inProgress"`
	Workers    workerCountsView `json:"workers"`
	WorkersMin int              `json:"workersMin"`
	WorkersMax int              `json:"workersMax"`
	jobstats.Summary
}

// overview is every endpoint's state now and its last hour (GET /api/overview, the dashboard),
// as a JSON array.
func (s *server) overview(ctx context.Context) ([]byte, error) {
	eps := s.eng.Endpoints()
	out := make([]endpointOverview, 0, len(eps))
	for _, ep := range eps {
		o := endpointOverview{Name: ep.Name, WorkersMin: ep.WorkersMin, WorkersMax: ep.WorkersMax}
		counts, err := s.eng.Counts(ctx, ep.Name)
		if spool.ErrorCode(err) == spool.CodeNotFound {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		o.InProgress = counts.ByState[spool.StateInProgress]
		if s.cfg.QueueDepth != nil {
			q, err := s.cfg.QueueDepth(ctx, ep.Name)
			if err != nil {
				return nil, err
			}
			o.Queue = queueView{Normal: q.Normal, Low: q.Low}
		} else {
			o.Queue.Normal = counts.ByState[spool.StateInQueue]
		}
		wc, err := s.fleet.Counts(ctx, ep.Name)
		if err != nil {
			return nil, err
		}
		o.Workers = workerCountsView{Idle: wc.Idle, Running: wc.Running, Initializing: wc.Initializing,
			Throttled: wc.Throttled, Unhealthy: wc.Unhealthy}
		if s.cfg.Stats != nil {
			o.Summary = s.cfg.Stats.Summary(ep.Name)
		}
		out = append(out, o)
	}
	return json.Marshal(out)
}

// overviewObject is the answer of GET /api/overview: when, and the endpoints.
func (s *server) overviewObject(endpoints []byte) []byte {
	return wire.NewObject().Time("at", s.cfg.Clock.Now()).Raw("endpoints", endpoints).Bytes()
}

func (s *server) getOverview(w http.ResponseWriter, r *http.Request) error {
	b, err := s.overview(r.Context())
	if err != nil {
		return err
	}
	wire.WriteJSON(w, http.StatusOK, json.RawMessage(s.overviewObject(b)))
	return nil
}

// jobView is a job as GET /api/jobs/{id} shows it: the admin view and where it waits.
func (s *server) jobView(ctx context.Context, id string) ([]byte, error) {
	j, err := s.eng.JobAnyEndpoint(ctx, id)
	if err != nil {
		return nil, err
	}
	info, err := s.fleet.WaitInfo(ctx, j)
	if err != nil {
		return nil, err
	}
	return withWaitInfo(adminJob(j), info), nil
}

// events serves GET /api/events, the dashboard's live view, as Server-Sent Events: an "overview"
// event (GET /api/overview's answer) whenever it changes, and with ?job=ID a "job" event
// (GET /api/jobs/{id}'s answer) whenever the job changes, looked at every EventsEvery. Nothing is
// sent that the admin API does not already show: no s3Config, no webhook secret. The request's
// key (or session) is checked again at every look, so a revoked key, an ended session or a
// signed-out browser stops getting events: an "error" event says why and the stream ends.
func (s *server) events(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	jobID := r.URL.Query().Get("job")
	if jobID != "" {
		if _, err := s.eng.JobAnyEndpoint(ctx, jobID); err != nil {
			return err
		}
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	var lastOverview, lastJob []byte
	lastSent := s.cfg.Clock.Now()
	var buf bytes.Buffer
	for first := true; ; first = false {
		buf.Reset()
		if !first {
			if _, err := s.authorize(r, auth.Admin, "", false); err != nil {
				writeEvent(&buf, "error", "", wire.NewObject().String("error", spool.ErrorMessage(err)).Bytes())
				_, _ = w.Write(buf.Bytes())
				_ = rc.Flush()
				return nil
			}
		}
		ov, err := s.overview(ctx)
		if err == nil && !bytes.Equal(ov, lastOverview) {
			writeEvent(&buf, "overview", "", s.overviewObject(ov))
			lastOverview = ov
		}
		if jobID != "" {
			jv, err := s.jobView(ctx, jobID)
			if err != nil {
				jv = wire.NewObject().String("error", spool.ErrorMessage(err)).Bytes()
			}
			if !bytes.Equal(jv, lastJob) {
				writeEvent(&buf, "job", "", jv)
				lastJob = jv
			}
		}
		now := s.cfg.Clock.Now()
		if buf.Len() == 0 && now.Sub(lastSent) >= s.cfg.SSEKeepAlive {
			buf.WriteString(": keep-alive\n\n")
		}
		if buf.Len() > 0 {
			wire.ExtendWriteDeadline(w, s.cfg.SSEKeepAlive+s.cfg.EventsEvery)
			if _, err := w.Write(buf.Bytes()); err != nil {
				return nil
			}
			if err := rc.Flush(); err != nil {
				return nil
			}
			lastSent = now
		}
		t := s.cfg.Clock.NewTimer(s.cfg.EventsEvery)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-s.eng.Drained():
			t.Stop()
			return nil // a draining server lets its open streams go
		case <-t.C():
		}
	}
}

// eventsEveryDefault paces GET /api/events.
const eventsEveryDefault = 2 * time.Second
