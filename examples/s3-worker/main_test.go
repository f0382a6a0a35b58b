package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool/internal/s3test"
	"github.com/spool-run/spool/spoolworker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestHandleUploadsTheImage runs the handler once on a real S3 server (versitygw): the URL it
// returns serves the PNG it rendered.
func TestHandleUploadsTheImage(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	srv.CreateBucket(t, "outputs")
	s3, err := json.Marshal(map[string]string{"accessId": srv.AccessKey, "accessSecret": srv.SecretKey,
		"bucketName": "outputs", "endpointUrl": srv.URL, "objectPath": "renders"})
	require.NoError(t, err)
	var out bytes.Buffer
	err = spoolworker.RunLocal(context.Background(), spoolworker.HandlerFunc(handle),
		json.RawMessage(`{"id":"job-1","input":{"width":40,"height":30},"s3Config":`+string(s3)+`}`), &out)
	require.NoError(t, err, out.String())
	var res struct {
		Output struct {
			ImageURL string `json:"image_url"`
		} `json:"output"`
	}
	require.NoError(t, json.Unmarshal(out.Bytes(), &res), out.String())
	require.Contains(t, res.Output.ImageURL, "/outputs/renders/job-1/image.png?")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, body, err := s3test.Get(ctx, res.Output.ImageURL)
	require.NoError(t, err)
	require.Equal(t, 200, code)
	want, err := render(40, 30)
	require.NoError(t, err)
	require.Equal(t, want, body)
	cfg, err := png.DecodeConfig(bytes.NewReader(body))
	require.NoError(t, err)
	require.Equal(t, 40, cfg.Width)
	require.Equal(t, 30, cfg.Height)
}

func TestHandleRefusesBadSizes(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	err := spoolworker.RunLocal(context.Background(), spoolworker.HandlerFunc(handle),
		json.RawMessage(`{"input":{"width":0,"height":10}}`), &out)
	require.ErrorContains(t, err, "between 1 and 4096")
}
