package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// This file is a history checker for the crash tests. Every operation a client or a worker makes
// is recorded as an invoke followed by one completion: ok, fail (a definite refusal: the
// operation had no effect) or unknown (no answer: a connection error, a timeout or a 5xx, for
// example because the server was killed; it may have gone either way). Each submission carries a
// unique nonce in its input, so a job on the server can be traced back to the invoke that made
// it. At the end the server's jobs are read back and checkHistory reports what the history does
// not allow: lost, unexpected, duplicated or regressed jobs.

// opKind is what an operation does.
type opKind string

const (
	opSubmit opKind = "submit" // POST /run: Nonce and Input; ok carries JobID
	opTake   opKind = "take"   // job-take: ok carries JobID and Input (none on a 204)
	opResult opKind = "result" // a final job-done: JobID and Output
	opRead   opKind = "read"   // a status read: ok carries State, Output and Retries
	opRetry  opKind = "retry"  // POST /retry: JobID
)

// evType is an event's place in its operation.
type evType string

const (
	evInvoke  evType = "invoke"
	evOK      evType = "ok"
	evFail    evType = "fail"
	evUnknown evType = "unknown"
)

// histEvent is one event of a history.
type histEvent struct {
	Index   int // position in the history
	Op      int // the Index of the operation's invoke
	Type    evType
	Kind    opKind
	Process string // who made the operation: "client-3", "worker-w1"...
	Nonce   string
	JobID   string
	Input   string // canonical JSON
	Output  string // canonical JSON
	State   string
	Retries int
	Err     string
}

// maxHistory bounds a history; a run that outgrows it fails instead of eating the machine.
const maxHistory = 2_000_000

// history is a concurrent, append-only record of operations.
type history struct {
	mu        sync.Mutex
	events    []histEvent
	full      bool
	anomalies []string // answers the protocol never allows (a 5xx, a malformed 200...), at most 50
	nAnomaly  int
	// allow503 accepts 503 (with an unknown outcome) as an answer: while the database of a
	// replica is unreachable, 503 and retry is what the server must say.
	allow503 bool
}

// serverError reports whether an answer's status is a server error the history does not allow.
func (h *history) serverError(code int) bool {
	return code >= 500 && !(h.allow503 && code == http.StatusServiceUnavailable)
}

// invoke records the start of an operation and returns its id for complete.
func (h *history) invoke(e histEvent) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.events) >= maxHistory {
		h.full = true
		return -1
	}
	e.Index, e.Op, e.Type = len(h.events), len(h.events), evInvoke
	h.events = append(h.events, e)
	return e.Index
}

// complete records the end of operation op; fields left empty are those of its invoke.
func (h *history) complete(op int, typ evType, e histEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if op < 0 || len(h.events) >= maxHistory {
		h.full = true
		return
	}
	inv := h.events[op]
	e.Index, e.Op, e.Type, e.Kind, e.Process = len(h.events), op, typ, inv.Kind, inv.Process
	for _, f := range []struct{ dst, src *string }{
		{&e.Nonce, &inv.Nonce}, {&e.JobID, &inv.JobID}, {&e.Input, &inv.Input}, {&e.Output, &inv.Output},
	} {
		if *f.dst == "" {
			*f.dst = *f.src
		}
	}
	h.events = append(h.events, e)
}

func (h *history) anomaly(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nAnomaly++
	if len(h.anomalies) < 50 {
		h.anomalies = append(h.anomalies, fmt.Sprintf(format, args...))
	}
}

// snapshot returns the events so far, and fails the test if the history overflowed.
func (h *history) snapshot(t *testing.T) []histEvent {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	require.False(t, h.full, "the history outgrew %d events", maxHistory)
	return slices.Clone(h.events)
}

// requireNoAnomalies fails the test if an answer broke the protocol.
func (h *history) requireNoAnomalies(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	require.Zero(t, h.nAnomaly, "protocol anomalies (first %d):\n%s", len(h.anomalies), strings.Join(h.anomalies, "\n"))
}

// outcomeOf classifies an answer: a transport error or a 5xx leaves the effect unknown; a 4xx is
// a refusal that changed nothing (docs/contract.md §2: 409 and the other errors change nothing).
func outcomeOf(code int, err error) evType {
	switch {
	case err != nil || code >= 500:
		return evUnknown
	case code >= 200 && code < 300:
		return evOK
	}
	return evFail
}

// canonJSON is raw JSON with sorted keys and no spacing, so that the same value compares equal
// however it was written.
func canonJSON(raw []byte) string {
	if len(bytes.TrimSpace(raw)) == 0 {
		return ""
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "INVALID JSON " + string(raw)
	}
	return string(mustJSON(v))
}

// nonceOf reads the nonce of a canonical input ("" if it has none).
func nonceOf(input string) string {
	var v struct {
		Nonce string `json:"nonce"`
	}
	_ = json.Unmarshal([]byte(input), &v)
	return v.Nonce
}

// jobTransitions restates the job state machine of docs/contract.md §3 (spool.CanTransition in the
// root package; e2e imports no server package). FAILED and TIMED_OUT go back to the queue only
// through /retry.
var jobTransitions = map[string][]string{
	"IN_QUEUE":    {"IN_PROGRESS", "CANCELLED", "TIMED_OUT"},
	"IN_PROGRESS": {"IN_QUEUE", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"},
	"FAILED":      {"IN_QUEUE"},
	"TIMED_OUT":   {"IN_QUEUE"},
}

// reachable reports whether a job seen in state from can later be seen in state to, through
// any number of allowed transitions; retried says whether a /retry of the job was made.
func reachable(from, to string, retried bool) bool {
	seen := map[string]bool{from: true}
	next := []string{from}
	for len(next) > 0 {
		s := next[0]
		next = next[1:]
		if s == to {
			return true
		}
		for _, n := range jobTransitions[s] {
			if n == "IN_QUEUE" && (s == "FAILED" || s == "TIMED_OUT") && !retried {
				continue
			}
			if !seen[n] {
				seen[n] = true
				next = append(next, n)
			}
		}
	}
	return false
}

// serverJob is a job as the server holds it at the end.
type serverJob struct {
	ID, State     string
	Input, Output string // canonical JSON
	Retries       int
}

// histReport is what checkHistory found, and the figures of the run.
type histReport struct {
	Lost, Unexpected, Duplicated, Regressed []string

	Jobs                                int // jobs on the server
	Submits, AckedSubmits, AckedResults int
	Unknown                             map[opKind]int
}

func (r histReport) ok() bool {
	return len(r.Lost)+len(r.Unexpected)+len(r.Duplicated)+len(r.Regressed) == 0
}

func (r histReport) unknowns() int {
	n := 0
	for _, v := range r.Unknown {
		n += v
	}
	return n
}

func (r histReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d lost, %d unexpected, %d duplicated, %d regressed\n", len(r.Lost), len(r.Unexpected), len(r.Duplicated), len(r.Regressed))
	for _, part := range []struct {
		name  string
		items []string
	}{{"lost", r.Lost}, {"unexpected", r.Unexpected}, {"duplicated", r.Duplicated}, {"regressed", r.Regressed}} {
		for i, s := range part.items {
			if i == 20 {
				fmt.Fprintf(&b, "  %s: ... and %d more\n", part.name, len(part.items)-20)
				break
			}
			fmt.Fprintf(&b, "  %s: %s\n", part.name, s)
		}
	}
	return b.String()
}

// histOp is an operation: its invoke and its completion (an unknown one if it never completed).
type histOp struct{ inv, done histEvent }

// observation is a job state seen by an operation: it held at some moment between inv and done.
type observation struct {
	inv, done int
	state     string
	output    string // COMPLETED only
	retries   int    // -1 when not seen
	what      string
}

// checkHistory compares a history with the jobs the server has at the end (after a restart and
// with every job drained). final holds every job the server has, by id.
func checkHistory(events []histEvent, final map[string]serverJob) histReport {
	rep := histReport{Jobs: len(final), Unknown: map[opKind]int{}}
	ops := map[int]*histOp{}
	var order []int
	for _, e := range events {
		if e.Type == evInvoke {
			ops[e.Index] = &histOp{inv: e, done: histEvent{Type: evUnknown, Index: len(events), Err: "never completed"}}
			order = append(order, e.Index)
			continue
		}
		if o := ops[e.Op]; o != nil {
			o.done = e
		}
	}
	const end = 1 << 62 // the final read comes after everything

	creators := map[string][]*histOp{} // nonce → submits that may have created a job
	refused := map[string]bool{}       // nonce → a submit refused with a 4xx
	posted := map[string]map[string]bool{}
	acked := map[string][]*histOp{} // job → acknowledged results
	retried := map[string]bool{}
	obs := map[string][]observation{}
	for _, idx := range order {
		o := ops[idx]
		if o.done.Type == evUnknown {
			rep.Unknown[o.inv.Kind]++
		}
		switch o.inv.Kind {
		case opSubmit:
			rep.Submits++
			if o.done.Type == evFail {
				refused[o.inv.Nonce] = true
				continue
			}
			creators[o.inv.Nonce] = append(creators[o.inv.Nonce], o)
			if o.done.Type == evOK {
				rep.AckedSubmits++
				obs[o.done.JobID] = append(obs[o.done.JobID], observation{o.inv.Index, o.done.Index, "IN_QUEUE", "", 0, fmt.Sprintf("submit (op %d)", idx)})
			}
		case opTake:
			if o.done.Type == evOK && o.done.JobID != "" {
				obs[o.done.JobID] = append(obs[o.done.JobID], observation{o.inv.Index, o.done.Index, "IN_PROGRESS", "", -1, fmt.Sprintf("take by %s (op %d)", o.inv.Process, idx)})
			}
		case opResult:
			if o.done.Type == evFail {
				continue
			}
			if posted[o.inv.JobID] == nil {
				posted[o.inv.JobID] = map[string]bool{}
			}
			posted[o.inv.JobID][o.inv.Output] = true
			if o.done.Type == evOK {
				rep.AckedResults++
				acked[o.inv.JobID] = append(acked[o.inv.JobID], o)
				obs[o.inv.JobID] = append(obs[o.inv.JobID], observation{o.inv.Index, o.done.Index, "COMPLETED", o.inv.Output, -1, fmt.Sprintf("result by %s (op %d)", o.inv.Process, idx)})
			}
		case opRead:
			if o.done.Type == evOK {
				out := ""
				if o.done.State == "COMPLETED" {
					out = o.done.Output
				}
				obs[o.inv.JobID] = append(obs[o.inv.JobID], observation{o.inv.Index, o.done.Index, o.done.State, out, o.done.Retries, fmt.Sprintf("read by %s (op %d)", o.inv.Process, idx)})
			}
		case opRetry:
			if o.done.Type != evFail {
				retried[o.inv.JobID] = true
			}
		}
	}
	for id, j := range final {
		out := ""
		if j.State == "COMPLETED" {
			out = j.Output
		}
		obs[id] = append(obs[id], observation{end, end, j.State, out, j.Retries, "final read"})
	}

	// Lost: an acknowledged submit whose job is gone or lost its input; an acknowledged result
	// that is not the job's final state. Duplicated: acknowledged results that disagree.
	for _, idx := range order {
		o := ops[idx]
		if o.inv.Kind != opSubmit || o.done.Type != evOK {
			continue
		}
		j, ok := final[o.done.JobID]
		switch {
		case !ok:
			rep.Lost = append(rep.Lost, fmt.Sprintf("job %s (nonce %s, submit op %d acknowledged): not on the server", o.done.JobID, o.inv.Nonce, idx))
		case j.Input != o.inv.Input:
			rep.Lost = append(rep.Lost, fmt.Sprintf("job %s (nonce %s, submit op %d acknowledged) lost its input: submitted %s, server has %s", j.ID, o.inv.Nonce, idx, o.inv.Input, j.Input))
		}
	}
	for _, id := range sortedKeys(acked) {
		rs := acked[id]
		outs := map[string]bool{}
		for _, r := range rs {
			outs[r.inv.Output] = true
		}
		if len(outs) > 1 {
			rep.Duplicated = append(rep.Duplicated, fmt.Sprintf("job %s: %d different results acknowledged: %s", id, len(outs), strings.Join(sortedKeys(outs), " / ")))
			continue
		}
		j, ok := final[id]
		if !ok || j.State != "COMPLETED" || j.Output != rs[0].inv.Output {
			rep.Lost = append(rep.Lost, fmt.Sprintf("job %s: result %s (op %d by %s) acknowledged, server has %s %s (present: %v)", id, rs[0].inv.Output, rs[0].inv.Index, rs[0].inv.Process, j.State, j.Output, ok))
		}
	}
	// Unexpected: a job no submit could have made (or its input was not submitted with its
	// nonce), an output no worker posted. Duplicated: more jobs for a nonce than submits of it.
	byNonce := map[string][]string{}
	for _, id := range sortedKeys(final) {
		j := final[id]
		n := nonceOf(j.Input)
		byNonce[n] = append(byNonce[n], id)
		cs := creators[n]
		switch {
		case len(cs) == 0 && refused[n]:
			rep.Unexpected = append(rep.Unexpected, fmt.Sprintf("job %s (nonce %s) exists although its submit was refused", id, n))
		case len(cs) == 0:
			rep.Unexpected = append(rep.Unexpected, fmt.Sprintf("job %s with input %s: no submit could have created it", id, j.Input))
		case !slices.ContainsFunc(cs, func(o *histOp) bool { return o.inv.Input == j.Input }):
			rep.Unexpected = append(rep.Unexpected, fmt.Sprintf("job %s (nonce %s) has input %s, which was never submitted", id, n, j.Input))
		}
		if j.State == "COMPLETED" && !posted[id][j.Output] {
			rep.Unexpected = append(rep.Unexpected, fmt.Sprintf("job %s completed with output %s, which no worker posted for it", id, j.Output))
		}
	}
	for _, n := range sortedKeys(byNonce) {
		if ids := byNonce[n]; len(creators[n]) > 0 && len(ids) > len(creators[n]) {
			rep.Duplicated = append(rep.Duplicated, fmt.Sprintf("nonce %s submitted %d time(s) is %d jobs: %s", n, len(creators[n]), len(ids), strings.Join(ids, ", ")))
		}
	}
	// Regressed: two observations in real-time order (one ended before the other began) that no
	// sequence of allowed transitions joins, a retry count that went down; duplicated: a job seen
	// COMPLETED with two outputs.
	for _, id := range sortedKeys(obs) {
		seen := obs[id]
		slices.SortFunc(seen, func(a, b observation) int { return a.done - b.done })
		if len(seen) > 1000 {
			seen = seen[len(seen)-1000:] // bounded: the latest observations matter most
		}
		regressed, twice := "", ""
		for bi, b := range seen {
			if jobTransitions[b.state] == nil && b.state != "COMPLETED" && b.state != "CANCELLED" && b.state != stateAbsent {
				regressed = fmt.Sprintf("job %s: %s saw state %q, which is not a job state", id, b.what, b.state)
				break
			}
			for _, a := range seen[:bi] {
				if a.done >= b.inv {
					continue // concurrent: either order is possible
				}
				switch {
				case regressed == "" && !reachable(a.state, b.state, retried[id]):
					regressed = fmt.Sprintf("job %s: %s saw %s, then %s saw %s", id, a.what, a.state, b.what, b.state)
				case regressed == "" && a.retries >= 0 && b.retries >= 0 && b.retries < a.retries:
					regressed = fmt.Sprintf("job %s: %s saw retries %d, then %s saw %d", id, a.what, a.retries, b.what, b.retries)
				case twice == "" && a.state == "COMPLETED" && b.state == "COMPLETED" && a.output != b.output:
					twice = fmt.Sprintf("job %s completed twice with different outputs: %s saw %s, %s saw %s", id, a.what, a.output, b.what, b.output)
				}
			}
		}
		if regressed != "" {
			rep.Regressed = append(rep.Regressed, regressed)
		}
		if twice != "" && len(acked[id]) < 2 { // two acknowledged results are reported above
			rep.Duplicated = append(rep.Duplicated, twice)
		}
	}
	return rep
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// recorder makes recorded requests for one process of a history.
type recorder struct {
	h       *history
	process string
	key     string
	hc      *http.Client
}

func newRecorder(h *history, process, key string) *recorder {
	return &recorder{h: h, process: process, key: key, hc: newHTTPClient()}
}

func (r *recorder) close() { r.hc.CloseIdleConnections() }

func (r *recorder) send(ctx context.Context, method, u string, header http.Header, body []byte, timeout time.Duration) (resp, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return doRequest(ctx, r.hc, method, u, header, body)
}

// submit posts {"input": input} (plus "webhook" when given) to /run of base's endpoint ep.
func (r *recorder) submit(ctx context.Context, base, ep, input, webhook string) (string, evType, resp, error) {
	in := canonJSON([]byte(input))
	op := r.h.invoke(histEvent{Kind: opSubmit, Process: r.process, Nonce: nonceOf(in), Input: in})
	body := `{"input": ` + input
	if webhook != "" {
		body += `, "webhook": ` + string(mustJSON(webhook))
	}
	body += "}"
	h := http.Header{"Authorization": {"Bearer " + r.key}, "Content-Type": {"application/json"}}
	res, err := r.send(ctx, http.MethodPost, base+"/v2/"+ep+"/run", h, []byte(body), 10*time.Second)
	typ := outcomeOf(res.Code, err)
	var v struct{ ID, Status string }
	switch {
	case r.h.serverError(res.Code) || typ == evFail || (typ == evOK && res.Code != http.StatusOK):
		r.h.anomaly("%s: /run answered %s", r.process, res)
	case typ == evOK && (json.Unmarshal(res.Body, &v) != nil || v.ID == "" || v.Status != "IN_QUEUE"):
		r.h.anomaly("%s: /run answered %s", r.process, res)
		typ = evUnknown
	}
	r.h.complete(op, typ, histEvent{JobID: v.ID, Err: errString(err)})
	return v.ID, typ, res, err
}

// take long-polls job-take as runpod-python does and returns the job handed out ("" on a 204).
func (r *recorder) take(ctx context.Context, base, ep, worker string, holding bool) (id, input string, typ evType, res resp, err error) {
	u := newRPURLs(workerEnv(base, ep, worker, r.key)).take(1, holding)
	op := r.h.invoke(histEvent{Kind: opTake, Process: r.process})
	res, err = r.send(ctx, http.MethodGet, u, sessionHeader(r.key, ""), nil, 30*time.Second)
	typ = outcomeOf(res.Code, err)
	if typ == evOK && res.Code == http.StatusOK {
		var j struct {
			ID    string          `json:"id"`
			Input json.RawMessage `json:"input"`
		}
		if json.Unmarshal(res.Body, &j) != nil || j.ID == "" || len(j.Input) == 0 {
			r.h.anomaly("%s: job-take answered %s", r.process, res)
			typ = evUnknown
		}
		id, input = j.ID, canonJSON(j.Input)
	}
	if (typ == evOK && res.Code != http.StatusOK && res.Code != http.StatusNoContent) || typ == evFail || r.h.serverError(res.Code) {
		r.h.anomaly("%s: job-take answered %s", r.process, res)
	}
	r.h.complete(op, typ, histEvent{JobID: id, Input: input, Err: errString(err)})
	return id, input, typ, res, err
}

// result posts {"output": output} to job-done as runpod-python does (a JSON body labelled as a
// form). A 409 (the worker no longer holds the job) is a refusal; any other 4xx is an anomaly.
func (r *recorder) result(ctx context.Context, base, ep, worker, jobID, output string) (evType, resp, error) {
	out := canonJSON([]byte(output))
	op := r.h.invoke(histEvent{Kind: opResult, Process: r.process, JobID: jobID, Output: out})
	u := newRPURLs(workerEnv(base, ep, worker, r.key)).done(jobID, false)
	res, err := r.send(ctx, http.MethodPost, u, resultHeader(r.key, jobID), []byte(pyJSON(`{"output": `+output+`}`)), 10*time.Second)
	typ := outcomeOf(res.Code, err)
	if (typ == evFail && res.Code != http.StatusConflict) || r.h.serverError(res.Code) {
		r.h.anomaly("%s: job-done %s answered %s", r.process, jobID, res)
	}
	r.h.complete(op, typ, histEvent{Err: errString(err)})
	return typ, res, err
}

// stateAbsent is what a read that got a 404 saw: not a state, and after any state a regression
// (the tests keep every job for 24 h).
const stateAbsent = "ABSENT"

// read reads a job's /status (with waitMs > 0, /status-sync?wait=, which answers once the job is
// terminal or the wait ran out).
func (r *recorder) read(ctx context.Context, base, ep, id string, waitMs int) (string, evType, resp, error) {
	op := r.h.invoke(histEvent{Kind: opRead, Process: r.process, JobID: id})
	path := "/v2/" + ep + "/status/" + url.PathEscape(id)
	if waitMs > 0 {
		path = fmt.Sprintf("/v2/%s/status-sync/%s?wait=%d", ep, url.PathEscape(id), waitMs)
	}
	h := http.Header{"Authorization": {"Bearer " + r.key}}
	res, err := r.send(ctx, http.MethodGet, base+path, h, nil, time.Duration(waitMs)*time.Millisecond+10*time.Second)
	typ := outcomeOf(res.Code, err)
	var v struct {
		Status  string          `json:"status"`
		Output  json.RawMessage `json:"output"`
		Retries int             `json:"retries"`
	}
	if res.Code == http.StatusNotFound {
		typ, v.Status = evOK, stateAbsent
	} else if typ == evOK && (json.Unmarshal(res.Body, &v) != nil || v.Status == "") {
		r.h.anomaly("%s: status of %s answered %s", r.process, id, res)
		typ = evUnknown
	}
	if typ == evFail || r.h.serverError(res.Code) {
		r.h.anomaly("%s: status of %s answered %s", r.process, id, res)
	}
	r.h.complete(op, typ, histEvent{State: v.Status, Output: canonJSON(v.Output), Retries: v.Retries, Err: errString(err)})
	return v.Status, typ, res, err
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// adminJobView is a job of GET /api/jobs and /api/jobs/{id}.
type adminJobView struct {
	ID      string          `json:"id"`
	Status  string          `json:"status"`
	Input   json.RawMessage `json:"input"`
	Output  json.RawMessage `json:"output"`
	Retries int             `json:"retries"`
}

func (v adminJobView) serverJob() serverJob {
	return serverJob{ID: v.ID, State: v.Status, Input: canonJSON(v.Input), Output: canonJSON(v.Output), Retries: v.Retries}
}

// readBack returns every job of endpoint ep the server has: the admin job list, page by page
// (with every job's input and output), and a read of each id in known (ids the history saw) that
// the list does not hold: a known job the list missed counts too, and one the server does not
// have is absent.
func readBack(t *testing.T, srv *server, ep string, known []string) map[string]serverJob {
	t.Helper()
	admin := adminHeader(srv)
	final := map[string]serverJob{}
	before := ""
	for page := 0; ; page++ {
		require.Less(t, page, 1000, "the job list does not end")
		path := "/api/jobs?limit=1000&endpoint=" + url.QueryEscape(ep)
		if before != "" {
			path += "&before=" + url.QueryEscape(before)
		}
		r := srv.do(t, "GET", path, admin, nil)
		require.Equal(t, http.StatusOK, r.Code, "GET %s: %s", path, r)
		var v struct {
			Jobs []adminJobView `json:"jobs"`
			Next string         `json:"next"`
		}
		require.NoError(t, json.Unmarshal(r.Body, &v), "GET %s", path)
		for _, j := range v.Jobs {
			final[j.ID] = j.serverJob()
		}
		if v.Next == "" || len(v.Jobs) == 0 {
			break
		}
		before = v.Next
	}
	listed := len(final)

	var ids []string
	for _, id := range slices.Compact(slices.Sorted(slices.Values(known))) {
		if _, ok := final[id]; !ok {
			ids = append(ids, id)
		}
	}
	var (
		mu   sync.Mutex
		errs []string
		wg   sync.WaitGroup
	)
	next := make(chan string)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range next {
				r, err := srv.try("GET", "/api/jobs/"+url.PathEscape(id), admin, nil, 30*time.Second)
				mu.Lock()
				switch {
				case err != nil:
					errs = append(errs, fmt.Sprintf("GET /api/jobs/%s: %v", id, err))
				case r.Code == http.StatusNotFound:
					delete(final, id)
				case r.Code != http.StatusOK:
					errs = append(errs, fmt.Sprintf("GET /api/jobs/%s: %s", id, r))
				default:
					var v adminJobView
					if json.Unmarshal(r.Body, &v) != nil || v.ID != id {
						errs = append(errs, fmt.Sprintf("GET /api/jobs/%s: %s", id, r))
					} else {
						final[id] = v.serverJob()
					}
				}
				mu.Unlock()
			}
		}()
	}
	for _, id := range ids {
		next <- id
	}
	close(next)
	wg.Wait()
	require.Empty(t, errs, "reading the jobs back")
	t.Logf("read back: %d jobs listed, %d known ids not listed read one by one, %d jobs in all", listed, len(ids), len(final))
	return final
}

// drainJobs waits until no job of ep is IN_QUEUE or IN_PROGRESS (workers must be running), with
// /status-sync long-polls on the jobs still open.
func drainJobs(t *testing.T, srv *server, ep string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	client := http.Header{"Authorization": {"Bearer " + srv.Keys.Client}}
	var last resp
	for range 10000 {
		path := "/api/jobs?limit=1&status=IN_QUEUE,IN_PROGRESS&endpoint=" + url.QueryEscape(ep)
		r := srv.do(t, "GET", path, adminHeader(srv), nil)
		require.Equal(t, http.StatusOK, r.Code, "GET %s: %s", path, r)
		var v struct{ Jobs []adminJobView }
		require.NoError(t, json.Unmarshal(r.Body, &v))
		if len(v.Jobs) == 0 {
			return
		}
		require.True(t, time.Now().Before(deadline), "jobs still open after %s, e.g. %+v (last wait: %s)", timeout, v.Jobs[0], last)
		last = srv.do(t, "GET", "/v2/"+ep+"/status-sync/"+url.PathEscape(v.Jobs[0].ID)+"?wait=5000", client, nil)
		require.Equal(t, http.StatusOK, last.Code, "status-sync: %s", last)
	}
	t.Fatalf("jobs still open after 10000 waits")
}

// knownJobIDs lists every job id a history names.
func knownJobIDs(events []histEvent) []string {
	var ids []string
	for _, e := range events {
		if e.JobID != "" {
			ids = append(ids, e.JobID)
		}
	}
	return slices.Compact(slices.Sorted(slices.Values(ids)))
}

// TestHistoryCheckerFindsEachFault feeds the checker synthetic histories: one with exactly one
// lost, one duplicated and one regressed job among operations whose unknown outcomes went either
// way, which must report exactly those three; one with unexpected jobs and outputs; and a clean
// one, which must report nothing.
func TestHistoryCheckerFindsEachFault(t *testing.T) {
	t.Parallel()
	in := func(n string) string { return canonJSON([]byte(`{"nonce":"` + n + `"}`)) }
	out := func(s string) string { return canonJSON([]byte(`{"by":"` + s + `"}`)) }
	submit := func(h *history, n string, typ evType, id string) {
		op := h.invoke(histEvent{Kind: opSubmit, Process: "c", Nonce: n, Input: in(n)})
		h.complete(op, typ, histEvent{JobID: id})
	}
	take := func(h *history, id, n string) {
		op := h.invoke(histEvent{Kind: opTake, Process: "w"})
		h.complete(op, evOK, histEvent{JobID: id, Input: in(n)})
	}
	result := func(h *history, id, o string, typ evType) {
		op := h.invoke(histEvent{Kind: opResult, Process: "w", JobID: id, Output: out(o)})
		h.complete(op, typ, histEvent{})
	}
	read := func(h *history, id, state, o string, retries int) {
		op := h.invoke(histEvent{Kind: opRead, Process: "r", JobID: id})
		h.complete(op, evOK, histEvent{State: state, Output: o, Retries: retries})
	}
	job := func(id, n, state, o string, retries int) serverJob {
		return serverJob{ID: id, State: state, Input: in(n), Output: o, Retries: retries}
	}
	// clean is a history whose every outcome the final state allows, unknowns going both ways.
	clean := func() (*history, map[string]serverJob) {
		h := &history{}
		submit(h, "n-ok", evOK, "j-ok")
		take(h, "j-ok", "n-ok")
		result(h, "j-ok", "a", evUnknown) // a post cut off before the commit
		result(h, "j-ok", "b", evOK)
		read(h, "j-ok", "COMPLETED", out("b"), 0)
		submit(h, "n-unk-absent", evUnknown, "")  // never stored
		submit(h, "n-unk-present", evUnknown, "") // stored, answer lost
		submit(h, "n-requeued", evOK, "j-rq")
		take(h, "j-rq", "n-requeued")
		read(h, "j-rq", "IN_QUEUE", "", 1) // its worker was lost
		take(h, "j-rq", "n-requeued")
		result(h, "j-rq", "c", evUnknown) // committed, answer lost
		submit(h, "n-refused", evFail, "")
		return h, map[string]serverJob{
			"j-ok":  job("j-ok", "n-ok", "COMPLETED", out("b"), 0),
			"j-unk": job("j-unk", "n-unk-present", "IN_QUEUE", "", 0),
			"j-rq":  job("j-rq", "n-requeued", "COMPLETED", out("c"), 1),
		}
	}

	t.Run("clean", func(t *testing.T) {
		h, final := clean()
		rep := checkHistory(h.snapshot(t), final)
		require.True(t, rep.ok(), "%s", rep)
		require.Equal(t, 2, rep.AckedSubmits)
		require.Equal(t, 1, rep.AckedResults)
		require.Equal(t, map[opKind]int{opSubmit: 2, opResult: 2}, rep.Unknown)
	})

	t.Run("one lost, one duplicated, one regressed", func(t *testing.T) {
		h, final := clean()
		submit(h, "n-lost", evOK, "j-lost") // acknowledged, then gone
		submit(h, "n-dup", evOK, "j-dup")   // one submit, two jobs
		submit(h, "n-reg", evOK, "j-reg")
		take(h, "j-reg", "n-reg")
		result(h, "j-reg", "d", evOK)
		read(h, "j-reg", "COMPLETED", out("d"), 0)
		read(h, "j-reg", "IN_QUEUE", "", 0) // terminal, then queued again without a retry
		final["j-dup"] = job("j-dup", "n-dup", "IN_QUEUE", "", 0)
		final["j-dup2"] = job("j-dup2", "n-dup", "IN_QUEUE", "", 0)
		final["j-reg"] = job("j-reg", "n-reg", "COMPLETED", out("d"), 0)

		rep := checkHistory(h.snapshot(t), final)
		require.Len(t, rep.Lost, 1, "%s", rep)
		require.Contains(t, rep.Lost[0], "j-lost")
		require.Len(t, rep.Duplicated, 1, "%s", rep)
		require.Contains(t, rep.Duplicated[0], "j-dup, j-dup2")
		require.Len(t, rep.Regressed, 1, "%s", rep)
		require.Contains(t, rep.Regressed[0], "j-reg")
		require.Contains(t, rep.Regressed[0], "saw COMPLETED, then read by r")
		require.Empty(t, rep.Unexpected, "%s", rep)
	})

	t.Run("unexpected", func(t *testing.T) {
		h, final := clean()
		final["j-ghost"] = job("j-ghost", "n-nobody", "IN_QUEUE", "", 0)
		final["j-refused"] = job("j-refused", "n-refused", "IN_QUEUE", "", 0)
		final["j-unk"] = job("j-unk", "n-unk-present", "COMPLETED", out("forged"), 0)
		rep := checkHistory(h.snapshot(t), final)
		require.Len(t, rep.Unexpected, 3, "%s", rep)
		require.Contains(t, rep.Unexpected[0], "j-ghost")
		require.Contains(t, rep.Unexpected[1], "j-refused")
		require.Contains(t, rep.Unexpected[2], "no worker posted")
		require.Empty(t, rep.Lost, "%s", rep)
		require.Empty(t, rep.Duplicated, "%s", rep)
		require.Empty(t, rep.Regressed, "%s", rep)
	})

	t.Run("acknowledged result not final", func(t *testing.T) {
		h, final := clean()
		final["j-ok"] = job("j-ok", "n-ok", "COMPLETED", out("a"), 0) // the unknown post, not the acknowledged one
		rep := checkHistory(h.snapshot(t), final)
		require.Len(t, rep.Lost, 1, "%s", rep)
		require.Contains(t, rep.Lost[0], "j-ok")
		// The read that saw output b and the final output a also disagree.
		require.Len(t, rep.Duplicated, 1, "%s", rep)
		require.Contains(t, rep.Duplicated[0], "completed twice")
	})

	t.Run("state machine", func(t *testing.T) {
		require.True(t, reachable("IN_QUEUE", "COMPLETED", false))
		require.True(t, reachable("IN_PROGRESS", "IN_QUEUE", false))
		require.False(t, reachable("COMPLETED", "IN_PROGRESS", true))
		require.False(t, reachable("FAILED", "IN_QUEUE", false))
		require.True(t, reachable("FAILED", "COMPLETED", true))
		require.False(t, reachable("CANCELLED", "IN_QUEUE", true))
		require.False(t, reachable("IN_QUEUE", stateAbsent, true), "an acknowledged job never disappears")
		require.False(t, reachable(stateAbsent, "IN_QUEUE", true))
	})
}
