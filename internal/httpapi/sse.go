package httpapi

import (
	"bytes"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/wire"
)

// wantsEventStream reports whether the client asked for Server-Sent Events (Spool's extension of
// /stream; RunPod clients never send this Accept).
func wantsEventStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "text/event-stream" {
				return true
			}
		}
	}
	return false
}

// streamEvents serves /stream as Server-Sent Events: each chunk is an event with "id: <seq>" and
// "data: {"output":...}", starting after the Last-Event-ID header (so a reconnecting EventSource
// resumes where it was); chunks are not consumed, so this does not disturb RunPod-style /stream
// readers. Once the job is terminal a final "event: done" carries the job object and the stream
// ends. While nothing happens a comment is sent every SSEKeepAlive.
func (s *server) streamEvents(w http.ResponseWriter, r *http.Request, ep string) error {
	id := r.PathValue("id")
	var after int64
	if v := strings.TrimSpace(r.Header.Get("Last-Event-ID")); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return invalid("Last-Event-ID must be a chunk sequence number")
		}
		after = n
	}
	ctx := r.Context()
	rc := http.NewResponseController(w)
	started := false
	var buf bytes.Buffer
	// The first read answers at once, so that the headers go out at once: an EventSource (or a
	// proxy) waiting for them would otherwise wait for the first chunk or keep-alive.
	var wait time.Duration
	for {
		wire.ExtendWriteDeadline(w, s.cfg.SSEKeepAlive)
		t0 := s.cfg.Clock.Now()
		j, chunks, err := s.eng.StreamFrom(ctx, ep, id, after, wait)
		if err != nil {
			if !started {
				return err
			}
			if ctx.Err() == nil {
				buf.Reset()
				writeEvent(&buf, "error", "", wire.NewObject().String("error", spool.ErrorMessage(err)).Bytes())
				_, _ = w.Write(buf.Bytes())
				_ = rc.Flush()
			}
			return nil
		}
		if !started {
			h := w.Header()
			h.Set("Content-Type", "text/event-stream")
			h.Set("Cache-Control", "no-cache")
			h.Set("X-Accel-Buffering", "no")
			w.WriteHeader(http.StatusOK)
			started = true
		}
		buf.Reset()
		for _, c := range chunks {
			writeEvent(&buf, "", strconv.FormatInt(c.Seq, 10), wire.Chunk(c))
			after = c.Seq
		}
		terminal := j.State.Terminal()
		switch {
		case terminal:
			writeEvent(&buf, "done", "", wire.Job(j))
		case len(chunks) == 0 && wait > 0:
			buf.WriteString(": keep-alive\n\n")
		}
		if _, err := w.Write(buf.Bytes()); err != nil {
			return nil
		}
		if err := rc.Flush(); err != nil || terminal {
			return nil
		}
		// StreamFrom comes back empty-handed before its wait only when the engine drains for a
		// shutdown; end the stream then (the client reconnects with Last-Event-ID elsewhere).
		if wait > 0 && len(chunks) == 0 && s.cfg.Clock.Now().Sub(t0) < wait {
			return nil
		}
		wait = s.cfg.SSEKeepAlive
	}
}

// writeEvent appends one SSE event. Multi-line data (raw JSON may hold newlines between tokens)
// becomes several data lines, which the client joins back with "\n".
func writeEvent(buf *bytes.Buffer, event, id string, data []byte) {
	if event != "" {
		buf.WriteString("event: " + event + "\n")
	}
	if id != "" {
		buf.WriteString("id: " + id + "\n")
	}
	data = bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))
	data = bytes.ReplaceAll(data, []byte("\r"), []byte("\n"))
	for _, line := range bytes.Split(data, []byte("\n")) {
		buf.WriteString("data: ")
		buf.Write(line)
		buf.WriteByte('\n')
	}
	buf.WriteByte('\n')
}
