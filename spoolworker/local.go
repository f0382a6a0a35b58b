package spoolworker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
)

// LocalJobID is the id of the job local test mode runs when the test input names none.
const LocalJobID = "local_test"

// RunLocal is runpod-python's local test mode (--test_input): it runs h once on testInput, a
// job object such as {"input": {...}} (optionally with "id", "s3Config", "policy"), with no
// server, and prints the result to out as the one line of JSON a worker would post to job-done:
// {"output": ...} or {"error": ...}. Streamed chunks are not printed one by one: the output of an
// iterator is the list of its chunks, as with Config.AggregateStream. It returns an error when
// the job fails (the runpod-python worker exits 1 then) or the test input is unusable.
func RunLocal(ctx context.Context, h Handler, testInput json.RawMessage, out io.Writer) error {
	return runLocal(ctx, h, testInput, out, Config{})
}

func runLocal(ctx context.Context, h Handler, testInput json.RawMessage, out io.Writer, cfg Config) error {
	workerID := cfg.WorkerID
	if workerID == "" {
		workerID = "unknown"
	}
	cfg = cfg.withDefaults()
	job, err := parseJob(testInput, LocalJobID)
	if job == nil {
		return fmt.Errorf("spoolworker: test input: %w", err)
	}
	if err != nil || string(job.Input) == "null" {
		return errors.New(`spoolworker: test input has no "input"; want a job object such as {"input": {...}}`)
	}
	job.getenv = cfg.Getenv
	ctx, cancel, stop := jobContext(ctx, job, true)
	defer stop()
	defer cancel(nil)
	log := cfg.Logger.With("job", job.ID)
	run := &jobRun{job: job, ctx: ctx, cancel: cancel, out: localPoster{log: log}, keep: true}
	job.run = run
	res := invoke(h, run, identity{hostname: cfg.Hostname, workerID: workerID})
	run.ended.Store(true)
	if cause := context.Cause(ctx); cause != nil {
		return fmt.Errorf("spoolworker: job %s: %w", job.ID, cause)
	}
	if _, err := fmt.Fprintf(out, "%s\n", res.body()); err != nil {
		return fmt.Errorf("spoolworker: print the result: %w", err)
	}
	if res.err != nil {
		return fmt.Errorf("spoolworker: job %s failed: %s", job.ID, *res.err)
	}
	return nil
}

// localPoster stands in for the server in local test mode: chunks are kept for the output, and
// progress is only logged.
type localPoster struct{ log *slog.Logger }

func (p localPoster) post(_ context.Context, _ *Job, kind string, body []byte, _ bool) error {
	p.log.Debug("local test mode: "+kind, "bytes", len(body))
	return nil
}

// TestInputFile is the file local test mode reads when there is no --test_input and no
// RUNPOD_WEBHOOK_GET_JOB, as runpod-python does.
const TestInputFile = "test_input.json"

// Start is a worker's whole main, chosen as runpod-python's serverless.start chooses:
//   - with "--test_input <json>" (or "--test_input=<json>") in args, it runs the handler once on
//     that test input and prints the result (RunLocal);
//   - else, without RUNPOD_WEBHOOK_GET_JOB in the environment, it does the same with the file
//     test_input.json in the working directory, and fails if there is none;
//   - else it runs a worker (New, Run) until ctx ends.
//
// getenv is the environment (os.Getenv). base carries the settings the environment does not
// (Concurrency, AggregateStream, RefreshWorker, Logger, LocalOutput, ...); the fields
// ConfigFromEnv sets are taken from the environment. Other arguments are ignored. Start
// installs no signal handlers: pass a ctx from signal.NotifyContext.
func Start(ctx context.Context, h Handler, args []string, getenv func(string) string, base Config) error {
	out := base.LocalOutput
	if out == nil {
		out = os.Stdout
	}
	input, ok, err := testInputArg(args)
	if err != nil {
		return err
	}
	if base.Getenv == nil {
		base.Getenv = getenv
	}
	if ok {
		return runLocal(ctx, h, json.RawMessage(input), out, base)
	}
	env, err := ConfigFromEnv(getenv)
	if err != nil {
		return err
	}
	if env.TakeURL == "" {
		b, err := os.ReadFile(TestInputFile)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("spoolworker: %s is not set and there is no --test_input and no %s: nothing to run", EnvTakeURL, TestInputFile)
		}
		if err != nil {
			return fmt.Errorf("spoolworker: %w", err)
		}
		return runLocal(ctx, h, b, out, base)
	}
	cfg := base
	if cfg.Getenv == nil {
		cfg.Getenv = getenv
	}
	cfg.TakeURL, cfg.DoneURL, cfg.StreamURL, cfg.PingURL = env.TakeURL, env.DoneURL, env.StreamURL, env.PingURL
	cfg.PingInterval, cfg.WorkerID, cfg.APIKey, cfg.Hostname = env.PingInterval, env.WorkerID, env.APIKey, env.Hostname
	w, err := New(cfg, h)
	if err != nil {
		return err
	}
	return w.Run(ctx)
}

// testInputArg finds --test_input in args.
func testInputArg(args []string) (string, bool, error) {
	for i, a := range args {
		switch {
		case a == "--test_input":
			if i+1 >= len(args) {
				return "", false, errors.New("spoolworker: --test_input needs a JSON value")
			}
			return args[i+1], true, nil
		case strings.HasPrefix(a, "--test_input="):
			return strings.TrimPrefix(a, "--test_input="), true, nil
		}
	}
	return "", false, nil
}
