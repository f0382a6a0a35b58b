package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spool-run/spool/internal/k8stest"
)

// writeKubeconfig writes a kubeconfig for the test API server.
func writeKubeconfig(t *testing.T, c *k8stest.Cluster) string {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	body := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: test, user: {token: %q}}]
contexts: [{name: test, context: {cluster: test, user: test}}]
current-context: test
`, c.Config.Host, c.Config.BearerToken)
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

// startPodServer starts Spool with its image workers as pods in a namespace of its own of the
// test API server, on an address chosen first (the pods' serverURL names it), with the given
// endpoints section. It returns the server, the namespace and the address.
func startPodServer(t *testing.T, c *k8stest.Cluster, endpoints string) (*server, string, string) {
	t.Helper()
	ns := c.Namespace(t)
	addr := freeAddr(t)
	s := startServer(t, serverOpts{Addr: addr, Config: fmt.Sprintf("workers:\n  kubernetes: {namespace: %s, kubeconfig: %s, serverURL: \"http://%s\", instance: e2e}\n",
		ns, writeKubeconfig(t, c), addr) + endpoints})
	return s, ns, addr
}

// TestKubernetesWorkers runs an endpoint's workers as pods of a real API server, the test playing
// the kubelet (pod status) and the worker in the pod (its RunPod environment, over HTTP): the
// autoscaler makes a pod for a queued job, with the GPU as a resource; a pod that holds a job is
// not scaled in; an idle one is deleted after idleTimeout; a pod that vanishes gives its job back
// to the queue; an image that cannot be pulled makes the worker unhealthy, saying so.
func TestKubernetesWorkers(t *testing.T) {
	t.Parallel()
	c := k8stest.Shared(t)
	s, ns, addr := startPodServer(t, c, `endpoints:
  - name: gpu
    workersMax: 1
    idleTimeout: 1s
    gpuCount: 1
    worker:
      image: ghcr.io/me/worker:1
      kubernetes: {nodeSelector: {pool: a100}}
`)
	pods := c.Client.CoreV1().Pods(ns)

	waitPod := func(not string) *corev1.Pod {
		t.Helper()
		var found *corev1.Pod
		eventually(t, 60*time.Second, func() bool {
			list, err := pods.List(t.Context(), metav1.ListOptions{LabelSelector: "run.spool/endpoint=gpu"})
			require.NoError(t, err)
			for i := range list.Items {
				if p := &list.Items[i]; p.Name != not && p.DeletionTimestamp == nil {
					found = p
				}
			}
			return found != nil
		}, func() string { return "no pod for the endpoint" })
		return found
	}
	podGone := func(name string) {
		t.Helper()
		eventually(t, 60*time.Second, func() bool {
			_, err := pods.Get(t.Context(), name, metav1.GetOptions{})
			return err != nil
		}, func() string { return "pod " + name + " still there" })
	}
	running := func(p *corev1.Pod) {
		t.Helper()
		p.Status.Phase = corev1.PodRunning
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "worker", Image: p.Spec.Containers[0].Image, Ready: true,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
		_, err := pods.UpdateStatus(t.Context(), p, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	// worker is what runs in the pod: its environment, and requests made with it.
	type worker struct{ id, key, take, done string }
	workerOf := func(p *corev1.Pod) worker {
		env := map[string]string{}
		for _, e := range p.Spec.Containers[0].Env {
			env[e.Name] = e.Value
		}
		id := env["RUNPOD_POD_ID"]
		return worker{id: id, key: env["RUNPOD_AI_API_KEY"],
			take: strings.ReplaceAll(env["RUNPOD_WEBHOOK_GET_JOB"], "$ID", id),
			done: strings.ReplaceAll(env["RUNPOD_WEBHOOK_POST_OUTPUT"], "$RUNPOD_POD_ID", id)}
	}
	call := func(w worker, method, url, body string) resp {
		t.Helper()
		r, err := doRequest(t.Context(), s.client, method, url, http.Header{"Authorization": {w.key}}, []byte(body))
		require.NoError(t, err)
		return r
	}
	jobField := func(id, field string) string {
		r := s.do(t, "GET", "/api/jobs/"+id, adminHeader(s), nil)
		require.Equal(t, 200, r.Code, "%s", r)
		var m map[string]any
		require.NoError(t, json.Unmarshal(r.Body, &m))
		v, _ := m[field].(string)
		return v
	}

	// A queued job makes a pod, with the RunPod environment pointing at Spool and the GPU asked of
	// the cluster.
	j1 := submit(t, s, "gpu", `{"input":{"n":1}}`)
	p := waitPod("")
	require.Equal(t, map[string]string{"pool": "a100"}, p.Spec.NodeSelector)
	gpu := p.Spec.Containers[0].Resources.Limits["nvidia.com/gpu"]
	require.Equal(t, int64(1), gpu.Value())
	w := workerOf(p)
	require.True(t, strings.HasPrefix(w.take, "http://"+addr+"/v2/gpu/job-take/"+w.id), w.take)
	r := s.do(t, "GET", "/api/workers?endpoint=gpu", adminHeader(s), nil)
	require.Contains(t, string(r.Body), `"state":"initializing"`)
	require.Contains(t, string(r.Body), "waiting for a node")

	// The kubelet starts it; the worker takes the job and holds it past idleTimeout: its pod stays.
	running(p)
	r = call(w, "GET", w.take, "")
	require.Equal(t, 200, r.Code, "%s", r)
	require.Contains(t, string(r.Body), j1)
	<-time.After(3 * time.Second) // three idleTimeouts, to show that nothing happens
	_, err := pods.Get(t.Context(), p.Name, metav1.GetOptions{})
	require.NoError(t, err, "a pod holding a job is not scaled in")

	// Done, the worker is idle: after idleTimeout its pod is deleted.
	r = call(w, "POST", strings.ReplaceAll(w.done, "$ID", j1), `{"output":{"ok":true}}`)
	require.Equal(t, 200, r.Code, "%s", r)
	require.Equal(t, "COMPLETED", jobStatus(t, s, j1))
	podGone(p.Name)

	// A pod that vanishes with a job: the job goes back to the queue, and a new pod comes.
	j2 := submit(t, s, "gpu", `{"input":{"n":2}}`)
	p = waitPod("")
	running(p)
	w = workerOf(p)
	r = call(w, "GET", w.take, "")
	require.Equal(t, 200, r.Code, "%s", r)
	require.Contains(t, string(r.Body), j2)
	require.NoError(t, pods.Delete(t.Context(), p.Name, metav1.DeleteOptions{}))
	p2 := waitPod(p.Name)
	require.Equal(t, "IN_QUEUE", jobStatus(t, s, j2), "the vanished pod's job is queued again")

	// The new pod's image cannot be pulled: the worker is unhealthy, and says why.
	p2.Status.Phase = corev1.PodPending
	p2.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "worker", Image: "ghcr.io/me/worker:1",
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff",
			Message: `Back-off pulling image "ghcr.io/me/worker:1"`}}}}
	_, err = pods.UpdateStatus(t.Context(), p2, metav1.UpdateOptions{})
	require.NoError(t, err)
	eventually(t, 60*time.Second, func() bool {
		r = s.do(t, "GET", "/api/workers?endpoint=gpu", adminHeader(s), nil)
		return strings.Contains(string(r.Body), `"state":"unhealthy"`)
	}, func() string { return "no unhealthy worker: " + r.String() })
	require.Contains(t, string(r.Body), "ImagePullBackOff")
	require.Equal(t, "workers_unhealthy", jobField(j2, "waitReason"))
	podGone(p2.Name)
}

// TestKubernetesRestartAdopts: a Spool killed while its pod works takes the pod over when it
// starts again, instead of starting another: the worker, with the token it was given, finishes
// its job on the new run, which then scales the pod in as its own.
func TestKubernetesRestartAdopts(t *testing.T) {
	t.Parallel()
	c := k8stest.Shared(t)
	s, ns, _ := startPodServer(t, c, `endpoints:
  - name: gpu
    workersMax: 1
    idleTimeout: 1s
    worker: {image: "ghcr.io/me/worker:1"}
`)
	pods := c.Client.CoreV1().Pods(ns)
	list := func() []corev1.Pod {
		l, err := pods.List(t.Context(), metav1.ListOptions{LabelSelector: "run.spool/endpoint=gpu"})
		require.NoError(t, err)
		return l.Items
	}
	job := submit(t, s, "gpu", `{"input":{}}`)
	eventually(t, 60*time.Second, func() bool { return len(list()) > 0 }, func() string { return "no pod" })
	p := list()[0]
	env := map[string]string{}
	for _, e := range p.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	id, key := env["RUNPOD_POD_ID"], http.Header{"Authorization": {env["RUNPOD_AI_API_KEY"]}}
	r, err := doRequest(t.Context(), s.client, "GET", strings.ReplaceAll(env["RUNPOD_WEBHOOK_GET_JOB"], "$ID", id), key, nil)
	require.NoError(t, err)
	require.Contains(t, string(r.Body), job)

	s.Kill()
	s = s.Restart(t)
	_, err = s.stderr.waitFor(regexp.MustCompile(`msg="worker adopted" endpoint=gpu worker=`+regexp.QuoteMeta(id)), 60*time.Second, s.exited)
	require.NoError(t, err, "the new run adopts the pod")
	eventually(t, 60*time.Second, func() bool {
		r = s.do(t, "GET", "/api/workers?endpoint=gpu", adminHeader(s), nil)
		return strings.Contains(string(r.Body), `"id":"`+id+`"`)
	}, func() string { return "the pod's worker is not the new run's: " + r.String() })
	require.Len(t, list(), 1, "no second pod beside the adopted one")

	done := strings.ReplaceAll(strings.ReplaceAll(env["RUNPOD_WEBHOOK_POST_OUTPUT"], "$RUNPOD_POD_ID", id), "$ID", job)
	r, err = doRequest(t.Context(), s.client, "POST", done, key, []byte(`{"output":"after the restart"}`))
	require.NoError(t, err)
	require.Equal(t, 200, r.Code, "the worker's token works on the new run: %s", r)
	require.Equal(t, "COMPLETED", jobStatus(t, s, job))
	eventually(t, 60*time.Second, func() bool { return len(list()) == 0 }, func() string { return "the adopted pod was not scaled in" })
}

// TestKubernetesScalesOutAndIn: queued jobs make as many pods as the scaler wants (0 → 3), and
// once the queue is gone the pods go too (3 → 0), none of them having ever run.
func TestKubernetesScalesOutAndIn(t *testing.T) {
	t.Parallel()
	c := k8stest.Shared(t)
	ns := c.Namespace(t)
	s := startServer(t, serverOpts{Config: fmt.Sprintf(`workers:
  kubernetes: {namespace: %s, kubeconfig: %s, serverURL: "http://127.0.0.1:1", instance: e2e}
endpoints:
  - name: burst
    workersMax: 3
    idleTimeout: 1s
    scalerType: REQUEST_COUNT
    scalerValue: 1
    worker: {image: "ghcr.io/me/worker:1"}
`, ns, writeKubeconfig(t, c))})
	count := func() int {
		l, err := c.Client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "run.spool/endpoint=burst"})
		require.NoError(t, err)
		return len(l.Items)
	}
	waitCount := func(n int) {
		t.Helper()
		eventually(t, 60*time.Second, func() bool { return count() == n },
			func() string { return fmt.Sprintf("%d pods, want %d", count(), n) })
	}
	require.Zero(t, count())
	for range 4 {
		submit(t, s, "burst", `{"input":{}}`)
	}
	waitCount(3) // four jobs, one per worker, at most workersMax
	r := s.do(t, "POST", "/v2/burst/purge-queue", adminHeader(s), nil)
	require.Equal(t, 200, r.Code, "%s", r)
	waitCount(0)
}
