package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strings"

	"github.com/spool-run/spool"
)

// WorkerTokens mints and checks the per-worker tokens of the workers Spool starts itself. A worker
// key of an endpoint may speak for any worker id (a RunPod worker names itself in every URL); a
// token speaks for one worker of one endpoint, so a compromised worker cannot take, finish or
// stop another's jobs. Tokens are stateless (an HMAC of the endpoint and worker id): nothing is
// stored, and nothing is left to clean up when a worker goes. Under a key derived from the
// server's secret key (NewWorkerTokensWithKey), every replica checks the tokens any of them
// minted, and they outlive a restart: a worker pod reaches whichever replica its Service picks.
type WorkerTokens struct {
	key []byte
}

// tokenPrefix starts every token, so that Authenticate knows one without a store lookup.
const tokenPrefix = "spoolw1."

// tokenSource is the Source of the key a token authenticates as.
const tokenSource = "worker-token"

// NewWorkerTokens returns a minter with a fresh random key: its tokens die with the process.
func NewWorkerTokens() *WorkerTokens {
	key := make([]byte, 32)
	_, _ = rand.Read(key) // never fails (crypto/rand)
	return &WorkerTokens{key: key}
}

// NewWorkerTokensWithKey returns a minter under key (at least 32 bytes, from the server's secret).
func NewWorkerTokensWithKey(key []byte) *WorkerTokens {
	return &WorkerTokens{key: bytes.Clone(key)}
}

// b64 is strict: a token has one spelling (non-zero padding bits would give others).
var b64 = base64.RawURLEncoding.Strict()

// Mint returns the token of worker of endpoint: usable as RUNPOD_AI_API_KEY, header-safe.
func (t *WorkerTokens) Mint(endpoint, worker string) string {
	return tokenPrefix + b64.EncodeToString([]byte(endpoint)) + "." + b64.EncodeToString([]byte(worker)) +
		"." + b64.EncodeToString(t.mac(endpoint, worker))
}

func (t *WorkerTokens) mac(endpoint, worker string) []byte {
	h := hmac.New(sha256.New, t.key)
	h.Write([]byte(endpoint))
	h.Write([]byte{0})
	h.Write([]byte(worker))
	return h.Sum(nil)
}

// lookup returns the worker key a token stands for, or false when it is not one of this minter's.
func (t *WorkerTokens) lookup(secret string) (*spool.Key, bool) {
	rest, ok := strings.CutPrefix(secret, tokenPrefix)
	if !ok {
		return nil, false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return nil, false
	}
	ep, err1 := b64.DecodeString(parts[0])
	worker, err2 := b64.DecodeString(parts[1])
	mac, err3 := b64.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil || !hmac.Equal(mac, t.mac(string(ep), string(worker))) {
		return nil, false
	}
	return &spool.Key{
		ID: "worker-token:" + string(worker), Name: "token of worker " + string(worker), Scope: spool.ScopeWorker,
		Endpoints: []string{string(ep)}, WorkerID: string(worker), Source: tokenSource,
	}, true
}
