package e2e_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

// TestMetrics runs a known sequence of jobs through a real server and reads /metrics with the
// Prometheus text parser: job counts by final state, execution-time and queue-delay histograms,
// queue depth by priority, workers by state, HTTP requests by route pattern and code, and the
// build; no job id or s3Config value in any label.
func TestMetrics(t *testing.T) {
	t.Parallel()
	s := startServer(t, serverOpts{Config: "endpoints:\n  - name: ep\n"})
	admin := adminHeader(s)
	worker := http.Header{"Authorization": {s.Keys.Worker}} // raw, as runpod-python sends it
	const canary = "canary-metrics-5e2a"
	var ids []string
	for _, body := range []string{
		`{"input":{"n":1},"s3Config":{"accessId":"` + canary + `","accessSecret":"` + canary + `","bucketName":"b","endpointUrl":"https://s3.example.com"}}`,
		`{"input":{"n":2}}`, `{"input":{"n":3}}`, `{"input":{"n":4},"policy":{"lowPriority":true}}`,
	} {
		r := s.do(t, "POST", "/v2/ep/run", admin, []byte(body))
		require.Equal(t, 200, r.Code, "%s", r)
		var j struct{ ID string }
		require.NoError(t, json.Unmarshal(r.Body, &j))
		ids = append(ids, j.ID)
	}
	for i, result := range []string{`{"output":"ok"}`, `{"error":"boom"}`} {
		r := s.do(t, "GET", "/v2/ep/job-take/w1?gpu=none&job_in_progress=0", worker, nil)
		require.Equal(t, 200, r.Code, "%s", r)
		require.Contains(t, string(r.Body), ids[i], "normal jobs first, in order")
		r = s.do(t, "POST", "/v2/ep/job-done/w1/"+ids[i]+"?gpu=none", worker, []byte(result))
		require.Equal(t, 200, r.Code, "%s", r)
	}

	r := s.do(t, "GET", "/metrics", nil, nil)
	require.Equal(t, 200, r.Code)
	require.NotContains(t, string(r.Body), canary)
	for _, id := range ids {
		require.NotContains(t, string(r.Body), id, "job ids are never labels")
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(r.Body))
	require.NoError(t, err)
	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		f, ok := families[name]
		require.True(t, ok, "no metric %s", name)
		for _, m := range f.GetMetric() {
			if matches(m, labels) {
				switch {
				case m.Counter != nil:
					return m.GetCounter().GetValue()
				case m.Gauge != nil:
					return m.GetGauge().GetValue()
				case m.Histogram != nil:
					return float64(m.GetHistogram().GetSampleCount())
				}
			}
		}
		t.Fatalf("no %s with %v", name, labels)
		return 0
	}
	ep := map[string]string{"endpoint": "ep"}
	require.Equal(t, 4.0, value("spool_jobs_submitted_total", ep))
	require.Equal(t, 2.0, value("spool_jobs_started_total", ep))
	require.Equal(t, 2.0, value("spool_job_queue_delay_seconds", ep), "one delay per take")
	require.Equal(t, 1.0, value("spool_jobs_finished_total", map[string]string{"endpoint": "ep", "state": "COMPLETED"}))
	require.Equal(t, 1.0, value("spool_jobs_finished_total", map[string]string{"endpoint": "ep", "state": "FAILED"}))
	require.Equal(t, 1.0, value("spool_job_execution_seconds", map[string]string{"endpoint": "ep", "state": "COMPLETED"}))
	require.Equal(t, 1.0, value("spool_job_execution_seconds", map[string]string{"endpoint": "ep", "state": "FAILED"}))
	require.Equal(t, 2.0, value("spool_jobs", map[string]string{"endpoint": "ep", "state": "IN_QUEUE"}))
	require.Equal(t, 1.0, value("spool_queue_depth", map[string]string{"endpoint": "ep", "priority": "normal"}))
	require.Equal(t, 1.0, value("spool_queue_depth", map[string]string{"endpoint": "ep", "priority": "low"}))
	require.Equal(t, 1.0, value("spool_workers", map[string]string{"endpoint": "ep", "state": "idle"}), "w1, seen, holding nothing")
	require.Equal(t, 0.0, value("spool_workers", map[string]string{"endpoint": "ep", "state": "running"}))
	require.Equal(t, 4.0, value("spool_http_requests_total", map[string]string{"route": "POST /v2/{endpoint}/run", "code": "200"}))
	require.Equal(t, 2.0, value("spool_http_requests_total", map[string]string{"route": "GET /v2/{endpoint}/job-take/{worker}", "code": "200"}))
	require.Equal(t, 4.0, value("spool_http_request_duration_seconds", map[string]string{"route": "POST /v2/{endpoint}/run"}))
	require.Equal(t, 1.0, value("spool_build_info", nil))
}

// matches reports whether m carries every label of want.
func matches(m *dto.Metric, want map[string]string) bool {
	have := map[string]string{}
	for _, l := range m.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}
