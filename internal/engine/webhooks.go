package engine

import (
	"context"
	"errors"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/notify"
	"github.com/spool-run/spool/store"
)

// The webhook outbox is written by finish (the delivery of a terminal transition) and delivered by
// internal/webhook. These are the admin API's views of it.

// WebhookDeliveries returns a job's webhook deliveries, oldest first, each with its attempts. A job
// that no longer exists (retention) still has its deliveries for a while; CodeNotFound only when
// there is neither.
func (e *Engine) WebhookDeliveries(ctx context.Context, id string) ([]spool.WebhookDelivery, error) {
	ds, err := e.store.ListDeliveries(ctx, id)
	if err != nil {
		return nil, translate(err, "webhook deliveries of job "+id)
	}
	if len(ds) > 0 {
		return ds, nil
	}
	if _, err := e.store.GetJob(ctx, store.GetJobParams{ID: id}); err != nil {
		return nil, translate(err, "job "+id)
	}
	return []spool.WebhookDelivery{}, nil
}

// Redeliver queues a new delivery, with a new webhook-id, of the payload of the job's latest
// delivery (or, for a job that ended with a webhook but has no delivery, of the job as it is now).
func (e *Engine) Redeliver(ctx context.Context, id string) (spool.WebhookDelivery, error) {
	ds, err := e.WebhookDeliveries(ctx, id)
	if err != nil {
		return spool.WebhookDelivery{}, err
	}
	now := e.now()
	d := spool.WebhookDelivery{ID: spool.NewWebhookMessageID(), JobID: id, CreatedAt: now}
	if len(ds) > 0 {
		last := ds[len(ds)-1]
		d.Endpoint, d.URL, d.Payload, d.RedeliveryOf = last.Endpoint, last.URL, last.Payload, last.ID
	} else {
		j, err := e.JobAnyEndpoint(ctx, id)
		switch {
		case err != nil:
			return spool.WebhookDelivery{}, err
		case j.Webhook == "":
			return spool.WebhookDelivery{}, spool.Errorf(spool.CodeInvalid, "job %s has no webhook", id)
		case !j.State.Terminal():
			return spool.WebhookDelivery{}, spool.Errorf(spool.CodeInvalid, "job %s is %s; its webhook is sent when it ends", id, j.State)
		case e.cfg.WebhookPayload == nil:
			return spool.WebhookDelivery{}, errors.New("engine: webhooks are not enabled (no WebhookPayload)")
		}
		d.Endpoint, d.URL, d.Payload = j.Endpoint, j.Webhook, e.cfg.WebhookPayload(j)
	}
	if err := e.store.CreateDelivery(ctx, store.CreateDeliveryParams{Delivery: d}); err != nil {
		return spool.WebhookDelivery{}, translate(err, "redeliver webhook of job "+id)
	}
	e.notifier.Notify(notify.Webhooks)
	d.Host = spool.WebhookHost(d.URL)
	d.State = spool.DeliveryPending
	d.NextAttemptAt = now
	return d, nil
}
