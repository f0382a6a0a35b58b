package spoolclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Sentinels matched by an *APIError of the corresponding HTTP status, for errors.Is.
var (
	ErrBadRequest   = errors.New("bad request")       // 400: a bad body, policy or state (e.g. /retry of a COMPLETED job)
	ErrUnauthorized = errors.New("unauthorized")      // 401: a missing or unknown API key
	ErrForbidden    = errors.New("forbidden")         // 403: a key without the scope the call needs
	ErrNotFound     = errors.New("not found")         // 404: an unknown endpoint, or a job unknown or past its retention
	ErrTooLarge     = errors.New("request too large") // 413: a body over the server's limit
	ErrRateLimited  = errors.New("rate limited")      // 429: a rate or queue limit; see APIError.RetryAfter
	ErrServer       = errors.New("server error")      // any 5xx
)

// errEmptyOutput is DecodeOutput's error for a job without output.
var errEmptyOutput = errors.New("the job has no output")

// APIError is an error answer of the API: any status other than 200.
type APIError struct {
	// StatusCode is the HTTP status.
	StatusCode int
	// Message is the server's {"error": "..."} message, or a short excerpt of a body that is not
	// such an object, or the status text when the body is empty.
	Message string
	// RetryAfter is the server's Retry-After (seconds or an HTTP date), 0 when absent. Spool sends
	// it with 429.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	s := strconv.Itoa(e.StatusCode)
	if t := http.StatusText(e.StatusCode); t != "" {
		s += " " + t
	}
	if e.Message != "" && e.Message != http.StatusText(e.StatusCode) {
		s += ": " + e.Message
	}
	if e.RetryAfter > 0 {
		s += " (retry after " + e.RetryAfter.String() + ")"
	}
	return s
}

// Is reports whether target is the sentinel of e's status code, so that
// errors.Is(err, ErrNotFound) holds for a 404.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrBadRequest:
		return e.StatusCode == http.StatusBadRequest
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized
	case ErrForbidden:
		return e.StatusCode == http.StatusForbidden
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrTooLarge:
		return e.StatusCode == http.StatusRequestEntityTooLarge
	case ErrRateLimited:
		return e.StatusCode == http.StatusTooManyRequests
	case ErrServer:
		return e.StatusCode >= 500
	}
	return false
}

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// newAPIError builds the error of a non-200 answer from its (already capped) body.
func newAPIError(res *http.Response, body []byte, now time.Time) *APIError {
	e := &APIError{StatusCode: res.StatusCode, RetryAfter: parseRetryAfter(res.Header.Get("Retry-After"), now)}
	var obj struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &obj) == nil && len(obj.Error) > 0 && string(obj.Error) != "null" {
		var s string
		if json.Unmarshal(obj.Error, &s) != nil {
			s = string(obj.Error)
		}
		e.Message = s
	} else {
		e.Message = excerpt(string(body))
	}
	if e.Message == "" {
		e.Message = http.StatusText(res.StatusCode)
	}
	return e
}

// excerpt is the first line of s, at most 200 bytes, for bodies that are not JSON errors (a proxy's
// HTML page, say).
func excerpt(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = strings.TrimSpace(s[:i]) + " …"
	}
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "") + " …"
	}
	return s
}

// parseRetryAfter reads Retry-After as delay seconds or an HTTP date; 0 when absent or invalid.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d.Round(time.Second)
		}
	}
	return 0
}

// JobError reports a job that ended FAILED, CANCELLED or TIMED_OUT. Job.Err returns one, and so
// does Stream as its last element.
type JobError struct {
	// ID is the job's id.
	ID string
	// Status is the job's final state.
	Status Status
	// Message is the job's error, as the server reported it ("" when there is none, as for a
	// cancelled job).
	Message string
}

func (e *JobError) Error() string {
	s := fmt.Sprintf("job %s ended %s", e.ID, e.Status)
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}
