// Package k8stest runs a real Kubernetes API server for tests, the way controller-runtime's envtest
// does: kube-apiserver on loopback, its store kine (the etcd API on SQLite), a bearer token with
// every right, and no kubelet, scheduler or controller: a test plays them by writing pod status.
//
// The binaries come from SPOOL_TEST_K8S_BIN, a folder holding kube-apiserver and kine
// (scripts/k8s-tools builds them and prints it); without it tests skip, saying so.
package k8stest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// EnvBin names the folder of the binaries.
const EnvBin = "SPOOL_TEST_K8S_BIN"

// Cluster is a running API server.
type Cluster struct {
	// Config reaches the API server as a user with every right.
	Config *rest.Config
	// Client is a clientset on Config.
	Client kubernetes.Interface

	http      *http.Client // Client's, closed with the cluster
	dir       string
	apiserver *exec.Cmd
	kine      *exec.Cmd
	logs      *os.File
}

var (
	sharedMu  sync.Mutex
	shared    *Cluster
	sharedErr error
)

// Shared returns the test binary's API server, starting it on first use; tests keep apart by
// namespace (Namespace). Call StopShared from TestMain once the tests are done.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	bin := binDir(t)
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && sharedErr == nil {
		shared, sharedErr = start(bin)
	}
	if sharedErr != nil {
		t.Fatalf("k8stest: %v", sharedErr)
	}
	return shared
}

// StopShared stops the shared API server, if one was started.
func StopShared() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		shared.Stop()
		shared = nil
	}
}

func binDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(EnvBin)
	if dir == "" {
		t.Skipf("no Kubernetes API server: set %s to a folder with kube-apiserver and kine (scripts/k8s-tools builds them; .ci/run does)", EnvBin)
	}
	for _, b := range []string{"kube-apiserver", "kine"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Fatalf("k8stest: %s names %s, which has no %s: %v", EnvBin, dir, b, err)
		}
	}
	return dir
}

// token is the test user's bearer token: a random value per process.
var token = func() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}()

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port), nil
}

func start(bin string) (_ *Cluster, err error) {
	dir, err := os.MkdirTemp("", "spool-k8stest-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if c.logs, err = os.Create(filepath.Join(dir, "output.log")); err != nil {
		return nil, err
	}
	// The service-account signing pair the API server insists on, and the token file.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"sa.key":     pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
		"sa.pub":     pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}),
		"tokens.csv": []byte(token + `,spool-test,spool-test,"system:masters"` + "\n"),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	kinePort, err := freePort()
	if err != nil {
		return nil, err
	}
	c.kine = exec.Command(filepath.Join(bin, "kine"), "--listen-address", "127.0.0.1:"+kinePort, "--metrics-bind-address", "0",
		"--endpoint", "sqlite://"+filepath.Join(dir, "kine.db")+"?_journal=WAL&cache=shared")
	c.kine.Dir, c.kine.Stdout, c.kine.Stderr = dir, c.logs, c.logs
	if err := c.kine.Start(); err != nil {
		return nil, fmt.Errorf("start kine: %w", err)
	}
	apiPort, err := freePort()
	if err != nil {
		return nil, err
	}
	c.apiserver = exec.Command(filepath.Join(bin, "kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:"+kinePort,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+apiPort,
		"--cert-dir="+filepath.Join(dir, "certs"),
		"--token-auth-file="+filepath.Join(dir, "tokens.csv"),
		"--authorization-mode=AlwaysAllow",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
		// No controller makes service-account tokens; and with the default reconciler the server
		// refuses to advertise a loopback address.
		"--disable-admission-plugins=ServiceAccount",
		"--endpoint-reconciler-type=none",
		"--service-cluster-ip-range=10.96.0.0/16",
	)
	c.apiserver.Dir, c.apiserver.Stdout, c.apiserver.Stderr = dir, c.logs, c.logs
	if err := c.apiserver.Start(); err != nil {
		return nil, fmt.Errorf("start kube-apiserver: %w", err)
	}
	c.Config = &rest.Config{
		Host: "https://127.0.0.1:" + apiPort, BearerToken: token,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true}, // its serving certificate is self-signed
		QPS:             200, Burst: 400,
	}
	if err := c.waitReady(90 * time.Second); err != nil {
		out, _ := os.ReadFile(c.logs.Name())
		return nil, fmt.Errorf("%w\n%s", err, tail(string(out), 40))
	}
	if c.http, err = rest.HTTPClientFor(c.Config); err != nil {
		return nil, err
	}
	if c.Client, err = kubernetes.NewForConfigAndClient(c.Config, c.http); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cluster) waitReady(limit time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(limit)
	for {
		req, _ := http.NewRequest("GET", c.Config.Host+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := hc.Do(req)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return nil
			}
		}
		if c.apiserver.ProcessState != nil || time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver not ready after %s (last: %v)", limit, err)
		}
		<-time.After(100 * time.Millisecond) // polls a process starting up
	}
}

// Stop stops the API server, then its store (the API server ignores SIGTERM while its store is
// gone), and removes their files.
func (c *Cluster) Stop() {
	if c.http != nil {
		utilnet.CloseIdleConnectionsFor(c.http.Transport)
	}
	for _, cmd := range []*exec.Cmd{c.apiserver, c.kine} {
		if cmd == nil || cmd.Process == nil {
			continue
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	if c.logs != nil {
		_ = c.logs.Close()
	}
	_ = os.RemoveAll(c.dir)
}

// Namespace makes a namespace of its own for the test, deleted when it ends.
func (c *Cluster) Namespace(t testing.TB) string {
	t.Helper()
	name := strings.Map(func(r rune) rune {
		if 'a' <= r && r <= 'z' || '0' <= r && r <= '9' {
			return r
		}
		return '-'
	}, strings.ToLower(t.Name()))
	if len(name) > 40 {
		name = name[:40]
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name = strings.Trim(name, "-") + "-" + hex.EncodeToString(b)
	ctx := context.Background()
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("k8stest: create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = c.Client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
