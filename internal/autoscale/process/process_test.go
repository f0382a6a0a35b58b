package process_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/autoscale"
	"github.com/spool-run/spool/internal/autoscale/process"
	"github.com/spool-run/spool/internal/clock"
)

func TestMain(m *testing.M) {
	// A server variable that workers must not inherit.
	if err := os.Setenv("SPOOL_TEST_SERVER_SECRET", "leak"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m)
}

type fixture struct {
	t    *testing.T
	fake *clock.Fake
	p    *process.Provider
}

func newFixture(t *testing.T, cfg process.Config) *fixture {
	t.Helper()
	fake := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg.Clock = fake
	p, err := process.New(cfg)
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return &fixture{t: t, fake: fake, p: p}
}

// start runs a shell script as worker id and returns the channel its exit arrives on.
func (f *fixture) start(id, script string, mod func(*autoscale.WorkerSpec)) <-chan autoscale.Exit {
	f.t.Helper()
	path := filepath.Join(f.t.TempDir(), "w.sh")
	require.NoError(f.t, os.WriteFile(path, []byte("#!/bin/sh\n"+script), 0o700))
	// A folder of the test's own: workers make theirs inside it.
	w := autoscale.WorkerSpec{Endpoint: "ep", WorkerID: id, Spec: spool.WorkerSpec{Command: "/bin/sh", Args: []string{path}, Dir: f.t.TempDir()}}
	if mod != nil {
		mod(&w)
	}
	ch := make(chan autoscale.Exit, 1)
	require.NoError(f.t, f.p.Start(context.Background(), w, func(x autoscale.Exit) { ch <- x }))
	return ch
}

func (f *fixture) exit(ch <-chan autoscale.Exit) autoscale.Exit {
	f.t.Helper()
	select {
	case x := <-ch:
		return x
	case <-time.After(30 * time.Second):
		f.t.Fatal("the worker did not exit")
		return autoscale.Exit{}
	}
}

// waitLog waits until the worker has written line (a real process must act).
func (f *fixture) waitLog(id, line string) {
	f.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !slices.Contains(f.p.Logs(id), line) {
		require.True(f.t, time.Now().Before(deadline), "worker %s never wrote %q; logs %q", id, line, f.p.Logs(id))
		<-time.After(10 * time.Millisecond)
	}
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	return ee.ExitCode()
}

// The worker's environment: the base environment without SPOOL_*, then the spec's env, then the
// autoscaler's (RunPod and GPU variables) on top; the spec's dir is the working directory.
func TestEnvironment(t *testing.T) {
	t.Parallel()
	f := newFixture(t, process.Config{LogLines: 1000})
	dir := t.TempDir()
	x := f.exit(f.start("w1", "env\necho \"PWD=$(pwd -P)\"\n", func(w *autoscale.WorkerSpec) {
		w.Spec.Dir = dir
		w.Spec.Env = map[string]string{"MODEL": "tiny", "RUNPOD_POD_ID": "spoofed", "CUDA_VISIBLE_DEVICES": "all"}
		w.Env = map[string]string{"RUNPOD_POD_ID": "w1", "RUNPOD_WEBHOOK_GET_JOB": "http://s/v2/ep/job-take/$ID?",
			"CUDA_VISIBLE_DEVICES": "3,5", "NVIDIA_VISIBLE_DEVICES": "3,5"}
		w.GPUs = []string{"3", "5"}
	}))
	require.NoError(t, x.Err)
	require.Equal(t, "w1", x.ID)
	got := map[string]string{}
	for _, l := range x.Logs {
		if k, v, ok := strings.Cut(l, "="); ok {
			got[k] = v
		}
	}
	wantDir, err := filepath.EvalSymlinks(dir)
	require.NoError(t, err)
	require.Equal(t, "w1", got["RUNPOD_POD_ID"], "the autoscaler's env wins over the spec's")
	require.Equal(t, "http://s/v2/ep/job-take/$ID?", got["RUNPOD_WEBHOOK_GET_JOB"])
	require.Equal(t, "tiny", got["MODEL"])
	require.Equal(t, "3,5", got["CUDA_VISIBLE_DEVICES"])
	require.Equal(t, "3,5", got["NVIDIA_VISIBLE_DEVICES"])
	require.Equal(t, filepath.Join(wantDir, ".spool-workers", "w1"), got["PWD"], "its own folder inside the dir")
	require.Equal(t, os.Getenv("PATH"), got["PATH"])
	for k := range got {
		require.False(t, strings.HasPrefix(k, "SPOOL_"), "server variable %s leaked", k)
	}

	// An explicit base environment replaces the server's.
	f2 := newFixture(t, process.Config{Environ: []string{"PATH=" + os.Getenv("PATH"), "BASE=1"}})
	x = f2.exit(f2.start("w2", "echo \"BASE=$BASE HOME=$HOME\"\n", nil))
	require.NoError(t, x.Err)
	require.Equal(t, []string{"BASE=1 HOME="}, x.Logs)
}

// The log ring keeps the last LogLines lines of stdout and stderr, oldest first; the exit
// notification carries the exit status.
func TestLogsAndExitStatus(t *testing.T) {
	t.Parallel()
	f := newFixture(t, process.Config{LogLines: 3})
	x := f.exit(f.start("w", "for i in 1 2 3 4 5 6 7; do echo out$i; done\necho err8 >&2\nexit 3\n", nil))
	require.Equal(t, []string{"out6", "out7", "err8"}, x.Logs)
	require.Equal(t, 3, exitCode(t, x.Err))
	require.Nil(t, f.p.Logs("w"), "an exited worker is forgotten")

	x = f.exit(f.start("w", "echo a\necho b\n", nil))
	require.NoError(t, x.Err, "exit status 0; the id may be reused once exited")
	require.Equal(t, []string{"a", "b"}, x.Logs)

	err := f.p.Start(context.Background(), autoscale.WorkerSpec{WorkerID: "none"}, func(autoscale.Exit) {})
	require.ErrorContains(t, err, "no command")
	err = f.p.Start(context.Background(), autoscale.WorkerSpec{WorkerID: "bad", Spec: spool.WorkerSpec{Command: "/no/such/binary", Dir: t.TempDir()}}, func(autoscale.Exit) {})
	require.Error(t, err)
	_, err = process.New(process.Config{LogLines: -1})
	require.Error(t, err)
}

// Stop sends SIGTERM; a worker that drains exits by itself; one that ignores it is killed with
// SIGKILL once the grace has passed, not before.
func TestStopEscalates(t *testing.T) {
	t.Parallel()
	f := newFixture(t, process.Config{})

	polite := f.start("polite", "trap 'echo bye; exit 0' TERM\necho ready\nwhile :; do sleep 0.05; done\n", nil)
	f.waitLog("polite", "ready")
	f.p.Stop("polite", time.Hour)
	x := f.exit(polite)
	require.NoError(t, x.Err, "drained on SIGTERM")
	require.Contains(t, x.Logs, "bye")

	deaf := f.start("deaf", "trap 'echo got TERM' TERM\necho ready\nwhile :; do sleep 0.05; done\n", nil)
	f.waitLog("deaf", "ready")
	f.p.Stop("deaf", 5*time.Second)
	f.waitLog("deaf", "got TERM")
	f.fake.Advance(4 * time.Second)
	select {
	case x := <-deaf:
		t.Fatalf("killed before the grace ran out: %+v", x)
	default:
	}
	f.fake.Advance(time.Second)
	x = f.exit(deaf)
	var ee *exec.ExitError
	require.ErrorAs(t, x.Err, &ee)
	ws, ok := ee.Sys().(syscall.WaitStatus)
	require.True(t, ok)
	require.True(t, ws.Signaled())
	require.Equal(t, syscall.SIGKILL, ws.Signal())
	require.Contains(t, x.Logs, "got TERM")

	f.p.Stop("unknown", time.Second) // no-op
	f.p.Kill("unknown")
}

// Kill ends the whole process group: a child the worker spawned dies with it.
func TestKillKillsGroup(t *testing.T) {
	t.Parallel()
	f := newFixture(t, process.Config{})
	ch := f.start("w", "sleep 1000 &\necho child=$!\nwait\n", nil)
	var pid int
	deadline := time.Now().Add(30 * time.Second)
	for pid == 0 {
		for _, l := range f.p.Logs("w") {
			if v, ok := strings.CutPrefix(l, "child="); ok {
				n, err := strconv.Atoi(v)
				require.NoError(t, err)
				pid = n
			}
		}
		if pid == 0 {
			require.True(t, time.Now().Before(deadline), "the worker did not start its child")
			<-time.After(10 * time.Millisecond)
		}
	}
	require.NoError(t, syscall.Kill(pid, 0), "the child runs")
	f.p.Kill("w")
	x := f.exit(ch)
	require.ErrorContains(t, x.Err, "signal: killed")
	// The child was SIGKILLed with the group; it may linger as a zombie until its new parent
	// reaps it, but it no longer runs.
	deadline = time.Now().Add(30 * time.Second)
	for !gone(pid) {
		require.True(t, time.Now().Before(deadline), "the child %d still runs", pid)
		<-time.After(10 * time.Millisecond)
	}
}

// gone reports whether pid is no longer running (absent, or a zombie).
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return os.IsNotExist(err)
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// TestWorkersGetFoldersOfTheirOwn: each worker runs in <dir>/.spool-workers/<id>, where the files of
// the endpoint's dir are found by their relative paths, while what a worker writes in its working
// directory (runpod-python's ./.runpod_jobs.pkl) is its own and goes with it: a replacement never
// inherits a killed worker's busy state.
func TestWorkersGetFoldersOfTheirOwn(t *testing.T) {
	t.Parallel()
	f := newFixture(t, process.Config{})
	base := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(base, "data.txt"), []byte("shared-data\n"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(base, ".runpod_jobs.pkl"), []byte("stale"), 0o600))
	script := `pwd -P; cat data.txt; if [ -e .runpod_jobs.pkl ]; then echo inherited; else echo fresh; fi
echo busy > .runpod_jobs.pkl; echo started; exec sleep 600`
	inDir := func(w *autoscale.WorkerSpec) { w.Spec.Dir = base }
	a := f.start("ep-a", script, inDir)
	b := f.start("ep-b", script, inDir)
	f.waitLog("ep-a", "started")
	f.waitLog("ep-b", "started")
	realBase, err := filepath.EvalSymlinks(base)
	require.NoError(t, err)
	for _, id := range []string{"ep-a", "ep-b"} {
		logs := f.p.Logs(id)
		require.Equal(t, []string{filepath.Join(realBase, ".spool-workers", id), "shared-data", "fresh", "started"}, logs)
		b, err := os.ReadFile(filepath.Join(base, ".spool-workers", id, ".runpod_jobs.pkl"))
		require.NoError(t, err)
		require.Equal(t, "busy\n", string(b), "written in the worker's own folder")
	}
	stale, err := os.ReadFile(filepath.Join(base, ".runpod_jobs.pkl"))
	require.NoError(t, err)
	require.Equal(t, "stale", string(stale), "the endpoint's dir is untouched")

	f.p.Kill("ep-a")
	f.exit(a)
	_, err = os.Stat(filepath.Join(base, ".spool-workers", "ep-a"))
	require.ErrorIs(t, err, os.ErrNotExist, "a worker's folder goes with it")
	again := f.start("ep-a", script, inDir) // the same id, as a restart gives it
	f.waitLog("ep-a", "started")
	require.Contains(t, f.p.Logs("ep-a"), "fresh", "a replacement starts without the killed worker's state")
	f.p.Kill("ep-a")
	f.exit(again)
	f.p.Kill("ep-b")
	f.exit(b)
	left, err := os.ReadDir(filepath.Join(base, ".spool-workers"))
	require.NoError(t, err)
	require.Empty(t, left, "no worker's folder is left")
	_, err = os.Stat(filepath.Join(base, "data.txt"))
	require.NoError(t, err, "removing the links leaves what they point to")
}

// TestWorkerFolderFallback: where a worker cannot have a folder of its own (here something else
// holds the name; a read-only dir does the same), it runs in the endpoint's dir, and its log says so.
func TestWorkerFolderFallback(t *testing.T) {
	t.Parallel()
	f := newFixture(t, process.Config{})
	base := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(base, ".spool-workers"), []byte("in the way"), 0o600))
	x := f.exit(f.start("w1", "pwd -P\n", func(w *autoscale.WorkerSpec) { w.Spec.Dir = base }))
	require.NoError(t, x.Err)
	realBase, err := filepath.EvalSymlinks(base)
	require.NoError(t, err)
	require.Len(t, x.Logs, 2, "%q", x.Logs)
	require.Contains(t, x.Logs[0], "spool: no folder of its own for this worker")
	require.Equal(t, realBase, x.Logs[1])
	_, err = os.Stat(base)
	require.NoError(t, err, "the endpoint's dir is not removed with the worker")
}
