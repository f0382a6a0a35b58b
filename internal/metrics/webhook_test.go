package metrics_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/metrics"
)

// TestWebhookMetrics: attempts, outcomes and latency by endpoint and outcome only (no URLs, no
// ids).
func TestWebhookMetrics(t *testing.T) {
	t.Parallel()
	m := metrics.New(metrics.Config{})
	m.WebhookAttempt("ep", "http_error", 20*time.Millisecond)
	m.WebhookAttempt("ep", "success", 10*time.Millisecond)
	m.WebhookAttempt("ep", "refused", 0)
	m.WebhookFinished("ep", spool.DeliveryDelivered)
	m.WebhookFinished("ep", spool.DeliveryFailed)
	out := scrape(t, m)
	for _, line := range []string{
		`spool_webhook_attempts_total{endpoint="ep",outcome="http_error"} 1`,
		`spool_webhook_attempts_total{endpoint="ep",outcome="success"} 1`,
		`spool_webhook_attempts_total{endpoint="ep",outcome="refused"} 1`,
		`spool_webhook_deliveries_total{endpoint="ep",outcome="delivered"} 1`,
		`spool_webhook_deliveries_total{endpoint="ep",outcome="failed"} 1`,
		`spool_webhook_attempt_duration_seconds_count{endpoint="ep",outcome="success"} 1`,
	} {
		require.Contains(t, out, line)
	}
}
