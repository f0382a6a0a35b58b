package e2e_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool/internal/s3test"
	"github.com/spool-run/spool/spoolworker"
	"github.com/spool-run/spool/spoolworker/s3upload"
)

// canaries are unique random strings put in every s3Config field of a test's jobs.
type canaries struct {
	AccessID, Secret, Bucket, Host, Path string
}

func newCanaries() canaries {
	r := func(prefix string) string {
		b := make([]byte, 10)
		_, _ = rand.Read(b)
		return prefix + hex.EncodeToString(b)
	}
	return canaries{AccessID: r("akcanary"), Secret: r("skcanary"), Bucket: r("bkcanary"), Host: r("epcanary"), Path: r("opcanary")}
}

func (c canaries) all() []string { return []string{c.AccessID, c.Secret, c.Bucket, c.Host, c.Path} }

// s3Config is the job's s3Config holding the canaries.
func (c canaries) s3Config() string {
	return `{"accessId":"` + c.AccessID + `","accessSecret":"` + c.Secret + `","bucketName":"` + c.Bucket +
		`","endpointUrl":"http://` + c.Host + `.invalid:9000/s3","objectPath":"` + c.Path + `"}`
}

// find returns the canaries found in b.
func (c canaries) find(b []byte) []string {
	var found []string
	for _, s := range c.all() {
		if bytes.Contains(b, []byte(s)) {
			found = append(found, s)
		}
	}
	return found
}

// exchange is one recorded HTTP answer of the canary test.
type exchange struct {
	what string
	r    resp
	// take marks a job-take answer; jobs lists the ids of the jobs it handed out.
	take bool
	jobs []string
}

// tap records every answer the canary test receives.
type tap struct {
	t   *testing.T
	srv *server
	mu  sync.Mutex
	got []exchange
}

func (p *tap) record(e exchange) resp {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.got = append(p.got, e)
	return e.r
}

// do sends a request to the server and records the answer.
func (p *tap) do(method, path string, header http.Header, body string) resp {
	p.t.Helper()
	var b []byte
	if body != "" {
		b = []byte(body)
	}
	r := p.srv.do(p.t, method, path, header, b)
	return p.record(exchange{what: method + " " + path, r: r})
}

func (p *tap) client(method, path, body string) resp {
	p.t.Helper()
	return p.do(method, path, http.Header{"Authorization": {"Bearer " + p.srv.Keys.Client}, "Content-Type": {"application/json"}}, body)
}

func (p *tap) admin(method, path string) resp {
	p.t.Helper()
	return p.do(method, path, adminHeader(p.srv), "")
}

// worker sends a worker-protocol request as runpod-python does (raw key).
func (p *tap) worker(method, path, body string) resp {
	p.t.Helper()
	h := http.Header{"Authorization": {p.srv.Keys.Worker}, "Content-Type": {"application/x-www-form-urlencoded"}}
	return p.do(method, path, h, body)
}

// take takes one job of ep as worker w, requires one, and records the answer as a take.
func (p *tap) take(ep, w string) map[string]json.RawMessage {
	p.t.Helper()
	path := "/v2/" + ep + "/job-take/" + w + "?gpu=TEST&job_in_progress=0"
	r := p.srv.do(p.t, http.MethodGet, path, http.Header{"Authorization": {p.srv.Keys.Worker}}, nil)
	require.Equal(p.t, http.StatusOK, r.Code, "take: %s", r)
	m := fields(p.t, r.Body)
	p.record(exchange{what: "GET " + path, r: r, take: true, jobs: []string{str(p.t, m, "id")}})
	return m
}

func (p *tap) submit(ep, body string) string {
	p.t.Helper()
	r := p.client(http.MethodPost, "/v2/"+ep+"/run", body)
	require.Equal(p.t, http.StatusOK, r.Code, "run: %s", r)
	return str(p.t, fields(p.t, r.Body), "id")
}

func (p *tap) awaitState(ep, id, want string) {
	p.t.Helper()
	for range 60 {
		r := p.client(http.MethodGet, "/v2/"+ep+"/status-sync/"+id+"?wait=1000", "")
		require.Equal(p.t, http.StatusOK, r.Code, "%s", r)
		if str(p.t, fields(p.t, r.Body), "status") == want {
			return
		}
	}
	p.t.Fatalf("job %s did not become %s", id, want)
}

// scanData reads the SQLite database, its WAL and shared memory file as raw bytes and requires
// that they hold no canary.
func scanData(t *testing.T, c canaries, dataDir, when string) {
	t.Helper()
	seen := 0
	for _, name := range []string{"spool.db", "spool.db-wal", "spool.db-shm"} {
		b, err := os.ReadFile(filepath.Join(dataDir, name))
		if os.IsNotExist(err) {
			continue
		}
		require.NoError(t, err)
		seen++
		require.Empty(t, c.find(b), "%s holds s3Config canaries %s", name, when)
	}
	require.NotZero(t, seen, "no database file to scan %s", when)
}

// TestS3ConfigCanary sends jobs whose s3Config fields are unique random strings through every
// client route, their error paths, the worker protocol, webhooks, /api, /metrics and the logs at
// debug level: the canaries appear in the job-take answers that hand each job to its worker and
// nowhere else. The database file and its WAL are searched while the jobs wait, run and after
// they end, and after the server stops.
func TestS3ConfigCanary(t *testing.T) {
	t.Parallel()
	c := newCanaries()
	s3 := c.s3Config()
	hooks := newHookReceiver(t, func(int, http.ResponseWriter, *http.Request) {})
	srv := startServer(t, serverOpts{Config: `
logLevel: debug
workers:
  takeWait: 1s
  lostAfter: 2s
webhooks:
  allowCIDRs: ["127.0.0.0/8"]
endpoints:
  - name: ep
    webhookDelay: 1s
  - name: other
`})
	p := &tap{t: t, srv: srv}
	data := srv.Opts.DataDir
	hook := hooks.srv.URL + "/hook"
	withS3 := func(input string) string {
		return `{"input":` + input + `,"webhook":"` + hook + `","s3Config":` + s3 + `}`
	}

	// --- Error paths of submission: every answer is a 400 (or 401/404/413) that echoes nothing.
	bad := []struct {
		name, path, key, body string
		code                  int
	}{
		{"missing secret", "/v2/ep/run", srv.Keys.Client, `{"input":1,"s3Config":{"accessId":"` + c.AccessID + `","bucketName":"` + c.Bucket + `","endpointUrl":"http://` + c.Host + `"}}`, 400},
		{"ftp endpoint", "/v2/ep/run", srv.Keys.Client, `{"input":1,"s3Config":{"accessId":"` + c.AccessID + `","accessSecret":"` + c.Secret + `","bucketName":"` + c.Bucket + `","endpointUrl":"ftp://` + c.Host + `"}}`, 400},
		{"secret object", "/v2/ep/runsync", srv.Keys.Client, `{"input":1,"s3Config":{"accessId":"a","accessSecret":{"v":"` + c.Secret + `"},"bucketName":"b","endpointUrl":"http://x"}}`, 400},
		{"s3Config string", "/v2/ep/run", srv.Keys.Client, `{"input":1,"s3Config":"` + c.Secret + `"}`, 400},
		{"syntax error", "/v2/ep/run", srv.Keys.Client, `{"input":1,"s3Config":{"accessSecret":"` + c.Secret + `" x}}`, 400},
		{"bad policy", "/v2/ep/run", srv.Keys.Client, `{"input":1,"policy":{"ttl":1},"s3Config":` + s3 + `}`, 400},
		{"no input", "/v2/ep/runsync", srv.Keys.Client, `{"s3Config":` + s3 + `}`, 400},
		{"bad webhook", "/v2/ep/run", srv.Keys.Client, `{"input":1,"webhook":"ftp://x","s3Config":` + s3 + `}`, 400},
		{"unknown endpoint", "/v2/nope/run", srv.Keys.Client, withS3(`1`), 404},
		{"unknown key", "/v2/ep/run", "spool_not_a_key", withS3(`1`), 401},
		{"worker key on client route", "/v2/ep/run", srv.Keys.Worker, withS3(`1`), 403},
		{"too large", "/v2/ep/run", srv.Keys.Client, `{"input":"` + strings.Repeat("x", 11<<20) + `","s3Config":` + s3 + `}`, 413},
	}
	for _, b := range bad {
		r := p.do(http.MethodPost, b.path, http.Header{"Authorization": {"Bearer " + b.key}, "Content-Type": {"application/json"}}, b.body)
		require.Equal(t, b.code, r.Code, "%s: %s", b.name, r)
	}

	// --- Jobs with the s3Config, one per path through the state machine.
	echoID := p.submit("ep", withS3(`{"case":"echo","n":1}`))
	failID := p.submit("ep", withS3(`{"case":"fail"}`))
	cancelRunningID := p.submit("ep", withS3(`{"case":"cancel-running"}`))
	lostID := p.submit("ep", withS3(`{"case":"lost"}`))
	cancelQueuedID := p.submit("ep", withS3(`{"case":"cancel-queued"}`))
	r := p.client(http.MethodPost, "/v2/ep/runsync?wait=1000", withS3(`{"case":"purged"}`))
	require.Equal(t, http.StatusOK, r.Code, "%s", r)
	purgedID := str(t, fields(t, r.Body), "id")
	otherID := p.submit("other", withS3(`{"case":"ttl"}`)) // expires unseen: policy.ttl below
	r = p.client(http.MethodPost, "/v2/other/run", `{"input":{"case":"ttl"},"policy":{"ttl":10000},"webhook":"`+hook+`","s3Config":`+s3+`}`)
	require.Equal(t, http.StatusOK, r.Code, "%s", r)
	ttlID := str(t, fields(t, r.Body), "id")
	scanData(t, c, data, "while the jobs wait")

	for _, id := range []string{echoID, failID, cancelRunningID, lostID, cancelQueuedID, purgedID} {
		for _, op := range []string{"status/" + id, "status/" + id + "?ttl=600000", "stream/" + id, "status-sync/" + id + "?wait=100"} {
			p.client(http.MethodGet, "/v2/ep/"+op, "")
			p.client(http.MethodPost, "/v2/ep/"+op, "")
		}
	}
	p.client(http.MethodGet, "/v2/ep/health", "")
	p.admin(http.MethodGet, "/api/jobs?endpoint=ep")
	p.admin(http.MethodGet, "/api/jobs/"+echoID)

	// The queued ones: cancel one now, purge another below.
	require.Equal(t, http.StatusOK, p.client(http.MethodPost, "/v2/ep/cancel/"+cancelQueuedID, "").Code)

	// A worker takes the echo job, streams, echoes every other field of the job, and completes.
	job := p.take("ep", "w-echo")
	require.Equal(t, echoID, str(t, job, "id"))
	require.JSONEq(t, s3, string(job["s3Config"]), "the holder gets the s3Config")
	scanData(t, c, data, "while a job runs")
	echo := map[string]json.RawMessage{}
	for k, v := range job {
		if k != "s3Config" {
			echo[k] = v
		}
	}
	require.Equal(t, http.StatusOK, p.worker(http.MethodPost, "/v2/ep/job-stream/w-echo/"+echoID+"?gpu=TEST&isStream=false", `{"output":{"chunk":1}}`).Code)
	require.Equal(t, http.StatusOK, p.worker(http.MethodPost, "/v2/ep/job-done/w-echo/"+echoID+"?gpu=TEST&isStream=false",
		`{"status":"IN_PROGRESS","output":"half"}`).Code)
	p.client(http.MethodGet, "/v2/ep/stream/"+echoID, "")
	// Server-Sent Events: the answer goes on until the job ends.
	sse := make(chan resp, 1)
	go func() {
		r, err := srv.try(http.MethodGet, "/v2/ep/stream/"+echoID,
			http.Header{"Authorization": {"Bearer " + srv.Keys.Client}, "Accept": {"text/event-stream"}}, nil, time.Minute)
		if err != nil {
			r = resp{Body: []byte(err.Error())}
		}
		sse <- r
	}()
	require.Equal(t, http.StatusOK, p.worker(http.MethodPost, "/v2/ep/job-done/w-echo/"+echoID+"?gpu=TEST&isStream=false",
		`{"output":{"echo":`+string(mustJSON(echo))+`}}`).Code)
	events := p.record(exchange{what: "GET /v2/ep/stream (SSE)", r: <-sse})
	require.Equal(t, http.StatusOK, events.Code, "%s", events)
	require.Contains(t, string(events.Body), `"chunk":1`)

	// A worker that fails with an error message.
	job = p.take("ep", "w-fail")
	require.Equal(t, failID, str(t, job, "id"))
	require.Equal(t, http.StatusOK, p.worker(http.MethodPost, "/v2/ep/job-done/w-fail/"+failID+"?gpu=TEST&isStream=false",
		`{"error":"the handler failed: could not reach the bucket"}`).Code)

	// A running job cancelled: its worker hears it on job-stop, pings, and a late result is refused.
	job = p.take("ep", "w-cancel")
	require.Equal(t, cancelRunningID, str(t, job, "id"))
	require.Equal(t, http.StatusOK, p.client(http.MethodPost, "/v2/ep/cancel/"+cancelRunningID, "").Code)
	p.worker(http.MethodGet, "/v2/ep/job-stop/w-cancel?gpu=TEST", "")
	p.worker(http.MethodGet, "/v2/ep/ping/w-cancel?gpu=TEST&job_id="+cancelRunningID+"&runpod_version=1.12.0", "")
	require.Equal(t, http.StatusConflict, p.worker(http.MethodPost, "/v2/ep/job-done/w-cancel/"+cancelRunningID+"?gpu=TEST&isStream=false", `{"output":1}`).Code)

	// A worker that is lost: the job goes back to the queue and the next holder gets the s3Config.
	job = p.take("ep", "w-lost")
	require.Equal(t, lostID, str(t, job, "id"))
	// Purge the /runsync job still queued (the running one is not purged).
	require.Equal(t, http.StatusOK, p.client(http.MethodPost, "/v2/ep/purge-queue", "").Code)
	p.awaitState("ep", lostID, "IN_QUEUE")
	// w-lost is told on its stop channel, and its post is refused.
	require.Equal(t, http.StatusConflict, p.worker(http.MethodPost, "/v2/ep/job-done/w-lost/"+lostID+"?gpu=TEST&isStream=false", `{"output":1}`).Code)
	job = p.take("ep", "w-next")
	require.Equal(t, lostID, str(t, job, "id"))
	require.JSONEq(t, s3, string(job["s3Config"]), "the new holder gets the s3Config")
	require.Equal(t, http.StatusOK, p.worker(http.MethodPost, "/v2/ep/job-done/w-next/"+lostID+"?gpu=TEST&isStream=false", `{"output":"ok"}`).Code)

	// The ttl job of "other" expires.
	p.awaitState("other", ttlID, "TIMED_OUT")

	// /retry of a job whose s3Config was erased is refused; so is one still running or completed.
	for _, id := range []string{failID} {
		r := p.client(http.MethodPost, "/v2/ep/retry/"+id, "")
		require.Equal(t, http.StatusBadRequest, r.Code, "%s", r)
		require.Contains(t, string(r.Body), "submit the job again")
	}
	require.Equal(t, http.StatusBadRequest, p.client(http.MethodPost, "/v2/ep/retry/"+echoID, "").Code)
	require.Equal(t, http.StatusBadRequest, p.client(http.MethodPost, "/v2/other/retry/"+ttlID, "").Code)

	// Every job is terminal now: read everything once more.
	ended := []string{echoID, failID, cancelRunningID, lostID, cancelQueuedID, purgedID}
	for _, id := range ended {
		p.client(http.MethodGet, "/v2/ep/status/"+id, "")
		p.client(http.MethodPost, "/v2/ep/status-sync/"+id+"?wait=100", "")
		p.client(http.MethodPost, "/v2/ep/stream/"+id, "")
		p.admin(http.MethodGet, "/api/jobs/"+id)
		p.admin(http.MethodGet, "/api/jobs/"+id+"/webhook")
	}
	for _, id := range []string{otherID, ttlID} {
		p.client(http.MethodGet, "/v2/other/status/"+id, "")
		p.admin(http.MethodGet, "/api/jobs/"+id+"/webhook")
	}
	p.client(http.MethodGet, "/v2/ep/health", "")
	p.client(http.MethodGet, "/v2/other/health", "")
	p.admin(http.MethodGet, "/api/jobs")
	p.admin(http.MethodGet, "/api/jobs?status=FAILED")
	p.admin(http.MethodGet, "/api/workers")
	p.admin(http.MethodGet, "/api/endpoints")
	p.do(http.MethodGet, "/metrics", nil, "")
	p.do(http.MethodGet, "/healthz", nil, "")
	p.do(http.MethodGet, "/readyz", nil, "")

	// Webhooks: one per terminal job of ep (6) and the expired one of other.
	hooks.await(t, 7, time.Minute)
	for _, q := range hooks.requests() {
		require.Empty(t, c.find(q.Body), "webhook body %s", q.Body)
		for k, v := range q.Header {
			require.Empty(t, c.find([]byte(k+": "+strings.Join(v, ","))), "webhook header %s", k)
		}
	}
	// The echo worker's output repeats the job's other fields, never the s3Config.
	r = p.client(http.MethodGet, "/v2/ep/status/"+echoID, "")
	require.Contains(t, string(r.Body), `"case":"echo"`)

	scanData(t, c, data, "after the jobs ended")

	// Every answer: the canaries only in the takes, and every take of a job had all of them.
	takes := map[string]int{}
	for _, e := range p.got {
		found := c.find(e.r.Body)
		for k, v := range e.r.Header {
			require.Empty(t, c.find([]byte(k+": "+strings.Join(v, ","))), "%s: header %s", e.what, k)
		}
		if e.take {
			require.ElementsMatch(t, c.all(), found, "%s hands the job its whole s3Config", e.what)
			takes[e.jobs[0]]++
			continue
		}
		require.Empty(t, found, "%s answered %d with s3Config canaries: %s", e.what, e.r.Code, e.r.Body)
	}
	require.Equal(t, map[string]int{echoID: 1, failID: 1, cancelRunningID: 1, lostID: 2}, takes,
		"one take per holder; the lost job twice, once per holder")

	srv.Stop()
	scanData(t, c, data, "after the server stopped")
	logs := srv.stdout.String() + srv.stderr.String()
	require.Contains(t, logs, "level=DEBUG", "the server logged at debug level")
	require.Empty(t, c.find([]byte(logs)), "the server's logs hold s3Config canaries")
}

// --- Real S3: a Go worker uploads to versitygw through the job's s3Config.

// testPNG draws a small gradient: an image-like file whose bytes the test can regenerate.
func testPNG(t *testing.T, seed byte) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for y := range 48 {
		for x := range 64 {
			img.Set(x, y, color.RGBA{R: byte(x * 4), G: byte(y * 5), B: seed, A: 255})
		}
	}
	var b bytes.Buffer
	require.NoError(t, png.Encode(&b, img))
	return b.Bytes()
}

// TestS3UploadsThroughSpool runs the real binary, a real S3 server and a worker built with the Go
// SDK: the worker uploads a PNG to the job's bucket and returns its presigned URL, which a plain
// HTTP client fetches byte for byte; a large output is offloaded to the bucket (the endpoint's
// outputOffloadBytes) and the client gets {"outputUrl": ...}; a wrong secret fails the job with
// a clear error that shows no secret.
func TestS3UploadsThroughSpool(t *testing.T) {
	t.Parallel()
	s3srv := s3test.Start(t)
	s3srv.CreateBucket(t, "outputs")
	srv := startServer(t, serverOpts{Config: `
endpoints:
  - name: img
    outputOffloadBytes: 4096
`})
	images := map[string][]byte{}
	var mu sync.Mutex
	handler := spoolworker.HandlerFunc(func(ctx context.Context, job *spoolworker.Job) (any, error) {
		var in struct {
			Mode string `json:"mode"`
			Seed byte   `json:"seed"`
		}
		if err := job.Decode(&in); err != nil {
			return nil, err
		}
		switch in.Mode {
		case "big":
			return map[string]string{"text": strings.Repeat("spool ", 2000)}, nil
		case "small":
			return map[string]string{"text": "short"}, nil
		}
		img := testPNG(t, in.Seed)
		mu.Lock()
		images[job.ID] = img
		mu.Unlock()
		u, err := s3upload.Bytes(ctx, job, "image.png", img, nil)
		if err != nil {
			return nil, err
		}
		return map[string]string{"image_url": u}, nil
	})
	cfg := spoolworker.ConfigFor(srv.URL, "img", srv.Keys.Worker)
	cfg.WorkerID = "go-s3-worker"
	cfg.Concurrency = 2
	cfg.Offloader = s3upload.Offloader{}
	w, err := spoolworker.New(cfg, handler)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(time.Minute):
			t.Error("the worker did not stop")
		}
	})

	s3cfg := func(secret string) string {
		b, _ := json.Marshal(map[string]string{"accessId": s3srv.AccessKey, "accessSecret": secret,
			"bucketName": "outputs", "endpointUrl": s3srv.URL, "objectPath": "spool"})
		return string(b)
	}
	c := srv.SDK(styleGo, "img")
	runsync := func(input, s3 string) map[string]json.RawMessage {
		t.Helper()
		r := c.RunSync(t, `{"input":`+input+`,"s3Config":`+s3+`}`, 60000)
		require.Equal(t, http.StatusOK, r.Code, "%s", r)
		return fields(t, r.Body)
	}
	fetch := func(u string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		code, body, err := s3test.Get(ctx, u)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, code, "GET %s: %s", u, body)
		return body
	}

	// An image, uploaded by the worker, fetched through its presigned URL.
	m := runsync(`{"mode":"png","seed":7}`, s3cfg(s3srv.SecretKey))
	require.Equal(t, "COMPLETED", str(t, m, "status"), "%v", m)
	id := str(t, m, "id")
	var out struct {
		ImageURL string `json:"image_url"`
	}
	require.NoError(t, json.Unmarshal(m["output"], &out))
	require.Contains(t, out.ImageURL, "/outputs/spool/"+id+"/image.png?")
	mu.Lock()
	want := images[id]
	mu.Unlock()
	got := fetch(out.ImageURL)
	require.Equal(t, want, got, "the bytes the worker made")
	_, format, err := image.DecodeConfig(bytes.NewReader(got))
	require.NoError(t, err)
	require.Equal(t, "png", format)

	// A result over the endpoint's outputOffloadBytes goes to the bucket; the client gets its URL.
	m = runsync(`{"mode":"big"}`, s3cfg(s3srv.SecretKey))
	require.Equal(t, "COMPLETED", str(t, m, "status"), "%v", m)
	var off s3upload.OffloadedOutput
	require.NoError(t, json.Unmarshal(m["output"], &off))
	require.NotEmpty(t, off.OutputURL, "%s", m["output"])
	require.Equal(t, "application/json", off.ContentType)
	body := fetch(off.OutputURL)
	require.Equal(t, int64(len(body)), off.OutputBytes)
	require.JSONEq(t, `{"text":"`+strings.Repeat("spool ", 2000)+`"}`, string(body))
	// Under the threshold, or without an s3Config, the output is posted as usual.
	m = runsync(`{"mode":"small"}`, s3cfg(s3srv.SecretKey))
	require.JSONEq(t, `{"text":"short"}`, string(m["output"]))
	r := c.RunSync(t, `{"input":{"mode":"big"}}`, 60000)
	require.Equal(t, http.StatusOK, r.Code)
	require.Contains(t, string(fields(t, r.Body)["output"]), strings.Repeat("spool ", 100))

	// A wrong secret: the job fails, saying what S3 said, showing no secret.
	m = runsync(`{"mode":"png","seed":1}`, s3cfg("wrong-secret-canary-51f0"))
	require.Equal(t, "FAILED", str(t, m, "status"), "%v", m)
	msg := str(t, m, "error")
	require.Contains(t, msg, "upload image.png to the job's bucket")
	require.Contains(t, msg, "SignatureDoesNotMatch")
	require.Contains(t, msg, "403")
	for _, secret := range []string{"wrong-secret-canary-51f0", s3srv.SecretKey, s3srv.AccessKey} {
		require.NotContains(t, msg, secret)
	}
	t.Logf("a wrong secret fails the job with: %s", msg)
	require.Contains(t, fmt.Sprint(srv.stderr.String()), "spool listening")
}
