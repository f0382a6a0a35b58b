package spool

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Webhook delivery defaults: RunPod's schedule (docs/contract.md §2): 3 attempts, 10 s apart, 10 s per
// attempt.
const (
	DefaultWebhookAttempts   = 3
	DefaultWebhookDelayMs    = int64(10000)
	DefaultWebhookMaxDelayMs = int64(3600 * 1000)
	DefaultWebhookTimeoutMs  = int64(10000)

	// WebhookBackoffFixed waits webhookDelayMs between attempts.
	WebhookBackoffFixed = "fixed"
	// WebhookBackoffExponential doubles the wait after every attempt, from webhookDelayMs up to
	// webhookMaxDelayMs, with jitter.
	WebhookBackoffExponential = "exponential"

	// MaxWebhookURLLength bounds a submitted webhook URL.
	MaxWebhookURLLength = 2048
)

// Limits of the per-endpoint webhook settings.
const (
	maxWebhookAttempts = 100
	minWebhookDelayMs  = int64(100)
	maxWebhookDelayMs  = int64(7 * 24 * 3600 * 1000)
	minWebhookTimeout  = int64(100)
	maxWebhookTimeout  = int64(5 * 60 * 1000)
	maxWebhookSecrets  = 10
)

// WebhookMessage is a webhook delivery to enqueue. The engine builds it for the transition that
// makes a job with a webhook terminal; the store inserts it into its outbox in the same
// transaction that writes the job, so a committed terminal state always has its delivery.
type WebhookMessage struct {
	// ID is the delivery id, sent as webhook-id; stable across the attempts of the delivery.
	ID string
	// URL is the job's webhook.
	URL string
	// Payload is the request body, built when the job ended: it outlives the job's retention.
	Payload json.RawMessage
	// CreatedAt is when the delivery was enqueued; the first attempt is due then.
	CreatedAt time.Time
}

// NewWebhookMessageID returns a fresh delivery id ("msg_" and 128 random bits), in the shape the
// Standard Webhooks examples use.
func NewWebhookMessageID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "msg_" + strings.ToLower(keyEncoding.EncodeToString(b))
}

// ValidateWebhookURL checks a submitted webhook URL: an absolute http or https URL with a host, no
// user information, at most MaxWebhookURLLength bytes. Which addresses it may reach is decided when
// it is dialled, on the resolved IP (see internal/webhook). Messages never echo the URL, which may
// carry a token.
func ValidateWebhookURL(raw string) error {
	if len(raw) > MaxWebhookURLLength {
		return Errorf(CodeInvalid, `"webhook" must be at most %d bytes`, MaxWebhookURLLength)
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c <= ' ' || c == 0x7f {
			return Errorf(CodeInvalid, `"webhook" must not contain spaces or control characters`)
		}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Errorf(CodeInvalid, `"webhook" is not a valid URL`)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return Errorf(CodeInvalid, `"webhook" must be an http or https URL`)
	}
	if u.Opaque != "" || u.Host == "" {
		return Errorf(CodeInvalid, `"webhook" must be an absolute URL with a host`)
	}
	if u.User != nil || strings.Contains(u.Host, "@") {
		return Errorf(CodeInvalid, `"webhook" must not contain user information (user:password@)`)
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return Errorf(CodeInvalid, `"webhook" must be an absolute URL with a host`)
	}
	if strings.HasSuffix(u.Host, ":") {
		return Errorf(CodeInvalid, `"webhook" has an empty port`)
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return Errorf(CodeInvalid, `"webhook" has an invalid port`)
		}
	}
	return nil
}

// WebhookHost is the key deliveries are grouped by for per-host concurrency: the lower-cased host
// and port of a webhook URL, with the scheme's default port filled in. It is "" for a URL that
// ValidateWebhookURL refuses.
func WebhookHost(raw string) string {
	if ValidateWebhookURL(raw) != nil {
		return ""
	}
	u, _ := url.Parse(raw)
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// ParseWebhookSecrets decodes an endpoint's webhookSecret: one or more Standard Webhooks secrets
// ("whsec_" and the base64 of 24 to 64 random bytes) separated by spaces; several secrets let a
// receiver rotate (every attempt is signed with each). Messages never echo a secret.
func ParseWebhookSecrets(s string) ([][]byte, error) {
	fields := strings.Fields(s)
	if len(fields) > maxWebhookSecrets {
		return nil, Errorf(CodeInvalid, "webhookSecret holds at most %d secrets", maxWebhookSecrets)
	}
	for i, f := range fields {
		if !strings.HasPrefix(f, "whsec_") {
			return nil, Errorf(CodeInvalid, `webhookSecret: secret %d must start with "whsec_"`, i+1)
		}
	}
	keys, err := DecodeWebhookSecrets(s)
	if err != nil {
		return nil, err
	}
	for i, key := range keys {
		if len(key) < 24 || len(key) > 64 {
			return nil, Errorf(CodeInvalid, "webhookSecret: secret %d must decode to 24 to 64 bytes, got %d", i+1, len(key))
		}
	}
	return keys, nil
}

// DecodeWebhookSecrets splits s into its secrets (separated by spaces) and decodes each one's
// base64, padded or not, after an optional "whsec_" prefix: what a Standard Webhooks receiver
// accepts. It checks only the encoding; ParseWebhookSecrets adds the rules for the secrets an
// endpoint signs with. An empty s gives no keys. Messages never echo a secret.
func DecodeWebhookSecrets(s string) ([][]byte, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return nil, nil
	}
	keys := make([][]byte, 0, len(fields))
	for i, f := range fields {
		b64 := strings.TrimPrefix(f, "whsec_")
		key, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			key, err = base64.RawStdEncoding.DecodeString(b64)
		}
		if err != nil || len(key) == 0 {
			return nil, Errorf(CodeInvalid, `webhookSecret: secret %d is not "whsec_" followed by base64`, i+1)
		}
		keys = append(keys, key)
	}
	return keys, nil
}

// NewWebhookSecret returns a fresh Standard Webhooks secret: "whsec_" and the base64 of 32 random
// bytes.
func NewWebhookSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

// WebhookSchedule is an endpoint's effective webhook delivery schedule, defaults filled in.
type WebhookSchedule struct {
	// Attempts is the most attempts one delivery gets.
	Attempts int
	// Backoff is WebhookBackoffFixed or WebhookBackoffExponential.
	Backoff string
	// Delay is the wait after the first failed attempt (every wait with fixed backoff).
	Delay time.Duration
	// MaxDelay caps the wait of exponential backoff.
	MaxDelay time.Duration
	// Timeout bounds one attempt, connection to last byte read.
	Timeout time.Duration
}

// DefaultWebhookSchedule is RunPod's schedule.
func DefaultWebhookSchedule() WebhookSchedule {
	return WebhookSchedule{
		Attempts: DefaultWebhookAttempts,
		Backoff:  WebhookBackoffFixed,
		Delay:    time.Duration(DefaultWebhookDelayMs) * time.Millisecond,
		MaxDelay: time.Duration(DefaultWebhookMaxDelayMs) * time.Millisecond,
		Timeout:  time.Duration(DefaultWebhookTimeoutMs) * time.Millisecond,
	}
}

// WebhookSchedule returns the endpoint's delivery schedule; a zero setting (an endpoint stored
// before the setting existed) takes its default.
func (e *Endpoint) WebhookSchedule() WebhookSchedule {
	s := DefaultWebhookSchedule()
	if e.WebhookAttempts > 0 {
		s.Attempts = e.WebhookAttempts
	}
	if e.WebhookBackoff != "" {
		s.Backoff = e.WebhookBackoff
	}
	if e.WebhookDelayMs > 0 {
		s.Delay = time.Duration(e.WebhookDelayMs) * time.Millisecond
	}
	if e.WebhookMaxDelayMs > 0 {
		s.MaxDelay = time.Duration(e.WebhookMaxDelayMs) * time.Millisecond
	}
	if s.MaxDelay < s.Delay {
		s.MaxDelay = s.Delay
	}
	if e.WebhookTimeoutMs > 0 {
		s.Timeout = time.Duration(e.WebhookTimeoutMs) * time.Millisecond
	}
	return s
}

// validateWebhook checks the endpoint's webhook settings; 0 (or "") means the default.
func (e *Endpoint) validateWebhook() error {
	switch {
	case e.WebhookAttempts < 0 || e.WebhookAttempts > maxWebhookAttempts:
		return Errorf(CodeInvalid, "webhookAttempts must be between 1 and %d", maxWebhookAttempts)
	case e.WebhookBackoff != "" && e.WebhookBackoff != WebhookBackoffFixed && e.WebhookBackoff != WebhookBackoffExponential:
		return Errorf(CodeInvalid, "webhookBackoff must be %s or %s", WebhookBackoffFixed, WebhookBackoffExponential)
	case e.WebhookDelayMs != 0 && (e.WebhookDelayMs < minWebhookDelayMs || e.WebhookDelayMs > maxWebhookDelayMs):
		return Errorf(CodeInvalid, "webhookDelayMs must be between %d and %d (7 days)", minWebhookDelayMs, maxWebhookDelayMs)
	case e.WebhookMaxDelayMs != 0 && (e.WebhookMaxDelayMs < minWebhookDelayMs || e.WebhookMaxDelayMs > maxWebhookDelayMs):
		return Errorf(CodeInvalid, "webhookMaxDelayMs must be between %d and %d (7 days)", minWebhookDelayMs, maxWebhookDelayMs)
	case e.WebhookTimeoutMs != 0 && (e.WebhookTimeoutMs < minWebhookTimeout || e.WebhookTimeoutMs > maxWebhookTimeout):
		return Errorf(CodeInvalid, "webhookTimeoutMs must be between %d and %d (5 min)", minWebhookTimeout, maxWebhookTimeout)
	}
	if s := e.WebhookSchedule(); e.WebhookMaxDelayMs != 0 && time.Duration(e.WebhookMaxDelayMs)*time.Millisecond < s.Delay {
		return Errorf(CodeInvalid, "webhookMaxDelayMs must not be less than webhookDelayMs")
	}
	_, err := ParseWebhookSecrets(e.WebhookSecret)
	return err
}

// DeliveryState is where a webhook delivery stands.
type DeliveryState string

const (
	// DeliveryPending: attempts remain; the next is due at NextAttemptAt.
	DeliveryPending DeliveryState = "pending"
	// DeliveryDelivered: an attempt got a 2xx.
	DeliveryDelivered DeliveryState = "delivered"
	// DeliveryFailed: every attempt failed.
	DeliveryFailed DeliveryState = "failed"
)

// WebhookDelivery is one webhook delivery: one payload, one webhook-id, up to the endpoint's
// number of attempts. The store keeps them in its outbox; /api/jobs/{id}/webhook shows them.
type WebhookDelivery struct {
	ID       string // the webhook-id
	JobID    string
	Endpoint string
	URL      string
	// Host is WebhookHost(URL), set by the store: per-host concurrency groups by it.
	Host    string
	Payload json.RawMessage
	State   DeliveryState
	// Attempts counts the attempts recorded.
	Attempts int
	// NextAttemptAt is when a pending delivery is due (its lease end while it is claimed).
	NextAttemptAt time.Time
	// Lease is the token of the latest claim; RecordAttempt must present it.
	Lease int64
	// CreatedAt is when it was enqueued; FinishedAt when it was delivered or failed (else zero).
	CreatedAt  time.Time
	FinishedAt time.Time
	// LastStatus and LastError describe the latest attempt (0 and "" before any).
	LastStatus int
	LastError  string
	// RedeliveryOf names the delivery whose payload this one resends ("" for the original).
	RedeliveryOf string
	// History lists the attempts, in order (when the store lists a job's deliveries).
	History []DeliveryAttempt
}

// DeliveryAttempt is one attempt of a delivery.
type DeliveryAttempt struct {
	N  int // 1-based, set by the store
	At time.Time
	// StatusCode is the receiver's HTTP status, 0 when there was no answer.
	StatusCode int
	// Error says why the attempt failed ("" for a 2xx).
	Error    string
	Duration time.Duration
}
