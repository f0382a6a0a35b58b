package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/spool-run/spool/spoolclient"
)

// Exit statuses of the client commands.
const (
	exitOK           = 0
	exitFailed       = 1   // the job ended FAILED, CANCELLED or TIMED_OUT, or a request failed
	exitUsage        = 2   // bad arguments, flags, input or settings
	exitStillRunning = 3   // --wait ran out before the job ended
	exitInterrupted  = 130 // SIGINT/SIGTERM while waiting
)

const clientHelpFooter = `
Server and key: --url and --key, else SPOOL_URL and SPOOL_API_KEY, else the client config file
($SPOOL_CLIENT_CONFIG, or ~/.config/spool/client.yaml, with "url:" and "key:"); the URL defaults
to ` + defaultClientURL + `. It may also name RunPod's API (https://api.runpod.ai/v2).

Jobs belong to an endpoint (/v2/ENDPOINT/status/JOB), so every command takes the ENDPOINT first.

Output is JSON on stdout, one value per line; errors are one line on stderr ("spool: ...").
Exit status: 0 success (for status: the job COMPLETED, or has not ended yet; for cancel: it is
cancelled); 1 the job ended FAILED, CANCELLED or TIMED_OUT (run, status, stream), or the server
refused the request; 2 bad arguments, input or settings; 3 (run --wait) the job was still running
when the wait ran out; 130 interrupted.`

// newClientCmds returns the client commands: run, status, stream, cancel, retry, purge, health.
func newClientCmds(getenv func(string) string) []*cobra.Command {
	c := &clientCmds{getenv: getenv}
	return []*cobra.Command{c.runCmd(), c.statusCmd(), c.streamCmd(), c.cancelCmd(), c.retryCmd(),
		c.purgeCmd(), c.healthCmd()}
}

type clientCmds struct {
	getenv func(string) string
}

// exitError ends a client command with an exit status and, unless msg is "", one line on stderr.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &exitError{code: exitUsage, msg: fmt.Sprintf(format, args...)}
}

// finish prints err as one line on stderr and exits with its status. Client commands exit here
// rather than return their errors, so that the status says what happened (see clientHelpFooter).
func finish(cmd *cobra.Command, err error) {
	code, msg := exitFailed, ""
	var ee *exitError
	var ae *spoolclient.APIError
	switch {
	case errors.As(err, &ee):
		code, msg = ee.code, ee.msg
	case errors.As(err, &ae):
		msg = fmt.Sprintf("%s (HTTP %d", ae.Message, ae.StatusCode)
		if ae.RetryAfter > 0 {
			msg += ", retry after " + ae.RetryAfter.String()
		}
		msg += ")"
	default:
		msg = strings.TrimPrefix(err.Error(), "spoolclient: ")
	}
	if msg != "" {
		fmt.Fprintln(cmd.ErrOrStderr(), "spool: "+oneLine(msg))
	}
	os.Exit(code)
}

// oneLine keeps an error message to one line (a worker's error may carry a stack trace).
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = strings.TrimSpace(s[:i]) + " …"
	}
	if r := []rune(s); len(r) > 500 {
		s = string(r[:500]) + " …"
	}
	return s
}

// clientFlags are the connection flags every client command has.
type clientFlags struct {
	url, key string
}

// setup makes a cobra command a client command: connection flags, usage errors that exit 2 with one
// line, and errors handled by finish.
func (c *clientCmds) setup(cmd *cobra.Command, args cobra.PositionalArgs, run func(cmd *cobra.Command, args []string, ep *spoolclient.Endpoint) error) *cobra.Command {
	var f clientFlags
	cmd.Flags().StringVar(&f.url, "url", "", "server URL (default $SPOOL_URL, the config file, or "+defaultClientURL+")")
	cmd.Flags().StringVar(&f.key, "key", "", "API key (default $SPOOL_API_KEY or the config file)")
	cmd.Long = strings.TrimSpace(cmd.Long) + "\n" + clientHelpFooter
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	cmd.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		finish(cmd, usageErrorf("%v (see %s --help)", err, cmd.CommandPath()))
		return err
	})
	cmd.Args = func(cmd *cobra.Command, a []string) error {
		if err := args(cmd, a); err != nil {
			finish(cmd, usageErrorf("%v; usage: %s", err, cmd.UseLine()))
		}
		return nil
	}
	connect := func(cmd *cobra.Command) (*spoolclient.Client, error) {
		var flagURL, flagKey *string
		if cmd.Flags().Changed("url") {
			flagURL = &f.url
		}
		if cmd.Flags().Changed("key") {
			flagKey = &f.key
		}
		t, err := resolveTarget(c.getenv, flagURL, flagKey)
		if err != nil {
			return nil, err
		}
		return spoolclient.New(t.URL, t.Key, spoolclient.WithUserAgent("spool-cli")), nil
	}
	// The ENDPOINT argument completes from the server's endpoints, when it answers within a
	// moment to this key (listing them needs an admin key); else nothing is offered.
	cmd.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		client, err := connect(cmd)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return endpointCompletions(cmd.Context(), client, toComplete)
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		client, err := connect(cmd)
		if err != nil {
			finish(cmd, err)
		}
		if err := run(cmd, args, client.Endpoint(args[0])); err != nil {
			var ee *exitError
			if !errors.As(err, &ee) && cmd.Context().Err() != nil {
				err = &exitError{exitInterrupted, "interrupted"}
			}
			finish(cmd, err)
		}
		return nil
	}
	return cmd
}

// printJSON writes v as one line of JSON (no HTML escaping).
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func (c *clientCmds) runCmd() *cobra.Command {
	var (
		sync, lowPriority bool
		wait, execTimeout msDuration
		ttl               msDuration
		webhook           string
		statusLine        string
	)
	cmd := &cobra.Command{
		Use:   "run ENDPOINT [INPUT_JSON | @FILE | -]",
		Short: "Submit a job to an endpoint, and optionally wait for its result",
		Long: `Submit a job. The input (the value the worker gets as job["input"]) is JSON text, @FILE to
read it from a file, or - to read it from stdin; without one it is {}.

Without --sync or --wait, run prints {"id","status"} and returns at once. With --sync it submits
through /runsync and waits until the job ends; --wait bounds how long it waits (and implies
waiting). It then prints the job: {"id","status","delayTime","executionTime","output"|"error",...}.
When stdout and stderr are terminals, a status line on stderr shows the state, the queue delay,
the time elapsed and the latest progress value while it waits (--status-line).

Durations are Go durations (30s, 2m) or milliseconds (5000).`,
		Example: `  spool run echo '{"prompt":"hello"}' --sync
  spool run echo @input.json --wait 2m --ttl 10m
  echo '{"n":3}' | spool run echo - --sync --low-priority | jq .output`,
	}
	f := cmd.Flags()
	f.BoolVar(&sync, "sync", false, "submit with /runsync and wait until the job ends")
	f.Var(&wait, "wait", "wait at most this long for the result (implies waiting; exit status 3 if the job is still running)")
	f.StringVar(&webhook, "webhook", "", "URL the server POSTs the job to when it ends")
	f.BoolVar(&lowPriority, "low-priority", false, "run only when no normal job of the endpoint is waiting")
	f.Var(&execTimeout, "execution-timeout", "policy.executionTimeout: the longest the job may run once taken (more than 5s)")
	f.Var(&ttl, "ttl", "policy.ttl: the longest the job may wait in the queue (at least 10s)")
	f.StringVar(&statusLine, "status-line", "auto", "live status line on stderr while waiting: auto (when stdout and stderr are terminals), always or never")
	return c.setup(cmd, cobra.RangeArgs(1, 2), func(cmd *cobra.Command, args []string, ep *spoolclient.Endpoint) error {
		arg, hasArg := "", len(args) == 2
		if hasArg {
			arg = args[1]
		}
		input, err := readInput(arg, hasArg, cmd.InOrStdin())
		if err != nil {
			return err
		}
		var live bool
		switch statusLine {
		case "auto":
			live = isTerminal(cmd.OutOrStdout()) && isTerminal(cmd.ErrOrStderr())
		case "always":
			live = true
		case "never":
		default:
			return usageErrorf("--status-line must be auto, always or never, not %q", statusLine)
		}
		req := spoolclient.Request{Input: input, Webhook: webhook}
		if execTimeout.set || ttl.set || lowPriority {
			req.Policy = &spoolclient.Policy{ExecutionTimeout: execTimeout.d, TTL: ttl.d, LowPriority: lowPriority}
		}
		r := runner{ep: ep, stdout: cmd.OutOrStdout(), stderr: cmd.ErrOrStderr(), sync: sync, wait: wait}
		if live {
			r.live = newLiveLine(cmd.ErrOrStderr(), terminalWidth(cmd.ErrOrStderr()))
		}
		return r.run(cmd.Context(), req)
	})
}

// runner carries out `spool run`.
type runner struct {
	ep             *spoolclient.Endpoint
	stdout, stderr io.Writer
	sync           bool
	wait           msDuration
	live           *liveLine // nil without a status line
	noQueueInfo    bool      // the server will not say why a job waits (not Spool, or not an admin key)
}

// showWait puts why a queued job waits on the status line, when the server says (Spool's admin
// API: an admin key). A refusal stops the asking; any other failure only skips this once.
func (r *runner) showWait(ctx context.Context, j *spoolclient.Job) {
	if r.live == nil || r.noQueueInfo || j.Status != spoolclient.StatusInQueue {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := r.ep.QueueInfo(ctx, j.ID)
	var apiErr *spoolclient.APIError
	switch {
	case errors.As(err, &apiErr) && apiErr.StatusCode < 500 && apiErr.StatusCode != http.StatusTooManyRequests:
		r.noQueueInfo = true
	case err == nil:
		r.live.setWait(info)
	}
}

func (r *runner) run(ctx context.Context, req spoolclient.Request) error {
	if !r.sync && !r.wait.set {
		j, err := r.ep.Run(ctx, req)
		if err != nil {
			return err
		}
		return printJSON(r.stdout, j)
	}
	// The wait bounds only the waiting: a request that would lose the job's id (the submission)
	// runs on ctx, so it may outlast the wait a little.
	wctx := ctx
	var deadline time.Time
	if r.wait.set {
		deadline = time.Now().Add(r.wait.d)
		var cancel context.CancelFunc
		wctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	// Each long-poll waits at most perCall: one second with a status line, so that it can show
	// progress (which does not end a /status-sync), else the servers' 90 s default.
	perCall := spoolclient.DefaultWait
	if r.live != nil {
		perCall = time.Second
		r.live.start()
		defer r.live.stop()
	}
	callWait := func() (time.Duration, bool) {
		if deadline.IsZero() {
			return perCall, true
		}
		rem := time.Until(deadline)
		return min(perCall, rem), rem > 0
	}

	var j *spoolclient.Job
	var err error
	if r.sync {
		w, _ := callWait()
		j, err = r.ep.RunSyncOnce(ctx, req, max(w, time.Millisecond)) // the server waits at least 1 s
	} else {
		j, err = r.ep.Run(ctx, req)
	}
	if err != nil {
		return err
	}
	r.live.update(j)
	r.showWait(wctx, j)
	for !j.Terminal() {
		w, ok := callWait()
		if !ok {
			break
		}
		next, err := r.ep.StatusSync(wctx, j.ID, w)
		if err != nil {
			if wctx.Err() != nil && ctx.Err() == nil {
				break // the wait ran out during the request
			}
			if ctx.Err() != nil {
				r.live.stop()
				return &exitError{exitInterrupted, fmt.Sprintf("interrupted; job %s goes on (spool status %s %s)", j.ID, r.ep.Name(), j.ID)}
			}
			return err
		}
		j = next
		r.live.update(j)
		r.showWait(wctx, j)
	}
	if !j.Terminal() {
		// --wait ran out: report the job as it is now.
		if now, err := r.ep.Status(ctx, j.ID); err == nil {
			j = now
		}
	}
	r.live.stop()
	if err := printJSON(r.stdout, j); err != nil {
		return err
	}
	if !j.Terminal() {
		return &exitError{exitStillRunning, fmt.Sprintf("job %s is still %s after --wait %s; it goes on (spool status %s %s)",
			j.ID, j.Status, r.wait.d, r.ep.Name(), j.ID)}
	}
	if err := j.Err(); err != nil {
		return &exitError{exitFailed, err.Error()}
	}
	return nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

func (c *clientCmds) statusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status ENDPOINT JOB",
		Short: "Print a job's status and result",
		Long: `Print a job as /status returns it: {"id","status","delayTime","executionTime","output"|"error",...}.
The exit status is 1 when the job ended FAILED, CANCELLED or TIMED_OUT, so that scripts can test it.`,
	}
	return c.setup(cmd, cobra.ExactArgs(2), func(cmd *cobra.Command, args []string, ep *spoolclient.Endpoint) error {
		j, err := ep.Status(cmd.Context(), args[1])
		if err != nil {
			return err
		}
		if err := printJSON(cmd.OutOrStdout(), j); err != nil {
			return err
		}
		if err := j.Err(); err != nil {
			return &exitError{exitFailed, err.Error()}
		}
		return nil
	})
}

func (c *clientCmds) streamCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stream ENDPOINT JOB",
		Short: "Print a job's streamed output as it arrives, one JSON value per line",
		Long: `Print each chunk the job's worker streams, as it arrives, one JSON value per line, until the job
ends. Chunks are handed out once (/stream drains them), so run one reader per job. The exit status
is 0 when the job COMPLETED and 1 when it ended otherwise.`,
	}
	return c.setup(cmd, cobra.ExactArgs(2), func(cmd *cobra.Command, args []string, ep *spoolclient.Endpoint) error {
		out := cmd.OutOrStdout()
		var line bytes.Buffer
		for chunk, err := range ep.Stream(cmd.Context(), args[1]) {
			if err != nil {
				if cmd.Context().Err() != nil {
					return &exitError{exitInterrupted, "interrupted"}
				}
				var je *spoolclient.JobError
				if errors.As(err, &je) {
					return &exitError{exitFailed, je.Error()}
				}
				return err
			}
			line.Reset()
			if json.Compact(&line, chunk.Output) != nil {
				line.Write(chunk.Output)
			}
			line.WriteByte('\n')
			if _, err := out.Write(line.Bytes()); err != nil {
				return err
			}
		}
		return nil
	})
}

func (c *clientCmds) cancelCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cancel ENDPOINT JOB",
		Short: "Cancel a job",
		Long:  `Cancel a queued or running job (its worker is told to stop) and print it. A job that has already ended is left as it is.`,
	}
	return c.setup(cmd, cobra.ExactArgs(2), func(cmd *cobra.Command, args []string, ep *spoolclient.Endpoint) error {
		j, err := ep.Cancel(cmd.Context(), args[1])
		if err != nil {
			return err
		}
		return printJSON(cmd.OutOrStdout(), j)
	})
}

func (c *clientCmds) retryCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "retry ENDPOINT JOB",
		Short: "Send a FAILED or TIMED_OUT job back to the queue",
		Long:  `Send a FAILED or TIMED_OUT job back to the queue, with the same id and input, and print {"id","status"}.`,
	}
	return c.setup(cmd, cobra.ExactArgs(2), func(cmd *cobra.Command, args []string, ep *spoolclient.Endpoint) error {
		j, err := ep.Retry(cmd.Context(), args[1])
		if err != nil {
			return err
		}
		return printJSON(cmd.OutOrStdout(), j)
	})
}

func (c *clientCmds) purgeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "purge ENDPOINT",
		Short: "Cancel every job waiting in an endpoint's queue",
		Long:  `Cancel every job still waiting in the endpoint's queue (running jobs go on) and print {"removed":N,"status":"completed"}.`,
	}
	return c.setup(cmd, cobra.ExactArgs(1), func(cmd *cobra.Command, args []string, ep *spoolclient.Endpoint) error {
		n, err := ep.PurgeQueue(cmd.Context())
		if err != nil {
			return err
		}
		return printJSON(cmd.OutOrStdout(), struct {
			Removed int    `json:"removed"`
			Status  string `json:"status"`
		}{n, "completed"})
	})
}

func (c *clientCmds) healthCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "health ENDPOINT",
		Short: "Print an endpoint's job and worker counts",
		Long:  `Print the endpoint's /health: {"jobs":{"completed","failed","inProgress","inQueue","retried"},"workers":{...}}.`,
	}
	return c.setup(cmd, cobra.ExactArgs(1), func(cmd *cobra.Command, args []string, ep *spoolclient.Endpoint) error {
		h, err := ep.Health(cmd.Context())
		if err != nil {
			return err
		}
		return printJSON(cmd.OutOrStdout(), h)
	})
}

var _ pflag.Value = (*msDuration)(nil)

// endpointCompletions offers the server's endpoint names that start with toComplete, when it
// answers within a moment (listing them needs an admin key); else nothing.
func endpointCompletions(ctx context.Context, client *spoolclient.Client, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	names, err := client.EndpointNames(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, n := range names {
		if strings.HasPrefix(n, toComplete) {
			out = append(out, n)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
