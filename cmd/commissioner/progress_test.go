package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/commissioner/commissioner/engine"
)

// On a terminal the line is redrawn in place (\r, no newline), a shorter line blanks what is
// left of a longer one, and Stop clears it.
func TestProgressRedrawsOneLineAndClearsIt(t *testing.T) {
	var buf bytes.Buffer
	var calls atomic.Int64
	third := make(chan struct{})
	p := newProgress(&buf, true, 0, time.Millisecond, func() string {
		n := calls.Add(1)
		if n == 3 {
			close(third)
		}
		if n == 1 {
			return "step 1 of many"
		}
		return fmt.Sprintf("step %d", n)
	})
	<-third
	p.Stop()
	p.Stop() // a second Stop is harmless and writes nothing
	got := buf.String()
	want := "\rstep 1 of many\rstep 2        \rstep 3"
	if !strings.HasPrefix(got, want) {
		t.Fatalf("got %q, want it to start with %q", got, want)
	}
	if strings.Contains(got, "\n") {
		t.Errorf("got %q, want no newline: the line is redrawn in place", got)
	}
	last := fmt.Sprintf("step %d", calls.Load())
	if clear := "\r" + last + "\r" + strings.Repeat(" ", len(last)) + "\r"; !strings.HasSuffix(got, clear) {
		t.Errorf("got %q, want it to end with the last line cleared: %q", got, clear)
	}
}

// Output to the same terminal starts on a clean line: the progress line is cleared first.
func TestProgressClearsItsLineBeforeOtherOutput(t *testing.T) {
	var errBuf, outBuf bytes.Buffer
	p := newProgress(&errBuf, true, 0, time.Hour, func() string { return "" })
	defer p.Stop()
	p.draw("reading 123")
	if _, err := p.Write([]byte("a log line\n")); err != nil {
		t.Fatal(err)
	}
	if got, want := errBuf.String(), "\rreading 123\r           \ra log line\n"; got != want {
		t.Errorf("stderr: got %q, want %q", got, want)
	}
	p.draw("reading 456")
	errBuf.Reset()
	fmt.Fprintln(p.Through(&outBuf), "FINDING x")
	if got, want := errBuf.String(), "\r           \r"; got != want {
		t.Errorf("stderr before a line on stdout: got %q, want %q", got, want)
	}
	if got, want := outBuf.String(), "FINDING x\n"; got != want {
		t.Errorf("stdout: got %q, want %q", got, want)
	}
}

// A line longer than the terminal is cut one column short of its width, so it never wraps.
func TestProgressCutsTheLineToTheTerminal(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf, true, 10, time.Hour, func() string { return "" })
	defer p.Stop()
	p.draw("0123456789abcdef")
	if got, want := buf.String(), "\r012345678"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// Not a terminal: status is never asked, nothing is drawn, and writes pass through unchanged.
func TestProgressOffWritesNothing(t *testing.T) {
	var buf, out bytes.Buffer
	p := newProgress(&buf, false, 80, time.Millisecond, func() string {
		t.Error("status called although the output is not a terminal")
		return "x"
	})
	fmt.Fprint(p, "log\n")
	fmt.Fprint(p.Through(&out), "report\n")
	p.Stop()
	if got, want := buf.String(), "log\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := out.String(), "report\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// startProgress is off on what a test or a pipe gives it: a buffer, a pipe.
	if sp := startProgress(&buf, func() string { return "" }); sp.on {
		t.Error("startProgress on a bytes.Buffer: got on, want off")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	sp := startProgress(w, func() string { return "" })
	defer sp.Stop()
	if sp.on {
		t.Error("startProgress on a pipe: got on, want off")
	}
}

// countEvents counts every event of every part of a partitioned history, and keeps it one.
func TestCountEventsCountsEveryPart(t *testing.T) {
	h := partsHistory{{make([]engine.ReplayEvent, 3), make([]engine.ReplayEvent, 2)}, {make([]engine.ReplayEvent, 4)}}
	var n atomic.Int64
	ch := countEvents(h, &n)
	ph, ok := ch.(engine.PartitionedHistory)
	if !ok {
		t.Fatalf("countEvents of a PartitionedHistory: got %T, want a PartitionedHistory", ch)
	}
	parts, err := ph.Partitions(context.Background(), 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range parts {
		if err := part.Walk(context.Background(), func([]engine.ReplayEvent) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if got := n.Load(); got != 9 {
		t.Errorf("events counted: got %d, want 9", got)
	}
	if _, ok := countEvents(batchesHistory{}, &n).(engine.PartitionedHistory); ok {
		t.Error("countEvents of a plain History: got a PartitionedHistory, want a plain History")
	}
}

// partsHistory is a partitioned history: each part its batches.
type partsHistory [][][]engine.ReplayEvent

func (h partsHistory) Walk(ctx context.Context, fn func([]engine.ReplayEvent) error) error {
	for _, part := range h {
		if err := (batchesHistory(part)).Walk(ctx, fn); err != nil {
			return err
		}
	}
	return nil
}

func (h partsHistory) Partitions(context.Context, int) ([]engine.History, error) {
	out := make([]engine.History, len(h))
	for i, part := range h {
		out[i] = batchesHistory(part)
	}
	return out, nil
}

// batchesHistory is a plain history of its batches.
type batchesHistory [][]engine.ReplayEvent

func (h batchesHistory) Walk(_ context.Context, fn func([]engine.ReplayEvent) error) error {
	for _, b := range h {
		if err := fn(b); err != nil {
			return err
		}
	}
	return nil
}
