package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/auth"
	"github.com/spool-run/spool/spoolworker"
)

func newDevCmd(getenv func(string) string) *cobra.Command {
	var addr, data string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run Spool with demo endpoints and in-process workers: the quickest way to try it",
		Long: `Run Spool on its embedded store with four demo endpoints, each served by workers built
with the spoolworker SDK inside the same process:

  echo    returns its input
  sleep   sleeps {"seconds": n} (default 5, at most 60), reporting progress; honours cancellation
  stream  streams the words of {"text": "..."} one chunk at a time
  fail    fails with {"message": "..."} (or a default message)

It prints the URL, an API key and commands to try. It keeps its data in ./spool-dev-data (not
spool serve's ./spool-data) unless --data says otherwise, and takes the same --addr and
SPOOL_ADMIN_KEY as spool serve. Ctrl-C stops it cleanly.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// dev reads no config file, and runs on the embedded store whatever SPOOL_STORE says:
			// it is the same demo for everybody, and never touches a shared database.
			cfg, err := loadConfig("", func(k string) string {
				if k == "SPOOL_CONFIG" || k == "SPOOL_STORE" || k == "SPOOL_DATA" {
					return ""
				}
				return getenv(k)
			})
			if err != nil {
				return err
			}
			cfg.Path = ""
			if cmd.Flags().Changed("addr") {
				cfg.Addr = addr
			}
			// Its own directory, not spool serve's: the demo's endpoints and keys must not turn
			// up in (or clash with) a real server's data.
			cfg.Data = data
			return runDev(cmd.Context(), cfg, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "addr", "127.0.0.1:8080", "listen address")
	f.StringVar(&data, "data", devDataDir, "data directory (spool serve's is ./spool-data)")
	return cmd
}

// devDataDir is where spool dev keeps its data unless --data says otherwise.
const devDataDir = "./spool-dev-data"

// devKeyName names the keys spool dev makes. Each start replaces them, so that it can always
// print a working key although only hashes are stored.
const (
	devClientKeyName = "spool dev"
	devWorkerKeyName = "spool dev workers"
)

// devEndpoints are the demo endpoints with their handlers.
func devEndpoints() []struct {
	name    string
	handler spoolworker.Handler
} {
	return []struct {
		name    string
		handler spoolworker.Handler
	}{
		{"echo", spoolworker.HandlerFunc(devEcho)},
		{"sleep", spoolworker.HandlerFunc(devSleep)},
		{"stream", spoolworker.HandlerFunc(devStream)},
		{"fail", spoolworker.HandlerFunc(devFail)},
	}
}

func runDev(ctx context.Context, cfg *config, stdout, stderr io.Writer) error {
	// Demo jobs are short: keep the sleep endpoint's timeout short too, and a newcomer's shell
	// waits at most this long for a job nobody will run.
	for _, d := range devEndpoints() {
		ep := spool.NewEndpoint(d.name)
		ep.ExecutionTimeoutMs = 120000
		ep.Source = "dev"
		cfg.Endpoints = append(cfg.Endpoints, ep)
	}
	// A developer's webhook receiver is on this machine.
	cfg.WebhookAllowLoopback = true
	srv, err := openServer(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	clientKey, workerKey, err := devKeys(ctx, srv.keys, cfg.AdminKey != "")
	if err != nil {
		srv.abort()
		return err
	}

	// The workers talk to the server over HTTP, exactly as workers elsewhere do.
	workCtx, stopWorkers := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	for _, d := range devEndpoints() {
		wcfg := spoolworker.ConfigFor(srv.URL(), d.name, workerKey)
		wcfg.WorkerID = "dev-" + d.name
		wcfg.Concurrency = 4
		wcfg.Logger = srv.log
		w, err := spoolworker.New(wcfg, d.handler)
		if err != nil {
			stopWorkers()
			srv.abort()
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.Run(workCtx); err != nil && !errors.Is(err, context.Canceled) {
				srv.log.Error("dev worker stopped", "worker", wcfg.WorkerID, "err", err)
			}
		}()
	}

	printDevBanner(stdout, srv.URL(), cfg.Data, clientKey)
	return srv.run(ctx, func() {
		// Stop the workers first: they finish their running jobs and post the results while
		// the server still takes them, for at most the shutdown grace.
		stopWorkers()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(cfg.ShutdownGrace):
			srv.log.Warn("dev workers still busy after the grace period; stopping anyway")
		}
	})
}

// devKeys replaces the keys of earlier dev runs with fresh ones and returns their secrets. With
// SPOOL_ADMIN_KEY set, the client key is that one (its secret is the user's; it is not printed).
func devKeys(ctx context.Context, keys *auth.Keyring, haveAdmin bool) (client, worker string, err error) {
	old, err := keys.List(ctx)
	if err != nil {
		return "", "", err
	}
	// Make the new keys before deleting the old ones: the last admin key cannot be deleted.
	if worker, _, err = keys.Create(ctx, spool.Key{Name: devWorkerKeyName, Scope: spool.ScopeWorker}); err != nil {
		return "", "", err
	}
	if !haveAdmin {
		if client, _, err = keys.Create(ctx, spool.Key{Name: devClientKeyName, Scope: spool.ScopeAdmin}); err != nil {
			return "", "", err
		}
	}
	for _, k := range old {
		if k.Source == auth.SourceAPI && (k.Name == devClientKeyName || k.Name == devWorkerKeyName) {
			if err := keys.Delete(ctx, k.ID); err != nil {
				return "", "", fmt.Errorf("replace dev key: %w", err)
			}
		}
	}
	return client, worker, nil
}

func printDevBanner(out io.Writer, url, data, key string) {
	shownKey, keyNote := key, "an admin key made for this run; it replaces the one of the last run"
	if key == "" {
		shownKey, keyNote = "$SPOOL_ADMIN_KEY", "the admin key you set in SPOOL_ADMIN_KEY"
	}
	auth := fmt.Sprintf(`-H "Authorization: Bearer %s"`, shownKey)
	fmt.Fprintf(out, `
Spool dev is running at %[1]s (data in %[2]s)

  API key:   %[3]s
             (%[4]s)
  Dashboard: %[1]s/ (sign in with the API key)
  Endpoints: echo, sleep, stream, fail, each served by in-process workers

Try:

  curl -s -X POST %[1]s/v2/echo/runsync %[5]s -d '{"input":{"hello":"world"}}'

  curl -s -X POST %[1]s/v2/fail/runsync %[5]s -d '{"input":{"message":"boom"}}'

  curl -sN %[1]s/v2/stream/stream/$(curl -s -X POST %[1]s/v2/stream/run %[5]s -d '{"input":{"text":"hello from spool"}}' | cut -d'"' -f4) %[5]s -H "Accept: text/event-stream"

The worker protocol is at %[1]s/v2/{endpoint}/job-take/... ; Ctrl-C stops Spool.

`, url, data, shownKey, keyNote, auth)
}

// devInput decodes a demo job's input, which may be any JSON value: an object with the
// handler's fields, or anything else (then the defaults apply).
func devInput[T any](job *spoolworker.Job) T {
	v, _ := spoolworker.DecodeInput[T](job)
	return v
}

func devEcho(_ context.Context, job *spoolworker.Job) (any, error) {
	return job.Input, nil
}

func devSleep(ctx context.Context, job *spoolworker.Job) (any, error) {
	in := devInput[struct {
		Seconds float64 `json:"seconds"`
	}](job)
	d := time.Duration(in.Seconds * float64(time.Second))
	if in.Seconds <= 0 {
		d = 5 * time.Second
	}
	d = min(d, time.Minute)
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	end := time.NewTimer(d)
	defer end.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-end.C:
			return map[string]any{"slept": d.Seconds()}, nil
		case <-tick.C:
			elapsed := time.Since(start)
			_ = job.Progress(map[string]any{"elapsed": elapsed.Round(time.Second).Seconds(), "of": d.Seconds()})
		}
	}
}

func devStream(ctx context.Context, job *spoolworker.Job) (any, error) {
	in := devInput[struct {
		Text string `json:"text"`
	}](job)
	if in.Text == "" {
		in.Text = "the quick brown fox jumps over the lazy dog"
	}
	words := strings.Fields(in.Text)
	var seq iter.Seq2[any, error] = func(yield func(any, error) bool) {
		for i, w := range words {
			if i > 0 {
				// Slow enough to watch the chunks arrive one by one.
				select {
				case <-ctx.Done():
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
			if !yield(w, nil) {
				return
			}
		}
	}
	return seq, nil
}

func devFail(_ context.Context, job *spoolworker.Job) (any, error) {
	in := devInput[struct {
		Message string `json:"message"`
	}](job)
	if in.Message == "" {
		in.Message = "this job fails on purpose"
	}
	return nil, errors.New(in.Message)
}
