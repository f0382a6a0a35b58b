package httpapi_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestS3ConfigValidationNamesTheFieldNeverTheValue: every way an s3Config can be wrong gives a 400
// that names the field, and no part of any value shows in the answer, not even the one character
// a JSON syntax error is about.
func TestS3ConfigValidationNamesTheFieldNeverTheValue(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const canary = "QzCANARYxq"
	field := func(name, value string) string {
		m := map[string]string{
			"accessId": `"id-` + canary + `"`, "accessSecret": `"sk-` + canary + `"`,
			"bucketName": `"bk-` + canary + `"`, "endpointUrl": `"http://` + strings.ToLower(canary) + `.example"`,
		}
		if value == "" {
			delete(m, name)
		} else {
			m[name] = value
		}
		var parts []string
		for k, v := range m {
			parts = append(parts, `"`+k+`":`+v)
		}
		return `{"input":1,"s3Config":{` + strings.Join(parts, ",") + `}}`
	}
	cases := []struct{ name, body, msg string }{
		{"array", `{"input":1,"s3Config":["` + canary + `"]}`, `"s3Config" must be an object`},
		{"number", `{"input":1,"s3Config":7}`, `"s3Config" must be an object`},
		{"endpointUrl no scheme", field("endpointUrl", `"`+canary+`.example"`), "s3Config.endpointUrl must be an http or https URL"},
		{"endpointUrl ftp", field("endpointUrl", `"ftp://`+canary+`"`), "s3Config.endpointUrl must be an http or https URL"},
		{"endpointUrl no host", field("endpointUrl", `"http:///`+canary+`"`), "s3Config.endpointUrl must be an http or https URL"},
		{"endpointUrl unparsable", field("endpointUrl", `"http://[`+canary+`"`), "s3Config.endpointUrl must be an http or https URL"},
		{"objectPath bool", field("objectPath", `true`), "s3Config.objectPath must be a string"},
		{"syntax error inside", `{"input":1,"s3Config":{"accessSecret":"` + canary + `" Q}}`, "malformed JSON"},
		{"syntax error quote", `{"input":1,"s3Config":{"accessSecret":'` + canary + `'}}`, "malformed JSON"},
	}
	for _, name := range []string{"accessId", "accessSecret", "bucketName", "endpointUrl"} {
		cases = append(cases,
			struct{ name, body, msg string }{name + " missing", field(name, ""), "s3Config." + name + " is required"},
			struct{ name, body, msg string }{name + " empty", field(name, `""`), "s3Config." + name + " is required"},
			struct{ name, body, msg string }{name + " null", field(name, `null`), "s3Config." + name + " is required"},
			struct{ name, body, msg string }{name + " number", field(name, `12345`), "s3Config." + name + " must be a string"},
			struct{ name, body, msg string }{name + " object", field(name, `{"v":"`+canary+`"}`), "s3Config." + name + " must be a string"},
		)
	}
	for _, c := range cases {
		for _, route := range []string{"/v2/ep/run", "/v2/ep/runsync"} {
			r := e.do("POST", route, e.client, c.body)
			require.Equal(t, 400, r.status, "%s %s: %s", route, c.name, r.body)
			require.Contains(t, errMsg(t, r), c.msg, c.name)
			require.NotContains(t, r.body, canary, c.name)
			require.NotContains(t, strings.ToLower(r.body), strings.ToLower(canary), c.name)
			require.NotContains(t, r.body, "12345", c.name)
			require.NotContains(t, r.body, "'Q'", "%s: a syntax error does not quote the character", c.name)
		}
	}
	r := e.do("POST", "/v2/ep/run", e.client, field("objectPath", `"out/`+canary+`/"`))
	require.Equal(t, 200, r.status, "objectPath is optional and free-form: %s", r.body)
	require.NotContains(t, r.body, canary)
}

// TestRetryOfAJobWithS3ConfigIsRefused: the s3Config was erased when the job failed, so /retry
// answers 400 saying so, and the job stays FAILED.
func TestRetryOfAJobWithS3ConfigIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.run("ep", `{"input":1,"s3Config":{"accessId":"a","accessSecret":"CANARY-s","bucketName":"b","endpointUrl":"http://127.0.0.1:9"}}`)
	p := e.take("w1")
	require.Contains(t, string(p["s3Config"]), "CANARY-s")
	require.Equal(t, 200, e.post("job-done", "w1", id, `{"error":"boom"}`).status)
	r := e.do("POST", "/v2/ep/retry/"+id, e.client, "")
	require.Equal(t, 400, r.status, r.body)
	msg := errMsg(t, r)
	require.Contains(t, msg, "s3Config")
	require.Contains(t, msg, "submit the job again")
	require.NotContains(t, r.body, "CANARY")
	require.Equal(t, `"FAILED"`, string(e.status(id)["status"]))
}
