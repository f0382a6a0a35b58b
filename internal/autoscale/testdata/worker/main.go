// Command worker is the autoscaler tests' worker, built with spoolworker. What it does is driven
// by the job input:
//
//	{"echo": v}            returns v
//	{"env": "NAME"}        returns the value of $NAME
//	{"waitFile": path}     returns once path exists (then $env if set), or when the job is stopped;
//	                       with "startedFile", creates that file first (the job has reached the handler)
//	{"ignoreStop": path}   returns once path exists, ignoring job-stop
//	{"crash": code}        exits with code at once
//	{"refresh": true}      returns "ok" with stopPod (RefreshWorker)
//	{"log": [m, ...]}      writes each message as runpod-python does (JSON with the job id, and
//	                       the same as text), reports {"logged": n} as progress, returns "logged"
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spool-run/spool/spoolworker"
)

type input struct {
	Echo        any      `json:"echo"`
	Env         string   `json:"env"`
	WaitFile    string   `json:"waitFile"`
	StartedFile string   `json:"startedFile"`
	IgnoreStop  string   `json:"ignoreStop"`
	Crash       int      `json:"crash"`
	Refresh     bool     `json:"refresh"`
	Log         []string `json:"log"`
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func handle(ctx context.Context, job *spoolworker.Job) (any, error) {
	in, err := spoolworker.DecodeInput[input](job)
	if err != nil {
		return nil, err
	}
	switch {
	case in.Crash != 0:
		fmt.Fprintln(os.Stderr, "crashing as asked")
		os.Exit(in.Crash)
	case in.WaitFile != "":
		if in.StartedFile != "" {
			if err := os.WriteFile(in.StartedFile, nil, 0o600); err != nil {
				return nil, err
			}
		}
		for !exists(in.WaitFile) {
			select {
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			case <-time.After(10 * time.Millisecond):
			}
		}
		if in.Env != "" {
			return os.Getenv(in.Env), nil
		}
		return "released", nil
	case in.Env != "":
		return os.Getenv(in.Env), nil
	case in.IgnoreStop != "":
		for !exists(in.IgnoreStop) {
			time.Sleep(10 * time.Millisecond) // deliberately deaf to job-stop
		}
		return "released", nil
	case in.Refresh:
		return spoolworker.Result{Output: "ok", RefreshWorker: true}, nil
	case in.Log != nil:
		for _, m := range in.Log {
			line, _ := json.Marshal(map[string]any{"requestId": job.ID, "message": m, "level": "INFO"})
			fmt.Println(string(line))
			fmt.Fprintf(os.Stderr, "%-7s| %s | %s\n", "WARN", job.ID, m)
		}
		if err := job.Progress(map[string]int{"logged": len(in.Log)}); err != nil {
			return nil, err
		}
		return "logged", nil
	}
	return in.Echo, nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Println("worker", os.Getenv("RUNPOD_POD_ID"), "starting")
	err := spoolworker.Start(ctx, spoolworker.HandlerFunc(handle), os.Args[1:], os.Getenv, spoolworker.Config{})
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
