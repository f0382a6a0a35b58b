package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
)

// FuzzDecodeSubmit: decodeSubmit never panics; it either refuses the body with a CodeInvalid
// error that quotes none of the s3Config values, or accepts it with Input byte-identical to the
// body's "input" member as a reader independent of it finds that member.
func FuzzDecodeSubmit(f *testing.F) {
	for _, seed := range []string{
		``, `{}`, `null`, `[]`, `{"input":null}`, `{"input":1}`, `{"input":{"b":1, "a":[1.0,2e3]}}`,
		`{"input":1} x`, `{"input":1,"policy":{"executionTimeout":6000,"ttl":10000,"lowPriority":true}}`,
		`{"input":1,"policy":{"executionTimeout":6000.0}}`, `{"input":1,"webhook":5}`,
		`{"input":1,"s3Config":{"accessId":"a","accessSecret":"s","bucketName":"b","endpointUrl":"http://x"}}`,
		`{"input":1,"s3Config":{"accessSecret":7}}`, `{"Input":"case"}`, `{"input":"\ud800"}`, "{\"input\":\"\xff\"}",
		`{"input":1,"input":null}`, `{"input":[1,{"policy":{}}]}`,
		// Secrets in every position an error could be about.
		`{"input":1,"s3Config":{"accessId":"AKIAFUZZCANARY01","accessSecret":"SECRETFUZZCANARY02","bucketName":"b","endpointUrl":"ftp://CANARYHOST03/"}}`,
		`{"input":1,"s3Config":{"accessId":"AKIAFUZZCANARY01","accessSecret":"SECRETFUZZCANARY02"}}`,
		`{"input":1,"s3Config":{"accessId":"AKIAFUZZCANARY01","accessSecret":"SECRETFUZZ` + "\x01" + `CANARY02"}}`,
		`{"input":1,"s3Config":{"accessSecret":"SECRETFUZZCANARY02",}}`,
		`{"input":1,"s3Config":{"accessSecret":"SECRETFUZZCANARY02"} "x"}`,
		`{"input":1,"s3Config":{"accessSecret":"SECRETFUZZCANARY02","endpointUrl":"http://[::1"}}`,
		`{"input":1,"s3Config":["SECRETFUZZCANARY02"]}`, `{"input":1,"s3Config":"SECRETFUZZCANARY02"}`,
		`{"input":1,"s3Config":{"accessSecret":["SECRETFUZZCANARY02"]}}`, `{"input":1,"s3Config":{"accessSecret":{"k":"SECRETFUZZCANARY02"}}}`,
		`{"input":1,"s3Config":{"accessSecret":31415926535897932}}`, `{"input":1,"s3Config":{"bucketName":true,"accessSecret":"SECRETFUZZCANARY02"}}`,
		`{"input":1,"s3config":{"accessSecret":"SECRETFUZZCANARY02"}}`,
		"{\"input\":1,\"\u017f3Config\":{\"accessSecret\":\"SECRETFUZZCANARY02\"}}",
		`{"input":1,"s3Config":{"accessSecret":"SECRETFUZZCANARY02'x"}}`,
		`{"input":1,"s3Config":{"accessSecret":"'SECRETFUZZCANARY02'"}} '`,
		// Duplicates and spellings of "input".
		`{"INPUT":1,"input":2}`, `{"input":2,"iNpUt":[3]}`, `{"\u0069nput":"escaped name"}`,
		`{"input" : { "a" : 1 } , "policy" : null }`, "\t{\"input\":\r\n1}\n",
		`{"input":1,"policy":{"ttl":-5,"executionTimeout":9223372036854775808}}`,
		`{"input":1,"policy":{"ttl":"10"}}`, `{"input":1,"policy":[]}`, `{"input":1,"policy":{"lowPriority":1}}`,
		`{"input":1,"webhook":"https://example.com/h?t=1"}`, `{"input":1,"webhook":null}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := decodeSubmit(body)
		if err != nil {
			var coded *spool.Error
			require.True(t, errors.As(err, &coded), "uncoded error %T: %v", err, err)
			require.Equal(t, spool.CodeInvalid, coded.Code, coded.Message)
			require.NotEmpty(t, coded.Message)
			requireNoSecretIn(t, body, coded.Message)
			return
		}
		raw, found, ok := lastMember(body, "input")
		require.True(t, ok, "accepted a body that is not one JSON object: %q", body)
		require.True(t, found, "accepted a body without input: %q", body)
		require.Equal(t, string(raw), string(p.Input), "input must be the client's bytes")
		require.NotEqual(t, "null", string(p.Input))
		require.True(t, json.Valid(p.Input), string(p.Input))
		if p.S3Config != nil {
			s3, found, _ := lastMember(body, "s3Config")
			require.True(t, found)
			require.Equal(t, string(s3), string(p.S3Config), "s3Config must be the client's bytes")
			require.Equal(t, byte('{'), p.S3Config[0])
			var c spool.S3Config
			require.NoError(t, json.Unmarshal(p.S3Config, &c))
			require.NoError(t, c.Validate())
		}
		if p.ExecutionTimeoutMs != nil || p.TTLMs != nil || p.LowPriority {
			_, found, _ := lastMember(body, "policy")
			require.True(t, found, "policy values without a policy member")
		}
	})
}

// lastMember reads body as one JSON object with a json.Decoder token by token and returns the raw
// value of the last member whose name equals name case-insensitively, which is the member
// encoding/json fills a tagged field from. ok is false when body is not exactly one object.
func lastMember(body []byte, name string) (raw json.RawMessage, found, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false, false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false, false
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false, false
		}
		if bytes.EqualFold([]byte(key), []byte(name)) {
			raw, found = v, true
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, false, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false, false
	}
	return raw, found, true
}

// publicWords are the names error messages are made of; masking them keeps a secret that happens
// to spell a field name from counting as a leak.
var publicWords = regexp.MustCompile(`(?i)s3Config|accessId|accessSecret|bucketName|endpointUrl|objectPath|input|webhook|policy|executionTimeout|lowPriority|ttl`)

// requireNoSecretIn fails when msg quotes any string found under an s3Config member of body (at
// any depth), or, for a body whose s3Config cannot be read, quotes a character the way
// encoding/json's syntax errors do.
func requireNoSecretIn(t *testing.T, body []byte, msg string) {
	t.Helper()
	require.NotRegexp(t, `invalid character '`, msg, "a syntax error quotes a character of the body")
	masked := publicWords.ReplaceAllString(msg, "#")
	for _, v := range s3Strings(body) {
		if len(v) < 6 || publicWords.ReplaceAllString(v, "#") != v {
			continue // too short to tell from the message's own words
		}
		require.NotContains(t, masked, v, "the error quotes an s3Config value")
	}
}

// s3Strings returns every string and number (member names excluded) inside any top-level member
// whose name is s3Config case-insensitively, in any body that is one JSON object.
func s3Strings(body []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	var out []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return out
		}
		key, _ := tok.(string)
		var v any
		if err := dec.Decode(&v); err != nil {
			return out
		}
		if strings.EqualFold(key, "s3Config") {
			out = appendStrings(out, v, 0)
		}
	}
	return out
}

func appendStrings(out []string, v any, depth int) []string {
	if depth > 64 {
		return out
	}
	switch x := v.(type) {
	case string:
		out = append(out, x)
	case json.Number:
		out = append(out, x.String())
	case []any:
		for _, e := range x {
			out = appendStrings(out, e, depth+1)
		}
	case map[string]any:
		for _, e := range x {
			out = appendStrings(out, e, depth+1)
		}
	}
	return out
}

func TestDecodeSubmitKeepsBytes(t *testing.T) {
	t.Parallel()
	p, err := decodeSubmit([]byte(`{"input": {"b":1, "a":[1.0,2e3]} , "s3Config": {"accessId":"a", "accessSecret":"s","bucketName":"b","endpointUrl":"https://x"}}`))
	require.NoError(t, err)
	require.Equal(t, `{"b":1, "a":[1.0,2e3]}`, string(p.Input))
	require.Equal(t, `{"accessId":"a", "accessSecret":"s","bucketName":"b","endpointUrl":"https://x"}`, string(p.S3Config))
	require.Nil(t, p.ExecutionTimeoutMs)
	require.Nil(t, p.TTLMs)
}
