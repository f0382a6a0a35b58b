package spoolclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"sync/atomic"
	"time"

	"github.com/spool-run/spool/spoolclient"
)

// A whole round trip against a Spool server: submit, stream the output as it comes, then read the
// result. Run it with SPOOL_URL and SPOOL_API_KEY set, and a worker serving the endpoint.
func Example() {
	ctx := context.Background()
	c := spoolclient.New(os.Getenv("SPOOL_URL"), os.Getenv("SPOOL_API_KEY"))
	ep := c.Endpoint("stream")

	job, err := ep.Run(ctx, spoolclient.Request{Input: map[string]any{"text": "hello"}})
	if err != nil {
		log.Fatal(err)
	}
	for chunk, err := range ep.Stream(ctx, job.ID) {
		if err != nil {
			log.Fatal(err) // a *spoolclient.JobError if the job failed, was cancelled or timed out
		}
		fmt.Println("chunk:", string(chunk.Output))
	}
	job, err = ep.Status(ctx, job.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(job.Status, string(job.Output))
}

// Point the same code at RunPod: only the base URL and the key change.
func ExampleNew_runPod() {
	c := spoolclient.New("https://api.runpod.ai/v2", os.Getenv("RUNPOD_API_KEY"),
		spoolclient.WithUserAgent("my-app/1.0"),
		spoolclient.WithHTTPClient(&http.Client{Timeout: 5 * time.Minute}))
	fmt.Println(c.BaseURL())
	// Output: https://api.runpod.ai/v2
}

func ExampleEndpoint_Run() {
	ctx := context.Background()
	ep := spoolclient.New("http://127.0.0.1:8080/v2", os.Getenv("SPOOL_API_KEY")).Endpoint("echo")
	job, err := ep.Run(ctx, spoolclient.Request{
		Input:   map[string]any{"prompt": "hello"},
		Webhook: "https://example.com/spool-hook",
		Policy:  &spoolclient.Policy{ExecutionTimeout: 10 * time.Minute, TTL: time.Hour, LowPriority: true},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(job.ID, job.Status) // IN_QUEUE

	// Later: wait for it, with long-polls.
	job, err = ep.Wait(ctx, job.ID, 0)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(job.Status)
}

func ExampleEndpoint_RunSync() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ep := spoolclient.New("http://127.0.0.1:8080/v2", os.Getenv("SPOOL_API_KEY")).Endpoint("echo")

	// Each request waits up to 90 s (the default); the call as a whole until ctx's deadline.
	job, err := ep.RunSync(ctx, spoolclient.Request{Input: json.RawMessage(`{"prompt":"hello"}`)}, 0)
	if errors.Is(err, context.DeadlineExceeded) && job != nil {
		fmt.Println("still", job.Status, "- its id is", job.ID)
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	if err := job.Err(); err != nil { // FAILED, CANCELLED or TIMED_OUT
		log.Fatal(err)
	}
	var out struct {
		Echo string `json:"echo"`
	}
	if err := job.DecodeOutput(&out); err != nil {
		log.Fatal(err)
	}
	fmt.Println(out.Echo)
}

// Stream reads chunks as the worker posts them and ends when the job has ended and its stream is
// drained. The server here is a stand-in answering three /stream long-polls as Spool would.
func ExampleEndpoint_Stream() {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch calls.Add(1) {
		case 1:
			fmt.Fprint(w, `{"id":"j1","status":"IN_PROGRESS","stream":[{"output":"Hel"}]}`)
		case 2:
			fmt.Fprint(w, `{"id":"j1","status":"COMPLETED","stream":[{"output":"lo"},{"output":"!"}]}`)
		default:
			fmt.Fprint(w, `{"id":"j1","status":"COMPLETED","stream":[]}`)
		}
	}))
	defer srv.Close()

	ep := spoolclient.New(srv.URL, "key").Endpoint("stream")
	for chunk, err := range ep.Stream(context.Background(), "j1") {
		if err != nil {
			fmt.Println("error:", err)
			return
		}
		var s string
		if err := chunk.Decode(&s); err != nil {
			fmt.Println("error:", err)
			return
		}
		fmt.Print(s)
	}
	fmt.Println()
	// Output: Hello!
}

func ExampleEndpoint_Cancel() {
	ctx := context.Background()
	ep := spoolclient.New("http://127.0.0.1:8080/v2", os.Getenv("SPOOL_API_KEY")).Endpoint("sleep")
	job, err := ep.Cancel(ctx, "JOB_ID")
	if errors.Is(err, spoolclient.ErrNotFound) {
		fmt.Println("no such job (or its result has expired)")
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(job.Status) // CANCELLED, or the state it had already ended in
}

func ExampleEndpoint_PurgeQueue() {
	ep := spoolclient.New("http://127.0.0.1:8080/v2", os.Getenv("SPOOL_API_KEY")).Endpoint("echo")
	n, err := ep.PurgeQueue(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("removed", n, "queued jobs")
}

func ExampleEndpoint_Health() {
	ep := spoolclient.New("http://127.0.0.1:8080/v2", os.Getenv("SPOOL_API_KEY")).Endpoint("echo")
	h, err := ep.Health(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d queued, %d running, %d workers ready\n", h.Jobs.InQueue, h.Jobs.InProgress, h.Workers.Ready)
}

func ExampleJob_DecodeOutput() {
	var job spoolclient.Job
	body := `{"id":"abc","status":"COMPLETED","delayTime":1200,"executionTime":3400,"output":{"text":"hi","tokens":2},"workerId":"w1"}`
	if err := json.Unmarshal([]byte(body), &job); err != nil {
		log.Fatal(err)
	}
	var out struct {
		Text   string `json:"text"`
		Tokens int    `json:"tokens"`
	}
	if err := job.DecodeOutput(&out); err != nil {
		log.Fatal(err)
	}
	fmt.Println(job.Status, job.DelayTime, job.ExecutionTime, out.Text, out.Tokens)
	// Output: COMPLETED 1.2s 3.4s hi 2
}

// Errors the server answers with match sentinels; a 429 says when to come back. The server here
// is a stand-in answering as Spool does when an endpoint's queue is full.
func ExampleAPIError() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "5")
		w.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprint(w, `{"error":"queue of endpoint echo is full; retry later"}`)
	}))
	defer srv.Close()

	_, err := spoolclient.New(srv.URL, "key").Endpoint("echo").Run(context.Background(), spoolclient.Request{Input: 1})
	var apiErr *spoolclient.APIError
	if errors.Is(err, spoolclient.ErrRateLimited) && errors.As(err, &apiErr) {
		fmt.Println(apiErr.StatusCode, apiErr.Message, "- retry after", apiErr.RetryAfter)
	}
	// Output: 429 queue of endpoint echo is full; retry later - retry after 5s
}
