package webhook

import "net/netip"

// SetTestControl makes the dispatcher built from c ask f about every connection the guard let
// through: tests refuse whatever is not on this machine, so that a broken guard can never send
// traffic elsewhere.
func SetTestControl(c *Config, f func(netip.AddrPort) error) { c.testControl = f }

// Idle reports whether the loop is waiting with no attempt in flight, no wake-up since its last
// scan began and its timer not yet due, and returns a channel closed at the next change of the
// loop's state.
func (d *Dispatcher) Idle() (bool, <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	due := !d.clock.Now().Before(d.wakeAt)
	woken := false
	if d.enqueued != nil {
		select {
		case <-d.enqueued:
			woken = true
		default:
		}
	}
	return d.waiting && !due && !woken && len(d.inflight) == 0 && d.pokes == d.seenPokes, d.changed
}

// InFlight is the number of attempts in flight.
func (d *Dispatcher) InFlight() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.inflight)
}

var ParseIP = parseIP
