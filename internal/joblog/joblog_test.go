package joblog_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/joblog"
)

const jobA = "3f0c1a52-7d1e-4b8a-9c61-0a5e2f7d9b10"

func TestParse(t *testing.T) {
	t.Parallel()
	cases := []struct {
		line            string
		job, level, msg string
		ok              bool
	}{
		// runpod-python with RUNPOD_ENDPOINT_ID set (what Spool's workers get).
		{`{"requestId": "` + jobA + `", "message": "Started.", "level": "INFO"}`, jobA, "INFO", "Started.", true},
		{`{"requestId": "sync-` + jobA + `", "message": "a | b", "level": "DEBUG"}`, "sync-" + jobA, "DEBUG", "a | b", true},
		{`{"requestId": null, "message": "Starting Serverless Worker", "level": "INFO"}`, "", "", "", false},
		{`{"requestId": "` + jobA + `", "message": {"n": 1}, "level": "INFO"}`, jobA, "INFO", `{"n": 1}`, true},
		{`{"requestId": "no spaces allowed 1", "message": "x"}`, "", "", "", false},
		{`{"requestId": "` + jobA + `", "message": "x"`, "", "", "", false}, // cut short
		// runpod-python without it: the level padded to 7, the id, the message.
		{"INFO   | " + jobA + " | Started.", jobA, "INFO", "Started.", true},
		{"ERROR  | " + jobA + " | Captured Handler Exception | more", jobA, "ERROR", "Captured Handler Exception | more", true},
		{"INFO   | Starting Serverless Worker |  Version 1.12.0", "", "", "", false},
		{"INFO   | worker | started", "", "", "", false},
		{"LOUD   | " + jobA + " | x", "", "", "", false},
		{"plain output from print()", "", "", "", false},
		{"", "", "", "", false},
	}
	for _, c := range cases {
		job, level, msg, ok := joblog.Parse(c.line)
		require.Equal(t, c.ok, ok, c.line)
		require.Equal(t, c.job, job, c.line)
		require.Equal(t, c.level, level, c.line)
		require.Equal(t, c.msg, msg, c.line)
	}
}

func TestIndex(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC))
	x := joblog.New(joblog.Config{Clock: clk, PerJob: 3, MaxJobs: 2, MaxMessage: 8})

	x.Line("w1", "INFO   | "+jobA+" | one")
	clk.Advance(time.Second)
	x.Progress("w1", jobA, []byte(`{"pct":50}`))
	x.Line("w1", "not about a job")
	got, dropped := x.Entries(jobA)
	require.Zero(t, dropped)
	require.Equal(t, []joblog.Entry{
		{At: clk.Now().Add(-time.Second), Worker: "w1", Kind: joblog.KindLog, Level: "INFO", Message: "one"},
		{At: clk.Now(), Worker: "w1", Kind: joblog.KindProgress, Message: `{"pct":5…`},
	}, got, "messages are cut at MaxMessage")

	// A job keeps its last PerJob entries, oldest first.
	for i := range 4 {
		x.Line("w2", fmt.Sprintf("DEBUG  | %s | line %d", jobA, i))
	}
	got, dropped = x.Entries(jobA)
	require.Equal(t, 3, dropped)
	require.Len(t, got, 3)
	for i, e := range got {
		require.Equal(t, fmt.Sprintf("line %d", i+1), e.Message)
	}

	// The index keeps the MaxJobs jobs most recently written to.
	x.Line("w1", `{"requestId":"job-2","message":"b"}`)
	x.Line("w1", "INFO   | "+jobA+" | again") // jobA is now the most recent
	x.Line("w1", `{"requestId":"job-3","message":"c"}`)
	got, _ = x.Entries("job-2")
	require.Empty(t, got, "the least recently written job is forgotten")
	got, _ = x.Entries(jobA)
	require.NotEmpty(t, got)
	got, _ = x.Entries("job-3")
	require.Len(t, got, 1)

	// Cuts keep UTF-8 whole.
	x.Line("w1", `{"requestId":"job-4","message":"`+strings.Repeat("é", 10)+`"}`)
	got, _ = x.Entries("job-4")
	require.Equal(t, "éééé…", got[0].Message)

	var nilIndex *joblog.Index
	nilIndex.Line("w", "INFO   | "+jobA+" | x")
	got, _ = nilIndex.Entries(jobA)
	require.Nil(t, got)
}

func TestIndexBytes(t *testing.T) {
	t.Parallel()
	x := joblog.New(joblog.Config{MaxBytes: 3 * (1000 + 2 + 64)})
	line := strings.Repeat("x", 1000)
	for i := range 5 {
		x.Progress("w1", fmt.Sprintf("job-%d", i), []byte(line))
	}
	for i := range 2 {
		got, _ := x.Entries(fmt.Sprintf("job-%d", i))
		require.Empty(t, got, "job-%d is over the byte bound", i)
	}
	for i := 2; i < 5; i++ {
		got, _ := x.Entries(fmt.Sprintf("job-%d", i))
		require.Len(t, got, 1, "job-%d", i)
	}
	// Entries a job drops from its own ring are counted out too.
	y := joblog.New(joblog.Config{PerJob: 1, MaxBytes: 2 * (1000 + 2 + 64)})
	for range 10 {
		y.Progress("w1", "job-1a", []byte(line))
	}
	y.Progress("w1", "job-2b", []byte(line))
	got, _ := y.Entries("job-1a")
	require.Len(t, got, 1, "job-1a holds one entry, within the bound")
}
