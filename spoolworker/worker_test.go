package spoolworker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/spoolworker"
)

// echo returns the job's input as its output.
var echo = spoolworker.HandlerFunc(func(ctx context.Context, job *spoolworker.Job) (any, error) {
	return job.Input, nil
})

// TestEcho runs one job end to end and checks the wire: URLs and parameters, the raw key, the
// headers runpod-python sends, and a body encoded like json.dumps(ensure_ascii=False).
func TestEcho(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOpts{})
	r := s.startWorker(s.config(), spoolworker.HandlerFunc(func(ctx context.Context, job *spoolworker.Job) (any, error) {
		var in struct{ Msg string }
		if err := job.Decode(&in); err != nil {
			return nil, err
		}
		return map[string]string{"echo": in.Msg}, nil
	}))
	id := s.submit(`{"input":{"msg":"héllo <b>&"}}`)
	st := s.final(id)
	require.Equal(t, "COMPLETED", st.Status)
	require.JSONEq(t, `{"echo":"héllo <b>&"}`, string(st.Output))
	r.stop(t)

	wid := r.w.ID()
	take := s.proxy.waitFor(func(r record) bool { return r.is("job-take", "") })
	require.Equal(t, http.MethodGet, take.Method)
	require.Equal(t, "/v2/ep/job-take/"+wid, take.Path)
	require.Equal(t, "&job_in_progress=0&include=attempt", take.Query)
	require.Equal(t, s.workerKey, take.Header.Get("Authorization"), "the raw key, no Bearer")

	done := s.proxy.filter(func(r record) bool { return r.is("job-done", id) })
	require.Len(t, done, 1)
	require.Equal(t, http.MethodPost, done[0].Method)
	require.Equal(t, "/v2/ep/job-done/"+wid+"/"+id, done[0].Path)
	require.Equal(t, "&isStream=false&attempt=1", done[0].Query)
	require.Equal(t, `{"output":{"echo":"héllo <b>&"}}`, string(done[0].Body), "UTF-8 and <>& unescaped, like ensure_ascii=False")
	require.Equal(t, "application/x-www-form-urlencoded", done[0].Header.Get("Content-Type"))
	require.Equal(t, "utf-8", done[0].Header.Get("charset"))
	require.Equal(t, id, done[0].Header.Get("X-Request-ID"))
	require.Equal(t, s.workerKey, done[0].Header.Get("Authorization"))
	require.Equal(t, 200, done[0].Status)

	stop := s.proxy.waitFor(func(r record) bool { return r.is("job-stop", "") })
	require.Equal(t, "/v2/ep/job-stop/"+wid, stop.Path)
	require.Empty(t, stop.Query)
}

// TestJobFields checks what a handler sees: the typed input, s3Config, the policy and Spool's
// attempt; and that an input that does not decode fails the job with the decode error.
func TestJobFields(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOpts{})
	type input struct {
		Name  string `json:"name"`
		Count int    `json:"count"`
	}
	type seen struct {
		in, generic input
		s3          *spoolworker.S3Config
		hasS3       bool
		job         spoolworker.Job
	}
	seenc := make(chan seen, 2)
	s.startWorker(s.config(), spoolworker.HandlerFunc(func(ctx context.Context, job *spoolworker.Job) (any, error) {
		var v seen
		if err := job.Decode(&v.in); err != nil {
			return nil, err
		}
		g, err := spoolworker.DecodeInput[input](job)
		if err != nil {
			return nil, err
		}
		v.generic = g
		v.s3, v.hasS3 = job.S3Config()
		v.job = *job
		seenc <- v
		return v.in.Count * 2, nil
	}))

	id := s.submit(`{"input":{"name":"Ada","count":21},
		"s3Config":{"accessId":"AK","accessSecret":"SK","bucketName":"b","endpointUrl":"http://127.0.0.1:9/s3","objectPath":"o/p"},
		"policy":{"executionTimeout":60000,"ttl":20000,"lowPriority":true}}`)
	v := recv(t, seenc)
	require.Equal(t, input{"Ada", 21}, v.in)
	require.Equal(t, v.in, v.generic)
	require.True(t, v.hasS3)
	require.Equal(t, spoolworker.S3Config{AccessID: "AK", AccessSecret: "SK", BucketName: "b",
		EndpointURL: "http://127.0.0.1:9/s3", ObjectPath: "o/p"}, *v.s3)
	require.NotContains(t, fmt.Sprintf("%v %+v %#v %s", *v.s3, *v.s3, *v.s3, v.s3), "SK", "printing an S3Config hides it")
	require.Equal(t, id, v.job.ID)
	require.Equal(t, spoolworker.Policy{ExecutionTimeout: 60000, TTL: 20000, LowPriority: true}, v.job.Policy)
	require.Equal(t, 1, v.job.Attempt)
	require.Contains(t, string(v.job.Raw), `"s3Config"`)
	st := s.final(id)
	require.Equal(t, "COMPLETED", st.Status)
	require.JSONEq(t, `42`, string(st.Output))

	id = s.submit(`{"input":{"name":"Bob"}}`)
	v = recv(t, seenc)
	require.False(t, v.hasS3)
	require.Equal(t, "COMPLETED", s.final(id).Status)

	id = s.submit(`{"input":["not","an","object"]}`)
	st = s.final(id)
	require.Equal(t, "FAILED", st.Status)
	require.Contains(t, st.Error, "decode input of job "+id)
}

// TestProgress shows progress while the job runs, and proves it never follows the result: a
// goroutine posting progress as fast as it can while the handler returns gets ErrJobEnded, and
// the server saw every progress post before the result and none after it.
func TestProgress(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOpts{})
	posted := make(chan *spoolworker.Job, 1)
	release := make(chan struct{})
	spamErr := make(chan error, 1)
	r := s.startWorker(s.config(), spoolworker.HandlerFunc(func(ctx context.Context, job *spoolworker.Job) (any, error) {
		if err := job.Progress(map[string]int{"pct": 50}); err != nil {
			return nil, err
		}
		posted <- job
		<-release
		ok := make(chan struct{})
		go func() {
			n := 0
			for {
				err := job.Progress(map[string]int{"spam": n})
				if err != nil {
					spamErr <- err
					return
				}
				if n++; n == 3 {
					close(ok)
				}
			}
		}()
		<-ok
		return "final", nil
	}))

	id := s.submit(`{"input":{}}`)
	job := recv(t, posted)
	st := s.status(id)
	require.Equal(t, "IN_PROGRESS", st.Status)
	require.JSONEq(t, `{"pct":50}`, string(st.Output), "progress is visible as the output while running")
	close(release)

	st = s.final(id)
	require.Equal(t, "COMPLETED", st.Status)
	require.JSONEq(t, `"final"`, string(st.Output))
	require.ErrorIs(t, recv(t, spamErr), spoolworker.ErrJobEnded)
	require.ErrorIs(t, job.Progress("late"), spoolworker.ErrJobEnded, "progress after the handler returned is dropped")
	r.stop(t)

	posts := s.proxy.filter(func(r record) bool { return r.is("job-done", id) })
	require.GreaterOrEqual(t, len(posts), 5)
	last := posts[len(posts)-1]
	require.Equal(t, `{"output":"final"}`, string(last.Body), "the result is the last post")
	for _, p := range posts[:len(posts)-1] {
		require.True(t, p.progress(), "only progress before the result: %s", p.Body)
		require.Equal(t, "&isStream=false&attempt=1", p.Query)
		require.Equal(t, 200, p.Status)
	}
	require.Equal(t, `{"status":"IN_PROGRESS","output":{"pct":50}}`, string(posts[0].Body))
}

// TestStreaming streams an iterator's values in order to job-stream, visible to /stream while
// the job runs, then posts the result with isStream=true: [] or, in aggregate mode, every chunk.
// Typed iterators work too.
func TestStreaming(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		aggregate bool
		iterator  func(gate <-chan struct{}) any
		output    string
	}{
		{"seq2 any", false, func(gate <-chan struct{}) any {
			return iter.Seq2[any, error](func(yield func(any, error) bool) {
				if !yield("a", nil) {
					return
				}
				<-gate
				_ = yield(map[string]int{"b": 1}, nil) && yield("c", nil)
			})
		}, `[]`},
		{"typed seq aggregate", true, func(gate <-chan struct{}) any {
			return iter.Seq[string](func(yield func(string) bool) {
				if !yield("a") {
					return
				}
				<-gate
				_ = yield(`{"b":1}`) && yield("c")
			})
		}, `["a","{\"b\":1}","c"]`},
		{"result wrapping an iterator", true, func(gate <-chan struct{}) any {
			return spoolworker.Result{Output: func(yield func(int, error) bool) {
				if !yield(1, nil) {
					return
				}
				<-gate
				_ = yield(2, nil) && yield(3, nil)
			}}
		}, `[1,2,3]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, serverOpts{})
			cfg := s.config()
			cfg.AggregateStream = tc.aggregate
			gate := make(chan struct{})
			r := s.startWorker(cfg, spoolworker.HandlerFunc(func(ctx context.Context, job *spoolworker.Job) (any, error) {
				return tc.iterator(gate), nil
			}))
			id := s.submit(`{"input":{}}`)
			s.proxy.waitFor(func(r record) bool { return r.is("job-stream", id) && r.Status == 200 })
			st := s.stream(id)
			require.Equal(t, "IN_PROGRESS", st.Status)
			require.Len(t, st.Stream, 1, "the first chunk is readable while the job runs")
			close(gate)
			final := s.final(id)
			require.Equal(t, "COMPLETED", final.Status)
			require.JSONEq(t, tc.output, string(final.Output))
			r.stop(t)

			chunks := s.proxy.filter(func(r record) bool { return r.is("job-stream", id) })
			require.Len(t, chunks, 3)
			var got []string
			for _, c := range chunks {
				require.Equal(t, "&isStream=false&attempt=1", c.Query)
				got = append(got, string(c.Body))
			}
			var want []string
			var outs []json.RawMessage
			if tc.aggregate {
				require.NoError(t, json.Unmarshal([]byte(tc.output), &outs))
			} else {
				outs = []json.RawMessage{json.RawMessage(`"a"`), json.RawMessage(`{"b":1}`), json.RawMessage(`"c"`)}
			}
			for _, o := range outs {
				want = append(want, `{"output":`+string(o)+`}`)
			}
			require.Equal(t, want, got, "chunks in order")
			done := s.proxy.filter(func(r record) bool { return r.is("job-done", id) })
			require.Len(t, done, 1)
			require.Equal(t, "&isStream=true&attempt=1", done[0].Query)
		})
	}
}

// TestStreamErrorsAndJobStream: an iter.Seq2 error fails the job (isStream=true); Job.Stream
// posts chunks from a handler that returns a plain value; a chunk over 1 MB is refused unsent.
func TestStreamErrorsAndJobStream(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOpts{})
	r := s.startWorker(s.config(), spoolworker.HandlerFunc(func(ctx context.Context, job *spoolworker.Job) (any, error) {
		var in struct{ Mode string }
		_ = job.Decode(&in)
		switch in.Mode {
		case "seq-error":
			return iter.Seq2[any, error](func(yield func(any, error) bool) {
				_ = yield("x", nil) && yield(nil, errors.New("stream broke"))
			}), nil
		default:
			if err := job.Stream("p1"); err != nil {
				return nil, err
			}
			if err := job.Stream(strings.Repeat("x", spoolworker.MaxChunkSize)); !errors.Is(err, spoolworker.ErrTooLarge) {
				return nil, fmt.Errorf("want ErrTooLarge, got %v", err)
			}
			if err := job.Stream(map[string]string{"p": "2"}); err != nil {
				return nil, err
			}
			return "done", nil
		}
	}))
	bad := s.submit(`{"input":{"mode":"seq-error"}}`)
	st := s.final(bad)
	require.Equal(t, "FAILED", st.Status)
	require.Equal(t, "stream broke", st.Error)

	explicit := s.submit(`{"input":{"mode":"job-stream"}}`)
	st = s.final(explicit)
	require.Equal(t, "COMPLETED", st.Status)
	require.JSONEq(t, `"done"`, string(st.Output))
	chunks := s.stream(explicit).Stream
	require.Len(t, chunks, 2)
	require.JSONEq(t, `"p1"`, string(chunks[0].Output))
	require.JSONEq(t, `{"p":"2"}`, string(chunks[1].Output))
	r.stop(t)

	done := s.proxy.filter(func(r record) bool { return r.is("job-done", bad) })
	require.Len(t, done, 1)
	require.Equal(t, "&isStream=true&attempt=1", done[0].Query)
	require.Equal(t, `{"error":"stream broke"}`, string(done[0].Body))
	done = s.proxy.filter(func(r record) bool { return r.is("job-done", explicit) })
	require.Len(t, done, 1)
	require.Equal(t, "&isStream=true&attempt=1", done[0].Query, "a job that streamed posts its result with isStream=true")
	require.Len(t, s.proxy.filter(func(r record) bool { return r.is("job-stream", explicit) }), 2, "the oversized chunk was never sent")
}

// TestErrors: a returned error, a Result with an error and an output, and an output that cannot
// be encoded all end FAILED with their message.
func TestErrors(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOpts{})
	r := s.startWorker(s.config(), spoolworker.HandlerFunc(func(ctx context.Context, job *spoolworker.Job) (any, error) {
		var in struct{ Mode string }
		_ = job.Decode(&in)
		switch in.Mode {
		case "error":
			return map[string]int{"ignored": 1}, errors.New("boom: bad input")
		case "result":
			return spoolworker.Result{Output: map[string]int{"partial": 1}, Error: "custom failure"}, nil
		default:
			return make(chan int), nil
		}
	}))
	for _, tc := range []struct{ mode, err, output string }{
		{"error", "boom: bad input", ""},
		{"result", "custom failure", `{"partial":1}`},
		{"unencodable", "the handler's output cannot be encoded as JSON: json: unsupported type: chan int", ""},
	} {
		id := s.submit(`{"input":{"mode":"` + tc.mode + `"}}`)
		st := s.final(id)
		require.Equal(t, "FAILED", st.Status, tc.mode)
		require.Equal(t, tc.err, st.Error, tc.mode)
		posts := s.proxy.filter(func(r record) bool { return r.is("job-done", id) })
		require.Len(t, posts, 1)
		want := map[string]any{"error": tc.err}
		if tc.output != "" {
			require.JSONEq(t, tc.output, string(st.Output), "the output is kept with the error")
			want["output"] = json.RawMessage(tc.output)
		} else {
			require.Empty(t, st.Output)
		}
		b, err := json.Marshal(want)
		require.NoError(t, err)
		require.JSONEq(t, string(b), string(posts[0].Body))
	}
	r.stop(t)
}

// TestPanic: a panicking handler (or iterator) fails its job with runpod-python's exception JSON
// carrying the Go stack, and the worker goes on serving.
func TestPanic(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOpts{})
	cfg := s.config()
	cfg.Hostname = "host-1"
	r := s.startWorker(cfg, spoolworker.HandlerFunc(func(ctx context.Context, job *spoolworker.Job) (any, error) {
		var in struct{ Mode string }
		_ = job.Decode(&in)
		switch in.Mode {
		case "panic":
			panic(errors.New("kaboom"))
		case "iterator":
			return iter.Seq[any](func(yield func(any) bool) {
				yield(1)
				panic("iterator kaboom")
			}), nil
		}
		return "still serving", nil
	}))
	type report struct {
		ErrorType      string `json:"error_type"`
		ErrorMessage   string `json:"error_message"`
		ErrorTraceback string `json:"error_traceback"`
		Hostname       string `json:"hostname"`
		WorkerID       string `json:"worker_id"`
		RunpodVersion  string `json:"runpod_version"`
	}
	for _, tc := range []struct{ mode, typ, msg string }{
		{"panic", "*errors.errorString", "kaboom"},
		{"iterator", "string", "iterator kaboom"},
	} {
		id := s.submit(`{"input":{"mode":"` + tc.mode + `"}}`)
		st := s.final(id)
		require.Equal(t, "FAILED", st.Status)
		var rep report
		require.NoError(t, json.Unmarshal([]byte(st.Error), &rep), "the error is JSON text: %s", st.Error)
		require.Equal(t, tc.typ, rep.ErrorType)
		require.Equal(t, tc.msg, rep.ErrorMessage)
		require.Contains(t, rep.ErrorTraceback, "spoolworker_test.TestPanic", "the Go stack")
		require.Contains(t, rep.ErrorTraceback, "panic(")
		require.Equal(t, "host-1", rep.Hostname)
		require.Equal(t, r.w.ID(), rep.WorkerID)
		require.Equal(t, spoolworker.Version, rep.RunpodVersion)

		next := s.submit(`{"input":{"mode":"ok"}}`)
		st = s.final(next)
		require.Equal(t, "COMPLETED", st.Status, "the worker keeps running after a panic")
		require.JSONEq(t, `"still serving"`, string(st.Output))
	}
	r.stop(t)
}

// TestRefreshWorker: a Result with RefreshWorker reaches the server as stopPod (the worker keeps
// serving, as runpod-python's does); Config.RefreshWorker flags every result and makes Run return
// after the first job.
func TestRefreshWorker(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOpts{})
	r := s.startWorker(s.config(), spoolworker.HandlerFunc(func(ctx context.Context, job *spoolworker.Job) (any, error) {
		var in struct{ Refresh bool }
		_ = job.Decode(&in)
		return &spoolworker.Result{Output: map[string]int{"value": 1}, RefreshWorker: in.Refresh}, nil
	}))
	id := s.submit(`{"input":{"refresh":true}}`)
	st := s.final(id)
	require.Equal(t, "COMPLETED", st.Status)
	require.JSONEq(t, `{"value":1}`, string(st.Output))
	require.True(t, s.job(id).StopPod)
	posts := s.proxy.filter(func(r record) bool { return r.is("job-done", id) })
	require.Equal(t, `{"output":{"value":1},"stopPod":true}`, string(posts[0].Body))

	next := s.submit(`{"input":{"refresh":false}}`)
	require.Equal(t, "COMPLETED", s.final(next).Status)
	require.False(t, s.job(next).StopPod)
	r.stop(t)

	cfg := s.config()
	cfg.RefreshWorker = true
	first := s.submit(`{"input":1}`)
	second := s.submit(`{"input":2}`)
	r = s.startWorker(cfg, echo)
	select {
	case err := <-r.done:
		require.NoError(t, err, "Run returns by itself after the first job")
		close(r.done)
	case <-time.After(waitLimit):
		t.Fatal("Run did not return after the first job")
	}
	require.Equal(t, "COMPLETED", s.final(first).Status)
	require.True(t, s.job(first).StopPod)
	require.Equal(t, "IN_QUEUE", s.status(second).Status)
}

// TestCancelWhileRunning: /cancel reaches the running handler's ctx through job-stop (cause
// ErrJobStopped), and nothing is posted for the job, whatever the handler returns.
func TestCancelWhileRunning(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOpts{})
	started := make(chan struct{}, 1)
	type ended struct{ err, cause, progress error }
	endedc := make(chan ended, 1)
	r := s.startWorker(s.config(), spoolworker.HandlerFunc(func(ctx context.Context, job *spoolworker.Job) (any, error) {
		started <- struct{}{}
		<-ctx.Done()
		endedc <- ended{ctx.Err(), context.Cause(ctx), job.Progress("after the stop")}
		return "a result nobody wants", nil
	}))
	id := s.submit(`{"input":{}}`)
	recv(t, started)
	s.call(http.MethodPost, "/v2/ep/cancel/"+id, "", nil)
	e := recv(t, endedc)
	require.ErrorIs(t, e.err, context.Canceled)
	require.ErrorIs(t, e.cause, spoolworker.ErrJobStopped)
	require.ErrorIs(t, e.progress, spoolworker.ErrJobEnded)
	r.stop(t) // drained: anything the worker would post has been posted

	require.Equal(t, "CANCELLED", s.final(id).Status)
	require.Empty(t, s.proxy.filter(func(r record) bool { return r.is("job-done", id) }), "nothing is posted for a stopped job")
	require.NotEmpty(t, s.proxy.filter(func(r record) bool { return r.is("job-stop", "") && r.Status == http.StatusOK }),
		"the stop came through the job-stop channel")
}

// TestExecutionTimeout: the policy's executionTimeout is the handler ctx's deadline (cause
// ErrExecutionTimeout) and nothing is posted when it runs out. The engine runs on a fake clock,
// so the only timeout at work is the SDK's own; the server then times the job out itself.
func TestExecutionTimeout(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOpts{fakeClock: true})
	type ended struct {
		err, cause  error
		deadline    time.Time
		hasDeadline bool
		started     time.Time
	}
	endedc := make(chan ended, 1)
	r := s.startWorker(s.config(), spoolworker.HandlerFunc(func(ctx context.Context, job *spoolworker.Job) (any, error) {
		e := ended{started: time.Now()}
		e.deadline, e.hasDeadline = ctx.Deadline()
		<-ctx.Done()
		e.err, e.cause = ctx.Err(), context.Cause(ctx)
		endedc <- e
		return "too late", nil
	}))
	id := s.submit(`{"input":{},"policy":{"executionTimeout":5001}}`) // the least the server allows
	e := recv(t, endedc)
	require.True(t, e.hasDeadline)
	require.WithinDuration(t, e.started.Add(5001*time.Millisecond), e.deadline, time.Second)
	require.ErrorIs(t, e.err, context.DeadlineExceeded)
	require.ErrorIs(t, e.cause, spoolworker.ErrExecutionTimeout)
	r.stop(t)
	require.Empty(t, s.proxy.filter(func(r record) bool { return r.is("job-done", id) }), "nothing is posted for a timed-out job")

	require.Equal(t, "IN_PROGRESS", s.status(id).Status)
	s.fake.Advance(6 * time.Second)
	_, err := s.eng.Sweep(s.ctx)
	require.NoError(t, err)
	require.Equal(t, "TIMED_OUT", s.status(id).Status)
}

// gated is a handler whose jobs block until the test releases them (or the test ends, so that a
// failed test does not leave its worker waiting).
type gated struct {
	started chan string
	release chan struct{}
	once    sync.Once
}

func (s *server) newGated() *gated {
	g := &gated{started: make(chan string, 16), release: make(chan struct{})}
	s.unblock = append(s.unblock, g.open)
	return g
}

func (g *gated) open() { g.once.Do(func() { close(g.release) }) }

func (g *gated) Handle(ctx context.Context, job *spoolworker.Job) (any, error) {
	g.started <- job.ID
	<-g.release
	return job.Input, nil
}

// heldBy returns the jobs the server sees IN_PROGRESS on the worker.
func (s *server) heldBy(worker string) []string {
	s.t.Helper()
	ws, err := s.fleet.Workers(s.ctx, "ep")
	require.NoError(s.t, err)
	for _, w := range ws {
		if w.ID == worker {
			return w.Jobs
		}
	}
	return nil
}

// TestConcurrencyBatchTake: with Concurrency 3 and free slots, the worker takes a batch
// (job-take-batch, batch_size=3) and the server sees 3 jobs IN_PROGRESS on it at once; a single
// free slot uses job-take with job_in_progress=1.
func TestConcurrencyBatchTake(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOpts{})
	ids := []string{s.submit(`{"input":1}`), s.submit(`{"input":2}`), s.submit(`{"input":3}`)}
	g := s.newGated()
	cfg := s.config()
	cfg.Concurrency = 3
	r := s.startWorker(cfg, g)
	got := []string{recv(t, g.started), recv(t, g.started), recv(t, g.started)}
	require.ElementsMatch(t, ids, got)
	require.ElementsMatch(t, ids, s.heldBy(r.w.ID()), "three jobs IN_PROGRESS on the worker at once")
	require.ElementsMatch(t, ids, r.w.InFlight())

	batch := s.proxy.waitFor(func(r record) bool { return r.is("job-take-batch", "") })
	require.Equal(t, "/v2/ep/job-take-batch/"+r.w.ID(), batch.Path)
	require.Equal(t, "&batch_size=3&job_in_progress=0&include=attempt", batch.Query)

	g.open()
	for _, id := range ids {
		require.Equal(t, "COMPLETED", s.final(id).Status)
	}
	fourth := s.submit(`{"input":4}`)
	require.Equal(t, fourth, recv(t, g.started))
	require.Equal(t, "COMPLETED", s.final(fourth).Status)
	r.stop(t)
}

// TestSetConcurrency raises and lowers the concurrency of a running worker.
func TestSetConcurrency(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOpts{})
	ids := []string{s.submit(`{"input":1}`), s.submit(`{"input":2}`), s.submit(`{"input":3}`)}
	g := s.newGated()
	r := s.startWorker(s.config(), g)
	first := recv(t, g.started)
	require.Equal(t, []string{first}, s.heldBy(r.w.ID()), "one at a time")
	take := s.proxy.waitFor(func(r record) bool { return r.is("job-take", "") })
	require.Equal(t, "&job_in_progress=0&include=attempt", take.Query)

	r.w.SetConcurrency(3)
	require.Equal(t, 3, r.w.Concurrency())
	recv(t, g.started)
	recv(t, g.started)
	require.ElementsMatch(t, ids, s.heldBy(r.w.ID()), "two more taken at run time")
	batch := s.proxy.waitFor(func(r record) bool { return r.is("job-take-batch", "") })
	require.Equal(t, "&batch_size=2&job_in_progress=1&include=attempt", batch.Query)

	r.w.SetConcurrency(0)
	require.Equal(t, 1, r.w.Concurrency(), "at least 1")
	g.open()
	for _, id := range ids {
		require.Equal(t, "COMPLETED", s.final(id).Status)
	}
	// Back to one slot: single takes only from now on.
	more := []string{s.submit(`{"input":4}`), s.submit(`{"input":5}`)}
	for _, id := range more {
		require.Equal(t, "COMPLETED", s.final(id).Status)
	}
	r.stop(t)
	takes := s.proxy.filter(func(r record) bool { return r.is("job-take-batch", "") })
	require.Len(t, takes, 1, "no batch take after lowering the concurrency to 1")
}

// TestResultPostRetries puts faults in front of the real server's job-done: a 500 or a dropped
// connection is retried and the job completes; three 500s exhaust the attempts and the result is
// dropped; a 409 is not retried.
func TestResultPostRetries(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		status   int // 0: drop the connection
		times    int
		forward  bool
		attempts int
		final    string
	}{
		{"500 once", 500, 1, false, 2, "COMPLETED"},
		{"connection dropped once", 0, 1, false, 2, "COMPLETED"},
		// The server applied the result but the worker never heard: the repeat must get a 200.
		{"answer lost once", 0, 1, true, 2, "COMPLETED"},
		{"503 three times", 503, 3, false, 3, "IN_PROGRESS"},
		{"409", 409, 1, false, 1, "IN_PROGRESS"},
		{"413", 413, 1, false, 1, "IN_PROGRESS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, serverOpts{})
			s.proxy.injectFault(fault{match: func(r record) bool { return r.is("job-done", "") },
				status: tc.status, times: tc.times, forward: tc.forward})
			r := s.startWorker(s.config(), echo)
			id := s.submit(`{"input":{"x":1}}`)
			if tc.final == "COMPLETED" {
				require.Equal(t, "COMPLETED", s.final(id).Status)
			} else {
				s.proxy.waitFor(func(r record) bool { return r.is("job-done", id) && r.Status != 0 && r.Injected })
			}
			r.stop(t) // drained: every attempt has been made
			posts := s.proxy.filter(func(r record) bool { return r.is("job-done", id) })
			require.Len(t, posts, tc.attempts)
			for _, p := range posts {
				require.Equal(t, `{"output":{"x":1}}`, string(p.Body), "the same body every attempt")
			}
			if tc.forward {
				require.Equal(t, http.StatusOK, posts[0].Upstream)
				require.Equal(t, http.StatusOK, posts[1].Status, "a repeated result is accepted")
			}
			require.Equal(t, tc.final, s.status(id).Status)
		})
	}
}

// TestDrain: when Run's ctx ends, the outstanding long-poll is cancelled, no new take starts,
// the running job finishes and is posted, then Run returns.
func TestDrain(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOpts{})
	g := s.newGated()
	cfg := s.config()
	cfg.Concurrency = 2
	r := s.startWorker(cfg, g)
	id := s.submit(`{"input":"drain me"}`)
	recv(t, g.started)
	// The second slot long-polls (the server holds it up to 30 s).
	poll := s.proxy.waitFor(func(r record) bool {
		return r.is("job-take", "") && r.Query == "&job_in_progress=1&include=attempt"
	})
	require.Zero(t, poll.Status, "in flight")
	r.cancel()
	s.proxy.waitFor(func(r record) bool {
		return r.is("job-take", "") && r.Query == "&job_in_progress=1&include=attempt" && r.Status != 0
	})
	takes := len(s.proxy.filter(func(r record) bool { return r.is("job-take", "") || r.is("job-take-batch", "") }))
	select {
	case <-r.done:
		t.Fatal("Run returned while a job was running")
	default:
	}
	queued := s.submit(`{"input":"not for this worker"}`)
	g.open()
	select {
	case err := <-r.done:
		require.NoError(t, err)
		close(r.done)
	case <-time.After(waitLimit):
		t.Fatal("Run did not return after draining")
	}
	st := s.final(id)
	require.Equal(t, "COMPLETED", st.Status)
	require.JSONEq(t, `"drain me"`, string(st.Output))
	require.Len(t, s.proxy.filter(func(r record) bool { return r.is("job-take", "") || r.is("job-take-batch", "") }), takes,
		"no take after the ctx ended")
	require.Empty(t, g.started, "the job submitted while draining never reached the handler")
	require.Empty(t, s.proxy.filter(func(r record) bool { return strings.HasSuffix(r.Path, "/"+queued) }))
}

// TestPing: pings carry the held job ids (comma-separated, encoded as requests does) and the SDK
// version; the server records the worker with that version; an idle ping leaves job_id out.
func TestPing(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOpts{})
	g := s.newGated()
	cfg := s.config()
	cfg.Concurrency = 2
	cfg.PingInterval = 50 * time.Millisecond
	r := s.startWorker(cfg, g)
	ids := []string{s.submit(`{"input":1}`), s.submit(`{"input":2}`)}
	recv(t, g.started)
	recv(t, g.started)
	ping := s.proxy.waitFor(func(r record) bool {
		q, _ := url.ParseQuery(r.Query)
		return r.is("ping", "") && len(strings.Split(q.Get("job_id"), ",")) == 2
	})
	require.Equal(t, "/v2/ep/ping/"+r.w.ID(), ping.Path)
	sorted := append([]string(nil), ids...)
	if sorted[0] > sorted[1] {
		sorted[0], sorted[1] = sorted[1], sorted[0]
	}
	require.Equal(t, "job_id="+sorted[0]+"%2C"+sorted[1]+"&runpod_version="+url.QueryEscape(spoolworker.Version), ping.Query)
	require.Equal(t, s.workerKey, ping.Header.Get("Authorization"))
	require.Equal(t, http.StatusOK, s.proxy.waitFor(func(x record) bool { return x.is("ping", "") && x.Query == ping.Query && x.Status != 0 }).Status)

	ws, err := s.fleet.Workers(s.ctx, "ep")
	require.NoError(t, err)
	require.Len(t, ws, 1)
	require.Equal(t, spoolworker.Version, ws[0].Version)

	g.open()
	for _, id := range ids {
		require.Equal(t, "COMPLETED", s.final(id).Status)
	}
	s.proxy.waitForAfter(len(s.proxy.all()), func(x record) bool {
		return x.is("ping", "") && x.Query == "runpod_version="+url.QueryEscape(spoolworker.Version)
	})
	r.stop(t)
}

// TestTakeAnswers: answers runpod-python treats as "no job" (400, a 200 that is not JSON, JSON
// null) are survived, and a 429 holds the next take back for its Retry-After.
func TestTakeAnswers(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOpts{})
	take := func(r record) bool { return r.is("job-take", "") }
	s.proxy.injectFault(fault{match: take, status: 400, times: 1})
	s.proxy.injectFault(fault{match: take, status: 200, times: 1, header: http.Header{"Content-Type": {"text/plain"}}, body: `{"id":"x","input":1}`})
	s.proxy.injectFault(fault{match: take, status: 200, times: 1, header: http.Header{"Content-Type": {"application/json; charset=utf-8"}}, body: `null`})
	s.proxy.injectFault(fault{match: take, status: 429, times: 1, header: http.Header{"Retry-After": {"1"}}})
	r := s.startWorker(s.config(), echo)
	id := s.submit(`{"input":"after the faults"}`)
	require.Equal(t, "COMPLETED", s.final(id).Status)
	r.stop(t)
	takes := s.proxy.filter(take)
	require.GreaterOrEqual(t, len(takes), 5)
	for i, want := range []int{400, 200, 200, 429} {
		require.True(t, takes[i].Injected)
		require.Equal(t, want, takes[i].Status)
	}
	require.GreaterOrEqual(t, takes[4].At.Sub(takes[3].At), time.Second, "the 429's Retry-After is honoured")
	require.Empty(t, s.proxy.filter(func(r record) bool { return r.is("job-done", "x") }), "the non-JSON answer was ignored")
}

// recordingOffloader stands in for s3upload.Offloader: it keeps what it was given and returns a
// marker output.
type recordingOffloader struct {
	mu   sync.Mutex
	jobs map[string]string
}

func (o *recordingOffloader) Offload(_ context.Context, job *spoolworker.Job, output json.RawMessage) (json.RawMessage, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.jobs[job.ID] = string(output)
	return json.RawMessage(`{"offloaded":true}`), nil
}

// TestOffloader: with an Offloader, takes ask for the endpoint's threshold (?include=offload) and
// a result over it, of a job with an s3Config, is handed to the Offloader and what it returns is
// posted; a small result, or one of a job without an s3Config, is posted as it is.
func TestOffloader(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOpts{})
	ep := spool.NewEndpoint("ep")
	ep.OutputOffloadBytes = 100
	_, _, err := s.eng.PutEndpoint(s.ctx, ep)
	require.NoError(t, err)
	off := &recordingOffloader{jobs: map[string]string{}}
	cfg := s.config()
	cfg.Offloader = off
	r := s.startWorker(cfg, spoolworker.HandlerFunc(func(ctx context.Context, job *spoolworker.Job) (any, error) {
		var in struct{ N int }
		if err := job.Decode(&in); err != nil {
			return nil, err
		}
		return strings.Repeat("x", in.N), nil
	}))
	const s3 = `"s3Config":{"accessId":"a","accessSecret":"b","bucketName":"c","endpointUrl":"http://127.0.0.1:9"}`
	big := s.submit(`{"input":{"n":500},` + s3 + `}`)
	small := s.submit(`{"input":{"n":5},` + s3 + `}`)
	noBucket := s.submit(`{"input":{"n":500}}`)
	require.JSONEq(t, `{"offloaded":true}`, string(s.final(big).Output))
	require.JSONEq(t, `"xxxxx"`, string(s.final(small).Output))
	require.JSONEq(t, `"`+strings.Repeat("x", 500)+`"`, string(s.final(noBucket).Output))
	r.stop(t)
	require.Equal(t, map[string]string{big: `"` + strings.Repeat("x", 500) + `"`}, off.jobs)
	take := s.proxy.waitFor(func(r record) bool { return r.is("job-take", "") })
	require.Equal(t, "&job_in_progress=0&include=attempt&include=offload", take.Query)

	_, err = spoolworker.New(spoolworker.Config{TakeURL: "http://x/a", DoneURL: "http://x/b", OutputOffloadBytes: 10}, echo)
	require.ErrorContains(t, err, "needs an Offloader")
}
