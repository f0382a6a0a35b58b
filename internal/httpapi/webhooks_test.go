package httpapi_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool"
)

// TestEndpointWebhookSecretNeverShown: the secret is settable through /api/endpoints but never
// returned (hasWebhookSecret instead); a PUT without it keeps it, "" removes it, and a GET answer
// can be PUT back as is.
func TestEndpointWebhookSecretNeverShown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	secret := spool.NewWebhookSecret()
	b64 := strings.TrimPrefix(secret, "whsec_")
	r := e.do("POST", "/api/endpoints", e.admin, `{"name":"hooks","webhookSecret":"`+secret+`","webhookAttempts":5,"webhookBackoff":"exponential","webhookTimeoutMs":2000}`)
	require.Equal(t, http.StatusCreated, r.status, r.body)
	require.NotContains(t, r.body, b64)
	m := obj(t, r.body)
	require.NotContains(t, m, "webhookSecret")
	require.Equal(t, "true", string(m["hasWebhookSecret"]))
	require.Equal(t, "5", string(m["webhookAttempts"]))
	require.Equal(t, `"exponential"`, string(m["webhookBackoff"]))
	ep, err := e.eng.Endpoint("hooks")
	require.NoError(t, err)
	require.Equal(t, secret, ep.WebhookSecret, "stored")

	for _, path := range []string{"/api/endpoints/hooks", "/api/endpoints"} {
		r = e.do("GET", path, e.admin, "")
		require.Equal(t, 200, r.status)
		require.NotContains(t, r.body, b64, path)
		require.Contains(t, r.body, `"hasWebhookSecret":true`, path)
	}

	// GET, edit, PUT back: the secret stays.
	r = e.do("GET", "/api/endpoints/hooks", e.admin, "")
	body := strings.Replace(r.body, `"webhookAttempts":5`, `"webhookAttempts":7`, 1)
	r = e.do("PUT", "/api/endpoints/hooks", e.admin, body)
	require.Equal(t, 200, r.status, r.body)
	require.Equal(t, "7", string(obj(t, r.body)["webhookAttempts"]))
	ep, _ = e.eng.Endpoint("hooks")
	require.Equal(t, secret, ep.WebhookSecret, "an omitted secret is kept")

	// Rotation: two secrets. Then "" removes them.
	second := spool.NewWebhookSecret()
	r = e.do("PUT", "/api/endpoints/hooks", e.admin, `{"webhookSecret":"`+secret+` `+second+`"}`)
	require.Equal(t, 200, r.status, r.body)
	ep, _ = e.eng.Endpoint("hooks")
	require.Equal(t, secret+" "+second, ep.WebhookSecret)
	r = e.do("PUT", "/api/endpoints/hooks", e.admin, `{"webhookSecret":""}`)
	require.Equal(t, 200, r.status, r.body)
	require.Contains(t, r.body, `"hasWebhookSecret":false`)
	ep, _ = e.eng.Endpoint("hooks")
	require.Empty(t, ep.WebhookSecret)

	for body, msg := range map[string]string{
		`{"name":"x","webhookSecret":"` + b64 + `"}`:                 `must start with "whsec_"`,
		`{"name":"x","webhookSecret":"whsec_short"}`:                 "base64",
		`{"name":"x","webhookAttempts":0.5}`:                         "webhookAttempts has the wrong type",
		`{"name":"x","webhookBackoff":"sometimes"}`:                  "webhookBackoff must be",
		`{"name":"x","webhookTimeoutMs":10}`:                         "webhookTimeoutMs must be between",
		`{"name":"x","webhookDelayMs":1000,"webhookMaxDelayMs":500}`: "webhookMaxDelayMs must not be less",
	} {
		r := e.do("POST", "/api/endpoints", e.admin, body)
		require.Equal(t, 400, r.status, body)
		require.Contains(t, errMsg(t, r), msg, body)
		require.NotContains(t, r.body, b64)
	}
}

// TestSubmitValidatesWebhook: a webhook that is not an http(s) URL without user information is
// refused at submission (400), without echoing it.
func TestSubmitValidatesWebhook(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for url, msg := range map[string]string{
		"ftp://files.example/x":              "http or https",
		"file:///etc/passwd":                 "http or https",
		"http://user:hunter2@hooks.example/": "user information",
		"not a url":                          "spaces",
		"/relative":                          "http or https",
		"http://":                            "with a host",
	} {
		r := e.do("POST", "/v2/ep/run", e.client, `{"input":1,"webhook":"`+url+`"}`)
		require.Equal(t, 400, r.status, url)
		require.Contains(t, errMsg(t, r), msg, url)
		require.NotContains(t, r.body, "hunter2")
	}
	// The IP is decided when the webhook is sent, not at submission.
	require.Equal(t, 200, e.do("POST", "/v2/ep/run", e.client, `{"input":1,"webhook":"http://127.0.0.1:9/x"}`).status)
}

// TestWebhookDeliveriesRoutes: GET /api/jobs/{id}/webhook lists a job's deliveries with their
// attempts; POST .../redeliver queues a new one (new id, same payload).
func TestWebhookDeliveriesRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.run("ep", `{"input":{"x":1},"webhook":"https://hooks.example/h?t=1"}`)

	// Not ended yet: no delivery, nothing to redeliver.
	r := e.do("GET", "/api/jobs/"+id+"/webhook", e.admin, "")
	require.Equal(t, 200, r.status, r.body)
	require.JSONEq(t, `{"jobId":"`+id+`","deliveries":[]}`, r.body)
	r = e.do("POST", "/api/jobs/"+id+"/webhook/redeliver", e.admin, "")
	require.Equal(t, 400, r.status)
	require.Contains(t, errMsg(t, r), "is IN_QUEUE")

	e.take("w1")
	e.fake.Advance(time.Second)
	require.Equal(t, 200, e.post("job-done", "w1", id, `{"output":{"y":2}}`).status)

	r = e.do("GET", "/api/jobs/"+id+"/webhook", e.admin, "")
	require.Equal(t, 200, r.status, r.body)
	var v struct {
		JobID      string
		Deliveries []struct {
			ID, URL, Status, CreatedAt, NextAttemptAt, FinishedAt, RedeliveryOf string
			Attempts                                                            []json.RawMessage
		}
	}
	require.NoError(t, json.Unmarshal([]byte(r.body), &v))
	require.Equal(t, id, v.JobID)
	require.Len(t, v.Deliveries, 1)
	d := v.Deliveries[0]
	require.True(t, strings.HasPrefix(d.ID, "msg_"))
	require.Equal(t, "https://hooks.example/h?t=1", d.URL)
	require.Equal(t, "pending", d.Status)
	require.Equal(t, "2026-01-01T00:00:01.000Z", d.CreatedAt)
	require.Equal(t, d.CreatedAt, d.NextAttemptAt)
	require.Empty(t, d.Attempts)

	r = e.do("POST", "/api/jobs/"+id+"/webhook/redeliver", e.admin, "")
	require.Equal(t, http.StatusAccepted, r.status, r.body)
	m := obj(t, r.body)
	require.Equal(t, d.ID, sval(t, m["redeliveryOf"]))
	require.NotEqual(t, d.ID, sval(t, m["id"]))
	require.Equal(t, `"pending"`, string(m["status"]))
	require.Equal(t, `[]`, string(m["attempts"]))

	r = e.do("GET", "/api/jobs/"+id+"/webhook", e.admin, "")
	require.NoError(t, json.Unmarshal([]byte(r.body), &v))
	require.Len(t, v.Deliveries, 2)

	require.Equal(t, 404, e.do("GET", "/api/jobs/nope/webhook", e.admin, "").status)
	require.Equal(t, 404, e.do("POST", "/api/jobs/nope/webhook/redeliver", e.admin, "").status)
	require.Equal(t, 403, e.do("GET", "/api/jobs/"+id+"/webhook", e.client, "").status, "admin only")

	plain := e.run("ep", `{"input":1}`)
	r = e.do("POST", "/api/jobs/"+plain+"/webhook/redeliver", e.admin, "")
	require.Equal(t, 400, r.status)
	require.Contains(t, errMsg(t, r), "has no webhook")
}
