// Package secret seals small values at rest (a job's s3Config, an endpoint's webhook secret) with
// AES-256-GCM under the server's key, and loads or creates that key.
//
// A sealed value is: one version byte (1), a random 12-byte nonce, then the GCM ciphertext with its
// 16-byte tag. The caller's associated data (the job id, the endpoint's name) is authenticated but
// not stored, so a sealed value copied onto another row does not open there.
package secret

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// KeySize is the size of a key: AES-256.
const KeySize = 32

// version1 marks a value sealed with AES-256-GCM and a 12-byte random nonce.
const version1 byte = 1

const nonceSize = 12

// Overhead is how many bytes sealing adds to a value.
const Overhead = 1 + nonceSize + 16

// ErrOpen is returned (wrapped) when a sealed value does not open: another key, other associated
// data, a damaged or unknown format.
var ErrOpen = errors.New("secret: the sealed value cannot be opened with this key")

// Sealer seals and opens values under one key. It is safe for concurrent use.
type Sealer struct {
	aead cipher.AEAD
	key  []byte // for Derive only
}

// New returns a Sealer for a KeySize-byte key.
func New(key []byte) (*Sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("secret: the key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secret: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secret: %w", err)
	}
	return &Sealer{aead: aead, key: bytes.Clone(key)}, nil
}

// NewRandom returns a Sealer under a fresh random key that is kept nowhere: what it seals cannot be
// opened after the process ends.
func NewRandom() *Sealer {
	s, err := New(GenerateKey())
	if err != nil {
		panic(err) // a KeySize key always makes a Sealer
	}
	return s
}

// GenerateKey returns a fresh random key.
func GenerateKey() []byte {
	k := make([]byte, KeySize)
	_, _ = rand.Read(k) // crypto/rand.Read never fails (it panics on a broken system source)
	return k
}

// Derive returns a 32-byte key for purpose, made from the sealing key (HMAC-SHA256 of the
// purpose): other uses of the server's secret never meet the sealing key itself, and every
// replica with the same secret derives the same.
func (s *Sealer) Derive(purpose string) []byte {
	h := hmac.New(sha256.New, s.key)
	h.Write([]byte("spool derived key\x00" + purpose))
	return h.Sum(nil)
}

// Seal encrypts plaintext, authenticating ad with it.
func (s *Sealer) Seal(plaintext, ad []byte) ([]byte, error) {
	out := make([]byte, 1+nonceSize, Overhead+len(plaintext))
	out[0] = version1
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("secret: nonce: %w", err)
	}
	return s.aead.Seal(out, out[1:1+nonceSize], plaintext, ad), nil
}

// Open decrypts a value made by Seal with the same associated data. Its errors wrap ErrOpen and
// never quote the value.
func (s *Sealer) Open(sealed, ad []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("%w: too short", ErrOpen)
	}
	if sealed[0] != version1 {
		return nil, fmt.Errorf("%w: unknown format version %d", ErrOpen, sealed[0])
	}
	pt, err := s.aead.Open(nil, sealed[1:1+nonceSize], sealed[1+nonceSize:], ad)
	if err != nil {
		return nil, fmt.Errorf("%w: wrong key, other associated data, or damaged", ErrOpen)
	}
	return pt, nil
}

// IsSealed reports whether b looks like a value made by Seal (as opposed to, say, a JSON object
// stored before sealing existed). It does not check that b opens.
func IsSealed(b []byte) bool { return len(b) >= Overhead && b[0] == version1 }

// ParseKey decodes a key written as standard or URL-safe base64 (padding optional), as in
// SPOOL_SECRET_KEY or a key file. Surrounding whitespace is ignored. Its errors never quote s.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil {
			if len(k) != KeySize {
				return nil, fmt.Errorf("secret: the key must be the base64 of %d bytes, got %d bytes", KeySize, len(k))
			}
			return k, nil
		}
	}
	return nil, fmt.Errorf("secret: the key must be the base64 of %d random bytes (e.g. `openssl rand -base64 32`)", KeySize)
}

// EncodeKey is the text form of a key that ParseKey reads.
func EncodeKey(k []byte) string { return base64.StdEncoding.EncodeToString(k) }

// ReadKeyFile reads a key file (base64, see ParseKey). The file must not be readable or writable
// by group or others: a key anyone on the machine can read protects nothing.
func ReadKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("secret key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("secret key file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("secret key file %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("secret key file %s has mode %04o: it must be readable by its owner only (chmod 600 %s)", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 1024))
	if err != nil {
		return nil, fmt.Errorf("secret key file %s: %w", path, err)
	}
	k, err := ParseKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("secret key file %s: %w", path, err)
	}
	return k, nil
}

// LoadOrCreateKeyFile reads the key file at path, or, when there is none, creates it (mode 0600,
// written to a temporary file, synced and renamed into place, so a crash never leaves half a key)
// with a fresh random key. created reports which.
func LoadOrCreateKeyFile(path string) (key []byte, created bool, err error) {
	k, err := ReadKeyFile(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	k = GenerateKey()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".secret.key-*")
	if err != nil {
		return nil, false, fmt.Errorf("create secret key file: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, false, fmt.Errorf("create secret key file: %w", err)
	}
	if _, err := tmp.WriteString(EncodeKey(k) + "\n"); err != nil {
		tmp.Close()
		return nil, false, fmt.Errorf("create secret key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, false, fmt.Errorf("create secret key file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, false, fmt.Errorf("create secret key file: %w", err)
	}
	// Link, not rename: two servers starting on one empty data directory must not each install
	// their own key. The loser reads the winner's.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			k, err := ReadKeyFile(path)
			return k, false, err
		}
		// A filesystem without hard links: rename (the race above is then not covered).
		if err := os.Rename(tmp.Name(), path); err != nil {
			return nil, false, fmt.Errorf("create secret key file: %w", err)
		}
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync() // make the new name durable
		_ = d.Close()
	}
	return k, true, nil
}
