package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// target is a server the bench measures: a fresh child process for each cell (Spool on a
// temporary data directory, or the baseline), or a server given by URL.
type target struct {
	name string
	url  string
	key  string
	pid  int // 0 for a server given by URL: its CPU and memory are not measured
	stop func() error
}

// Endpoint is the endpoint the bench submits to.
const Endpoint = "bench"

var (
	spoolListening    = regexp.MustCompile(`msg="spool listening" url=(http://\S+)`)
	baselineListening = regexp.MustCompile(`baseline listening (http://\S+)`)
)

// startSpool starts `spool serve` on a fresh data directory under dir, and on a fresh schema of
// the PostgreSQL database at pgURL when it is set.
func startSpool(ctx context.Context, bin, dir, pgURL string) (*target, error) {
	data, err := os.MkdirTemp(dir, "spool-data-")
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(data, "bench.yaml")
	if err := os.WriteFile(cfg, []byte("endpoints:\n  - name: "+Endpoint+"\n"), 0o600); err != nil {
		return nil, errors.Join(err, os.RemoveAll(data))
	}
	key := randomKey()
	env := []string{"SPOOL_ADMIN_KEY=" + key}
	dropSchema := func() error { return nil }
	if pgURL != "" {
		storeURL, drop, err := freshSchema(ctx, pgURL)
		if err != nil {
			return nil, errors.Join(err, os.RemoveAll(data))
		}
		dropSchema = drop
		env = append(env, "SPOOL_STORE="+storeURL, "SPOOL_SECRET_KEY="+secretKey())
	}
	t, err := startChild(ctx, "spool", bin, []string{"serve", "--addr", "127.0.0.1:0", "--data", data, "--config", cfg},
		env, spoolListening)
	if err != nil {
		return nil, errors.Join(err, dropSchema(), os.RemoveAll(data))
	}
	t.key = key
	stop := t.stop
	t.stop = func() error {
		err := stop()
		return errors.Join(err, dropSchema(), os.RemoveAll(data))
	}
	return t, nil
}

// secretKey is a fresh key for the s3Configs a bench server seals (none: the bench sends none).
func secretKey() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])
}

// startBaseline starts the baseline server (the hidden `spool bench-baseline` command).
func startBaseline(ctx context.Context, bin string) (*target, error) {
	t, err := startChild(ctx, "baseline", bin, []string{BaselineCommand, "--addr", "127.0.0.1:0"}, nil, baselineListening)
	if err != nil {
		return nil, err
	}
	t.key = "baseline"
	return t, nil
}

// BaselineCommand is the hidden subcommand that runs the baseline server; it prints
// "baseline listening URL" once it listens.
const BaselineCommand = "bench-baseline"

// BaselineListeningLine is what the baseline command prints once it listens on url.
func BaselineListeningLine(url string) string { return "baseline listening " + url }

func randomKey() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return "bench_" + base64.RawURLEncoding.EncodeToString(b[:])
}

// startChild runs bin with args and waits (at most 60 s) for the line that gives its URL, on
// stdout or stderr. Its output is kept (the last 64 KiB) to explain a failure.
func startChild(ctx context.Context, name, bin string, args, env []string, listening *regexp.Regexp) (*target, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out := &tail{max: 64 << 10}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the %s server: %w", name, err)
	}
	exited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		_ = pw.CloseWithError(io.EOF)
		exited <- err
	}()
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			out.add(line)
			if m := listening.FindStringSubmatch(line); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	stop := func() error {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
			return nil
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("the %s server did not stop within 30 s of SIGINT; killed", name)
		}
	}
	timer := time.NewTimer(60 * time.Second)
	defer timer.Stop()
	select {
	case url := <-found:
		return &target{name: name, url: url, pid: cmd.Process.Pid, stop: stop}, nil
	case err := <-exited:
		return nil, fmt.Errorf("the %s server exited before listening (%v):\n%s", name, err, out)
	case <-timer.C:
		_ = stop()
		return nil, fmt.Errorf("the %s server did not listen within 60 s:\n%s", name, out)
	case <-ctx.Done():
		_ = stop()
		return nil, ctx.Err()
	}
}

// tail keeps the last max bytes of lines.
type tail struct {
	mu    sync.Mutex
	max   int
	lines []string
	n     int
}

func (t *tail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	t.n += len(line) + 1
	for t.n > t.max && len(t.lines) > 1 {
		t.n -= len(t.lines[0]) + 1
		t.lines = t.lines[1:]
	}
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}
