package engine

import (
	"encoding/json"
	"fmt"

	"github.com/spool-run/spool"
)

// Sealer encrypts what the store must not hold in plaintext and decrypts it when needed: a job's
// s3Config (the job id as associated data), opened for the job-take answer, and an endpoint's
// webhookSecret (bound to the endpoint's name), opened into the endpoint cache. *secret.Sealer
// implements it (AES-256-GCM).
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

// openS3Config returns the plaintext s3Config of a job Take has just handed to a worker, for that
// worker's job-take answer and nothing else; nil when the job has none. It refuses a job that is
// not IN_PROGRESS: nobody but the holder of a running job may see its s3Config.
func (e *Engine) openS3Config(j *spool.Job) (json.RawMessage, error) {
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
