// Package joblog indexes, per job, the lines workers wrote about it and the progress they
// reported, for the dashboard and GET /api/jobs/{id}/logs.
//
// A line is about a job when it carries the job's id the way runpod-python writes it: as JSON,
// {"requestId": "<id>", "message": ..., "level": ...} (what it prints when RUNPOD_ENDPOINT_ID is
// set, as Spool sets it), or as text, "LEVEL  | <id> | message". Lines without an id stay in the
// worker's own log tail only.
//
// The index lives in memory and is bounded four ways: a job keeps its last PerJob entries, a
// message is cut at MaxMessage bytes, and the index keeps at most the MaxJobs jobs most recently
// written to and MaxBytes of messages, forgetting the least recently written jobs first. It is per process: on several replicas, the lines are on the
// replica whose autoscaler runs the worker (the leader).
package joblog

import (
	"bytes"
	"container/list"
	"encoding/json"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/spool-run/spool"
	"github.com/spool-run/spool/internal/clock"
)

// Kinds of entries.
const (
	KindLog      = "log"      // a line the worker wrote
	KindProgress = "progress" // a progress update it posted
)

// Entry is one line or progress update of a job.
type Entry struct {
	At      time.Time `json:"at"`
	Worker  string    `json:"worker"`
	Kind    string    `json:"kind"`
	Level   string    `json:"level,omitempty"`
	Message string    `json:"message"`
}

// Config bounds an Index.
type Config struct {
	// Clock stamps entries. Defaults to the wall clock.
	Clock clock.Clock
	// PerJob is how many entries a job keeps, its oldest dropped first. Defaults to 500.
	PerJob int
	// MaxJobs is how many jobs the index keeps. Defaults to 5,000.
	MaxJobs int
	// MaxMessage cuts longer messages (on a UTF-8 boundary). Defaults to 4 KiB.
	MaxMessage int
	// MaxBytes bounds the messages and worker ids kept in all. Defaults to 64 MiB.
	MaxBytes int
}

// Index is the per-job log. It is safe for concurrent use; a nil *Index ignores what it is told.
type Index struct {
	cfg   Config
	mu    sync.Mutex
	jobs  map[string]*list.Element // of *jobEntries, most recently written at the front
	lru   *list.List
	bytes int // of the entries kept: see size
}

// size is what an entry counts against MaxBytes: its strings and a fixed part for the rest.
func size(e Entry) int { return len(e.Message) + len(e.Worker) + len(e.Level) + 64 }

type jobEntries struct {
	id      string
	entries []Entry // a ring once full
	next    int
	dropped int
}

// New returns an empty index.
func New(cfg Config) *Index {
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.PerJob <= 0 {
		cfg.PerJob = 500
	}
	if cfg.MaxJobs <= 0 {
		cfg.MaxJobs = 5000
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = 4 << 10
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 64 << 20
	}
	return &Index{cfg: cfg, jobs: map[string]*list.Element{}, lru: list.New()}
}

// Line indexes one line of worker's output if it names a job.
func (x *Index) Line(worker, line string) {
	if x == nil {
		return
	}
	job, level, msg, ok := Parse(line)
	if !ok {
		return
	}
	x.add(job, Entry{Worker: worker, Kind: KindLog, Level: level, Message: msg})
}

// Progress records a progress update worker posted for job.
func (x *Index) Progress(worker, job string, output []byte) {
	if x == nil || !plausibleID(job) {
		return
	}
	x.add(job, Entry{Worker: worker, Kind: KindProgress, Message: string(output)})
}

func (x *Index) add(job string, e Entry) {
	e.At = x.cfg.Clock.Now().UTC()
	e.Message = cut(e.Message, x.cfg.MaxMessage)
	x.mu.Lock()
	defer x.mu.Unlock()
	el, ok := x.jobs[job]
	if ok {
		x.lru.MoveToFront(el)
	} else {
		if x.lru.Len() >= x.cfg.MaxJobs {
			x.forgetOldest()
		}
		el = x.lru.PushFront(&jobEntries{id: job})
		x.jobs[job] = el
	}
	j := el.Value.(*jobEntries)
	x.bytes += size(e)
	if len(j.entries) < x.cfg.PerJob {
		j.entries = append(j.entries, e)
	} else {
		x.bytes -= size(j.entries[j.next])
		j.entries[j.next] = e
		j.next = (j.next + 1) % len(j.entries)
		j.dropped++
	}
	for x.bytes > x.cfg.MaxBytes && x.lru.Len() > 1 {
		x.forgetOldest()
	}
}

// forgetOldest drops the job least recently written to.
func (x *Index) forgetOldest() {
	oldest := x.lru.Back()
	j := oldest.Value.(*jobEntries)
	for _, e := range j.entries {
		x.bytes -= size(e)
	}
	x.lru.Remove(oldest)
	delete(x.jobs, j.id)
}

// Entries returns job's entries, oldest first, and how many older ones were dropped.
func (x *Index) Entries(job string) ([]Entry, int) {
	if x == nil {
		return nil, 0
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	el, ok := x.jobs[job]
	if !ok {
		return nil, 0
	}
	j := el.Value.(*jobEntries)
	out := make([]Entry, 0, len(j.entries))
	out = append(out, j.entries[j.next:]...)
	out = append(out, j.entries[:j.next]...)
	return out, j.dropped
}

// Parse reads the job id, level and message out of a runpod-python log line; ok is false for a
// line that names no job.
func Parse(line string) (job, level, msg string, ok bool) {
	trimmed := strings.TrimSpace(line)
	if strings.HasPrefix(trimmed, "{") {
		var v struct {
			RequestID *string         `json:"requestId"`
			Message   json.RawMessage `json:"message"`
			Level     string          `json:"level"`
		}
		if json.Unmarshal([]byte(trimmed), &v) != nil || v.RequestID == nil || !plausibleID(*v.RequestID) {
			return "", "", "", false
		}
		var s string
		if json.Unmarshal(v.Message, &s) != nil {
			s = string(bytes.TrimSpace(v.Message)) // a message that is not a string: as written
		}
		return *v.RequestID, v.Level, s, true
	}
	// "INFO   | <id> | message": the level padded to 7 columns, then the id.
	lvl, rest, found := strings.Cut(line, "| ")
	if !found || !knownLevel(strings.TrimSpace(lvl)) {
		return "", "", "", false
	}
	id, msg, found := strings.Cut(rest, " | ")
	if !found || !plausibleID(id) {
		return "", "", "", false
	}
	return id, strings.TrimSpace(lvl), msg, true
}

func knownLevel(l string) bool {
	switch l {
	case "DEBUG", "INFO", "WARN", "ERROR", "TRACE", "TIP", "NOTSET":
		return true
	}
	return false
}

// plausibleID reports whether id could be a job id (spool.PlausibleJobID) and has a digit, so
// that words such as "worker" in "INFO   | worker | started" are not taken for ids.
func plausibleID(id string) bool {
	return spool.PlausibleJobID(id) && strings.ContainsAny(id, "0123456789")
}

// cut shortens s to at most n bytes without splitting a character, marking the cut.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}
