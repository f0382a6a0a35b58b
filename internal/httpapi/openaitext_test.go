package httpapi

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestReportedError(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]openAIError{
		`{'object': 'error', 'message': 'it\'s "bad"\n', 'type': 'BadRequestError', 'param': None, 'code': 400}`:   {400, "it's \"bad\"\n", "BadRequestError", "400"},
		`{"message": "m", "type": "BadRequestError", "code": 422}`:                                                 {422, "m", "BadRequestError", "422"},
		`{"message": "slow down", "type": "rate_limit", "code": 429}`:                                              {429, "slow down", "rate_limit", "429"},
		`{"error": {"message": "nested", "type": "invalid_request_error"}}`:                                        {400, "nested", "invalid_request_error", ""},
		`{'message': 'caf\xe9 \u2603', 'code': 'model_not_found', 'type': 'x', 'extra': [1, (2, 3), {'a': True}]}`: {500, "café ☃", "x", "model_not_found"},
		`{"error_type": "<class 'ValueError'>", "error_message": "bad input", "error_traceback": "..."}`:           {500, "bad input", "server_error", ""},
	} {
		got, ok := reportedError(in)
		require.True(t, ok, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"boom", `{'no message': 1}`, `{'message': 'x'`, `{'message': unquoted}`, strings.Repeat("[", 100) + `{'message': 'deep'}`} {
		_, ok := reportedError(in)
		require.False(t, ok, in)
	}
	require.Equal(t, http.StatusInternalServerError, jobErrorStatus("boom"))
}

func jobErrorStatus(msg string) int {
	e, ok := reportedError(msg)
	if !ok {
		return http.StatusInternalServerError
	}
	return e.status
}

// FuzzOpenAIWorkerText feeds what a worker may post (chunks, error reports) to the relay's
// decoders: they never panic, always make valid UTF-8 of valid UTF-8 input, and a JSON string
// chunk decodes as encoding/json decodes it once surrogates are paired.
func FuzzOpenAIWorkerText(f *testing.F) {
	for _, s := range []string{`"data: {}\n\n"`, `"a\ud83d"`, `"\ude00b"`, `{"n":1}`, `"\u00e9\\\"/"`,
		`{'message': 'x', 'code': 400}`, `{"error": {"message": "m"}}`, `[1, (2,), {'a': None}]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = reportedError(s)
		_, _ = parsePython(s)
		var d textDecoder
		out := d.event(nil, json.RawMessage(s))
		out = append(out, d.flush()...)
		if !utf8.ValidString(s) {
			return
		}
		require.True(t, utf8.Valid(out), "%q gave %q", s, out)
		var want string
		if json.Unmarshal([]byte(s), &want) == nil && strings.HasPrefix(strings.TrimSpace(s), `"`) {
			require.Equal(t, want, string(out), "%q", s)
		}
	})
}
