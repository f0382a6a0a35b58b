// Package s3test runs a real S3 server for tests: versitygw with its posix backend on a temporary
// directory, listening on a loopback port. Tests that need it call Start, which skips the test,
// naming the install command, when versitygw is not installed.
package s3test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// InstallCommand installs the versitygw the tests expect.
const InstallCommand = "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"

// Server is a running versitygw.
type Server struct {
	// URL is the S3 endpoint, http://127.0.0.1:PORT.
	URL string
	// AccessKey and SecretKey are the root account's credentials.
	AccessKey, SecretKey string
	// Dir is the posix backend's directory: each bucket is a directory in it.
	Dir string

	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
}

// Binary finds versitygw on PATH or in the Go bin directory ($GOBIN, $GOPATH/bin, ~/go/bin).
func Binary() (string, bool) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, true
	}
	var dirs []string
	if v := os.Getenv("GOBIN"); v != "" {
		dirs = append(dirs, v)
	}
	if v := os.Getenv("GOPATH"); v != "" {
		for _, p := range filepath.SplitList(v) {
			dirs = append(dirs, filepath.Join(p, "bin"))
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, p := range filepath.SplitList(strings.TrimSpace(string(out))) {
			dirs = append(dirs, filepath.Join(p, "bin"))
		}
	}
	for _, d := range dirs {
		p := filepath.Join(d, "versitygw")
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// Start starts versitygw with fresh credentials on a loopback port and waits until it answers. It
// is stopped when t ends. Without versitygw installed the test is skipped with the command that
// installs it.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, ok := Binary()
	if !ok {
		t.Skipf("needs a real S3 server: versitygw is not on PATH or in the Go bin directory; install it with `%s`", InstallCommand)
	}
	var lastErr error
	for range 3 { // a free port may be taken between the probe and versitygw's bind
		s, err := start(t, bin)
		if err == nil {
			return s
		}
		lastErr = err
	}
	t.Fatalf("s3test: versitygw did not start: %v", lastErr)
	return nil
}

func start(t testing.TB, bin string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Server{
		URL:       fmt.Sprintf("http://127.0.0.1:%d", port),
		AccessKey: "AK" + randHex(8),
		SecretKey: "SK" + randHex(16),
		Dir:       t.TempDir(),
		out:       &syncBuffer{changed: make(chan struct{})},
		exited:    make(chan struct{}),
	}
	s.cmd = exec.Command(bin, "--access", s.AccessKey, "--secret", s.SecretKey,
		"--port", fmt.Sprintf("127.0.0.1:%d", port), "posix", s.Dir)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.Env = append(os.Environ(), "HOME="+s.Dir)
	s.cmd.WaitDelay = 5 * time.Second
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(30 * time.Second); err != nil {
		s.stop()
		return nil, fmt.Errorf("%w; its output:\n%s", err, s.out.String())
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("---- versitygw output ----\n%s", s.out.String())
		}
	})
	return s, nil
}

// waitReady waits, at most timeout, for the banner versitygw prints once it listens, then for an
// HTTP answer (any status) from the port.
func (s *Server) waitReady(timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		changed := s.out.wait()
		if strings.Contains(s.out.String(), "listening on") {
			break
		}
		select {
		case <-changed:
		case <-s.exited:
			return errors.New("versitygw exited before listening")
		case <-deadline.C:
			return fmt.Errorf("versitygw printed no \"listening on\" within %s", timeout)
		}
	}
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	for attempt := 0; ; attempt++ {
		res, err := client.Get(s.URL + "/")
		if err == nil {
			res.Body.Close()
			return nil
		}
		if attempt >= 50 {
			return fmt.Errorf("versitygw does not answer: %w", err)
		}
		pause := time.NewTimer(20 * time.Millisecond) // bounded: 50 attempts
		select {
		case <-pause.C:
		case <-s.exited:
			pause.Stop()
			return errors.New("versitygw exited")
		case <-deadline.C:
			pause.Stop()
			return fmt.Errorf("versitygw does not answer within %s: %w", timeout, err)
		}
	}
}

func (s *Server) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
}

// Client returns an S3 client for the server's root account (path-style addressing), and a
// function that closes its idle connections.
func (s *Server) Client() (*s3.Client, func()) {
	tr := &http.Transport{Proxy: nil}
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(s.URL),
		Region:       "us-east-1",
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
		HTTPClient:   &http.Client{Transport: tr},
	}), tr.CloseIdleConnections
}

// CreateBucket creates a bucket with a signed CreateBucket request.
func (s *Server) CreateBucket(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, done := s.Client()
	defer done()
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("s3test: create bucket %s: %v", name, err)
	}
}

// Object returns the bytes stored under key in bucket, read from the backend directory.
func (s *Server) Object(t testing.TB, bucket, key string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.Dir, bucket, filepath.FromSlash(key)))
	if err != nil {
		t.Fatalf("s3test: read object %s/%s: %v", bucket, key, err)
	}
	return b
}

// Get fetches a URL with a plain HTTP client (no S3 signing: a presigned or public URL) and
// returns the status and body.
func Get(ctx context.Context, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	tr := &http.Transport{Proxy: nil}
	defer tr.CloseIdleConnections()
	res, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(res.Body)
	return res.StatusCode, b.Bytes(), err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// syncBuffer collects a process's output and signals every write.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	close(b.changed)
	b.changed = make(chan struct{})
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *syncBuffer) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.changed
}
