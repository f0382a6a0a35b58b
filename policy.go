package spool

import (
	"log/slog"
	"net/url"
	"time"
)

// Limits of the submission policy, in milliseconds (docs/contract.md §2).
const (
	// MinExecutionTimeoutMs is exclusive: RunPod says the timeout "must be greater than 5 seconds".
	MinExecutionTimeoutMs int64 = 5000
	MaxExecutionTimeoutMs int64 = 7 * 24 * 3600 * 1000
	MinTTLMs              int64 = 10000
	MaxTTLMs              int64 = 7 * 24 * 3600 * 1000

	DefaultExecutionTimeoutMs int64 = 600000
	DefaultTTLMs              int64 = 24 * 3600 * 1000
)

// Policy is a job's effective policy: the submitted values, with the endpoint's defaults filled in.
type Policy struct {
	ExecutionTimeoutMs int64
	TTLMs              int64
	LowPriority        bool
}

// ExecutionTimeout is the policy's execution timeout as a duration.
func (p Policy) ExecutionTimeout() time.Duration {
	return time.Duration(p.ExecutionTimeoutMs) * time.Millisecond
}

// TTL is the policy's queue TTL as a duration.
func (p Policy) TTL() time.Duration { return time.Duration(p.TTLMs) * time.Millisecond }

// ValidateExecutionTimeout checks a policy.executionTimeout value; field names the field for the
// error message.
func ValidateExecutionTimeout(field string, ms int64) error {
	if ms <= MinExecutionTimeoutMs {
		return Errorf(CodeInvalid, "%s must be greater than %d ms, got %d", field, MinExecutionTimeoutMs, ms)
	}
	if ms > MaxExecutionTimeoutMs {
		return Errorf(CodeInvalid, "%s must be at most %d ms (7 days), got %d", field, MaxExecutionTimeoutMs, ms)
	}
	return nil
}

// ValidateTTL checks a policy.ttl value.
func ValidateTTL(field string, ms int64) error {
	if ms < MinTTLMs {
		return Errorf(CodeInvalid, "%s must be at least %d ms, got %d", field, MinTTLMs, ms)
	}
	if ms > MaxTTLMs {
		return Errorf(CodeInvalid, "%s must be at most %d ms (7 days), got %d", field, MaxTTLMs, ms)
	}
	return nil
}

// S3Config is a job's "s3Config": the bucket its worker may upload outputs to. The server validates
// it on submission and then keeps the raw JSON the client sent, so the worker receives exactly what
// the client wrote; the Go SDKs (spoolclient, spoolworker) use this same type. Its String, GoString
// and LogValue methods hide every value, so printing or logging one leaks nothing.
type S3Config struct {
	AccessID     string `json:"accessId"`
	AccessSecret string `json:"accessSecret"`
	BucketName   string `json:"bucketName"`
	EndpointURL  string `json:"endpointUrl"`
	ObjectPath   string `json:"objectPath,omitempty"`
}

// String hides the values.
func (S3Config) String() string { return "S3Config{[redacted]}" }

// GoString hides the values from %#v.
func (c S3Config) GoString() string { return c.String() }

// LogValue hides the values from slog.
func (c S3Config) LogValue() slog.Value { return slog.StringValue(c.String()) }

// Validate checks the required fields. Its messages name fields and never echo values, because the
// values are secrets.
func (c *S3Config) Validate() error {
	for _, f := range []struct{ name, v string }{
		{"accessId", c.AccessID}, {"accessSecret", c.AccessSecret},
		{"bucketName", c.BucketName}, {"endpointUrl", c.EndpointURL},
	} {
		if f.v == "" {
			return Errorf(CodeInvalid, "s3Config.%s is required and must be a non-empty string", f.name)
		}
	}
	u, err := url.Parse(c.EndpointURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Errorf(CodeInvalid, "s3Config.endpointUrl must be an http or https URL")
	}
	return nil
}
