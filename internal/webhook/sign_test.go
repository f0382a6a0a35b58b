package webhook_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/webhook"
)

// TestSignKnownAnswer checks Sign against the Standard Webhooks specification's example.
func TestSignKnownAnswer(t *testing.T) {
	t.Parallel()
	keys, err := spool.ParseWebhookSecrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	require.NoError(t, err)
	got := webhook.Sign(keys, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	require.Equal(t, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", got)

	// Rotation: one signature per secret, in order, space-separated.
	two, err := spool.ParseWebhookSecrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw " + spool.NewWebhookSecret())
	require.NoError(t, err)
	both := webhook.Sign(two, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	require.Regexp(t, `^v1,g0hM9SsE\+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1,[A-Za-z0-9+/]{43}=$`, both)
}

// TestPayload: the status object plus input (byte for byte) and webhook; never s3Config.
func TestPayload(t *testing.T) {
	t.Parallel()
	j := &spool.Job{
		ID: "job-1", State: spool.StateCompleted, Input: json.RawMessage(`{"a": [1, 2.0]}`), Webhook: "https://x.test/h?a=1&b=2",
		S3ConfigSealed: []byte(`{"accessSecret":"CANARY"}`), Output: json.RawMessage(`false`), WorkerID: "w",
		QueuedAt: t0, TakenAt: t0.Add(4736 * time.Millisecond), FinishedAt: t0.Add((4736 + 157) * time.Millisecond),
	}
	got := string(webhook.Payload(j))
	require.Equal(t, `{"id":"job-1","status":"COMPLETED","delayTime":4736,"executionTime":157,"output":false,"workerId":"w",`+
		`"input":{"a": [1, 2.0]},"webhook":"https://x.test/h?a=1&b=2"}`, got)
	require.NotContains(t, got, "CANARY")
}
