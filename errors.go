package spool

import (
	"errors"
	"fmt"
)

// Code classifies an error for the wire. One table in the HTTP layer maps codes to status codes, so
// that handlers return errors and never pick status codes themselves.
type Code string

const (
	CodeInvalid      Code = "invalid"      // 400: bad body, bad policy, wrong state for /retry
	CodeUnauthorized Code = "unauthorized" // 401: missing or unknown key
	CodeForbidden    Code = "forbidden"    // 403: known key without the scope
	CodeNotFound     Code = "not_found"    // 404: unknown endpoint or job
	CodeConflict     Code = "conflict"     // 409: a worker that does not hold the job's lease
	CodeTimeout      Code = "timeout"      // 408: the request body arrived too slowly
	CodeTooLarge     Code = "too_large"    // 413: body over the limit
	CodeTooMany      Code = "too_many"     // 429: rate or queue limit
	CodeUnavailable  Code = "unavailable"  // 503: shutting down
	CodeInternal     Code = "internal"     // 500: a real fault; the message is never shown
)

// Error is an error with a code and a message that is safe to show to the caller. Messages never
// carry secrets (keys, s3Config values) because they are written to clients verbatim.
type Error struct {
	Code    Code
	Message string
	// RetryAfter, in seconds, is sent as Retry-After (with CodeTooMany or CodeUnavailable).
	RetryAfter int
}

func (e *Error) Error() string { return e.Message }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code Code, format string, args ...any) error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of err, CodeInternal when err carries none.
func ErrorCode(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// ErrorMessage returns the caller-safe message of err; an uncoded error gives a generic message so
// that internals (SQL, paths) never reach a client.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
