package httpapi

import (
	"net/http"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/wire"
)

// The webhook deliveries of a job (/api/jobs/{id}/webhook): each delivery with every attempt.

type deliveryView struct {
	ID            string        `json:"id"`
	URL           string        `json:"url"`
	Status        string        `json:"status"`
	CreatedAt     string        `json:"createdAt"`
	NextAttemptAt string        `json:"nextAttemptAt,omitempty"`
	FinishedAt    string        `json:"finishedAt,omitempty"`
	RedeliveryOf  string        `json:"redeliveryOf,omitempty"`
	Attempts      []attemptView `json:"attempts"`
}

type attemptView struct {
	Attempt    int    `json:"attempt"`
	At         string `json:"at"`
	StatusCode int    `json:"statusCode,omitempty"`
	Error      string `json:"error,omitempty"`
	DurationMs int64  `json:"durationMs"`
}

func viewDelivery(d spool.WebhookDelivery) deliveryView {
	v := deliveryView{
		ID: d.ID, URL: d.URL, Status: string(d.State), CreatedAt: wire.FormatTime(d.CreatedAt),
		RedeliveryOf: d.RedeliveryOf, Attempts: make([]attemptView, 0, len(d.History)),
	}
	if d.State == spool.DeliveryPending {
		v.NextAttemptAt = wire.FormatTime(d.NextAttemptAt)
	} else if !d.FinishedAt.IsZero() {
		v.FinishedAt = wire.FormatTime(d.FinishedAt)
	}
	for _, a := range d.History {
		v.Attempts = append(v.Attempts, attemptView{
			Attempt: a.N, At: wire.FormatTime(a.At), StatusCode: a.StatusCode, Error: a.Error,
			DurationMs: a.Duration.Milliseconds(),
		})
	}
	return v
}

func (s *server) getWebhook(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	ds, err := s.eng.WebhookDeliveries(r.Context(), id)
	if err != nil {
		return err
	}
	views := make([]deliveryView, len(ds))
	for i, d := range ds {
		views[i] = viewDelivery(d)
	}
	wire.WriteJSON(w, http.StatusOK, struct {
		JobID      string         `json:"jobId"`
		Deliveries []deliveryView `json:"deliveries"`
	}{id, views})
	return nil
}

func (s *server) redeliverWebhook(w http.ResponseWriter, r *http.Request) error {
	wire.DiscardBody(r)
	d, err := s.eng.Redeliver(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	wire.WriteJSON(w, http.StatusAccepted, viewDelivery(d))
	return nil
}
