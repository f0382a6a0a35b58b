package autoscale_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/autoscale"
)

// fakeProvider records what it is asked; it is a fake of a provider, not of a worker: the router
// only passes calls on.
type fakeProvider struct {
	mu     sync.Mutex
	calls  []string
	exited map[string]func(autoscale.Exit)
}

func (f *fakeProvider) record(c string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
}

func (f *fakeProvider) Start(_ context.Context, w autoscale.WorkerSpec, exited func(autoscale.Exit)) error {
	f.record("start " + w.WorkerID)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.exited == nil {
		f.exited = map[string]func(autoscale.Exit){}
	}
	f.exited[w.WorkerID] = exited
	return nil
}
func (f *fakeProvider) Stop(id string, _ time.Duration) { f.record("stop " + id) }
func (f *fakeProvider) Kill(id string)                  { f.record("kill " + id) }
func (f *fakeProvider) Logs(id string) []string         { f.record("logs " + id); return nil }
func (f *fakeProvider) Close()                          { f.record("close") }

// statusProvider is a fakeProvider that says what its workers do, as the container provider does.
type statusProvider struct{ *fakeProvider }

func (statusProvider) Status(string) string { return "pulling image 7%" }

// TestRouter: a worker with an image goes to the container provider, one with a command to the
// process provider, and every later call follows it there, until it exits.
func TestRouter(t *testing.T) {
	t.Parallel()
	procs, containers := &fakeProvider{}, &fakeProvider{}
	r := &autoscale.Router{Processes: procs, Containers: statusProvider{containers}}
	ctx := context.Background()
	require.NoError(t, r.Start(ctx, autoscale.WorkerSpec{WorkerID: "p1", Spec: spool.WorkerSpec{Command: "w"}}, func(autoscale.Exit) {}))
	require.NoError(t, r.Start(ctx, autoscale.WorkerSpec{WorkerID: "c1", Spec: spool.WorkerSpec{Image: "img"}}, func(autoscale.Exit) {}))
	r.Stop("p1", time.Second)
	r.Kill("c1")
	r.Logs("c1")
	require.Equal(t, "pulling image 7%", r.Status("c1"))
	require.Empty(t, r.Status("p1"), "the process provider says nothing")
	containers.exited["c1"](autoscale.Exit{ID: "c1"})
	r.Kill("c1") // gone: nobody is asked
	r.Close()
	require.Equal(t, []string{"start p1", "stop p1", "close"}, procs.calls)
	require.Equal(t, []string{"start c1", "kill c1", "logs c1", "close"}, containers.calls)

	none := &autoscale.Router{Processes: procs, NoContainers: "docker: the daemon does not answer"}
	err := none.Start(ctx, autoscale.WorkerSpec{WorkerID: "c2", Spec: spool.WorkerSpec{Image: "img"}}, func(autoscale.Exit) {})
	require.EqualError(t, err, "start worker c2: image workers need a Docker daemon (docker: the daemon does not answer)")
}
