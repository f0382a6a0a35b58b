package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"strconv"
	"strings"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/engine"
	"github.com/spool-run/spool/internal/wire"
)

// submitBody is the top level of a /run or /runsync body. Every member is kept raw and checked by
// hand, so errors name the field and never echo a value; unknown members are dropped. The members
// are slices of the body (wire.Raw): the input is stored from the buffer it arrived in.
type submitBody struct {
	Input    wire.Raw `json:"input"`
	Webhook  wire.Raw `json:"webhook"`
	Policy   wire.Raw `json:"policy"`
	S3Config wire.Raw `json:"s3Config"`
}

// decodeSubmit decodes a /run or /runsync body into SubmitParams (without Endpoint and Sync).
// input and s3Config keep the client's bytes. Range checks of the policy values are the engine's.
func decodeSubmit(body []byte) (engine.SubmitParams, error) {
	var p engine.SubmitParams
	if len(bytes.TrimSpace(body)) == 0 {
		return p, invalid(`"input" is required: send a JSON object such as {"input": {...}}`)
	}
	var b submitBody
	if err := json.Unmarshal(body, &b); err != nil {
		return p, jsonError(err, "request body")
	}
	if len(b.Input) == 0 || b.Input.Null() {
		return p, invalid(`"input" is required and must not be null`)
	}
	p.Input = b.Input.RawMessage()
	if len(b.Webhook) > 0 && !b.Webhook.Null() {
		if err := json.Unmarshal(b.Webhook, &p.Webhook); err != nil {
			return p, invalid(`"webhook" must be a string`)
		}
	}
	if len(b.Policy) > 0 && !b.Policy.Null() {
		if err := decodePolicy(b.Policy.RawMessage(), &p); err != nil {
			return p, err
		}
	}
	if len(b.S3Config) > 0 && !b.S3Config.Null() {
		if err := checkS3Config(b.S3Config.RawMessage()); err != nil {
			return p, err
		}
		p.S3Config = b.S3Config.RawMessage()
	}
	return p, nil
}

func decodePolicy(raw json.RawMessage, p *engine.SubmitParams) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return invalid(`"policy" must be an object`)
	}
	var err error
	if p.ExecutionTimeoutMs, err = policyInt(m, "executionTimeout"); err != nil {
		return err
	}
	if p.TTLMs, err = policyInt(m, "ttl"); err != nil {
		return err
	}
	if v, ok := m["lowPriority"]; ok && !isNull(v) {
		if err := json.Unmarshal(v, &p.LowPriority); err != nil {
			return invalid("policy.lowPriority must be true or false")
		}
	}
	return nil
}

// policyInt reads an integer number of milliseconds: a JSON number without fraction or exponent.
// Absent or null gives nil (the endpoint's default).
func policyInt(m map[string]json.RawMessage, name string) (*int64, error) {
	v, ok := m[name]
	if !ok || isNull(v) {
		return nil, nil
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return nil, spool.Errorf(spool.CodeInvalid, "policy.%s must be an integer number of milliseconds", name)
	}
	return &n, nil
}

// checkS3Config validates s3Config: an object whose known members are strings, with the required
// ones set and endpointUrl an http(s) URL. Messages name fields, never values: they are secrets.
func checkS3Config(raw json.RawMessage) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return invalid(`"s3Config" must be an object`)
	}
	var c spool.S3Config
	for _, f := range []struct {
		name string
		dst  *string
	}{
		{"accessId", &c.AccessID}, {"accessSecret", &c.AccessSecret}, {"bucketName", &c.BucketName},
		{"endpointUrl", &c.EndpointURL}, {"objectPath", &c.ObjectPath},
	} {
		v, ok := m[f.name]
		if !ok || isNull(v) {
			continue
		}
		if err := json.Unmarshal(v, f.dst); err != nil {
			return spool.Errorf(spool.CodeInvalid, "s3Config.%s must be a string", f.name)
		}
	}
	return c.Validate()
}

// jsonError turns a decoding error into a 400 that never quotes the body.
func jsonError(err error, what string) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn) && strings.Contains(syn.Error(), "after top-level value"):
		return invalid("malformed JSON: unexpected data after the top-level object")
	case errors.As(err, &syn):
		// The decoder quotes the offending character, which may be one of an s3Config secret.
		msg := quotedChar.ReplaceAllString(syn.Error(), "invalid character")
		return spool.Errorf(spool.CodeInvalid, "malformed JSON: %s (at byte %d)", msg, syn.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return invalid("malformed JSON: unexpected end of input")
	case errors.As(err, &typ) && typ.Field == "":
		return spool.Errorf(spool.CodeInvalid, "%s must be a JSON object", what)
	case errors.As(err, &typ):
		return spool.Errorf(spool.CodeInvalid, "%s has the wrong type: got a JSON %s", typ.Field, typ.Value)
	}
	return spool.Errorf(spool.CodeInvalid, "malformed JSON: %s", err.Error())
}

// quotedChar matches encoding/json's quoting of the character a syntax error is about.
var quotedChar = regexp.MustCompile(`invalid character '(\\'|[^']+)'`)

func isNull(v json.RawMessage) bool { return string(v) == "null" }

func invalid(msg string) error { return &spool.Error{Code: spool.CodeInvalid, Message: msg} }
