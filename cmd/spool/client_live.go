package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/spool-run/spool/spoolclient"
)

// liveLine is the status line `spool run` keeps on stderr while it waits: the job's state, the time
// elapsed, its queue delay, why it waits or its latest progress, and its id, redrawn in place. The
// line is cut to the terminal's width, since a line that wraps cannot be redrawn with "\r" and
// would leave a stale copy at each redraw. All methods are safe on a nil *liveLine (no status line)
// and for concurrent use.
type liveLine struct {
	w     io.Writer
	width func() int // the terminal's columns; 0 when unknown
	begin time.Time

	mu      sync.Mutex
	job     *spoolclient.Job
	wait    spoolclient.QueueInfo
	frame   int
	drawn   bool
	running bool
	quit    chan struct{}
	done    chan struct{}
}

// newLiveLine draws on w, fitting the line to width() columns (80 when it returns 0).
func newLiveLine(w io.Writer, width func() int) *liveLine { return &liveLine{w: w, width: width} }

// terminalWidth returns a function that reads w's terminal width at each call (so that a resized
// window is followed). When w is not a terminal (--status-line always on a pipe) it takes $COLUMNS,
// as shells export it, and else 0.
func terminalWidth(w io.Writer) func() int {
	return func() int {
		if f, ok := w.(*os.File); ok {
			if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 0 {
				return cols
			}
		}
		cols, err := strconv.Atoi(os.Getenv("COLUMNS"))
		if err != nil || cols < 0 {
			return 0
		}
		return cols
	}
}

// start begins redrawing the line a few times a second.
func (l *liveLine) start() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.running {
		return
	}
	l.begin = time.Now()
	l.running = true
	l.quit, l.done = make(chan struct{}), make(chan struct{})
	l.drawLocked()
	go func() {
		defer close(l.done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-l.quit:
				return
			case <-t.C:
				l.mu.Lock()
				l.frame++
				l.drawLocked()
				l.mu.Unlock()
			}
		}
	}()
}

// update records the job's latest state and redraws.
func (l *liveLine) update(j *spoolclient.Job) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.job = j
	if j.Status != spoolclient.StatusInQueue {
		l.wait = spoolclient.QueueInfo{}
	}
	if l.running {
		l.drawLocked()
	}
}

// setWait records why the job waits, shown while it is queued.
func (l *liveLine) setWait(info spoolclient.QueueInfo) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.wait = info
	if l.running {
		l.drawLocked()
	}
}

// stop stops redrawing and erases the line, so that what follows starts on a clean line. It may be
// called more than once.
func (l *liveLine) stop() {
	if l == nil {
		return
	}
	l.mu.Lock()
	if !l.running {
		l.mu.Unlock()
		return
	}
	l.running = false
	close(l.quit)
	l.mu.Unlock()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.drawn {
		fmt.Fprint(l.w, "\r\x1b[K")
		l.drawn = false
	}
}

func (l *liveLine) drawLocked() {
	cols := 0
	if l.width != nil {
		cols = l.width()
	}
	fmt.Fprint(l.w, "\r\x1b[K"+l.text(time.Since(l.begin), cols))
	l.drawn = true
}

var spinner = []string{"|", "/", "-", `\`}

// text is the line's content for a terminal of cols columns (80 when 0), e.g.
// "/ IN_QUEUE  elapsed 4.5s  queued 4.5s  waiting: max_workers_reached, position 3  job 3f2…".
// The parts come in the order of their worth; those that do not fit are cut or left out.
func (l *liveLine) text(elapsed time.Duration, cols int) string {
	if cols <= 0 {
		cols = 80
	}
	parts := []string{spinner[l.frame%len(spinner)] + " submitting"}
	j := l.job
	if j != nil {
		parts[0] = spinner[l.frame%len(spinner)] + " " + string(j.Status)
	}
	parts = append(parts, "elapsed "+roundDuration(elapsed))
	if j != nil {
		switch {
		case j.DelayTime > 0 || j.Status != spoolclient.StatusInQueue && j.Status != "":
			parts = append(parts, "queue "+roundDuration(j.DelayTime))
		default:
			parts = append(parts, "queued "+roundDuration(elapsed))
		}
		switch {
		case j.Status == spoolclient.StatusInQueue && l.wait.Reason != "":
			w := "waiting: " + l.wait.Reason
			if l.wait.Position > 0 {
				w += ", position " + strconv.Itoa(l.wait.Position)
			}
			parts = append(parts, w)
		case j.Status == spoolclient.StatusInProgress && len(j.Output) > 0:
			parts = append(parts, "progress "+strings.Join(strings.Fields(string(j.Output)), " "))
		}
		parts = append(parts, "job "+j.ID)
	}
	// One column is left free: on some terminals a line that fills the last column wraps.
	return fitParts(parts, cols-1)
}

// fitParts joins parts with two spaces into at most width runes: each part that does not fit is
// cut when at least a few of its runes fit, and the rest are left out.
func fitParts(parts []string, width int) string {
	const sep, minShown = "  ", 8
	width = max(width, 1)
	if len(parts) == 0 {
		return ""
	}
	if utf8.RuneCountInString(parts[0]) > width {
		return short(parts[0], width)
	}
	var b strings.Builder
	b.WriteString(parts[0])
	n := utf8.RuneCountInString(parts[0])
	for _, p := range parts[1:] {
		room := width - n - len(sep)
		size := utf8.RuneCountInString(p)
		switch {
		case size <= room:
			b.WriteString(sep + p)
			n += len(sep) + size
		case room >= minShown:
			b.WriteString(sep + short(p, room))
			return b.String()
		default:
			return b.String()
		}
	}
	return b.String()
}

func roundDuration(d time.Duration) string {
	if d < time.Minute {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// short cuts s to n runes, marking the cut.
func short(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
