package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/auth"
	"github.com/spool-run/spool/internal/joblog"
	"github.com/spool-run/spool/internal/wire"
	"github.com/spool-run/spool/store"
)

// routesAdmin mounts Spool's own API under /api (admin keys only).
func (s *server) routesAdmin(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/endpoints", s.admin(s.listEndpoints))
	mux.HandleFunc("POST /api/endpoints", s.admin(s.createEndpoint))
	mux.HandleFunc("GET /api/endpoints/{name}", s.admin(s.getEndpoint))
	mux.HandleFunc("PUT /api/endpoints/{name}", s.admin(s.putEndpoint))
	mux.HandleFunc("DELETE /api/endpoints/{name}", s.admin(s.deleteEndpoint))
	mux.HandleFunc("GET /api/endpoints/{name}/scaling", s.admin(s.getScaling))
	mux.HandleFunc("GET /api/keys", s.admin(s.listKeys))
	mux.HandleFunc("POST /api/keys", s.admin(s.createKey))
	mux.HandleFunc("DELETE /api/keys/{id}", s.admin(s.deleteKey))
	mux.HandleFunc("GET /api/jobs", s.admin(s.listJobs))
	mux.HandleFunc("GET /api/jobs/{id}", s.admin(s.getJob))
	mux.HandleFunc("GET /api/jobs/{id}/logs", s.admin(s.getJobLogs))
	mux.HandleFunc("GET /api/jobs/{id}/chunks", s.admin(s.getJobChunks))
	mux.HandleFunc("GET /api/jobs/{id}/webhook", s.admin(s.getWebhook))
	mux.HandleFunc("POST /api/jobs/{id}/webhook/redeliver", s.admin(s.redeliverWebhook))
	mux.HandleFunc("GET /api/workers", s.admin(s.listWorkers))
	mux.HandleFunc("GET /api/overview", s.admin(s.getOverview))
	mux.HandleFunc("GET /api/events", s.admin(s.events))
}

func (s *server) admin(h func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		write := r.Method != http.MethodGet && r.Method != http.MethodHead
		key, err := s.authorize(r, auth.Admin, "", write)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), keyContext{}, key))
		if err := h(w, r); err != nil {
			s.fail(w, r, err)
		}
	}
}

// keyContext carries the key of an /api request to its handler.
type keyContext struct{}

// readOnly reports whether the request's key may only read: such a key is shown no secret a
// writer needs to see to edit it (a worker's environment).
func readOnly(r *http.Request) bool {
	k, _ := r.Context().Value(keyContext{}).(*spool.Key)
	return k == nil || k.ReadOnly
}

// decodeStrict decodes an /api body into v: one JSON object, unknown fields refused (so a typo
// is a 400 that names it), nothing after it.
func (s *server) decodeStrict(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := wire.ReadBody(w, r, s.cfg.AdminLimit)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return invalid("request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if msg, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			return spool.Errorf(spool.CodeInvalid, "unknown field %s", msg)
		}
		return jsonError(err, "request body")
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalid("malformed JSON: unexpected data after the top-level object")
	}
	return nil
}

// --- endpoints

// endpointView is an endpoint as /api shows it: every setting but the webhook secret, which is
// never shown (hasWebhookSecret says whether there is one).
type endpointView struct {
	spool.Endpoint
	WebhookSecret    *struct{} `json:"webhookSecret,omitempty"` // hides the embedded field
	HasWebhookSecret bool      `json:"hasWebhookSecret"`
}

// viewEndpoint shows ep; hideEnv replaces the values of its worker's environment, which may hold
// tokens, by "(hidden)" (for read-only keys).
func viewEndpoint(ep spool.Endpoint, hideEnv bool) endpointView {
	if hideEnv && ep.Worker != nil && len(ep.Worker.Env) > 0 {
		w := *ep.Worker
		w.Env = make(map[string]string, len(ep.Worker.Env))
		for k := range ep.Worker.Env {
			w.Env[k] = hiddenValue
		}
		ep.Worker = &w
	}
	return endpointView{Endpoint: ep, HasWebhookSecret: ep.WebhookSecret != ""}
}

// hiddenValue stands for a value a read-only key is not shown.
const hiddenValue = "(hidden)"

// endpointBody is an endpoint as /api takes it. webhookSecret is a pointer to tell an omitted
// secret (PUT keeps the stored one) from "" (PUT removes it); hasWebhookSecret, read-only, is
// accepted and ignored so that a GET answer can be sent back as is.
type endpointBody struct {
	spool.Endpoint
	WebhookSecret    *string `json:"webhookSecret"`
	HasWebhookSecret *bool   `json:"hasWebhookSecret"`
}

func (s *server) listEndpoints(w http.ResponseWriter, r *http.Request) error {
	eps := s.eng.Endpoints()
	views := make([]endpointView, len(eps))
	for i, ep := range eps {
		views[i] = viewEndpoint(ep, readOnly(r))
	}
	wire.WriteJSON(w, http.StatusOK, struct {
		Endpoints []endpointView `json:"endpoints"`
	}{views})
	return nil
}

func (s *server) getEndpoint(w http.ResponseWriter, r *http.Request) error {
	ep, err := s.eng.Endpoint(r.PathValue("name"))
	if err != nil {
		return err
	}
	wire.WriteJSON(w, http.StatusOK, viewEndpoint(ep, readOnly(r)))
	return nil
}

// decodeEndpoint decodes an endpoint over the defaults, so omitted fields keep them; the
// timestamps and source are the server's. An omitted webhookSecret keeps the one of the endpoint
// being replaced, if any (GET never shows it, so a GET-edit-PUT round trip must not drop it).
func (s *server) decodeEndpoint(w http.ResponseWriter, r *http.Request, name string) (spool.Endpoint, error) {
	body := endpointBody{Endpoint: spool.NewEndpoint(name)}
	if err := s.decodeStrict(w, r, &body); err != nil {
		return body.Endpoint, err
	}
	ep := body.Endpoint
	if body.WebhookSecret != nil {
		ep.WebhookSecret = *body.WebhookSecret
	} else if old, err := s.eng.Endpoint(ep.Name); err == nil {
		ep.WebhookSecret = old.WebhookSecret
	}
	ep.Source = auth.SourceAPI
	ep.CreatedAt, ep.UpdatedAt = time.Time{}, time.Time{}
	return ep, nil
}

func (s *server) createEndpoint(w http.ResponseWriter, r *http.Request) error {
	ep, err := s.decodeEndpoint(w, r, "")
	if err != nil {
		return err
	}
	if err := ep.Validate(); err != nil {
		return err
	}
	if _, err := s.eng.Endpoint(ep.Name); err == nil {
		return spool.Errorf(spool.CodeConflict, "endpoint %q already exists; use PUT /api/endpoints/%s to replace it", ep.Name, ep.Name)
	}
	stored, _, err := s.eng.PutEndpoint(r.Context(), ep)
	if err != nil {
		return err
	}
	wire.WriteJSON(w, http.StatusCreated, viewEndpoint(stored, false))
	return nil
}

func (s *server) putEndpoint(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	ep, err := s.decodeEndpoint(w, r, name)
	if err != nil {
		return err
	}
	if ep.Name != name {
		return spool.Errorf(spool.CodeInvalid, "name in the body (%q) must match the name in the path (%q)", ep.Name, name)
	}
	stored, created, err := s.eng.PutEndpoint(r.Context(), ep)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	wire.WriteJSON(w, status, viewEndpoint(stored, false))
	return nil
}

func (s *server) deleteEndpoint(w http.ResponseWriter, r *http.Request) error {
	if err := s.eng.DeleteEndpoint(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	if s.cfg.Stats != nil {
		s.cfg.Stats.Forget(r.PathValue("name")) // a new endpoint of that name starts afresh
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// --- keys

func (s *server) listKeys(w http.ResponseWriter, r *http.Request) error {
	keys, err := s.keys.List(r.Context())
	if err != nil {
		return err
	}
	for i := range keys {
		keys[i].Hash = ""
	}
	wire.WriteJSON(w, http.StatusOK, struct {
		Keys []spool.Key `json:"keys"`
	}{keys})
	return nil
}

type keyRequest struct {
	Name      string      `json:"name"`
	Scope     spool.Scope `json:"scope"`
	Endpoints []string    `json:"endpoints"`
	ReadOnly  bool        `json:"readOnly"`
}

// createdKey is a new key with its secret, which is shown this once.
type createdKey struct {
	spool.Key
	Secret string `json:"key"`
}

func (s *server) createKey(w http.ResponseWriter, r *http.Request) error {
	var req keyRequest
	if err := s.decodeStrict(w, r, &req); err != nil {
		return err
	}
	secret, k, err := s.keys.Create(r.Context(), spool.Key{
		Name: req.Name, Scope: req.Scope, Endpoints: req.Endpoints, ReadOnly: req.ReadOnly,
	})
	if err != nil {
		return err
	}
	k.Hash = ""
	wire.WriteJSON(w, http.StatusCreated, createdKey{Key: k, Secret: secret})
	return nil
}

func (s *server) deleteKey(w http.ResponseWriter, r *http.Request) error {
	if err := s.keys.Delete(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// --- jobs and workers

// adminJob is the admin view of a job: the RunPod job object plus endpoint, input, webhook,
// policy, sync, attempt, timestamps and hasS3Config. Never the s3Config itself.
func adminJob(j *spool.Job) []byte {
	o := wire.JobObject(j)
	o.String("endpoint", j.Endpoint)
	if j.Input != nil {
		o.Raw("input", j.Input)
	}
	if j.Webhook != "" {
		o.String("webhook", j.Webhook)
	}
	o.Raw("policy", wire.NewObject().
		Int("executionTimeout", j.Policy.ExecutionTimeoutMs).
		Int("ttl", j.Policy.TTLMs).
		Bool("lowPriority", j.Policy.LowPriority).Bytes())
	o.Bool("sync", j.Sync)
	o.Int("attempt", int64(j.Attempt))
	for _, t := range []struct {
		name string
		at   time.Time
	}{{"createdAt", j.CreatedAt}, {"queuedAt", j.QueuedAt}, {"takenAt", j.TakenAt}, {"finishedAt", j.FinishedAt}} {
		if !t.at.IsZero() {
			o.Time(t.name, t.at)
		}
	}
	// Whether the job holds an s3Config now (its ciphertext; erased once the job ended), never its value.
	o.Bool("hasS3Config", len(j.S3ConfigSealed) > 0)
	return o.Bytes()
}

// MaxListJobs bounds /api/jobs?limit=.
const MaxListJobs = 1000

func (s *server) listJobs(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	p := store.ListJobsParams{Endpoint: q.Get("endpoint"), Limit: 100}
	if v := q.Get("status"); v != "" {
		for _, st := range strings.Split(v, ",") {
			state := spool.State(strings.ToUpper(strings.TrimSpace(st)))
			if !state.Valid() {
				return spool.Errorf(spool.CodeInvalid, "status: %q is not a job state (IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED, TIMED_OUT)", st)
			}
			p.States = append(p.States, state)
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxListJobs {
			return spool.Errorf(spool.CodeInvalid, "limit must be an integer from 1 to %d", MaxListJobs)
		}
		p.Limit = n
	}
	if v := q.Get("before"); v != "" {
		t, id, err := parseBefore(v)
		if err != nil {
			return err
		}
		p.Before, p.BeforeID = t, id
	}
	jobs, err := s.eng.ListJobs(r.Context(), p)
	if err != nil {
		return err
	}
	elems := make([][]byte, len(jobs))
	for i, j := range jobs {
		elems[i] = adminJob(j)
	}
	o := wire.NewObject().Raw("jobs", wire.Array(elems))
	if len(jobs) == p.Limit {
		last := jobs[len(jobs)-1]
		o.String("next", strconv.FormatInt(last.CreatedAt.UnixMilli(), 10)+"_"+last.ID)
	}
	wire.WriteJSON(w, http.StatusOK, o)
	return nil
}

// parseBefore reads ?before=: the "next" cursor of a previous page (<unix ms>_<job id>), or a time
// (RFC 3339 or Unix milliseconds) to list the jobs created before it.
func parseBefore(v string) (time.Time, string, error) {
	msPart, id, _ := strings.Cut(v, "_")
	if ms, err := strconv.ParseInt(msPart, 10, 64); err == nil {
		return time.UnixMilli(ms), id, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, "", invalid("before must be a next cursor of a previous page, an RFC 3339 time or Unix milliseconds")
	}
	return t, "", nil
}

func (s *server) getJob(w http.ResponseWriter, r *http.Request) error {
	b, err := s.jobView(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	wire.WriteJSON(w, http.StatusOK, json.RawMessage(b))
	return nil
}

// getJobLogs answers the lines the job's workers wrote about it and its progress updates, oldest
// first (internal/joblog). A job must exist; one without lines has an empty list.
func (s *server) getJobLogs(w http.ResponseWriter, r *http.Request) error {
	j, err := s.eng.JobAnyEndpoint(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	entries, dropped := s.cfg.JobLog.Entries(j.ID)
	if entries == nil {
		entries = []joblog.Entry{}
	}
	wire.WriteJSON(w, http.StatusOK, struct {
		ID      string         `json:"id"`
		Entries []joblog.Entry `json:"entries"`
		Dropped int            `json:"dropped"`
	}{j.ID, entries, dropped})
	return nil
}

// MaxListChunks bounds one answer of GET /api/jobs/{id}/chunks; ?after= pages on.
const MaxListChunks = 500

// getJobChunks answers the stream chunks a job holds, without consuming them (a RunPod client
// reading /stream still gets every one): {"chunks":[{"seq":1,"output":…}],"more":false}.
func (s *server) getJobChunks(w http.ResponseWriter, r *http.Request) error {
	j, err := s.eng.JobAnyEndpoint(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	var after int64
	if v := r.URL.Query().Get("after"); v != "" {
		if after, err = strconv.ParseInt(v, 10, 64); err != nil || after < 0 {
			return invalid("after must be a chunk sequence number")
		}
	}
	chunks, err := s.eng.Chunks(r.Context(), j.Endpoint, j.ID, after, MaxListChunks+1)
	if err != nil {
		return err
	}
	more := len(chunks) > MaxListChunks
	if more {
		chunks = chunks[:MaxListChunks]
	}
	elems := make([][]byte, len(chunks))
	for i, c := range chunks {
		elems[i] = wire.NewObject().Int("seq", c.Seq).Raw("output", c.Data).Bytes()
	}
	wire.WriteJSON(w, http.StatusOK, wire.NewObject().Raw("chunks", wire.Array(elems)).Bool("more", more))
	return nil
}

type workerView struct {
	ID       string   `json:"id"`
	Endpoint string   `json:"endpoint"`
	State    string   `json:"state"`
	Jobs     []string `json:"jobs"`
	// FirstSeen and LastSeen are absent for a worker never seen (one that is starting, or
	// failed or is throttled before its first request).
	FirstSeen string `json:"firstSeen,omitempty"`
	LastSeen  string `json:"lastSeen,omitempty"`
	Version   string `json:"version,omitempty"`
	workerFleetView
}

// formatSeen formats a sighting's time; "" (left out) when there was none.
func formatSeen(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return wire.FormatTime(t)
}

func (s *server) listWorkers(w http.ResponseWriter, r *http.Request) error {
	ws, err := s.fleet.Workers(r.Context(), r.URL.Query().Get("endpoint"))
	if err != nil {
		return err
	}
	out := make([]workerView, len(ws))
	for i, wi := range ws {
		out[i] = workerView{
			ID: wi.ID, Endpoint: wi.Endpoint, State: string(wi.State), Jobs: wi.Jobs,
			FirstSeen: formatSeen(wi.FirstSeen), LastSeen: formatSeen(wi.LastSeen),
			Version: wi.Version, workerFleetView: fleetView(wi, s.cfg.Clock.Now()),
		}
		if out[i].Jobs == nil {
			out[i].Jobs = []string{}
		}
	}
	wire.WriteJSON(w, http.StatusOK, struct {
		Workers    []workerView             `json:"workers"`
		ColdStarts map[string]coldStartView `json:"coldStarts,omitempty"`
	}{out, coldStartViews(s.fleet.ColdStarts())})
	return nil
}
