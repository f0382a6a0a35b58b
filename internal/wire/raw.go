package wire

import "encoding/json"

// Raw is a JSON value kept as its bytes, like json.RawMessage, but without the copy: decoded with
// json.Unmarshal, it is a slice of the buffer being decoded. A request body is decoded once and
// its input or output stored from that same buffer, so a 20 MB result costs 20 MB, not 40.
// The buffer must not be reused while a Raw points into it.
type Raw []byte

// UnmarshalJSON keeps b itself: encoding/json passes a slice of the buffer given to Unmarshal.
func (r *Raw) UnmarshalJSON(b []byte) error {
	*r = b
	return nil
}

// MarshalJSON writes the value as is.
func (r Raw) MarshalJSON() ([]byte, error) {
	if r == nil {
		return []byte("null"), nil
	}
	return r, nil
}

// Null reports whether the value is JSON null.
func (r Raw) Null() bool { return string(r) == "null" }

// RawMessage is r as a json.RawMessage, sharing its bytes.
func (r Raw) RawMessage() json.RawMessage { return json.RawMessage(r) }
