package spoolclient_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool/spoolclient"
)

// The Standard Webhooks specification's example.
const (
	kaSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	kaID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	kaTS     = 1614265330
	kaBody   = `{"test": 2432232314}`
	kaSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func kaHeaders(sig string) http.Header {
	h := http.Header{}
	h.Set("webhook-id", kaID)
	h.Set("webhook-timestamp", strconv.Itoa(kaTS))
	h.Set("webhook-signature", sig)
	return h
}

func sign(secret, id string, ts int64, body string) string {
	key, _ := base64.StdEncoding.DecodeString(secret[len("whsec_"):])
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%d.%s", id, ts, body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

func TestVerifyKnownAnswer(t *testing.T) {
	t.Parallel()
	now := time.Unix(kaTS, 0)
	require.Equal(t, kaSig, sign(kaSecret, kaID, kaTS, kaBody))
	require.NoError(t, spoolclient.Verify(kaSecret, kaHeaders(kaSig), []byte(kaBody), now, 0))
	// Lower-case names in a hand-built map work too.
	raw := http.Header{"webhook-id": {kaID}, "webhook-timestamp": {strconv.Itoa(kaTS)}, "webhook-signature": {kaSig}}
	require.NoError(t, spoolclient.Verify(kaSecret, raw, []byte(kaBody), now, 0))
	// Entries it cannot use are skipped, as the Standard Webhooks libraries do.
	require.NoError(t, spoolclient.Verify(kaSecret, kaHeaders("garbage v1,!!! v2,abcd "+kaSig), []byte(kaBody), now, 0))
}

func TestVerifyRejects(t *testing.T) {
	t.Parallel()
	now := time.Unix(kaTS, 0)
	other := "whsec_" + base64.StdEncoding.EncodeToString([]byte("another secret of 24 bytes!!"))
	for name, c := range map[string]struct {
		secret  string
		headers http.Header
		body    string
		now     time.Time
		want    error
	}{
		"tampered body":       {kaSecret, kaHeaders(kaSig), `{"test": 2432232315}`, now, spoolclient.ErrWebhookSignature},
		"wrong secret":        {other, kaHeaders(kaSig), kaBody, now, spoolclient.ErrWebhookSignature},
		"stale timestamp":     {kaSecret, kaHeaders(kaSig), kaBody, now.Add(5*time.Minute + time.Second), spoolclient.ErrWebhookTimestamp},
		"future timestamp":    {kaSecret, kaHeaders(kaSig), kaBody, now.Add(-6 * time.Minute), spoolclient.ErrWebhookTimestamp},
		"missing signature":   {kaSecret, func() http.Header { h := kaHeaders(kaSig); h.Del("webhook-signature"); return h }(), kaBody, now, spoolclient.ErrWebhookHeaders},
		"missing id":          {kaSecret, func() http.Header { h := kaHeaders(kaSig); h.Del("webhook-id"); return h }(), kaBody, now, spoolclient.ErrWebhookHeaders},
		"bad timestamp":       {kaSecret, func() http.Header { h := kaHeaders(kaSig); h.Set("webhook-timestamp", "soon"); return h }(), kaBody, now, spoolclient.ErrWebhookHeaders},
		"malformed entry":     {kaSecret, kaHeaders("g0hM9SsE+OTPJTGt"), kaBody, now, spoolclient.ErrWebhookHeaders},
		"not base64":          {kaSecret, kaHeaders("v1,!!!"), kaBody, now, spoolclient.ErrWebhookHeaders},
		"unknown scheme only": {kaSecret, kaHeaders("v1a,abcd"), kaBody, now, spoolclient.ErrWebhookHeaders},
		"other id":            {kaSecret, func() http.Header { h := kaHeaders(kaSig); h.Set("webhook-id", "msg_other"); return h }(), kaBody, now, spoolclient.ErrWebhookSignature},
		"malformed secret":    {"whsec_???", kaHeaders(kaSig), kaBody, now, spoolclient.ErrWebhookSecret},
		"empty secret":        {"", kaHeaders(kaSig), kaBody, now, spoolclient.ErrWebhookSecret},
	} {
		err := spoolclient.Verify(c.secret, c.headers, []byte(c.body), c.now, 0)
		require.ErrorIs(t, err, c.want, name)
	}
	// A custom tolerance.
	require.NoError(t, spoolclient.Verify(kaSecret, kaHeaders(kaSig), []byte(kaBody), now.Add(time.Hour), 2*time.Hour))
	require.ErrorIs(t, spoolclient.Verify(kaSecret, kaHeaders(kaSig), []byte(kaBody), now.Add(time.Minute), 30*time.Second),
		spoolclient.ErrWebhookTimestamp)
}

// TestVerifyRotation: Spool signs with every secret of the endpoint; a receiver that knows only
// one of them (old or new), or both, accepts.
func TestVerifyRotation(t *testing.T) {
	t.Parallel()
	now := time.Unix(kaTS, 0)
	newSecret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("the new secret, 32 bytes long!!!"))
	both := kaSig + " " + sign(newSecret, kaID, kaTS, kaBody)
	for _, secret := range []string{kaSecret, newSecret, kaSecret + " " + newSecret} {
		require.NoError(t, spoolclient.Verify(secret, kaHeaders(both), []byte(kaBody), now, 0), secret)
	}
	// Old sender, receiver holding both while it rotates.
	require.NoError(t, spoolclient.Verify(newSecret+" "+kaSecret, kaHeaders(kaSig), []byte(kaBody), now, 0))
	// Unknown schemes are skipped.
	require.NoError(t, spoolclient.Verify(kaSecret, kaHeaders("v2,AAAA "+kaSig), []byte(kaBody), now, 0))
	third := "whsec_" + base64.StdEncoding.EncodeToString([]byte("a third secret, also 32 bytes!!!"))
	require.ErrorIs(t, spoolclient.Verify(third, kaHeaders(both), []byte(kaBody), now, 0), spoolclient.ErrWebhookSignature)
}

// ExampleVerify is a webhook receiver: verify the raw body before trusting it.
func ExampleVerify() {
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" // the endpoint's webhookSecret
	handler := func(w http.ResponseWriter, r *http.Request) {
		body := make([]byte, 0) // read r.Body in full (bounded) here
		if err := spoolclient.Verify(secret, r.Header, body, time.Now(), 0); err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		// Parse body (the job object plus input and webhook); drop repeats of webhook-id.
		w.WriteHeader(http.StatusNoContent)
	}
	_ = handler

	h := http.Header{}
	h.Set("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek")
	h.Set("webhook-timestamp", "1614265330")
	h.Set("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	err := spoolclient.Verify(secret, h, []byte(`{"test": 2432232314}`), time.Unix(1614265330, 0), 0)
	fmt.Println(err)
	// Output: <nil>
}
