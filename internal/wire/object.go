package wire

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
)

// Object builds a JSON object by appending members in order. Raw members are copied byte for
// byte, which is why wire shapes carrying stored JSON are built with it and not with
// encoding/json (which compacts and re-escapes raw values).
type Object struct {
	buf    []byte
	closed bool
}

// NewObject returns an empty object.
func NewObject() *Object { return &Object{buf: append(make([]byte, 0, 256), '{')} }

func (o *Object) key(k string) {
	if len(o.buf) > 1 {
		o.buf = append(o.buf, ',')
	}
	o.buf = AppendString(o.buf, k)
	o.buf = append(o.buf, ':')
}

// String adds a string member.
func (o *Object) String(k, v string) *Object {
	o.key(k)
	o.buf = AppendString(o.buf, v)
	return o
}

// Int adds an integer member.
func (o *Object) Int(k string, v int64) *Object {
	o.key(k)
	o.buf = strconv.AppendInt(o.buf, v, 10)
	return o
}

// Bool adds a boolean member.
func (o *Object) Bool(k string, v bool) *Object {
	o.key(k)
	o.buf = strconv.AppendBool(o.buf, v)
	return o
}

// Raw adds a member whose value is the given JSON text, copied as is. The caller guarantees that
// v is valid JSON (it was validated when it was received).
func (o *Object) Raw(k string, v []byte) *Object {
	o.key(k)
	o.buf = append(o.buf, v...)
	return o
}

// Time adds a time member in RFC 3339 with milliseconds, UTC.
func (o *Object) Time(k string, t time.Time) *Object {
	return o.String(k, FormatTime(t))
}

// Bytes closes the object and returns its JSON text.
func (o *Object) Bytes() []byte {
	if !o.closed {
		o.buf = append(o.buf, '}')
		o.closed = true
	}
	return o.buf
}

// Array joins JSON texts into a JSON array; no elements give [] (never null).
func Array(elems [][]byte) json.RawMessage {
	n := 2
	for _, e := range elems {
		n += len(e) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i, e := range elems {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e...)
	}
	return append(b, ']')
}

// AppendString appends s as a JSON string.
func AppendString(b []byte, s string) []byte {
	// Without HTML escaping: a webhook URL's "&" stays "&" rather than "\u0026", as clients
	// wrote it (both parse the same, but people read these bodies).
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}

// FormatTime formats t in RFC 3339 with milliseconds, in UTC.
func FormatTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }
