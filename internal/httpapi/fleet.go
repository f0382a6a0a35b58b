package httpapi

import (
	"bytes"
	"time"

	"github.com/spool-run/spool/internal/fleet"
	"github.com/spool-run/spool/internal/wire"
)

// withWaitInfo adds a queued job's position, wait so far (ms) and wait reason to its admin view.
func withWaitInfo(obj []byte, info fleet.WaitInfo) []byte {
	if info.Reason == "" && info.Position == 0 {
		return obj
	}
	extra := wire.NewObject().
		Int("position", int64(info.Position)).
		Int("waitMs", info.Wait.Milliseconds()).
		String("waitReason", string(info.Reason)).Bytes()
	obj = bytes.TrimRight(obj, " \n")
	if len(obj) < 2 || len(extra) < 2 {
		return obj
	}
	sep := []byte(",")
	if bytes.Equal(obj, []byte("{}")) {
		sep = nil
	}
	out := append(obj[:len(obj)-1:len(obj)-1], sep...)
	return append(out, extra[1:]...)
}

// workerFleetView is what /api/workers adds for the workers the autoscaler runs.
type workerFleetView struct {
	GPUs     []string `json:"gpus,omitempty"`
	UptimeMs int64    `json:"uptimeMs,omitempty"`
	LogTail  []string `json:"logTail,omitempty"`
	Error    string   `json:"error,omitempty"`
	// Since is when an unhealthy or throttled worker became so.
	Since string `json:"since,omitempty"`
}

func fleetView(wi fleet.Worker, now time.Time) workerFleetView {
	v := workerFleetView{GPUs: wi.GPUs, LogTail: wi.LogTail, Error: wi.Error, Since: formatSeen(wi.Since)}
	if !wi.StartedAt.IsZero() {
		v.UptimeMs = max(now.Sub(wi.StartedAt), 0).Milliseconds()
	}
	return v
}

type coldStartView struct {
	Count  int   `json:"count"`
	LastMs int64 `json:"lastMs"`
	AvgMs  int64 `json:"avgMs"`
}

func coldStartViews(cs map[string]fleet.ColdStart) map[string]coldStartView {
	out := make(map[string]coldStartView, len(cs))
	for ep, c := range cs {
		out[ep] = coldStartView{Count: c.Count, LastMs: c.Last.Milliseconds(), AvgMs: c.Avg.Milliseconds()}
	}
	return out
}
