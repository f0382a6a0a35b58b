package e2e_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

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
	value := parseMetrics(t, r.Body)
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

// TestWorkerMetrics: a worker Spool starts, which takes a job and crashes, is a cold start and a
// restart; every write is a group commit of the store.
func TestWorkerMetrics(t *testing.T) {
	t.Parallel()
	crasher := buildExample(t, "./internal/autoscale/testdata/worker")
	s := startServer(t, serverOpts{Config: "endpoints:\n  - name: auto\n    workersMax: 1\n    worker:\n      command: " + crasher + "\n"})
	r := s.do(t, "POST", "/v2/auto/run", adminHeader(s), []byte(`{"input":{"crash":3}}`))
	require.Equal(t, 200, r.Code, "%s", r)
	deadline := time.Now().Add(60 * time.Second)
	for {
		r = s.do(t, "GET", "/metrics", nil, nil)
		if bytes.Contains(r.Body, []byte(`spool_worker_restarts_total{endpoint="auto",reason="failed"}`)) {
			break
		}
		require.True(t, time.Now().Before(deadline), "no restart counted: %s", grepLines(r.Body, "spool_worker"))
		<-time.After(50 * time.Millisecond) // polls a real worker process's crash
	}
	value := parseMetrics(t, r.Body)
	auto := map[string]string{"endpoint": "auto"}
	require.GreaterOrEqual(t, value("spool_worker_cold_start_seconds", auto), 1.0)
	require.GreaterOrEqual(t, value("spool_worker_restarts_total", map[string]string{"endpoint": "auto", "reason": "failed"}), 1.0)
	commits := value("spool_store_commit_seconds", nil)
	require.GreaterOrEqual(t, commits, 5.0, "every write above is committed")
	require.Equal(t, commits, value("spool_store_commit_writes", nil), "one batch size per commit")
}

// parseMetrics parses a /metrics answer with the Prometheus text parser and returns a lookup of
// one series: a counter's or gauge's value, or a histogram's count of samples.
func parseMetrics(t *testing.T, body []byte) func(name string, labels map[string]string) float64 {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	require.NoError(t, err)
	return func(name string, labels map[string]string) float64 {
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

// grepLines returns the lines of b that hold s.
func grepLines(b []byte, s string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
