package spoolworker

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Version is the SDK version. Pings send it as runpod_version, and a recovered panic reports it
// in its error JSON, where runpod-python puts its own version.
const Version = "spoolworker/0.1.0"

// Config configures a Worker. The URL fields are the templates of the RunPod worker environment,
// exactly as runpod-python reads them: ConfigFromEnv fills them from that environment, and
// ConfigFor builds them for a Spool server. The SDK appends its parameters with '&', as
// runpod-python does, so templates should contain a '?' (Spool's and RunPod's do; one with no '?'
// at all gets one).
type Config struct {
	// TakeURL is the job-take template (RUNPOD_WEBHOOK_GET_JOB). "$ID" is replaced by WorkerID.
	// The batch take and the job-stop channel are derived from it by replacing "/job-take/" with
	// "/job-take-batch/" and "/job-stop/"; without "/job-take/" in it, batch takes go to the same
	// URL and there is no job-stop channel. Required by New.
	TakeURL string
	// DoneURL is the job-done template (RUNPOD_WEBHOOK_POST_OUTPUT) for results and progress.
	// "$RUNPOD_POD_ID" is replaced by WorkerID, "$ID" by the job id of each post. Required by New.
	DoneURL string
	// StreamURL is the job-stream template (RUNPOD_WEBHOOK_POST_STREAM), substituted like DoneURL.
	// Optional: without it a handler cannot stream.
	StreamURL string
	// PingURL is the heartbeat template (RUNPOD_WEBHOOK_PING); "$RUNPOD_POD_ID" is replaced by
	// WorkerID. Pings are sent only when PingURL and APIKey are both set.
	PingURL string
	// PingInterval is the time between pings (RUNPOD_PING_INTERVAL). Defaults to 10 s.
	PingInterval time.Duration
	// WorkerID names this worker in every URL (RUNPOD_POD_ID). It must be URL-safe: like
	// runpod-python, the SDK substitutes it without escaping. Defaults to a random UUID.
	WorkerID string
	// APIKey is sent verbatim as the Authorization header, with no "Bearer " prefix
	// (RUNPOD_AI_API_KEY).
	APIKey string
	// Hostname is reported in the error JSON of a recovered panic (RUNPOD_POD_HOSTNAME). Defaults
	// to "unknown".
	Hostname string

	// Concurrency is how many jobs run at once. Defaults to 1; change it at run time with
	// Worker.SetConcurrency.
	Concurrency int
	// AggregateStream makes the final output of a job whose handler returned an iterator the list
	// of every chunk, as runpod-python's return_aggregate_stream does; otherwise it is [].
	AggregateStream bool
	// RefreshWorker adds "stopPod": true to every result and makes Run return after the first job
	// ends, as runpod-python's refresh_worker setting does: the platform then restarts the worker.
	RefreshWorker bool

	// RetryBackoff holds the pauses between attempts of a result, progress or chunk post that
	// failed with a 5xx answer or a connection error: len(RetryBackoff)+1 attempts in all. 4xx
	// answers are never retried. Defaults to [2s, 3s], runpod-python's three Fibonacci attempts.
	RetryBackoff []time.Duration
	// PollFloor is the least time between the starts of two job-stop polls that brought nothing
	// (runpod-python sleeps 1 s after one), and of two job-take or job-stop polls after an error
	// answer or a connection failure, so a broken server is not polled in a tight loop. Defaults
	// to 1 s.
	PollFloor time.Duration
	// TakeTimeout bounds one job-take or job-stop long-poll; the SDK then polls again.
	// Defaults to 90 s, runpod-python's cut-off.
	TakeTimeout time.Duration

	// HTTPClient sends every request. It must not have a Timeout shorter than the server's
	// long-poll. Defaults to a client with its own transport, whose idle connections Run closes
	// when it returns.
	HTTPClient *http.Client
	// Logger defaults to slog.Default(). The SDK never logs inputs, outputs, s3Config or keys.
	Logger *slog.Logger
	// LocalOutput is where Start prints the result in local test mode. Defaults to os.Stdout.
	LocalOutput io.Writer

	// Getenv is the environment jobs see (Job.Getenv): the upload helpers of spoolworker/s3upload
	// read BUCKET_ENDPOINT_URL, BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY from it when a
	// job has no s3Config. Start sets it to its getenv; defaults to os.Getenv.
	Getenv func(string) string
	// Offloader, when set, stores a result whose JSON is over the offload threshold in the job's
	// s3Config bucket and posts what it returns as the output instead (s3upload.Offloader posts
	// {"outputUrl": <presigned URL>, "outputBytes": n, "contentType": "application/json"}). The
	// threshold is the job's endpoint's outputOffloadBytes, which the SDK asks Spool for with
	// ?include=offload, else OutputOffloadBytes. Jobs without an s3Config and streamed outputs are
	// never offloaded. Nil (the default) offloads nothing and asks for no threshold.
	Offloader Offloader
	// OutputOffloadBytes is the offload threshold for servers that send none (RunPod); it needs
	// an Offloader. 0, the default, leaves the threshold to the server.
	OutputOffloadBytes int64
}

// Defaults of Config.
const (
	DefaultPingInterval = 10 * time.Second
	DefaultPollFloor    = time.Second
	DefaultTakeTimeout  = 90 * time.Second
)

// MaxChunkSize bounds the body of one job-stream post ({"output": chunk}), as Spool does (1 MB).
const MaxChunkSize = 1 << 20

func (c Config) withDefaults() Config {
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.WorkerID == "" {
		c.WorkerID = newUUID()
	}
	if c.Hostname == "" {
		c.Hostname = "unknown"
	}
	if c.Concurrency == 0 {
		c.Concurrency = 1
	}
	if c.RetryBackoff == nil {
		c.RetryBackoff = []time.Duration{2 * time.Second, 3 * time.Second}
	}
	if c.PollFloor == 0 {
		c.PollFloor = DefaultPollFloor
	}
	if c.TakeTimeout == 0 {
		c.TakeTimeout = DefaultTakeTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Getenv == nil {
		c.Getenv = os.Getenv
	}
	return c
}

func (c Config) validate() error {
	for _, u := range []struct{ name, v string }{{"TakeURL", c.TakeURL}, {"DoneURL", c.DoneURL}} {
		if u.v == "" {
			return fmt.Errorf("spoolworker: %s is required (RUNPOD_WEBHOOK_GET_JOB / RUNPOD_WEBHOOK_POST_OUTPUT)", u.name)
		}
	}
	for _, u := range []struct{ name, v string }{
		{"TakeURL", c.TakeURL}, {"DoneURL", c.DoneURL}, {"StreamURL", c.StreamURL}, {"PingURL", c.PingURL},
	} {
		if u.v == "" {
			continue
		}
		p, err := url.Parse(u.v)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("spoolworker: %s must be an http(s) URL template", u.name)
		}
	}
	switch {
	case c.Concurrency < 0:
		return errors.New("spoolworker: Concurrency must not be negative")
	case c.PingInterval < 0 || c.PollFloor < 0 || c.TakeTimeout < 0:
		return errors.New("spoolworker: PingInterval, PollFloor and TakeTimeout must not be negative")
	case c.OutputOffloadBytes < 0:
		return errors.New("spoolworker: OutputOffloadBytes must not be negative")
	case c.OutputOffloadBytes > 0 && c.Offloader == nil:
		return errors.New("spoolworker: OutputOffloadBytes needs an Offloader (s3upload.Offloader stores outputs in the job's bucket)")
	}
	for _, d := range c.RetryBackoff {
		if d < 0 {
			return errors.New("spoolworker: RetryBackoff must not hold negative durations")
		}
	}
	return nil
}

// The environment variables a RunPod worker reads (docs/worker-protocol.md §1.1).
const (
	EnvTakeURL      = "RUNPOD_WEBHOOK_GET_JOB"
	EnvDoneURL      = "RUNPOD_WEBHOOK_POST_OUTPUT"
	EnvStreamURL    = "RUNPOD_WEBHOOK_POST_STREAM"
	EnvPingURL      = "RUNPOD_WEBHOOK_PING"
	EnvPingInterval = "RUNPOD_PING_INTERVAL"
	EnvWorkerID     = "RUNPOD_POD_ID"
	EnvAPIKey       = "RUNPOD_AI_API_KEY"
	EnvHostname     = "RUNPOD_POD_HOSTNAME"
)

// ConfigFromEnv reads the environment runpod-python reads, through getenv (os.Getenv in a real
// worker), into the fields it names; the other fields are left zero. Like runpod-python:
//   - RUNPOD_PING_INTERVAL is in milliseconds, integer-divided into whole seconds; values under
//     1000 give 1 s (runpod-python would ping in a busy loop), and unset gives 10 s;
//   - without RUNPOD_POD_ID the worker id is a random UUID and no pings are sent (PingURL is left
//     empty), as also without RUNPOD_AI_API_KEY.
//
// An unset RUNPOD_WEBHOOK_GET_JOB leaves TakeURL empty, which Start takes for local test mode.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	cfg := Config{
		TakeURL:      getenv(EnvTakeURL),
		DoneURL:      getenv(EnvDoneURL),
		StreamURL:    getenv(EnvStreamURL),
		PingURL:      getenv(EnvPingURL),
		PingInterval: DefaultPingInterval,
		WorkerID:     getenv(EnvWorkerID),
		APIKey:       getenv(EnvAPIKey),
		Hostname:     getenv(EnvHostname),
	}
	if v := strings.TrimSpace(getenv(EnvPingInterval)); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil {
			return Config{}, fmt.Errorf("spoolworker: %s=%q: want an integer number of milliseconds", EnvPingInterval, v)
		}
		cfg.PingInterval = time.Duration(max(ms/1000, 1)) * time.Second
	}
	if cfg.WorkerID == "" {
		cfg.WorkerID = newUUID()
		cfg.PingURL = ""
	}
	if cfg.APIKey == "" {
		cfg.PingURL = ""
	}
	return cfg, nil
}

// ConfigFor returns the URL templates of a Spool server (serverURL such as
// "http://127.0.0.1:8080", without /v2) for one endpoint, and the key: the same templates Spool
// hands the workers it starts. Pings are on. Set the other fields as needed.
func ConfigFor(serverURL, endpoint, apiKey string) Config {
	base := strings.TrimRight(serverURL, "/") + "/v2/" + endpoint
	return Config{
		TakeURL:   base + "/job-take/$ID?",
		DoneURL:   base + "/job-done/$RUNPOD_POD_ID/$ID?",
		StreamURL: base + "/job-stream/$RUNPOD_POD_ID/$ID?",
		PingURL:   base + "/ping/$RUNPOD_POD_ID?",
		APIKey:    apiKey,
	}
}

// newUUID returns a random (version 4) UUID, as runpod-python's default worker id.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
