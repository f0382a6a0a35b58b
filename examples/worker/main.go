// Command worker is a Spool worker written with the Go worker SDK (spoolworker). Its handler
// splits a text into words and streams them back one by one, reporting its progress as it goes;
// the final output is the list of words. It honours cancellation and timeouts through ctx.
//
// The same binary runs on RunPod and under Spool: it reads the RunPod worker environment. To run
// it against a local `spool serve`:
//
//	SPOOL_ADMIN_KEY=dev-admin-key go run ./cmd/spool serve       # in one shell
//
//	export SPOOL=http://127.0.0.1:8080 KEY=dev-admin-key          # in another
//	curl -s -X POST $SPOOL/api/endpoints -H "Authorization: Bearer $KEY" -d '{"name":"words"}'
//	RUNPOD_WEBHOOK_GET_JOB="$SPOOL/v2/words/job-take/\$ID?" \
//	RUNPOD_WEBHOOK_POST_OUTPUT="$SPOOL/v2/words/job-done/\$RUNPOD_POD_ID/\$ID?" \
//	RUNPOD_WEBHOOK_POST_STREAM="$SPOOL/v2/words/job-stream/\$RUNPOD_POD_ID/\$ID?" \
//	RUNPOD_WEBHOOK_PING="$SPOOL/v2/words/ping/\$RUNPOD_POD_ID?" \
//	RUNPOD_PING_INTERVAL=10000 RUNPOD_POD_ID=worker-1 RUNPOD_AI_API_KEY=$KEY \
//	go run ./examples/worker
//
//	# and in a third shell, a job, its stream and its result:
//	JOB=$(curl -s -X POST $SPOOL/v2/words/run -H "Authorization: Bearer $KEY" \
//	  -d '{"input":{"text":"the quick brown fox","delayMs":300}}' | sed 's/.*"id":"\([^"]*\)".*/\1/')
//	curl -s "$SPOOL/v2/words/stream/$JOB?wait=5000" -H "Authorization: Bearer $KEY"
//	curl -s $SPOOL/v2/words/status/$JOB -H "Authorization: Bearer $KEY"
//
// The quotes keep $ID and $RUNPOD_POD_ID literal: the SDK fills them in, as runpod-python does.
// RUNPOD_AI_API_KEY may be the admin key, as here, or a worker key (POST /api/keys with
// {"name":"w","scope":"worker","endpoints":["words"]}). Ctrl-C (SIGINT) or SIGTERM stops taking
// jobs, lets the running one finish and post its result, then exits.
//
// Without RUNPOD_WEBHOOK_GET_JOB it runs once locally, like runpod-python's --test_input:
//
//	go run ./examples/worker --test_input '{"input":{"text":"hello spool"}}'
package main

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spool-run/spool/spoolworker"
)

// input is what a job asks for.
type input struct {
	Text string `json:"text"`
	// DelayMs is a pause before each word, to make streaming visible.
	DelayMs int `json:"delayMs"`
}

// handle streams the words of the input text.
func handle(ctx context.Context, job *spoolworker.Job) (any, error) {
	in, err := spoolworker.DecodeInput[input](job)
	if err != nil {
		return nil, err
	}
	words := strings.Fields(in.Text)
	if len(words) == 0 {
		return nil, errors.New(`input.text must hold at least one word`)
	}
	delay := time.Duration(in.DelayMs) * time.Millisecond
	return iter.Seq2[string, error](func(yield func(string, error) bool) {
		for i, w := range words {
			if delay > 0 {
				t := time.NewTimer(delay)
				select {
				case <-ctx.Done(): // cancelled or timed out: the SDK posts nothing more
					t.Stop()
					return
				case <-t.C:
				}
			}
			if !yield(w, nil) {
				return
			}
			_ = job.Progress(map[string]int{"done": i + 1, "total": len(words)})
		}
	}), nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// AggregateStream: the final output is the list of every chunk (runpod-python's
	// return_aggregate_stream), so /status shows all the words once the job is done.
	cfg := spoolworker.Config{AggregateStream: true}
	if err := spoolworker.Start(ctx, spoolworker.HandlerFunc(handle), os.Args[1:], os.Getenv, cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
