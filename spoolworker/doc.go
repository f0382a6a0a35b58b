// Package spoolworker is the Go worker SDK of Spool. A worker written with it speaks the RunPod
// Serverless worker protocol exactly as runpod-python does, so the same binary runs under Spool
// and on RunPod itself.
//
// A worker is a Handler and a main:
//
//	func main() {
//		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//		defer stop()
//		h := spoolworker.HandlerFunc(func(ctx context.Context, job *spoolworker.Job) (any, error) {
//			var in struct{ Name string }
//			if err := job.Decode(&in); err != nil {
//				return nil, err
//			}
//			return map[string]string{"greeting": "hello " + in.Name}, nil
//		})
//		if err := spoolworker.Start(ctx, h, os.Args[1:], os.Getenv, spoolworker.Config{}); err != nil {
//			log.Fatal(err)
//		}
//	}
//
// Start reads the environment runpod-python reads (RUNPOD_WEBHOOK_GET_JOB,
// RUNPOD_WEBHOOK_POST_OUTPUT, RUNPOD_WEBHOOK_POST_STREAM, RUNPOD_WEBHOOK_PING,
// RUNPOD_PING_INTERVAL, RUNPOD_POD_ID, RUNPOD_AI_API_KEY, RUNPOD_POD_HOSTNAME), or runs the
// handler once in local test mode (--test_input '{"input": ...}', or test_input.json when
// RUNPOD_WEBHOOK_GET_JOB is unset). Programs that build workers themselves (tests, `spool dev`)
// use New with a Config, for instance from ConfigFor.
//
// What the SDK does on the wire (docs/worker-protocol.md):
//   - job-take long-polls with job_in_progress=0|1, or job-take-batch with batch_size=k when
//     k ≥ 2 slots are free (Config.Concurrency, Worker.SetConcurrency); 429 backs off for its
//     Retry-After.
//   - a job-stop long-poll cancels the ctx of each listed job (cause ErrJobStopped); the
//     policy's executionTimeout is the ctx deadline (cause ErrExecutionTimeout). Nothing is
//     posted for a stopped or timed-out job: the server has already ended it.
//   - results, progress ({"status":"IN_PROGRESS"}) and chunks are posted one at a time per job,
//     in order, with retries on 5xx and connection errors (Config.RetryBackoff); a 409 (the job
//     is no longer this worker's) or any other 4xx is not retried.
//   - pings carry the held job ids and the SDK Version every Config.PingInterval.
//
// Spool extensions, harmless on RunPod: takes ask for ?include=attempt, and when the job carries
// an "attempt", posts echo it as &attempt=N so that Spool refuses a stale attempt's posts; a worker
// with an Offloader also asks for ?include=offload, and a job with an s3Config then carries its
// endpoint's "outputOffloadBytes" (see Config.Offloader).
//
// Outputs that are files go to the job's bucket with the subpackage s3upload: s3upload.Upload,
// Bytes and File store them under "<objectPath>/<job id>/<name>" of the job's s3Config (or of the
// BUCKET_ENDPOINT_URL, BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY environment, as
// runpod-python's rp_upload) and return a presigned URL; s3upload.Offloader stores results too
// large to post. It is a package of its own so that workers that never upload do not link an S3
// client.
package spoolworker
