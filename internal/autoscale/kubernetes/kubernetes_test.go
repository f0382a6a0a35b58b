package kubernetes_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/autoscale"
	"github.com/spool-run/spool/internal/autoscale/kubernetes"
	"github.com/spool-run/spool/internal/k8stest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	k8stest.StopShared()
	os.Exit(code)
}

type env struct {
	t     *testing.T
	c     *k8stest.Cluster
	ns    string
	p     *kubernetes.Provider
	exits chan autoscale.Exit
}

func newEnv(t *testing.T) *env {
	c := k8stest.Shared(t)
	e := &env{t: t, c: c, ns: c.Namespace(t), exits: make(chan autoscale.Exit, 16)}
	e.p = e.open()
	return e
}

func (e *env) open() *kubernetes.Provider {
	p, err := kubernetes.New(e.t.Context(), kubernetes.Config{Client: e.c.Client.CoreV1(), Namespace: e.ns, Instance: "test"})
	require.NoError(e.t, err)
	e.t.Cleanup(p.Close)
	return p
}

func (e *env) start(id string, spec spool.WorkerSpec, gpus int) *corev1.Pod {
	e.t.Helper()
	err := e.p.Start(e.t.Context(), autoscale.WorkerSpec{Endpoint: "gpu", WorkerID: id, GPUCount: gpus, Spec: spec,
		Env: map[string]string{"RUNPOD_POD_ID": id, "RUNPOD_AI_API_KEY": "token-" + id, "CUDA_VISIBLE_DEVICES": ""}},
		func(x autoscale.Exit) { e.exits <- x })
	require.NoError(e.t, err)
	pod, err := e.c.Client.CoreV1().Pods(e.ns).Get(e.t.Context(), id, metav1.GetOptions{})
	require.NoError(e.t, err)
	return pod
}

// kubelet writes a pod's status, as the node's kubelet would.
func (e *env) kubelet(name string, f func(*corev1.PodStatus)) {
	e.t.Helper()
	pods := e.c.Client.CoreV1().Pods(e.ns)
	pod, err := pods.Get(e.t.Context(), name, metav1.GetOptions{})
	require.NoError(e.t, err)
	f(&pod.Status)
	_, err = pods.UpdateStatus(e.t.Context(), pod, metav1.UpdateOptions{})
	require.NoError(e.t, err)
}

func (e *env) exit() autoscale.Exit {
	e.t.Helper()
	select {
	case x := <-e.exits:
		return x
	case <-time.After(30 * time.Second):
		e.t.Fatal("no worker exit reported")
		return autoscale.Exit{}
	}
}

func (e *env) gone(name string) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := e.c.Client.CoreV1().Pods(e.ns).Get(context.Background(), name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return
		}
		require.True(e.t, time.Now().Before(deadline), "pod %s still there", name)
		<-time.After(20 * time.Millisecond) // polls the API server
	}
}

func (e *env) status(id, want string) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for e.p.Status(id) != want {
		require.True(e.t, time.Now().Before(deadline), "status %q, want %q", e.p.Status(id), want)
		<-time.After(10 * time.Millisecond) // the informer's copy catches up
	}
}

func waiting(reason, msg string) func(*corev1.PodStatus) {
	return func(s *corev1.PodStatus) {
		s.Phase = corev1.PodPending
		s.ContainerStatuses = []corev1.ContainerStatus{{Name: "worker", Image: "x",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}}}
	}
}

// TestPod: a worker's pod carries its image, the RunPod environment, its labels, the worker's
// settings and its GPUs as a resource; it never restarts and gets no cluster credentials.
func TestPod(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pod := e.start("gpu-0a1b2c", spool.WorkerSpec{Image: "ghcr.io/me/worker:1", Args: []string{"--fast"}, Pull: spool.PullAlways,
		Env: map[string]string{"MODEL": "large", "RUNPOD_POD_ID": "ignored"},
		Kubernetes: &spool.PodSettings{
			NodeSelector:     map[string]string{"pool": "a100"},
			Tolerations:      []spool.Toleration{{Key: "nvidia.com/gpu", Operator: "Exists", Effect: "NoSchedule"}},
			Requests:         map[string]string{"cpu": "2", "memory": "8Gi"},
			Limits:           map[string]string{"memory": "16Gi"},
			ImagePullSecrets: []string{"ghcr"},
			Volumes: []spool.PodVolume{{Name: "models", MountPath: "/models", ReadOnly: true, PersistentVolumeClaim: "models"},
				{Name: "scratch", MountPath: "/scratch", EmptyDir: true}},
		}}, 2)
	require.Equal(t, map[string]string{kubernetes.LabelInstance: "test", kubernetes.LabelEndpoint: "gpu", kubernetes.LabelWorker: "gpu-0a1b2c",
		"app.kubernetes.io/managed-by": "spool"}, pod.Labels)
	require.Equal(t, corev1.RestartPolicyNever, pod.Spec.RestartPolicy)
	require.Equal(t, corev1.SeccompProfileTypeRuntimeDefault, pod.Spec.SecurityContext.SeccompProfile.Type)
	require.Equal(t, "gpu-0a1b2c", pod.Annotations[kubernetes.LabelWorker])
	require.False(t, *pod.Spec.AutomountServiceAccountToken)
	require.Equal(t, map[string]string{"pool": "a100"}, pod.Spec.NodeSelector)
	require.Equal(t, "nvidia.com/gpu", pod.Spec.Tolerations[0].Key)
	require.Equal(t, "ghcr", pod.Spec.ImagePullSecrets[0].Name)
	ctr := pod.Spec.Containers[0]
	require.Equal(t, "ghcr.io/me/worker:1", ctr.Image)
	require.Equal(t, []string{"--fast"}, ctr.Args)
	require.Equal(t, corev1.PullAlways, ctr.ImagePullPolicy)
	env := map[string]string{}
	for _, v := range ctr.Env {
		env[v.Name] = v.Value
	}
	require.Equal(t, map[string]string{"MODEL": "large", "RUNPOD_POD_ID": "gpu-0a1b2c", "RUNPOD_AI_API_KEY": "token-gpu-0a1b2c"}, env,
		"the RunPod environment wins; the local GPU variables are the device plugin's to set")
	gpu := ctr.Resources.Limits[kubernetes.GPUResource]
	require.Equal(t, int64(2), gpu.Value())
	mem := ctr.Resources.Limits[corev1.ResourceMemory]
	require.Equal(t, "16Gi", mem.String())
	cpu := ctr.Resources.Requests[corev1.ResourceCPU]
	require.Equal(t, "2", cpu.String())
	require.Equal(t, "models", pod.Spec.Volumes[0].PersistentVolumeClaim.ClaimName)
	require.NotNil(t, pod.Spec.Volumes[1].EmptyDir)
	require.Equal(t, "/models", ctr.VolumeMounts[0].MountPath)

	// A bad quantity is refused at start, saying which.
	err := e.p.Start(t.Context(), autoscale.WorkerSpec{Endpoint: "gpu", WorkerID: "gpu-bad", Spec: spool.WorkerSpec{Image: "x",
		Kubernetes: &spool.PodSettings{Limits: map[string]string{"memory": "lots"}}}}, func(autoscale.Exit) {})
	require.ErrorContains(t, err, `worker.kubernetes.limits.memory: "lots" is not a quantity`)
}

// TestStates: what a pod does shows as the worker's status; a pod that cannot run ends its
// worker with the reason and is deleted; a pod's end is its worker's exit.
func TestStates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	spec := spool.WorkerSpec{Image: "ghcr.io/me/worker:1"}

	e.start("gpu-pull", spec, 0)
	e.status("gpu-pull", "waiting for a node")
	e.kubelet("gpu-pull", waiting("ContainerCreating", ""))
	e.status("gpu-pull", "ContainerCreating")
	e.kubelet("gpu-pull", waiting("ImagePullBackOff", `Back-off pulling image "ghcr.io/me/worker:1"`))
	x := e.exit()
	require.Equal(t, "gpu-pull", x.ID)
	require.ErrorContains(t, x.Err, `ImagePullBackOff: Back-off pulling image "ghcr.io/me/worker:1"`)
	require.Contains(t, x.Logs[len(x.Logs)-1], "ImagePullBackOff")
	e.gone("gpu-pull")

	// What the cluster may yet resolve is a status (workers.initTimeout bounds it): a node pool
	// scaling up from zero, a pull that failed once.
	e.start("gpu-sched", spec, 1)
	e.kubelet("gpu-sched", func(s *corev1.PodStatus) {
		s.Phase = corev1.PodPending
		s.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
			Reason: corev1.PodReasonUnschedulable, Message: "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."}}
	})
	e.status("gpu-sched", "Unschedulable: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu.")
	e.kubelet("gpu-sched", func(s *corev1.PodStatus) { // scheduled now, pulling
		s.Conditions = nil
		waiting("ErrImagePull", "rpc error: i/o timeout")(s)
	})
	e.status("gpu-sched", "ErrImagePull: rpc error: i/o timeout")
	select {
	case x := <-e.exits:
		t.Fatalf("a pod the cluster may yet start ended its worker: %+v", x)
	default:
	}
	e.p.Kill("gpu-sched")
	require.Equal(t, "gpu-sched", e.exit().ID)

	// Running, then exit 0: not an error; exit 3: the status.
	e.start("gpu-ok", spec, 0)
	e.kubelet("gpu-ok", func(s *corev1.PodStatus) {
		s.Phase = corev1.PodRunning
		s.ContainerStatuses = []corev1.ContainerStatus{{Name: "worker", Image: "x", Ready: true,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
	})
	e.status("gpu-ok", "")
	e.kubelet("gpu-ok", func(s *corev1.PodStatus) {
		s.Phase = corev1.PodSucceeded
		s.ContainerStatuses[0].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}
	})
	x = e.exit()
	require.NoError(t, x.Err)

	e.start("gpu-crash", spec, 0)
	e.kubelet("gpu-crash", func(s *corev1.PodStatus) {
		s.Phase = corev1.PodFailed
		s.ContainerStatuses = []corev1.ContainerStatus{{Name: "worker", Image: "x",
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}}}}
	})
	x = e.exit()
	require.EqualError(t, x.Err, "exit status 137 (OOMKilled)")

	// Evicted: the pod's reason.
	e.start("gpu-evict", spec, 0)
	e.kubelet("gpu-evict", func(s *corev1.PodStatus) {
		s.Phase, s.Reason, s.Message = corev1.PodFailed, "Evicted", "The node was low on resource: memory."
	})
	x = e.exit()
	require.EqualError(t, x.Err, "its pod failed: Evicted: The node was low on resource: memory.")

	// A pod deleted by someone else (a drain, the loss of its node): the worker is gone.
	e.start("gpu-vanish", spec, 0)
	require.NoError(t, e.c.Client.CoreV1().Pods(e.ns).Delete(t.Context(), "gpu-vanish", metav1.DeleteOptions{}))
	x = e.exit()
	require.Equal(t, "gpu-vanish", x.ID)
	require.ErrorContains(t, x.Err, "its pod was deleted")
}

// TestStopAndClose: Stop deletes the pod, and its end is reported once; Close waits for the
// deletions asked for and leaves the other pods running.
func TestStopAndClose(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	spec := spool.WorkerSpec{Image: "ghcr.io/me/worker:1"}
	e.start("gpu-stop", spec, 0)
	e.p.Stop("gpu-stop", 5*time.Second)
	x := e.exit()
	require.Equal(t, "gpu-stop", x.ID)
	e.gone("gpu-stop")
	require.Nil(t, e.p.Logs("gpu-stop"), "a worker that ended is forgotten")

	// Close waits for the deletions Stop asked for, and leaves the pods no Stop reached running for
	// the next leader to adopt, ending their workers here.
	e.start("gpu-drain", spec, 0)
	e.start("gpu-close", spec, 0)
	e.p.Stop("gpu-drain", 30*time.Second)
	e.p.Close()
	ids := map[string]bool{e.exit().ID: true, e.exit().ID: true}
	require.Equal(t, map[string]bool{"gpu-drain": true, "gpu-close": true}, ids)
	e.gone("gpu-drain")
	_, err := e.c.Client.CoreV1().Pods(e.ns).Get(t.Context(), "gpu-close", metav1.GetOptions{})
	require.NoError(t, err, "left for the next leader")
	select {
	case x := <-e.exits:
		t.Fatalf("a second exit: %+v", x)
	default:
	}
}

// TestAdopt: a new run takes over the running pods of the previous one (after a crash, their
// tokens still work): they are its workers from then on, their states and ends reported to it,
// and its first Start deletes nothing. Pods that ended are deleted instead.
func TestAdopt(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	spec := spool.WorkerSpec{Image: "ghcr.io/me/worker:1"}
	e.start("gpu-keep", spec, 0)
	e.start("gpu-done", spec, 0)
	e.kubelet("gpu-done", func(s *corev1.PodStatus) { s.Phase = corev1.PodSucceeded })
	require.NoError(t, (<-e.exits).Err) // the old run hears gpu-done end...
	other := e.open()
	exits := make(chan autoscale.Exit, 4)
	found, err := other.Adopt(t.Context(), func(x autoscale.Exit) { exits <- x })
	require.NoError(t, err)
	require.Equal(t, []autoscale.Adoptee{{Endpoint: "gpu", WorkerID: "gpu-keep"}}, found)
	require.Equal(t, "waiting for a node", other.Status("gpu-keep"))
	require.Contains(t, other.Logs("gpu-keep")[0], "adopted pod gpu-keep")

	require.NoError(t, other.Start(t.Context(), autoscale.WorkerSpec{Endpoint: "gpu", WorkerID: "gpu-new", Spec: spec}, func(autoscale.Exit) {}))
	_, err = e.c.Client.CoreV1().Pods(e.ns).Get(t.Context(), "gpu-keep", metav1.GetOptions{})
	require.NoError(t, err, "an adopted pod is not a leftover")

	// Released (this replica no longer leads), the pod stays, and its end is no longer reported here.
	require.True(t, other.Release("gpu-new"))
	require.False(t, other.Release("gpu-new"))
	require.NoError(t, e.c.Client.CoreV1().Pods(e.ns).Delete(t.Context(), "gpu-keep", metav1.DeleteOptions{}))
	select {
	case x := <-exits:
		require.Equal(t, "gpu-keep", x.ID)
		require.ErrorContains(t, x.Err, "its pod was deleted")
	case <-time.After(30 * time.Second):
		t.Fatal("the adopting run was not told of its worker's end")
	}
	_, err = e.c.Client.CoreV1().Pods(e.ns).Get(t.Context(), "gpu-new", metav1.GetOptions{})
	require.NoError(t, err, "a released pod is left running")
}

// TestLongNames: ids that are not label values (a 64-character endpoint name) still make pods:
// the labels are shortened with a hash, the annotations hold the ids, and Spool follows the pod.
func TestLongNames(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ep := strings.Repeat("e", 63) + "_"
	id := ep + "-0a1b2c3d4e5f"
	require.NoError(t, e.p.Start(t.Context(), autoscale.WorkerSpec{Endpoint: ep, WorkerID: id, Spec: spool.WorkerSpec{Image: "x"}},
		func(x autoscale.Exit) { e.exits <- x }))
	list, err := e.c.Client.CoreV1().Pods(e.ns).List(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, list.Items, 1)
	pod := list.Items[0]
	require.Equal(t, id, pod.Annotations[kubernetes.LabelWorker])
	require.Equal(t, ep, pod.Annotations[kubernetes.LabelEndpoint])
	require.LessOrEqual(t, len(pod.Labels[kubernetes.LabelWorker]), 63)
	require.LessOrEqual(t, len(pod.Name), 63)
	e.kubelet(pod.Name, waiting("ImagePullBackOff", ""))
	require.Equal(t, id, e.exit().ID)
}

// TestStuckDeletion: a pod whose deletion its node never confirms (a lost node) ends its worker
// a minute past the deletion's deadline.
func TestStuckDeletion(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &metav1.Time{Time: now}}}
	status, err := kubernetes.PodState(pod, now.Add(59*time.Second))
	require.NoError(t, err)
	require.Equal(t, "stopping", status)
	_, err = kubernetes.PodState(pod, now.Add(61*time.Second))
	require.ErrorContains(t, err, "did not finish terminating")
}
