// Command client is a runnable example of spoolclient, the Go client SDK: it submits a job, prints
// the job's streamed output as it arrives, then prints the result.
//
// With a server running (for example `go run ./cmd/spool dev`, whose "stream" endpoint yields
// chunks), from the repository root:
//
//	export SPOOL_URL=http://127.0.0.1:8080 SPOOL_API_KEY=<a client or admin key>
//	go run ./examples/client                                   # endpoint "stream", input {"text":"hello from spoolclient"}
//	go run ./examples/client -endpoint echo '{"prompt":"hi"}'
//
// It works against RunPod too: SPOOL_URL=https://api.runpod.ai/v2 and SPOOL_API_KEY=<RunPod key>,
// with -endpoint naming a RunPod endpoint id. The exit status is 0 when the job COMPLETED.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spool-run/spool/spoolclient"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, out io.Writer) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	endpoint := fs.String("endpoint", "stream", "endpoint to submit the job to")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long (the job goes on)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	input := json.RawMessage(`{"text":"hello from spoolclient"}`)
	if fs.NArg() > 0 {
		input = json.RawMessage(fs.Arg(0))
	}
	base := getenv("SPOOL_URL")
	if base == "" {
		base = "http://127.0.0.1:8080"
	}
	key := getenv("SPOOL_API_KEY")
	if key == "" {
		return errors.New("set SPOOL_API_KEY to a client or admin key")
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	ep := spoolclient.New(base, key).Endpoint(*endpoint)

	// 1. Submit. Run returns at once with the job's id.
	job, err := ep.Run(ctx, spoolclient.Request{Input: input})
	if err != nil {
		return err // e.g. errors.Is(err, spoolclient.ErrNotFound) for an unknown endpoint
	}
	fmt.Fprintf(out, "submitted job %s to %s\n", job.ID, *endpoint)

	// 2. Print the streamed output as it arrives. The loop ends when the job has ended; a job that
	// failed, was cancelled or timed out ends it with a *spoolclient.JobError.
	for chunk, err := range ep.Stream(ctx, job.ID) {
		var je *spoolclient.JobError
		if errors.As(err, &je) {
			break // reported below, with the job's final status
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "chunk: %s\n", chunk.Output)
	}

	// 3. The result.
	job, err = ep.Status(ctx, job.ID)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s in %s (queued %s)\n", job.Status, job.ExecutionTime, job.DelayTime)
	if err := job.Err(); err != nil {
		return err
	}
	fmt.Fprintf(out, "output: %s\n", job.Output)
	return nil
}
