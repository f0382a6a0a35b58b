package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"time"

	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/spool-run/spool/internal/auth"
	"github.com/spool-run/spool/internal/autoscale"
	"github.com/spool-run/spool/internal/autoscale/docker"
	"github.com/spool-run/spool/internal/autoscale/kubernetes"
	"github.com/spool-run/spool/internal/autoscale/process"
)

// autoscalerKeyName named the stored worker key that versions before per-worker tokens made for
// the workers Spool starts; such keys are deleted at start.
const autoscalerKeyName = "spool-autoscaler"

// openAutoscaler makes the autoscaler that runs the workers of endpoints with a worker spec.
// Its loop starts with run.
func (s *server) openAutoscaler(ctx context.Context, onRestart func(endpoint, reason string)) error {
	all, err := s.keys.List(ctx)
	if err != nil {
		return err
	}
	for _, k := range all {
		if k.Name == autoscalerKeyName && k.Source == auth.SourceAPI {
			if err := s.keys.Delete(ctx, k.ID); err != nil {
				return fmt.Errorf("delete the previous autoscaler key: %w", err)
			}
		}
	}
	procs, err := process.New(process.Config{OnLine: s.jobLog.Line})
	if err != nil {
		return err
	}
	prov := &autoscale.Router{Processes: procs}
	containerURL := s.cfg.Workers.Docker.ServerURL
	if k := s.cfg.Workers.Kubernetes; k.Namespace != "" {
		pods, err := openPods(ctx, k.Kubeconfig, k.Namespace, cmp.Or(k.Instance, "spool"), s.log)
		if err != nil {
			return err
		}
		prov.Pods, containerURL = pods, k.ServerURL
	} else if s.cfg.Workers.Docker.Host != "off" {
		connect := func() (autoscale.Provider, error) {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			return docker.New(dctx, docker.Config{Host: s.cfg.Workers.Docker.Host, Network: s.cfg.Workers.Docker.Network,
				Instance: dockerInstance(s.cfg), Logger: s.log, OnLine: s.jobLog.Line})
		}
		if containers, err := connect(); err != nil {
			// Only endpoints with a worker image need the daemon; their workers fail to start
			// saying why, and the daemon is looked for again at most every 30 s.
			prov.NoContainers = err.Error()
			prov.Connect, prov.ConnectEvery, prov.Now = connect, 30*time.Second, s.store.clock.Now
			s.log.Debug("no Docker daemon: image workers cannot start", "err", err)
		} else {
			prov.Containers = containers
		}
	}
	gpus := s.cfg.Workers.GPUs
	if len(gpus) == 0 {
		gpus = detectGPUs(ctx)
	}
	s.scaler, err = autoscale.New(autoscale.Config{
		Engine:       s.eng,
		Fleet:        s.fleet,
		Store:        s.store,
		Provider:     prov,
		ServerURL:    s.URL(),
		ContainerURL: containerURL,
		WorkerKey:    s.tokens.Mint, // each worker speaks for itself only
		GPUs:         gpus,
		Logger:       s.log,
		Clock:        s.store.clock,
		Leader:       s.store.leader, // workers run on the leading replica, and talk to it
		InitTimeout:  s.cfg.Workers.InitTimeout,
		StopGrace:    s.cfg.Workers.StopGrace,
		CancelGrace:  s.cfg.Workers.CancelGrace,
		OnRestart:    onRestart,
	})
	return err
}

// openPods connects to the cluster (a kubeconfig file, else the pod's own account) and starts
// the provider of workers as pods.
func openPods(ctx context.Context, kubeconfig, namespace, instance string, log *slog.Logger) (*kubernetes.Provider, error) {
	var (
		rc  *rest.Config
		err error
	)
	if kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("workers.kubernetes: %w", err)
	}
	client, err := corev1client.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("workers.kubernetes: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return kubernetes.New(cctx, kubernetes.Config{Client: client, Namespace: namespace, Instance: instance, Logger: log})
}

// dockerInstance names this server's containers on a daemon it may share with other Spool
// servers: its store and data directory on this host. A restart of the same server finds (and
// removes) what its previous run left; another server's containers are not its business.
func dockerInstance(cfg *config) string {
	data, err := filepath.Abs(cfg.Data)
	if err != nil {
		data = cfg.Data
	}
	host, _ := os.Hostname()
	sum := sha256.Sum256([]byte(describeStore(cfg) + "\x00" + data + "\x00" + host))
	return hex.EncodeToString(sum[:8])
}

var nvidiaGPU = regexp.MustCompile(`(?m)^GPU (\d+):`)

// detectGPUs lists the GPU indices `nvidia-smi -L` reports; none when it is absent or fails.
func detectGPUs(ctx context.Context) []string {
	path, err := exec.LookPath("nvidia-smi")
	if err != nil {
		return nil
	}
	out, err := exec.CommandContext(ctx, path, "-L").Output()
	if err != nil {
		return nil
	}
	var ids []string
	for _, m := range nvidiaGPU.FindAllStringSubmatch(string(out), -1) {
		ids = append(ids, m[1])
	}
	return ids
}
