package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// textDecoder turns the chunks of a streamed OpenAI request into the bytes of its event stream.
// A chunk that is a JSON string is event text, decoded here rather than with encoding/json so
// that a character split across two chunks survives: a UTF-16 surrogate pair whose halves arrive
// in two chunks ("\ud83d" then "\ude00", as Python's json.dumps writes an emoji) is joined, where
// decoding each chunk alone would make two U+FFFD.
type textDecoder struct {
	high rune // a high surrogate that ended the previous chunk, or 0
}

// event appends what chunk data contributes to the stream: its text, or one "data:" event of
// any other JSON value.
func (t *textDecoder) event(buf []byte, data json.RawMessage) []byte {
	d := bytes.TrimSpace(data)
	if len(d) < 2 || d[0] != '"' || d[len(d)-1] != '"' {
		buf = append(buf, t.flush()...)
		if len(d) == 0 {
			return buf
		}
		var compact bytes.Buffer
		if json.Compact(&compact, d) != nil {
			compact.Reset()
			compact.Write(d)
		}
		buf = append(buf, "data: "...)
		buf = append(buf, compact.Bytes()...)
		return append(buf, "\n\n"...)
	}
	return t.unquote(buf, d[1:len(d)-1])
}

// flush gives up on a pending high surrogate (U+FFFD, as a decoder would).
func (t *textDecoder) flush() []byte {
	if t.high == 0 {
		return nil
	}
	t.high = 0
	return []byte(string(utf8.RuneError))
}

// unquote appends the decoded body of a JSON string (without its quotes).
func (t *textDecoder) unquote(buf, s []byte) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			buf = append(buf, t.flush()...)
			buf = append(buf, c)
			i++
			continue
		}
		esc := s[i+1]
		i += 2
		var r rune
		switch esc {
		case 'n':
			r = '\n'
		case 't':
			r = '\t'
		case 'r':
			r = '\r'
		case 'b':
			r = '\b'
		case 'f':
			r = '\f'
		case 'u':
			if i+4 > len(s) {
				buf = append(buf, t.flush()...)
				return append(buf, s[i-2:]...)
			}
			n, err := strconv.ParseUint(string(s[i:i+4]), 16, 32)
			if err != nil {
				buf = append(buf, t.flush()...)
				buf = append(buf, s[i-2:i+4]...)
				i += 4
				continue
			}
			i += 4
			r = rune(n)
			switch {
			case utf16.IsSurrogate(r) && r < 0xdc00: // high
				buf = append(buf, t.flush()...)
				t.high = r
				continue
			case utf16.IsSurrogate(r): // low
				if t.high != 0 {
					r = utf16.DecodeRune(t.high, r)
					t.high = 0
				} else {
					r = utf8.RuneError
				}
				buf = utf8.AppendRune(buf, r)
				continue
			}
		default: // \" \\ \/ and anything else: the byte itself (it may start a multi-byte character)
			buf = append(buf, t.flush()...)
			buf = append(buf, esc)
			continue
		}
		buf = append(buf, t.flush()...)
		buf = utf8.AppendRune(buf, r)
	}
	return buf
}

// reportedError reads the error a worker reported for a FAILED job, in the forms workers send:
// a JSON object ({"message", "type", "code"}, or {"error": {...}}), the Python repr of such a dict
// (what runpod-python 1.12 posts when a generator yields {"error": {...}}), or runpod-python's
// report of a handler exception (JSON with error_type and error_message).
func reportedError(s string) (openAIError, bool) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "{") {
		return openAIError{}, false
	}
	var m map[string]any
	if json.Unmarshal([]byte(s), &m) != nil {
		v, parsed := parsePython(s)
		dict, isDict := v.(map[string]any)
		if !parsed || !isDict {
			return openAIError{}, false
		}
		m = dict
	}
	if inner, ok := m["error"].(map[string]any); ok {
		m = inner
	}
	if msg, ok := m["error_message"].(string); ok {
		return openAIError{http.StatusInternalServerError, msg, "server_error", ""}, true
	}
	if _, ok := m["message"]; !ok {
		return openAIError{}, false
	}
	return errorFromFields(m), true
}

// errorFromFields makes an OpenAI error of a worker's error object: its message and type, and
// its code, which vLLM-style workers set to the HTTP status to answer with.
func errorFromFields(m map[string]any) openAIError {
	e := openAIError{status: http.StatusInternalServerError, typ: "server_error"}
	if msg, ok := m["message"].(string); ok {
		e.message = msg
	}
	if typ, ok := m["type"].(string); ok && typ != "" {
		e.typ = typ
	}
	switch code := m["code"].(type) {
	case float64:
		e.code = strconv.Itoa(int(code))
		if code >= 400 && code <= 599 && code == float64(int(code)) {
			e.status = int(code)
		}
	case int:
		e.code = strconv.Itoa(code)
		if code >= 400 && code <= 599 {
			e.status = code
		}
	case string:
		e.code = code
	}
	if e.status == http.StatusInternalServerError &&
		(strings.Contains(strings.ToLower(e.typ), "invalid_request") || strings.EqualFold(e.typ, "BadRequestError")) {
		e.status = http.StatusBadRequest
	}
	return e
}

// parsePython parses a Python literal made of dicts, lists, tuples, strings, numbers, True,
// False and None, as str() of a dict prints it; ok is false for anything else.
func parsePython(s string) (any, bool) {
	p := pyParser{s: s}
	v, ok := p.value()
	p.space()
	return v, ok && p.i == len(p.s)
}

type pyParser struct {
	s     string
	i     int
	depth int
}

// maxPythonDepth bounds the nesting parsePython accepts: error reports are shallow, and the
// input comes from a worker.
const maxPythonDepth = 32

func (p *pyParser) space() {
	for p.i < len(p.s) && strings.IndexByte(" \t\r\n", p.s[p.i]) >= 0 {
		p.i++
	}
}

func (p *pyParser) value() (any, bool) {
	p.space()
	if p.i >= len(p.s) {
		return nil, false
	}
	switch c := p.s[p.i]; {
	case c == '{':
		return p.container('}', true)
	case c == '[':
		return p.container(']', false)
	case c == '(':
		return p.container(')', false)
	case c == '\'' || c == '"':
		return p.str()
	}
	for _, w := range []struct {
		word string
		v    any
	}{{"True", true}, {"False", false}, {"None", nil}} {
		if strings.HasPrefix(p.s[p.i:], w.word) {
			p.i += len(w.word)
			return w.v, true
		}
	}
	start := p.i
	for p.i < len(p.s) && strings.IndexByte("+-0123456789.eE", p.s[p.i]) >= 0 {
		p.i++
	}
	f, err := strconv.ParseFloat(p.s[start:p.i], 64)
	return f, err == nil
}

func (p *pyParser) container(end byte, dict bool) (any, bool) {
	if p.depth++; p.depth > maxPythonDepth {
		return nil, false
	}
	defer func() { p.depth-- }()
	p.i++ // the opening bracket
	m := map[string]any{}
	var list []any
	for {
		p.space()
		if p.i < len(p.s) && p.s[p.i] == end {
			p.i++
			if dict {
				return m, true
			}
			return list, true
		}
		v, ok := p.value()
		if !ok {
			return nil, false
		}
		if dict {
			key, isStr := v.(string)
			p.space()
			if !isStr || p.i >= len(p.s) || p.s[p.i] != ':' {
				return nil, false
			}
			p.i++
			if v, ok = p.value(); !ok {
				return nil, false
			}
			m[key] = v
		} else {
			list = append(list, v)
		}
		p.space()
		if p.i < len(p.s) && p.s[p.i] == ',' {
			p.i++
		} else if p.i >= len(p.s) || p.s[p.i] != end {
			return nil, false
		}
	}
}

func (p *pyParser) str() (any, bool) {
	quote := p.s[p.i]
	p.i++
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == quote:
			p.i++
			return b.String(), true
		case c == '\\' && p.i+1 < len(p.s):
			p.i += 2
			switch e := p.s[p.i-1]; e {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			case 'x', 'u', 'U':
				n := map[byte]int{'x': 2, 'u': 4, 'U': 8}[e]
				if p.i+n > len(p.s) {
					return nil, false
				}
				r, err := strconv.ParseUint(p.s[p.i:p.i+n], 16, 32)
				if err != nil {
					return nil, false
				}
				b.WriteRune(rune(r))
				p.i += n
			default:
				b.WriteByte(e)
			}
		default:
			b.WriteByte(c)
			p.i++
		}
	}
	return nil, false
}
