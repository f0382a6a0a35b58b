package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/secret"
	"github.com/spool-run/spool/store"
)

// upgradeStored brings what an older version stored up to date, once at start: it seals the
// endpoints' webhook secrets (upgradeStoredEndpoints), seals the s3Configs of queued and running
// jobs stored in plaintext (before encryption at rest) and gives the jobs stored without a
// retention (before it was fixed at submission) the configured one.
func (e *Engine) upgradeStored(ctx context.Context) error {
	if err := e.upgradeStoredEndpoints(ctx); err != nil {
		return err
	}
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

// upgradeStoredEndpoints seals the webhook secrets that an older version stored in plaintext. The
// cache already holds them open (loadEndpoints passes a plaintext secret through), so only the
// store changes. Sealed secrets are left alone: running it again changes nothing.
func (e *Engine) upgradeStoredEndpoints(ctx context.Context) error {
	eps, err := e.store.ListEndpoints(ctx)
	if err != nil {
		return fmt.Errorf("upgrade stored endpoints: %w", err)
	}
	var sealed []string
	for _, ep := range eps {
		if ep.WebhookSecret == "" || strings.HasPrefix(ep.WebhookSecret, sealedSecretPrefix) {
			continue
		}
		// The stored timestamps go back unchanged: sealing is no edit of the endpoint.
		s, err := e.sealEndpoint(ep)
		if err != nil {
			return fmt.Errorf("upgrade stored endpoints: %w", err)
		}
		if err := e.store.PutEndpoint(ctx, s); err != nil {
			return fmt.Errorf("upgrade stored endpoints: seal the webhookSecret of endpoint %s: %w", ep.Name, err)
		}
		sealed = append(sealed, ep.Name)
	}
	if len(sealed) > 0 {
		e.log.Info("sealed the plaintext webhook secrets of endpoints stored by an older version", "endpoints", sealed)
	}
	return nil
}
