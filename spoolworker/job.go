package spoolworker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/spool-run/spool"
)

// Job is one job as a worker receives it from job-take.
type Job struct {
	// ID is the job id.
	ID string
	// Input is the job's "input", byte for byte as the client submitted it.
	Input json.RawMessage
	// Policy is the job's policy when the server sends one (Spool always does).
	Policy Policy
	// Webhook is the client's webhook URL, if any. The server delivers it; it is here for
	// information only.
	Webhook string
	// Attempt is Spool's attempt number of this run of the job (1 for the first take); 0 on
	// RunPod, which does not send it. The SDK echoes it on its posts so that a stale attempt
	// cannot overwrite a newer one.
	Attempt int
	// Raw is the whole job object as received, as runpod-python hands it to its handlers
	// (batchId and any other key). It holds the s3Config credentials when there are any.
	Raw json.RawMessage

	s3  json.RawMessage
	run *jobRun // nil for a Job built by hand
	// getenv is the worker's environment (Config.Getenv); nil: os.Getenv.
	getenv func(string) string
	// offloadBytes is the server's outputOffloadBytes for this job (0: none sent).
	offloadBytes int64
}

// Policy is a job's policy, as the server sends it in the job object.
type Policy struct {
	// ExecutionTimeout is in milliseconds; the job's ctx ends that long after the take.
	ExecutionTimeout int64 `json:"executionTimeout"`
	LowPriority      bool  `json:"lowPriority"`
	// TTL is in milliseconds.
	TTL int64 `json:"ttl"`
}

// S3Config is the bucket a client handed a job (its "s3Config"): the same type as the server's and
// spoolclient's. Its String, GoString and LogValue methods hide every value, so printing or logging
// it leaks nothing.
type S3Config = spool.S3Config

// Getenv reads the worker's environment (Config.Getenv; os.Getenv for a Job built by hand): the
// upload helpers of spoolworker/s3upload read their fallback bucket from it.
func (j *Job) Getenv(key string) string {
	if j.getenv == nil {
		return os.Getenv(key)
	}
	return j.getenv(key)
}

// Decode unmarshals the job's input into v.
func (j *Job) Decode(v any) error {
	if err := json.Unmarshal(j.Input, v); err != nil {
		return fmt.Errorf("decode input of job %s: %w", j.ID, err)
	}
	return nil
}

// DecodeInput returns the job's input decoded as a T.
func DecodeInput[T any](j *Job) (T, error) {
	var v T
	err := j.Decode(&v)
	return v, err
}

// S3Config returns the job's s3Config, or false when it has none (or an unreadable one).
func (j *Job) S3Config() (*S3Config, bool) {
	if len(j.s3) == 0 || string(j.s3) == "null" {
		return nil, false
	}
	var c S3Config
	if err := json.Unmarshal(j.s3, &c); err != nil {
		return nil, false
	}
	return &c, true
}

// Errors of Job.Stream and Job.Progress, and the causes of a job's ctx ending.
var (
	// ErrJobStopped is the cause (context.Cause) of a job's ctx when the server listed the job on
	// its job-stop channel (cancelled, timed out or moved elsewhere). Nothing is posted for it.
	ErrJobStopped = errors.New("spoolworker: the server stopped the job")
	// ErrExecutionTimeout is the cause of a job's ctx when its policy.executionTimeout ran out;
	// ctx.Err() is context.DeadlineExceeded. Nothing is posted for it: the server has already
	// ended the job.
	ErrExecutionTimeout = errors.New("spoolworker: the job's execution timeout ran out")
	// ErrJobEnded is returned by Stream and Progress once the handler has returned (or the job's
	// ctx has ended): the value is dropped, so nothing can follow the result.
	ErrJobEnded = errors.New("spoolworker: the job has ended; nothing more can be posted for it")
	// ErrNotHolder: the server answered 409, this worker does not hold the job (any more).
	ErrNotHolder = errors.New("spoolworker: the server says this worker does not hold the job")
	// ErrTooLarge: the body is over the server's limit (413), or a chunk over MaxChunkSize.
	ErrTooLarge = errors.New("spoolworker: body too large")
	// ErrNoStreamURL: Stream was called but the worker has no StreamURL.
	ErrNoStreamURL = errors.New("spoolworker: no job-stream URL (RUNPOD_WEBHOOK_POST_STREAM) is set")
)

// Stream posts chunk (any JSON value) to the job's stream, after the chunks streamed before it,
// and returns once the server has it. At most MaxChunkSize bytes once encoded. A handler can
// instead return an iterator (see Handler). On a Job not run by a Worker or RunLocal, Stream
// does nothing.
func (j *Job) Stream(chunk any) error {
	if j.run == nil {
		return nil
	}
	return j.run.stream(chunk)
}

// Progress posts v (any JSON value) as the job's progress: {"status":"IN_PROGRESS","output":v}
// on job-done, which clients see as the output of the running job. It returns once the server
// has it. Progress posts, chunks and the result go out one at a time, in order; once the handler
// has returned, Progress drops v and returns ErrJobEnded, so progress never follows the result.
// On a Job not run by a Worker or RunLocal, Progress does nothing.
func (j *Job) Progress(v any) error {
	if j.run == nil {
		return nil
	}
	return j.run.progress(v)
}

// poster delivers one job's posts: to the server, or to the local test mode.
type poster interface {
	// post sends body; kind is "stream", "progress" or "done". isStream is the job-done flag.
	post(ctx context.Context, job *Job, kind string, body []byte, isStream bool) error
}

// jobRun is the state of one running job. Its mutex is the one ordered path of the job's posts:
// chunks, progress and the result go out one at a time, and ended (set when the handler returns)
// closes it for everything but the result.
type jobRun struct {
	job    *Job
	ctx    context.Context
	cancel context.CancelCauseFunc
	out    poster

	ended atomic.Bool

	mu       sync.Mutex
	streamed bool
	chunks   []json.RawMessage // kept in aggregate mode
	keep     bool              // aggregate the chunks
}

func (r *jobRun) stream(chunk any) error {
	c, err := marshal(chunk)
	if err != nil {
		return fmt.Errorf("stream chunk of job %s: %w", r.job.ID, err)
	}
	body := object(member{"output", c})
	if len(body) > MaxChunkSize {
		return fmt.Errorf("stream chunk of job %s: %d bytes, over %d: %w", r.job.ID, len(body), MaxChunkSize, ErrTooLarge)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended.Load() || r.ctx.Err() != nil {
		return ErrJobEnded
	}
	if err := r.out.post(r.ctx, r.job, "stream", body, false); err != nil {
		return err
	}
	r.streamed = true
	if r.keep {
		r.chunks = append(r.chunks, c)
	}
	return nil
}

func (r *jobRun) progress(v any) error {
	o, err := marshal(v)
	if err != nil {
		return fmt.Errorf("progress of job %s: %w", r.job.ID, err)
	}
	body := object(member{"status", json.RawMessage(`"IN_PROGRESS"`)}, member{"output", o})
	if r.ended.Load() {
		return ErrJobEnded
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended.Load() || r.ctx.Err() != nil {
		return ErrJobEnded
	}
	return r.out.post(r.ctx, r.job, "progress", body, false)
}

// marshal encodes v as JSON the way runpod-python does (json.dumps with ensure_ascii=False): no
// HTML escaping.
func marshal(v any) (json.RawMessage, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

type member struct {
	key   string
	value json.RawMessage
}

// object builds a JSON object with members in the given order.
func object(ms ...member) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range ms {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(m.key)
		b.Write(k)
		b.WriteByte(':')
		b.Write(m.value)
	}
	b.WriteByte('}')
	return b.Bytes()
}
