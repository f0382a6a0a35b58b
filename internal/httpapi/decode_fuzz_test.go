package httpapi

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
)

func FuzzDecodeSubmit(f *testing.F) {
	for _, seed := range []string{
		``, `{}`, `null`, `[]`, `{"input":null}`, `{"input":1}`, `{"input":{"b":1, "a":[1.0,2e3]}}`,
		`{"input":1} x`, `{"input":1,"policy":{"executionTimeout":6000,"ttl":10000,"lowPriority":true}}`,
		`{"input":1,"policy":{"executionTimeout":6000.0}}`, `{"input":1,"webhook":5}`,
		`{"input":1,"s3Config":{"accessId":"a","accessSecret":"s","bucketName":"b","endpointUrl":"http://x"}}`,
		`{"input":1,"s3Config":{"accessSecret":7}}`, `{"Input":"case"}`, `{"input":"\ud800"}`, "{\"input\":\"\xff\"}",
		`{"input":1,"input":null}`, `{"input":[1,{"policy":{}}]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := decodeSubmit(body)
		if err != nil {
			require.Equal(t, spool.CodeInvalid, spool.ErrorCode(err), err.Error())
			return
		}
		require.NotEmpty(t, p.Input)
		require.NotEqual(t, "null", string(p.Input))
		require.True(t, json.Valid(p.Input), string(p.Input))
		require.True(t, bytes.Contains(body, p.Input), "input must be the client's bytes")
		require.True(t, json.Valid(bytes.TrimSpace(body)))
		if p.S3Config != nil {
			require.True(t, json.Valid(p.S3Config))
			require.Equal(t, byte('{'), p.S3Config[0])
			var c spool.S3Config
			require.NoError(t, json.Unmarshal(p.S3Config, &c))
			require.NoError(t, c.Validate())
		}
		if p.ExecutionTimeoutMs != nil || p.TTLMs != nil {
			require.Contains(t, string(body), "policy")
		}
	})
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
