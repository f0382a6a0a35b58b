package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/spool-run/spool/spoolclient"
)

// liveLine is the status line `spool run` keeps on stderr while it waits: the job's state, its queue
// delay, the time elapsed and the latest progress value, redrawn in place. All methods are safe on a
// nil *liveLine (no status line) and for concurrent use.
type liveLine struct {
	w     io.Writer
	begin time.Time

	mu      sync.Mutex
	job     *spoolclient.Job
	frame   int
	drawn   bool
	running bool
	quit    chan struct{}
	done    chan struct{}
}

func newLiveLine(w io.Writer) *liveLine { return &liveLine{w: w} }

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
	fmt.Fprint(l.w, "\r\x1b[K"+l.text(time.Since(l.begin)))
	l.drawn = true
}

var spinner = []string{"|", "/", "-", `\`}

// text is the line's content, e.g.
// "/ IN_PROGRESS  job 3f2…  queue 1.2s  elapsed 4.5s  progress {"pct":40}".
func (l *liveLine) text(elapsed time.Duration) string {
	var b strings.Builder
	b.WriteString(spinner[l.frame%len(spinner)])
	b.WriteByte(' ')
	j := l.job
	if j == nil {
		b.WriteString("submitting")
	} else {
		b.WriteString(string(j.Status))
		b.WriteString("  job ")
		b.WriteString(short(j.ID, 12))
		switch {
		case j.DelayTime > 0 || j.Status != spoolclient.StatusInQueue && j.Status != "":
			b.WriteString("  queue " + roundDuration(j.DelayTime))
		default:
			b.WriteString("  queued " + roundDuration(elapsed))
		}
	}
	b.WriteString("  elapsed " + roundDuration(elapsed))
	if j != nil && j.Status == spoolclient.StatusInProgress && len(j.Output) > 0 {
		b.WriteString("  progress " + short(strings.Join(strings.Fields(string(j.Output)), " "), 60))
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
