package main

// A progress line for the long runs (demo, load, replay, audit verify over a large store): one
// line on standard error, rewritten in place every half second and cleared when the run ends.
// It is drawn only when standard error is a terminal: a pipe, a file and every test get the
// output they got before, with no carriage returns in it.

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/term"
)

// progressEvery is how often the progress line is redrawn.
const progressEvery = 500 * time.Millisecond

// progress draws status() on one line of a terminal, redrawn every period until Stop. Output
// that goes to the same terminal meanwhile (the service's log) is written through progress
// (it is an io.Writer), which first clears the line; the next tick draws it again below.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	cols  int // the terminal's width; 0: unknown (lines are not cut)
	shown int // the width of the line on screen; 0: none shown
	on    bool

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// startProgress shows status() on w while the run goes on, when w is a terminal (and TERM is not
// "dumb"); otherwise it shows nothing and Write passes straight to w. status is called from the
// progress goroutine: it must be safe for that (read atomics). The caller calls Stop.
func startProgress(w io.Writer, status func() string) *progress {
	on, cols := false, 0
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) && os.Getenv("TERM") != "dumb" {
		on = true
		if c, _, err := term.GetSize(int(f.Fd())); err == nil {
			cols = c
		}
	}
	return newProgress(w, on, cols, progressEvery, status)
}

// newProgress is startProgress with what it detects given: whether w is a terminal, its width
// and the redraw period.
func newProgress(w io.Writer, on bool, cols int, every time.Duration, status func() string) *progress {
	p := &progress{w: w, cols: cols, on: on, stop: make(chan struct{}), done: make(chan struct{})}
	if !on {
		close(p.done)
		return p
	}
	go func() {
		defer close(p.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				p.draw(status())
			}
		}
	}()
	return p
}

// draw replaces the line on screen with line (cut to the terminal's width).
func (p *progress) draw(line string) {
	line = strings.ReplaceAll(line, "\n", " ")
	if p.cols > 1 && utf8.RuneCountInString(line) > p.cols-1 {
		line = string([]rune(line)[:p.cols-1]) // the last column left free: no wrap
	}
	n := utf8.RuneCountInString(line)
	p.mu.Lock()
	defer p.mu.Unlock()
	pad := ""
	if p.shown > n {
		pad = strings.Repeat(" ", p.shown-n) // over what is left of a longer line
	}
	io.WriteString(p.w, "\r"+line+pad)
	p.shown = n
}

// clearLocked blanks the line on screen and returns the cursor to its start.
func (p *progress) clearLocked() {
	if p.shown > 0 {
		io.WriteString(p.w, "\r"+strings.Repeat(" ", p.shown)+"\r")
		p.shown = 0
	}
}

// Write writes b to the terminal below the progress line: the line is cleared first.
func (p *progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
	return p.w.Write(b)
}

// Through returns a writer to w, another stream to the same terminal (standard output): each
// write clears the progress line first, so that what it writes starts on a line of its own.
func (p *progress) Through(w io.Writer) io.Writer {
	if !p.on {
		return w
	}
	return progressThrough{p: p, w: w}
}

type progressThrough struct {
	p *progress
	w io.Writer
}

func (t progressThrough) Write(b []byte) (int, error) {
	t.p.mu.Lock()
	defer t.p.mu.Unlock()
	t.p.clearLocked()
	return t.w.Write(b)
}

// Stop ends the redraws and clears the line; nothing is drawn after it returns. It may be
// called more than once.
func (p *progress) Stop() {
	p.stopOnce.Do(func() {
		if p.on {
			close(p.stop)
		}
	})
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
}

// lineCounter counts the lines read through it: how far a publisher got in a sample.
type lineCounter struct {
	r     io.Reader
	lines atomic.Int64
}

func (c *lineCounter) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.lines.Add(int64(bytes.Count(b[:n], []byte{'\n'})))
	return n, err
}

// perSecond renders n done since start as "n in 12.3s, 3456/s".
func perSecond(n int64, start time.Time) string {
	d := time.Since(start)
	return fmt.Sprintf("%d in %v, %.0f/s", n, roughly(d), float64(n)/max(d.Seconds(), 1e-9))
}

// roughly rounds a duration for a progress line: tenths of a second, whole seconds from a minute.
func roughly(d time.Duration) time.Duration {
	if d < time.Minute {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}
