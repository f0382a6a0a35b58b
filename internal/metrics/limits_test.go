package metrics_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/spool-run/spool/internal/metrics"
)

// TestObserveLimits: the limits' figures are read at each scrape.
func TestObserveLimits(t *testing.T) {
	t.Parallel()
	m := metrics.New(metrics.Config{})
	n := int64(0)
	m.ObserveLimits(func() metrics.LimitStats {
		n++
		return metrics.LimitStats{Conns: 3, MaxConns: 768, ConnsEvicted: n, ConnsRefused: 2, BodyBytes: 1024, BodyMemory: 1 << 28, BodiesRefused: 5, BodiesSlow: 6}
	})
	out := scrape(t, m)
	for _, line := range []string{
		"spool_http_connections 3", "spool_http_connections_max 768",
		`spool_http_connections_closed_total{reason="evicted"} 1`, `spool_http_connections_closed_total{reason="refused"} 2`,
		"spool_http_body_bytes 1024", "spool_http_body_bytes_max 2.68435456e+08",
		`spool_http_bodies_refused_total{reason="memory"} 5`, `spool_http_bodies_refused_total{reason="slow"} 6`,
	} {
		require.Contains(t, out, line+"\n")
	}
	require.Contains(t, scrape(t, m), `spool_http_connections_closed_total{reason="evicted"} 2`+"\n")
}
