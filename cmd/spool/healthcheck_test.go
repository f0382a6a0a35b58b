package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHealthcheck: `spool healthcheck` (the image's HEALTHCHECK) exits 0 when /healthz answers 200
// and 1 otherwise, asking loopback when the server listens on every address.
func TestHealthcheck(t *testing.T) {
	t.Parallel()
	var status atomic.Int32
	status.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	run := func(env []string, args ...string) (string, int) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, spoolBin, append([]string{"healthcheck"}, args...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		}
		require.NoError(t, err)
		return string(out), 0
	}
	out, code := run(nil, "--addr", "127.0.0.1:"+port)
	require.Equal(t, 0, code, out)
	require.Equal(t, "healthy\n", out)
	out, code = run([]string{"SPOOL_ADDR=0.0.0.0:" + port})
	require.Equal(t, 0, code, "0.0.0.0 is asked on loopback: %s", out)
	status.Store(http.StatusServiceUnavailable)
	out, code = run(nil, "--addr", "127.0.0.1:"+port)
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "unhealthy: /healthz answered 503 Service Unavailable")
	srv.Close()
	out, code = run(nil, "--addr", "127.0.0.1:"+port)
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "unhealthy")
}
