package spoolclient

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spool-run/spool"
)

// Status is a job's state as the API reports it.
type Status string

// The six job states. IN_QUEUE and IN_PROGRESS are the only ones that are not terminal.
const (
	StatusInQueue    Status = "IN_QUEUE"
	StatusInProgress Status = "IN_PROGRESS"
	StatusCompleted  Status = "COMPLETED"
	StatusFailed     Status = "FAILED"
	StatusCancelled  Status = "CANCELLED"
	StatusTimedOut   Status = "TIMED_OUT"
)

// Terminal reports whether s is an end state: COMPLETED, FAILED, CANCELLED or TIMED_OUT.
func (s Status) Terminal() bool {
	switch s {
	case StatusCompleted, StatusFailed, StatusCancelled, StatusTimedOut:
		return true
	}
	return false
}

// Request is a job submission (/run and /runsync).
type Request struct {
	// Input is the job's input, handed to the worker as job["input"]. It is encoded with
	// encoding/json (without HTML escaping); a json.RawMessage is sent byte for byte. Required:
	// the server refuses a missing or null input.
	Input any
	// Webhook, when set, is POSTed the job object when the job ends.
	Webhook string
	// Policy overrides the endpoint's timeouts and priority for this job; nil keeps the defaults.
	Policy *Policy
	// S3Config is handed to the worker only; the server never returns it.
	S3Config *S3Config
}

// Policy is a job's policy. Zero values keep the endpoint's settings.
type Policy struct {
	// ExecutionTimeout bounds the run time once a worker has taken the job (sent in ms; Spool and
	// RunPod require more than 5 s).
	ExecutionTimeout time.Duration
	// TTL bounds the job's life (sent in ms; at least 10 s). On Spool it counts queue time only: a
	// job not taken by a worker within it ends TIMED_OUT.
	TTL time.Duration
	// LowPriority jobs are handed out only when no normal job of the endpoint is waiting, and never
	// make the endpoint scale up.
	LowPriority bool
}

// S3Config is the bucket a worker may upload results to: the same type as the server's and
// spoolworker's, whose String, GoString and LogValue methods hide every value.
type S3Config = spool.S3Config

// encode builds the JSON body of a submission. Input, when a json.RawMessage, is kept byte for
// byte (encoding/json would compact and re-escape it).
func (r *Request) encode() ([]byte, error) {
	var input []byte
	switch v := r.Input.(type) {
	case json.RawMessage:
		if !json.Valid(v) {
			return nil, fmt.Errorf("spoolclient: Request.Input is a json.RawMessage that is not valid JSON")
		}
		input = bytes.TrimSpace(v)
	default:
		var err error
		if input, err = marshal(v); err != nil {
			return nil, fmt.Errorf("spoolclient: encode Request.Input: %w", err)
		}
	}
	var b bytes.Buffer
	b.WriteString(`{"input":`)
	b.Write(input)
	if r.Webhook != "" {
		hook, _ := marshal(r.Webhook)
		b.WriteString(`,"webhook":`)
		b.Write(hook)
	}
	if p := r.Policy; p != nil {
		type wirePolicy struct {
			ExecutionTimeout int64 `json:"executionTimeout,omitempty"`
			LowPriority      bool  `json:"lowPriority,omitempty"`
			TTL              int64 `json:"ttl,omitempty"`
		}
		pol, _ := marshal(wirePolicy{p.ExecutionTimeout.Milliseconds(), p.LowPriority, p.TTL.Milliseconds()})
		if string(pol) != "{}" {
			b.WriteString(`,"policy":`)
			b.Write(pol)
		}
	}
	if r.S3Config != nil {
		s3, _ := marshal(r.S3Config)
		b.WriteString(`,"s3Config":`)
		b.Write(s3)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// marshal is json.Marshal without HTML escaping and without the trailing newline.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte{'\n'}), nil
}

// Job is the job object the API returns (/run, /runsync, /status, /status-sync, /cancel, /retry).
// Fields the server did not send are zero. It marshals back to the same wire shape, with times in
// milliseconds and zero fields left out.
type Job struct {
	// ID is the job's id, opaque (Spool's /runsync ids start with "sync-").
	ID string
	// Status is the job's state.
	Status Status
	// DelayTime is how long the job waited in the queue before a worker took it; sent once taken.
	DelayTime time.Duration
	// ExecutionTime is how long the worker ran it; sent once it ended.
	ExecutionTime time.Duration
	// Output is the job's output byte for byte: the result once COMPLETED, or the latest progress
	// value while IN_PROGRESS. Nil when the server sent none.
	Output json.RawMessage
	// Error is the job's error message, set when it FAILED (and by Spool for TIMED_OUT).
	Error string
	// WorkerID is the worker that took the job.
	WorkerID string
	// Retries counts the times the job went back to the queue (lost workers, /retry).
	Retries int
}

// wireJob is the JSON shape of Job (docs/client-api.md §3).
type wireJob struct {
	ID            string          `json:"id"`
	Status        Status          `json:"status"`
	DelayTime     int64           `json:"delayTime,omitempty"`
	ExecutionTime int64           `json:"executionTime,omitempty"`
	Output        json.RawMessage `json:"output,omitempty"`
	Error         string          `json:"error,omitempty"`
	WorkerID      string          `json:"workerId,omitempty"`
	Retries       int             `json:"retries,omitempty"`
}

// UnmarshalJSON reads the wire shape: times in milliseconds, the output kept raw.
func (j *Job) UnmarshalJSON(b []byte) error {
	var w wireJob
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*j = Job{
		ID: w.ID, Status: w.Status,
		DelayTime:     time.Duration(w.DelayTime) * time.Millisecond,
		ExecutionTime: time.Duration(w.ExecutionTime) * time.Millisecond,
		Output:        w.Output, Error: w.Error, WorkerID: w.WorkerID, Retries: w.Retries,
	}
	if string(j.Output) == "null" {
		j.Output = nil
	}
	return nil
}

// MarshalJSON writes the wire shape (what the server sent, less any zero field).
func (j Job) MarshalJSON() ([]byte, error) {
	return marshal(wireJob{
		ID: j.ID, Status: j.Status,
		DelayTime: j.DelayTime.Milliseconds(), ExecutionTime: j.ExecutionTime.Milliseconds(),
		Output: j.Output, Error: j.Error, WorkerID: j.WorkerID, Retries: j.Retries,
	})
}

// Terminal reports whether the job has ended (COMPLETED, FAILED, CANCELLED or TIMED_OUT).
func (j *Job) Terminal() bool { return j.Status.Terminal() }

// Err returns a *JobError when the job ended FAILED, CANCELLED or TIMED_OUT, and nil otherwise
// (COMPLETED, or not finished).
func (j *Job) Err() error {
	switch j.Status {
	case StatusFailed, StatusCancelled, StatusTimedOut:
		return &JobError{ID: j.ID, Status: j.Status, Message: j.Error}
	}
	return nil
}

// DecodeOutput unmarshals the job's output into v (as json.Unmarshal does). It fails when the
// server sent no output.
func (j *Job) DecodeOutput(v any) error {
	if len(j.Output) == 0 {
		return fmt.Errorf("spoolclient: decode output of job %s (%s): %w", j.ID, j.Status, errEmptyOutput)
	}
	if err := json.Unmarshal(j.Output, v); err != nil {
		return fmt.Errorf("spoolclient: decode output of job %s: %w", j.ID, err)
	}
	return nil
}

// Chunk is one element of a job's streamed output.
type Chunk struct {
	// Output is what the worker streamed, byte for byte.
	Output json.RawMessage `json:"output"`
}

// Decode unmarshals the chunk's output into v.
func (c Chunk) Decode(v any) error {
	if err := json.Unmarshal(c.Output, v); err != nil {
		return fmt.Errorf("spoolclient: decode stream chunk: %w", err)
	}
	return nil
}

// Health is an endpoint's /health answer.
type Health struct {
	Jobs    HealthJobs    `json:"jobs"`
	Workers HealthWorkers `json:"workers"`
}

// HealthJobs counts an endpoint's jobs by state (on Spool: the jobs still retained).
type HealthJobs struct {
	Completed  int `json:"completed"`
	Failed     int `json:"failed"`
	InProgress int `json:"inProgress"`
	InQueue    int `json:"inQueue"`
	Retried    int `json:"retried"`
}

// HealthWorkers counts an endpoint's workers by state.
type HealthWorkers struct {
	Idle         int `json:"idle"`
	Initializing int `json:"initializing"`
	Ready        int `json:"ready"`
	Running      int `json:"running"`
	Throttled    int `json:"throttled"`
	Unhealthy    int `json:"unhealthy"`
}

// streamAnswer is a /stream answer.
type streamAnswer struct {
	ID     string  `json:"id"`
	Status Status  `json:"status"`
	Stream []Chunk `json:"stream"`
	Error  string  `json:"error"`
}
