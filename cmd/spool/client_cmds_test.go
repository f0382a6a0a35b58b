package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool/internal/spooltest"
	"github.com/spool-run/spool/spoolclient"
)

// TestCLIRunWaitsAndExitStatus: `spool run --sync` against the real server prints the finished job
// as one line of JSON (stdout piped: no status line) and exits 0 only when it COMPLETED; a job that
// ends FAILED, CANCELLED or TIMED_OUT exits 1 with one line on stderr.
func TestCLIRunWaitsAndExitStatus(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		args   []string
		end    func(e *cliEnv, id string)
		status string
		code   int
		stderr string
	}{
		{"completed", nil, func(e *cliEnv, id string) {
			e.post("job-done", "w1", id, `{"output":{"echo":"<hi>"}}`)
		}, "COMPLETED", 0, ""},
		{"failed", nil, func(e *cliEnv, id string) {
			e.post("job-done", "w1", id, `{"error":"boom\n  at line 3"}`)
		}, "FAILED", 1, "ended FAILED: boom …"},
		{"cancelled", nil, func(e *cliEnv, id string) {
			r := e.spool(e.env(), "", "cancel", "ep", id)
			require.Equal(e.t, 0, r.code, r.stderr)
			require.Equal(e.t, "CANCELLED", jobJSON(e.t, r.stdout)["status"])
		}, "CANCELLED", 1, "ended CANCELLED"},
		{"timed out", []string{"--execution-timeout", "6s"}, func(e *cliEnv, id string) {
			e.fake.Advance(7 * time.Second)
			res, err := e.eng.Sweep(e.ctx)
			require.NoError(e.t, err)
			require.Equal(e.t, 1, res.TimedOut)
		}, "TIMED_OUT", 1, "ended TIMED_OUT: execution timeout of 6000 ms exceeded"},
	} {
		for _, sync := range []bool{true, false} {
			t.Run(tc.name+map[bool]string{true: " --sync", false: " --wait"}[sync], func(t *testing.T) {
				t.Parallel()
				e := newCLIEnv(t, true)
				args := append([]string{"run", "ep", `{"n":1}`}, tc.args...)
				if sync {
					args = append(args, "--sync")
				} else {
					args = append(args, "--wait", "10m")
				}
				p := e.start(e.env(), "", args...)
				id := e.takeID("w1")
				require.Equal(t, sync, strings.HasPrefix(id, "sync-"), id)
				tc.end(e, id)
				r := p.wait()
				require.Equal(t, tc.code, r.code, "stderr %q", r.stderr)
				job := jobJSON(t, r.stdout)
				require.Equal(t, id, job["id"])
				require.Equal(t, tc.status, job["status"])
				if tc.code == 0 {
					require.Empty(t, r.stderr)
					require.Equal(t, map[string]any{"echo": "<hi>"}, job["output"])
					require.Contains(t, r.stdout, `"<hi>"`, "no HTML escaping")
					return
				}
				oneErrorLine(t, r.stderr, "job "+id+" "+tc.stderr)
			})
		}
	}
}

// TestCLIRunSubmitsInput: without --sync/--wait, run prints {"id","status"} and exits 0; the input
// comes from the argument, @file or stdin byte for byte, and the policy flags reach the worker.
func TestCLIRunSubmitsInput(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, true)
	file := filepath.Join(t.TempDir(), "in.json")
	require.NoError(t, os.WriteFile(file, []byte("\n{ \"from\": \"file\", \"n\": 1.50 }\n"), 0o600))
	for _, tc := range []struct {
		name   string
		args   []string
		stdin  string
		input  string
		policy string
	}{
		{"literal", []string{`[1, "two"]`}, "", `[1, "two"]`, ""},
		{"no input", nil, "", `{}`, ""},
		{"file", []string{"@" + file}, "", `{ "from": "file", "n": 1.50 }`, ""},
		{"stdin", []string{"-"}, `  {"from":"stdin"}  `, `{"from":"stdin"}`, ""},
		{"policy", []string{`"x"`, "--ttl", "30s", "--execution-timeout", "60000", "--low-priority", "--webhook", "https://example.invalid/h?a=1&b=2"},
			"", `"x"`, `{"executionTimeout":60000,"lowPriority":true,"ttl":30000}`},
	} {
		r := e.spool(e.env(), tc.stdin, append([]string{"run", "ep"}, tc.args...)...)
		require.Equal(t, 0, r.code, "%s: %s", tc.name, r.stderr)
		require.Empty(t, r.stderr)
		job := jobJSON(t, r.stdout)
		require.Len(t, job, 2, tc.name)
		require.Equal(t, "IN_QUEUE", job["status"])
		p := e.take("w1")
		require.Equal(t, `"`+job["id"].(string)+`"`, string(p["id"]))
		require.Equal(t, tc.input, string(p["input"]), tc.name)
		if tc.policy != "" {
			require.JSONEq(t, tc.policy, string(p["policy"]))
			require.JSONEq(t, `"https://example.invalid/h?a=1&b=2"`, string(p["webhook"]))
		}
	}
}

// TestCLIBadInput: bad input, arguments, settings and refused requests give exactly one line on
// stderr, nothing on stdout, and a non-zero status: 2 for what the user typed, 1 for what the
// server refused.
func TestCLIBadInput(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, true)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	require.NoError(t, os.WriteFile(bad, []byte(`{"a": }`), 0o600))
	badCfg := filepath.Join(dir, "client.yaml")
	require.NoError(t, os.WriteFile(badCfg, []byte("url: http://x\nkee: typo\n"), 0o600))
	for _, tc := range []struct {
		name  string
		env   []string
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"malformed JSON", e.env(), "", []string{"run", "ep", `{"a":`}, 2, "input is not valid JSON"},
		{"malformed JSON file", e.env(), "", []string{"run", "ep", "@" + bad}, 2, bad + " is not valid JSON: invalid character '}'"},
		{"malformed stdin", e.env(), "nope", []string{"run", "ep", "-"}, 2, "stdin is not valid JSON"},
		{"empty stdin", e.env(), "", []string{"run", "ep", "-"}, 2, "stdin is empty"},
		{"null input", e.env(), "", []string{"run", "ep", "null"}, 2, "must not be null"},
		{"missing file", e.env(), "", []string{"run", "ep", "@" + filepath.Join(dir, "none.json")}, 2, "no such file"},
		{"unknown endpoint", e.env(), "", []string{"run", "nope", "{}"}, 1, `endpoint "nope" not found (HTTP 404)`},
		{"unknown job", e.env(), "", []string{"status", "ep", "no-such-job"}, 1, "job no-such-job not found (HTTP 404)"},
		{"missing key", []string{"HOME=" + dir, "SPOOL_URL=" + e.srv.URL}, "", []string{"run", "ep", "{}"}, 2, "no API key: set SPOOL_API_KEY"},
		{"wrong key", e.env("SPOOL_API_KEY=wrong"), "", []string{"health", "ep"}, 1, "unknown API key (HTTP 401)"},
		{"bad config file", e.env("SPOOL_CLIENT_CONFIG=" + badCfg), "", []string{"health", "ep"}, 2, "field kee not found"},
		{"missing config file", e.env("SPOOL_CLIENT_CONFIG=" + filepath.Join(dir, "none.yaml")), "", []string{"health", "ep"}, 2, "client config"},
		{"bad URL", e.env("SPOOL_URL=localhost:8080"), "", []string{"health", "ep"}, 2, "invalid server URL"},
		{"unreachable server", e.env(), "", []string{"health", "ep", "--url", "http://127.0.0.1:1"}, 1, "connection refused"},
		{"unknown flag", e.env(), "", []string{"run", "ep", "--bogus"}, 2, "unknown flag: --bogus"},
		{"bad duration", e.env(), "", []string{"run", "ep", "--wait", "soon"}, 2, `invalid argument "soon" for "--wait"`},
		{"zero duration", e.env(), "", []string{"run", "ep", "--ttl", "0"}, 2, "must be positive"},
		{"policy refused", e.env(), "", []string{"run", "ep", "--ttl", "1s"}, 1, "policy.ttl"},
		{"bad status line", e.env(), "", []string{"run", "ep", "--sync", "--status-line", "maybe"}, 2, "--status-line must be"},
		{"too many args", e.env(), "", []string{"run", "ep", "{}", "{}"}, 2, "usage: spool run ENDPOINT"},
		{"missing job", e.env(), "", []string{"cancel", "ep"}, 2, "usage: spool cancel ENDPOINT JOB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := e.spool(tc.env, tc.stdin, tc.args...)
			require.Equal(t, tc.code, r.code, "stderr %q", r.stderr)
			require.Empty(t, r.stdout)
			oneErrorLine(t, r.stderr, tc.want)
		})
	}
}

// TestCLIConfigSources: the config file is read from ~/.config/spool/client.yaml or
// $SPOOL_CLIENT_CONFIG; the environment overrides it; flags override both.
func TestCLIConfigSources(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, true)
	home := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(home, ".config", "spool"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(home, ".config", "spool", "client.yaml"),
		[]byte("url: "+e.srv.URL+"\nkey: "+cliAdminSecret+"\n"), 0o600))
	other := filepath.Join(t.TempDir(), "other.yaml")
	require.NoError(t, os.WriteFile(other, []byte("url: http://127.0.0.1:1\nkey: wrong\n"), 0o600))

	for _, tc := range []struct {
		name string
		env  []string
		args []string
		code int
		want string
	}{
		{"default file", []string{"HOME=" + home}, nil, 0, ""},
		{"named file", []string{"HOME=" + home, "SPOOL_CLIENT_CONFIG=" + other}, nil, 1, "connection refused"},
		{"env over file", []string{"HOME=" + home, "SPOOL_CLIENT_CONFIG=" + other, "SPOOL_URL=" + e.srv.URL}, nil, 1, "unknown API key"},
		{"env key over file", []string{"HOME=" + home, "SPOOL_CLIENT_CONFIG=" + other, "SPOOL_URL=" + e.srv.URL,
			"SPOOL_API_KEY=" + cliAdminSecret}, nil, 0, ""},
		{"flags over env", []string{"HOME=" + home, "SPOOL_URL=http://127.0.0.1:1", "SPOOL_API_KEY=wrong"},
			[]string{"--url", e.srv.URL + "/v2/", "--key", cliAdminSecret}, 0, ""},
		{"flag key over env", []string{"HOME=" + home, "SPOOL_API_KEY=" + cliAdminSecret}, []string{"--key", "wrong"}, 1, "HTTP 401"},
	} {
		r := e.spool(tc.env, "", append([]string{"health", "ep"}, tc.args...)...)
		require.Equal(t, tc.code, r.code, "%s: %q", tc.name, r.stderr)
		if tc.code == 0 {
			require.Contains(t, r.stdout, `"jobs":{`, tc.name)
		} else {
			oneErrorLine(t, r.stderr, tc.want)
		}
	}
}

// TestCLIStream: `spool stream` prints each chunk as it arrives, one JSON value per line, and exits
// when the job ends: 0 for COMPLETED, 1 otherwise.
func TestCLIStream(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		end  func(e *cliEnv, id string)
		code int
		want string
	}{
		{"completed", func(e *cliEnv, id string) { e.post("job-done", "w1", id, `{"output":[]}`) }, 0, ""},
		{"failed", func(e *cliEnv, id string) { e.post("job-done", "w1", id, `{"error":"bad"}`) }, 1, "ended FAILED: bad"},
		{"cancelled", func(e *cliEnv, id string) {
			code, body := e.http("POST", "/v2/ep/cancel/"+id, "")
			require.Equal(e.t, 200, code, body)
		}, 1, "ended CANCELLED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newCLIEnv(t, true)
			r := e.spool(e.env(), "", "run", "ep", `{}`)
			require.Equal(t, 0, r.code, r.stderr)
			id := jobJSON(t, r.stdout)["id"].(string)
			require.Equal(t, id, e.takeID("w1"))
			p := e.start(e.env(), "", "stream", "ep", id)
			e.post("job-stream", "w1", id, `{"output":"a"}`)
			p.stdout.waitFor(t, "\"a\"\n") // printed while the job runs
			e.post("job-stream", "w1", id, `{"output":{"b": [1, 2]}}`)
			p.stdout.waitFor(t, "{\"b\":[1,2]}\n")
			e.post("job-stream", "w1", id, `{"output":3}`)
			tc.end(e, id)
			res := p.wait()
			require.Equal(t, tc.code, res.code, res.stderr)
			require.Equal(t, "\"a\"\n{\"b\":[1,2]}\n3\n", res.stdout)
			if tc.code == 0 {
				require.Empty(t, res.stderr)
			} else {
				oneErrorLine(t, res.stderr, "job "+id+" "+tc.want)
			}
		})
	}
}

// TestCLIJobCommands: status, cancel, retry, purge and health print the server's answers as JSON.
func TestCLIJobCommands(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, true)
	run := func() string {
		r := e.spool(e.env(), "", "run", "ep")
		require.Equal(t, 0, r.code, r.stderr)
		return jobJSON(t, r.stdout)["id"].(string)
	}
	ok := func(args ...string) map[string]any {
		r := e.spool(e.env(), "", args...)
		require.Equal(t, 0, r.code, "%v: %s", args, r.stderr)
		require.Empty(t, r.stderr)
		return jobJSON(t, r.stdout)
	}
	id := run()
	require.Equal(t, map[string]any{"id": id, "status": "IN_QUEUE"}, ok("status", "ep", id))
	require.Equal(t, id, e.takeID("w1"))
	e.post("job-done", "w1", id, `{"error":"flaky"}`)
	// status prints an ended job that did not complete and exits 1, as the help says.
	ended := func(want string) {
		r := e.spool(e.env(), "", "status", "ep", id)
		require.Equal(t, 1, r.code, r.stderr)
		st := jobJSON(t, r.stdout)
		require.Equal(t, want, st["status"])
		oneErrorLine(t, r.stderr, "job "+id+" ended "+want)
		if want == "FAILED" {
			require.Equal(t, "flaky", st["error"])
			require.Equal(t, "w1", st["workerId"])
		}
	}
	ended("FAILED")
	require.Equal(t, map[string]any{"id": id, "status": "IN_QUEUE"}, ok("retry", "ep", id))
	require.Equal(t, "CANCELLED", ok("cancel", "ep", id)["status"], "cancel succeeded: exit 0")
	ended("CANCELLED")
	r := e.spool(e.env(), "", "retry", "ep", id)
	require.Equal(t, 1, r.code)
	oneErrorLine(t, r.stderr, "(HTTP 400)")

	run()
	run()
	require.Equal(t, map[string]any{"removed": float64(2), "status": "completed"}, ok("purge", "ep"))
	h := ok("health", "ep")
	require.Equal(t, map[string]any{"completed": float64(0), "failed": float64(0), "inProgress": float64(0),
		"inQueue": float64(0), "retried": float64(1)}, h["jobs"])
	require.Contains(t, h, "workers")
}

// TestCLIWaitRunsOut: on the wall clock, a run whose --wait ends before the job does prints the job
// as it is and exits 3; the job goes on.
func TestCLIWaitRunsOut(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, false)
	for _, mode := range []string{"--sync", "--low-priority"} { // with and without /runsync
		start := time.Now()
		r := e.spool(e.env(), "", "run", "ep", "{}", mode, "--wait", "1200")
		require.Equal(t, 3, r.code, r.stderr)
		require.GreaterOrEqual(t, time.Since(start), 1200*time.Millisecond)
		job := jobJSON(t, r.stdout)
		require.Equal(t, "IN_QUEUE", job["status"])
		oneErrorLine(t, r.stderr, "job "+job["id"].(string)+" is still IN_QUEUE after --wait 1.2s")
		require.Equal(t, mode == "--sync", strings.HasPrefix(job["id"].(string), "sync-"))
	}
	// It went on: a worker can still take it.
	e.takeID("w1")
}

// TestCLIStatusLine: with a status line (forced here, since the test's stdout is not a terminal),
// stderr shows the state, queue delay, elapsed time and latest progress while the job runs, and is
// erased before the JSON result goes to stdout.
func TestCLIStatusLine(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, false)
	p := e.start(e.env(), "", "run", "ep", `{"n":1}`, "--sync", "--status-line", "always")
	id := e.takeID("w1")
	p.stderr.waitFor(t, "IN_PROGRESS  elapsed ")
	p.stderr.waitFor(t, "  job "+id[:20])
	e.post("job-done", "w1", id, `{"status":"IN_PROGRESS","output":{"pct":40}}`)
	p.stderr.waitFor(t, `progress {"pct":40}`)
	e.post("job-done", "w1", id, `{"output":"done"}`)
	r := p.wait()
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "done", jobJSON(t, r.stdout)["output"], "stdout has the JSON only")
	require.Contains(t, r.stderr, "\r\x1b[K")
	require.Contains(t, r.stderr, "  queue ")
	require.Contains(t, r.stderr, "  elapsed ")
	require.True(t, strings.HasSuffix(r.stderr, "\r\x1b[K"), "the line is erased at the end: %q", r.stderr)
	require.NotContains(t, r.stderr, "\n")
}

// TestCLIStatusLineFitsAndSaysWhy: while the job is queued the line says why and where (with an
// admin key, which may read the admin API), and every redraw fits the terminal's width ($COLUMNS
// here, since stderr is a pipe), so that "\r" can redraw it in place.
func TestCLIStatusLineFitsAndSaysWhy(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, false)
	frames := func(stderr string) []string {
		return strings.Split(strings.TrimPrefix(stderr, "\r\x1b[K"), "\r\x1b[K")
	}
	for _, cols := range []int{100, 40} {
		r := e.spool(e.env(fmt.Sprintf("COLUMNS=%d", cols)), "", "run", "ep", "{}", "--wait", "1500", "--status-line", "always")
		require.Equal(t, 3, r.code, r.stderr)
		line := r.stderr[:strings.LastIndex(r.stderr, "\r\x1b[K")] // the error message follows
		require.NotContains(t, line, "\n", "no line is left behind")
		for _, f := range frames(line) {
			require.LessOrEqual(t, utf8.RuneCountInString(f), cols-1, "%d columns: %q", cols, f)
		}
		if cols == 100 {
			require.Contains(t, r.stderr, "  waiting: no_workers_yet, position 1", "the first job waits first")
		}
	}
	// A client key may not read the admin API: the line goes on without a reason, and nothing fails.
	r := e.spool(e.env("COLUMNS=200", "SPOOL_API_KEY="+e.clientKey), "", "run", "ep", "{}", "--wait", "1200", "--status-line", "always")
	require.Equal(t, 3, r.code, r.stderr)
	require.Contains(t, r.stderr, "IN_QUEUE  elapsed ")
	require.NotContains(t, r.stderr, "waiting:")
}

// TestCLIInterrupt: SIGINT while waiting exits 130 and names the job, which goes on.
func TestCLIInterrupt(t *testing.T) {
	t.Parallel()
	e := newCLIEnv(t, true)
	p := e.start(e.env(), "", "run", "ep", "{}", "--wait", "10m")
	id := e.takeID("w1")
	spooltest.WaitTimers(t, e.fake, 2) // the sweeper's and run's /status-sync long-poll: run is waiting now
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGINT))
	r := p.wait()
	require.Equal(t, 130, r.code, r.stderr)
	require.Contains(t, r.stderr, "spool: interrupted; job "+id+" goes on (spool status ep "+id+")")
}

// TestCLICompletion: cobra's completion command is there and works.
func TestCLICompletion(t *testing.T) {
	t.Parallel()
	e := &cliEnv{t: t}
	env := []string{"HOME=" + t.TempDir()}
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		r := e.spool(env, "", "completion", shell)
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stdout, "spool", shell)
	}
	r := e.spool(env, "", "--help")
	require.Equal(t, 0, r.code)
	for _, c := range []string{"completion", "run", "status", "stream", "cancel", "retry", "purge", "health"} {
		require.Contains(t, r.stdout, "\n  "+c+" ", c)
	}
	r = e.spool(env, "", "__complete", "ru")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.stdout, "run\t")
	r = e.spool(env, "", "__complete", "run", "--st")
	require.Contains(t, r.stdout, "--status-line")

	// ENDPOINT completes from the server's endpoints (an admin key may list them), the job
	// argument completes nothing, and a server that cannot be reached offers nothing without failing.
	srv := newCLIEnv(t, false)
	completions := func(env []string, args ...string) []string {
		r := srv.spool(env, "", append([]string{"__complete"}, args...)...)
		require.Equal(t, 0, r.code, r.stderr)
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		require.Equal(t, ":4", lines[len(lines)-1], "no file completion: %q", r.stdout)
		return lines[:len(lines)-1]
	}
	require.Equal(t, []string{"ep", "other"}, completions(srv.env(), "status", ""))
	require.Equal(t, []string{"other"}, completions(srv.env(), "run", "o"))
	require.Empty(t, completions(srv.env(), "status", "ep", ""))
	require.Empty(t, completions(srv.env("SPOOL_API_KEY="+srv.clientKey), "status", ""))
	require.Empty(t, completions(srv.env("SPOOL_URL=http://127.0.0.1:1"), "status", ""))
}

// TestReadInput, TestMsDuration and TestLiveLineText cover the helpers in process.
func TestReadInput(t *testing.T) {
	t.Parallel()
	in, err := readInput("", false, nil)
	require.NoError(t, err)
	require.Equal(t, `{}`, string(in))
	in, err = readInput("-", true, strings.NewReader("\n 42 \n"))
	require.NoError(t, err)
	require.Equal(t, `42`, string(in))
	_, err = readInput(`{"a":1}x`, true, nil)
	require.ErrorContains(t, err, "input is not valid JSON")
	var ee *exitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, exitUsage, ee.code)
}

func TestMsDuration(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{"5000": 5 * time.Second, "1m30s": 90 * time.Second, " 250ms ": 250 * time.Millisecond} {
		var d msDuration
		require.NoError(t, d.Set(in), in)
		require.Equal(t, want, d.d)
		require.True(t, d.set)
	}
	for _, bad := range []string{"0", "-5", "-1s", "soon", "", "1.5"} {
		var d msDuration
		require.Error(t, d.Set(bad), bad)
	}
}

func TestLiveLineText(t *testing.T) {
	t.Parallel()
	l := newLiveLine(nil, nil)
	require.Equal(t, "| submitting  elapsed 300ms", l.text(300*time.Millisecond, 0))
	l.job = &spoolclient.Job{ID: "0123456789abcdef", Status: spoolclient.StatusInQueue}
	require.Equal(t, "| IN_QUEUE  elapsed 2.5s  queued 2.5s  job 0123456789abcdef", l.text(2500*time.Millisecond, 80))
	l.wait = spoolclient.QueueInfo{Position: 3, Reason: "max_workers_reached"}
	require.Equal(t, "| IN_QUEUE  elapsed 2.5s  queued 2.5s  waiting: max_workers_reached, position 3  job 0123456789abcdef",
		l.text(2500*time.Millisecond, 200))
	// 80 columns: 79 runes at most; the id is what gives way (cut while 8 or more runes fit).
	require.Equal(t, "| IN_QUEUE  elapsed 2.5s  queued 2.5s  waiting: max_workers_reached, position 3",
		l.text(2500*time.Millisecond, 80))
	require.Equal(t, "| IN_QUEUE  elapsed 2.5s  queued 2.5s  waiting: max_work…", l.text(2500*time.Millisecond, 58))
	require.Equal(t, "| IN_QUEUE  elapsed 2.5s", l.text(2500*time.Millisecond, 30))
	require.Equal(t, "| IN_…", l.text(2500*time.Millisecond, 7))

	l.job = &spoolclient.Job{ID: "j1", Status: spoolclient.StatusInProgress, DelayTime: 1200 * time.Millisecond,
		Output: json.RawMessage("{\"pct\": 40,\n \"msg\": \"" + strings.Repeat("x", 80) + "\"}")}
	l.frame = 1
	for _, cols := range []int{0, 20, 40, 80, 120, 300} {
		text := l.text(75*time.Second, cols)
		want := cols - 1
		if cols == 0 {
			want = 79
		}
		require.LessOrEqual(t, utf8.RuneCountInString(text), want, "%d columns: %q", cols, text)
		require.NotContains(t, text, "\n")
		require.NotContains(t, text, "waiting", "the wait reason goes once the job runs")
		if cols >= 80 || cols == 0 {
			require.True(t, strings.HasPrefix(text, `/ IN_PROGRESS  elapsed 1m15s  queue 1.2s  progress {"pct": 40, "msg": "xxx`), text)
		}
	}
	require.True(t, strings.HasSuffix(l.text(75*time.Second, 80), "…"))
	require.Equal(t, `/ IN_PROGRESS  elapsed 1m15s  queue 1.2s  progress {"pct": 40, "msg": "`+strings.Repeat("x", 80)+`"}  job j1`,
		l.text(75*time.Second, 300))
	var nilLine *liveLine
	nilLine.start()
	nilLine.update(l.job)
	nilLine.setWait(spoolclient.QueueInfo{})
	nilLine.stop()
}
