package spoolworker

import (
	"context"
	"encoding/json"
	"fmt"
)

// Offloader stores a result too large to post somewhere the client can fetch it, and returns the
// output to post instead (Config.Offloader). spoolworker/s3upload.Offloader stores it in the job's
// s3Config bucket; it is a separate package so that programs which do not offload do not link an
// S3 client.
type Offloader interface {
	Offload(ctx context.Context, job *Job, output json.RawMessage) (json.RawMessage, error)
}

// offload hands an output over the offload threshold to the Offloader and returns the outcome
// that posts what it returned; other outcomes are returned as they are. An offload that fails
// fails the job, saying why.
func (w *Worker) offload(run *jobRun, out outcome) outcome {
	job := run.job
	limit := job.offloadBytes
	if limit <= 0 {
		limit = w.cfg.OutputOffloadBytes
	}
	if w.cfg.Offloader == nil || limit <= 0 || out.isStream || out.err != nil || out.output == nil || int64(len(out.output)) <= limit {
		return out
	}
	if _, ok := job.S3Config(); !ok {
		return out
	}
	// The handler is done; the offload gets the job's time that is left, as the handler did.
	o, err := w.cfg.Offloader.Offload(run.ctx, job, out.output)
	if err != nil {
		w.log.Warn("offloading the output failed; the job fails", "job", job.ID, "err", err)
		f := failed(fmt.Sprintf("the output (%d bytes, over the offload threshold of %d) could not be stored in the job's bucket: %v",
			len(out.output), limit, err))
		f.stopPod = out.stopPod
		return f
	}
	w.log.Info("output offloaded", "job", job.ID, "bytes", len(out.output))
	out.output = o
	return out
}
