package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// certificate serves the TLS certificate of tls.certFile and tls.keyFile, and loads them again on
// reload (SIGHUP), so that a renewed certificate is taken up without a restart: connections made
// after the reload get the new one. A pair that does not load keeps the previous one.
type certificate struct {
	certFile, keyFile string
	current           atomic.Pointer[tls.Certificate]
}

// loadCertificate loads the pair once, for a server or for --check-config.
func loadCertificate(certFile, keyFile string) (*certificate, error) {
	c := &certificate{certFile: certFile, keyFile: keyFile}
	if err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *certificate) reload() error {
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		// The error names the files and what is wrong with them, never the key's bytes.
		return fmt.Errorf("tls: load %s and %s: %w", c.certFile, c.keyFile, err)
	}
	if pair.Leaf == nil && len(pair.Certificate) > 0 {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return fmt.Errorf("tls: parse %s: %w", c.certFile, err)
		}
	}
	c.current.Store(&pair)
	return nil
}

// reloadAndLog reloads the pair and says what came of it.
func (c *certificate) reloadAndLog(log *slog.Logger) {
	if err := c.reload(); err != nil {
		log.Error("TLS certificate not reloaded; the previous one stays", "err", err)
		return
	}
	leaf := c.current.Load().Leaf
	log.Info("TLS certificate reloaded", "subject", leaf.Subject.String(), "notAfter", leaf.NotAfter.Format(time.RFC3339))
}

// config is the server's TLS configuration: TLS 1.2 at least, the certificate read at each
// handshake from the latest load.
func (c *certificate) config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.current.Load(), nil
		},
	}
}

// checkTLSSetting checks that the certificate and key are set together.
func checkTLSSetting(certFile, keyFile string) error {
	if (certFile == "") != (keyFile == "") {
		return errors.New("tls.certFile (--tls-cert) and tls.keyFile (--tls-key) go together: set both or neither")
	}
	return nil
}
