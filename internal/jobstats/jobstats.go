// Package jobstats keeps the last hour of each endpoint's job activity, minute by minute, for the
// dashboard's charts: jobs finished (and failed), how long they waited and how long they ran, as
// p50 and p95.
//
// It hears the engine's job events (it is an engine.Observer), so it counts what this process
// saw: on several replicas each one charts the jobs that started and ended through it. Memory is
// fixed: 60 minutes per endpoint, each a count and two histograms of fixed buckets; quantiles are
// read off the buckets, so they are within a bucket's width (a factor of 1.25) of the truth.
package jobstats

import (
	"math"
	"sort"
	"sync"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/clock"
)

// Minutes is how much history is kept.
const Minutes = 60

// MaxEndpoints bounds the endpoints tracked; events of further ones are dropped (endpoint names
// come from the engine, which knows only created endpoints, so this is a guard, not a limit
// anyone should meet).
const MaxEndpoints = 1000

// bounds are the histogram buckets' upper bounds in milliseconds: 1 ms to ~3.4 days, each 1.25
// times the one before.
var bounds = func() []float64 {
	var b []float64
	for v := 1.0; v < 3e8; v *= 1.25 {
		b = append(b, v)
	}
	return b
}()

type hist struct {
	counts []uint32 // len(bounds)+1: the last is the overflow
	n      uint32
}

func (h *hist) add(ms float64) {
	if h.counts == nil {
		h.counts = make([]uint32, len(bounds)+1)
	}
	h.counts[sort.SearchFloat64s(bounds, ms)]++
	h.n++
}

func (h *hist) merge(o *hist) {
	if o.n == 0 {
		return
	}
	if h.counts == nil {
		h.counts = make([]uint32, len(bounds)+1)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the upper bound of the bucket holding the q-th sample; 0 with no samples.
func (h *hist) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := uint32(math.Ceil(q * float64(h.n)))
	var seen uint32
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			if i == len(bounds) {
				return bounds[len(bounds)-1]
			}
			return math.Round(bounds[i])
		}
	}
	return bounds[len(bounds)-1]
}

type minute struct {
	at       int64 // Unix minute this slot holds; a slot of another minute is stale
	finished uint32
	failed   uint32 // FAILED or TIMED_OUT
	delay    hist
	exec     hist
}

type endpoint struct {
	slots [Minutes]minute
}

func (e *endpoint) slot(m int64) *minute {
	s := &e.slots[m%Minutes]
	if s.at != m {
		*s = minute{at: m}
	}
	return s
}

// Recorder is the history of every endpoint. It is safe for concurrent use.
type Recorder struct {
	clock clock.Clock
	mu    sync.Mutex
	eps   map[string]*endpoint
}

// New returns an empty recorder on clk (the wall clock when nil).
func New(clk clock.Clock) *Recorder {
	if clk == nil {
		clk = clock.Real{}
	}
	return &Recorder{clock: clk, eps: map[string]*endpoint{}}
}

func (r *Recorder) at(name string, f func(*minute)) {
	m := r.clock.Now().Unix() / 60
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.eps[name]
	if !ok {
		if len(r.eps) >= MaxEndpoints {
			return
		}
		e = &endpoint{}
		r.eps[name] = e
	}
	f(e.slot(m))
}

// JobSubmitted is part of engine.Observer; submissions are not charted.
func (r *Recorder) JobSubmitted(string) {}

// JobStarted records how long a job waited in the queue.
func (r *Recorder) JobStarted(endpoint string, delay time.Duration) {
	r.at(endpoint, func(m *minute) { m.delay.add(ms(delay)) })
}

// JobFinished records a job's end and, when a worker ran it, for how long.
func (r *Recorder) JobFinished(endpoint string, state spool.State, ran time.Duration, taken bool) {
	r.at(endpoint, func(m *minute) {
		m.finished++
		if state == spool.StateFailed || state == spool.StateTimedOut {
			m.failed++
		}
		if taken {
			m.exec.add(ms(ran))
		}
	})
}

// JobRequeued is part of engine.Observer; requeues are not charted.
func (r *Recorder) JobRequeued(string, string) {}

// Forget drops an endpoint's history (a deleted endpoint).
func (r *Recorder) Forget(endpoint string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.eps, endpoint)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Point is one minute of an endpoint's history.
type Point struct {
	At         time.Time `json:"at"`
	Finished   int       `json:"finished"`
	Failed     int       `json:"failed"`
	DelayP50Ms float64   `json:"delayP50Ms"`
	DelayP95Ms float64   `json:"delayP95Ms"`
	ExecP50Ms  float64   `json:"execP50Ms"`
	ExecP95Ms  float64   `json:"execP95Ms"`
}

// Summary is an endpoint's last hour: its minutes oldest first (the last is the current, partial
// one), the same figures over the whole hour, and the jobs finished per second over the last
// full minute and what there is of the current one.
type Summary struct {
	Minutes       []Point `json:"minutes"`
	Hour          Point   `json:"hour"`
	JobsPerSecond float64 `json:"jobsPerSecond"`
}

// Summary returns the endpoint's last hour (all zero when nothing was recorded).
func (r *Recorder) Summary(name string) Summary {
	now := r.clock.Now()
	cur := now.Unix() / 60
	out := Summary{Minutes: make([]Point, Minutes)}
	var hour minute
	r.mu.Lock()
	e := r.eps[name]
	for i := range Minutes {
		m := cur - int64(Minutes-1-i)
		p := Point{At: time.Unix(m*60, 0).UTC()}
		if e != nil && e.slots[m%Minutes].at == m {
			s := &e.slots[m%Minutes]
			p.Finished, p.Failed = int(s.finished), int(s.failed)
			p.DelayP50Ms, p.DelayP95Ms = s.delay.quantile(0.5), s.delay.quantile(0.95)
			p.ExecP50Ms, p.ExecP95Ms = s.exec.quantile(0.5), s.exec.quantile(0.95)
			hour.finished += s.finished
			hour.failed += s.failed
			hour.delay.merge(&s.delay)
			hour.exec.merge(&s.exec)
		}
		out.Minutes[i] = p
	}
	r.mu.Unlock()
	out.Hour = Point{
		At: out.Minutes[0].At, Finished: int(hour.finished), Failed: int(hour.failed),
		DelayP50Ms: hour.delay.quantile(0.5), DelayP95Ms: hour.delay.quantile(0.95),
		ExecP50Ms: hour.exec.quantile(0.5), ExecP95Ms: hour.exec.quantile(0.95),
	}
	// The rate over the last full minute plus the current one's elapsed part: a steady rate
	// reads the same at any second of the minute.
	elapsed := 60 + float64(now.Unix()%60) + float64(now.Nanosecond())/1e9
	n := out.Minutes[Minutes-1].Finished + out.Minutes[Minutes-2].Finished
	out.JobsPerSecond = math.Round(float64(n)/elapsed*100) / 100
	return out
}
