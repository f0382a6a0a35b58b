package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/wire"
)

// Payload is the body of a job's webhook (docs/contract.md §2, docs/client-api.md §6): the /status object
// plus input and webhook. s3Config is never part of it (the job object never carries it, and the
// engine erases it when the job ends, before the payload is built). Plug it into
// engine.Config.WebhookPayload.
func Payload(j *spool.Job) json.RawMessage {
	o := wire.JobObject(j)
	if j.Input != nil {
		o.Raw("input", j.Input)
	}
	if j.Webhook != "" {
		o.String("webhook", j.Webhook)
	}
	return o.Bytes()
}

// Standard Webhooks header names (https://www.standardwebhooks.com/). They are sent in lower case,
// exactly as the specification writes them.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// Sign returns the webhook-signature value of a message: "v1,<base64 HMAC-SHA256>" of
// "id.timestamp.body" under each secret, separated by spaces (rotation).
func Sign(secrets [][]byte, id string, timestamp int64, body []byte) string {
	sigs := make([]string, 0, len(secrets))
	ts := strconv.FormatInt(timestamp, 10)
	for _, key := range secrets {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id))
		mac.Write([]byte{'.'})
		mac.Write([]byte(ts))
		mac.Write([]byte{'.'})
		mac.Write(body)
		sigs = append(sigs, "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	return strings.Join(sigs, " ")
}
