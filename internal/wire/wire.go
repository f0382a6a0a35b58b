// Package wire holds what Spool's two HTTP surfaces (the client API in httpapi and the worker
// protocol in workerapi) share: JSON responses, the one code→status table errors are rendered from,
// bounded body reading, and the RunPod job object built from a spool.Job.
//
// Stored JSON values (input, output, stream chunks, s3Config) are written byte for byte as they were
// received. encoding/json compacts and re-escapes json.RawMessage values it marshals, so every shape
// that carries one is built with Object instead of json.Marshal.
package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// WriteJSON writes v as the JSON body of a response with the given status. A json.RawMessage, a
// []byte or an *Object is written as is (it must already be JSON); anything else is encoded with encoding/json, without
// HTML escaping. The Content-Type is always application/json.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	var body []byte
	switch x := v.(type) {
	case json.RawMessage:
		body = x
	case []byte:
		body = x
	case *Object:
		body = x.Bytes()
	default:
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			// Only a programming error (an unsupported type) gets here.
			WriteErrorLog(w, slog.Default(), fmt.Errorf("encode response: %w", err))
			return
		}
		body = bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// Status returns the HTTP status for an error code: the one table every handler's errors go
// through (docs/contract.md §2).
func Status(code spool.Code) int {
	switch code {
	case spool.CodeInvalid:
		return http.StatusBadRequest
	case spool.CodeUnauthorized:
		return http.StatusUnauthorized
	case spool.CodeForbidden:
		return http.StatusForbidden
	case spool.CodeNotFound:
		return http.StatusNotFound
	case spool.CodeConflict:
		return http.StatusConflict
	case spool.CodeTimeout:
		return http.StatusRequestTimeout
	case spool.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case spool.CodeTooMany:
		return http.StatusTooManyRequests
	case spool.CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// WriteError renders err as {"error": "<message>"} with the status of its code, logging uncoded
// (internal) errors with slog.Default(). See WriteErrorLog.
func WriteError(w http.ResponseWriter, err error) { WriteErrorLog(w, slog.Default(), err) }

// WriteErrorLog renders err as {"error": "<message>"} with the status of its code. An error
// without a code is a real fault: the client sees only "internal error" with a 500, and the error
// itself is logged to log at error level. An error of a database out of reach
// (store.ErrUnavailable) is a 503. An error with RetryAfter (a 429, a 503) carries Retry-After.
func WriteErrorLog(w http.ResponseWriter, log *slog.Logger, err error) {
	var coded *spool.Error
	if !errors.As(err, &coded) && errors.Is(err, store.ErrUnavailable) {
		// The database is out of reach (a restart, a failover): a condition to retry, not a
		// fault of the server, whichever handler met it.
		if log != nil {
			log.Warn("the database cannot be reached", "err", err)
		}
		coded = &spool.Error{Code: spool.CodeUnavailable, RetryAfter: 1, Message: "the database cannot be reached; retry"}
	}
	if coded == nil || coded.Code == spool.CodeInternal || Status(coded.Code) == http.StatusInternalServerError {
		if log != nil {
			log.Error("internal error", "err", err)
		}
		WriteJSON(w, http.StatusInternalServerError, errorBody{Error: "internal error"})
		return
	}
	if coded.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(coded.RetryAfter))
	}
	WriteJSON(w, Status(coded.Code), errorBody{Error: coded.Message})
}

type errorBody struct {
	Error string `json:"error"`
}

// ReadBody reads the whole request body, at most limit bytes, into one buffer of its declared
// length (so that a body costs its size once, not the doublings of a growing buffer). A longer
// body gives a CodeTooLarge error naming the limit ("request body exceeds the 10 MB limit"); a
// body that is not UTF-8 (every body here is JSON) gives CodeInvalid naming the offset, before
// anything stores it and hands it to a worker whose JSON parser would refuse it; a coded error
// from the body's reader (httplimit's timeout or memory bound) is returned as is; a body that
// cannot be read otherwise (the client went away) gives CodeInvalid.
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, TooLarge(limit)
	}
	size := r.ContentLength
	if size < 0 {
		size = min(limit, 64<<10) // chunked: grown as it arrives
	}
	b, err := readAll(http.MaxBytesReader(w, r.Body, limit), make([]byte, 0, size+1))
	if err != nil {
		var mbe *http.MaxBytesError
		var coded *spool.Error
		switch {
		case errors.As(err, &mbe):
			return nil, TooLarge(limit)
		case errors.As(err, &coded):
			return nil, coded
		}
		return nil, spool.Errorf(spool.CodeInvalid, "could not read the request body")
	}
	if i := invalidUTF8(b); i >= 0 {
		return nil, spool.Errorf(spool.CodeInvalid, "request body is not valid UTF-8 (byte %d); JSON text must be UTF-8", i)
	}
	return b, nil
}

// readAll reads r to its end into buf, which has room for the whole body when its length is
// known: the extra byte of capacity lets the final read see EOF without growing it.
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// invalidUTF8 returns the offset of the first byte of b that is not part of valid UTF-8, or -1.
func invalidUTF8(b []byte) int {
	if utf8.Valid(b) {
		return -1
	}
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return -1
}

// TooLarge is the error of a body over limit bytes.
func TooLarge(limit int64) error {
	return spool.Errorf(spool.CodeTooLarge, "request body exceeds the %s limit", FormatSize(limit))
}

// DiscardBody drains at most 64 KiB of a body the route does not use (bodyless POSTs such as
// /cancel), so the connection can be reused, without ever parsing it.
func DiscardBody(r *http.Request) {
	if r.Body != nil {
		_, _ = io.CopyN(io.Discard, r.Body, 64<<10)
	}
}

// WaitGrace is added to a wait when extending a write deadline: time to write the answer.
const WaitGrace = 2 * time.Minute

// ExtendWriteDeadline lets a response that waits (long-polls, /runsync, event streams) outlive a
// server-wide WriteTimeout: its write deadline becomes wait + WaitGrace from now. This is a socket
// deadline, so it is wall-clock time by nature. Writers without deadlines are left alone.
func ExtendWriteDeadline(w http.ResponseWriter, wait time.Duration) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + WaitGrace))
}

// FormatSize writes a byte count the way limits are spoken of: "10 MB", "512 KB", "100 bytes".
func FormatSize(n int64) string {
	const kb, mb = 1 << 10, 1 << 20
	switch {
	case n >= mb && n%mb == 0:
		return strconv.FormatInt(n/mb, 10) + " MB"
	case n >= kb && n%kb == 0:
		return strconv.FormatInt(n/kb, 10) + " KB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}
