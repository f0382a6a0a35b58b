package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/httpapi"
	"github.com/spool-run/spool/spoolclient"
)

const adminHelpFooter = `
Server and key: --url and --key, else SPOOL_URL and SPOOL_API_KEY, else the client config file
($SPOOL_CLIENT_CONFIG, or ~/.config/spool/client.yaml, with "url:" and "key:"); the URL defaults
to ` + defaultClientURL + `. These commands call Spool's admin API (/api): they need an admin key.

Output (--output): on a terminal a table or a "field: value" listing (times in local time),
else (piped) the server's JSON answer on one line; -o json or -o text chooses. Errors are one
line on stderr ("spool: ..."). Exit status: 0 success; 1 the server refused the request or could
not be reached; 2 bad arguments, flags or settings; 130 interrupted.`

// newAdminCmds returns the admin commands: endpoints, keys, jobs and workers, each a group of
// subcommands over Spool's /api.
func newAdminCmds(getenv func(string) string) []*cobra.Command {
	a := &adminCmds{getenv: getenv}
	return []*cobra.Command{a.endpointsCmd(), a.keysCmd(), a.jobsCmd(), a.workersCmd()}
}

type adminCmds struct {
	getenv func(string) string
}

// adminOut is where an admin command prints its answer: the server's JSON, or text for a human.
type adminOut struct {
	w     io.Writer
	human bool
}

// json prints a JSON answer on one line (as the client commands do).
func (o *adminOut) json(raw []byte) error {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return fmt.Errorf("the server's answer is not JSON: %v", err)
	}
	b.WriteByte('\n')
	_, err := o.w.Write(b.Bytes())
	return err
}

// adminRun carries out an admin command once its flags, arguments, output and server are known.
type adminRun func(cmd *cobra.Command, args []string, c *adminClient, out *adminOut) error

// exitUsageOnFlagError makes a flag error one line on stderr and exit status 2.
func exitUsageOnFlagError(cmd *cobra.Command) {
	cmd.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		finish(cmd, usageErrorf("%v (see %s --help)", err, cmd.CommandPath()))
		return err
	})
}

// group is a command that only holds subcommands: alone it prints its help; with an unknown
// subcommand it exits 2.
func (a *adminCmds) group(use, short string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:           use,
		Short:         short,
		Args:          cobra.ArbitraryArgs,
		SilenceErrors: true,
		SilenceUsage:  true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			var names []string
			for _, c := range cmd.Commands() {
				if c.IsAvailableCommand() {
					names = append(names, c.Name())
				}
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += "; did you mean " + s[0] + "?"
			} else {
				msg += "; want " + strings.Join(names, ", ")
			}
			finish(cmd, usageErrorf("%s", msg))
			return nil
		},
	}
	cmd.SuggestionsMinimumDistance = 1 // "lst" suggests list, not get
	exitUsageOnFlagError(cmd)
	cmd.AddCommand(subs...)
	return cmd
}

// leaf makes cmd an admin command: connection and output flags, usage errors that exit 2 with one
// line, and errors handled by finish.
func (a *adminCmds) leaf(cmd *cobra.Command, args cobra.PositionalArgs, run adminRun) *cobra.Command {
	var flagURL, flagKey, output string
	f := cmd.Flags()
	f.StringVar(&flagURL, "url", "", "server URL (default $SPOOL_URL, the config file, or "+defaultClientURL+")")
	f.StringVar(&flagKey, "key", "", "admin API key (default $SPOOL_API_KEY or the config file)")
	f.StringVarP(&output, "output", "o", "auto", "output: auto (text on a terminal, JSON otherwise), json or text")
	cmd.Long = strings.TrimSpace(cmd.Long) + "\n" + adminHelpFooter
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	exitUsageOnFlagError(cmd)
	cmd.Args = func(cmd *cobra.Command, a []string) error {
		if err := args(cmd, a); err != nil {
			finish(cmd, usageErrorf("%v; usage: %s", err, cmd.UseLine()))
		}
		return nil
	}
	connect := func(cmd *cobra.Command) (*adminClient, error) {
		var u, k *string
		if cmd.Flags().Changed("url") {
			u = &flagURL
		}
		if cmd.Flags().Changed("key") {
			k = &flagKey
		}
		t, err := resolveTarget(a.getenv, u, k)
		if err != nil {
			return nil, err
		}
		return newAdminClient(t), nil
	}
	if cmd.ValidArgsFunction == nil {
		cmd.ValidArgsFunction = cobra.NoFileCompletions
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		out := &adminOut{w: cmd.OutOrStdout()}
		switch output {
		case "auto":
			out.human = isTerminal(cmd.OutOrStdout())
		case "json":
		case "text":
			out.human = true
		default:
			finish(cmd, usageErrorf("--output must be auto, json or text, not %q", output))
		}
		c, err := connect(cmd)
		if err != nil {
			finish(cmd, err)
		}
		if err := run(cmd, args, c, out); err != nil {
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

// completeEndpoints offers the server's endpoint names, when it answers within a moment to the
// key the command would use; else nothing.
func (a *adminCmds) completeEndpoints(cmd *cobra.Command, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	var u, k *string
	if cmd.Flags().Changed("url") {
		v, _ := cmd.Flags().GetString("url")
		u = &v
	}
	if cmd.Flags().Changed("key") {
		v, _ := cmd.Flags().GetString("key")
		k = &v
	}
	t, err := resolveTarget(a.getenv, u, k)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return endpointCompletions(cmd.Context(), spoolclient.New(t.URL, t.Key, spoolclient.WithUserAgent("spool-cli")), toComplete)
}

// endpointArg completes a first positional argument that names an endpoint.
func (a *adminCmds) endpointArg(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return a.completeEndpoints(cmd, toComplete)
}

// endpointFlag completes an --endpoint flag.
func (a *adminCmds) endpointFlag(cmd *cobra.Command) {
	_ = cmd.RegisterFlagCompletionFunc("endpoint", func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return a.completeEndpoints(cmd, toComplete)
	})
}

// --- the admin API over HTTP

// adminClient calls Spool's /api with one key.
type adminClient struct {
	root string // scheme://host[:port][/prefix]: the server's root, where /api is
	key  string
	hc   *http.Client
}

// newAdminClient calls the server t names. Its URL may name the /v2 root, as for the client
// commands: /api is beside it.
func newAdminClient(t clientTarget) *adminClient {
	base := spoolclient.New(t.URL, "").BaseURL() // normalised, ending in /v2
	return &adminClient{root: strings.TrimSuffix(base, "/v2"), key: t.Key, hc: http.DefaultClient}
}

// do sends a request to /api/<path...> and returns the body of a 2xx answer. Any other status is
// a *spoolclient.APIError with the server's message, which finish prints as the client commands do.
func (c *adminClient) do(ctx context.Context, op, method string, path []string, query url.Values, body []byte) ([]byte, error) {
	var u strings.Builder
	u.WriteString(c.root)
	u.WriteString("/api")
	for _, p := range path {
		u.WriteByte('/')
		u.WriteString(url.PathEscape(p))
	}
	if len(query) > 0 {
		u.WriteByte('?')
		u.WriteString(query.Encode())
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "spool-cli")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	defer res.Body.Close()
	if res.StatusCode < 200 || res.StatusCode > 299 {
		raw, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
		return nil, fmt.Errorf("%s: %w", op, answerError(res, raw))
	}
	const limit = spoolclient.DefaultMaxResponseBytes
	raw, err := io.ReadAll(io.LimitReader(res.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: read answer: %w", op, err)
	}
	if len(raw) > limit {
		return nil, fmt.Errorf("%s: the answer is larger than %d MB", op, limit>>20)
	}
	return raw, nil
}

// answerError is the error of a non-2xx answer: the message of its {"error": ...} body, else the
// body's first line, else the status text.
func answerError(res *http.Response, body []byte) *spoolclient.APIError {
	e := &spoolclient.APIError{StatusCode: res.StatusCode}
	var v struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &v) == nil && len(v.Error) > 0 && string(v.Error) != "null" {
		if json.Unmarshal(v.Error, &e.Message) != nil {
			e.Message = string(v.Error)
		}
	} else {
		line, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
		e.Message = truncate(strings.TrimSpace(line), 200)
	}
	if e.Message == "" {
		e.Message = http.StatusText(res.StatusCode)
	}
	if n, err := strconv.Atoi(strings.TrimSpace(res.Header.Get("Retry-After"))); err == nil && n > 0 {
		e.RetryAfter = time.Duration(n) * time.Second
	}
	return e
}

// decodeAnswer decodes a 2xx answer for the text output.
func decodeAnswer(raw []byte, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("the server's answer is not what Spool's /api sends: %v", err)
	}
	return nil
}

// --- text output

// cell makes a value safe to print in a table: control characters (a worker's message may hold
// newlines or terminal escapes) are shown escaped, and "" is "-".
func cell(s string) string {
	if s == "" {
		return "-"
	}
	if !strings.ContainsFunc(s, unicode.IsControl) && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], string(utf8.RuneError)):
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsControl(r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// truncate cuts s to n runes, ending in "…" when it was longer.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// table prints rows aligned in columns, the first row being the header.
func table(w io.Writer, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, row := range rows {
		cells := make([]string, len(row))
		for i, c := range row {
			cells[i] = cell(c)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// listing prints "field: value" lines with the values aligned.
type listing [][2]string

func (l *listing) add(field, value string) { *l = append(*l, [2]string{field, value}) }

func (l listing) print(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	for _, kv := range l {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], cell(kv[1]))
	}
	return tw.Flush()
}

// fmtDuration shows a duration the way people write it: 350ms, 1.2s, 10m, 24h, 1h30m.
func fmtDuration(d time.Duration) string {
	if d >= time.Second {
		d = d.Round(100 * time.Millisecond)
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

func fmtMs(ms int64) string { return fmtDuration(time.Duration(ms) * time.Millisecond) }

// fmtTime shows one of the API's RFC 3339 times in local time ("" stays "").
func fmtTime(s string, layout string) string {
	if s == "" {
		return ""
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return s
	}
	return t.Local().Format(layout)
}

const tableTime = "2006-01-02 15:04:05"

// compactJSON shows a JSON value on one line, cut to n runes.
func compactJSON(raw json.RawMessage, n int) string {
	if len(raw) == 0 {
		return ""
	}
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return truncate(string(raw), n)
	}
	return truncate(b.String(), n)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// --- endpoints

func (a *adminCmds) endpointsCmd() *cobra.Command {
	return a.group("endpoints", "List, show, create, update and delete endpoints (admin)",
		a.endpointsListCmd(), a.endpointsGetCmd(), a.endpointsCreateCmd(), a.endpointsUpdateCmd(), a.endpointsDeleteCmd())
}

// endpointInfo is an endpoint as /api/endpoints shows it.
type endpointInfo struct {
	spool.Endpoint
	HasWebhookSecret bool `json:"hasWebhookSecret"`
}

func (a *adminCmds) endpointsListCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the endpoints and their main settings",
		Long:    `List the endpoints. Piped, it prints GET /api/endpoints: {"endpoints":[...]}.`,
	}
	return a.leaf(cmd, cobra.NoArgs, func(cmd *cobra.Command, _ []string, c *adminClient, out *adminOut) error {
		raw, err := c.do(cmd.Context(), "list endpoints", http.MethodGet, []string{"endpoints"}, nil, nil)
		if err != nil {
			return err
		}
		if !out.human {
			return out.json(raw)
		}
		var v struct {
			Endpoints []endpointInfo `json:"endpoints"`
		}
		if err := decodeAnswer(raw, &v); err != nil {
			return err
		}
		if len(v.Endpoints) == 0 {
			_, err := fmt.Fprintln(out.w, "No endpoints yet (spool endpoints create NAME).")
			return err
		}
		rows := [][]string{{"NAME", "WORKERS", "IDLE", "SCALER", "EXEC TIMEOUT", "TTL", "MAX QUEUE", "WORKER", "SOURCE"}}
		for _, ep := range v.Endpoints {
			maxQueue := "-"
			if ep.MaxQueue > 0 {
				maxQueue = strconv.Itoa(ep.MaxQueue)
			}
			rows = append(rows, []string{ep.Name, fmt.Sprintf("%d-%d", ep.WorkersMin, ep.WorkersMax),
				fmtDuration(time.Duration(ep.IdleTimeout) * time.Second), fmt.Sprintf("%s %d", ep.ScalerType, ep.ScalerValue),
				fmtMs(ep.ExecutionTimeoutMs), fmtMs(ep.TTLMs), maxQueue, truncate(workerSummary(ep.Worker), 40), ep.Source})
		}
		return table(out.w, rows)
	})
}

// workerSummary says in a few words how an endpoint's workers start.
func workerSummary(w *spool.WorkerSpec) string {
	switch {
	case w == nil:
		return "external"
	case w.Image != "":
		return "image " + w.Image
	default:
		return strings.TrimSpace("command " + w.Command + " " + strings.Join(w.Args, " "))
	}
}

// printEndpoint prints one endpoint as /api/endpoints/{name} answers it.
func printEndpoint(out *adminOut, raw []byte) error {
	if !out.human {
		return out.json(raw)
	}
	var ep endpointInfo
	if err := decodeAnswer(raw, &ep); err != nil {
		return err
	}
	var l listing
	l.add("name", ep.Name)
	l.add("source", ep.Source)
	l.add("workersMin", strconv.Itoa(ep.WorkersMin))
	l.add("workersMax", strconv.Itoa(ep.WorkersMax))
	l.add("idleTimeout", fmtDuration(time.Duration(ep.IdleTimeout)*time.Second))
	l.add("scalerType", string(ep.ScalerType))
	l.add("scalerValue", strconv.Itoa(ep.ScalerValue))
	l.add("executionTimeout", fmtMs(ep.ExecutionTimeoutMs))
	l.add("ttl", fmtMs(ep.TTLMs))
	l.add("gpuCount", strconv.Itoa(ep.GPUCount))
	if ep.MaxQueue == 0 {
		l.add("maxQueue", "0 (no cap)")
	} else {
		l.add("maxQueue", strconv.Itoa(ep.MaxQueue))
	}
	if ep.OutputOffloadBytes == 0 {
		l.add("outputOffloadBytes", "0 (off)")
	} else {
		l.add("outputOffloadBytes", strconv.FormatInt(ep.OutputOffloadBytes, 10))
	}
	if ep.HasWebhookSecret {
		l.add("webhookSecret", "set (never shown)")
	} else {
		l.add("webhookSecret", "none")
	}
	l.add("webhookAttempts", strconv.Itoa(ep.WebhookAttempts))
	l.add("webhookBackoff", ep.WebhookBackoff)
	l.add("webhookDelay", fmtMs(ep.WebhookDelayMs))
	l.add("webhookMaxDelay", fmtMs(ep.WebhookMaxDelayMs))
	l.add("webhookTimeout", fmtMs(ep.WebhookTimeoutMs))
	if w := ep.Worker; w == nil {
		l.add("worker", "external (workers are started outside Spool)")
	} else {
		if w.Image != "" {
			l.add("worker.image", w.Image)
		}
		if w.Pull != "" {
			l.add("worker.pull", w.Pull)
		}
		if w.Command != "" {
			l.add("worker.command", w.Command)
		}
		if len(w.Args) > 0 {
			l.add("worker.args", strings.Join(w.Args, " "))
		}
		if w.Dir != "" {
			l.add("worker.dir", w.Dir)
		}
		if len(w.Env) > 0 {
			// Only the names: the values may be credentials (-o json shows them).
			names := make([]string, 0, len(w.Env))
			for k := range w.Env {
				names = append(names, k)
			}
			slices.Sort(names)
			l.add("worker.env", strings.Join(names, ", "))
		}
		for i, m := range w.Mounts {
			s := m.Source + ":" + m.Target
			if m.ReadOnly {
				s += ":ro"
			}
			l.add(fmt.Sprintf("worker.mounts[%d]", i), s)
		}
		if r := w.RegistryAuth; r != nil {
			l.add("worker.registryAuth", r.Username+" (password in "+r.PasswordFile+")")
		}
	}
	if !ep.CreatedAt.IsZero() {
		l.add("createdAt", ep.CreatedAt.Local().Format(tableTime))
	}
	if !ep.UpdatedAt.IsZero() {
		l.add("updatedAt", ep.UpdatedAt.Local().Format(tableTime))
	}
	return l.print(out.w)
}

func (a *adminCmds) endpointsGetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:               "get NAME",
		Short:             "Show an endpoint's settings",
		Long:              `Show an endpoint. Piped, it prints GET /api/endpoints/NAME (the webhook secret is never shown: hasWebhookSecret says whether there is one).`,
		ValidArgsFunction: a.endpointArg,
	}
	return a.leaf(cmd, cobra.ExactArgs(1), func(cmd *cobra.Command, args []string, c *adminClient, out *adminOut) error {
		raw, err := c.do(cmd.Context(), "get endpoint "+args[0], http.MethodGet, []string{"endpoints", args[0]}, nil, nil)
		if err != nil {
			return err
		}
		return printEndpoint(out, raw)
	})
}

// endpointFlags are the settings create and update take as flags.
type endpointFlags struct {
	file                                   string
	workersMin, workersMax                 int
	idleTimeout                            secondsFlag
	scalerType                             string
	scalerValue                            int
	executionTimeout, ttl                  msDuration
	gpuCount, maxQueue                     int
	outputOffload                          int64
	webhookSecretFile                      string
	noWebhookSecret                        bool
	webhookAttempts                        int
	webhookBackoff                         string
	webhookDelay, webhookMaxDelay          msDuration
	webhookTimeout                         msDuration
	workerCommand, workerImage, workerPull string
	workerArgs                             []string
	noWorker                               bool
}

func (e *endpointFlags) register(f *pflag.FlagSet) {
	f.StringVarP(&e.file, "file", "f", "", "a JSON file of endpoint settings (the fields of GET /api/endpoints/NAME), - for stdin; flags override it")
	f.IntVar(&e.workersMin, "workers-min", 0, "workersMin: always-on workers")
	f.IntVar(&e.workersMax, "workers-max", 0, "workersMax: the most workers")
	f.Var(&e.idleTimeout, "idle-timeout", "idleTimeout: how long a worker may sit idle before it is stopped (30s, 2m, or whole seconds)")
	f.StringVar(&e.scalerType, "scaler-type", "", "scalerType: QUEUE_DELAY or REQUEST_COUNT")
	f.IntVar(&e.scalerValue, "scaler-value", 0, "scalerValue: seconds of queue delay, or requests per worker")
	f.Var(&e.executionTimeout, "execution-timeout", "executionTimeoutMs: the default longest run of a job (10m, or milliseconds)")
	f.Var(&e.ttl, "ttl", "ttlMs: the default longest wait of a job in the queue (24h, or milliseconds)")
	f.IntVar(&e.gpuCount, "gpu-count", 0, "gpuCount: GPUs handed to each worker")
	f.IntVar(&e.maxQueue, "max-queue", 0, "maxQueue: the most jobs waiting (0: no cap)")
	f.Int64Var(&e.outputOffload, "output-offload-bytes", 0, "outputOffloadBytes: results larger than this go to the job's S3 bucket (0: off)")
	f.StringVar(&e.webhookSecretFile, "webhook-secret-file", "", "read webhookSecret (whsec_..., several separated by spaces) from this file, - for stdin")
	f.BoolVar(&e.noWebhookSecret, "no-webhook-secret", false, "remove the webhook secret (webhooks are then not signed)")
	f.IntVar(&e.webhookAttempts, "webhook-attempts", 0, "webhookAttempts: the most attempts of one webhook delivery")
	f.StringVar(&e.webhookBackoff, "webhook-backoff", "", "webhookBackoff: fixed or exponential")
	f.Var(&e.webhookDelay, "webhook-delay", "webhookDelayMs: the wait after a failed webhook attempt (10s, or milliseconds)")
	f.Var(&e.webhookMaxDelay, "webhook-max-delay", "webhookMaxDelayMs: the longest wait of exponential backoff (1h, or milliseconds)")
	f.Var(&e.webhookTimeout, "webhook-timeout", "webhookTimeoutMs: the longest one webhook attempt may take (10s, or milliseconds)")
	f.StringVar(&e.workerCommand, "worker-command", "", "worker.command: Spool starts workers with this program (replaces worker.image)")
	f.StringVar(&e.workerImage, "worker-image", "", "worker.image: Spool starts workers from this container image (replaces worker.command)")
	f.StringArrayVar(&e.workerArgs, "worker-arg", nil, "worker.args: an argument of the command or image (repeat for each; replaces the list)")
	f.StringVar(&e.workerPull, "worker-pull", "", "worker.pull: when the image is pulled: missing, always or never")
	f.BoolVar(&e.noWorker, "no-worker", false, "remove worker: workers are started outside Spool and connect on their own")
}

// endpointChanges are the settings the flags give, checked, to be set in an endpoint's JSON.
type endpointChanges struct {
	fields map[string]json.RawMessage // top-level fields to set
	// worker: removeWorker sets it to null; else workerSet and workerDrop change its object
	// (created when the endpoint has none), when either is not empty.
	removeWorker bool
	workerSet    map[string]json.RawMessage
	workerDrop   []string
}

func (c *endpointChanges) empty() bool {
	return len(c.fields) == 0 && !c.removeWorker && len(c.workerSet) == 0
}

// changes checks the setting flags the user gave and returns what they change. It reads the
// webhook secret file, if any (stdin for "-", which --file may not also read).
func (e *endpointFlags) changes(f *pflag.FlagSet, stdin io.Reader) (*endpointChanges, error) {
	c := &endpointChanges{fields: map[string]json.RawMessage{}, workerSet: map[string]json.RawMessage{}}
	set := func(m map[string]json.RawMessage, field string, v any) {
		b, _ := json.Marshal(v)
		m[field] = b
	}
	ints := []struct {
		flag, field string
		v           int
	}{
		{"workers-min", "workersMin", e.workersMin}, {"workers-max", "workersMax", e.workersMax},
		{"scaler-value", "scalerValue", e.scalerValue}, {"gpu-count", "gpuCount", e.gpuCount},
		{"max-queue", "maxQueue", e.maxQueue}, {"webhook-attempts", "webhookAttempts", e.webhookAttempts},
	}
	for _, i := range ints {
		if f.Changed(i.flag) {
			if i.v < 0 {
				return nil, usageErrorf("--%s must be at least 0, not %d", i.flag, i.v)
			}
			set(c.fields, i.field, i.v)
		}
	}
	if f.Changed("output-offload-bytes") {
		if e.outputOffload < 0 {
			return nil, usageErrorf("--output-offload-bytes must be at least 0, not %d", e.outputOffload)
		}
		set(c.fields, "outputOffloadBytes", e.outputOffload)
	}
	if e.idleTimeout.set {
		set(c.fields, "idleTimeout", e.idleTimeout.n)
	}
	if f.Changed("scaler-type") {
		t := spool.ScalerType(strings.ToUpper(strings.TrimSpace(e.scalerType)))
		if !t.Valid() {
			return nil, usageErrorf("--scaler-type must be %s or %s, not %q", spool.ScalerQueueDelay, spool.ScalerRequestCount, e.scalerType)
		}
		set(c.fields, "scalerType", t)
	}
	durations := []struct {
		flag, field string
		v           msDuration
	}{
		{"execution-timeout", "executionTimeoutMs", e.executionTimeout}, {"ttl", "ttlMs", e.ttl},
		{"webhook-delay", "webhookDelayMs", e.webhookDelay}, {"webhook-max-delay", "webhookMaxDelayMs", e.webhookMaxDelay},
		{"webhook-timeout", "webhookTimeoutMs", e.webhookTimeout},
	}
	for _, d := range durations {
		if d.v.set {
			if d.v.d%time.Millisecond != 0 {
				return nil, usageErrorf("--%s must be whole milliseconds, not %s", d.flag, d.v.d)
			}
			set(c.fields, d.field, d.v.d.Milliseconds())
		}
	}
	if f.Changed("webhook-backoff") {
		b := strings.ToLower(strings.TrimSpace(e.webhookBackoff))
		if b != spool.WebhookBackoffFixed && b != spool.WebhookBackoffExponential {
			return nil, usageErrorf("--webhook-backoff must be %s or %s, not %q", spool.WebhookBackoffFixed, spool.WebhookBackoffExponential, e.webhookBackoff)
		}
		set(c.fields, "webhookBackoff", b)
	}
	switch {
	case e.noWebhookSecret && f.Changed("webhook-secret-file"):
		return nil, usageErrorf("--webhook-secret-file and --no-webhook-secret exclude each other")
	case e.noWebhookSecret:
		set(c.fields, "webhookSecret", "")
	case f.Changed("webhook-secret-file"):
		if e.webhookSecretFile == "-" && f.Changed("file") && e.file == "-" {
			return nil, usageErrorf("--file and --webhook-secret-file cannot both read stdin")
		}
		b, err := readLimited(e.webhookSecretFile, "webhook secret file", stdin, 64<<10)
		if err != nil {
			return nil, err
		}
		secret := strings.Join(strings.Fields(string(b)), " ")
		if secret == "" {
			return nil, usageErrorf("the webhook secret file is empty; --no-webhook-secret removes the secret")
		}
		set(c.fields, "webhookSecret", secret)
	}

	var given []string
	for _, n := range []string{"worker-command", "worker-image", "worker-arg", "worker-pull"} {
		if f.Changed(n) {
			given = append(given, "--"+n)
		}
	}
	switch {
	case e.noWorker && len(given) > 0:
		return nil, usageErrorf("--no-worker and %s exclude each other", given[0])
	case e.noWorker:
		c.removeWorker = true
	case f.Changed("worker-command") && f.Changed("worker-image"):
		return nil, usageErrorf("--worker-command and --worker-image exclude each other: a worker is a process or a container")
	}
	if f.Changed("worker-command") {
		if strings.TrimSpace(e.workerCommand) == "" {
			return nil, usageErrorf("--worker-command must not be empty; --no-worker removes the worker")
		}
		set(c.workerSet, "command", e.workerCommand)
		c.workerDrop = append(c.workerDrop, "image")
	}
	if f.Changed("worker-image") {
		if strings.TrimSpace(e.workerImage) == "" {
			return nil, usageErrorf("--worker-image must not be empty; --no-worker removes the worker")
		}
		set(c.workerSet, "image", e.workerImage)
		c.workerDrop = append(c.workerDrop, "command")
	}
	if f.Changed("worker-arg") {
		set(c.workerSet, "args", e.workerArgs)
	}
	if f.Changed("worker-pull") {
		p := strings.ToLower(strings.TrimSpace(e.workerPull))
		if p != spool.PullMissing && p != spool.PullAlways && p != spool.PullNever {
			return nil, usageErrorf("--worker-pull must be missing, always or never, not %q", e.workerPull)
		}
		set(c.workerSet, "pull", p)
	}
	return c, nil
}

// apply sets the changes in body, an endpoint's JSON object.
func (c *endpointChanges) apply(body map[string]json.RawMessage) error {
	for k, v := range c.fields {
		body[k] = v
	}
	if c.removeWorker {
		body["worker"] = json.RawMessage("null")
		return nil
	}
	if len(c.workerSet) == 0 {
		return nil
	}
	w := map[string]json.RawMessage{}
	if raw, ok := body["worker"]; ok && string(bytes.TrimSpace(raw)) != "null" {
		if err := json.Unmarshal(raw, &w); err != nil || w == nil {
			return usageErrorf("worker must be a JSON object")
		}
	}
	for _, k := range c.workerDrop {
		delete(w, k)
	}
	for k, v := range c.workerSet {
		w[k] = v
	}
	b, err := json.Marshal(w)
	if err != nil {
		return err
	}
	body["worker"] = b
	return nil
}

// readLimited reads a file named by a flag, or stdin for "-".
func readLimited(name, what string, stdin io.Reader, limit int64) ([]byte, error) {
	var r io.Reader = stdin
	src := "stdin"
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, usageErrorf("%s: %v", what, unwrapPathError(err))
		}
		defer f.Close()
		r, src = f, name
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, usageErrorf("read %s: %v", src, err)
	}
	if int64(len(b)) > limit {
		return nil, usageErrorf("%s is larger than %d KB", src, limit>>10)
	}
	return b, nil
}

// readEndpointFile reads --file: one JSON object. Its name, if any, must be the command's NAME.
func readEndpointFile(name, file string, stdin io.Reader) (map[string]json.RawMessage, error) {
	b, err := readLimited(file, "endpoint file", stdin, 1<<20)
	if err != nil {
		return nil, err
	}
	src := file
	if file == "-" {
		src = "stdin"
	}
	var m map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&m); err != nil || m == nil {
		if err == nil || errors.Is(err, io.EOF) {
			return nil, usageErrorf("%s must hold a JSON object of endpoint settings", src)
		}
		return nil, usageErrorf("%s is not a JSON object: %v", src, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, usageErrorf("%s holds more than one JSON value", src)
	}
	if raw, ok := m["name"]; ok {
		var n string
		if json.Unmarshal(raw, &n) != nil || n != name {
			return nil, usageErrorf("%s names endpoint %s, not %q; an endpoint cannot be renamed", src, string(raw), name)
		}
	}
	return m, nil
}

func (a *adminCmds) endpointsCreateCmd() *cobra.Command {
	var ef endpointFlags
	cmd := &cobra.Command{
		Use:   "create NAME [--file FILE.json] [flags]",
		Short: "Create an endpoint",
		Long: `Create an endpoint (POST /api/endpoints). Its settings come from --file (a JSON object with the
fields GET /api/endpoints/NAME shows), then from the flags; what neither sets takes Spool's
defaults. It prints the new endpoint. Durations are Go durations (30s, 10m) or, for the fields
counted in milliseconds, whole milliseconds; --idle-timeout counts whole seconds.`,
		Example: `  spool endpoints create sdxl --workers-max 4 --idle-timeout 30s --execution-timeout 10m
  spool endpoints create echo --worker-image ghcr.io/me/echo:1 --webhook-secret-file whsec.txt
  spool endpoints get sdxl --url http://old:8080 | spool endpoints create sdxl --file -`,
	}
	ef.register(cmd.Flags())
	return a.leaf(cmd, cobra.ExactArgs(1), func(cmd *cobra.Command, args []string, c *adminClient, out *adminOut) error {
		name := args[0]
		body := map[string]json.RawMessage{}
		if cmd.Flags().Changed("file") {
			m, err := readEndpointFile(name, ef.file, cmd.InOrStdin())
			if err != nil {
				return err
			}
			body = m
		}
		ch, err := ef.changes(cmd.Flags(), cmd.InOrStdin())
		if err != nil {
			return err
		}
		if err := ch.apply(body); err != nil {
			return err
		}
		body["name"], _ = json.Marshal(name)
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		raw, err := c.do(cmd.Context(), "create endpoint "+name, http.MethodPost, []string{"endpoints"}, nil, b)
		if err != nil {
			return err
		}
		return printEndpoint(out, raw)
	})
}

func (a *adminCmds) endpointsUpdateCmd() *cobra.Command {
	var ef endpointFlags
	cmd := &cobra.Command{
		Use:   "update NAME [--file FILE.json] [flags]",
		Short: "Change an endpoint's settings",
		Long: `Change an endpoint: read it (GET /api/endpoints/NAME), set the fields of --file (a JSON object,
whose fields replace the endpoint's; fields it leaves out keep their values) and then the flags,
and send it back whole (PUT /api/endpoints/NAME). The webhook secret is kept unless
--webhook-secret-file or --no-webhook-secret changes it. It prints the endpoint as stored.
Durations are Go durations (30s, 10m) or, for the fields counted in milliseconds, whole
milliseconds; --idle-timeout counts whole seconds.`,
		Example: `  spool endpoints update sdxl --workers-min 1 --workers-max 8
  spool endpoints update sdxl --worker-image ghcr.io/me/sdxl:1.3
  spool endpoints update sdxl --file settings.json`,
		ValidArgsFunction: a.endpointArg,
	}
	ef.register(cmd.Flags())
	return a.leaf(cmd, cobra.ExactArgs(1), func(cmd *cobra.Command, args []string, c *adminClient, out *adminOut) error {
		name := args[0]
		var file map[string]json.RawMessage
		if cmd.Flags().Changed("file") {
			var err error
			if file, err = readEndpointFile(name, ef.file, cmd.InOrStdin()); err != nil {
				return err
			}
		}
		// The flags are checked before any request, so that a bad one changes nothing.
		ch, err := ef.changes(cmd.Flags(), cmd.InOrStdin())
		if err != nil {
			return err
		}
		if ch.empty() && file == nil {
			return usageErrorf("nothing to change: give settings as flags or --file (see %s --help)", cmd.CommandPath())
		}
		raw, err := c.do(cmd.Context(), "get endpoint "+name, http.MethodGet, []string{"endpoints", name}, nil, nil)
		if err != nil {
			return err
		}
		var body map[string]json.RawMessage
		if err := json.Unmarshal(raw, &body); err != nil || body == nil {
			return fmt.Errorf("the server's answer is not an endpoint: %s", truncate(string(raw), 100))
		}
		for k, v := range file {
			body[k] = v
		}
		if err := ch.apply(body); err != nil {
			return err
		}
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		raw, err = c.do(cmd.Context(), "update endpoint "+name, http.MethodPut, []string{"endpoints", name}, nil, b)
		if err != nil {
			return err
		}
		return printEndpoint(out, raw)
	})
}

func (a *adminCmds) endpointsDeleteCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:               "delete NAME",
		Aliases:           []string{"rm"},
		Short:             "Delete an endpoint",
		Long:              `Delete an endpoint (DELETE /api/endpoints/NAME). Piped, it prints {"name":NAME,"deleted":true}.`,
		ValidArgsFunction: a.endpointArg,
	}
	return a.leaf(cmd, cobra.ExactArgs(1), func(cmd *cobra.Command, args []string, c *adminClient, out *adminOut) error {
		if _, err := c.do(cmd.Context(), "delete endpoint "+args[0], http.MethodDelete, []string{"endpoints", args[0]}, nil, nil); err != nil {
			return err
		}
		if out.human {
			_, err := fmt.Fprintf(out.w, "Deleted endpoint %s.\n", cell(args[0]))
			return err
		}
		return printJSON(out.w, struct {
			Name    string `json:"name"`
			Deleted bool   `json:"deleted"`
		}{args[0], true})
	})
}

// secondsFlag is a flag value given as a Go duration of whole seconds ("30s", "2m") or as whole
// seconds ("30"); it must be positive.
type secondsFlag struct {
	n   int
	set bool
}

func (s *secondsFlag) String() string {
	if !s.set {
		return ""
	}
	return (time.Duration(s.n) * time.Second).String()
}

func (s *secondsFlag) Set(v string) error {
	v = strings.TrimSpace(v)
	var d time.Duration
	if n, err := strconv.Atoi(v); err == nil {
		if n > 1<<31 {
			return fmt.Errorf("%s seconds is too long", v)
		}
		d = time.Duration(n) * time.Second
	} else if d, err = time.ParseDuration(v); err != nil {
		return fmt.Errorf("want a duration such as 30s or 2m, or whole seconds such as 30")
	}
	if d <= 0 {
		return fmt.Errorf("must be positive")
	}
	if d%time.Second != 0 {
		return fmt.Errorf("must be whole seconds")
	}
	s.n, s.set = int(d/time.Second), true
	return nil
}

func (s *secondsFlag) Type() string { return "duration" }

// --- keys

func (a *adminCmds) keysCmd() *cobra.Command {
	return a.group("keys", "List, create and revoke API keys (admin)", a.keysListCmd(), a.keysCreateCmd(), a.keysRevokeCmd())
}

// keyInfo is a key as /api/keys shows it (never its secret, but for the one answer of create).
type keyInfo struct {
	spool.Key
	Secret string `json:"key"`
}

func keyEndpoints(k spool.Key) string {
	if len(k.Endpoints) == 0 {
		return "all"
	}
	return strings.Join(k.Endpoints, ",")
}

func (a *adminCmds) keysListCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the API keys (never their secrets)",
		Long:    `List the API keys. Piped, it prints GET /api/keys: {"keys":[...]}. Secrets are never shown: Spool keeps only their hashes.`,
	}
	return a.leaf(cmd, cobra.NoArgs, func(cmd *cobra.Command, _ []string, c *adminClient, out *adminOut) error {
		raw, err := c.do(cmd.Context(), "list keys", http.MethodGet, []string{"keys"}, nil, nil)
		if err != nil {
			return err
		}
		if !out.human {
			return out.json(raw)
		}
		var v struct {
			Keys []keyInfo `json:"keys"`
		}
		if err := decodeAnswer(raw, &v); err != nil {
			return err
		}
		if len(v.Keys) == 0 {
			_, err := fmt.Fprintln(out.w, "No keys.")
			return err
		}
		rows := [][]string{{"ID", "NAME", "SCOPE", "ENDPOINTS", "READ-ONLY", "SOURCE", "CREATED"}}
		for _, k := range v.Keys {
			created := ""
			if !k.CreatedAt.IsZero() {
				created = k.CreatedAt.Local().Format(tableTime)
			}
			rows = append(rows, []string{k.ID, k.Name, string(k.Scope), keyEndpoints(k.Key), yesNo(k.ReadOnly), k.Source, created})
		}
		return table(out.w, rows)
	})
}

func (a *adminCmds) keysCreateCmd() *cobra.Command {
	var (
		name, scope string
		endpoints   []string
		readOnly    bool
	)
	cmd := &cobra.Command{
		Use:   "create --name NAME --scope admin|client|worker [--endpoint E ...] [--read-only]",
		Short: "Create an API key and print its secret, once",
		Long: `Create an API key (POST /api/keys). Its secret is shown this once: Spool keeps only its hash.
Piped, it prints the answer, {"id","name","scope",...,"key":"spool_..."}; on a terminal, the key's
settings and its secret.

--endpoint limits a client or worker key to the endpoints named (repeat it, or separate them with
commas); without it the key may use every endpoint. --read-only limits a key to reading.`,
		Example: `  spool keys create --name ci --scope client --endpoint sdxl
  spool keys create --name gpu-box --scope worker --endpoint sdxl,echo -o json | jq -r .key`,
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "a name for the key (required)")
	f.StringVar(&scope, "scope", "", "what the key may do: admin, client or worker (required)")
	f.StringSliceVar(&endpoints, "endpoint", nil, "an endpoint the key may use (repeatable; default: all)")
	f.BoolVar(&readOnly, "read-only", false, "the key may only read")
	a.endpointFlag(cmd)
	_ = cmd.RegisterFlagCompletionFunc("scope", cobra.FixedCompletions([]string{"admin", "client", "worker"}, cobra.ShellCompDirectiveNoFileComp))
	return a.leaf(cmd, cobra.NoArgs, func(cmd *cobra.Command, _ []string, c *adminClient, out *adminOut) error {
		if strings.TrimSpace(name) == "" {
			return usageErrorf("--name is required (see %s --help)", cmd.CommandPath())
		}
		sc := spool.Scope(strings.ToLower(strings.TrimSpace(scope)))
		if scope == "" {
			return usageErrorf("--scope is required: admin, client or worker")
		}
		if !sc.Valid() {
			return usageErrorf("--scope must be admin, client or worker, not %q", scope)
		}
		eps := []string{}
		for _, e := range endpoints {
			if e = strings.TrimSpace(e); e != "" {
				eps = append(eps, e)
			}
		}
		b, err := json.Marshal(struct {
			Name      string      `json:"name"`
			Scope     spool.Scope `json:"scope"`
			Endpoints []string    `json:"endpoints,omitempty"`
			ReadOnly  bool        `json:"readOnly"`
		}{name, sc, eps, readOnly})
		if err != nil {
			return err
		}
		raw, err := c.do(cmd.Context(), "create key", http.MethodPost, []string{"keys"}, nil, b)
		if err != nil {
			return err
		}
		if !out.human {
			return out.json(raw)
		}
		var k keyInfo
		if err := decodeAnswer(raw, &k); err != nil {
			return err
		}
		var l listing
		l.add("id", k.ID)
		l.add("name", k.Name)
		l.add("scope", string(k.Scope))
		l.add("endpoints", keyEndpoints(k.Key))
		l.add("readOnly", yesNo(k.ReadOnly))
		l.add("key", k.Secret)
		if err := l.print(out.w); err != nil {
			return err
		}
		_, err = fmt.Fprintln(out.w, "\nThe key is shown only this once: Spool keeps only its hash. Store it now.")
		return err
	})
}

func (a *adminCmds) keysRevokeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "revoke ID",
		Aliases: []string{"delete", "rm"},
		Short:   "Revoke an API key",
		Long:    `Revoke an API key by its id (DELETE /api/keys/ID; spool keys list shows the ids). Piped, it prints {"id":ID,"revoked":true}.`,
	}
	return a.leaf(cmd, cobra.ExactArgs(1), func(cmd *cobra.Command, args []string, c *adminClient, out *adminOut) error {
		if _, err := c.do(cmd.Context(), "revoke key "+args[0], http.MethodDelete, []string{"keys", args[0]}, nil, nil); err != nil {
			return err
		}
		if out.human {
			_, err := fmt.Fprintf(out.w, "Revoked key %s.\n", cell(args[0]))
			return err
		}
		return printJSON(out.w, struct {
			ID      string `json:"id"`
			Revoked bool   `json:"revoked"`
		}{args[0], true})
	})
}

// --- jobs

func (a *adminCmds) jobsCmd() *cobra.Command {
	return a.group("jobs", "List jobs across endpoints, show one, read its log (admin)", a.jobsListCmd(), a.jobsGetCmd(), a.jobsLogsCmd())
}

// jobInfo is a job as /api/jobs shows it.
type jobInfo struct {
	ID            string          `json:"id"`
	Status        string          `json:"status"`
	Endpoint      string          `json:"endpoint"`
	DelayTime     *int64          `json:"delayTime"`
	ExecutionTime *int64          `json:"executionTime"`
	Output        json.RawMessage `json:"output"`
	Error         *string         `json:"error"`
	WorkerID      string          `json:"workerId"`
	Retries       int             `json:"retries"`
	Input         json.RawMessage `json:"input"`
	Webhook       string          `json:"webhook"`
	Policy        struct {
		ExecutionTimeout int64 `json:"executionTimeout"`
		TTL              int64 `json:"ttl"`
		LowPriority      bool  `json:"lowPriority"`
	} `json:"policy"`
	Sync        bool   `json:"sync"`
	Attempt     int    `json:"attempt"`
	CreatedAt   string `json:"createdAt"`
	QueuedAt    string `json:"queuedAt"`
	TakenAt     string `json:"takenAt"`
	FinishedAt  string `json:"finishedAt"`
	HasS3Config bool   `json:"hasS3Config"`
	Position    int    `json:"position"`
	WaitMs      *int64 `json:"waitMs"`
	WaitReason  string `json:"waitReason"`
}

func optMs(ms *int64) string {
	if ms == nil {
		return ""
	}
	return fmtMs(*ms)
}

func (a *adminCmds) jobsListCmd() *cobra.Command {
	var (
		endpoint, before string
		statuses         []string
		limit            int
	)
	cmd := &cobra.Command{
		Use:     "list [--endpoint E] [--status S,S] [--limit N] [--before CURSOR]",
		Aliases: []string{"ls"},
		Short:   "List jobs, newest first",
		Long: fmt.Sprintf(`List jobs, newest first (GET /api/jobs): of every endpoint or of --endpoint, in any state or in
those of --status (IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED, TIMED_OUT). --limit is
at most %d (the server's default is 100). When there are more, the answer's "next" is the
--before of the next page; --before also takes a time (RFC 3339 or Unix milliseconds).
Piped, it prints the answer: {"jobs":[...],"next":...}.`, httpapi.MaxListJobs),
		Example: `  spool jobs list --endpoint sdxl --status failed,timed_out --limit 20`,
	}
	f := cmd.Flags()
	f.StringVar(&endpoint, "endpoint", "", "only the jobs of this endpoint")
	f.StringSliceVar(&statuses, "status", nil, "only the jobs in these states (comma-separated or repeated)")
	f.IntVar(&limit, "limit", 0, fmt.Sprintf("the most jobs to list, 1 to %d (default 100)", httpapi.MaxListJobs))
	f.StringVar(&before, "before", "", "list the jobs created before this cursor (a previous page's next) or time")
	a.endpointFlag(cmd)
	_ = cmd.RegisterFlagCompletionFunc("status", func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		var out []cobra.Completion
		for _, s := range spool.States {
			out = append(out, string(s))
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	})
	return a.leaf(cmd, cobra.NoArgs, func(cmd *cobra.Command, _ []string, c *adminClient, out *adminOut) error {
		q := url.Values{}
		if endpoint != "" {
			q.Set("endpoint", endpoint)
		}
		if len(statuses) > 0 {
			var states []string
			for _, s := range statuses {
				st := spool.State(strings.ToUpper(strings.TrimSpace(s)))
				if !st.Valid() {
					return usageErrorf("--status: %q is not a job state (IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED, TIMED_OUT)", s)
				}
				states = append(states, string(st))
			}
			q.Set("status", strings.Join(states, ","))
		}
		if cmd.Flags().Changed("limit") {
			if limit < 1 || limit > httpapi.MaxListJobs {
				return usageErrorf("--limit must be from 1 to %d, not %d", httpapi.MaxListJobs, limit)
			}
			q.Set("limit", strconv.Itoa(limit))
		}
		if cmd.Flags().Changed("before") {
			if strings.TrimSpace(before) == "" {
				return usageErrorf("--before must not be empty")
			}
			q.Set("before", strings.TrimSpace(before))
		}
		raw, err := c.do(cmd.Context(), "list jobs", http.MethodGet, []string{"jobs"}, q, nil)
		if err != nil {
			return err
		}
		if !out.human {
			return out.json(raw)
		}
		var v struct {
			Jobs []jobInfo `json:"jobs"`
			Next string    `json:"next"`
		}
		if err := decodeAnswer(raw, &v); err != nil {
			return err
		}
		if len(v.Jobs) == 0 {
			_, err := fmt.Fprintln(out.w, "No jobs.")
			return err
		}
		rows := [][]string{{"ID", "ENDPOINT", "STATUS", "CREATED", "DELAY", "EXECUTION", "WORKER"}}
		for _, j := range v.Jobs {
			rows = append(rows, []string{j.ID, j.Endpoint, j.Status, fmtTime(j.CreatedAt, tableTime),
				optMs(j.DelayTime), optMs(j.ExecutionTime), j.WorkerID})
		}
		if err := table(out.w, rows); err != nil {
			return err
		}
		if v.Next != "" {
			_, err := fmt.Fprintf(out.w, "\nMore: add --before %s\n", cell(v.Next))
			return err
		}
		return nil
	})
}

func (a *adminCmds) jobsGetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get JOB",
		Short: "Show a job of any endpoint: state, times, input, output",
		Long: `Show a job of any endpoint (GET /api/jobs/JOB): its state, worker, times, policy, input and
output or error, and for a queued job its place and why it waits. On a terminal, input and output
are cut to a line; -o json prints them whole.`,
	}
	return a.leaf(cmd, cobra.ExactArgs(1), func(cmd *cobra.Command, args []string, c *adminClient, out *adminOut) error {
		raw, err := c.do(cmd.Context(), "get job "+args[0], http.MethodGet, []string{"jobs", args[0]}, nil, nil)
		if err != nil {
			return err
		}
		if !out.human {
			return out.json(raw)
		}
		var j jobInfo
		if err := decodeAnswer(raw, &j); err != nil {
			return err
		}
		var l listing
		l.add("id", j.ID)
		l.add("endpoint", j.Endpoint)
		l.add("status", j.Status)
		if j.Position > 0 || j.WaitReason != "" {
			l.add("position", strconv.Itoa(j.Position))
			l.add("waiting", strings.TrimSpace(optMs(j.WaitMs)+", "+j.WaitReason))
		}
		if j.WorkerID != "" {
			l.add("worker", j.WorkerID)
		}
		l.add("attempt", strconv.Itoa(j.Attempt))
		if j.Retries > 0 {
			l.add("retries", strconv.Itoa(j.Retries))
		}
		for _, t := range [][2]string{{"createdAt", j.CreatedAt}, {"queuedAt", j.QueuedAt}, {"takenAt", j.TakenAt}, {"finishedAt", j.FinishedAt}} {
			if t[1] != "" {
				l.add(t[0], fmtTime(t[1], "2006-01-02 15:04:05.000"))
			}
		}
		if j.DelayTime != nil {
			l.add("delayTime", optMs(j.DelayTime))
		}
		if j.ExecutionTime != nil {
			l.add("executionTime", optMs(j.ExecutionTime))
		}
		policy := fmt.Sprintf("executionTimeout %s, ttl %s", fmtMs(j.Policy.ExecutionTimeout), fmtMs(j.Policy.TTL))
		if j.Policy.LowPriority {
			policy += ", low priority"
		}
		l.add("policy", policy)
		l.add("sync", yesNo(j.Sync))
		if j.Webhook != "" {
			l.add("webhook", j.Webhook)
		}
		if j.HasS3Config {
			l.add("s3Config", "set (never shown)")
		}
		if len(j.Input) > 0 {
			l.add("input", compactJSON(j.Input, 200))
		}
		if len(j.Output) > 0 {
			l.add("output", compactJSON(j.Output, 200))
		}
		if j.Error != nil {
			l.add("error", truncate(*j.Error, 500))
		}
		return l.print(out.w)
	})
}

// jobLogs is the answer of /api/jobs/{id}/logs.
type jobLogs struct {
	ID      string `json:"id"`
	Entries []struct {
		At      string `json:"at"`
		Worker  string `json:"worker"`
		Kind    string `json:"kind"`
		Level   string `json:"level"`
		Message string `json:"message"`
	} `json:"entries"`
	Dropped int `json:"dropped"`
}

func (a *adminCmds) jobsLogsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "logs JOB",
		Short: "Print what a job's workers logged and the progress they reported",
		Long: `Print a job's log (GET /api/jobs/JOB/logs): the lines its workers logged and the progress they
reported, oldest first. On a terminal one line per entry: TIME  WORKER  LEVEL  MESSAGE (LEVEL is
"progress" for a progress update). Piped, it prints the answer:
{"id","entries":[{"at","worker","kind","level","message"},...],"dropped"}.`,
	}
	return a.leaf(cmd, cobra.ExactArgs(1), func(cmd *cobra.Command, args []string, c *adminClient, out *adminOut) error {
		raw, err := c.do(cmd.Context(), "log of job "+args[0], http.MethodGet, []string{"jobs", args[0], "logs"}, nil, nil)
		if err != nil {
			return err
		}
		if !out.human {
			return out.json(raw)
		}
		var v jobLogs
		if err := decodeAnswer(raw, &v); err != nil {
			return err
		}
		if len(v.Entries) == 0 && v.Dropped == 0 {
			_, err := fmt.Fprintf(out.w, "No log entries for job %s.\n", cell(args[0]))
			return err
		}
		if v.Dropped > 0 {
			note := fmt.Sprintf("(%d earlier lines were not kept)", v.Dropped)
			if v.Dropped == 1 {
				note = "(1 earlier line was not kept)"
			}
			if _, err := fmt.Fprintln(out.w, note); err != nil {
				return err
			}
		}
		rows := make([][]string, 0, len(v.Entries))
		for _, e := range v.Entries {
			level := e.Level
			if level == "" && e.Kind == "progress" {
				level = "progress"
			}
			rows = append(rows, []string{fmtTime(e.At, "2006-01-02 15:04:05.000"), e.Worker, level, e.Message})
		}
		return table(out.w, rows)
	})
}

// --- workers

func (a *adminCmds) workersCmd() *cobra.Command {
	return a.group("workers", "List the workers Spool knows of (admin)", a.workersListCmd())
}

func (a *adminCmds) workersListCmd() *cobra.Command {
	var endpoint string
	cmd := &cobra.Command{
		Use:     "list [--endpoint E]",
		Aliases: []string{"ls"},
		Short:   "List the workers of every endpoint or of one",
		Long: `List the workers (GET /api/workers): those seen lately, and those Spool starts that have not
connected yet, with their state, the jobs they hold and when they were last seen. Piped, it prints
the answer: {"workers":[...],"coldStarts":{...}}.`,
	}
	cmd.Flags().StringVar(&endpoint, "endpoint", "", "only the workers of this endpoint")
	a.endpointFlag(cmd)
	return a.leaf(cmd, cobra.NoArgs, func(cmd *cobra.Command, _ []string, c *adminClient, out *adminOut) error {
		q := url.Values{}
		if endpoint != "" {
			q.Set("endpoint", endpoint)
		}
		raw, err := c.do(cmd.Context(), "list workers", http.MethodGet, []string{"workers"}, q, nil)
		if err != nil {
			return err
		}
		if !out.human {
			return out.json(raw)
		}
		var v struct {
			Workers []struct {
				ID        string   `json:"id"`
				Endpoint  string   `json:"endpoint"`
				State     string   `json:"state"`
				Jobs      []string `json:"jobs"`
				LastSeen  string   `json:"lastSeen"`
				Version   string   `json:"version"`
				UptimeMs  int64    `json:"uptimeMs"`
				Error     string   `json:"error"`
				GPUs      []string `json:"gpus"`
				FirstSeen string   `json:"firstSeen"`
			} `json:"workers"`
		}
		if err := decodeAnswer(raw, &v); err != nil {
			return err
		}
		if len(v.Workers) == 0 {
			_, err := fmt.Fprintln(out.w, "No workers.")
			return err
		}
		rows := [][]string{{"ID", "ENDPOINT", "STATE", "JOBS", "UPTIME", "LAST SEEN", "VERSION", "ERROR"}}
		for _, w := range v.Workers {
			uptime := ""
			if w.UptimeMs > 0 {
				uptime = fmtDuration((time.Duration(w.UptimeMs) * time.Millisecond).Truncate(time.Second))
			}
			id := w.ID
			if id == "" {
				id = "(starting)"
			}
			rows = append(rows, []string{id, w.Endpoint, w.State, strings.Join(w.Jobs, ","), uptime,
				fmtTime(w.LastSeen, tableTime), w.Version, truncate(w.Error, 60)})
		}
		return table(out.w, rows)
	})
}
