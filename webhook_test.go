package spool_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
)

func TestValidateWebhookURL(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{
		"https://example.com/hook", "http://example.com", "HTTPS://Example.COM:8443/a?b=c#d", "http://10.0.0.1:8080/x",
		"http://[::1]:9000/", "http://2130706433/", "https://hooks.example/%2e%2e/x",
	} {
		require.NoError(t, spool.ValidateWebhookURL(ok), ok)
	}
	for bad, msg := range map[string]string{
		"ftp://example.com/":          "http or https",
		"file:///etc/passwd":          "http or https",
		"javascript:alert(1)":         "http or https",
		"example.com/hook":            "http or https",
		"//example.com/hook":          "http or https",
		"http:/example.com":           "with a host",
		"http:///x":                   "with a host",
		"http:example.com":            "with a host",
		"http://user:pw@example.com/": "user information",
		"http://user@example.com/":    "user information",
		"http://:@example.com/":       "user information",
		"http://example.com:/":        "empty port",
		"http://example.com:0/":       "invalid port",
		"http://example.com:65536/":   "invalid port",
		"http://exa mple.com/":        "spaces or control",
		"http://example.com/\n":       "spaces or control",
		"http://[::1/":                "not a valid URL",
		"http://%zz/":                 "not a valid URL",
		"https://example.com/" + strings.Repeat("a", 2048): "at most 2048 bytes",
	} {
		err := spool.ValidateWebhookURL(bad)
		require.Error(t, err, bad)
		require.Equal(t, spool.CodeInvalid, spool.ErrorCode(err), bad)
		require.Contains(t, err.Error(), msg, bad)
		require.NotContains(t, err.Error(), "example.com", "messages never echo the URL")
	}
	require.Equal(t, "example.com:443", spool.WebhookHost("https://EXAMPLE.com/x"))
	require.Equal(t, "example.com:80", spool.WebhookHost("http://example.com"))
	require.Equal(t, "[::1]:9000", spool.WebhookHost("http://[::1]:9000/"))
	require.Equal(t, "", spool.WebhookHost("ftp://example.com"))
}

// FuzzValidateWebhookURL: whatever the input, validation never panics, and an accepted URL is an
// absolute http(s) URL with a host, no user information and a usable host key.
func FuzzValidateWebhookURL(f *testing.F) {
	for _, s := range []string{
		"https://example.com/hook", "http://127.0.0.1:8080/", "http://user:pass@h/", "ftp://h/", "http://[::1]:80/",
		"http://[fe80::1%25lo]/", "http://2130706433/", "http:///", "//h", "http://h:99999/", "HTTP://H/", "http://h:/",
		"http://a@b@c/", "http://[::ffff:127.0.0.1]/", "https://h/\x00", "http://h/%zz", "http://%41/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := spool.ValidateWebhookURL(s)
		host := spool.WebhookHost(s)
		if err != nil {
			require.Equal(t, spool.CodeInvalid, spool.ErrorCode(err))
			require.Empty(t, host)
			return
		}
		u, perr := url.Parse(s)
		require.NoError(t, perr)
		require.Contains(t, []string{"http", "https"}, u.Scheme)
		require.Nil(t, u.User)
		require.NotEmpty(t, u.Hostname())
		require.NotEmpty(t, host)
		require.LessOrEqual(t, len(s), spool.MaxWebhookURLLength)
		require.NotContains(t, u.Host, "@")
	})
}

func TestEndpointWebhookSettings(t *testing.T) {
	t.Parallel()
	ep := spool.NewEndpoint("e")
	require.NoError(t, ep.Validate())
	require.Equal(t, spool.DefaultWebhookSchedule(), ep.WebhookSchedule())
	require.Equal(t, spool.WebhookSchedule{Attempts: 3, Backoff: "fixed", Delay: 10 * time.Second, MaxDelay: time.Hour, Timeout: 10 * time.Second},
		spool.DefaultWebhookSchedule(), "RunPod: 3 attempts, 10 s apart, 10 s each")

	// Zero settings (an endpoint stored before they existed) mean the defaults.
	old := spool.Endpoint{Name: "old"}
	require.Equal(t, spool.DefaultWebhookSchedule(), old.WebhookSchedule())

	secret := spool.NewWebhookSecret()
	keys, err := spool.ParseWebhookSecrets(secret + "  " + spool.NewWebhookSecret())
	require.NoError(t, err)
	require.Len(t, keys, 2)
	require.Len(t, keys[0], 32)

	for _, c := range []struct {
		mod func(*spool.Endpoint)
		msg string
	}{
		{func(e *spool.Endpoint) { e.WebhookAttempts = 101 }, "webhookAttempts"},
		{func(e *spool.Endpoint) { e.WebhookAttempts = -1 }, "webhookAttempts"},
		{func(e *spool.Endpoint) { e.WebhookBackoff = "linear" }, "webhookBackoff"},
		{func(e *spool.Endpoint) { e.WebhookDelayMs = 50 }, "webhookDelayMs"},
		{func(e *spool.Endpoint) { e.WebhookTimeoutMs = 300001 }, "webhookTimeoutMs"},
		{func(e *spool.Endpoint) { e.WebhookMaxDelayMs = 1000; e.WebhookDelayMs = 2000 }, "webhookMaxDelayMs"},
		{func(e *spool.Endpoint) { e.WebhookSecret = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }, `must start with "whsec_"`},
		{func(e *spool.Endpoint) { e.WebhookSecret = "whsec_!!!" }, "base64"},
		{func(e *spool.Endpoint) { e.WebhookSecret = "whsec_c2hvcnQ=" }, "24 to 64 bytes"},
		{func(e *spool.Endpoint) { e.WebhookSecret = secret + " whsec_x" }, "secret 2"},
	} {
		e := spool.NewEndpoint("e")
		c.mod(&e)
		err := e.Validate()
		require.Error(t, err, c.msg)
		require.Contains(t, err.Error(), c.msg)
		require.NotContains(t, err.Error(), "MfKQ9r8G", "messages never echo a secret")
		require.NotContains(t, err.Error(), strings.TrimPrefix(secret, "whsec_"))
	}
	e := spool.NewEndpoint("e")
	e.WebhookSecret, e.WebhookAttempts, e.WebhookBackoff, e.WebhookDelayMs, e.WebhookMaxDelayMs, e.WebhookTimeoutMs =
		"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 12, "exponential", 1000, 6*3600*1000, 30000
	require.NoError(t, e.Validate())
	require.Equal(t, spool.WebhookSchedule{Attempts: 12, Backoff: "exponential", Delay: time.Second, MaxDelay: 6 * time.Hour, Timeout: 30 * time.Second},
		e.WebhookSchedule())
	require.True(t, strings.HasPrefix(spool.NewWebhookMessageID(), "msg_"))
}
