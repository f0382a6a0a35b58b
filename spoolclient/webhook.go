package spoolclient

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spool-run/spool"
)

// Errors of Verify, each wrapped with details.
var (
	// ErrWebhookSecret: the secret is not "whsec_" followed by base64.
	ErrWebhookSecret = errors.New("spoolclient: malformed webhook secret")
	// ErrWebhookHeaders: webhook-id, webhook-timestamp or webhook-signature is missing or
	// malformed.
	ErrWebhookHeaders = errors.New("spoolclient: missing or malformed webhook headers")
	// ErrWebhookTimestamp: the webhook-timestamp is further from now than the tolerance (a replay,
	// or a clock far off).
	ErrWebhookTimestamp = errors.New("spoolclient: webhook timestamp outside the tolerance")
	// ErrWebhookSignature: no signature matches the body under the secret.
	ErrWebhookSignature = errors.New("spoolclient: no valid webhook signature")
)

// DefaultWebhookTolerance is the tolerance Verify uses when given none: the Standard Webhooks
// libraries' five minutes.
const DefaultWebhookTolerance = 5 * time.Minute

// Verify checks a webhook that Spool sent from an endpoint with a webhookSecret, as a receiver
// gets it: the Standard Webhooks headers (webhook-id, webhook-timestamp, webhook-signature) and
// the raw body, unparsed. It returns nil when one of the signatures is an HMAC-SHA256 of
// "id.timestamp.body" under the secret and the timestamp is within tolerance of now (0 means
// DefaultWebhookTolerance).
//
// secret is the endpoint's secret ("whsec_" + base64); several, separated by spaces, are tried in
// turn, so a receiver can accept the old and the new secret while rotating. Use the webhook-id to
// drop duplicates: delivery is at least once, and retries of one delivery carry the same id.
func Verify(secret string, headers http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	keys, err := webhookKeys(secret)
	if err != nil {
		return err
	}
	id, tsText, sigs := header(headers, "webhook-id"), header(headers, "webhook-timestamp"), header(headers, "webhook-signature")
	if id == "" || tsText == "" || sigs == "" {
		return fmt.Errorf("%w: webhook-id, webhook-timestamp and webhook-signature are required", ErrWebhookHeaders)
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: webhook-timestamp is not a number of seconds", ErrWebhookHeaders)
	}
	if tolerance <= 0 {
		tolerance = DefaultWebhookTolerance
	}
	sent := time.Unix(ts, 0)
	if now.Sub(sent) > tolerance || sent.Sub(now) > tolerance {
		return fmt.Errorf("%w: sent at %s, now is %s", ErrWebhookTimestamp, sent.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	var want [][]byte
	for _, key := range keys {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id + "." + tsText + "."))
		mac.Write(body)
		want = append(want, mac.Sum(nil))
	}
	// Entries this helper cannot use (another scheme, bad base64) are skipped, as the Standard
	// Webhooks libraries do: another entry may still be a valid v1 signature.
	seen := false
	for _, sig := range strings.Fields(sigs) {
		version, b64, ok := strings.Cut(sig, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			continue
		}
		seen = true
		for _, w := range want {
			if hmac.Equal(got, w) {
				return nil
			}
		}
	}
	if !seen {
		return fmt.Errorf("%w: no usable v1 signature", ErrWebhookHeaders)
	}
	return ErrWebhookSignature
}

// header reads a header whatever the case of its name in h (a server canonicalises names; a map
// built by hand may not).
func header(h http.Header, name string) string {
	if v := h.Get(name); v != "" {
		return v
	}
	if v := h[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// webhookKeys decodes the receiver's secret(s) the way the server does (spool.DecodeWebhookSecrets).
func webhookKeys(secret string) ([][]byte, error) {
	keys, err := spool.DecodeWebhookSecrets(secret)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: %s", ErrWebhookSecret, spool.ErrorMessage(err))
	case len(keys) == 0:
		return nil, fmt.Errorf("%w: empty", ErrWebhookSecret)
	}
	return keys, nil
}
