// Package process is the local process provider of the autoscaler: each worker is a child
// process of the server, in its own process group, with the RunPod environment, its output kept
// in a ring buffer of the last lines.
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
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spool-run/spool/internal/autoscale"
	"github.com/spool-run/spool/internal/clock"
)

// Config configures a Provider.
type Config struct {
	// LogLines is how many lines of each worker's output are kept. Defaults to 200.
	LogLines int
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
	logs *ring
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
	cmd := exec.Command(w.Spec.Command, w.Spec.Args...)
	cmd.Dir = w.Spec.Dir
	for _, k := range slices.Sorted(maps.Keys(env)) {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// An *os.File, so that Wait returns when the worker exits even if a child of it still holds
	// the pipe (the group is killed right after).
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("start worker %s: %w", w.WorkerID, err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	pc := &proc{cmd: cmd, logs: newRing(p.cfg.LogLines), done: make(chan struct{})}
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
			pc.logs.add(sc.Text())
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
		close(pc.done)
		p.mu.Lock()
		delete(p.procs, w.WorkerID)
		p.mu.Unlock()
		exited(autoscale.Exit{ID: w.WorkerID, Err: err, Logs: pc.logs.lines()})
	}()
	return nil
}

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
		return pc.logs.lines()
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

// ring keeps the last n lines.
type ring struct {
	mu   sync.Mutex
	buf  []string
	next int
	full bool
}

func newRing(n int) *ring { return &ring{buf: make([]string, n)} }

func (r *ring) add(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.buf) == 0 {
		return
	}
	r.buf[r.next] = line
	r.next = (r.next + 1) % len(r.buf)
	r.full = r.full || r.next == 0
}

func (r *ring) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.full {
		return slices.Clone(r.buf[:r.next])
	}
	return append(slices.Clone(r.buf[r.next:]), r.buf[:r.next]...)
}
