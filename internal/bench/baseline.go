package bench

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Baseline is the floor Spool is measured against: a bare net/http server that speaks the same
// three exchanges per job (/run, job-take, job-done; /runsync, and the ping, job-stop and /health
// a worker and the bench use) with an in-memory hand-off and no store. It is what a job costs on
// this machine with nothing durable in between, so Spool's figures are printed as ratios to it.
type Baseline struct {
	queue chan *baseJob
	mu    sync.Mutex
	jobs  map[string]*baseJob // submitted and not yet finished

	submitted, completed atomic.Int64
	takeWait             time.Duration
}

type baseJob struct {
	id     string
	input  json.RawMessage
	output json.RawMessage
	done   chan struct{}
}

// NewBaseline returns a baseline that holds at most capacity queued jobs (beyond that /run gets
// 429) and answers an empty job-take after takeWait.
func NewBaseline(capacity int, takeWait time.Duration) *Baseline {
	return &Baseline{queue: make(chan *baseJob, capacity), jobs: make(map[string]*baseJob), takeWait: takeWait}
}

// Handler serves the baseline's routes under /v2/{endpoint}/.
func (b *Baseline) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v2/{ep}/run", func(w http.ResponseWriter, r *http.Request) { b.submit(w, r, false) })
	mux.HandleFunc("POST /v2/{ep}/runsync", func(w http.ResponseWriter, r *http.Request) { b.submit(w, r, true) })
	mux.HandleFunc("GET /v2/{ep}/job-take/{worker}", func(w http.ResponseWriter, r *http.Request) { b.take(w, r, 1, false) })
	mux.HandleFunc("GET /v2/{ep}/job-take-batch/{worker}", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("batch_size"))
		b.take(w, r, max(1, min(n, 64)), true)
	})
	mux.HandleFunc("POST /v2/{ep}/job-done/{worker}/{id}", b.done)
	mux.HandleFunc("GET /v2/{ep}/job-stop/{worker}", func(w http.ResponseWriter, r *http.Request) {
		t := time.NewTimer(b.takeWait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /v2/{ep}/ping/{worker}", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, []byte(`{}`))
	})
	mux.HandleFunc("GET /v2/{ep}/health", func(w http.ResponseWriter, _ *http.Request) {
		c := b.completed.Load()
		body, _ := json.Marshal(map[string]map[string]int64{"jobs": {
			"completed": c, "inQueue": int64(len(b.queue)), "inProgress": b.submitted.Load() - c - int64(len(b.queue)),
		}})
		writeJSON(w, http.StatusOK, body)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (b *Baseline) submit(w http.ResponseWriter, r *http.Request, sync bool) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 10<<20))
	var req struct {
		Input json.RawMessage `json:"input"`
	}
	if err != nil || json.Unmarshal(body, &req) != nil || len(req.Input) == 0 {
		writeJSON(w, http.StatusBadRequest, []byte(`{"error":"bad request"}`))
		return
	}
	j := &baseJob{id: newID(), input: req.Input, done: make(chan struct{})}
	b.mu.Lock()
	b.jobs[j.id] = j
	b.mu.Unlock()
	select {
	case b.queue <- j:
		b.submitted.Add(1)
	default:
		b.mu.Lock()
		delete(b.jobs, j.id)
		b.mu.Unlock()
		writeJSON(w, http.StatusTooManyRequests, []byte(`{"error":"queue full"}`))
		return
	}
	if !sync {
		writeJSON(w, http.StatusOK, []byte(`{"id":"`+j.id+`","status":"IN_QUEUE"}`))
		return
	}
	t := time.NewTimer(90 * time.Second)
	defer t.Stop()
	select {
	case <-j.done:
		out, _ := json.Marshal(map[string]any{"id": j.id, "status": "COMPLETED", "output": j.output})
		writeJSON(w, http.StatusOK, out)
	case <-t.C:
		writeJSON(w, http.StatusOK, []byte(`{"id":"`+j.id+`","status":"IN_PROGRESS"}`))
	case <-r.Context().Done():
	}
}

func (b *Baseline) take(w http.ResponseWriter, r *http.Request, n int, batch bool) {
	t := time.NewTimer(b.takeWait)
	defer t.Stop()
	var got []*baseJob
	select {
	case j := <-b.queue:
		got = append(got, j)
	case <-t.C:
	case <-r.Context().Done():
	}
	for len(got) < n {
		select {
		case j := <-b.queue:
			got = append(got, j)
			continue
		default:
		}
		break
	}
	if len(got) == 0 {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	type wireJob struct {
		ID    string          `json:"id"`
		Input json.RawMessage `json:"input"`
	}
	out := make([]wireJob, len(got))
	for i, j := range got {
		out[i] = wireJob{j.id, j.input}
	}
	var body []byte
	if batch {
		body, _ = json.Marshal(out)
	} else {
		body, _ = json.Marshal(out[0])
	}
	writeJSON(w, http.StatusOK, body)
}

func (b *Baseline) done(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 20<<20))
	var res struct {
		Output json.RawMessage `json:"output"`
	}
	if err != nil || json.Unmarshal(body, &res) != nil {
		writeJSON(w, http.StatusBadRequest, []byte(`{"error":"bad request"}`))
		return
	}
	b.mu.Lock()
	j := b.jobs[r.PathValue("id")]
	delete(b.jobs, r.PathValue("id"))
	b.mu.Unlock()
	if j != nil {
		j.output = res.Output
		close(j.done)
		b.completed.Add(1)
	}
	writeJSON(w, http.StatusOK, []byte(`{}`))
}
