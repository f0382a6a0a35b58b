package main

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/auth"
	"github.com/spool-run/spool/internal/autoscale"
	"github.com/spool-run/spool/internal/autoscale/process"
)

// autoscalerKeyName names the worker key Spool makes for the workers it starts. A new one is
// made at every start (only its hash is stored; the secret lives in memory) and the old ones go.
const autoscalerKeyName = "spool-autoscaler"

// openAutoscaler makes the autoscaler that runs the workers of endpoints with a worker spec.
// Its loop starts with run.
func (s *server) openAutoscaler(ctx context.Context) error {
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
	secret, _, err := s.keys.Create(ctx, spool.Key{Name: autoscalerKeyName, Scope: spool.ScopeWorker})
	if err != nil {
		return fmt.Errorf("create the autoscaler's worker key: %w", err)
	}
	prov, err := process.New(process.Config{})
	if err != nil {
		return err
	}
	gpus := s.cfg.Workers.GPUs
	if len(gpus) == 0 {
		gpus = detectGPUs(ctx)
	}
	s.scaler, err = autoscale.New(autoscale.Config{
		Engine:      s.eng,
		Fleet:       s.fleet,
		Store:       s.store,
		Provider:    prov,
		ServerURL:   s.URL(),
		APIKey:      secret,
		GPUs:        gpus,
		Logger:      s.log,
		InitTimeout: s.cfg.Workers.InitTimeout,
		StopGrace:   s.cfg.Workers.StopGrace,
		CancelGrace: s.cfg.Workers.CancelGrace,
	})
	return err
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
