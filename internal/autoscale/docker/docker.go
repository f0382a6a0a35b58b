// Package docker is the container provider of the autoscaler: each worker is a container of the
// endpoint's image, run by a Docker Engine (or podman's Docker-compatible socket) through its API,
// with the RunPod environment, its GPUs as device requests, and its output kept for /api/workers.
package docker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/autoscale"
	"github.com/spool-run/spool/internal/logring"
)

// Labels Spool puts on its containers: they say whose the container is, so that a restart finds
// what a previous run left.
const (
	LabelInstance = "run.spool.instance"
	LabelEndpoint = "run.spool.endpoint"
	LabelWorker   = "run.spool.worker"
)

// Config configures a Provider.
type Config struct {
	// Host is the daemon's address (unix:///var/run/docker.sock, tcp://…); "" takes DOCKER_HOST
	// or the default socket.
	Host string
	// Instance names this Spool server among those that share the daemon: its containers carry
	// it, and New removes the containers a previous run of the same instance left. Required.
	Instance string
	// Network is the containers' network mode. Defaults to "host", so that a worker reaches the
	// server at the address the autoscaler gives it.
	Network string
	// LogLines is how many lines of each worker's output are kept. Defaults to 200.
	LogLines int
	// OnLine, when set, is told of every line a worker writes (the per-job log index).
	OnLine func(worker, line string)
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Provider runs workers as containers. It is safe for concurrent use.
type Provider struct {
	cfg Config
	cli *client.Client
	log *slog.Logger

	mu      sync.Mutex
	workers map[string]*worker
	wg      sync.WaitGroup
}

type worker struct {
	id     string
	logs   *logring.Ring
	status string // what it is doing before it runs: "pulling image 43%"
	// container is its container's id once created; stopAsked: a Stop or Kill came before.
	container string
	stopAsked bool
	// stopUntil is set by Stop: the container is draining (SIGTERM sent) and gets until then.
	stopUntil time.Time
	cancel    context.CancelFunc
	done      chan struct{} // closed once it has exited and its container is removed
}

var _ autoscale.Provider = (*Provider)(nil)

// New connects to the daemon and removes the containers a previous run of cfg.Instance left
// behind: this run does not know them as its workers (its autoscaler starts those it needs), so
// left running they would take jobs nobody manages.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	if cfg.Instance == "" {
		return nil, errors.New("docker: Instance is required")
	}
	if cfg.Network == "" {
		cfg.Network = "host"
	}
	if cfg.LogLines == 0 {
		cfg.LogLines = 200
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if cfg.Host != "" {
		opts = append(opts, client.WithHost(cfg.Host))
	}
	cli, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker: %w", err)
	}
	p := &Provider{cfg: cfg, cli: cli, log: cfg.Logger, workers: map[string]*worker{}}
	if _, err := cli.Ping(ctx); err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("docker: the daemon at %s does not answer: %w", cli.DaemonHost(), err)
	}
	if err := p.removeLeftovers(ctx); err != nil {
		_ = cli.Close()
		return nil, err
	}
	return p, nil
}

func (p *Provider) removeLeftovers(ctx context.Context) error {
	left, err := p.cli.ContainerList(ctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", LabelInstance+"="+p.cfg.Instance))})
	if err != nil {
		return fmt.Errorf("docker: list the containers of a previous run: %w", err)
	}
	for _, c := range left {
		if err := p.cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("docker: remove container %s of a previous run: %w", c.Labels[LabelWorker], err)
		}
		p.log.Info("removed a worker container of a previous run", "worker", c.Labels[LabelWorker], "endpoint", c.Labels[LabelEndpoint])
	}
	return nil
}

// Start implements autoscale.Provider. It returns at once: the image is pulled, and the
// container created and started, in the background, and a failure on the way is the worker's
// exit (so that the autoscaler backs off and says why).
func (p *Provider) Start(_ context.Context, w autoscale.WorkerSpec, exited func(autoscale.Exit)) error {
	if w.Spec.Image == "" {
		return fmt.Errorf("start worker %s: no image", w.WorkerID)
	}
	ctx, cancel := context.WithCancel(context.Background())
	wk := &worker{id: w.WorkerID, logs: logring.New(p.cfg.LogLines), status: "starting", cancel: cancel, done: make(chan struct{})}
	p.mu.Lock()
	if _, dup := p.workers[w.WorkerID]; dup {
		p.mu.Unlock()
		cancel()
		return fmt.Errorf("start worker %s: already running", w.WorkerID)
	}
	p.workers[w.WorkerID] = wk
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer cancel()
		err := p.run(ctx, wk, w)
		close(wk.done)
		p.mu.Lock()
		delete(p.workers, w.WorkerID)
		p.mu.Unlock()
		exited(autoscale.Exit{ID: w.WorkerID, Err: err, Logs: wk.logs.Lines()})
	}()
	return nil
}

// run is a worker's life: image, container, output, exit. It returns nil for exit status 0.
func (p *Provider) run(ctx context.Context, wk *worker, w autoscale.WorkerSpec) error {
	if err := p.ensureImage(ctx, wk, w.Spec); err != nil {
		return err
	}
	cfg, host := containerConfig(p.cfg, w)
	created, err := p.cli.ContainerCreate(ctx, cfg, host, nil, nil, containerName(w))
	if err != nil {
		if ctx.Err() != nil {
			// Stopped while the daemon created it: it may exist all the same.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			_ = p.cli.ContainerRemove(rctx, containerName(w), container.RemoveOptions{Force: true, RemoveVolumes: true})
			return errors.New("stopped before it started")
		}
		return fmt.Errorf("create container: %w", err)
	}
	// Removed whatever happens next; the output is read before.
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := p.cli.ContainerRemove(rctx, created.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
			p.log.Warn("remove a worker container", "worker", w.WorkerID, "err", err)
		}
	}()
	p.mu.Lock()
	wk.container, wk.status = created.ID, ""
	stopAsked := wk.stopAsked
	p.mu.Unlock()
	if stopAsked {
		return errors.New("stopped before it started")
	}
	waitCh, waitErr := p.cli.ContainerWait(ctx, created.ID, container.WaitConditionNextExit)
	if err := p.cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return fmt.Errorf("start container: %w", err)
	}
	logsDone := make(chan struct{})
	go func() {
		defer close(logsDone)
		p.follow(ctx, wk, created.ID)
	}()
	var exit error
	select {
	case r := <-waitCh:
		switch {
		case r.Error != nil && r.Error.Message != "":
			exit = errors.New(r.Error.Message)
		case r.StatusCode != 0:
			exit = fmt.Errorf("exit status %d", r.StatusCode)
		}
	case err := <-waitErr:
		exit = fmt.Errorf("wait for the container: %w", err)
	}
	select {
	case <-logsDone:
	case <-time.After(5 * time.Second): // the daemon keeps the stream open a moment
	}
	return exit
}

// containerName names a worker's container after it, for `docker ps`.
func containerName(w autoscale.WorkerSpec) string {
	return "spool-" + w.WorkerID
}

// containerConfig is the container of a worker: the image, its command when args are given, the
// spec's env with the RunPod environment over it (never the server's own environment), labels,
// no restart (Spool decides restarts), the mounts and the GPUs as device requests.
func containerConfig(cfg Config, w autoscale.WorkerSpec) (*container.Config, *container.HostConfig) {
	env := maps.Clone(w.Spec.Env)
	if env == nil {
		env = map[string]string{}
	}
	maps.Copy(env, w.Env)
	host := &container.HostConfig{
		NetworkMode:   container.NetworkMode(cfg.Network),
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
	}
	if len(w.GPUs) > 0 {
		// The runtime shows the container its devices, numbered from 0: the host's ids in
		// CUDA_VISIBLE_DEVICES would name devices the container does not have.
		delete(env, "CUDA_VISIBLE_DEVICES")
		delete(env, "NVIDIA_VISIBLE_DEVICES")
		host.DeviceRequests = []container.DeviceRequest{{Driver: "nvidia", DeviceIDs: slices.Clone(w.GPUs), Capabilities: [][]string{{"gpu"}}}}
	} else {
		// Where nvidia is the default runtime, a CUDA image's own NVIDIA_VISIBLE_DEVICES=all would
		// show it every GPU of the host, outside the pool.
		env["NVIDIA_VISIBLE_DEVICES"] = "void"
	}
	if cfg.Network != "host" {
		// So that workers.docker.serverURL can name the host as host.docker.internal on Linux too.
		host.ExtraHosts = []string{"host.docker.internal:host-gateway"}
	}
	for _, m := range w.Spec.Mounts {
		host.Mounts = append(host.Mounts, mount.Mount{Type: mount.TypeBind, Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly})
	}
	c := &container.Config{
		Image:      w.Spec.Image,
		WorkingDir: w.Spec.Dir,
		Labels:     map[string]string{LabelInstance: cfg.Instance, LabelEndpoint: w.Endpoint, LabelWorker: w.WorkerID},
	}
	if len(w.Spec.Args) > 0 {
		c.Cmd = slices.Clone(w.Spec.Args)
	}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		c.Env = append(c.Env, k+"="+env[k])
	}
	return c, host
}

// ensureImage pulls the image as the spec's pull policy says, showing the progress as the
// worker's status.
func (p *Provider) ensureImage(ctx context.Context, wk *worker, spec spool.WorkerSpec) error {
	policy := spec.Pull
	if policy == "" {
		policy = spool.PullMissing
	}
	if policy != spool.PullAlways {
		_, err := p.cli.ImageInspect(ctx, spec.Image)
		switch {
		case err == nil:
			return nil
		case !cerrdefs.IsNotFound(err):
			return fmt.Errorf("inspect image %s: %w", spec.Image, err)
		case policy == spool.PullNever:
			return fmt.Errorf("image %s is not on the host, and its pull policy is never", spec.Image)
		}
	}
	opts := image.PullOptions{}
	if a := spec.RegistryAuth; a != nil {
		pw, err := os.ReadFile(a.PasswordFile)
		if err != nil {
			return fmt.Errorf("registry password file: %w", err)
		}
		opts.RegistryAuth, err = registry.EncodeAuthConfig(registry.AuthConfig{Username: a.Username,
			Password: strings.TrimSpace(string(pw)), ServerAddress: a.ServerAddress})
		if err != nil {
			return fmt.Errorf("registry auth: %w", err)
		}
	}
	p.setStatus(wk, "pulling image")
	rc, err := p.cli.ImagePull(ctx, spec.Image, opts)
	if err != nil {
		return fmt.Errorf("pull %s: %w", spec.Image, err)
	}
	defer rc.Close()
	return readPull(spec.Image, rc, func(status string) { p.setStatus(wk, status) })
}

// readPull follows a pull's progress messages: the share of the layers' bytes downloaded is the
// status it reports, and an error message ends the pull.
func readPull(ref string, r io.Reader, status func(string)) error {
	type layer struct{ current, total int64 }
	layers := map[string]layer{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 16<<10), 1<<20) // one message per line; none is near a megabyte
	for sc.Scan() {
		var m struct {
			Status   string `json:"status"`
			ID       string `json:"id"`
			Progress struct {
				Current int64 `json:"current"`
				Total   int64 `json:"total"`
			} `json:"progressDetail"`
			Error string `json:"error"`
		}
		if len(strings.TrimSpace(sc.Text())) == 0 {
			continue
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return fmt.Errorf("pull %s: read progress: %w", ref, err)
		}
		if m.Error != "" {
			return fmt.Errorf("pull %s: %s", ref, m.Error)
		}
		if m.ID != "" && m.Progress.Total > 0 && m.Status == "Downloading" {
			layers[m.ID] = layer{m.Progress.Current, m.Progress.Total}
		}
		if m.ID != "" && (m.Status == "Download complete" || m.Status == "Pull complete" || m.Status == "Already exists") {
			if l, ok := layers[m.ID]; ok {
				layers[m.ID] = layer{l.total, l.total}
			}
		}
		var cur, total int64
		for _, l := range layers {
			cur, total = cur+l.current, total+l.total
		}
		if total > 0 {
			status(fmt.Sprintf("pulling image %d%%", int(math.Floor(100*float64(cur)/float64(total)))))
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("pull %s: read progress: %w", ref, err)
	}
	return nil
}

func (p *Provider) setStatus(wk *worker, s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	wk.status = s
}

// maxLogLine bounds a line read from a worker's output; the rest of a longer line is dropped.
// runpod-python cuts a message at 4,096 characters, and its JSON wrapping must fit too, so that
// the job log index can still parse the line: json.dumps escapes every non-ASCII character, up to
// 12 bytes for one (a surrogate pair).
const maxLogLine = 64 << 10

// maxTailLine bounds a line kept in the worker's tail.
const maxTailLine = 4 << 10

// follow copies the container's output, stdout and stderr, line by line into the worker's ring.
func (p *Provider) follow(ctx context.Context, wk *worker, id string) {
	rc, err := p.cli.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Follow: true})
	if err != nil {
		wk.logs.Add("spool: cannot read the container's output: " + err.Error())
		return
	}
	defer rc.Close()
	pr, pw := io.Pipe()
	go func() {
		_, err := stdcopy.StdCopy(pw, pw, rc)
		_ = pw.CloseWithError(err)
	}()
	defer pr.Close()
	br := bufio.NewReaderSize(pr, maxLogLine)
	for {
		line, isPrefix, err := br.ReadLine()
		if len(line) > 0 || err == nil {
			text := string(line)
			if p.cfg.OnLine != nil {
				p.cfg.OnLine(wk.id, text)
			}
			if len(text) > maxTailLine {
				text = text[:maxTailLine]
			}
			wk.logs.Add(text)
		}
		for isPrefix && err == nil { // a line too long: the rest goes
			_, isPrefix, err = br.ReadLine()
		}
		if err != nil {
			return
		}
	}
}

// Stop implements autoscale.Provider: SIGTERM, then SIGKILL after grace (the daemon's stop).
func (p *Provider) Stop(id string, grace time.Duration) {
	p.signal(id, grace)
}

// Kill implements autoscale.Provider.
func (p *Provider) Kill(id string) {
	p.signal(id, -1)
}

// signal stops (grace ≥ 0) or kills (grace < 0) a worker's container, in the background; a
// worker whose container does not exist yet is stopped as soon as it does.
func (p *Provider) signal(id string, grace time.Duration) {
	p.mu.Lock()
	wk := p.workers[id]
	if wk == nil {
		p.mu.Unlock()
		return
	}
	cid := wk.container
	if cid == "" {
		wk.stopAsked = true
		wk.cancel() // the pull or the create ends; the worker exits "stopped before it started"
		p.mu.Unlock()
		return
	}
	if grace >= 0 && wk.stopUntil.IsZero() {
		wk.stopUntil = time.Now().Add(grace)
	}
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), grace+time.Minute)
		defer cancel()
		var err error
		if grace < 0 {
			err = p.cli.ContainerKill(ctx, cid, "SIGKILL")
		} else {
			secs := int(math.Ceil(grace.Seconds()))
			err = p.cli.ContainerStop(ctx, cid, container.StopOptions{Timeout: &secs})
		}
		if err != nil && !cerrdefs.IsNotFound(err) && !strings.Contains(err.Error(), "is not running") {
			p.log.Warn("stop a worker container", "worker", id, "err", err)
		}
	}()
}

// Logs implements autoscale.Provider.
func (p *Provider) Logs(id string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if wk := p.workers[id]; wk != nil {
		return wk.logs.Lines()
	}
	return nil
}

// Status says what a worker does before its container runs ("pulling image 43%"), or "".
func (p *Provider) Status(id string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if wk := p.workers[id]; wk != nil {
		return wk.status
	}
	return ""
}

// Close implements autoscale.Provider. Containers being stopped get the rest of their grace to
// drain (they may be finishing a job and posting its result); the others, and the ones still
// running after their grace, are killed. Every container is removed.
func (p *Provider) Close() {
	p.mu.Lock()
	var draining, running []*worker
	for _, wk := range p.workers {
		if wk.stopUntil.IsZero() {
			running = append(running, wk)
		} else {
			draining = append(draining, wk)
		}
	}
	p.mu.Unlock()
	for _, wk := range running {
		p.Kill(wk.id)
	}
	for _, wk := range draining {
		t := time.NewTimer(time.Until(wk.stopUntil))
		select {
		case <-wk.done:
		case <-t.C:
			p.Kill(wk.id)
		}
		t.Stop()
	}
	p.wg.Wait()
	_ = p.cli.Close()
}
