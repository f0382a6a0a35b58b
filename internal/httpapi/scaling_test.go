package httpapi_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestScaling: GET /api/endpoints/{name}/scaling answers the worker count the endpoint's scaler
// wants from its normal-priority queue (low priority is shown, never counted), for KEDA.
func TestScaling(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	type scaling struct {
		Endpoint                 string
		WantedWorkers            int
		Why                      string
		QueueDepth               int
		LowPriorityQueueDepth    int
		InProgress, OldestWaitMs int
		WorkersMin, WorkersMax   int
	}
	get := func(name string) scaling {
		r := e.do("GET", "/api/endpoints/"+name+"/scaling", e.admin, "")
		require.Equal(t, 200, r.status, r.body)
		var s scaling
		require.NoError(t, json.Unmarshal([]byte(r.body), &s))
		return s
	}

	// QUEUE_DELAY (the default): nothing queued wants no worker; a queue wants at least one.
	s := get("ep")
	require.Equal(t, scaling{Endpoint: "ep", WorkersMax: 3, Why: s.Why}, s)
	for range 3 {
		r := e.do("POST", "/v2/ep/run", e.client, `{"input":{},"policy":{"lowPriority":true}}`)
		require.Equal(t, 200, r.status, r.body)
	}
	s = get("ep")
	require.Equal(t, 0, s.WantedWorkers, "low-priority jobs add no worker: %s", s.Why)
	require.Equal(t, 3, s.LowPriorityQueueDepth)
	for range 5 {
		r := e.do("POST", "/v2/ep/run", e.client, `{"input":{}}`)
		require.Equal(t, 200, r.status, r.body)
	}
	e.fake.Advance(1500 * time.Millisecond)
	s = get("ep")
	require.Equal(t, 1, s.WantedWorkers, s.Why)
	require.Equal(t, 5, s.QueueDepth)
	require.Equal(t, 1500, s.OldestWaitMs)

	// REQUEST_COUNT: ceil((queued + running) / scalerValue), capped at workersMax.
	r := e.do("PUT", "/api/endpoints/ep", e.admin, `{"name":"ep","scalerType":"REQUEST_COUNT","scalerValue":2,"workersMax":2}`)
	require.Equal(t, 200, r.status, r.body)
	s = get("ep")
	require.Equal(t, 2, s.WantedWorkers, "ceil(5/2) = 3, capped at 2: %s", s.Why)
	require.Contains(t, s.Why, "capped at workersMax 2")

	// Readable with a read-only admin key (KEDA's), not with a client key; unknown endpoints 404.
	r = e.do("POST", "/api/keys", e.admin, `{"name":"keda","scope":"admin","readOnly":true}`)
	require.Equal(t, 201, r.status, r.body)
	var k struct{ Key string }
	require.NoError(t, json.Unmarshal([]byte(r.body), &k))
	require.Equal(t, 200, e.do("GET", "/api/endpoints/ep/scaling", "Bearer "+k.Key, "").status)
	require.Equal(t, 403, e.do("GET", "/api/endpoints/ep/scaling", e.client, "").status)
	require.Equal(t, 404, e.do("GET", "/api/endpoints/nope/scaling", e.admin, "").status)
}
