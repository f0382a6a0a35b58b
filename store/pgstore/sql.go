package pgstore

import (
	"strconv"
	"strings"
	"time"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/store"
)

// params collects the arguments of a statement as it is built, and names each one's placeholder,
// so that the SET list and the WHERE clause of an UPDATE can be built apart and numbered as one.
type params struct{ args []any }

// add appends v and returns its placeholder.
func (p *params) add(v any) string {
	p.args = append(p.args, v)
	return "$" + strconv.Itoa(len(p.args))
}

// where builds a WHERE clause; its arguments go to the statement's params.
type where struct {
	p     *params
	conds []string
}

func newWhere(p *params) *where { return &where{p: p} }

// add adds a condition; each ? in cond becomes the placeholder of the next of args.
func (w *where) add(cond string, args ...any) {
	for _, a := range args {
		i := strings.IndexByte(cond, '?')
		cond = cond[:i] + w.p.add(a) + cond[i+1:]
	}
	w.conds = append(w.conds, cond)
}

func (w *where) String() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// states adds the condition that the state is one of states, spelled out as literals (see
// migrations: the partial indexes of the sweeps and the queue are only used so).
func (w *where) states(states []spool.State) error {
	list := make([]string, len(states))
	for i, st := range states {
		if !st.Valid() {
			return errInvalidState(st)
		}
		list[i] = "'" + string(st) + "'"
	}
	switch len(list) {
	case 0:
	case 1:
		w.add("jobs.state = " + list[0])
	default:
		w.add("jobs.state IN (" + strings.Join(list, ",") + ")")
	}
	return nil
}

// expect adds the conditions of a store.Expect.
func (w *where) expect(e store.Expect) {
	w.add("jobs.state = ?", string(e.State))
	if e.Endpoint != "" {
		w.add("jobs.endpoint = ?", e.Endpoint)
	}
	if e.WorkerID != "" {
		w.add("jobs.worker_id = ?", e.WorkerID)
	}
	if e.Exact {
		w.add("jobs.attempt = ? AND jobs.retries = ?", e.Attempt, e.Retries)
	} else if e.Attempt > 0 {
		w.add("jobs.attempt = ?", e.Attempt)
	}
	switch e.StopPending {
	case store.FlagSet:
		w.add("jobs.stop_pending")
	case store.FlagClear:
		w.add("NOT jobs.stop_pending")
	}
	if !e.WorkerSeenBefore.IsZero() {
		w.seenBefore(e.WorkerSeenBefore)
	}
}

// seenBefore adds that the job's worker was last seen at or before t, or never.
func (w *where) seenBefore(t time.Time) {
	w.add(`NOT EXISTS (SELECT 1 FROM workers WHERE workers.id = jobs.worker_id AND workers.last_seen > ?)`, millis(t))
}

// setClause is the SET list of a change, now being the base of the deadlines. The order of the
// columns is fixed, so that a change of the same fields makes the same statement, which each
// connection keeps prepared.
func setClause(c store.JobChange, now time.Time, p *params) (string, error) {
	if c.Set == 0 {
		return "", errEmptyChange
	}
	var cols []string
	set := func(f store.Fields, col string, v any) {
		if c.Set&f != 0 {
			cols = append(cols, col+" = "+p.add(v))
		}
	}
	set(store.SetState, "state", string(c.State))
	set(store.SetWorkerID, "worker_id", c.WorkerID)
	set(store.SetOutput, "output", bytea(c.Output))
	set(store.SetProgress, "progress", bytea(c.Progress))
	set(store.SetError, "error", text(c.Error))
	set(store.SetS3Config, "s3_config", bytea(c.S3ConfigSealed))
	set(store.SetHadS3Config, "had_s3_config", c.HadS3Config)
	set(store.SetStopPod, "stop_pod", c.StopPod)
	set(store.SetEndedByWorker, "ended_by_worker", c.EndedByWorker)
	set(store.SetStopPending, "stop_pending", c.StopPending)
	set(store.SetRetention, "retention_ms", c.RetentionMs)
	set(store.SetQueuedAt, "queued_at", millis(c.QueuedAt))
	set(store.SetTakenAt, "taken_at", millis(c.TakenAt))
	set(store.SetFinishedAt, "finished_at", millis(c.FinishedAt))
	if c.Set&store.IncAttempt != 0 {
		cols = append(cols, "attempt = attempt + 1")
	}
	if c.Set&store.IncRetries != 0 {
		cols = append(cols, "retries = retries + 1")
	}
	if c.Set&store.SetExpiresAt != 0 {
		cols = append(cols, "expires_at = "+p.add(millis(now))+" + ttl_ms")
	}
	if c.Set&store.SetTimeoutAt != 0 {
		cols = append(cols, "timeout_at = "+p.add(millis(now))+" + execution_timeout_ms")
	}
	if c.Set&store.SetDeleteAt != 0 {
		// The right-hand sides of an UPDATE see the row as it was: a retention set by this same
		// change must be added as the value, not as the column.
		if c.Set&store.SetRetention != 0 {
			cols = append(cols, "delete_at = "+p.add(millis(now)+c.RetentionMs))
		} else {
			cols = append(cols, "delete_at = "+p.add(millis(now))+" + retention_ms")
		}
	}
	return strings.Join(cols, ", "), nil
}

// millis is the stored form of a time: unix milliseconds, 0 for the zero time.
func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// fromMillis inverts millis. Times come back in UTC, whatever location they were stored from.
func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// bytea binds a payload: NULL for nil, a (possibly empty) BYTEA otherwise. The conversion to a
// plain []byte matters: pgx would encode a json.RawMessage as JSON.
func bytea(b []byte) []byte { return b }

// text binds a string to a NOT NULL BYTEA column: never nil, so never NULL.
func text(s string) []byte {
	if s == "" {
		return []byte{}
	}
	return []byte(s)
}

// limit binds a LIMIT: n when positive, NULL (no limit) otherwise.
func limit(n int) any {
	if n <= 0 {
		return nil
	}
	return int64(n)
}
