package metrics

import "github.com/prometheus/client_golang/prometheus"

// LimitStats is what the bounds on what requests can make the server hold report at a scrape: the
// HTTP limits (internal/httplimit) and the fleet's per-worker state.
type LimitStats struct {
	Conns, MaxConns            int
	ConnsEvicted, ConnsRefused int64
	BodyBytes, BodyMemory      int64
	BodiesRefused, BodiesSlow  int64
	// What the fleet remembers of workers' requests (fleet.Bounds), against its caps.
	StopSignals, MaxStopSignals int
	Sightings, MaxSightings     int
}

var (
	connsDesc = prometheus.NewDesc("spool_http_connections",
		"Client connections open now.", nil, nil)
	connsMaxDesc = prometheus.NewDesc("spool_http_connections_max",
		"The cap of client connections (limits.connections).", nil, nil)
	connsClosedDesc = prometheus.NewDesc("spool_http_connections_closed_total",
		"Connections closed by the cap: evicted (had not sent a whole request) or refused (every connection was busy).", []string{"reason"}, nil)
	bodyBytesDesc = prometheus.NewDesc("spool_http_body_bytes",
		"Bytes reserved for request bodies being received now.", nil, nil)
	bodyMemoryDesc = prometheus.NewDesc("spool_http_body_bytes_max",
		"The bound of request body bytes being received at once (limits.bodyMemory).", nil, nil)
	bodiesRefusedDesc = prometheus.NewDesc("spool_http_bodies_refused_total",
		"Requests refused for their body: memory (503, over limits.bodyMemory) or slow (408, slower than limits.bodyMinRate).", []string{"reason"}, nil)
	stopSignalsDesc = prometheus.NewDesc("spool_worker_stop_signals",
		"Jobs that workers' pings listed and that they must stop, kept until their job-stop poll.", nil, nil)
	stopSignalsMaxDesc = prometheus.NewDesc("spool_worker_stop_signals_max",
		"The cap of spool_worker_stop_signals, over all workers.", nil, nil)
	sightingsDesc = prometheus.NewDesc("spool_worker_sightings",
		"Workers whose last request is remembered (to write their sightings at most once an interval).", nil, nil)
	sightingsMaxDesc = prometheus.NewDesc("spool_worker_sightings_max",
		"The cap of spool_worker_sightings.", nil, nil)
)

// ObserveLimits exports the HTTP limits' figures, read from stats at each scrape.
func (m *Metrics) ObserveLimits(stats func() LimitStats) {
	m.reg.MustRegister(limitsCollector(stats))
}

type limitsCollector func() LimitStats

func (c limitsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{connsDesc, connsMaxDesc, connsClosedDesc, bodyBytesDesc, bodyMemoryDesc, bodiesRefusedDesc,
		stopSignalsDesc, stopSignalsMaxDesc, sightingsDesc, sightingsMaxDesc} {
		ch <- d
	}
}

func (c limitsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(connsDesc, float64(s.Conns))
	gauge(connsMaxDesc, float64(s.MaxConns))
	counter(connsClosedDesc, s.ConnsEvicted, "evicted")
	counter(connsClosedDesc, s.ConnsRefused, "refused")
	gauge(bodyBytesDesc, float64(s.BodyBytes))
	gauge(bodyMemoryDesc, float64(s.BodyMemory))
	counter(bodiesRefusedDesc, s.BodiesRefused, "memory")
	counter(bodiesRefusedDesc, s.BodiesSlow, "slow")
	gauge(stopSignalsDesc, float64(s.StopSignals))
	gauge(stopSignalsMaxDesc, float64(s.MaxStopSignals))
	gauge(sightingsDesc, float64(s.Sightings))
	gauge(sightingsMaxDesc, float64(s.MaxSightings))
}
