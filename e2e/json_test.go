package e2e_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// pyJSON re-writes a JSON value the way Python's json.dumps(v, ensure_ascii=False) writes it:
// ", " and ": " separators, non-ASCII characters as raw UTF-8, no HTML escaping, keys and number
// literals exactly as given. runpod-python sends its result bodies in this form.
func pyJSON(raw string) string {
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.UseNumber()
	var out bytes.Buffer
	if err := writePy(dec, &out); err != nil {
		panic(fmt.Sprintf("pyJSON(%s): %v", raw, err))
	}
	return out.String()
}

func writePy(dec *json.Decoder, out *bytes.Buffer) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch v := tok.(type) {
	case json.Delim:
		closing := json.Delim('}')
		if v == '[' {
			closing = ']'
		}
		out.WriteString(v.String())
		for first := true; dec.More(); first = false {
			if !first {
				out.WriteString(", ")
			}
			if v == '{' {
				k, err := dec.Token()
				if err != nil {
					return err
				}
				out.WriteString(pyString(k.(string)))
				out.WriteString(": ")
			}
			if err := writePy(dec, out); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil {
			return err
		}
		out.WriteString(closing.String())
	case string:
		out.WriteString(pyString(v))
	case json.Number:
		out.WriteString(v.String())
	case bool:
		fmt.Fprint(out, v)
	case nil:
		out.WriteString("null")
	}
	return nil
}

// pyString is a JSON string as json.dumps(s, ensure_ascii=False) writes it.
func pyString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			if r < 0x20 {
				fmt.Fprintf(&b, `\u%04x`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// jsonTokens lists a JSON document's tokens: strings by their decoded value, numbers by their
// literal text, delimiters, keys in order. Two documents with the same tokens are the same value
// written with the same numbers, keys and key order; only whitespace and string escapes may differ.
func jsonTokens(raw []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var toks []string
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("invalid JSON %q: %w", raw, err)
		}
		switch v := tok.(type) {
		case json.Delim:
			toks = append(toks, "D"+v.String())
		case string:
			toks = append(toks, "S"+v)
		case json.Number:
			toks = append(toks, "N"+v.String())
		case bool:
			toks = append(toks, fmt.Sprintf("B%v", v))
		case nil:
			toks = append(toks, "null")
		}
	}
	if len(toks) == 0 {
		return nil, fmt.Errorf("empty JSON")
	}
	return toks, nil
}

// requireSameJSON requires got to be want without re-encoding: same key order, same number
// literals, same strings (whitespace and escape spelling aside).
func requireSameJSON(t *testing.T, want string, got json.RawMessage, msgAndArgs ...any) {
	t.Helper()
	w, err := jsonTokens([]byte(want))
	require.NoError(t, err, "want")
	g, err := jsonTokens(got)
	require.NoError(t, err, msgAndArgs...)
	require.Equal(t, w, g, append([]any{"want %s, got %s", want, got}, msgAndArgs...)...)
}

// fields decodes a JSON object into its raw fields, requiring valid JSON.
func fields(t *testing.T, body []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(body, &m), "want a JSON object, got %q", body)
	require.NotNil(t, m, "want a JSON object, got %q", body)
	return m
}

// str decodes a JSON string field ("" when absent).
func str(t *testing.T, m map[string]json.RawMessage, key string) string {
	t.Helper()
	raw, ok := m[key]
	if !ok {
		return ""
	}
	var s string
	require.NoError(t, json.Unmarshal(raw, &s), "field %q is not a string: %s", key, raw)
	return s
}

// requireMillis requires a field to be present and a non-negative integer (RunPod's ms counters).
func requireMillis(t *testing.T, m map[string]json.RawMessage, key string) int64 {
	t.Helper()
	raw, ok := m[key]
	require.True(t, ok, "%q missing in %v", key, keysOf(m))
	var n json.Number
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	require.NoError(t, dec.Decode(&n), "%q is not a number: %s", key, raw)
	v, err := n.Int64()
	require.NoError(t, err, "%q is not an integer: %s", key, raw)
	require.GreaterOrEqual(t, v, int64(0), "%q is negative", key)
	return v
}

func keysOf(m map[string]json.RawMessage) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// validUTF8JSON reports whether b is valid JSON in valid UTF-8.
func validUTF8JSON(b []byte) bool { return utf8.Valid(b) && json.Valid(b) }
