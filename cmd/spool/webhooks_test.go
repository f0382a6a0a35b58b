package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
)

func TestWebhookConfig(t *testing.T) {
	t.Parallel()
	secret := spool.NewWebhookSecret()
	p := writeConfig(t, `
webhooks:
  allowCIDRs: ["10.0.0.0/8", "192.168.1.20"]
  concurrency: 8
  perHost: 2
  retention: 24h
endpoints:
  - name: hooks
    webhookSecret: "`+secret+`"
    webhookAttempts: 10
    webhookBackoff: exponential
    webhookDelay: 30s
    webhookMaxDelay: 1h
    webhookTimeout: 5s
  - name: plain
`)
	c, err := loadConfig(p, envMap(map[string]string{"SPOOL_WEBHOOK_ALLOW_CIDRS": "172.16.0.0/12, fd00::/8"}))
	require.NoError(t, err)
	var cidrs []string
	for _, p := range c.WebhookAllowCIDRs {
		cidrs = append(cidrs, p.String())
	}
	require.Equal(t, []string{"10.0.0.0/8", "192.168.1.20/32", "172.16.0.0/12", "fd00::/8"}, cidrs)
	require.Equal(t, 8, c.Webhooks.Concurrency)
	require.Equal(t, 2, c.Webhooks.PerHost)
	require.Equal(t, 24*time.Hour, c.Webhooks.Retention)
	require.False(t, c.WebhookAllowLoopback, "only spool dev allows loopback")

	hooks := c.Endpoints[0]
	require.Equal(t, secret, hooks.WebhookSecret)
	require.Equal(t, spool.WebhookSchedule{Attempts: 10, Backoff: "exponential", Delay: 30 * time.Second, MaxDelay: time.Hour, Timeout: 5 * time.Second},
		hooks.WebhookSchedule())
	require.Equal(t, spool.DefaultWebhookSchedule(), c.Endpoints[1].WebhookSchedule(), "RunPod's schedule by default")

	for body, msg := range map[string]string{
		"webhooks:\n  allowCIDRs: [\"10.0.0.0/33\"]\n":         `"10.0.0.0/33"`,
		"webhooks:\n  perHost: -1\n":                           "must not be negative",
		"webhooks:\n  nope: 1\n":                               "nope",
		"endpoints:\n  - name: e\n    webhookSecret: plain\n":  `must start with "whsec_"`,
		"endpoints:\n  - name: e\n    webhookAttempts: 1000\n": "webhookAttempts",
		"endpoints:\n  - name: e\n    webhookRetries: 3\n":     "webhookRetries",
	} {
		_, err := loadConfig(writeConfig(t, body), envMap(nil))
		require.Error(t, err, body)
		require.Contains(t, err.Error(), msg, body)
	}
	_, err = loadConfig(writeConfig(t, ""), envMap(map[string]string{"SPOOL_WEBHOOK_ALLOW_CIDRS": "not-a-cidr"}))
	require.ErrorContains(t, err, "SPOOL_WEBHOOK_ALLOW_CIDRS")
}
