// Package kubernetes runs workers as pods of a Kubernetes cluster (autoscale.Provider): one pod
// per worker, in one namespace, from the endpoint's image and its worker.kubernetes settings,
// with the RunPod environment pointing at Spool's Service. Kubernetes places the pods; the
// autoscaler decides how many.
//
// The provider watches its pods with an informer and reads their state the way the autoscaler
// needs it: Pending and creating are a worker starting (Status says why it waits); an image that
// cannot be pulled, a pod that cannot be scheduled or a container that cannot be created end the
// worker with that reason, so the autoscaler marks it unhealthy, requeues its jobs and restarts it
// after a backoff; a pod that ends or vanishes (node loss, eviction, preemption, a delete by hand)
// ends the worker, and its jobs go back to the queue. Pods run with restartPolicy Never: a crash
// is an exit Spool sees, not a CrashLoopBackOff.
package kubernetes

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/autoscale"
	"github.com/spool-run/spool/internal/logring"
)

// Labels of the pods Spool makes, for selectors (kubectl get pods -l run.spool/endpoint=NAME). An
// id that is not a label value (over 63 characters, say) is shortened with a hash there; the
// annotations of the same names hold the ids exactly, and are what Spool reads.
const (
	LabelInstance = "run.spool/instance"
	LabelEndpoint = "run.spool/endpoint"
	LabelWorker   = "run.spool/worker"
)

// labelSafe is v if it is a label value, else a shortened form of it with a hash.
func labelSafe(v string) string {
	if labelValue.MatchString(v) {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	keep := strings.Map(func(r rune) rune {
		if 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return -1
	}, v)
	if len(keep) > 40 {
		keep = keep[:40]
	}
	keep = strings.Trim(keep, "-_.")
	if keep == "" {
		return hex.EncodeToString(sum[:8])
	}
	return keep + "-" + hex.EncodeToString(sum[:8])
}

// GPUResource is the extended resource a worker's gpuCount asks for (NVIDIA's device plugin).
const GPUResource = "nvidia.com/gpu"

// Config configures the provider.
type Config struct {
	// Client reaches the API server's core group (only it: linking every API group's client
	// would triple the size of the binary). Required.
	Client corev1client.CoreV1Interface
	// Namespace holds the pods. Required.
	Namespace string
	// Instance tells this Spool's pods from others' in the namespace (LabelInstance). Required.
	Instance string
	// LogLines is how many status lines of each worker are kept. Defaults to 200.
	LogLines int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Provider runs workers as pods. It is safe for concurrent use.
type Provider struct {
	cfg       Config
	log       *slog.Logger
	pods      cache.SharedIndexInformer
	stop      chan struct{}
	closeOnce sync.Once

	mu      sync.Mutex
	workers map[string]*worker // by worker id
	deletes sync.WaitGroup     // Stop's and Kill's deletions in flight
}

type worker struct {
	id, pod string
	logs    *logring.Ring
	status  string
	exited  func(autoscale.Exit)
	ended   bool // exited was called
}

var _ autoscale.Provider = (*Provider)(nil)

// New starts watching the namespace's pods of cfg.Instance.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	switch {
	case cfg.Client == nil || cfg.Namespace == "" || cfg.Instance == "":
		return nil, errors.New("kubernetes: Client, Namespace and Instance are required")
	case !labelValue.MatchString(cfg.Instance):
		return nil, fmt.Errorf("kubernetes: instance %q is not a label value", cfg.Instance)
	}
	if cfg.LogLines == 0 {
		cfg.LogLines = 200
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p := &Provider{cfg: cfg, log: cfg.Logger, stop: make(chan struct{}), workers: map[string]*worker{}}
	selector := LabelInstance + "=" + cfg.Instance
	pods := cfg.Client.Pods(cfg.Namespace)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = selector
			return pods.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = selector
			return pods.Watch(ctx, o)
		},
	}
	// The resync looks at every pod again now and then: a deletion a lost node never confirms
	// changes nothing on its own.
	p.pods = cache.NewSharedIndexInformer(lw, &corev1.Pod{}, 30*time.Second, cache.Indexers{})
	if _, err := p.pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { p.observe(obj, false) },
		UpdateFunc: func(_, obj any) { p.observe(obj, false) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			p.observe(obj, true)
		},
	}); err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	go p.pods.Run(p.stop)
	if !cache.WaitForCacheSync(ctx.Done(), p.pods.HasSynced) {
		close(p.stop)
		return nil, fmt.Errorf("kubernetes: the pods of namespace %s did not sync: %w", cfg.Namespace, ctx.Err())
	}
	return p, nil
}

// labelValue is what a label value may be (63 characters at most).
var labelValue = regexp.MustCompile(`^([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$`)

// podName is the worker's pod: its id made a DNS label (lower case, at most 63 characters).
func podName(id string) string {
	n := strings.Map(func(r rune) rune {
		switch {
		case 'a' <= r && r <= 'z', '0' <= r && r <= '9', r == '-':
			return r
		case 'A' <= r && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '-'
	}, id)
	if len(n) > 63 {
		n = n[len(n)-63:] // the random end of the id tells workers apart
	}
	return strings.Trim(n, "-")
}

// Start implements autoscale.Provider: it creates the worker's pod. (The pods of a previous run or
// leader are the autoscaler's to adopt first: Adopt.)
func (p *Provider) Start(ctx context.Context, w autoscale.WorkerSpec, exited func(autoscale.Exit)) error {
	pod, err := p.podFor(w)
	if err != nil {
		return fmt.Errorf("start worker %s: %w", w.WorkerID, err)
	}
	wk := &worker{id: w.WorkerID, pod: pod.Name, logs: logring.New(p.cfg.LogLines), status: "creating the pod", exited: exited}
	p.mu.Lock()
	if _, dup := p.workers[w.WorkerID]; dup {
		p.mu.Unlock()
		return fmt.Errorf("start worker %s: already running", w.WorkerID)
	}
	p.workers[w.WorkerID] = wk
	p.mu.Unlock()
	if _, err := p.cfg.Client.Pods(p.cfg.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		p.mu.Lock()
		delete(p.workers, w.WorkerID)
		p.mu.Unlock()
		return fmt.Errorf("start worker %s: create pod: %w", w.WorkerID, err)
	}
	wk.logs.Add("spool: created pod " + pod.Name + " in namespace " + p.cfg.Namespace)
	return nil
}

// Adopt implements autoscale.Adopter: the instance's running pods this provider did not make
// become its workers (a restart after a crash, a replica taking the lead: their tokens, derived
// from the server's secret, still work). Pods that ended are deleted.
func (p *Provider) Adopt(ctx context.Context, exited func(autoscale.Exit)) ([]autoscale.Adoptee, error) {
	list, err := p.cfg.Client.Pods(p.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelInstance + "=" + p.cfg.Instance})
	if err != nil {
		return nil, fmt.Errorf("kubernetes: list the pods of namespace %s: %w", p.cfg.Namespace, err)
	}
	var (
		found   []autoscale.Adoptee
		adopted []*corev1.Pod
	)
	p.mu.Lock()
	for i := range list.Items {
		pod := &list.Items[i]
		id, ep := pod.Annotations[LabelWorker], pod.Annotations[LabelEndpoint]
		if _, mine := p.workers[id]; mine || id == "" {
			continue
		}
		if _, end := podState(pod, time.Now()); end != nil || pod.DeletionTimestamp != nil {
			_ = p.delete(ctx, pod.Name, 0)
			continue
		}
		wk := &worker{id: id, pod: pod.Name, logs: logring.New(p.cfg.LogLines), exited: exited}
		wk.logs.Add("spool: adopted pod " + pod.Name + ", left running by a previous run")
		p.workers[id] = wk
		found = append(found, autoscale.Adoptee{Endpoint: ep, WorkerID: id})
		adopted = append(adopted, pod)
	}
	p.mu.Unlock()
	for _, pod := range adopted {
		p.observe(pod, false) // its state now: no event may come until it changes
	}
	return found, nil
}

// podFor is the worker's pod.
func (p *Provider) podFor(w autoscale.WorkerSpec) (*corev1.Pod, error) {
	if w.Spec.Image == "" {
		return nil, errors.New("no image")
	}
	env := map[string]string{}
	for k, v := range w.Spec.Env {
		env[k] = v
	}
	for k, v := range w.Env { // the RunPod environment wins
		env[k] = v
	}
	// The device plugin hands the pod its GPUs and sets their variables; the local pool's do not
	// apply to another machine.
	for _, k := range []string{"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"} {
		delete(env, k)
	}
	names := make([]string, 0, len(env))
	for k := range env {
		names = append(names, k)
	}
	sort.Strings(names)
	ctr := corev1.Container{
		Name:            "worker",
		Image:           w.Spec.Image,
		Args:            w.Spec.Args,
		WorkingDir:      w.Spec.Dir,
		ImagePullPolicy: pullPolicy(w.Spec.Pull),
	}
	for _, k := range names {
		ctr.Env = append(ctr.Env, corev1.EnvVar{Name: k, Value: env[k]})
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: podName(w.WorkerID),
			Labels: map[string]string{
				LabelInstance: p.cfg.Instance, LabelEndpoint: labelSafe(w.Endpoint), LabelWorker: labelSafe(w.WorkerID),
				"app.kubernetes.io/managed-by": "spool",
			},
			Annotations: map[string]string{LabelEndpoint: w.Endpoint, LabelWorker: w.WorkerID},
		},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			// The runtime's default syscall filter, which the restricted Pod Security standard asks.
			SecurityContext: &corev1.PodSecurityContext{SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
		},
	}
	ks := w.Spec.Kubernetes
	if ks == nil {
		ks = &spool.PodSettings{}
	}
	var err error
	if ctr.Resources, err = resources(ks, w.GPUCount); err != nil {
		return nil, err
	}
	pod.Spec.NodeSelector = ks.NodeSelector
	pod.Spec.ServiceAccountName = ks.ServiceAccount
	// A worker needs no credentials of the cluster unless its settings name an account.
	pod.Spec.AutomountServiceAccountToken = new(ks.ServiceAccount != "")
	for _, s := range ks.ImagePullSecrets {
		pod.Spec.ImagePullSecrets = append(pod.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: s})
	}
	for _, t := range ks.Tolerations {
		pod.Spec.Tolerations = append(pod.Spec.Tolerations, corev1.Toleration{Key: t.Key,
			Operator: corev1.TolerationOperator(t.Operator), Value: t.Value, Effect: corev1.TaintEffect(t.Effect)})
	}
	for _, v := range ks.Volumes {
		vol := corev1.Volume{Name: v.Name}
		switch {
		case v.PersistentVolumeClaim != "":
			vol.PersistentVolumeClaim = &corev1.PersistentVolumeClaimVolumeSource{ClaimName: v.PersistentVolumeClaim, ReadOnly: v.ReadOnly}
		case v.Secret != "":
			vol.Secret = &corev1.SecretVolumeSource{SecretName: v.Secret}
		case v.ConfigMap != "":
			vol.ConfigMap = &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: v.ConfigMap}}
		default:
			vol.EmptyDir = &corev1.EmptyDirVolumeSource{}
		}
		pod.Spec.Volumes = append(pod.Spec.Volumes, vol)
		ctr.VolumeMounts = append(ctr.VolumeMounts, corev1.VolumeMount{Name: v.Name, MountPath: v.MountPath, ReadOnly: v.ReadOnly})
	}
	pod.Spec.Containers = []corev1.Container{ctr}
	return pod, nil
}

func pullPolicy(p string) corev1.PullPolicy {
	switch p {
	case spool.PullAlways:
		return corev1.PullAlways
	case spool.PullNever:
		return corev1.PullNever
	}
	return corev1.PullIfNotPresent
}

// resources are the container's requests and limits, with gpus GPUs unless the limits name them.
func resources(ks *spool.PodSettings, gpus int) (corev1.ResourceRequirements, error) {
	var r corev1.ResourceRequirements
	parse := func(what string, m map[string]string) (corev1.ResourceList, error) {
		if len(m) == 0 {
			return nil, nil
		}
		l := corev1.ResourceList{}
		for k, v := range m {
			q, err := resource.ParseQuantity(v)
			if err != nil {
				return nil, fmt.Errorf("worker.kubernetes.%s.%s: %q is not a quantity", what, k, v)
			}
			l[corev1.ResourceName(k)] = q
		}
		return l, nil
	}
	var err error
	if r.Requests, err = parse("requests", ks.Requests); err != nil {
		return r, err
	}
	if r.Limits, err = parse("limits", ks.Limits); err != nil {
		return r, err
	}
	if _, set := r.Limits[GPUResource]; gpus > 0 && !set {
		if r.Limits == nil {
			r.Limits = corev1.ResourceList{}
		}
		r.Limits[GPUResource] = *resource.NewQuantity(int64(gpus), resource.DecimalSI)
	}
	return r, nil
}

// observe reads a pod's state into its worker's, and ends the worker when the pod can no longer
// work: it failed to start, it ended, or it is gone.
func (p *Provider) observe(obj any, deleted bool) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	p.mu.Lock()
	wk := p.workers[pod.Annotations[LabelWorker]]
	p.mu.Unlock()
	if wk == nil {
		return
	}
	status, end := podState(pod, time.Now())
	if deleted && end == nil {
		end = errors.New("its pod was deleted (by hand, a drain, an eviction or the loss of its node)")
	}
	p.mu.Lock()
	changed := status != wk.status
	wk.status = status
	p.mu.Unlock()
	if changed && status != "" {
		wk.logs.Add("spool: pod " + pod.Name + ": " + status)
	}
	if end == nil {
		return
	}
	if !deleted {
		// It cannot work: its pod goes, its jobs go back to the queue.
		if err := p.delete(context.Background(), pod.Name, 0); err != nil {
			p.log.Warn("delete a worker pod", "pod", pod.Name, "err", err)
		}
	}
	p.end(wk, end)
}

// end reports a worker's end, once.
func (p *Provider) end(wk *worker, err error) {
	p.mu.Lock()
	if wk.ended {
		p.mu.Unlock()
		return
	}
	wk.ended = true
	delete(p.workers, wk.id)
	p.mu.Unlock()
	wk.logs.Add("spool: the worker ended: " + err.Error())
	if errors.Is(err, errExited0) {
		err = nil
	}
	wk.exited(autoscale.Exit{ID: wk.id, Err: err, Logs: wk.logs.Lines()})
}

// errExited0 stands for a pod whose worker exited with status 0: an end, but not an error.
var errExited0 = errors.New("exit status 0")

// stuckAfter is how long past its deletion deadline a pod may stay before its worker is taken
// for gone: the kubelet of a lost node never confirms the deletion.
const stuckAfter = time.Minute

// podState says what a pod is doing ("" once its worker runs) and, when it cannot work, why.
// Reasons a cluster may yet resolve — unschedulable (a node pool scaling up from zero), an image
// pull that failed once, a Secret not created yet — are a status, and workers.initTimeout bounds
// them; reasons that will not go away by themselves end the worker at once.
func podState(pod *corev1.Pod, now time.Time) (string, error) {
	if d := pod.DeletionTimestamp; d != nil {
		if now.After(d.Add(stuckAfter)) {
			return "", errors.New("its pod did not finish terminating (its node may be lost)")
		}
		return "stopping", nil
	}
	switch pod.Status.Phase {
	case corev1.PodSucceeded:
		return "", exitOf(pod, errExited0)
	case corev1.PodFailed:
		why := "its pod failed"
		if pod.Status.Reason != "" {
			why = "its pod failed: " + pod.Status.Reason // Evicted, Preempting, NodeLost...
			if pod.Status.Message != "" {
				why += ": " + pod.Status.Message
			}
		}
		return "", exitOf(pod, errors.New(why))
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return "Unschedulable: " + c.Message, nil
		}
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			msg := w.Reason
			if w.Message != "" {
				msg += ": " + w.Message
			}
			switch w.Reason {
			case "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "CreateContainerError", "CrashLoopBackOff":
				return "", errors.New(msg)
			}
			return msg, nil // ContainerCreating, PodInitializing, ErrImagePull, CreateContainerConfigError
		}
		if cs.State.Running != nil {
			return "", nil
		}
	}
	if pod.Status.Phase == corev1.PodPending || pod.Status.Phase == "" {
		if pod.Spec.NodeName == "" {
			return "waiting for a node", nil
		}
		return "Pending", nil
	}
	return "", nil
}

// exitOf is the worker's exit as its container's termination tells it, else fallback.
func exitOf(pod *corev1.Pod, fallback error) error {
	for _, cs := range pod.Status.ContainerStatuses {
		if t := cs.State.Terminated; t != nil {
			if t.ExitCode == 0 {
				return errExited0
			}
			msg := fmt.Sprintf("exit status %d", t.ExitCode)
			if t.Reason != "" && t.Reason != "Error" {
				msg += " (" + t.Reason + ")" // OOMKilled
			}
			return errors.New(msg)
		}
	}
	return fallback
}

// Stop implements autoscale.Provider: the pod is deleted with grace as its termination grace
// period (SIGTERM, then SIGKILL from the kubelet).
func (p *Provider) Stop(id string, grace time.Duration) {
	p.stopPod(id, grace)
}

// Kill implements autoscale.Provider: a deletion with a one-second grace, not a forced one,
// which would remove the pod from the API while its container may still run.
func (p *Provider) Kill(id string) { p.stopPod(id, time.Second) }

func (p *Provider) stopPod(id string, grace time.Duration) {
	p.mu.Lock()
	wk := p.workers[id]
	p.mu.Unlock()
	if wk == nil {
		return
	}
	p.deletes.Add(1)
	go func() {
		defer p.deletes.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.delete(ctx, wk.pod, max(grace, time.Second)); err != nil {
			p.log.Warn("delete a worker pod", "pod", wk.pod, "err", err)
		}
	}()
}

// Release implements autoscale.Releaser: the worker is no longer this provider's, and its pod is
// left as it is (another replica leads now and adopts it).
func (p *Provider) Release(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.workers[id]; !ok {
		return false
	}
	delete(p.workers, id)
	return true
}

func (p *Provider) delete(ctx context.Context, name string, grace time.Duration) error {
	secs := int64(grace / time.Second)
	err := p.cfg.Client.Pods(p.cfg.Namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &secs})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("kubernetes: delete pod %s: %w", name, err)
	}
	return nil
}

// Logs implements autoscale.Provider: what Spool saw of the worker's pod. The container's own
// output is the cluster's (kubectl logs, or the cluster's log collector).
func (p *Provider) Logs(id string) []string {
	p.mu.Lock()
	wk := p.workers[id]
	p.mu.Unlock()
	if wk == nil {
		return nil
	}
	return wk.logs.Lines()
}

// Status implements autoscale.Statuser: why the worker's pod is not running yet.
func (p *Provider) Status(id string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if wk := p.workers[id]; wk != nil {
		return wk.status
	}
	return ""
}

// SchedulesGPUs implements autoscale.GPUScheduler: the cluster hands out GPUs, not the local pool.
func (p *Provider) SchedulesGPUs(spool.WorkerSpec) bool { return true }

// Close implements autoscale.Provider: it waits until the deletions Stop asked for reached the
// API server (the pods drain for their grace after Spool is gone), ends every worker it still
// has, and stops watching. It deletes nothing itself: pods no Stop reached are left running, for
// the next leader to adopt.
func (p *Provider) Close() {
	p.deletes.Wait()
	p.mu.Lock()
	var left []*worker
	for _, wk := range p.workers {
		left = append(left, wk)
	}
	p.mu.Unlock()
	for _, wk := range left {
		p.end(wk, errors.New("spool stopped"))
	}
	p.closeOnce.Do(func() { close(p.stop) })
}
