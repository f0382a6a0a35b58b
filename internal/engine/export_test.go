package engine

import (
	"encoding/json"

	"github.com/spool-run/spool"
)

// OpenS3Config opens a job's s3Config as Take does for its handouts, so that tests can check
// that it opens for the holder of a running job and for nobody else.
func (e *Engine) OpenS3Config(j *spool.Job) (json.RawMessage, error) { return e.openS3Config(j) }
