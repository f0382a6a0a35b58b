package engine

import (
	"encoding/json"

	"github.com/spool-run/spool/internal/notify"

	"github.com/spool-run/spool"
)

// OpenS3Config opens a job's s3Config as Take does for its handouts, so that tests can check
// that it opens for the holder of a running job and for nobody else.
func (e *Engine) OpenS3Config(j *spool.Job) (json.RawMessage, error) { return e.openS3Config(j) }

// Effects is effects with its fields exported, for the table test of effects.
type Effects struct {
	Topics                                      []notify.Topic
	Submitted, Started                          bool
	Finished                                    spool.State
	Requeued                                    string
	HandedTo, ReleasedBy, MustStop, RestartAsks string
}

// EffectsOf is effectsOf for the table test.
func EffectsOf(c Change) Effects {
	fx := effectsOf(c)
	return Effects{
		Topics: fx.topics, Submitted: fx.submitted, Started: fx.started, Finished: fx.finished, Requeued: fx.requeued,
		HandedTo: fx.handedTo, ReleasedBy: fx.releasedBy, MustStop: fx.mustStop, RestartAsks: fx.restartAsks,
	}
}
