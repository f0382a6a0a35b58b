package e2e_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool/store/pgstore/pgtest"
)

// startReplicas starts n `spool serve` processes on one fresh PostgreSQL schema, with the same
// keys, the same secret key and the same config: what an operator runs behind a load balancer.
// It returns them and the application_name their connections carry.
func startReplicas(t *testing.T, n int, config string) ([]*server, string) {
	t.Helper()
	app := "spool-e2e-" + strings.ToLower(newSecret()[6:16])
	url := pgtest.WithParam(pgtest.URL(t), "application_name", app) // skips without SPOOL_TEST_POSTGRES
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	keys := newTestKeys()
	env := []string{"SPOOL_STORE=" + url, "SPOOL_SECRET_KEY=" + base64.StdEncoding.EncodeToString(key)}
	var out []*server
	for range n {
		out = append(out, startServer(t, serverOpts{Config: config, Keys: keys, Env: env}))
	}
	return out, app
}

var leadsLine = regexp.MustCompile(`msg="this replica leads`)

// leaderOf returns the replica that logged that it leads, waiting up to 30 s for one to.
func leaderOf(t *testing.T, replicas []*server) *server {
	t.Helper()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	for range maxWakeups {
		changed := make([]chan struct{}, len(replicas))
		for i, r := range replicas {
			r.stderr.mu.Lock()
			changed[i] = r.stderr.changed
			r.stderr.mu.Unlock()
			if leadsLine.MatchString(r.stderr.String()) {
				return r
			}
		}
		select { // the next line any of them logs
		case <-changed[0]:
		case <-changed[1%len(changed)]:
		case <-changed[2%len(changed)]:
		case <-deadline.C:
			t.Fatalf("no replica leads after 30s")
		}
	}
	t.Fatalf("no replica leads after %d log lines", maxWakeups)
	return nil
}

// takeNext long-polls job-take until a job comes (a worker polls again after a 204, as
// runpod-python does): on a loaded machine the job a test just submitted elsewhere may reach this
// replica after one takeWait.
func takeNext(t *testing.T, w *plainWorker) map[string]json.RawMessage {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		r := w.get(t, w.urls.take(1, false))
		switch r.Code {
		case http.StatusOK:
			return fields(t, r.Body)
		case http.StatusNoContent:
			continue
		}
		t.Fatalf("job-take on %s: %s", w.srv.URL, r)
	}
	t.Fatalf("job-take on %s: no job within a minute", w.srv.URL)
	return nil
}

const replicaConfig = `
retention:
  run: 24h
workers:
  lostAfter: 3s
  takeWait: 2s
  maxRetries: 1000
endpoints:
  - name: ep
`

// TestReplicasShareOneDatabase: three replicas on one PostgreSQL database behave as one server
// (issue 12's multi-replica checks): jobs submitted anywhere are taken anywhere, a /runsync and a
// /status-sync waiting on one replica answer from a result posted to another, a cancel on one
// reaches the worker long-polling job-stop on another, an endpoint made on one is usable on the
// others at once, and a key deleted on one is refused by all.
func TestReplicasShareOneDatabase(t *testing.T) {
	t.Parallel()
	rs, _ := startReplicas(t, 3, replicaConfig)
	a, b, c := rs[0], rs[1], rs[2]

	// Submitted through all three, taken and finished through all three.
	inputs := map[string]string{}
	for i := range 12 {
		in := fmt.Sprintf(`{"i":%d}`, i)
		inputs[rs[i%3].SDK(stylePython, "ep").Submit(t, in)] = in
	}
	for i := range 12 {
		w := newPlainWorker(rs[(i+1)%3], "ep", fmt.Sprintf("w-%d", i%4))
		job := takeNext(t, w)
		id := str(t, job, "id")
		require.Contains(t, inputs, id)
		requireSameJSON(t, inputs[id], job["input"])
		r := w.Done(t, id, `{"output": {"done": `+inputs[id]+`}}`)
		require.Equal(t, http.StatusOK, r.Code, "job-done on another replica: %s", r)
	}
	for id, in := range inputs {
		m := requireJobView(t, rs[len(id)%3].SDK(stylePython, "ep").Status(t, id).Body, id, "COMPLETED")
		requireSameJSON(t, `{"done": `+in+`}`, m["output"])
	}

	// /runsync on A answers from a result posted to C.
	type answer struct {
		r   resp
		err error
	}
	sync := make(chan answer, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		h := http.Header{"Authorization": {"Bearer " + a.Keys.Client}, "Content-Type": {"application/json"}}
		r, err := doRequest(ctx, newHTTPClient(), http.MethodPost, a.URL+"/v2/ep/runsync?wait=60000", h, []byte(`{"input":{"sync":true}}`))
		sync <- answer{r, err}
	}()
	wc := newPlainWorker(c, "ep", "w-sync")
	job := takeNext(t, wc) // long-polls C until A's job is there
	requireSameJSON(t, `{"sync":true}`, job["input"])
	posted := time.Now()
	require.Equal(t, http.StatusOK, wc.Done(t, str(t, job, "id"), `{"output": "from C"}`).Code)
	got := <-sync
	require.NoError(t, got.err)
	t.Logf("/runsync on A answered %s after the result was posted to C", time.Since(posted).Round(time.Microsecond))
	m := requireJobView(t, got.r.Body, str(t, job, "id"), "COMPLETED")
	requireSameJSON(t, `"from C"`, m["output"])

	// /status-sync on B answers from a result posted to A.
	id := c.SDK(stylePython, "ep").Submit(t, `{"status":"sync"}`)
	waiting := make(chan resp, 1)
	go func() {
		h := http.Header{"Authorization": {"Bearer " + b.Keys.Client}}
		r, err := b.try("GET", "/v2/ep/status-sync/"+id+"?wait=60000", h, nil, 90*time.Second)
		if err != nil {
			r = resp{Code: -1, Body: []byte(err.Error())}
		}
		waiting <- r
	}()
	wa := newPlainWorker(a, "ep", "w-status")
	require.Equal(t, id, str(t, takeNext(t, wa), "id"))
	require.Equal(t, http.StatusOK, wa.Done(t, id, `{"output": "from A"}`).Code)
	requireSameJSON(t, `"from A"`, requireJobView(t, (<-waiting).Body, id, "COMPLETED")["output"])

	// A cancel on B reaches the worker long-polling job-stop on C.
	id = a.SDK(stylePython, "ep").Submit(t, `{"cancel":"me"}`)
	ws := newPlainWorker(c, "ep", "w-stop")
	require.Equal(t, id, str(t, takeNext(t, ws), "id"))
	stopped := make(chan resp, 1)
	go func() {
		// The worker's job-stop loop: each long-poll lasts takeWait, and one that ends empty
		// (204) is followed by the next.
		hc := newHTTPClient()
		defer hc.CloseIdleConnections()
		var r resp
		for range 60 {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			var err error
			r, err = doRequest(ctx, hc, http.MethodGet, ws.urls.stop(), sessionHeader(ws.key, ""), nil)
			cancel()
			if err != nil {
				r = resp{Code: -1, Body: []byte(err.Error())}
			}
			if r.Code != http.StatusNoContent { // 204: nothing to stop yet
				break
			}
		}
		stopped <- r
	}()
	require.Equal(t, http.StatusOK, b.SDK(stylePython, "ep").Cancel(t, id).Code)
	stop := <-stopped
	require.Equal(t, http.StatusOK, stop.Code, "job-stop on C: %s", stop)
	require.Contains(t, string(stop.Body), id, "job-stop on C names the job cancelled on B")

	// An endpoint made on A is usable on B and C at once.
	admin := adminHeader(a)
	r := a.do(t, "POST", "/api/endpoints", admin, []byte(`{"name":"fresh"}`))
	require.Equal(t, http.StatusCreated, r.Code, "create endpoint: %s", r)
	for _, s := range []*server{b, c} {
		r := s.SDK(stylePython, "fresh").Run(t, `{"x":1}`)
		require.Equal(t, http.StatusOK, r.Code, "/run on %s right after the endpoint was made on A: %s", s.URL, r)
	}

	// A key deleted on A is refused by B and C.
	r = a.do(t, "POST", "/api/keys", admin, []byte(`{"name":"temp","scope":"client"}`))
	require.Equal(t, http.StatusCreated, r.Code, "create key: %s", r)
	var k struct{ ID, Key string }
	require.NoError(t, json.Unmarshal(r.Body, &k))
	health := func(s *server) int {
		return s.do(t, "GET", "/v2/ep/health", http.Header{"Authorization": {"Bearer " + k.Key}}, nil).Code
	}
	made := time.Now()
	for _, s := range rs {
		// B and C learn of the key by A's notification, or at their next reload for an unknown
		// key (at most one a second): each try is a request, so the loop is paced and bounded.
		for try := 0; health(s) != http.StatusOK; try++ {
			require.Less(t, try, 20000, "a key made on A does not work on %s", s.URL)
			require.Less(t, time.Since(made), 10*time.Second, "a key made on A does not work on %s", s.URL)
		}
	}
	t.Logf("a key made on A worked on B and C %s later", time.Since(made).Round(time.Millisecond))
	deleted := time.Now()
	require.Equal(t, http.StatusNoContent, a.do(t, "DELETE", "/api/keys/"+k.ID, admin, nil).Code)
	for _, s := range []*server{b, c} {
		// Each try is a request: the loop is paced by the server, and bounded.
		for try := 0; health(s) != http.StatusUnauthorized; try++ {
			require.Less(t, try, 20000, "%s still takes a key deleted on A", s.URL)
			require.Less(t, time.Since(deleted), 10*time.Second, "%s still takes a key deleted on A", s.URL)
		}
	}
	t.Logf("a key deleted on A was refused by B and C %s later", time.Since(deleted).Round(time.Millisecond))
}

// replicaLoad is a history-recorded load on replicas: clients submit jobs through them and
// runpod-python-style workers take and finish jobs through them, each client and worker bound to
// one replica's target, which a test moves to another replica when it kills one.
type replicaLoad struct {
	h         *history
	targets   map[*server]*crashTarget
	recorders []*recorder
	cancel    context.CancelFunc
	submitted sync.WaitGroup // the clients
	running   sync.WaitGroup // the workers

	mu        sync.Mutex
	acked     int64
	ackedGrew chan struct{} // closed and replaced at every acknowledged submission
}

// startReplicaLoad submits jobs through clients spread over rs, and runs six workers spread
// over them (two slots each, half of them retrying result posts on connection errors).
func startReplicaLoad(t *testing.T, rs []*server, jobs, clients int, allow503 bool) *replicaLoad {
	t.Helper()
	l := &replicaLoad{h: &history{allow503: allow503}, targets: map[*server]*crashTarget{}, ackedGrew: make(chan struct{})}
	for _, r := range rs {
		l.targets[r] = newCrashTarget(r.URL)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	t.Cleanup(l.stop) // also on a failed require: nothing outlives the test
	run := strings.ToLower(newSecret()[6:14])
	for c := range clients {
		target := l.targets[rs[c%len(rs)]]
		rec := newRecorder(l.h, fmt.Sprintf("client-%d", c), rs[0].Keys.Client)
		l.recorders = append(l.recorders, rec)
		l.submitted.Add(1)
		go func() {
			defer l.submitted.Done()
			for i := range jobs / clients {
				base := target.awaitUp(ctx)
				if base == "" {
					return
				}
				input := fmt.Sprintf(`{"nonce": "%s-c%d-%d", "client": %d, "i": %d}`, run, c, i, c, i)
				if _, typ, _, _ := rec.submit(ctx, base, "ep", input, ""); typ == evOK {
					l.mu.Lock()
					l.acked++
					close(l.ackedGrew)
					l.ackedGrew = make(chan struct{})
					l.mu.Unlock()
				}
			}
		}()
	}
	for i := range 6 {
		w := &crashWorker{
			id: fmt.Sprintf("w%d", i), target: l.targets[rs[i%len(rs)]], retryConnErrors: i%2 == 0, held: map[string]int{},
			rec:    newRecorder(l.h, fmt.Sprintf("worker-w%d", i), rs[0].Keys.Worker),
			pinger: newRecorder(l.h, fmt.Sprintf("pinger-w%d", i), rs[0].Keys.Worker),
		}
		l.recorders = append(l.recorders, w.rec, w.pinger)
		l.running.Add(3)
		go func() { defer l.running.Done(); w.pingLoop(ctx) }()
		for range 2 {
			go func() { defer l.running.Done(); w.slot(ctx, 20*jobs) }()
		}
	}
	return l
}

// awaitAcked waits until n submissions were acknowledged.
func (l *replicaLoad) awaitAcked(t *testing.T, n int64) {
	t.Helper()
	timeout := time.NewTimer(5 * time.Minute)
	defer timeout.Stop()
	for {
		l.mu.Lock()
		acked, grew := l.acked, l.ackedGrew
		l.mu.Unlock()
		if acked >= n {
			return
		}
		select {
		case <-grew:
		case <-timeout.C:
			t.Fatalf("only %d of %d jobs acknowledged after 5 minutes", acked, n)
		}
	}
}

// kill SIGKILLs a replica and sends its clients and workers to another, as a load balancer would.
func (l *replicaLoad) kill(victim, to *server) {
	l.targets[victim].down()
	victim.Kill()
	l.targets[victim].setUp(to.URL)
}

func (l *replicaLoad) stop() {
	l.cancel()
	l.submitted.Wait()
	l.running.Wait()
	for _, r := range l.recorders {
		r.close()
	}
}

// check waits for the clients, drains the queue through srv, and checks the history: nothing
// acknowledged lost, nothing unexpected or duplicated, no state regression, every job COMPLETED.
func (l *replicaLoad) check(t *testing.T, srv *server) {
	t.Helper()
	l.submitted.Wait()
	drainJobs(t, srv, "ep", 2*time.Minute)
	l.stop()
	events := l.h.snapshot(t)
	final := readBack(t, srv, "ep", knownJobIDs(events))
	rep := checkHistory(events, final)
	t.Logf("replicas: %d jobs on the server, %d acknowledged submits (of %d), %d acknowledged results, %d unknown outcomes",
		rep.Jobs, rep.AckedSubmits, rep.Submits, rep.AckedResults, rep.unknowns())
	require.True(t, rep.ok(), "history check failed:\n%s", rep)
	l.h.requireNoAnomalies(t)
	for id, j := range final {
		require.Equal(t, "COMPLETED", j.State, "job %s after the drain: %+v", id, j)
	}
}

// TestReplicasKillOneThenTheLeader: 2,000 jobs submitted through three replicas and run by
// workers spread over them; one replica that does not lead is SIGKILLed, then the leader. Nothing
// acknowledged is lost or run twice (the history checker), every job ends, and the last replica
// takes the lead and runs the sweeper (a job of an endpoint without workers reaches its TTL).
func TestReplicasKillOneThenTheLeader(t *testing.T) {
	t.Parallel()
	const jobs = 2000
	rs, _ := startReplicas(t, 3, replicaConfig+"  - name: idle\n")
	first := leaderOf(t, rs)
	var follower, last *server
	for _, r := range rs {
		switch {
		case r == first:
		case follower == nil:
			follower = r
		default:
			last = r
		}
	}
	load := startReplicaLoad(t, rs, jobs, 4, false)
	load.awaitAcked(t, jobs/3)
	load.kill(follower, last)
	load.awaitAcked(t, 2*jobs/3)
	load.kill(first, last)

	// The last replica takes the lead and its sweeper runs: a queued job reaches its TTL.
	_, err := last.stderr.waitFor(leadsLine, 30*time.Second, nil)
	require.NoError(t, err, "the last replica did not take the lead")
	r := last.do(t, "POST", "/v2/idle/run", http.Header{"Authorization": {"Bearer " + last.Keys.Client}, "Content-Type": {"application/json"}},
		[]byte(`{"input":{"ttl":true},"policy":{"ttl":10000}}`))
	require.Equal(t, http.StatusOK, r.Code, "%s", r)
	var v struct{ ID string }
	require.NoError(t, json.Unmarshal(r.Body, &v))
	last.SDK(stylePython, "idle").AwaitState(t, v.ID, "TIMED_OUT", time.Minute)

	load.check(t, last)
	last.Stop()
}

// TestReplicasRideOutLostDatabaseConnections: every connection the replicas hold to PostgreSQL
// is terminated, three times, in the middle of a load (what a database restart or a failover does
// to them). Requests that meet the loss answer 503 (never another 5xx), the replicas reconnect by
// themselves, and nothing acknowledged is lost.
func TestReplicasRideOutLostDatabaseConnections(t *testing.T) {
	t.Parallel()
	const jobs = 1500
	rs, app := startReplicas(t, 2, replicaConfig)
	admin, err := pgx.Connect(t.Context(), pgtest.BaseURL(t))
	require.NoError(t, err)
	defer admin.Close(context.Background())
	load := startReplicaLoad(t, rs, jobs, 4, true)
	for i := range 3 {
		load.awaitAcked(t, int64((i+1)*jobs/4))
		var n int
		require.NoError(t, admin.QueryRow(t.Context(),
			"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&n))
		t.Logf("terminated %d connections of the replicas", n)
		require.Positive(t, n)
	}
	load.check(t, rs[0])
}

// TestReplicasClaimRace: 16 takers spread over three replicas drain 10,000 queued jobs: each job
// is handed out exactly once (SKIP LOCKED claims across replicas never share a job).
func TestReplicasClaimRace(t *testing.T) {
	t.Parallel()
	const jobs, takers = 10000, 16
	rs, _ := startReplicas(t, 3, replicaConfig)
	var wg sync.WaitGroup
	errs := make(chan error, 8+takers)
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv := rs[c%3]
			h := http.Header{"Authorization": {"Bearer " + srv.Keys.Client}, "Content-Type": {"application/json"}}
			for i := range jobs / 8 {
				r, err := srv.try("POST", "/v2/ep/run", h, []byte(fmt.Sprintf(`{"input":{"c":%d,"i":%d}}`, c, i)), 30*time.Second)
				if err != nil || r.Code != http.StatusOK {
					errs <- fmt.Errorf("submit: %v %s", err, r)
					return
				}
			}
		}()
	}
	wg.Wait()
	require.Empty(t, errs)

	taken := make([][]string, takers)
	for w := range takers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv := rs[w%3]
			u := newRPURLs(workerEnv(srv.URL, "ep", fmt.Sprintf("taker-%d", w), srv.Keys.Worker)).take(1, false)
			hc := newHTTPClient()
			defer hc.CloseIdleConnections()
			for range 2 * jobs { // bounded: a 204 (the queue stayed empty for takeWait) ends it
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				r, err := doRequest(ctx, hc, http.MethodGet, u, sessionHeader(srv.Keys.Worker, ""), nil)
				cancel()
				if err != nil || (r.Code != http.StatusOK && r.Code != http.StatusNoContent) {
					errs <- fmt.Errorf("job-take on %s: %v %s", srv.URL, err, r)
					return
				}
				if r.Code == http.StatusNoContent {
					return
				}
				var j struct{ ID string }
				if err := json.Unmarshal(r.Body, &j); err != nil || j.ID == "" {
					errs <- fmt.Errorf("job-take on %s: %s", srv.URL, r)
					return
				}
				taken[w] = append(taken[w], j.ID)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	ids, dup := map[string]bool{}, 0
	for _, list := range taken {
		for _, id := range list {
			if ids[id] {
				dup++
			}
			ids[id] = true
		}
	}
	require.Zero(t, dup, "jobs handed out twice")
	require.Len(t, ids, jobs, "every queued job handed out once")
}
