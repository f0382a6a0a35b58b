package spoolclient_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/webhook"
	"github.com/spool-run/spool/spoolclient"
)

// signedHeaders are the Standard Webhooks headers of a delivery, as the dispatcher sends them.
func signedHeaders(id string, ts int64, sig string) http.Header {
	h := http.Header{}
	h.Set(webhook.HeaderID, id)
	h.Set(webhook.HeaderTimestamp, strconv.FormatInt(ts, 10))
	h.Set(webhook.HeaderSignature, sig)
	return h
}

// FuzzWebhookSignature: what the server's Sign produces for (id, timestamp, body, secret) passes
// the receiver's Verify, with the secret alone or among others (rotation); a change to the body,
// the id, the timestamp or the signature's bytes fails it with ErrWebhookSignature.
func FuzzWebhookSignature(f *testing.F) {
	spec, err := base64.StdEncoding.DecodeString("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	require.NoError(f, err)
	f.Add(spec, "msg_p5jXN8AQM9LWM0D4loKWxJek", int64(1614265330), []byte(`{"test": 2432232314}`), uint16(0), uint8(0))
	for i := range uint8(5) {
		f.Add([]byte("k"), "msg_1", int64(1), []byte(""), uint16(7), i)
		f.Add(bytes.Repeat([]byte{0xff}, 64), "a.1", int64(-5), []byte("2.x"), uint16(300), i)
		f.Add([]byte("0123456789abcdef0123456789abcdef"), "id with spaces\t", int64(math.MaxInt64), []byte("\x00\xff"), uint16(65535), i)
		f.Add([]byte("s"), "\u00e9", int64(math.MinInt64), []byte("{}"), uint16(1), i)
	}
	f.Fuzz(func(t *testing.T, key []byte, id string, ts int64, body []byte, at uint16, change uint8) {
		if len(key) == 0 {
			key = []byte{0}
		}
		secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
		sig := webhook.Sign([][]byte{key}, id, ts, body)
		now := time.Unix(ts, 0)
		err := spoolclient.Verify(secret, signedHeaders(id, ts, sig), body, now, 0)
		if id == "" {
			require.ErrorIs(t, err, spoolclient.ErrWebhookHeaders, "an empty webhook-id is refused")
			return
		}
		require.NoError(t, err)

		// Rotation: a signature per secret, and a receiver that knows any one of them accepts.
		other := append([]byte("other-"), key...)
		both := webhook.Sign([][]byte{other, key}, id, ts, body)
		require.NoError(t, spoolclient.Verify(secret, signedHeaders(id, ts, both), body, now, 0))
		otherSecret := "whsec_" + base64.StdEncoding.EncodeToString(other)
		require.NoError(t, spoolclient.Verify(otherSecret+" "+secret, signedHeaders(id, ts, sig), body, now, 0))
		require.ErrorIs(t, spoolclient.Verify(otherSecret, signedHeaders(id, ts, sig), body, now, 0), spoolclient.ErrWebhookSignature)

		h, b := signedHeaders(id, ts, sig), body
		switch change % 5 {
		case 0: // one byte of the body
			if len(body) == 0 {
				b = []byte{byte(at)}
			} else {
				b = bytes.Clone(body)
				b[int(at)%len(b)] ^= byte(at>>8) | 1
			}
		case 1: // the id
			id2 := id + string(rune('a'+at%26))
			if len(id) > 0 && at%2 == 0 {
				id2 = id[:int(at)%len(id)]
				if id2 == "" {
					id2 = "x" + id
				}
			}
			h.Set(webhook.HeaderID, id2)
		case 2: // the timestamp, with a receiver whose clock agrees with it
			ts2 := ts + int64(at) + 1
			if ts2 < ts { // wrapped
				ts2 = ts - int64(at) - 1
			}
			h.Set(webhook.HeaderTimestamp, strconv.FormatInt(ts2, 10))
			now = time.Unix(ts2, 0)
		case 3: // one bit of the MAC
			mac, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(sig, "v1,"))
			require.NoError(t, err)
			mac[int(at/8)%len(mac)] ^= 1 << (at % 8)
			h.Set(webhook.HeaderSignature, "v1,"+base64.StdEncoding.EncodeToString(mac))
		case 4: // one character of the signature text
			const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
			enc := []byte(strings.TrimPrefix(sig, "v1,"))
			i := int(at) % (len(enc) - 1) // the last is padding
			c := b64[int(at>>8)%len(b64)]
			if c == enc[i] {
				c = b64[(strings.IndexByte(b64, c)+1)%len(b64)]
			}
			enc[i] = c
			mutated, err := base64.StdEncoding.DecodeString(string(enc))
			orig, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(sig, "v1,"))
			if err == nil && bytes.Equal(mutated, orig) {
				// Only the unused low bits of the last character changed: the same MAC, spelled
				// differently (base64 decoding is not strict), so it still verifies.
				require.NoError(t, spoolclient.Verify(secret, signedHeaders(id, ts, "v1,"+string(enc)), body, now, 0))
				return
			}
			h.Set(webhook.HeaderSignature, "v1,"+string(enc))
		}
		err = spoolclient.Verify(secret, h, b, now, 0)
		require.Error(t, err, "a changed delivery verified (change %d)", change%5)
		require.True(t, errors.Is(err, spoolclient.ErrWebhookSignature) || errors.Is(err, spoolclient.ErrWebhookHeaders), "%v", err)
	})
}

// FuzzVerify: Verify never panics on any secret, headers or body, and accepts only a delivery
// whose webhook-signature holds a v1 HMAC-SHA256 of "id.timestamp.body" under one of the secrets,
// with a timestamp within the tolerance.
func FuzzVerify(f *testing.F) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	f.Add(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", []byte(`{"test": 2432232314}`), int64(1614265330))
	f.Add(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", "v2,x v1,!!! v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", []byte(`{"test": 2432232314}`), int64(1614265630))
	f.Add(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OF=", []byte(`{"test": 2432232314}`), int64(1614265330))
	f.Add(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "+1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", []byte(`{"test": 2432232314}`), int64(1614265330))
	f.Add(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", []byte(`{"test": 2432232314}`), int64(1614265330-301))
	f.Add(secret, "m", "1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", []byte(`{"test": 2432232314}`), int64(1614266330))
	f.Add("", "m", "1", "v1,", []byte{}, int64(1))
	f.Add("whsec_", "m", "1", "v1,AAAA", []byte{}, int64(1))
	f.Add("whsec_!!", "m", "99999999999999999999", "v1,AAAA", []byte{}, int64(0))
	f.Add("whsec_AA== whsec_AQ", "m", "-9223372036854775808", "v1", []byte{}, int64(math.MaxInt64))
	f.Fuzz(func(t *testing.T, secret, id, tsText, sigs string, body []byte, now int64) {
		// A receiver's clock reads a real date (time.Unix wraps for seconds near the int64 limits).
		now &= 1<<34 - 1
		h := http.Header{}
		h.Set(webhook.HeaderID, id)
		h.Set(webhook.HeaderTimestamp, tsText)
		h.Set(webhook.HeaderSignature, sigs)
		err := spoolclient.Verify(secret, h, body, time.Unix(now, 0), 0)
		if err != nil {
			for _, sentinel := range []error{spoolclient.ErrWebhookSecret, spoolclient.ErrWebhookHeaders, spoolclient.ErrWebhookTimestamp, spoolclient.ErrWebhookSignature} {
				if errors.Is(err, sentinel) {
					return
				}
			}
			t.Fatalf("error outside Verify's sentinels: %v", err)
		}
		keys, kerr := spool.DecodeWebhookSecrets(secret)
		require.NoError(t, kerr)
		require.NotEmpty(t, id)
		ts, perr := strconv.ParseInt(tsText, 10, 64)
		require.NoError(t, perr)
		diff := uint64(now) - uint64(ts)
		if ts > now {
			diff = uint64(ts) - uint64(now)
		}
		require.LessOrEqual(t, diff, uint64(spoolclient.DefaultWebhookTolerance/time.Second), "timestamp %d accepted at %d", ts, now)
		matched := false
		for _, key := range keys {
			mac := hmac.New(sha256.New, key)
			mac.Write([]byte(id + "." + tsText + "."))
			mac.Write(body)
			want := mac.Sum(nil)
			for _, s := range strings.Fields(sigs) {
				if got, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "v1,")); err == nil && strings.HasPrefix(s, "v1,") && hmac.Equal(got, want) {
					matched = true
				}
			}
		}
		require.True(t, matched, "accepted without a matching signature")
	})
}
