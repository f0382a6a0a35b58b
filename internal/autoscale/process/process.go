// Package process is the local process provider of the autoscaler: each worker is a child
// process of the server, in its own process group, with the RunPod environment, its output kept
// in a ring buffer of the last lines, and a working folder of its own.
package process

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spool-run/spool/internal/autoscale"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/logring"
)

// Config configures a Provider.
type Config struct {
	// LogLines is how many lines of each worker's output are kept. Defaults to 200.
	LogLines int
	// OnLine, when set, is told of every line a worker writes (the per-job log index).
	OnLine func(worker, line string)
	// Clock times the SIGKILL after a Stop's grace period. Defaults to the wall clock.
	Clock clock.Clock
	// Environ is the base environment of every worker. Defaults to the server's own environment
	// without SPOOL_* variables (they may hold the admin key).
	Environ []string
}

func (c Config) withDefaults() Config {
	if c.LogLines == 0 {
		c.LogLines = 200
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Environ == nil {
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "SPOOL_") {
				c.Environ = append(c.Environ, kv)
			}
		}
	}
	return c
}

func (c Config) validate() error {
	if c.LogLines < 0 {
		return errors.New("process: LogLines must not be negative")
	}
	return nil
}

// Provider starts workers as local processes. It is safe for concurrent use.
type Provider struct {
	cfg   Config
	mu    sync.Mutex
	procs map[string]*proc
	wg    sync.WaitGroup
}

type proc struct {
	cmd  *exec.Cmd
	logs *logring.Ring
	done chan struct{}
	// stopUntil is set by Stop: the process is draining (SIGTERM sent) and gets until then.
	stopUntil time.Time
}

var _ autoscale.Provider = (*Provider)(nil)

// New returns a provider.
func New(cfg Config) (*Provider, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Provider{cfg: cfg, procs: make(map[string]*proc)}, nil
}

// Start implements autoscale.Provider.
func (p *Provider) Start(_ context.Context, w autoscale.WorkerSpec, exited func(autoscale.Exit)) error {
	if w.Spec.Command == "" {
		return fmt.Errorf("start worker %s: no command", w.WorkerID)
	}
	env := map[string]string{}
	for _, kv := range p.cfg.Environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	maps.Copy(env, w.Spec.Env)
	maps.Copy(env, w.Env)
	if p.running(w.WorkerID) {
		// Checked before its folder is made: that would wipe the running worker's.
		return fmt.Errorf("start worker %s: already running", w.WorkerID)
	}
	logs := logring.New(p.cfg.LogLines)
	dir, err := makeWorkDir(w.Spec.Dir, w.WorkerID)
	if err != nil {
		// A dir Spool may not write to (a read-only image, a root-owned folder): the worker
		// runs in it, as it would without Spool, and its log says why it shares it.
		logs.Add(fmt.Sprintf("spool: no folder of its own for this worker (%v); it runs in %s", err, w.Spec.Dir))
		dir = w.Spec.Dir
	}
	cmd := exec.Command(w.Spec.Command, w.Spec.Args...)
	cmd.Dir = dir
	for _, k := range slices.Sorted(maps.Keys(env)) {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// An *os.File, so that Wait returns when the worker exits even if a child of it still holds
	// the pipe (the group is killed right after).
	pr, pw, err := os.Pipe()
	if err != nil {
		removeWorkDir(dir)
		return fmt.Errorf("start worker %s: %w", w.WorkerID, err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	pc := &proc{cmd: cmd, logs: logs, done: make(chan struct{})}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, dup := p.procs[w.WorkerID]; dup {
		_ = pr.Close()
		_ = pw.Close()
		return fmt.Errorf("start worker %s: already running", w.WorkerID)
	}
	err = cmd.Start()
	_ = pw.Close() // the child has its copy
	if err != nil {
		_ = pr.Close()
		removeWorkDir(dir)
		return fmt.Errorf("start worker %s: %w", w.WorkerID, err)
	}
	p.procs[w.WorkerID] = pc
	p.wg.Add(2)
	scanned := make(chan struct{})
	go func() {
		defer p.wg.Done()
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			pc.logs.Add(sc.Text())
			if p.cfg.OnLine != nil {
				p.cfg.OnLine(w.WorkerID, sc.Text())
			}
		}
		_, _ = io.Copy(io.Discard, pr) // a line too long ends the scan; keep the pipe flowing
		_ = pr.Close()
	}()
	go func() {
		defer p.wg.Done()
		err := cmd.Wait()
		// The group may outlive its leader (a shell's children): end it with the leader.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-scanned
		removeWorkDir(dir)
		close(pc.done)
		p.mu.Lock()
		delete(p.procs, w.WorkerID)
		p.mu.Unlock()
		exited(autoscale.Exit{ID: w.WorkerID, Err: err, Logs: pc.logs.Lines()})
	}()
	return nil
}

// workersFolder is the folder, inside an endpoint's dir, that holds its workers' folders.
const workersFolder = ".spool-workers"

// makeWorkDir makes worker id's working folder: <base>/.spool-workers/<id>, holding a symbolic
// link to each entry of base (the endpoint's dir, or the server's working directory), so that the
// worker finds its files by the same relative paths ("python3 handler.py", "./bin/worker"),
// while what it creates in its working directory stays its own. runpod-python 1.7.12 to 1.10.0
// keep their in-progress job ids in ./.runpod_jobs.pkl: workers sharing a folder would share
// their busy state, and a killed worker's file would make its replacement refuse every job.
func makeWorkDir(base, id string) (string, error) {
	if base == "" {
		base = "."
	}
	base, err := filepath.Abs(base)
	if err != nil {
		return "", fmt.Errorf("working folder: %w", err)
	}
	entries, err := os.ReadDir(base)
	if err != nil {
		return "", fmt.Errorf("read the endpoint's dir: %w", err)
	}
	dir := filepath.Join(base, workersFolder, folderName(id))
	// A folder of the same name is a leftover of a server killed before it could clean up.
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("working folder: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("working folder: %w", err)
	}
	for _, e := range entries {
		if e.Name() == workersFolder || e.Name() == runpodJobsFile {
			continue
		}
		if err := os.Symlink(filepath.Join(base, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			_ = os.RemoveAll(dir)
			return "", fmt.Errorf("working folder: %w", err)
		}
	}
	return dir, nil
}

// runpodJobsFile is where runpod-python 1.7.12 to 1.10.0 keep a worker's busy state.
const runpodJobsFile = ".runpod_jobs.pkl"

// removeWorkDir removes a worker's folder: its links, not what they point to. The folder of the
// workers stays: other providers (another Spool on the same dir, or a test beside this one) may
// be making folders in it, and removing it under them would fail their workers' starts.
func removeWorkDir(dir string) {
	if filepath.Base(filepath.Dir(dir)) != workersFolder {
		return // the endpoint's own dir, after a fallback: not the worker's to remove
	}
	_ = os.RemoveAll(dir)
}

// folderName makes a worker id safe as a file name.
func folderName(id string) string {
	n := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, id)
	if strings.Trim(n, ".") == "" { // "", "." and ".." name no folder of their own
		n = "_" + n
	}
	return n
}

func (p *Provider) running(id string) bool { return p.get(id) != nil }

func (p *Provider) get(id string) *proc {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.procs[id]
}

// Stop implements autoscale.Provider: SIGTERM to the process group, SIGKILL after grace.
func (p *Provider) Stop(id string, grace time.Duration) {
	pc := p.get(id)
	if pc == nil {
		return
	}
	p.mu.Lock()
	pc.stopUntil = time.Now().Add(grace)
	p.mu.Unlock()
	_ = syscall.Kill(-pc.cmd.Process.Pid, syscall.SIGTERM)
	t := p.cfg.Clock.NewTimer(grace)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		select {
		case <-pc.done:
			t.Stop()
		case <-t.C():
			_ = syscall.Kill(-pc.cmd.Process.Pid, syscall.SIGKILL)
		}
	}()
}

// Kill implements autoscale.Provider.
func (p *Provider) Kill(id string) {
	if pc := p.get(id); pc != nil {
		_ = syscall.Kill(-pc.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// Logs implements autoscale.Provider.
func (p *Provider) Logs(id string) []string {
	if pc := p.get(id); pc != nil {
		return pc.logs.Lines()
	}
	return nil
}

// Close implements autoscale.Provider. Processes being stopped get the rest of their grace to
// drain (they may be finishing a job and posting its result); the others, and the ones still
// running after their grace, are killed. The grace is waited in wall-clock time, so that a
// shutdown is bounded whatever clock drives the provider's schedules.
func (p *Provider) Close() {
	p.mu.Lock()
	var draining []*proc
	for _, pc := range p.procs {
		if pc.stopUntil.IsZero() {
			_ = syscall.Kill(-pc.cmd.Process.Pid, syscall.SIGKILL)
		} else {
			draining = append(draining, pc)
		}
	}
	p.mu.Unlock()
	for _, pc := range draining {
		t := time.NewTimer(time.Until(pc.stopUntil))
		select {
		case <-pc.done:
		case <-t.C:
			_ = syscall.Kill(-pc.cmd.Process.Pid, syscall.SIGKILL)
		}
		t.Stop()
	}
	p.wg.Wait()
}
