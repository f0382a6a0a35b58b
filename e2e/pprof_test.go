package e2e_test

import (
	"context"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestPprofIsOptInAndAdminOnly: without debug.pprofAddr no profile is served anywhere; with it,
// the profiles are on their own listener and answer only admin keys.
func TestPprofIsOptInAndAdminOnly(t *testing.T) {
	t.Parallel()
	srv := startServer(t, serverOpts{Config: "endpoints:\n  - name: y\n", Env: []string{"SPOOL_PPROF_ADDR=127.0.0.1:0"}})
	m, err := srv.stderr.waitFor(regexp.MustCompile(`msg="pprof listening \(admin keys only\)" url=(http://127\.0\.0\.1:\d+/debug/pprof/)`), 30*time.Second, srv.exited)
	require.NoError(t, err)
	get := func(url, key string) resp {
		t.Helper()
		h := http.Header{}
		if key != "" {
			h.Set("Authorization", "Bearer "+key)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r, err := doRequest(ctx, srv.client, "GET", url, h, nil)
		require.NoError(t, err)
		return r
	}
	require.Equal(t, http.StatusUnauthorized, get(m[1], "").Code)
	require.Equal(t, http.StatusForbidden, get(m[1], srv.Keys.Client).Code)
	require.Equal(t, http.StatusForbidden, get(m[1], srv.Keys.Worker).Code)
	r := get(m[1]+"goroutine?debug=1", srv.Keys.Admin)
	require.Equal(t, http.StatusOK, r.Code)
	require.Contains(t, string(r.Body), "goroutine profile")
	// The API's listener has no profiles, whatever the key.
	require.Equal(t, http.StatusNotFound, get(srv.URL+"/debug/pprof/", srv.Keys.Admin).Code)

	plain := startServer(t, serverOpts{Config: "endpoints:\n  - name: y\n"})
	require.NotContains(t, plain.stderr.String(), "pprof listening")
	require.Equal(t, http.StatusNotFound, get(plain.URL+"/debug/pprof/", plain.Keys.Admin).Code)
}
