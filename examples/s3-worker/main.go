// Command s3-worker is a Spool worker, written with the Go worker SDK, that renders an image and
// stores it in the job's bucket: the client names the bucket (and its credentials) in the job's
// "s3Config", the worker uploads "<objectPath>/<job id>/image.png" with s3upload.Bytes and
// returns a presigned URL valid for 7 days, as runpod-python's rp_upload does. The credentials
// reach only this worker: Spool never shows them anywhere else.
//
// Run it against a local server (see examples/worker for the environment), with an endpoint
// "images", then submit a job with an s3Config:
//
//	curl -s -X POST $SPOOL/v2/images/runsync -H "Authorization: Bearer $KEY" -d '{
//	  "input": {"width": 320, "height": 200},
//	  "s3Config": {"accessId": "…", "accessSecret": "…", "bucketName": "outputs",
//	               "endpointUrl": "http://127.0.0.1:7070", "objectPath": "renders"}}'
//	# {"id":"sync-…","status":"COMPLETED","output":{"image_url":"http://127.0.0.1:7070/outputs/renders/sync-…/image.png?X-Amz-…","width":320,"height":200},…}
//
// Any S3-compatible server works; for a local one, versitygw:
//
//	go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
//	mkdir -p /tmp/s3/outputs && versitygw --access AK --secret SK --port 127.0.0.1:7070 posix /tmp/s3
//
// A job without s3Config uploads to BUCKET_ENDPOINT_URL with BUCKET_ACCESS_KEY_ID and
// BUCKET_SECRET_ACCESS_KEY when they are set, as rp_upload does. Locally, with no server:
//
//	go run ./examples/s3-worker --test_input '{"input":{"width":64,"height":64},"s3Config":{…}}'
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"os/signal"
	"syscall"

	"github.com/spool-run/spool/spoolworker"
	"github.com/spool-run/spool/spoolworker/s3upload"
)

// input is what a job asks for.
type input struct {
	Width  int `json:"width"`
	Height int `json:"height"`
}

// render draws a width×height gradient with a diagonal stripe: an image-like file to store.
func render(width, height int) ([]byte, error) {
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	for y := range height {
		for x := range width {
			c := color.RGBA{R: uint8(255 * x / max(width-1, 1)), G: uint8(255 * y / max(height-1, 1)), B: 160, A: 255}
			if (x+y)%32 < 4 {
				c = color.RGBA{R: 255, G: 255, B: 255, A: 255}
			}
			img.Set(x, y, c)
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// handle renders the image, uploads it to the job's bucket and returns its URL.
func handle(ctx context.Context, job *spoolworker.Job) (any, error) {
	in := input{Width: 256, Height: 256}
	if err := job.Decode(&in); err != nil {
		return nil, err
	}
	if in.Width < 1 || in.Height < 1 || in.Width > 4096 || in.Height > 4096 {
		return nil, errors.New("input.width and input.height must be between 1 and 4096")
	}
	img, err := render(in.Width, in.Height)
	if err != nil {
		return nil, err
	}
	// The error, if any, names neither the credentials nor the bucket: the SDK redacts them.
	u, err := s3upload.Bytes(ctx, job, "image.png", img, nil)
	if err != nil {
		return nil, err
	}
	return map[string]any{"image_url": u, "width": in.Width, "height": in.Height}, nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The Offloader also stores a result larger than the endpoint's outputOffloadBytes in the job's
	// bucket, and posts its URL instead.
	cfg := spoolworker.Config{Offloader: s3upload.Offloader{}}
	if err := spoolworker.Start(ctx, spoolworker.HandlerFunc(handle), os.Args[1:], os.Getenv, cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
