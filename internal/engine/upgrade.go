package engine

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/secret"
	"github.com/spool-run/spool/store"
)

// upgradeStoredJobs brings the jobs an older version left queued or running up to date, once at
// start: it seals the s3Configs stored in plaintext (before encryption at rest) and gives the
// jobs stored without a retention (before it was fixed at submission) the configured one.
func (e *Engine) upgradeStoredJobs(ctx context.Context) error {
	jobs, err := e.store.FindJobs(ctx, store.JobFilter{
		States: []spool.State{spool.StateInQueue, spool.StateInProgress}, With: store.PayloadS3Config,
	})
	if err != nil {
		return fmt.Errorf("upgrade stored jobs: %w", err)
	}
	var updates []store.JobUpdate
	sealed := 0
	for _, j := range jobs {
		var c store.JobChange
		if len(j.S3ConfigSealed) > 0 && !secret.IsSealed(j.S3ConfigSealed) && json.Valid(j.S3ConfigSealed) {
			if c.S3ConfigSealed, err = e.sealS3Config(j.ID, j.S3ConfigSealed); err != nil {
				return err
			}
			c.Set, c.HadS3Config = store.SetS3Config|store.SetHadS3Config, true
			sealed++
		}
		if j.RetentionMs == 0 {
			c.Set, c.RetentionMs = c.Set|store.SetRetention, e.cfg.Retention.For(j.Sync).Milliseconds()
		}
		if c.Set != 0 {
			updates = append(updates, store.JobUpdate{ID: j.ID, Expect: store.Exactly(j), Change: c})
		}
	}
	if len(updates) == 0 {
		return nil
	}
	// Before the engine serves anything: there are no effects to derive, nobody waits yet.
	if _, err := e.store.UpdateJobs(ctx, store.UpdateJobsParams{Updates: updates, Now: e.now()}); err != nil {
		return fmt.Errorf("upgrade stored jobs: %w", err)
	}
	if sealed > 0 {
		e.log.Info("sealed the plaintext s3Configs of jobs stored by an older version", "jobs", sealed)
	}
	return nil
}
