package fleet

// LimitStops lowers the cap on the stop signals of all workers together, so that a test fills it
// with a few jobs.
func (f *Fleet) LimitStops(n int) {
	f.stops.mu.Lock()
	defer f.stops.mu.Unlock()
	f.stops.limit = n
}

// StopEntries counts the stop signals kept for all workers.
func (f *Fleet) StopEntries() int { return f.stops.len() }

// LimitSightings lowers the cap on the workers whose last sighting is remembered.
func (f *Fleet) LimitSightings(n int) {
	f.sighted.mu.Lock()
	defer f.sighted.mu.Unlock()
	f.sighted.limit = n
}

// Sightings counts the workers whose last sighting is remembered.
func (f *Fleet) Sightings() int { return f.sighted.len() }
