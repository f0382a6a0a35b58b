package spool

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"strings"
	"time"
)

// Scope is what a key may do (docs/contract.md §1).
type Scope string

const (
	// ScopeAdmin may do everything, worker routes included.
	ScopeAdmin Scope = "admin"
	// ScopeClient may use the client API (/v2/{endpoint}/run ...), optionally limited to listed
	// endpoints and to read-only operations.
	ScopeClient Scope = "client"
	// ScopeWorker may use the worker protocol of the listed endpoints (all when none are listed).
	ScopeWorker Scope = "worker"
)

// Valid reports whether s is a known scope.
func (s Scope) Valid() bool { return s == ScopeAdmin || s == ScopeClient || s == ScopeWorker }

// Key is an API key. Only the hash of its secret is ever stored.
type Key struct {
	ID        string   `json:"id" yaml:"id"`
	Name      string   `json:"name" yaml:"name"`
	Scope     Scope    `json:"scope" yaml:"scope"`
	Endpoints []string `json:"endpoints,omitempty" yaml:"endpoints,omitempty"`
	ReadOnly  bool     `json:"readOnly,omitempty" yaml:"readOnly,omitempty"`
	Hash      string   `json:"-" yaml:"hash"`
	// WorkerID, set on the per-worker token of a worker Spool started, is the one worker the
	// key speaks for; other worker keys speak for any worker id of their endpoints.
	WorkerID  string    `json:"workerId,omitempty" yaml:"-"`
	Source    string    `json:"source,omitempty" yaml:"-"`
	CreatedAt time.Time `json:"createdAt" yaml:"-"`
}

// AllowsEndpoint reports whether the key may act on the named endpoint.
func (k *Key) AllowsEndpoint(name string) bool {
	if k.Scope == ScopeAdmin || len(k.Endpoints) == 0 {
		return true
	}
	for _, e := range k.Endpoints {
		if e == name {
			return true
		}
	}
	return false
}

// HashKey returns the stored form of a key's secret. Keys are 160 random bits, so a fast hash is
// enough: there is nothing to brute-force, and lookups by hash take the same time for any key.
func HashKey(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return "sha256:" + hex.EncodeToString(sum[:])
}

var keyEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewKeySecret returns a fresh key secret: a prefix that says what it is (secret scanners and
// humans recognise it) and 160 random bits.
func NewKeySecret() string {
	b := make([]byte, 20)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return "spool_" + strings.ToLower(keyEncoding.EncodeToString(b))
}

// NewID returns a random identifier with the given prefix, e.g. "key_".
func NewID(prefix string) string {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	return prefix + strings.ToLower(keyEncoding.EncodeToString(b))
}

// NewJobID returns an opaque, URL-safe job id with 122 random bits in the shape RunPod uses (a
// version-4 UUID); sync jobs get RunPod's "sync-" prefix.
func NewJobID(sync bool) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	id := h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
	if sync {
		return "sync-" + id
	}
	return id
}

// MaxJobIDLen bounds a job id Spool will look up. NewJobID makes 36 bytes (41 with "sync-"); the
// slack keeps ids of another shape, should it change, from being ignored, while a ping of 1,024
// ids still makes a small query.
const MaxJobIDLen = 128

// PlausibleJobID reports whether id could be a job id the server made: short, and of the URL-safe
// alphabet that NewJobID uses (hex digits and '-', with letters to spare).
func PlausibleJobID(id string) bool {
	if id == "" || len(id) > MaxJobIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
