package wire

import (
	"encoding/json"

	"github.com/spool-run/spool"
)

// Job is the RunPod job object (docs/client-api.md §3) of j, as /status, /status-sync, a terminal
// /runsync and /cancel answer it: id and status always; delayTime (ms) once a worker took the job;
// executionTime (ms) once it also finished; output whenever the job has one, byte for byte (so
// false, 0, "", [] and null are kept); error when the job FAILED or carries a message; workerId
// once assigned; retries when positive. Absent fields are omitted. s3Config never appears.
func Job(j *spool.Job) json.RawMessage { return JobObject(j).Bytes() }

// JobObject is Job as an open Object, so callers can add members (the admin view does).
func JobObject(j *spool.Job) *Object {
	o := NewObject().String("id", j.ID).String("status", string(j.State))
	if d, ok := j.DelayTime(); ok {
		o.Int("delayTime", d.Milliseconds())
	}
	if d, ok := j.ExecutionTime(); ok {
		o.Int("executionTime", d.Milliseconds())
	}
	// A running job shows its latest progress as its output, as RunPod does.
	out := j.Output
	if j.State == spool.StateInProgress {
		out = j.Progress
	}
	if out != nil {
		o.Raw("output", out)
	}
	if j.State == spool.StateFailed || j.Error != "" {
		o.String("error", j.Error)
	}
	if j.WorkerID != "" {
		o.String("workerId", j.WorkerID)
	}
	if j.Retries > 0 {
		o.Int("retries", int64(j.Retries))
	}
	return o
}

// JobStatus is the short answer for a job that is not finished: {"id","status"} plus delayTime
// once a worker took it (/run, /retry, and a /runsync whose wait ran out).
func JobStatus(j *spool.Job) json.RawMessage {
	o := NewObject().String("id", j.ID).String("status", string(j.State))
	if d, ok := j.DelayTime(); ok {
		o.Int("delayTime", d.Milliseconds())
	}
	return o.Bytes()
}

// Chunk is one element of a /stream answer: {"output": <chunk>}.
func Chunk(c spool.Chunk) json.RawMessage { return NewObject().Raw("output", c.Data).Bytes() }

// Stream is the /stream answer: {"id","status","delayTime"?,"stream":[{"output":...},...],
// "error"?}; stream is never null.
func Stream(j *spool.Job, chunks []spool.Chunk) json.RawMessage {
	o := NewObject().String("id", j.ID).String("status", string(j.State))
	if d, ok := j.DelayTime(); ok {
		o.Int("delayTime", d.Milliseconds())
	}
	elems := make([][]byte, len(chunks))
	for i, c := range chunks {
		elems[i] = Chunk(c)
	}
	o.Raw("stream", Array(elems))
	if j.State == spool.StateFailed || j.Error != "" {
		o.String("error", j.Error)
	}
	return o.Bytes()
}
