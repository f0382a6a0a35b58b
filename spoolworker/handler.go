package spoolworker

import (
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"reflect"
	"runtime/debug"
)

// Handler runs jobs. Handle's results become the job's result, as runpod-python turns a handler's
// return value into a job-done post:
//
//   - a value v: {"output": v} (nil gives {"output": null}); COMPLETED.
//   - a non-nil error: {"error": err.Error()}; FAILED. The value is ignored.
//   - a Result (or *Result): its Output as above, plus "error" when Result.Error is set (FAILED,
//     with the output kept) and "stopPod": true when Result.RefreshWorker is set.
//   - an iterator, iter.Seq[T] or iter.Seq2[T, error] for any T (also as a Result's Output):
//     each value is posted to job-stream as a chunk, in order, then the result is posted with
//     isStream=true: {"output": [every chunk]} with Config.AggregateStream, else {"output": []}.
//     A non-nil error from an iter.Seq2 ends the stream and the job FAILED with that message.
//   - a panic (in Handle or in the iterator) is recovered: the job FAILED with runpod-python's
//     exception shape, {"error": "<JSON text>"} whose JSON holds error_type, error_message,
//     error_traceback (the goroutine's stack), hostname, worker_id and runpod_version (the SDK's
//     Version). The worker goes on with its next job.
//
// ctx ends when the server stops the job (context.Cause is ErrJobStopped) or its execution
// timeout runs out (ErrExecutionTimeout); nothing is posted for such a job, whatever Handle
// returns. ctx does not end when the worker's Run context does: Run waits for running jobs.
type Handler interface {
	Handle(ctx context.Context, job *Job) (any, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, job *Job) (any, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, job *Job) (any, error) { return f(ctx, job) }

// Result is a handler's return value when the output alone does not say everything.
type Result struct {
	// Output is the job's output (any JSON value, or an iterator to stream).
	Output any
	// Error, when not empty, makes the job FAILED with this message while keeping Output, as
	// runpod-python does for a returned dict with an "error" key.
	Error string
	// RefreshWorker asks the platform to restart this worker once the job is done: the result
	// carries "stopPod": true (runpod-python's refresh_worker return flag). The worker keeps
	// taking jobs until it is restarted, as runpod-python's does.
	RefreshWorker bool
}

// outcome is what a job's result post says.
type outcome struct {
	output    json.RawMessage // nil: no "output" member
	err       *string
	stopPod   bool
	isStream  bool
	panicked  bool
	streamErr error // a chunk could not be delivered
}

func (o outcome) body() []byte {
	var ms []member
	if o.output != nil {
		ms = append(ms, member{"output", o.output})
	}
	if o.err != nil {
		e, _ := marshal(*o.err)
		ms = append(ms, member{"error", e})
	}
	if o.stopPod {
		ms = append(ms, member{"stopPod", json.RawMessage("true")})
	}
	return object(ms...)
}

func failed(msg string) outcome { return outcome{err: &msg} }

// identity is what a panic report names.
type identity struct {
	hostname, workerID string
}

type panicReport struct {
	ErrorType      string `json:"error_type"`
	ErrorMessage   string `json:"error_message"`
	ErrorTraceback string `json:"error_traceback"`
	Hostname       string `json:"hostname"`
	WorkerID       string `json:"worker_id"`
	RunpodVersion  string `json:"runpod_version"`
}

// invoke runs h on run's job and turns whatever happens (a value, an error, an iterator, a
// panic) into the outcome to post.
func invoke(h Handler, run *jobRun, id identity) (out outcome) {
	returned := false
	defer func() {
		if returned {
			return
		}
		v := recover()
		msg := fmt.Sprint(v)
		if e, ok := v.(error); ok {
			msg = e.Error()
		}
		if v == nil { // runtime.Goexit
			msg = "the handler called runtime.Goexit"
		}
		rep, _ := marshal(panicReport{
			ErrorType: fmt.Sprintf("%T", v), ErrorMessage: msg, ErrorTraceback: string(debug.Stack()),
			Hostname: id.hostname, WorkerID: id.workerID, RunpodVersion: Version,
		})
		out = failed(string(rep))
		out.panicked = true
		run.mu.Lock()
		out.isStream = run.streamed
		run.mu.Unlock()
	}()
	v, err := h.Handle(run.ctx, run.job)
	out = resolve(run, v, err)
	returned = true
	return out
}

func resolve(run *jobRun, v any, err error) outcome {
	var res Result
	switch r := v.(type) {
	case Result:
		res = r
	case *Result:
		if r != nil {
			res = *r
		}
	default:
		res.Output = v
	}
	var out outcome
	switch {
	case err != nil:
		out = failed(err.Error())
	default:
		if seq, ok := asIterator(res.Output); ok {
			out = streamAll(run, seq)
		} else if o, merr := marshal(res.Output); merr != nil {
			out = failed(fmt.Sprintf("the handler's output cannot be encoded as JSON: %v", merr))
		} else {
			out.output = o
		}
		if res.Error != "" && out.err == nil {
			e := res.Error
			out.err = &e
		}
	}
	out.stopPod = res.RefreshWorker
	run.mu.Lock()
	out.isStream = out.isStream || run.streamed
	run.mu.Unlock()
	return out
}

// streamAll streams every value of seq, then gives the final outcome of a streaming job.
func streamAll(run *jobRun, seq iter.Seq2[any, error]) outcome {
	out := outcome{isStream: true}
	run.mu.Lock()
	run.streamed = true // the result goes with isStream=true, even after an early failure
	run.mu.Unlock()
	for v, err := range seq {
		if err != nil {
			return failed(err.Error())
		}
		if serr := run.stream(v); serr != nil {
			if run.ctx.Err() != nil {
				return out // stopped: nothing is posted anyway
			}
			msg := fmt.Sprintf("stream chunk could not be delivered: %v", serr)
			o := failed(msg)
			o.streamErr = serr
			return o
		}
		if run.ctx.Err() != nil {
			return out
		}
	}
	run.mu.Lock()
	defer run.mu.Unlock()
	if run.keep {
		out.output = array(run.chunks)
	} else {
		out.output = json.RawMessage("[]")
	}
	return out
}

func array(elems []json.RawMessage) json.RawMessage {
	b := []byte{'['}
	for i, e := range elems {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e...)
	}
	return append(b, ']')
}

var errorType = reflect.TypeFor[error]()

// asIterator reports whether v is an iter.Seq[T] or iter.Seq2[T, error] (any function of those
// shapes) and adapts it.
func asIterator(v any) (iter.Seq2[any, error], bool) {
	switch s := v.(type) {
	case nil:
		return nil, false
	case iter.Seq2[any, error]:
		return s, true
	case iter.Seq[any]:
		return func(yield func(any, error) bool) {
			for x := range s {
				if !yield(x, nil) {
					return
				}
			}
		}, true
	}
	rv := reflect.ValueOf(v)
	t := rv.Type()
	if t.Kind() != reflect.Func || t.NumIn() != 1 || t.NumOut() != 0 || rv.IsNil() {
		return nil, false
	}
	y := t.In(0)
	if y.Kind() != reflect.Func || y.NumOut() != 1 || y.Out(0).Kind() != reflect.Bool {
		return nil, false
	}
	switch {
	case y.NumIn() == 1:
		return func(yield func(any, error) bool) {
			for x := range rv.Seq() {
				if !yield(x.Interface(), nil) {
					return
				}
			}
		}, true
	case y.NumIn() == 2 && y.In(1) == errorType:
		return func(yield func(any, error) bool) {
			for x, e := range rv.Seq2() {
				var err error
				if !e.IsNil() {
					err = e.Interface().(error)
				}
				if !yield(x.Interface(), err) {
					return
				}
			}
		}, true
	}
	return nil, false
}
