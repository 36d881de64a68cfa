package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"

	"github.com/spf13/cobra"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

type evalParams struct {
	Policies string // policy directory
	Version  int    // force this version (0: the one in force at each order's placed_at)
	Trace    bool
	Orders   string // file of JSON lines; "" or "-" for standard input
	Workers  int
}

func newEvalCmd(s streams) *cobra.Command {
	p := evalParams{Policies: "policies", Workers: runtime.GOMAXPROCS(0)}
	cmd := &cobra.Command{
		Use:   "eval [--policies DIR] [--version N] [--trace] [--orders FILE]",
		Short: "Decide order events (JSON lines) and write one decision line per order",
		Long: `Reads order events as JSON lines (standard input, or --orders FILE) and writes exactly one JSON
line per input line, in input order: the decision, or {"line", "order_id", "error"} for a line that
cannot be decided, with "errors": [{"field", "message"}] listing every field at fault in an invalid
order. Exits 0 when every line was decided, 1 when any line was rejected.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runEval(cmd.Context(), p, s.in, s.out)
		},
	}
	f := cmd.Flags()
	f.StringVar(&p.Policies, "policies", p.Policies, "policy directory")
	f.IntVar(&p.Version, "version", 0, "decide with this policy version instead of the one in force at placed_at")
	f.BoolVar(&p.Trace, "trace", false, "add each rule's id, expression and outcome")
	f.StringVar(&p.Orders, "orders", "", "file of order JSON lines (default: standard input)")
	f.IntVar(&p.Workers, "workers", p.Workers, "orders decided in parallel (output order is input order)")
	return cmd
}

// runEval decides every line of the input and writes one output line per input line. Lines are
// decided in parallel in chunks, and written in input order.
func runEval(ctx context.Context, p evalParams, stdin io.Reader, out io.Writer) error {
	set, err := rules.LoadDir(p.Policies)
	if err != nil {
		return fmt.Errorf("loading policies from %s:\n%w", p.Policies, err)
	}
	in := stdin
	if p.Orders != "" && p.Orders != "-" {
		f, err := os.Open(p.Orders)
		if err != nil {
			return fmt.Errorf("reading orders: %w", err)
		}
		defer f.Close()
		in = f
	}
	e := engine.New(set)
	decide := func(lineNo int, line []byte, buf []byte) ([]byte, bool) {
		o, err := engine.DecodeOrder(line)
		if err != nil {
			return engine.AppendErrorJSON(buf, lineNo, orderIDOf(o, err), err), false
		}
		var d *engine.Decision
		if p.Version > 0 {
			var pol *rules.Policy
			if pol, err = set.Version(o.Program, p.Version); err == nil {
				d, err = e.DecideWith(ctx, pol, o)
			}
		} else {
			d, err = e.Decide(ctx, o)
		}
		if err != nil {
			return engine.AppendErrorJSON(buf, lineNo, o.OrderID, err), false
		}
		return d.AppendJSON(buf, p.Trace), true
	}
	rejected, err := decideLines(ctx, in, out, max(p.Workers, 1), decide)
	if err != nil {
		return err
	}
	if rejected > 0 {
		return exitCode(1)
	}
	return nil
}

func orderIDOf(o *engine.Order, err error) string {
	if o != nil {
		return o.OrderID
	}
	var ie *engine.InputError
	if errors.As(err, &ie) {
		return ie.OrderID
	}
	return ""
}

// chunk is a run of input lines decided by one worker.
type chunk struct {
	first int    // the input line number of its first line (1-based)
	data  []byte // the lines, back to back
	ends  []int  // end offset of each line in data
	out   []byte
	bad   int
	ready chan struct{}
}

const chunkLines = 512

// decideLines reads lines, decides them on workers goroutines and writes the results in input
// order; decide is given each line with its line number. It returns how many lines were rejected.
func decideLines(ctx context.Context, in io.Reader, out io.Writer, workers int, decide func(lineNo int, line, buf []byte) ([]byte, bool)) (int, error) {
	jobs := make(chan *chunk, workers*2)
	ordered := make(chan *chunk, workers*4)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range jobs {
				start := 0
				for i, end := range c.ends {
					var ok bool
					c.out, ok = decide(c.first+i, c.data[start:end], c.out)
					c.out = append(c.out, '\n')
					if !ok {
						c.bad++
					}
					start = end
				}
				close(c.ready)
			}
		}()
	}

	var readErr error
	go func() {
		defer close(ordered)
		defer close(jobs)
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		lineNo := 0
		c := &chunk{first: 1, ready: make(chan struct{})}
		flush := func() bool {
			if len(c.ends) == 0 {
				return true
			}
			select {
			case jobs <- c:
			case <-ctx.Done():
				return false
			}
			ordered <- c
			c = &chunk{first: lineNo + 1, ready: make(chan struct{})}
			return true
		}
		for sc.Scan() {
			lineNo++
			c.data = append(c.data, sc.Bytes()...)
			c.ends = append(c.ends, len(c.data))
			if len(c.ends) == chunkLines && !flush() {
				return
			}
		}
		if err := sc.Err(); err != nil {
			readErr = fmt.Errorf("reading orders: %w", err)
		}
		flush()
	}()

	w := bufio.NewWriterSize(out, 1<<16)
	var rejected int
	var writeErr error
	for c := range ordered {
		<-c.ready
		rejected += c.bad
		if writeErr == nil {
			_, writeErr = w.Write(c.out)
		}
	}
	wg.Wait()
	if writeErr == nil {
		writeErr = w.Flush()
	}
	if writeErr != nil {
		return rejected, fmt.Errorf("writing decisions: %w", writeErr)
	}
	if readErr != nil {
		return rejected, readErr
	}
	return rejected, ctx.Err()
}
