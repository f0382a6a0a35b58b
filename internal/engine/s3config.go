package engine

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/secret"
	"github.com/spool-run/spool/store"
)

// Sealer encrypts a job's s3Config for the store and decrypts it for the job-take answer.
// *secret.Sealer implements it (AES-256-GCM, the job id as associated data).
type Sealer interface {
	Seal(plaintext, ad []byte) ([]byte, error)
	Open(sealed, ad []byte) ([]byte, error)
}

// sealS3Config seals a submitted s3Config for the job id: stores only ever see the result.
func (e *Engine) sealS3Config(id string, plain json.RawMessage) ([]byte, error) {
	if len(plain) == 0 {
		return nil, nil
	}
	sealed, err := e.cfg.Sealer.Seal(plain, []byte(id))
	if err != nil {
		return nil, fmt.Errorf("seal the s3Config of job %s: %w", id, err)
	}
	return sealed, nil
}

// OpenS3Config returns the plaintext s3Config of a job that Take has just handed to a worker, for
// that worker's job-take answer and nothing else; nil when the job has none. It refuses a job that
// is not IN_PROGRESS: nobody but the holder of a running job may see its s3Config.
func (e *Engine) OpenS3Config(j *spool.Job) (json.RawMessage, error) {
	if len(j.S3ConfigSealed) == 0 {
		return nil, nil
	}
	if j.State != spool.StateInProgress || j.WorkerID == "" {
		return nil, fmt.Errorf("open the s3Config of job %s: the job is %s, not held by a worker", j.ID, j.State)
	}
	plain, err := e.cfg.Sealer.Open(j.S3ConfigSealed, []byte(j.ID))
	if err != nil {
		return nil, fmt.Errorf("open the s3Config of job %s: %w", j.ID, err)
	}
	return plain, nil
}

// undecryptableS3Config is the error of a job whose s3Config this server's key cannot open.
const undecryptableS3Config = "the job's s3Config cannot be decrypted with this server's secret key " +
	"(was the key replaced since the job was submitted?); submit the job again"

// takeDecryptable is take, without the jobs dropUndecryptable fails: when every job taken was
// failed, it takes again, so a waiting worker is not sent away while other jobs wait.
func (e *Engine) takeDecryptable(ctx context.Context, endpoint, worker string, max int) ([]*spool.Job, error) {
	for {
		jobs, err := e.take(ctx, endpoint, worker, max)
		if err != nil || len(jobs) == 0 {
			return jobs, err
		}
		kept, err := e.dropUndecryptable(ctx, jobs)
		if err != nil || len(kept) > 0 {
			return kept, err
		}
	}
}

// dropUndecryptable fails the just-taken jobs whose s3Config cannot be opened (the server's key
// changed while they were queued) instead of handing them out without it, and returns the others.
func (e *Engine) dropUndecryptable(ctx context.Context, jobs []*spool.Job) ([]*spool.Job, error) {
	kept := jobs[:0:0]
	for _, j := range jobs {
		if _, err := e.OpenS3Config(j); err == nil {
			kept = append(kept, j)
			continue
		}
		e.log.Error("a taken job's s3Config cannot be decrypted; the job fails", "job", j.ID, "endpoint", j.Endpoint)
		now := e.now()
		applied := false
		failed, err := e.store.UpdateJob(ctx, store.UpdateJobParams{ID: j.ID, Apply: guarded(func(cur *spool.Job) error {
			if cur.State != spool.StateInProgress || cur.WorkerID != j.WorkerID || cur.Attempt != j.Attempt {
				return store.ErrSkip
			}
			e.endByServer(cur, spool.StateFailed, undecryptableS3Config, now)
			cur.StopPending = false // the worker never got the job
			applied = true
			return nil
		})})
		if err != nil {
			return kept, translate(err, "job "+j.ID)
		}
		if applied {
			e.notifyJob(failed)
			e.obs.JobFinished(failed.Endpoint, failed.State)
		}
	}
	return kept, nil
}

// sealLegacyS3Configs seals, once at start, the s3Configs that a version of Spool from before
// encryption at rest left in plaintext on jobs still queued or running.
func (e *Engine) sealLegacyS3Configs(ctx context.Context) error {
	var failure error
	jobs, err := e.store.UpdateJobs(ctx, store.UpdateJobsParams{
		Filter: store.JobFilter{States: []spool.State{spool.StateInQueue, spool.StateInProgress}},
		Apply: func(j *spool.Job) error {
			if len(j.S3ConfigSealed) == 0 || secret.IsSealed(j.S3ConfigSealed) || !json.Valid(j.S3ConfigSealed) {
				return store.ErrSkip
			}
			sealed, err := e.sealS3Config(j.ID, j.S3ConfigSealed)
			if err != nil {
				failure = err
				return store.ErrSkip
			}
			j.S3ConfigSealed, j.HadS3Config = sealed, true
			return nil
		},
	})
	if err != nil {
		return fmt.Errorf("seal stored s3Configs: %w", err)
	}
	if failure != nil {
		return failure
	}
	if len(jobs) > 0 {
		e.log.Info("sealed the plaintext s3Configs of jobs stored by an older version", "jobs", len(jobs))
	}
	return nil
}

// retryRefusal is /retry's answer for a job that was submitted with an s3Config: it was erased
// when the job ended (CONTRACT.md: erased once terminal), and running the job again without it
// would silently drop the client's outputs.
func retryRefusal(id string) error {
	return spool.Errorf(spool.CodeInvalid, "job %s was submitted with an s3Config, which Spool erased when the job ended "+
		"(credentials are kept only while a job is queued or running); submit the job again with its s3Config", id)
}
