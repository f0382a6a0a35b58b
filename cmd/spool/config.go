package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/httpapi"
	"github.com/spool-run/spool/internal/httplimit"
	"github.com/spool-run/spool/internal/secret"
	"github.com/spool-run/spool/internal/webhook"
)

// fileConfig is the YAML config file (spool.yaml). Every field is optional.
type fileConfig struct {
	// Addr is the listen address. Defaults to 127.0.0.1:8080.
	Addr string `yaml:"addr"`
	// Data is the data directory (the SQLite file lives there). Defaults to ./spool-data.
	Data string `yaml:"data"`
	// Store is sqlite (the default: the embedded store in Data) or a postgres:// URL, for
	// several replicas on one PostgreSQL database. The URL's password may instead come from
	// PGPASSWORD or a password file (PGPASSFILE, ~/.pgpass); it is never logged.
	Store string `yaml:"store"`
	// LogLevel is debug, info, warn or error. Defaults to info.
	LogLevel string `yaml:"logLevel"`
	// LogFormat is text (key=value lines) or json (one object per line). Defaults to text.
	LogFormat string `yaml:"logFormat"`
	// Retention is how long results stay readable.
	Retention struct {
		// Run defaults to 30m; Runsync to 1m.
		Run     time.Duration `yaml:"run"`
		Runsync time.Duration `yaml:"runsync"`
	} `yaml:"retention"`
	Workers struct {
		// LostAfter: a worker unseen this long loses its jobs. Defaults to 30s.
		LostAfter time.Duration `yaml:"lostAfter"`
		// MaxRetries: automatic requeues of a job after lost workers. Defaults to 3.
		MaxRetries int `yaml:"maxRetries"`
		// TakeWait is how long job-take and job-stop long-polls wait. Defaults to 20s; under 90s
		// and under LostAfter, so that a worker is seen again before it could be declared lost.
		TakeWait time.Duration `yaml:"takeWait"`
		// GPUs is the node's GPU pool handed to endpoints with gpuCount (CUDA_VISIBLE_DEVICES
		// ids). Defaults to the GPUs `nvidia-smi -L` lists, or none.
		GPUs []string `yaml:"gpus"`
		// InitTimeout: a started worker that has not asked for a job by then is unhealthy.
		// Defaults to 2m.
		InitTimeout time.Duration `yaml:"initTimeout"`
		// StopGrace is the time between SIGTERM and SIGKILL when Spool stops a worker.
		// Defaults to 30s.
		StopGrace time.Duration `yaml:"stopGrace"`
		// CancelGrace: a worker still running a cancelled or timed-out job after this long is
		// killed and replaced. Defaults to 10s.
		CancelGrace time.Duration `yaml:"cancelGrace"`
		// Docker is the daemon that runs the workers of endpoints with a worker image.
		Docker struct {
			// Host is its address (unix:///var/run/docker.sock, tcp://…): by default
			// DOCKER_HOST, else the default socket; "off" runs no containers.
			Host string `yaml:"host"`
			// Network is the containers' network mode. Defaults to host, so that workers reach
			// Spool at its own address.
			Network string `yaml:"network"`
			// ServerURL is where containers reach Spool when they do not share the host's
			// network (e.g. http://host.docker.internal:8080); by default Spool's own address.
			ServerURL string `yaml:"serverURL"`
		} `yaml:"docker"`
		// Kubernetes, when Namespace is set, runs the workers of endpoints with a worker image as
		// pods of a cluster instead of containers of a Docker daemon.
		Kubernetes struct {
			// Namespace holds the workers' pods.
			Namespace string `yaml:"namespace"`
			// Kubeconfig is a kubeconfig file; empty: the pod's own service account (in-cluster).
			Kubeconfig string `yaml:"kubeconfig"`
			// ServerURL is where pods reach Spool, its Service (http://spool.spool.svc:8080).
			// Required with Namespace.
			ServerURL string `yaml:"serverURL"`
			// Instance labels this Spool's pods (run.spool/instance), so that several in one
			// namespace keep apart. Defaults to spool.
			Instance string `yaml:"instance"`
		} `yaml:"kubernetes"`
	} `yaml:"workers"`
	Limits struct {
		// Body limits in bytes. Defaults: run 10 MB, runsync 20 MB, result 20 MB, chunk 1 MB.
		Run     int64 `yaml:"run"`
		Runsync int64 `yaml:"runsync"`
		Result  int64 `yaml:"result"`
		Chunk   int64 `yaml:"chunk"`
		// Connections caps the client connections open at once; at the cap, connections that
		// have not sent a whole request are closed first. Defaults to 3/4 of the file
		// descriptor limit.
		Connections int `yaml:"connections"`
		// BodyMemory bounds the bytes of request bodies being received at once (503 beyond).
		// Defaults to 256 MiB; at least the largest body limit.
		BodyMemory int64 `yaml:"bodyMemory"`
		// BodyTimeout plus the body's size at BodyMinRate (bytes per second) is how long a body
		// may take to arrive (408 beyond). Defaults: 10s and 65536 (64 KiB/s).
		BodyTimeout time.Duration `yaml:"bodyTimeout"`
		BodyMinRate int64         `yaml:"bodyMinRate"`
	} `yaml:"limits"`
	// ShutdownGrace is how long in-flight requests get to finish on SIGTERM. Defaults to 10s.
	ShutdownGrace time.Duration `yaml:"shutdownGrace"`
	// TLS serves HTTPS instead of HTTP when both files are set; SIGHUP loads them again.
	TLS struct {
		// CertFile is the PEM certificate chain, KeyFile its PEM private key.
		CertFile string `yaml:"certFile"`
		KeyFile  string `yaml:"keyFile"`
	} `yaml:"tls"`
	// Debug holds what operators turn on to look inside a running server.
	Debug struct {
		// PprofAddr, when set, serves Go's /debug/pprof/ on its own listener, to admin keys
		// only (profiles show code paths and timings, not data). SPOOL_PPROF_ADDR overrides it.
		PprofAddr string `yaml:"pprofAddr"`
	} `yaml:"debug"`
	// Webhooks configures webhook delivery (per-endpoint schedules and secrets are endpoint
	// settings).
	Webhooks struct {
		// AllowCIDRs are networks webhooks may reach although the SSRF guard refuses loopback,
		// private, link-local, CGNAT and other special addresses: receivers on a private network.
		// CIDRs or single addresses. SPOOL_WEBHOOK_ALLOW_CIDRS (comma-separated) adds to them.
		AllowCIDRs []string `yaml:"allowCIDRs"`
		// Concurrency bounds the deliveries in flight. Defaults to 32.
		Concurrency int `yaml:"concurrency"`
		// PerHost bounds the deliveries in flight to one receiver (host:port). Defaults to 4.
		PerHost int `yaml:"perHost"`
		// Retention is how long finished deliveries stay listed by /api/jobs/{id}/webhook.
		// Defaults to 168h (7 days).
		Retention time.Duration `yaml:"retention"`
	} `yaml:"webhooks"`
	// Secrets configures the key that encrypts job s3Configs at rest.
	Secrets struct {
		// KeyFile holds the key: the base64 of 32 random bytes, readable by its owner only
		// (mode 0600 or 0400). Defaults to <data>/secret.key, created on first start.
		// SPOOL_SECRET_KEY (the base64 key itself) takes precedence.
		KeyFile string `yaml:"keyFile"`
	} `yaml:"secrets"`
	// Keys are keys given by the hash of their secret ("sha256:<hex>", see `spool hash-key`).
	Keys []spool.Key `yaml:"keys"`
	// FileEndpoints are created or updated at every start (config.Endpoints once read).
	FileEndpoints []fileEndpoint `yaml:"endpoints"`
}

// config is the effective configuration: file, then environment, then flags.
type config struct {
	fileConfig
	Path     string // the config file read, "" if none
	AdminKey string // from SPOOL_ADMIN_KEY; never logged
	// SecretKey is SPOOL_SECRET_KEY, the base64 key that encrypts s3Configs at rest; never logged.
	SecretKey string
	// WebhookAllowCIDRs is webhooks.allowCIDRs plus SPOOL_WEBHOOK_ALLOW_CIDRS, parsed.
	WebhookAllowCIDRs []netip.Prefix
	// WebhookAllowLoopback lets webhooks reach 127.0.0.0/8 and ::1 (spool dev sets it).
	WebhookAllowLoopback bool
	// Endpoints are the file's endpoints, over their defaults and validated.
	Endpoints []spool.Endpoint
}

const defaultConfigPath = "spool.yaml"

// loadConfig reads the config file (path "" means ./spool.yaml if it exists), applies the
// environment, fills in defaults and validates.
func loadConfig(path string, getenv func(string) string) (*config, error) {
	c := &config{}
	explicit := path != ""
	if !explicit {
		path = getenv("SPOOL_CONFIG")
		explicit = path != ""
	}
	if !explicit {
		path = defaultConfigPath
	}
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		c.Path = path
		if err := c.readFile(b); err != nil {
			return nil, err
		}
	case errors.Is(err, fs.ErrNotExist) && !explicit:
		// No config file is fine: Spool runs on its defaults.
	default:
		return nil, fmt.Errorf("config: %w", err)
	}
	for _, o := range []struct {
		env string
		dst *string
	}{{"SPOOL_ADDR", &c.Addr}, {"SPOOL_DATA", &c.Data}, {"SPOOL_STORE", &c.Store}, {"SPOOL_LOG_LEVEL", &c.LogLevel}, {"SPOOL_LOG_FORMAT", &c.LogFormat}, {"SPOOL_PPROF_ADDR", &c.Debug.PprofAddr},
		{"SPOOL_TLS_CERT", &c.TLS.CertFile}, {"SPOOL_TLS_KEY", &c.TLS.KeyFile}} {
		if v := getenv(o.env); v != "" {
			*o.dst = v
		}
	}
	c.AdminKey = getenv("SPOOL_ADMIN_KEY")
	c.SecretKey = getenv("SPOOL_SECRET_KEY")
	if v := getenv("SPOOL_WEBHOOK_ALLOW_CIDRS"); v != "" {
		c.Webhooks.AllowCIDRs = append(c.Webhooks.AllowCIDRs, strings.Split(v, ",")...)
	}
	c.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// readFile reads the config file's content b: its shape is checked setting by setting first, so
// that a mistake is reported in the file's words.
func (c *config) readFile(b []byte) error {
	fc := fileChecker{file: c.Path}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fc.yamlError(err)
	}
	if doc.Kind == 0 {
		return nil // an empty file: the defaults
	}
	if err := fc.check(&doc, reflect.TypeFor[fileConfig](), ""); err != nil {
		return err
	}
	if err := doc.Decode(&c.fileConfig); err != nil {
		return fc.yamlError(err)
	}
	for i, fe := range c.FileEndpoints {
		ep, err := fe.endpoint()
		if err != nil {
			return fmt.Errorf("%s:%d: endpoints[%d] (%q): %w", c.Path, fe.line, i, fe.Name, err)
		}
		c.Endpoints = append(c.Endpoints, ep)
	}
	return nil
}

func (c *config) withDefaults() {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:8080"
	}
	if c.Data == "" {
		c.Data = "./spool-data"
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.LogFormat == "" {
		c.LogFormat = "text"
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = 10 * time.Second
	}
	if c.Workers.TakeWait == 0 {
		c.Workers.TakeWait = 20 * time.Second
	}
	if c.Workers.LostAfter == 0 {
		c.Workers.LostAfter = 30 * time.Second
	}
	for _, l := range []struct {
		v   *int64
		def int64
	}{
		{&c.Limits.Run, httpapi.DefaultRunLimit}, {&c.Limits.Runsync, httpapi.DefaultRunSyncLimit},
		{&c.Limits.Result, httpapi.DefaultResultLimit}, {&c.Limits.Chunk, httpapi.DefaultChunkLimit},
		{&c.Limits.BodyMemory, httplimit.DefaultBodyMemory}, {&c.Limits.BodyMinRate, httplimit.DefaultBodyMinRate},
	} {
		if *l.v == 0 {
			*l.v = l.def
		}
	}
	if c.Limits.BodyTimeout == 0 {
		c.Limits.BodyTimeout = httplimit.DefaultBodyTimeout
	}
	for i := range c.Endpoints {
		c.Endpoints[i].Source = "config"
	}
	for i := range c.Keys {
		c.Keys[i].Source = "config"
		if c.Keys[i].ID == "" {
			c.Keys[i].ID = "config-" + c.Keys[i].Name
		}
	}
}

// gpuID is a GPU as CUDA_VISIBLE_DEVICES names it: an index or a UUID.
var gpuID = regexp.MustCompile(`^([0-9]+|(GPU|MIG)-[0-9A-Za-z/-]+)$`)

// errorf is an error about the configuration, prefixed with the file it was read from.
func (c *config) errorf(format string, args ...any) error {
	src := "config"
	if c.Path != "" {
		src = c.Path
	}
	return fmt.Errorf("%s: "+format, append([]any{src}, args...)...)
}

func (c *config) validate() error {
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return c.errorf("logFormat (or SPOOL_LOG_FORMAT, --log-format) must be text or json, got %q", c.LogFormat)
	}
	if err := checkStoreSetting(c.Store); err != nil {
		return err
	}
	if err := checkTLSSetting(c.TLS.CertFile, c.TLS.KeyFile); err != nil {
		return c.errorf("%w", err)
	}
	if u := c.Workers.Docker.ServerURL; u != "" {
		if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return c.errorf("workers.docker.serverURL must be an http(s) URL such as http://host.docker.internal:8080, not %q", u)
		}
	}
	if k := c.Workers.Kubernetes; k.Namespace != "" {
		if p, err := url.Parse(k.ServerURL); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return c.errorf("workers.kubernetes.serverURL must be the http(s) URL where pods reach Spool, such as http://spool.spool.svc:8080, not %q", k.ServerURL)
		}
	} else if k.Kubeconfig != "" || k.ServerURL != "" {
		return c.errorf("workers.kubernetes needs a namespace to run workers as pods")
	}
	if c.Workers.TakeWait < time.Second || c.Workers.TakeWait >= 90*time.Second {
		return c.errorf("workers.takeWait must be between 1s and 90s (runpod-python gives up at 90s), got %s", c.Workers.TakeWait)
	}
	if c.Workers.LostAfter <= c.Workers.TakeWait {
		return c.errorf("workers.lostAfter (%s) must be longer than workers.takeWait (%s), or a worker waiting in a long-poll could be declared lost", c.Workers.LostAfter, c.Workers.TakeWait)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"retention.run", c.Retention.Run}, {"retention.runsync", c.Retention.Runsync},
		{"workers.lostAfter", c.Workers.LostAfter}, {"shutdownGrace", c.ShutdownGrace}} {
		if d.v < 0 {
			return c.errorf("%s must not be negative", d.name)
		}
	}
	if c.Workers.MaxRetries < 0 {
		return c.errorf("workers.maxRetries must not be negative")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"workers.initTimeout", c.Workers.InitTimeout}, {"workers.stopGrace", c.Workers.StopGrace},
		{"workers.cancelGrace", c.Workers.CancelGrace}} {
		if d.v < 0 {
			return c.errorf("%s must not be negative", d.name)
		}
	}
	gpus := map[string]bool{}
	for i, g := range c.Workers.GPUs {
		if !gpuID.MatchString(g) || gpus[g] {
			return c.errorf("workers.gpus[%d] (%q): GPU ids are distinct indices (\"0\") or UUIDs (\"GPU-…\", \"MIG-…\"), one per entry, as nvidia-smi -L lists them", i, g)
		}
		gpus[g] = true
	}
	if c.SecretKey != "" {
		if _, err := secret.ParseKey(c.SecretKey); err != nil {
			return c.errorf("SPOOL_SECRET_KEY: %w", err)
		}
	}
	c.WebhookAllowCIDRs = nil
	for _, s := range c.Webhooks.AllowCIDRs {
		if strings.TrimSpace(s) == "" {
			continue
		}
		p, err := webhook.ParseCIDR(s)
		if err != nil {
			return c.errorf("webhooks.allowCIDRs (or SPOOL_WEBHOOK_ALLOW_CIDRS): %w", err)
		}
		c.WebhookAllowCIDRs = append(c.WebhookAllowCIDRs, p)
	}
	if c.Webhooks.Concurrency < 0 || c.Webhooks.PerHost < 0 || c.Webhooks.Retention < 0 {
		return c.errorf("webhooks.concurrency, webhooks.perHost and webhooks.retention must not be negative")
	}
	for _, l := range []struct {
		name string
		v    int64
	}{
		{"limits.run", c.Limits.Run}, {"limits.runsync", c.Limits.Runsync}, {"limits.result", c.Limits.Result},
		{"limits.chunk", c.Limits.Chunk}, {"limits.connections", int64(c.Limits.Connections)},
		{"limits.bodyMemory", c.Limits.BodyMemory}, {"limits.bodyTimeout", int64(c.Limits.BodyTimeout)},
		{"limits.bodyMinRate", c.Limits.BodyMinRate},
	} {
		if l.v < 0 {
			return c.errorf("%s must not be negative", l.name)
		}
	}
	if c.Limits.BodyMemory < c.maxBody() {
		return c.errorf("limits.bodyMemory (%d) must be at least the largest body limit (%d), or no such body could ever be received",
			c.Limits.BodyMemory, c.maxBody())
	}
	seen := map[string]bool{}
	for i, ep := range c.Endpoints {
		if err := ep.Validate(); err != nil {
			return c.errorf("endpoints[%d] (%q): %s", i, ep.Name, spool.ErrorMessage(err))
		}
		if seen[ep.Name] {
			return c.errorf("endpoint %q is defined twice", ep.Name)
		}
		seen[ep.Name] = true
	}
	ids := map[string]bool{}
	for i, k := range c.Keys {
		switch {
		case k.Name == "":
			return c.errorf("keys[%d]: name is required", i)
		case !k.Scope.Valid():
			return c.errorf("keys[%d] (%s): scope must be admin, client or worker", i, k.Name)
		case !strings.HasPrefix(k.Hash, "sha256:") || len(k.Hash) != len("sha256:")+64:
			return c.errorf("keys[%d] (%s): hash must be \"sha256:<64 hex digits>\" (see `spool hash-key`); plaintext keys do not belong in a config file", i, k.Name)
		case ids[k.ID]:
			return c.errorf("keys[%d]: duplicate key name %q", i, k.Name)
		}
		ids[k.ID] = true
	}
	return nil
}

// newLogger makes the server's logger: cfg's level and format, on w.
func newLogger(cfg *config, w io.Writer) *slog.Logger {
	level, _ := parseLevel(cfg.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("config: logLevel must be debug, info, warn or error, got %q", s)
	}
	return l, nil
}

// maxBody is the largest body any route accepts.
func (c *config) maxBody() int64 {
	return max(c.Limits.Run, c.Limits.Runsync, c.Limits.Result, c.Limits.Chunk, httpapi.DefaultAdminLimit)
}
