package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/clock"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/spooltest"
)

// FuzzLastEventID resumes the event stream of a finished job with five chunks from each input as
// the Last-Event-ID header: never a panic or a 500; no id (or only spaces) replays every chunk; a
// plain decimal id resumes right after that chunk; anything holding other than digits and a sign
// is a JSON 400 naming the header; a sign or an out-of-range number gets either.
func FuzzLastEventID(f *testing.F) {
	for _, s := range []string{
		"", " ", "0", "1", "3", "4", "5", "6", "1000", " 2 ", "\t2", "2\r\n", "02", "00000000000000000000003",
		"-1", "-0", "+2", "+", "-", "x", "1x", "0x1", "1e3", "1.0", "1,2", "1 2", "٣", "９",
		"9223372036854775807", "9223372036854775808", "-9223372036854775808", "99999999999999999999999",
		"\x00", "\xff", "\u00a02", "2\u2028",
	} {
		f.Add(s)
	}
	fake := clock.NewFake(spooltest.Start)
	s := spooltest.NewServer(f, spooltest.Options{
		Clock:     fake,
		Endpoints: []spool.Endpoint{spool.NewEndpoint("ep")},
		Keys:      []spool.Key{{Name: "c", Scope: spool.ScopeClient}},
	})
	ctx := context.Background()
	j, err := s.Engine.Submit(ctx, engine.SubmitParams{Endpoint: "ep", Input: json.RawMessage(`1`)})
	require.NoError(f, err)
	_, err = s.Engine.Take(ctx, "ep", "w1", 1, 0)
	require.NoError(f, err)
	for i := range 5 {
		require.NoError(f, s.Engine.AppendChunk(ctx, "ep", "w1", j.ID, 0, json.RawMessage(`{"n":`+strconv.Itoa(i)+`}`)))
	}
	_, err = s.Engine.Done(ctx, engine.DoneParams{Endpoint: "ep", WorkerID: "w1", JobID: j.ID, Output: json.RawMessage(`"fin"`)})
	require.NoError(f, err)
	_, chunks, err := s.Engine.StreamFrom(ctx, "ep", j.ID, 0, 0)
	require.NoError(f, err)
	require.Len(f, chunks, 5)
	var seqs []int64
	for _, c := range chunks {
		seqs = append(seqs, c.Seq)
	}
	handler := s.HTTP.Config.Handler
	auth := "Bearer " + s.Secrets["c"]

	f.Fuzz(func(t *testing.T, lastID string) {
		r := httptest.NewRequest("GET", "/v2/ep/stream/"+j.ID, nil)
		r.Header.Set("Authorization", auth)
		r.Header.Set("Accept", "text/event-stream")
		r.Header["Last-Event-Id"] = []string{lastID}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, r)

		v := strings.TrimSpace(lastID)
		digits := v != "" && strings.Trim(v, "0123456789") == ""
		n, perr := strconv.ParseInt(v, 10, 64)
		var want []int64 // the chunk ids a correct resumption sends
		for _, seq := range seqs {
			if v == "" || (perr == nil && seq > n) {
				want = append(want, seq)
			}
		}
		switch {
		case v == "" || (digits && perr == nil):
			require.Equal(t, 200, rec.Code, rec.Body.String())
			require.Equal(t, want, sentIDs(t, rec), "resumed at the wrong chunk after %q", lastID)
		case strings.Trim(v, "0123456789+-") != "" || (perr == nil && n < 0):
			requireLastEventIDRefused(t, rec)
		default: // a sign, or a number out of range: refused, or resumed consistently
			if rec.Code == 200 {
				require.NoError(t, perr, "accepted %q, which is no number", lastID)
				require.Equal(t, want, sentIDs(t, rec), "resumed at the wrong chunk after %q", lastID)
			} else {
				requireLastEventIDRefused(t, rec)
			}
		}
	})
}

func requireLastEventIDRefused(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	require.Equal(t, 400, rec.Code, rec.Body.String())
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	var e struct {
		Error string `json:"error"`
	}
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &e), rec.Body.String())
	require.Contains(t, e.Error, "Last-Event-ID")
}

// sentIDs reads a finished job's event stream: chunk events, each with its id and a data line,
// then one "done" event, then nothing. It returns the chunk ids.
func sentIDs(t *testing.T, rec *httptest.ResponseRecorder) []int64 {
	t.Helper()
	require.Equal(t, "text/event-stream", rec.Header().Get("Content-Type"))
	var ids []int64
	done := false
	sc := bufio.NewScanner(rec.Body)
	var event, id string
	for sc.Scan() {
		line := sc.Text()
		require.False(t, done, "data after the done event: %q", line)
		switch {
		case line == "":
			if event == "done" {
				done = true
			} else {
				require.Empty(t, event)
				n, err := strconv.ParseInt(id, 10, 64)
				require.NoError(t, err, "event id %q", id)
				ids = append(ids, n)
			}
			event, id = "", ""
		case strings.HasPrefix(line, "event: "):
			event = line[len("event: "):]
		case strings.HasPrefix(line, "id: "):
			id = line[len("id: "):]
		case strings.HasPrefix(line, "data: "):
		default:
			t.Fatalf("unexpected line %q", line)
		}
	}
	require.NoError(t, sc.Err())
	require.True(t, done, "no done event")
	return ids
}
