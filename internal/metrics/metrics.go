// Package metrics exposes Spool's Prometheus metrics. Labels carry endpoint names, states and
// reasons only: never ids, inputs, keys or s3Config values.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/version"
	"github.com/spool-run/spool/store"
)

// Metrics holds the registry and implements engine.Observer.
type Metrics struct {
	reg       *prometheus.Registry
	submitted *prometheus.CounterVec
	started   *prometheus.CounterVec
	delay     *prometheus.HistogramVec
	finished  *prometheus.CounterVec
	ran       *prometheus.HistogramVec
	requeued  *prometheus.CounterVec

	httpRequests *prometheus.CounterVec
	httpLatency  *prometheus.HistogramVec

	coldStarts    *prometheus.HistogramVec
	restarts      *prometheus.CounterVec
	commitLatency prometheus.Histogram
	commitWrites  prometheus.Histogram

	webhookAttempts   *prometheus.CounterVec
	webhookLatency    *prometheus.HistogramVec
	webhookDeliveries *prometheus.CounterVec
}

// Config says where the scrape-time gauges come from.
type Config struct {
	// Store is counted at scrape time for the per-state job gauges.
	Store store.Store
	// Endpoints lists the endpoint names to count.
	Endpoints func() []string
	// StoreStats, when set, reports the store's write batching (sqlitestore.Store.Stats).
	StoreStats func() (batches, ops int64)
	// Workers, when set, counts an endpoint's workers by state at scrape time (fleet.Counts).
	Workers func(ctx context.Context, endpoint string) (map[spool.WorkerState]int, error)
	Logger  *slog.Logger
}

// New returns metrics registered on a fresh registry (with Go runtime and process collectors).
func New(cfg Config) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		submitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spool_jobs_submitted_total", Help: "Jobs accepted by /run and /runsync.",
		}, []string{"endpoint"}),
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spool_jobs_started_total", Help: "Jobs handed to a worker (takes).",
		}, []string{"endpoint"}),
		delay: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "spool_job_queue_delay_seconds", Help: "Time jobs waited in the queue before a take (delayTime).",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 10),
		}, []string{"endpoint"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spool_jobs_finished_total", Help: "Jobs that reached a terminal state.",
		}, []string{"endpoint", "state"}),
		ran: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "spool_job_execution_seconds", Help: "Time jobs ran, from the take to their end (executionTime), by final state.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
		}, []string{"endpoint", "state"}),
		requeued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spool_jobs_requeued_total", Help: "Jobs sent back to the queue (lost_worker, undelivered, retry).",
		}, []string{"endpoint", "reason"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spool_http_requests_total", Help: "HTTP requests answered, by route pattern and status code.",
		}, []string{"route", "code"}),
		httpLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "spool_http_request_duration_seconds", Help: "Time to answer HTTP requests (long-polls included), by route pattern.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 11),
		}, []string{"route"}),
	}
	m.webhookAttempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "spool_webhook_attempts_total",
		Help: "Webhook delivery attempts by outcome (success, http_error, timeout, refused, network_error).",
	}, []string{"endpoint", "outcome"})
	m.webhookLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "spool_webhook_attempt_duration_seconds", Help: "Duration of webhook delivery attempts, by outcome.",
		Buckets: prometheus.ExponentialBuckets(0.005, 3, 10),
	}, []string{"endpoint", "outcome"})
	m.webhookDeliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "spool_webhook_deliveries_total", Help: "Webhook deliveries that ended, by outcome (delivered, failed).",
	}, []string{"endpoint", "outcome"})
	m.reg.MustRegister(m.webhookAttempts, m.webhookLatency, m.webhookDeliveries)
	m.coldStarts = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "spool_worker_cold_start_seconds", Help: "Time from a worker's start to its first job-take request, for the workers Spool starts.",
		Buckets: prometheus.ExponentialBuckets(0.1, 2.5, 10),
	}, []string{"endpoint"})
	m.restarts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "spool_worker_restarts_total", Help: "Workers Spool replaced, by reason (failed, overdue, refresh).",
	}, []string{"endpoint", "reason"})
	m.commitLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "spool_store_commit_seconds", Help: "Time of the store's commits, from the first statement to the durable COMMIT (fsync or WAL flush) included.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 3, 10),
	})
	m.commitWrites = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "spool_store_commit_writes", Help: "Writes per commit of the store (a group commit carries several).",
		Buckets: prometheus.ExponentialBuckets(1, 2, 10),
	})
	m.reg.MustRegister(m.coldStarts, m.restarts, m.commitLatency, m.commitWrites)
	build := version.Get()
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "spool_build_info", Help: "Always 1; the labels say which Spool this is.",
		ConstLabels: prometheus.Labels{"version": build.Version, "revision": build.Revision, "goversion": build.Go},
	})
	buildInfo.Set(1)
	m.reg.MustRegister(m.submitted, m.started, m.delay, m.finished, m.ran, m.requeued, m.httpRequests, m.httpLatency, buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if cfg.Store != nil && cfg.Endpoints != nil {
		m.reg.MustRegister(&jobsCollector{cfg: cfg})
	}
	if cfg.StoreStats != nil {
		m.reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "spool_store_commits_total", Help: "Write transactions committed by the store (group commits).",
			}, func() float64 { b, _ := cfg.StoreStats(); return float64(b) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "spool_store_writes_total", Help: "Writes committed by the store; writes/commits is the group-commit size.",
			}, func() float64 { _, o := cfg.StoreStats(); return float64(o) }),
		)
	}
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func (m *Metrics) JobSubmitted(endpoint string) { m.submitted.WithLabelValues(endpoint).Inc() }

func (m *Metrics) JobStarted(endpoint string, delay time.Duration) {
	m.started.WithLabelValues(endpoint).Inc()
	m.delay.WithLabelValues(endpoint).Observe(delay.Seconds())
}

func (m *Metrics) JobFinished(endpoint string, state spool.State, ran time.Duration, taken bool) {
	m.finished.WithLabelValues(endpoint, string(state)).Inc()
	if taken {
		m.ran.WithLabelValues(endpoint, string(state)).Observe(ran.Seconds())
	}
}

// ColdStart records a worker's cold start (fleet.Config.OnColdStart).
func (m *Metrics) ColdStart(endpoint string, d time.Duration) {
	m.coldStarts.WithLabelValues(endpoint).Observe(d.Seconds())
}

// WorkerRestart counts a worker Spool replaced (autoscale.Config.OnRestart).
func (m *Metrics) WorkerRestart(endpoint, reason string) {
	m.restarts.WithLabelValues(endpoint, reason).Inc()
}

// StoreCommit records one commit of the store (sqlitestore and pgstore Store.OnCommit).
func (m *Metrics) StoreCommit(d time.Duration, writes int) {
	m.commitLatency.Observe(d.Seconds())
	m.commitWrites.Observe(float64(writes))
}

// Request counts one answered HTTP request. route is the pattern that served it ("" for none),
// never the path, which holds ids.
func (m *Metrics) Request(route string, code int, d time.Duration) {
	if route == "" {
		route = "unmatched"
	}
	m.httpRequests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.httpLatency.WithLabelValues(route).Observe(d.Seconds())
}

func (m *Metrics) JobRequeued(endpoint, reason string) {
	m.requeued.WithLabelValues(endpoint, reason).Inc()
}

// WebhookAttempt counts one webhook attempt and its duration (webhook.Observer).
func (m *Metrics) WebhookAttempt(endpoint, outcome string, d time.Duration) {
	m.webhookAttempts.WithLabelValues(endpoint, outcome).Inc()
	m.webhookLatency.WithLabelValues(endpoint, outcome).Observe(d.Seconds())
}

// WebhookFinished counts a webhook delivery that ended (webhook.Observer).
func (m *Metrics) WebhookFinished(endpoint string, state spool.DeliveryState) {
	m.webhookDeliveries.WithLabelValues(endpoint, string(state)).Inc()
}

// jobsCollector counts the retained jobs of every endpoint by state at scrape time, so the gauge is
// right after a restart and on every replica.
type jobsCollector struct{ cfg Config }

var (
	jobsDesc    = prometheus.NewDesc("spool_jobs", "Retained jobs by endpoint and state.", []string{"endpoint", "state"}, nil)
	queueDesc   = prometheus.NewDesc("spool_queue_depth", "Queued jobs by endpoint and priority (normal, low).", []string{"endpoint", "priority"}, nil)
	workersDesc = prometheus.NewDesc("spool_workers", "Workers by endpoint and state, as /health counts them.", []string{"endpoint", "state"}, nil)
)

func (c *jobsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- jobsDesc
	ch <- queueDesc
	if c.cfg.Workers != nil {
		ch <- workersDesc
	}
}

func (c *jobsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, ep := range c.cfg.Endpoints() {
		counts, err := c.cfg.Store.CountJobs(ctx, ep)
		if err != nil {
			if c.cfg.Logger != nil {
				c.cfg.Logger.Warn("metrics: count jobs", "endpoint", ep, "err", err)
			}
			continue
		}
		for _, s := range spool.States {
			ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(counts.ByState[s]), ep, string(s))
		}
		if q, err := c.cfg.Store.QueueDepth(ctx, ep); err == nil {
			ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(q.Normal), ep, "normal")
			ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(q.Low), ep, "low")
		} else if c.cfg.Logger != nil {
			c.cfg.Logger.Warn("metrics: queue depth", "endpoint", ep, "err", err)
		}
		if c.cfg.Workers == nil {
			continue
		}
		ws, err := c.cfg.Workers(ctx, ep)
		if err != nil {
			if c.cfg.Logger != nil {
				c.cfg.Logger.Warn("metrics: count workers", "endpoint", ep, "err", err)
			}
			continue
		}
		for _, st := range []spool.WorkerState{spool.WorkerIdle, spool.WorkerRunning, spool.WorkerInitializing, spool.WorkerThrottled, spool.WorkerUnhealthy} {
			ch <- prometheus.MustNewConstMetric(workersDesc, prometheus.GaugeValue, float64(ws[st]), ep, string(st))
		}
	}
}
