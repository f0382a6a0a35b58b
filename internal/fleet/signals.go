package fleet

import (
	"strings"
	"sync"
	"time"
)

// stopSet holds stop signals that belong to no job row: jobs a worker's pings list although the
// job has moved on without it (retried, requeued, taken by another worker). They live in memory
// because pings re-derive them every interval, so a restart, an expiry or a signal dropped at a
// cap loses nothing that the next ping does not restore. Worker ids are whatever a worker key
// names, so the set is bounded for all workers together, not only per worker.
type stopSet struct {
	mu sync.Mutex
	m  map[string]map[string]time.Time // worker -> job id -> when a ping last listed it
	n  int                             // entries in m, over all workers
	// limit caps n: maxStops, lowered by tests.
	limit int
	// maxAge is how long an entry lives without a ping that lists its job again.
	maxAge time.Duration
	// pruned is when expired entries were last swept out.
	pruned time.Time
}

// maxStopsPerWorker bounds what one worker's pings can make the server remember.
const maxStopsPerWorker = 1024

// maxStops bounds the stop signals of all workers together. A signal is one job a worker runs
// although it moved on without it, so the real count is a few per worker at worst; 65,536 entries
// (a few MB with ids of at most 128 bytes) is far above any honest fleet and a hard ceiling for a
// worker key inventing workers. Past it new signals are dropped until entries are taken or expire.
const maxStops = 1 << 16

func newStopSet(maxAge time.Duration) stopSet {
	return stopSet{m: make(map[string]map[string]time.Time), limit: maxStops, maxAge: maxAge}
}

// add records at now that worker must stop job; it reports whether the signal is new. A signal
// already pending is kept alive; past the caps a new one is dropped.
func (s *stopSet) add(worker, job string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)
	// Cloned, even to refresh an entry (a map assignment stores the key it is given): the ids may
	// be slices of a whole request line, which they would keep alive.
	job = strings.Clone(job)
	jobs := s.m[worker]
	if _, ok := jobs[job]; ok {
		jobs[job] = now
		return false
	}
	if len(jobs) >= maxStopsPerWorker || s.n >= s.limit {
		return false
	}
	if jobs == nil {
		jobs = make(map[string]time.Time)
		s.m[strings.Clone(worker)] = jobs
	}
	jobs[job] = now
	s.n++
	return true
}

// take removes and returns the worker's signals that have not expired at now.
func (s *stopSet) take(worker string, now time.Time) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	jobs := s.m[worker]
	s.dropLocked(worker)
	ids := make([]string, 0, len(jobs))
	for id, at := range jobs {
		if now.Sub(at) < s.maxAge {
			ids = append(ids, id)
		}
	}
	return ids
}

// forget drops the worker's signals that no ping has listed since before: a worker unseen since
// then is gone, and one that came back has re-derived (and so kept) the signals it still needs.
func (s *stopSet) forget(worker string, before time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, at := range s.m[worker] {
		if at.Before(before) {
			s.deleteLocked(worker, id)
		}
	}
}

// prune drops the entries that expired at now; it sweeps at most every maxAge/2, so that calling
// it often stays cheap.
func (s *stopSet) prune(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)
}

// len counts the entries of all workers.
func (s *stopSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *stopSet) pruneLocked(now time.Time) {
	if now.Sub(s.pruned) < s.maxAge/2 {
		return
	}
	s.pruned = now
	for w, jobs := range s.m {
		for id, at := range jobs {
			if now.Sub(at) >= s.maxAge {
				s.deleteLocked(w, id)
			}
		}
	}
}

func (s *stopSet) deleteLocked(worker, job string) {
	jobs := s.m[worker]
	if _, ok := jobs[job]; !ok {
		return
	}
	delete(jobs, job)
	s.n--
	if len(jobs) == 0 {
		delete(s.m, worker)
	}
}

func (s *stopSet) dropLocked(worker string) {
	s.n -= len(s.m[worker])
	delete(s.m, worker)
}

// sightings rate-limits the writes of worker sightings (Seen): a worker seen less than an interval
// ago is not written again. An entry older than the interval limits nothing, so it is swept out
// (at most once an interval), and the map holds at most maxSightings workers, on every replica,
// however many worker ids requests invent.
type sightings struct {
	mu     sync.Mutex
	last   map[string]time.Time
	pruned time.Time
	// limit caps the entries: maxSightings when zero; tests lower it.
	limit int
}

// maxSightings bounds the workers whose last sighting is remembered. Only those seen within one
// interval (LostAfter/6, 5 s by default) matter, so 65,536 is far above any honest fleet; past it
// an arbitrary entry makes room, and its worker's next request is written once more than needed.
const maxSightings = 1 << 16

func (s *sightings) due(worker string, now time.Time, every time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == nil {
		s.last = make(map[string]time.Time)
	}
	if t, ok := s.last[worker]; ok && now.Sub(t) < every {
		return false
	}
	if now.Sub(s.pruned) >= every {
		s.pruned = now
		for w, t := range s.last {
			if now.Sub(t) >= every {
				delete(s.last, w)
			}
		}
	}
	limit := s.limit
	if limit == 0 {
		limit = maxSightings
	}
	if _, ok := s.last[worker]; !ok {
		for w := range s.last { // map order: an arbitrary victim, in constant time
			if len(s.last) < limit {
				break
			}
			delete(s.last, w)
		}
	}
	// Cloned, even to update an entry (a map assignment stores the key it is given): the id may be
	// a slice of a whole request line, which it would keep alive.
	s.last[strings.Clone(worker)] = now
	return true
}

// len counts the workers remembered.
func (s *sightings) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.last)
}

func (s *sightings) max() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.limit == 0 {
		return maxSightings
	}
	return s.limit
}

// Bounds is what the fleet remembers of workers' requests, against its caps: stop signals (jobs
// a worker's pings list that it must stop) and sightings (the last time each worker was seen).
type Bounds struct {
	StopSignals, MaxStopSignals int
	Sightings, MaxSightings     int
}

// Bounds reports what the fleet remembers now, for /metrics: whatever ids workers' requests
// carry, these stay under their caps.
func (f *Fleet) Bounds() Bounds {
	f.stops.mu.Lock()
	stops, maxStops := f.stops.n, f.stops.limit
	f.stops.mu.Unlock()
	return Bounds{StopSignals: stops, MaxStopSignals: maxStops, Sightings: f.sighted.len(), MaxSightings: f.sighted.max()}
}
