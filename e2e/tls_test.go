package e2e_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// selfSigned makes a certificate for 127.0.0.1 with the given serial, and returns its PEM
// certificate, PEM key and parsed form.
func selfSigned(t *testing.T, serial int64) (certPEM, keyPEM []byte, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "spool-e2e"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err = x509.ParseCertificate(der)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), cert
}

// TestTLS: with a certificate Spool serves HTTPS only (the RunPod API and the worker protocol
// alike), and SIGHUP loads the certificate files again: new connections get the renewed
// certificate, and a pair that does not load keeps the previous one.
func TestTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	write := func(cert, key []byte) {
		require.NoError(t, os.WriteFile(certFile, cert, 0o600))
		require.NoError(t, os.WriteFile(keyFile, key, 0o600))
	}
	c1, k1, cert1 := selfSigned(t, 1)
	c2, k2, cert2 := selfSigned(t, 2)
	write(c1, k1)
	s := startServer(t, serverOpts{Config: "tls:\n  certFile: " + certFile + "\n  keyFile: " + keyFile + "\nendpoints:\n  - name: ep\n"})
	require.True(t, strings.HasPrefix(s.URL, "https://127.0.0.1:"), s.URL)

	// Each call dials afresh, so that it sees the certificate of the moment.
	roots := x509.NewCertPool()
	roots.AddCert(cert1)
	roots.AddCert(cert2)
	call := func(method, path, body string) (int, *x509.Certificate) {
		t.Helper()
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
		defer tr.CloseIdleConnections()
		req, err := http.NewRequest(method, s.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+s.Keys.Admin)
		res, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		return res.StatusCode, res.TLS.PeerCertificates[0]
	}
	code, peer := call("GET", "/healthz", "")
	require.Equal(t, 200, code)
	require.Equal(t, cert1.SerialNumber, peer.SerialNumber)
	code, _ = call("POST", "/v2/ep/run", `{"input":{"over":"tls"}}`)
	require.Equal(t, 200, code, "the RunPod API is served over TLS")
	code, _ = call("GET", "/v2/ep/health", "")
	require.Equal(t, 200, code)

	// The image's health check finds out that the server speaks HTTPS (the file set it, not the
	// environment the probe sees).
	stdout, stderr, exit := runSpool(t, nil, "healthcheck", "--addr", strings.TrimPrefix(s.URL, "https://"))
	require.Equal(t, 0, exit, "%s%s", stdout, stderr)

	// Plain HTTP on the TLS port is refused.
	res, err := http.Get(strings.Replace(s.URL, "https://", "http://", 1) + "/healthz")
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, http.StatusBadRequest, res.StatusCode)

	// A renewed certificate is taken up on SIGHUP.
	write(c2, k2)
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGHUP))
	_, err = s.stderr.waitFor(regexp.MustCompile(`msg="TLS certificate reloaded"`), 30*time.Second, s.exited)
	require.NoError(t, err)
	_, peer = call("GET", "/healthz", "")
	require.Equal(t, cert2.SerialNumber, peer.SerialNumber)

	// A broken pair is refused and the server keeps serving the last good one.
	require.NoError(t, os.WriteFile(certFile, []byte("not a certificate"), 0o600))
	require.NoError(t, s.cmd.Process.Signal(syscall.SIGHUP))
	_, err = s.stderr.waitFor(regexp.MustCompile(`msg="TLS certificate not reloaded; the previous one stays"`), 30*time.Second, s.exited)
	require.NoError(t, err)
	code, peer = call("GET", "/healthz", "")
	require.Equal(t, 200, code)
	require.Equal(t, cert2.SerialNumber, peer.SerialNumber)
	require.NotContains(t, s.stderr.String(), "PRIVATE KEY", "the key never reaches the log")
}

// TestTLSSettings: a certificate needs its key, and a pair that does not load stops the start
// (and --check-config) with the files named.
func TestTLSSettings(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c, k, _ := selfSigned(t, 1)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, c, 0o600))
	require.NoError(t, os.WriteFile(keyFile, k, 0o600))
	_, stderr, code := runSpool(t, nil, "serve", "--check-config", "--tls-cert", certFile)
	require.NotEqual(t, 0, code)
	require.Contains(t, stderr, "tls.certFile (--tls-cert) and tls.keyFile (--tls-key) go together")

	stdout, stderr, code := runSpool(t, nil, "serve", "--check-config", "--tls-cert", certFile, "--tls-key", keyFile)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "config OK")

	_, stderr, code = runSpool(t, nil, "serve", "--check-config", "--tls-cert", keyFile, "--tls-key", certFile)
	require.NotEqual(t, 0, code)
	require.Contains(t, stderr, "tls: load "+keyFile+" and "+certFile)

	_, stderr, code = runSpool(t, []string{"SPOOL_TLS_CERT=" + certFile, "SPOOL_TLS_KEY=" + filepath.Join(dir, "missing.pem")}, "serve", "--addr", "127.0.0.1:0", "--data", t.TempDir())
	require.NotEqual(t, 0, code)
	require.Contains(t, stderr, "missing.pem")
}
