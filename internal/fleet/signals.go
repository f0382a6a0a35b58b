package fleet

import (
	"sync"
	"time"
)

// stopSet holds stop signals that belong to no job row: jobs a worker's pings list although the
// job has moved on without it (retried, requeued, deleted). They live in memory because pings
// re-derive them every interval, so a restart loses nothing that the next ping does not restore.
type stopSet struct {
	mu sync.Mutex
	m  map[string]map[string]bool // worker -> job ids
}

// maxStopsPerWorker bounds what one worker's pings can make the server remember.
const maxStopsPerWorker = 1024

// add records that worker must stop job; it reports whether the signal is new.
func (s *stopSet) add(worker, job string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[string]map[string]bool)
	}
	jobs := s.m[worker]
	if jobs == nil {
		jobs = make(map[string]bool)
		s.m[worker] = jobs
	}
	if jobs[job] || len(jobs) >= maxStopsPerWorker {
		return false
	}
	jobs[job] = true
	return true
}

// take removes and returns the worker's signals.
func (s *stopSet) take(worker string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	jobs := s.m[worker]
	delete(s.m, worker)
	ids := make([]string, 0, len(jobs))
	for id := range jobs {
		ids = append(ids, id)
	}
	return ids
}

// sightings rate-limits the writes of worker sightings (Seen). It forgets the workers not seen for
// an hour as it goes, so that it does not grow with every worker ever seen, on every replica.
type sightings struct {
	mu     sync.Mutex
	last   map[string]time.Time
	pruned time.Time
}

// forgetAfter is how long sightings keeps a worker it has not seen.
const forgetAfter = time.Hour

func (s *sightings) due(worker string, now time.Time, every time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == nil {
		s.last = make(map[string]time.Time)
	}
	if now.Sub(s.pruned) >= forgetAfter {
		for w, t := range s.last {
			if now.Sub(t) >= forgetAfter {
				delete(s.last, w)
			}
		}
		s.pruned = now
	}
	if t, ok := s.last[worker]; ok && now.Sub(t) < every {
		return false
	}
	s.last[worker] = now
	return true
}
