package spoolworker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spool-run/spool/spoolworker"
)

// A handler is a function of the job; its return value becomes the job's output.
func ExampleHandlerFunc() {
	h := spoolworker.HandlerFunc(func(ctx context.Context, job *spoolworker.Job) (any, error) {
		var in struct {
			Name string `json:"name"`
		}
		if err := job.Decode(&in); err != nil {
			return nil, err
		}
		if in.Name == "" {
			return nil, errors.New("name is required") // the job ends FAILED with this message
		}
		return map[string]string{"greeting": "hello " + in.Name}, nil
	})
	_ = spoolworker.RunLocal(context.Background(), h, json.RawMessage(`{"input":{"name":"Ada"}}`), os.Stdout)
	_ = spoolworker.RunLocal(context.Background(), h, json.RawMessage(`{"input":{}}`), os.Stdout)
	// Output:
	// {"output":{"greeting":"hello Ada"}}
	// {"error":"name is required"}
}

// RunLocal is runpod-python's --test_input: it runs the handler once, with no server.
func ExampleRunLocal() {
	h := spoolworker.HandlerFunc(func(ctx context.Context, job *spoolworker.Job) (any, error) {
		return job.ID, nil
	})
	err := spoolworker.RunLocal(context.Background(), h, json.RawMessage(`{"input":{"n":1}}`), os.Stdout)
	fmt.Println(err)
	// Output:
	// {"output":"local_test"}
	// <nil>
}

// DecodeInput decodes the input as a type.
func ExampleDecodeInput() {
	type input struct {
		Numbers []int `json:"numbers"`
	}
	h := spoolworker.HandlerFunc(func(ctx context.Context, job *spoolworker.Job) (any, error) {
		in, err := spoolworker.DecodeInput[input](job)
		if err != nil {
			return nil, err
		}
		sum := 0
		for _, n := range in.Numbers {
			sum += n
		}
		return sum, nil
	})
	_ = spoolworker.RunLocal(context.Background(), h, json.RawMessage(`{"input":{"numbers":[1,2,3]}}`), os.Stdout)
	// Output: {"output":6}
}

// A handler that returns an iterator streams its values; Progress reports how far it got.
func ExampleHandler_streaming() {
	h := spoolworker.HandlerFunc(func(ctx context.Context, job *spoolworker.Job) (any, error) {
		words := strings.Fields("to be or not")
		return iter.Seq2[string, error](func(yield func(string, error) bool) {
			for i, w := range words {
				if err := ctx.Err(); err != nil {
					return // stopped: nothing more is posted
				}
				if !yield(strings.ToUpper(w), nil) {
					return
				}
				_ = job.Progress(map[string]int{"done": i + 1, "total": len(words)})
			}
		}), nil
	})
	// Local test mode prints every chunk as the output, as Config.AggregateStream does.
	_ = spoolworker.RunLocal(context.Background(), h, json.RawMessage(`{"input":{}}`), os.Stdout)
	// Output: {"output":["TO","BE","OR","NOT"]}
}

// A Result asks for more than an output: here, a restart of the worker after the job.
func ExampleResult() {
	h := spoolworker.HandlerFunc(func(ctx context.Context, job *spoolworker.Job) (any, error) {
		return spoolworker.Result{Output: "done", RefreshWorker: true}, nil
	})
	_ = spoolworker.RunLocal(context.Background(), h, json.RawMessage(`{"input":{}}`), os.Stdout)
	// Output: {"output":"done","stopPod":true}
}

// New and Run build a worker without the environment, here for a Spool server's endpoint "echo".
// A main runs it until SIGINT or SIGTERM; Run then drains the running jobs and returns.
func ExampleNew() {
	cfg := spoolworker.ConfigFor("http://127.0.0.1:8080", "echo", os.Getenv("SPOOL_WORKER_KEY"))
	cfg.Concurrency = 4
	w, err := spoolworker.New(cfg, spoolworker.HandlerFunc(func(ctx context.Context, job *spoolworker.Job) (any, error) {
		return job.Input, nil
	}))
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := w.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
