package joblog_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/spool-run/spool/internal/joblog"
)

// FuzzParse: any line a worker writes is parsed without panicking; a line said to name a job
// names one of the job-id alphabet that appears in the line, and the index keeps it within its
// bounds.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"requestId": "3f0c1a52-7d1e-4b8a-9c61-0a5e2f7d9b10", "message": "Started.", "level": "INFO"}`,
		`{"requestId": null, "message": "x"}`,
		`{"requestId": "j-1", "message": {"a": [1, "\u00e9"]}}`,
		"INFO   | 3f0c1a52-7d1e-4b8a-9c61-0a5e2f7d9b10 | Started.",
		"ERROR  | job-9 | a | b",
		"DEBUG  |  | x",
		"\xff\xfe | job-1 | x",
	} {
		f.Add(s)
	}
	x := joblog.New(joblog.Config{PerJob: 3, MaxJobs: 4, MaxMessage: 64, MaxBytes: 4096})
	f.Fuzz(func(t *testing.T, line string) {
		job, _, msg, ok := joblog.Parse(line)
		if !ok {
			return
		}
		if job == "" || len(job) > 128 || strings.ContainsAny(job, " |\"{}\n") {
			t.Fatalf("job id %q from %q", job, line)
		}
		if !strings.HasPrefix(strings.TrimSpace(line), "{") && !strings.Contains(line, msg) {
			t.Fatalf("message %q is not in the text line %q", msg, line)
		}
		x.Line("w", line)
		entries, _ := x.Entries(job)
		if len(entries) == 0 || len(entries) > 3 {
			t.Fatalf("%d entries kept for %q", len(entries), job)
		}
		for _, e := range entries {
			if len(e.Message) > 64+len("…") {
				t.Fatalf("message over its bound: %q", e.Message)
			}
		}
		if last := entries[len(entries)-1].Message; utf8.ValidString(msg) && !utf8.ValidString(last) {
			t.Fatalf("message %q cut inside a character: %q", msg, last)
		}
	})
}
