// Package leader is the seam that lets several Spool replicas share one store: the loops that must
// run once per cluster (the sweeper, the lost-worker sweep, the autoscaler, the webhook
// dispatcher) ask a Leader before each round and skip the round on a replica that does not lead.
// With the embedded store there is one process, which always leads; a store shared by replicas
// provides a lease.
package leader

import (
	"context"
	"time"

	"github.com/spool-run/spool/internal/clock"
)

// Leader says whether this process leads.
type Leader interface {
	// Leading reports whether this process leads now. It is called at every round of every loop,
	// so it must be cheap and must not block.
	Leading() bool
}

// Always is the Leader of a process that runs alone.
type Always struct{}

// Leading implements Leader.
func (Always) Leading() bool { return true }

// Run calls round every interval of clk, while l leads, until ctx ends: the loop of a sweeper.
func Run(ctx context.Context, l Leader, clk clock.Clock, interval time.Duration, round func(context.Context)) {
	for {
		t := clk.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		if l.Leading() { // otherwise another replica runs this round
			round(ctx)
		}
	}
}
