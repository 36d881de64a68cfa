package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/adapters/stream"
	"github.com/commissioner/commissioner/engine"
)

func newServeCmd(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Consume order events from NATS JetStream, decide them, store every decision",
		Long: `Consumes order events from the ORDERS stream (published on orders.<program>.<affiliate>, stored in
partitions keyed by program and affiliate), decides each with the policy version in force at its
placed_at, stores event and decision in one transaction per batch, and acks only after the
commit. Several serve processes on one stream share the partitions (one owner each, leases in
NATS KV); a dead one's partitions are taken over once its leases expire. Malformed or
undecidable events are dead-lettered (table and orders.dead.<program>.<affiliate>). SIGHUP or a
change in the policy directory reloads the policies; a set that fails its check or tests is
refused. SIGINT/SIGTERM finish the batches in flight, release the partitions and stop.
With no NATS URL an embedded server runs on the data directory; with no DSN, SQLite.`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd, serviceFlags)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		svc, err := startService(cmd.Context(), cfg, newLogger(s.err))
		if err != nil {
			return err
		}
		return svc.Run(cmd.Context())
	}
	return cmd
}

type publishParams struct {
	File        string
	Concurrency int
	Raw         bool // publish every line unchecked
}

func newPublishCmd(s streams) *cobra.Command {
	p := publishParams{Concurrency: 1024}
	cmd := &cobra.Command{
		Use:   "publish FILE",
		Short: "Publish order events (JSON lines; - for standard input) to the ORDERS stream",
		Long: `Publishes each line as an order event on orders.<program>.<affiliate> (ids that are not plain
tokens escaped: see docs/operator.md) with a Nats-Msg-Id derived from the program, order id and
content, so re-publishing the same file is dropped by the stream. With no NATS URL it publishes
to the embedded server of a running 'commissioner serve' on the same data directory.

Each line is first checked as eval decodes it (the order schema: required fields, types, a known
currency and its minor units, …); a line that fails is not published and is reported with its
line number and reason, and so is a line over the server's max payload. --raw publishes every
line as it is (the service then dead-letters the bad ones). Exits 1 when any line was rejected or
failed.`,
		Args: cobra.ExactArgs(1),
	}
	cf := addConfigFlags(cmd, natsFlags)
	cmd.Flags().IntVar(&p.Concurrency, "concurrency", p.Concurrency, "publishes awaiting their ack at once")
	cmd.Flags().BoolVar(&p.Raw, "raw", false, "publish every line as it is, without checking it first")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		p.File = args[0]
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		return runPublish(cmd.Context(), cfg, p, s.in, s.out)
	}
	return cmd
}

func runPublish(ctx context.Context, cfg Config, p publishParams, stdin io.Reader, out io.Writer) error {
	in := stdin
	if p.File != "-" {
		f, err := os.Open(p.File)
		if err != nil {
			return fmt.Errorf("publishing: %w", err)
		}
		defer f.Close()
		in = f
	}
	nc, js, err := connectRunning(ctx, cfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	if _, err := stream.EnsureStream(ctx, js, cfg.NATS); err != nil {
		return err
	}
	pub, err := stream.NewPublisher(js, cfg.NATS)
	if err != nil {
		return err
	}
	if !p.Raw {
		pub.Check = func(line []byte) error {
			_, err := engine.DecodeOrder(line)
			return err
		}
	}
	st, err := pub.PublishLines(ctx, in, p.Concurrency)
	for _, r := range st.Rejections {
		fmt.Fprintf(out, "rejected line %d: %s\n", r.Line, r.Reason)
	}
	if more := st.Rejected - len(st.Rejections); more > 0 {
		fmt.Fprintf(out, "… and %d more rejected lines\n", more)
	}
	fmt.Fprintf(out, "published %d lines: %d accepted, %d duplicates dropped, %d rejected, %d failed\n",
		st.Lines, st.Accepted, st.Duplicates, st.Rejected, st.Failed)
	if err == nil && st.Rejected > 0 {
		return exitCode(1)
	}
	return err
}

// connectRunning connects to the configured NATS server, or to the embedded server of a running
// serve on the data directory (saying so when there is none), and opens JetStream.
func connectRunning(ctx context.Context, cfg Config) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := stream.Connect(ctx, cfg.NATS)
	if err != nil {
		if cfg.NATS.URL == "" {
			return nil, nil, fmt.Errorf("%w\n(no NATS URL is configured and no embedded server is running on %s: start 'commissioner serve' first, or pass --nats-url)", err, cfg.NATS.DataDir)
		}
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("opening JetStream: %w", err)
	}
	return nc, js, nil
}

type demoParams struct {
	Orders int
	Seed   uint64
	Exit   bool // stop after the summary instead of serving on
}

func newDemoCmd(s streams) *cobra.Command {
	p := demoParams{Orders: 5000, Seed: 1}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the pipeline on the embedded defaults with a sample of realistic orders",
		Long: `Starts the service (embedded NATS and SQLite unless configured otherwise), publishes a generated
sample of realistic orders (a few malformed ones among them), waits until every one is decided or
dead-lettered, prints a summary, and keeps serving until interrupted.`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd, serviceFlags)
	cmd.Flags().IntVar(&p.Orders, "orders", p.Orders, "how many sample orders to publish")
	cmd.Flags().Uint64Var(&p.Seed, "seed", p.Seed, "sample seed (the same seed publishes the same orders)")
	cmd.Flags().BoolVar(&p.Exit, "exit", false, "stop after printing the summary")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		return runDemo(cmd.Context(), cfg, p, s.out, s.err)
	}
	return cmd
}

// demoRun is what the demo's progress line reads while the demo runs: the service once started,
// the orders sent and, once published, how many the stream accepted.
type demoRun struct {
	p        demoParams
	running  atomic.Pointer[service]
	accepted atomic.Int64 // -1 until published
	sent     *lineCounter
	began    atomic.Int64 // UnixNano: the start, then the start of publishing
}

// runDemo starts the service, publishes a generated sample, waits until every order is settled,
// prints a summary and, unless p.Exit, serves on until ctx ends.
func runDemo(ctx context.Context, cfg Config, p demoParams, out, errOut io.Writer) error {
	// On a terminal, a progress line: the orders sent, then the orders settled. The service's
	// log and the summary are written through it.
	d := &demoRun{p: p, sent: &lineCounter{}}
	d.accepted.Store(-1)
	d.began.Store(time.Now().UnixNano())
	prog := startProgress(errOut, d.status)
	defer prog.Stop()
	out, errOut = prog.Through(out), prog
	svc, err := startDemoService(ctx, cfg, errOut)
	if err != nil {
		return err
	}
	d.running.Store(svc)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	if err := d.publishAndSummarise(ctx, cfg, svc, done, prog, out); err != nil {
		stop()
		<-done
		return err
	}
	if !p.Exit {
		if svc.httpAddr != "" {
			fmt.Fprintf(out, "\nconsole: http://%s/ui/   metrics: http://%s/metrics   health: http://%s/readyz\n", svc.httpAddr, svc.httpAddr, svc.httpAddr)
		}
		fmt.Fprintln(out, "serving; publish more with 'commissioner publish FILE' from another terminal; Ctrl-C stops")
		return <-done
	}
	stop()
	return <-done
}

// status is the progress line's text.
func (d *demoRun) status() string {
	since := roughly(time.Since(time.Unix(0, d.began.Load())))
	svc, n, lines := d.running.Load(), d.accepted.Load(), d.sent.lines.Load()
	switch {
	case svc == nil:
		return "demo: starting the service"
	case n >= 0:
		st := svc.consumer.Stats()
		return fmt.Sprintf("demo: %d of %d orders decided or dead-lettered, %v", st.Acked+st.Termed, n, since)
	case lines > 0:
		return fmt.Sprintf("demo: published %d of %d orders, %v", lines, d.p.Orders, since)
	default:
		return fmt.Sprintf("demo: generating %d sample orders", d.p.Orders)
	}
}

// startDemoService starts the service; when the default HTTP address is taken, on a free port
// instead.
func startDemoService(ctx context.Context, cfg Config, errOut io.Writer) (*service, error) {
	svc, err := startService(ctx, cfg, newLogger(errOut))
	if err != nil && cfg.HTTP.Addr == defaultConfig().HTTP.Addr && errors.Is(err, syscall.EADDRINUSE) {
		// The demo must run on a fresh machine whatever already listens on 8080: take a free port
		// (printed below). An address the user configured is never replaced.
		cfg.HTTP.Addr = "127.0.0.1:0"
		svc, err = startService(ctx, cfg, newLogger(errOut))
	}
	return svc, err
}

// publishAndSummarise publishes the sample to the running service (done delivers its result),
// waits until every order is settled, stops the progress line and prints what was stored.
func (d *demoRun) publishAndSummarise(ctx context.Context, cfg Config, svc *service, done <-chan error, prog *progress, out io.Writer) error {
	var sample bytes.Buffer
	if err := writeSample(&sample, sampleParams{N: d.p.Orders, Seed: d.p.Seed, Program: "alibaba", Month: "2025-10", Bad: 4}); err != nil {
		return err
	}
	pub, err := stream.NewPublisher(svc.js, cfg.NATS)
	if err != nil {
		return err
	}
	before, err := svc.store.Stats(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	d.began.Store(start.UnixNano())
	d.sent.r = &sample
	st, err := pub.PublishLines(ctx, d.sent, 1024)
	if err != nil {
		return err
	}
	d.accepted.Store(int64(st.Accepted))
	fmt.Fprintf(out, "published %d sample orders: %d accepted, %d already published before\n", st.Lines, st.Accepted, st.Duplicates)
	if err := waitSettled(ctx, svc, done, st.LastSeq); err != nil {
		return err
	}
	prog.Stop()
	fmt.Fprintf(out, "all decided in %v\n\n", time.Since(start).Round(time.Millisecond))
	stats, err := svc.store.Stats(ctx)
	if err != nil {
		return err
	}
	// What the store did: after the stream's duplicate window, re-published orders reach the
	// service again, and the store recognises them as stored.
	newDecisions, newDead := stats.Decisions-before.Decisions, stats.DeadLetters-before.DeadLetters
	fmt.Fprintf(out, "stored now: %d decisions, %d dead letters", newDecisions, newDead)
	if stored := int64(st.Accepted) - newDecisions - newDead; stored > 0 {
		fmt.Fprintf(out, "; %d of the orders the stream accepted were stored already", stored)
	}
	fmt.Fprintln(out)
	printSummary(out, stats)
	return nil
}

// waitSettled waits until the partition consumers have settled every event up to stream
// sequence upTo (stream.Settled).
func waitSettled(ctx context.Context, svc *service, done <-chan error, upTo uint64) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if ok, err := stream.Settled(ctx, svc.js, svc.cfg.NATS, upTo); err == nil && ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-done:
			if err == nil {
				err = errors.New("the service stopped")
			}
			return err
		case <-tick.C:
		}
	}
}

func printSummary(out io.Writer, st store.Stats) {
	fmt.Fprintf(out, "orders decided:   %d (%d qualified, %d not)\n", st.Decisions, st.Qualified, st.Decisions-st.Qualified)
	fmt.Fprintf(out, "dead letters:     %d (malformed or undecidable events, with their reasons in the store)\n", st.DeadLetters)
	fmt.Fprintln(out, "commission by currency:")
	for _, cur := range slices.Sorted(maps.Keys(st.Commission)) {
		fmt.Fprintf(out, "  %s %s\n", cur, st.Commission[cur])
	}
	fmt.Fprintln(out, "decisions by rate rule:")
	for _, r := range slices.Sorted(maps.Keys(st.ByRateRule)) {
		fmt.Fprintf(out, "  %-22s %d\n", r, st.ByRateRule[r])
	}
	fmt.Fprintln(out, "disqualified by rule (an order can fail several):")
	for _, r := range slices.Sorted(maps.Keys(st.ByFailedRule)) {
		fmt.Fprintf(out, "  %-22s %d\n", r, st.ByFailedRule[r])
	}
}
