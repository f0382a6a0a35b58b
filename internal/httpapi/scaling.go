package httpapi

import (
	"net/http"

	"github.com/spool-run/spool/internal/autoscale"
	"github.com/spool-run/spool/internal/wire"
)

// getScaling answers GET /api/endpoints/{name}/scaling: how many workers the endpoint wants by
// its own scaler settings (the number Spool's autoscaler would run), and the normal-priority queue
// it is computed from, low priority left out as the autoscaler leaves it out. It is the metric for
// teams that scale a Deployment of workers themselves, in the shape KEDA's metrics-api scaler
// reads (valueLocation: wantedWorkers).
func (s *server) getScaling(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	ep, err := s.eng.Endpoint(r.PathValue("name"))
	if err != nil {
		return err
	}
	counts, err := s.fleet.Counts(ctx, ep.Name)
	if err != nil {
		return err
	}
	q := autoscale.QueueState{
		Workers:      counts.Idle + counts.Running + counts.Initializing + counts.Throttled + counts.Unhealthy,
		Busy:         counts.Running,
		Initializing: counts.Initializing,
	}
	var low int
	if s.cfg.QueueDepth != nil {
		d, err := s.cfg.QueueDepth(ctx, ep.Name)
		if err != nil {
			return err
		}
		q.Normal, q.InProgress, low = d.Normal, d.Running, d.Low
		if !d.OldestNormal.IsZero() {
			q.OldestWait = s.cfg.Clock.Now().Sub(d.OldestNormal)
		}
	}
	wanted, why := autoscale.WantedWhy(ep, q)
	wire.WriteJSON(w, http.StatusOK, wire.NewObject().
		String("endpoint", ep.Name).
		Int("wantedWorkers", int64(wanted)).
		String("why", why).
		Int("queueDepth", int64(q.Normal)).
		Int("lowPriorityQueueDepth", int64(low)).
		Int("inProgress", int64(q.InProgress)).
		Int("oldestWaitMs", q.OldestWait.Milliseconds()).
		Int("workers", int64(q.Workers)).
		Int("workersMin", int64(ep.WorkersMin)).
		Int("workersMax", int64(ep.WorkersMax)))
	return nil
}
