package s3upload_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/spool-run/spool/internal/s3test"
	"github.com/spool-run/spool/spoolworker"
	"github.com/spool-run/spool/spoolworker/s3upload"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// runJob runs h once in local test mode on a job object built from id, input and s3Config (raw
// JSON, "" for none), with getenv as the environment, and returns the handler's error.
func runJob(t *testing.T, id, s3Config string, getenv func(string) string, h spoolworker.HandlerFunc) {
	t.Helper()
	job := `{"id":"` + id + `","input":{}`
	if s3Config != "" {
		job += `,"s3Config":` + s3Config
	}
	job += "}"
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	var out bytes.Buffer
	err := spoolworker.Start(t.Context(), h, []string{"--test_input", job}, getenv,
		spoolworker.Config{LocalOutput: &out, Logger: testLogger()})
	require.NoError(t, err, out.String())
}

func s3ConfigOf(s *s3test.Server, bucket, objectPath string) string {
	b, _ := json.Marshal(map[string]string{
		"accessId": s.AccessKey, "accessSecret": s.SecretKey, "bucketName": bucket, "endpointUrl": s.URL, "objectPath": objectPath,
	})
	return string(b)
}

func fetch(t *testing.T, url string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	code, body, err := s3test.Get(ctx, url)
	require.NoError(t, err)
	return code, body
}

// TestUploadPresigned: bytes go to objectPath/<job id>/<name> of the job's bucket, and the
// presigned URL, fetched with plain net/http, gives them back; it never carries the secret.
func TestUploadPresigned(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	srv.CreateBucket(t, "results")
	data := []byte("hello from a spool worker\n")
	var got string
	runJob(t, "job-presigned", s3ConfigOf(srv, "results", "/runs/2026/"), nil, func(ctx context.Context, job *spoolworker.Job) (any, error) {
		var err error
		got, err = s3upload.Bytes(ctx, job, "greeting.txt", data, nil)
		return got, err
	})
	require.Contains(t, got, "/results/runs/2026/job-presigned/greeting.txt?", "path-style, under objectPath/<job id>/")
	require.Contains(t, got, "X-Amz-Signature=")
	require.Contains(t, got, "X-Amz-Expires=604800", "7 days, like rp_upload")
	require.NotContains(t, got, srv.SecretKey)
	code, body := fetch(t, got)
	require.Equal(t, 200, code, string(body))
	require.Equal(t, data, body)
	require.Equal(t, data, srv.Object(t, "results", "runs/2026/job-presigned/greeting.txt"))
}

// TestUploadPlainURL: with PlainURL the answer is the object's path-style URL; the bucket is
// private, so fetching it unsigned is refused, while the object is there.
func TestUploadPlainURL(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	srv.CreateBucket(t, "plain")
	png := append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, 64)...)
	var got string
	runJob(t, "job-plain", s3ConfigOf(srv, "plain", ""), nil, func(ctx context.Context, job *spoolworker.Job) (any, error) {
		var err error
		got, err = s3upload.Bytes(ctx, job, "dir/image", png, &s3upload.Options{PlainURL: true})
		return got, err
	})
	require.Equal(t, srv.URL+"/plain/job-plain/dir/image", got)
	code, _ := fetch(t, got)
	require.Equal(t, 403, code, "a private bucket does not serve unsigned requests")
	c, done := srv.Client()
	defer done()
	head, err := c.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String("plain"), Key: aws.String("job-plain/dir/image")})
	require.NoError(t, err)
	require.Equal(t, "image/png", aws.ToString(head.ContentType), "sniffed from the bytes")
	require.Equal(t, png, srv.Object(t, "plain", "job-plain/dir/image"))
}

// TestUploadFileMultipart: a file over the part size goes up as a multipart upload (its ETag
// says how many parts) and comes back byte for byte through the presigned URL.
func TestUploadFileMultipart(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	srv.CreateBucket(t, "big")
	data := make([]byte, 2*s3upload.MinPartSize+12345)
	_, _ = rand.Read(data)
	path := filepath.Join(t.TempDir(), "weights.bin")
	require.NoError(t, os.WriteFile(path, data, 0o600))
	var got string
	runJob(t, "job-big", s3ConfigOf(srv, "big", "out"), nil, func(ctx context.Context, job *spoolworker.Job) (any, error) {
		var err error
		got, err = s3upload.File(ctx, job, path, &s3upload.Options{PartSize: s3upload.MinPartSize})
		return got, err
	})
	code, body := fetch(t, got)
	require.Equal(t, 200, code)
	require.True(t, bytes.Equal(data, body), "the bytes come back unchanged")
	c, done := srv.Client()
	defer done()
	head, err := c.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String("big"), Key: aws.String("out/job-big/weights.bin")})
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(strings.Trim(aws.ToString(head.ETag), `"`), "-3"), "three parts: ETag %s", aws.ToString(head.ETag))
}

// TestUploadEnvFallback: without an s3Config, the BUCKET_* environment is used, like rp_upload:
// the bucket named in the options, else the current month "MM-YY".
func TestUploadEnvFallback(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	month := time.Now().Format("01-06")
	srv.CreateBucket(t, month)
	srv.CreateBucket(t, "named")
	env := map[string]string{
		s3upload.EnvBucketEndpointURL: srv.URL, s3upload.EnvBucketAccessKeyID: srv.AccessKey,
		s3upload.EnvBucketSecretKey: srv.SecretKey,
	}
	var inMonth, inNamed string
	runJob(t, "job-env", "", func(k string) string { return env[k] }, func(ctx context.Context, job *spoolworker.Job) (any, error) {
		var err error
		if inMonth, err = s3upload.Bytes(ctx, job, "a.txt", []byte("month"), nil); err != nil {
			return nil, err
		}
		inNamed, err = s3upload.Bytes(ctx, job, "b.txt", []byte("named"), &s3upload.Options{Bucket: "named"})
		return nil, err
	})
	_, body := fetch(t, inMonth)
	require.Equal(t, "month", string(body))
	require.Equal(t, []byte("named"), srv.Object(t, "named", "job-env/b.txt"))
	_, body = fetch(t, inNamed)
	require.Equal(t, "named", string(body))
}

// TestUploadErrors: a wrong secret, a missing bucket and no bucket at all give clear errors that
// never show the s3Config's values.
func TestUploadErrors(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	srv.CreateBucket(t, "real-bucket")
	wrong := strings.Replace(s3ConfigOf(srv, "real-bucket", ""), srv.SecretKey, "WRONG-secret-CANARY", 1)
	missing := s3ConfigOf(srv, "no-such-bucket-canary", "")
	var wrongErr, missingErr, noneErr error
	runJob(t, "job-wrong", wrong, nil, func(ctx context.Context, job *spoolworker.Job) (any, error) {
		_, wrongErr = s3upload.Bytes(ctx, job, "x.txt", []byte("x"), nil)
		return nil, nil
	})
	runJob(t, "job-missing", missing, nil, func(ctx context.Context, job *spoolworker.Job) (any, error) {
		_, missingErr = s3upload.Bytes(ctx, job, "x.txt", []byte("x"), nil)
		return nil, nil
	})
	runJob(t, "job-none", "", nil, func(ctx context.Context, job *spoolworker.Job) (any, error) {
		_, noneErr = s3upload.Bytes(ctx, job, "x.txt", []byte("x"), nil)
		return nil, nil
	})
	require.Error(t, wrongErr)
	require.Contains(t, wrongErr.Error(), "s3upload: upload x.txt to the job's bucket")
	require.Contains(t, wrongErr.Error(), "403")
	require.Contains(t, wrongErr.Error(), "SignatureDoesNotMatch")
	require.Error(t, missingErr)
	require.Contains(t, missingErr.Error(), "NoSuchBucket")
	for _, err := range []error{wrongErr, missingErr} {
		for _, secret := range []string{"WRONG-secret-CANARY", srv.SecretKey, srv.AccessKey, "no-such-bucket-canary", srv.URL, strings.TrimPrefix(srv.URL, "http://")} {
			require.NotContains(t, err.Error(), secret)
		}
	}
	require.ErrorIs(t, noneErr, s3upload.ErrNoBucket)
}

func TestObjectKey(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ prefix, id, name, want string }{
		{"", "j", "a.png", "j/a.png"},
		{"out", "j", "a.png", "out/j/a.png"},
		{"/out/x/", "j", "/a.png", "out/x/j/a.png"},
		{"out", "j", "sub/a.png", "out/j/sub/a.png"},
	} {
		require.Equal(t, c.want, s3upload.ObjectKey(c.prefix, c.id, c.name))
	}
}

func TestUploadOptionChecks(t *testing.T) {
	t.Parallel()
	var errs []error
	runJob(t, "job-opts", `{"accessId":"a","accessSecret":"s","bucketName":"b","endpointUrl":"http://127.0.0.1:9"}`, nil,
		func(ctx context.Context, job *spoolworker.Job) (any, error) {
			for _, o := range []*s3upload.Options{{Expiry: 8 * 24 * time.Hour}, {PartSize: 1 << 20}} {
				_, err := s3upload.Bytes(ctx, job, "x", []byte("x"), o)
				errs = append(errs, err)
			}
			_, err := s3upload.Bytes(ctx, job, "/", []byte("x"), nil)
			errs = append(errs, err)
			_, err = s3upload.Bytes(ctx, job, "../../other-job/x.png", []byte("x"), nil)
			errs = append(errs, err)
			return nil, nil
		})
	require.ErrorContains(t, errs[0], "7 days")
	require.ErrorContains(t, errs[1], "PartSize")
	require.ErrorContains(t, errs[2], "name")
	require.ErrorContains(t, errs[3], ".. segments", "an object cannot escape objectPath/<job id>/")
	require.False(t, errors.Is(errs[0], s3upload.ErrNoBucket))
}
