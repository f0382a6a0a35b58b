// Package s3upload stores a Spool (or RunPod) worker's outputs in S3-compatible storage, as
// runpod-python's rp_upload does: in the bucket of the job's s3Config, or of the BUCKET_*
// environment, under "<objectPath>/<job id>/<name>", returning a presigned URL. Its Offloader lets
// a worker built with spoolworker store a result too large to post (spoolworker.Config.Offloader).
//
// It is a package of its own so that programs which never upload (the spool server among them)
// do not link the AWS SDK.
package s3upload

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/spool-run/spool/spoolworker"
)

// The environment the upload helpers fall back to when a job has no s3Config, as runpod-python's
// rp_upload does.
const (
	EnvBucketEndpointURL = "BUCKET_ENDPOINT_URL"
	EnvBucketAccessKeyID = "BUCKET_ACCESS_KEY_ID"
	EnvBucketSecretKey   = "BUCKET_SECRET_ACCESS_KEY"
)

// Upload defaults.
const (
	// DefaultURLExpiry is how long a presigned URL works: 7 days, rp_upload's 604800 s and the
	// longest a SigV4 presigned URL may last.
	DefaultURLExpiry = 7 * 24 * time.Hour
	// DefaultPartSize is the part size of multipart uploads; smaller objects go up in one PUT.
	DefaultPartSize = 8 << 20
	// MinPartSize is the smallest part S3 accepts (but for the last).
	MinPartSize = 5 << 20
	// DefaultRegion signs requests when the endpoint URL names no region.
	DefaultRegion = "us-east-1"
)

// ErrNoBucket: the job has no s3Config and the BUCKET_* environment is not set, so there is
// nowhere to upload to.
var ErrNoBucket = errors.New("s3upload: nowhere to upload: the job has no s3Config and " +
	EnvBucketEndpointURL + ", " + EnvBucketAccessKeyID + " and " + EnvBucketSecretKey + " are not all set")

// Options tunes an upload; nil or the zero value does what runpod-python's rp_upload does.
type Options struct {
	// ContentType of the object. Defaults to the type of the name's extension, else (bytes and
	// files) the type sniffed from the first 512 bytes, else application/octet-stream.
	ContentType string
	// PlainURL returns the object's plain path-style URL (endpointUrl/bucket/key) instead of a
	// presigned GET URL: for public buckets, or callers that sign URLs themselves.
	PlainURL bool
	// Expiry is how long the presigned URL works, at most 7 days. Defaults to DefaultURLExpiry.
	Expiry time.Duration
	// PartSize is the multipart part size (at least MinPartSize): a larger object goes up in
	// parts, several at once. Defaults to DefaultPartSize.
	PartSize int64
	// Bucket names the bucket when the credentials come from the BUCKET_* environment (a job's
	// s3Config names its own). Defaults to the current month as "MM-YY", as rp_upload does.
	Bucket string
}

// Upload stores r's bytes in the job's bucket under "<objectPath>/<job id>/<name>" and returns a
// presigned GET URL of the object (or its plain URL, see Options). The bucket is the job's
// s3Config; without one, the BUCKET_ENDPOINT_URL, BUCKET_ACCESS_KEY_ID and
// BUCKET_SECRET_ACCESS_KEY environment, like rp_upload (ErrNoBucket when neither is there).
// Addressing is path-style, which S3-compatible servers expect. Objects larger than the part
// size go up as multipart uploads.
//
// Error messages never contain the s3Config's values (they are replaced by "[redacted]"). A
// presigned URL does carry the access key id, as every S3 presigned URL does, never the secret.
func Upload(ctx context.Context, job *spoolworker.Job, name string, r io.Reader, opts *Options) (string, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.ContentType == "" {
		o.ContentType = mime.TypeByExtension(path.Ext(name))
	}
	if o.ContentType == "" {
		o.ContentType = "application/octet-stream"
	}
	return upload(ctx, job, name, r, o)
}

// Bytes is Upload of data; without a content type from the options or the name's
// extension, it is sniffed from data.
func Bytes(ctx context.Context, job *spoolworker.Job, name string, data []byte, opts *Options) (string, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.ContentType == "" && mime.TypeByExtension(path.Ext(name)) == "" {
		o.ContentType = http.DetectContentType(data)
	}
	return Upload(ctx, job, name, bytes.NewReader(data), &o)
}

// File is Upload of the file at filePath, under its base name.
func File(ctx context.Context, job *spoolworker.Job, filePath string, opts *Options) (string, error) {
	f, err := os.Open(filePath)
	if err != nil {
		return "", fmt.Errorf("s3upload: %w", err)
	}
	defer f.Close()
	var o Options
	if opts != nil {
		o = *opts
	}
	name := filepath.Base(filePath)
	if o.ContentType == "" && mime.TypeByExtension(path.Ext(name)) == "" {
		head := make([]byte, 512)
		n, _ := io.ReadFull(f, head)
		o.ContentType = http.DetectContentType(head[:n])
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return "", fmt.Errorf("s3upload: upload %s: %w", name, err)
		}
	}
	return Upload(ctx, job, name, f, &o)
}

// target is where an upload goes.
type target struct {
	endpoint, accessID, secret, bucket, prefix string
}

// secrets are the values error messages must not show.
func (t target) secrets() []string {
	out := []string{t.secret, t.accessID, t.endpoint, t.bucket}
	if u, err := url.Parse(t.endpoint); err == nil && u.Host != "" {
		out = append(out, u.Host, u.Hostname())
	}
	return out
}

// bucketOf finds the bucket: the job's s3Config, else the BUCKET_* environment.
func bucketOf(job *spoolworker.Job, o Options) (target, error) {
	if c, ok := job.S3Config(); ok {
		if c.EndpointURL == "" || c.AccessID == "" || c.AccessSecret == "" || c.BucketName == "" {
			return target{}, errors.New("s3upload: the job's s3Config lacks endpointUrl, accessId, accessSecret or bucketName")
		}
		return target{endpoint: c.EndpointURL, accessID: c.AccessID, secret: c.AccessSecret, bucket: c.BucketName, prefix: c.ObjectPath}, nil
	}
	getenv := job.Getenv
	t := target{endpoint: getenv(EnvBucketEndpointURL), accessID: getenv(EnvBucketAccessKeyID), secret: getenv(EnvBucketSecretKey), bucket: o.Bucket}
	if t.endpoint == "" || t.accessID == "" || t.secret == "" {
		return target{}, ErrNoBucket
	}
	if t.bucket == "" {
		t.bucket = time.Now().Format("01-06")
	}
	return t, nil
}

// ObjectKey is the key under which Upload stores name for a job: objectPath (its slashes trimmed),
// the job id and name, joined by "/".
func ObjectKey(objectPath, jobID, name string) string {
	var parts []string
	if p := strings.Trim(objectPath, "/"); p != "" {
		parts = append(parts, p)
	}
	return strings.Join(append(parts, jobID, strings.TrimLeft(name, "/")), "/")
}

func upload(ctx context.Context, job *spoolworker.Job, name string, r io.Reader, o Options) (string, error) {
	if strings.Trim(name, "/") == "" {
		return "", errors.New("s3upload: the object needs a name")
	}
	// Some S3-compatible servers clean paths, so a ".." segment could put the object outside
	// objectPath/<job id>/.
	for _, seg := range strings.Split(name, "/") {
		if seg == ".." || seg == "." {
			return "", fmt.Errorf("s3upload: upload %q: the name must not contain . or .. segments", name)
		}
	}
	if o.Expiry == 0 {
		o.Expiry = DefaultURLExpiry
	}
	if o.Expiry < time.Second || o.Expiry > DefaultURLExpiry {
		return "", fmt.Errorf("s3upload: upload %s: Expiry must be between 1s and 7 days (SigV4's limit)", name)
	}
	if o.PartSize == 0 {
		o.PartSize = DefaultPartSize
	}
	if o.PartSize < MinPartSize {
		return "", fmt.Errorf("s3upload: upload %s: PartSize must be at least %d bytes", name, MinPartSize)
	}
	t, err := bucketOf(job, o)
	if err != nil {
		return "", err
	}
	fail := func(op string, err error) error {
		return &uploadError{op: op, name: name, err: err, hide: t.secrets()}
	}
	u, err := url.Parse(t.endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fail("upload", errors.New("the bucket's endpoint URL is not an http(s) URL"))
	}
	key := ObjectKey(t.prefix, job.ID, name)

	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	client := s3.New(s3.Options{
		BaseEndpoint: aws.String(strings.TrimRight(t.endpoint, "/")),
		Region:       regionOf(u.Hostname()),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(t.accessID, t.secret, ""),
		HTTPClient:   &http.Client{Transport: tr},
		// S3-compatible servers do not all know the newer default checksums.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
	tm := transfermanager.New(client, func(opt *transfermanager.Options) {
		opt.PartSizeBytes = o.PartSize
		opt.MultipartUploadThreshold = o.PartSize
		opt.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		opt.FailTimeout = 30 * time.Second // time to abort a failed multipart upload
	})
	_, err = tm.UploadObject(ctx, &transfermanager.UploadObjectInput{
		Bucket: aws.String(t.bucket), Key: aws.String(key), Body: r, ContentType: aws.String(o.ContentType),
	})
	if err != nil {
		return "", fail("upload", err)
	}
	if o.PlainURL {
		return plainURL(t.endpoint, t.bucket, key), nil
	}
	req, err := s3.NewPresignClient(client).PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(t.bucket), Key: aws.String(key)},
		s3.WithPresignExpires(o.Expiry))
	if err != nil {
		return "", fail("presign", err)
	}
	return req.URL, nil
}

// plainURL is the path-style URL of an object.
func plainURL(endpoint, bucket, key string) string {
	segs := strings.Split(key, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.TrimRight(endpoint, "/") + "/" + url.PathEscape(bucket) + "/" + strings.Join(segs, "/")
}

// regionOf reads the region from an endpoint host the way rp_upload does
// ("bucket.s3.eu-west-1.amazonaws.com", "s3.us-west-2.amazonaws.com", "nyc3.digitaloceanspaces.com");
// DefaultRegion otherwise. S3-compatible servers mostly ignore it, but it is part of the signature.
func regionOf(host string) string {
	labels := strings.Split(host, ".")
	for i, l := range labels {
		if (l == "s3" || strings.HasPrefix(l, "s3-")) && i+1 < len(labels) && labels[i+1] != "amazonaws" {
			return labels[i+1]
		}
	}
	if strings.HasSuffix(host, ".digitaloceanspaces.com") && len(labels) >= 3 {
		return labels[len(labels)-3]
	}
	return DefaultRegion
}

// uploadError is a failed upload whose message hides the bucket's credentials and address.
type uploadError struct {
	op, name string
	err      error
	hide     []string
}

func (e *uploadError) Error() string {
	return "s3upload: " + e.op + " " + e.name + " to the job's bucket: " + redact(e.err.Error(), e.hide)
}

// Unwrap gives the S3 client's error (for errors.As with smithy's APIError); its own message may
// name the endpoint or bucket.
func (e *uploadError) Unwrap() error { return e.err }

// redact replaces each of secrets (those of 4 bytes or more; shorter ones would mangle the
// message, and are no secret) in s with "[redacted]", longest first.
func redact(s string, secrets []string) string {
	sorted := append([]string(nil), secrets...)
	for i := range sorted { // longest first, so a value containing another goes whole
		for k := i + 1; k < len(sorted); k++ {
			if len(sorted[k]) > len(sorted[i]) {
				sorted[i], sorted[k] = sorted[k], sorted[i]
			}
		}
	}
	for _, v := range sorted {
		if len(v) >= 4 {
			s = strings.ReplaceAll(s, v, "[redacted]")
		}
	}
	return s
}

// OffloadName is the object name of an offloaded output.
const OffloadName = "output.json"

// OffloadedOutput is the output a worker posts for a result it stored in the job's bucket: fetch
// OutputURL for the real output.
type OffloadedOutput struct {
	OutputURL   string `json:"outputUrl"`
	OutputBytes int64  `json:"outputBytes"`
	ContentType string `json:"contentType"`
}

// Offloader stores a result too large to post as "<objectPath>/<job id>/output.json" in the job's
// s3Config bucket and posts an OffloadedOutput instead: set it as spoolworker.Config.Offloader.
type Offloader struct{}

var _ spoolworker.Offloader = Offloader{}

// Offload implements spoolworker.Offloader.
func (Offloader) Offload(ctx context.Context, job *spoolworker.Job, output json.RawMessage) (json.RawMessage, error) {
	u, err := Bytes(ctx, job, OffloadName, output, &Options{ContentType: "application/json"})
	if err != nil {
		return nil, err
	}
	return json.Marshal(OffloadedOutput{OutputURL: u, OutputBytes: int64(len(output)), ContentType: "application/json"})
}
