package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/httpapi"
	"github.com/spool-run/spool/internal/spooltest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestExampleClient runs the example against a real server, the test acting as the worker.
func TestExampleClient(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const secret = "example-admin-key"
	s := spooltest.NewServer(t, spooltest.Options{
		AdminSecret: secret,
		Endpoints:   []spool.Endpoint{spool.NewEndpoint("stream")},
		API:         func(c *httpapi.Config) { c.TakeWait = 10 * time.Second },
	})
	srv := s.HTTP

	env := map[string]string{"SPOOL_URL": srv.URL, "SPOOL_API_KEY": secret}
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-endpoint", "stream", `{"text":"hi"}`}, func(k string) string { return env[k] }, &out)
	}()

	post := func(method, path, body string) (int, string) {
		req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", secret)
		res, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return res.StatusCode, string(b)
	}
	var job struct {
		ID    string          `json:"id"`
		Input json.RawMessage `json:"input"`
	}
	for job.ID == "" {
		code, body := post("GET", "/v2/stream/job-take/w1", "")
		if code == http.StatusOK {
			require.NoError(t, json.Unmarshal([]byte(body), &job))
		}
	}
	require.Equal(t, `{"text":"hi"}`, string(job.Input))
	for _, c := range []string{`"h"`, `"i"`} {
		code, body := post("POST", "/v2/stream/job-stream/w1/"+job.ID, `{"output":`+c+`}`)
		require.Equal(t, 200, code, body)
	}
	code, body := post("POST", "/v2/stream/job-done/w1/"+job.ID, `{"output":"hi"}`)
	require.Equal(t, 200, code, body)

	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the example did not finish")
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	require.Len(t, lines, 5, out.String())
	require.Equal(t, "submitted job "+job.ID+" to stream", lines[0])
	require.Equal(t, []string{`chunk: "h"`, `chunk: "i"`}, lines[1:3])
	require.True(t, strings.HasPrefix(lines[3], "COMPLETED in "), lines[3])
	require.Equal(t, `output: "hi"`, lines[4])

	require.ErrorContains(t, run(ctx, nil, func(string) string { return "" }, &out), "set SPOOL_API_KEY")
}
