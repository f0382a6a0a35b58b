// Package spoolclient is the Go client of the RunPod Serverless queue API, as Spool serves it and as
// RunPod itself does: submit jobs, wait for them, read their streamed output, cancel, retry, purge
// and check an endpoint's health.
//
// A Client holds the base URL and the API key; an Endpoint addresses one queue:
//
//	c := spoolclient.New("http://127.0.0.1:8080/v2", os.Getenv("SPOOL_API_KEY"))
//	ep := c.Endpoint("echo")
//	job, err := ep.RunSync(ctx, spoolclient.Request{Input: map[string]any{"prompt": "hi"}}, 0)
//
// The same code talks to RunPod with New("https://api.runpod.ai/v2", key).
//
// Every method takes a context first; a context that ends cancels the request in flight. Calls
// that wait (RunSync, StatusSync, Wait, Stream) use the API's long-polls (?wait=) rather than
// polling in a loop, so a result is seen the moment the server has it.
//
// A job that ends FAILED, CANCELLED or TIMED_OUT is not an error of the call that reports it: such
// calls return the Job, and Job.Err turns its state into an error when that is what the caller
// wants. Stream, which returns no Job, ends with a *JobError in that case. Errors the server
// answers with (400, 401, 403, 404, 413, 429, 5xx) are *APIError values that match the sentinels
// ErrBadRequest, ErrUnauthorized, ErrForbidden, ErrNotFound, ErrTooLarge and ErrRateLimited with
// errors.Is.
package spoolclient
