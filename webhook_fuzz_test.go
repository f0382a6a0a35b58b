package spool_test

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
)

// FuzzWebhookURLDeliverable complements FuzzValidateWebhookURL with checks that do not go
// through net/url's reading of the URL: an accepted webhook starts with http:// or https://
// (any case), its authority (up to the first '/', '?' or '#') holds no '@', it has no byte a
// request line could not carry, the dispatcher can build a request from it for the same host,
// and its host key has a port in range. A refusal is a CodeInvalid that does not echo the URL.
func FuzzWebhookURLDeliverable(f *testing.F) {
	for _, s := range []string{
		"https://example.com/hook", "http://h", "HtTpS://H:443", "http://[::1]:9000/", "http://[fe80::1%25en0]:1/",
		"http://h?x=@y", "http://h#@y", "http://h/@y", "http://u@h/", "http://h\\@evil/", "http://h%40evil/",
		"http://h:65535/", "http://h:00080/", "http://h:+80/", "http://h:8_0/", "http://h:0x50/", "http://h.:80",
		"https://münchen.example/", "http://xn--mnchen-3ya.example/", "http://h/\u00a0", "http://h/\x7f",
		"http:\\\\h/", "http:/h", "https:", "https://", "https://?", "https://#", "https://:80", "https://[]/",
		"https://[::1]:/", "https://[::1]x/", "https://h]/", "http://[v1.x]/", "https://1.2.3.4:8080/x?y#z",
		"http://secret-token-AAAA@h/", "file:///etc/passwd", "gopher://h/", "ws://h/", "httpx://h/", "javascript:alert(1)",
		"http://h/a b", "http://h/a\tb", "http://h?a b", "http://h/" + strings.Repeat("p", spool.MaxWebhookURLLength),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		err := spool.ValidateWebhookURL(raw)
		if err != nil {
			var coded *spool.Error
			require.True(t, errors.As(err, &coded), "uncoded error %T: %v", err, err)
			require.Equal(t, spool.CodeInvalid, coded.Code)
			require.Contains(t, coded.Message, `"webhook"`, "the message names the field")
			if len(raw) >= 8 {
				require.NotContains(t, coded.Message, raw, "the message echoes the URL")
			}
			return
		}
		require.LessOrEqual(t, len(raw), spool.MaxWebhookURLLength)
		lower := strings.ToLower(raw)
		var rest string
		switch {
		case strings.HasPrefix(lower, "http://"):
			rest = raw[len("http://"):]
		case strings.HasPrefix(lower, "https://"):
			rest = raw[len("https://"):]
		default:
			t.Fatalf("accepted %q, which does not start with http:// or https://", raw)
		}
		authority := rest
		if i := strings.IndexAny(rest, "/?#"); i >= 0 {
			authority = rest[:i]
		}
		require.NotEmpty(t, authority, "accepted %q without a host", raw)
		require.NotContains(t, authority, "@", "accepted %q with user information", raw)
		for i := 0; i < len(raw); i++ {
			require.False(t, raw[i] <= ' ' || raw[i] == 0x7f, "accepted %q with byte %#x", raw, raw[i])
		}

		req, rerr := http.NewRequest("POST", raw, nil)
		require.NoError(t, rerr, "the dispatcher could not build a request for %q", raw)
		require.Nil(t, req.URL.User)
		require.Contains(t, []string{"http", "https"}, req.URL.Scheme)
		unescaped, uerr := url.PathUnescape(authority)
		require.NoError(t, uerr, "accepted %q with a malformed escape in its host", raw)
		require.Equal(t, strings.ToLower(unescaped), strings.ToLower(req.URL.Host), "%q", raw)

		// Not net.SplitHostPort: net/url lets through hosts no resolver takes ("h]", "a<b>"),
		// which then fail at dial time like any unresolvable name.
		key := spool.WebhookHost(raw)
		i := strings.LastIndexByte(key, ':')
		require.Positive(t, i, "host key %q of %q", key, raw)
		host, port := key[:i], key[i+1:]
		require.Equal(t, strings.ToLower(host), host, "host keys are lower case")
		n, perr := strconv.Atoi(port)
		require.NoError(t, perr)
		require.True(t, n >= 1 && n <= 65535, "port %d of %q", n, raw)
	})
}
