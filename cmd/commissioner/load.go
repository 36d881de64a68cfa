package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/adapters/stream"
)

type loadParams struct {
	Orders      int
	BatchSize   int // 0: the configured batch size
	Partitions  int // 0: the configured number (the run's stream is its own)
	BadPerMille int
	Seed        uint64
	Concurrency int // publishes awaiting their ack at once
	Keep        bool
	CPUProfile  string // written for the consume phase
	MemProfile  string // heap profiles: this file after publishing (with Rate: half-way), this file + ".consume" after consuming
	// Rate, when not 0, publishes at this many orders per second while the consumer runs (the
	// steady state of a service fed by a live source) instead of publishing everything first.
	Rate int
}

func newLoadCmd(s streams) *cobra.Command {
	p := loadParams{Orders: 200000, Seed: 1, Concurrency: 1024}
	cmd := &cobra.Command{
		Use:   "load --orders N [--batch-size B] [config flags]",
		Short: "Measure the pipeline: publish N generated orders, then decide them all; report orders/s and memory",
		Long: `Starts the service in-process on the configured store and NATS (by default the embedded server and
SQLite in a fresh temporary data directory, removed afterwards unless --keep or --data-dir is
given), publishes N generated orders before consuming anything (the publish rate is reported on
its own), then runs the consumer and measures decided orders per second end to end — JetStream
→ decode → CEL → store → ack — until every order is decided or dead-lettered. It reports the
time per batch spent deciding and storing, the peak RSS of each phase (VmHWM) and the Go heap
after the run.

With --rate R it measures the steady state instead: the consumer runs from the start while the
orders are published at R per second, as a live source would feed a running service; it samples
the resident size and the Go heap as the orders are settled, to show whether memory stays flat.

With a PostgreSQL DSN that sets no search_path, the run uses a fresh schema, dropped afterwards
unless --keep. With an external NATS URL, it uses a stream, subjects and durable of its own,
deleted afterwards unless --keep.`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd, serviceFlags)
	f := cmd.Flags()
	f.IntVar(&p.Orders, "orders", p.Orders, "how many orders to publish and decide")
	f.IntVar(&p.BatchSize, "batch-size", 0, "events per batch (default: the configured nats.batch_size)")
	f.IntVar(&p.Partitions, "partitions", 0, "partitions of the run's stream, processed at once (default: the configured nats.partitions)")
	f.IntVar(&p.BadPerMille, "bad-per-mille", 0, "malformed or invalid orders per thousand")
	f.Uint64Var(&p.Seed, "seed", p.Seed, "sample seed")
	f.IntVar(&p.Concurrency, "publish-concurrency", p.Concurrency, "publishes awaiting their ack at once")
	f.BoolVar(&p.Keep, "keep", false, "keep the temporary data directory, PostgreSQL schema or NATS stream")
	f.StringVar(&p.CPUProfile, "cpuprofile", "", "write a CPU profile of the consume phase to this file")
	f.StringVar(&p.MemProfile, "memprofile", "", "write a heap profile after publishing (with --rate: once half the orders are settled) to this file, and after consuming to the file + .consume")
	f.IntVar(&p.Rate, "rate", 0, "publish at this many orders/s while consuming (steady state), instead of publishing everything first")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if p.Orders < 1 {
			return usageError{fmt.Errorf("--orders %d: want at least 1", p.Orders)}
		}
		if p.Rate < 0 {
			return usageError{fmt.Errorf("--rate %d: want orders per second, or 0 to publish everything first", p.Rate)}
		}
		fl := cmd.Flags()
		if !fl.Changed("http-addr") {
			if err := fl.Set("http-addr", ""); err != nil {
				return err
			}
		}
		if !fl.Changed("data-dir") {
			dir, err := os.MkdirTemp("", "commissioner-load-*")
			if err != nil {
				return fmt.Errorf("load: %w", err)
			}
			if p.Keep {
				fmt.Fprintf(s.err, "load: data directory %s (kept)\n", dir)
			} else {
				defer os.RemoveAll(dir)
			}
			if err := fl.Set("data-dir", dir); err != nil {
				return err
			}
		}
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		return runLoad(cmd.Context(), cfg, p, s.out, s.err)
	}
	return cmd
}

// loadRun is the state of one run of the load command, shared by its phases: the configuration
// as adjusted for the run, the scratch resources to clean up, the service under measurement and
// what the phases have measured so far.
type loadRun struct {
	cfg         Config
	p           loadParams
	out, errOut io.Writer
	cleanups    []func() error // run in reverse order when the run ends
	pg          *store.Scratch // nil with SQLite
	prog        *progress
	svc         *service
	pub         *stream.Publisher
	done        chan error // the service's result, once started
	started     bool       // the service runs (or ran) and its result is yet to be read from done

	running    atomic.Pointer[service]
	want0      atomic.Int64 // the orders to settle, once known (0: publishing)
	sent       *lineCounter
	phaseStart atomic.Int64 // UnixNano

	// want is how many events the consumer must settle, and lastSeq the stream sequence of the
	// last: known once publishing is done.
	want, lastSeq uint64
	publishPeak   int64

	// With Rate: memory and backlog sampled while consuming.
	samples         []memSample
	backlog         uint64
	halfwayProfiled bool // the heap profile is written once half the orders are settled
}

// publishResult is the result of publishing the sample: its statistics, how long it took and the
// error that ended it, if any.
type publishResult struct {
	st   stream.PublishStats
	took time.Duration
	err  error
}

// consumeResult is what the consume phase measured: its wall and CPU time, the CPU time of the
// PostgreSQL backends (0 with SQLite or a remote server) and the peak RSS.
type consumeResult struct {
	took, cpu, pgCPU time.Duration
	peak             int64
}

// runLoad measures the pipeline as the load command's help describes: it isolates the run's
// store and stream, starts the service, publishes the sample (phase 1, or alongside phase 2 with
// --rate), consumes it (phase 2) and reports what it measured.
func runLoad(ctx context.Context, cfg Config, p loadParams, out, errOut io.Writer) (err error) {
	cfg.WatchPolicies = false
	if err := applyLoadBatching(&cfg, p); err != nil {
		return err
	}
	r := &loadRun{cfg: cfg, p: p, sent: &lineCounter{}}
	defer func() {
		for i := len(r.cleanups) - 1; i >= 0; i-- {
			err = errors.Join(err, r.cleanups[i]())
		}
	}()
	if err := r.isolate(ctx, errOut); err != nil {
		return err
	}
	r.startProgress(out, errOut)
	defer r.prog.Stop()

	log := slog.New(slog.NewTextHandler(r.errOut, &slog.HandlerOptions{Level: slog.LevelWarn}))
	svc, err := startService(ctx, r.cfg, log)
	if err != nil {
		return err
	}
	r.svc = svc
	r.running.Store(svc)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	r.done = make(chan error, 1)
	defer func() {
		if !r.started {
			svc.close()
			return
		}
		stop()
		err = errors.Join(err, <-r.done)
	}()
	r.printSetup()
	if r.pub, err = stream.NewPublisher(svc.js, r.cfg.NATS); err != nil {
		return err
	}
	var publishing chan publishResult // steady state: the publisher's result
	if p.Rate == 0 {
		if err := r.publishAll(ctx); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(r.out, "steady state: publishing at %d orders/s while consuming\n", p.Rate)
		publishing = make(chan publishResult, 1)
	}
	c, err := r.consume(ctx, runCtx, publishing)
	if err != nil {
		return err
	}
	return r.report(ctx, c)
}

// applyLoadBatching applies --batch-size and --partitions to the NATS configuration, deriving
// the rest again from them.
func applyLoadBatching(cfg *Config, p loadParams) error {
	if p.BatchSize <= 0 && p.Partitions <= 0 {
		return nil
	}
	if p.BatchSize > 0 {
		cfg.NATS.BatchSize = p.BatchSize
	}
	if p.Partitions > 0 {
		cfg.NATS.Partitions = p.Partitions
	}
	cfg.NATS.MaxAckPending = 0 // derived again from the batch size
	cfg.NATS = cfg.NATS.WithDefaults()
	if err := cfg.NATS.Validate(); err != nil {
		return usageError{err}
	}
	return nil
}

// isolate gives the run a PostgreSQL schema and a NATS stream of its own where the store or the
// server is shared, and registers their removal (unless --keep).
func (r *loadRun) isolate(ctx context.Context, errOut io.Writer) error {
	if r.cfg.storeConfig().Backend() == store.Postgres {
		// A schema of the run's own (unless the DSN names one), its connections named so that the
		// server's CPU can be read.
		pg, err := store.NewScratch(ctx, r.cfg.Store.DSN, "commissioner_load", r.p.Keep)
		if err != nil {
			return fmt.Errorf("load: %w", err)
		}
		r.pg = pg
		if r.p.Keep && pg.Schema != "" {
			fmt.Fprintf(errOut, "load: PostgreSQL schema %s (kept)\n", pg.Schema)
		}
		r.cfg.Store.DSN = pg.DSN
		r.cleanups = append(r.cleanups, pg.Close)
	}
	if r.cfg.NATS.URL == "" {
		return nil
	}
	nats := &r.cfg.NATS
	suffix := randomHex(4)
	nats.Stream, nats.Subjects, nats.Durable = "LOAD_"+suffix, "load"+suffix+".>", "load_"+suffix
	if r.p.Keep {
		fmt.Fprintf(errOut, "load: NATS stream %s on %s (kept)\n", nats.Stream, nats.Subjects)
		return nil
	}
	cfg := *nats
	r.cleanups = append(r.cleanups, func() error {
		nc, err := stream.Connect(context.Background(), cfg)
		if err != nil {
			return fmt.Errorf("deleting stream %s: %w", cfg.Stream, err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return fmt.Errorf("deleting stream %s: %w", cfg.Stream, err)
		}
		return stream.DeleteStream(context.Background(), js, cfg) // and its owners bucket
	})
	return nil
}

// startProgress starts the progress line: on a terminal, the orders published, then the orders
// settled (instead of a line every 5 s). The log and the report are written through it.
func (r *loadRun) startProgress(out, errOut io.Writer) {
	r.phaseStart.Store(time.Now().UnixNano())
	r.prog = startProgress(errOut, func() string {
		svc := r.running.Load()
		if svc == nil {
			return "load: starting the service"
		}
		st := svc.consumer.Stats()
		settled := int64(st.Acked + st.Termed)
		since := time.Unix(0, r.phaseStart.Load())
		if n := r.want0.Load(); n > 0 || r.p.Rate > 0 {
			return fmt.Sprintf("load: %d of %d settled, %s", settled, max(n, int64(r.p.Orders)), perSecond(settled, since))
		}
		return fmt.Sprintf("load: published %d of %d orders, %s", r.sent.lines.Load(), r.p.Orders, perSecond(r.sent.lines.Load(), since))
	})
	r.out, r.errOut = r.prog.Through(out), r.prog
}

// printSetup prints what the run measures and on what: the orders, the batching, the machine,
// the store and the NATS server.
func (r *loadRun) printSetup() {
	natsAt := "embedded, " + r.cfg.NATS.DataDir
	if r.cfg.NATS.URL != "" {
		natsAt = "external server, stream " + r.cfg.NATS.Stream
	}
	fmt.Fprintf(r.out, "load: %d orders (%d‰ bad), batches of %d, %d partitions, GOMAXPROCS %d, load average %s\n",
		r.p.Orders, r.p.BadPerMille, r.cfg.NATS.BatchSize, r.cfg.NATS.Partitions, runtime.GOMAXPROCS(0), loadAverage())
	fmt.Fprintf(r.out, "store: %s\nnats:  %s\n", r.svc.store, natsAt)
	if sh := shadowSetup(r.svc.engine.Load().Policies()); sh != "" {
		fmt.Fprintf(r.out, "shadows: %s\n", sh)
	}
}

// sample writes the generated orders to a pipe for the publisher, paced at p.Rate when set.
func (r *loadRun) sample() *io.PipeReader {
	pr, pw := io.Pipe()
	go func() {
		var dst io.Writer = pw
		if r.p.Rate > 0 {
			dst = &pacedWriter{w: pw, rate: r.p.Rate, start: time.Now()}
		}
		w := bufio.NewWriterSize(dst, 1<<16)
		err := writeSample(w, sampleParams{N: r.p.Orders, Seed: r.p.Seed, Program: "alibaba", Month: "2025-10", Bad: r.p.BadPerMille})
		if err == nil {
			err = w.Flush()
		}
		pw.CloseWithError(err)
	}()
	return pr
}

// publishAll is phase 1 without --rate: it publishes every order before anything is consumed
// and reports the publish rate, its CPU time and peak RSS.
func (r *loadRun) publishAll(ctx context.Context) error {
	resetPeakRSS()
	pr := r.sample()
	start, cpu0 := time.Now(), processCPU()
	r.sent.r = pr
	r.phaseStart.Store(start.UnixNano())
	pst, err := r.pub.PublishLines(ctx, r.sent, r.p.Concurrency)
	pr.Close()
	if err != nil {
		return fmt.Errorf("load: publishing: %w", err)
	}
	took, cpu := time.Since(start), processCPU()-cpu0
	r.publishPeak = peakRSS()
	fmt.Fprintf(r.out, "published %d orders in %v: %.0f orders/s (%d accepted, %d already in the stream), %.1f µs CPU per order, peak RSS %s\n",
		pst.Lines, took.Round(time.Millisecond), float64(pst.Lines)/took.Seconds(), pst.Accepted, pst.Duplicates,
		float64(cpu.Microseconds())/float64(max(pst.Lines, 1)), mib(r.publishPeak))
	if err := writeHeapProfile(r.p.MemProfile); err != nil {
		return err
	}
	return r.expect(pst)
}

// publishPaced publishes the sample at --rate while the service consumes it, and sends the
// result to publishing.
func (r *loadRun) publishPaced(ctx context.Context, publishing chan<- publishResult) {
	pr := r.sample()
	start := time.Now()
	pst, err := r.pub.PublishLines(ctx, pr, r.p.Concurrency)
	pr.Close()
	publishing <- publishResult{st: pst, took: time.Since(start), err: err}
}

// expect records how many events the consumer must settle, and the last one's sequence, from
// the publisher's statistics; it fails when the stream already held every order.
func (r *loadRun) expect(st stream.PublishStats) error {
	if r.want, r.lastSeq = uint64(st.Accepted), st.LastSeq; r.want == 0 {
		return errors.New("load: the stream already held every order (a data directory of an earlier run?): nothing to decide")
	}
	r.want0.Store(int64(r.want))
	return nil
}

// consume is phase 2: it runs the service until everything published is settled (in the steady
// state, while it is being published) and measures the time, CPU and memory that took.
func (r *loadRun) consume(ctx, runCtx context.Context, publishing chan publishResult) (consumeResult, error) {
	resetPeakRSS()
	if r.p.CPUProfile != "" {
		f, err := os.Create(r.p.CPUProfile)
		if err != nil {
			return consumeResult{}, fmt.Errorf("load: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return consumeResult{}, fmt.Errorf("load: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	pgBefore := backendCPU(ctx, r.pg)
	start, cpu0 := time.Now(), processCPU()
	r.phaseStart.Store(start.UnixNano())
	r.started = true
	go func() { r.done <- r.svc.Run(runCtx) }()
	if publishing != nil {
		go r.publishPaced(runCtx, publishing)
	}
	if err := r.waitUntilSettled(ctx, start, publishing); err != nil {
		return consumeResult{}, err
	}
	c := consumeResult{took: time.Since(start), cpu: processCPU() - cpu0}
	r.prog.Stop()
	if r.p.CPUProfile != "" {
		pprof.StopCPUProfile()
	}
	c.pgCPU = backendCPU(ctx, r.pg) - pgBefore
	if r.p.MemProfile != "" {
		if err := writeHeapProfile(r.p.MemProfile + ".consume"); err != nil {
			return c, err
		}
	}
	c.peak = peakRSS()
	return c, nil
}

// waitUntilSettled polls the consumer until every published event is settled and the stream agrees,
// reporting (and with --rate sampling) every 5 s; it fails when ctx ends, the service stops or
// publishing fails.
func (r *loadRun) waitUntilSettled(ctx context.Context, start time.Time, publishing chan publishResult) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	lastReport := start
	for {
		st := r.svc.consumer.Stats()
		if publishing == nil && st.Acked+st.Termed >= r.want {
			if ok, err := stream.Settled(ctx, r.svc.js, r.cfg.NATS, r.lastSeq); err == nil && ok {
				return nil
			}
		}
		if time.Since(lastReport) >= 5*time.Second {
			lastReport = time.Now()
			settled := st.Acked + st.Termed
			if r.p.Rate > 0 {
				if err := r.sampleMemory(ctx, settled); err != nil {
					return err
				}
			}
			if !r.prog.on { // on a terminal, the progress line says it
				fmt.Fprintf(r.errOut, "load: %d of %d settled after %v\n", settled, max(r.want, uint64(r.p.Orders)), time.Since(start).Round(time.Second))
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-r.done:
			r.started = false
			if err == nil {
				err = errors.New("the service stopped")
			}
			return fmt.Errorf("load: consuming: %w", err)
		case res := <-publishing:
			publishing = nil
			if res.err != nil {
				return fmt.Errorf("load: publishing: %w", res.err)
			}
			// The publisher's CPU is not told apart from the consumer's: both run in this process.
			fmt.Fprintf(r.out, "published %d orders in %v: %.0f orders/s (%d accepted, %d already in the stream)\n",
				res.st.Lines, res.took.Round(time.Millisecond), float64(res.st.Lines)/res.took.Seconds(), res.st.Accepted, res.st.Duplicates)
			if err := r.expect(res.st); err != nil {
				return err
			}
		case <-tick.C:
		}
	}
}

// sampleMemory records, in the steady state, the resident size and Go heap with settled events
// settled and the stream's backlog, and writes the half-way heap profile once half the orders
// are settled.
func (r *loadRun) sampleMemory(ctx context.Context, settled uint64) error {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.samples = append(r.samples, memSample{settled: settled, rss: currentRSS(), heap: int64(ms.HeapInuse)})
	if r.p.MemProfile != "" && !r.halfwayProfiled && settled >= uint64(r.p.Orders)/2 {
		r.halfwayProfiled = true
		if err := writeHeapProfile(r.p.MemProfile); err != nil {
			return err
		}
	}
	if infos, err := stream.PartitionConsumers(ctx, r.svc.js, r.cfg.NATS); err == nil {
		var pending uint64
		for _, ci := range infos {
			if ci != nil {
				pending += ci.NumPending + uint64(ci.NumAckPending)
			}
		}
		r.backlog = max(r.backlog, pending)
	}
	return nil
}

// report prints what the consume phase measured: the throughput, the CPU per order, where the
// time went per batch, the rows stored and the memory; it fails when fewer rows were stored than
// events published.
func (r *loadRun) report(ctx context.Context, c consumeResult) error {
	out, want := r.out, r.want
	st := r.svc.consumer.Stats()
	fmt.Fprintf(out, "decided %d orders in %v: %.0f orders/s end to end (%d batches, %d failed, %d events redelivered or naked)\n",
		want, c.took.Round(time.Millisecond), float64(want)/c.took.Seconds(), st.Batches, st.FailedBatches, st.Naked)
	perOrder := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(want) }
	fmt.Fprintf(out, "CPU while deciding: this process %.1f µs per order (%.0f%% of one core)", perOrder(c.cpu), 100*c.cpu.Seconds()/c.took.Seconds())
	if c.pgCPU > 0 {
		fmt.Fprintf(out, ", PostgreSQL backends %.1f µs per order (%.0f%% of one core)", perOrder(c.pgCPU), 100*c.pgCPU.Seconds()/c.took.Seconds())
	}
	fmt.Fprintln(out)

	// Where the time went, from the service's own histograms (summed over the partitions, each
	// processed by its own worker).
	sums := metricSums(r.svc)
	if n := sums["commissioner_batch_seconds_count"]; n > 0 {
		fmt.Fprintf(out, "per batch (mean of %.0f): %.1f ms in all, %.1f ms decode+evaluate, %.1f ms store; busy %.0f%% of the wall time per partition\n",
			n, 1000*sums["commissioner_batch_seconds_sum"]/n,
			1000*sums["commissioner_batch_evaluation_seconds_sum"]/n, 1000*sums["commissioner_batch_store_seconds_sum"]/n,
			100*sums["commissioner_batch_seconds_sum"]/float64(r.cfg.NATS.Partitions)/c.took.Seconds())
	}
	var decisions, dead int64
	db := r.svc.store.DB()
	if err := db.NewRaw("SELECT count(*) FROM decisions").Scan(ctx, &decisions); err != nil {
		return fmt.Errorf("load: counting decisions: %w", err)
	}
	if err := db.NewRaw("SELECT count(*) FROM dead_letters").Scan(ctx, &dead); err != nil {
		return fmt.Errorf("load: counting dead letters: %w", err)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Fprintf(out, "stored: %d decisions, %d dead letters\n", decisions, dead)
	if c := r.svc.shadows.counts(); c.decided > 0 {
		fmt.Fprintf(out, "shadows: %d outcomes decided (%d could not be), stored with their batches\n", c.decided, c.decideFailed)
	}
	if r.p.Rate == 0 {
		fmt.Fprintf(out, "memory: peak RSS %s publishing, %s consuming; after the run Go heap %s in use, %s from the OS\n",
			mib(r.publishPeak), mib(c.peak), mib(int64(ms.HeapInuse)), mib(int64(ms.Sys)))
	} else {
		fmt.Fprintf(out, "memory: peak RSS %s; after the run Go heap %s in use, %s from the OS; the stream's backlog peaked at %d orders\n",
			mib(c.peak), mib(int64(ms.HeapInuse)), mib(int64(ms.Sys)), r.backlog)
		fmt.Fprintf(out, "memory while running, by orders settled: %s\n", quarterSamples(r.samples, want))
	}
	fmt.Fprintf(out, "load average at the end: %s\n", loadAverage())
	if uint64(decisions+dead) < want {
		return fmt.Errorf("load: %d decisions and %d dead letters stored, want %d in all", decisions, dead, want)
	}
	return nil
}

// backendCPU sums the user and system CPU time of the server processes serving the store's
// connections, when the server runs on this machine (read from /proc); 0 otherwise.
func backendCPU(ctx context.Context, pg *store.Scratch) time.Duration {
	if pg == nil {
		return 0
	}
	pids, err := pg.ServerPIDs(ctx)
	if err != nil {
		return 0
	}
	var total time.Duration
	for _, pid := range pids {
		total += procCPU(pid)
	}
	return total
}

// procCPU is a process's user+system CPU time from /proc/<pid>/stat; 0 when unreadable.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) start at ") ".
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	const clockTicks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// processCPU is this process's user+system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// writeHeapProfile writes the live heap (as of the last GC) to path; nothing when path is "".
func writeHeapProfile(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("load: writing heap profile: %w", err)
	}
	return f.Close()
}

// metricSums reads the sums and counts of the service's histograms, by name.
func metricSums(svc *service) map[string]float64 {
	out := map[string]float64{}
	mfs, err := svc.metrics.Registry.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h != nil {
				if ok := len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() == "ok"; ok {
					out[mf.GetName()+"_sum"] += h.GetSampleSum()
					out[mf.GetName()+"_count"] += float64(h.GetSampleCount())
				}
			}
		}
	}
	return out
}

// pacedWriter passes writes on at no more than rate lines per second since start.
type pacedWriter struct {
	w     io.Writer
	rate  int
	start time.Time
	lines int
}

func (p *pacedWriter) Write(b []byte) (int, error) {
	p.lines += bytes.Count(b, []byte{'\n'})
	if ahead := time.Duration(float64(p.lines)/float64(p.rate)*float64(time.Second)) - time.Since(p.start); ahead > 0 {
		time.Sleep(ahead)
	}
	return p.w.Write(b)
}

// memSample is the process's memory when settled events had been settled.
type memSample struct {
	settled   uint64
	rss, heap int64
}

// quarterSamples renders the samples nearest to a quarter, a half, three quarters and all of
// want settled: "RSS / Go heap in use" at each.
func quarterSamples(samples []memSample, want uint64) string {
	if len(samples) == 0 {
		return "(the run was shorter than one sample, 5 s)"
	}
	var parts []string
	last := -1
	for q := uint64(1); q <= 4; q++ {
		i := sort.Search(len(samples), func(i int) bool { return samples[i].settled >= want*q/4 })
		i = min(i, len(samples)-1)
		if i == last {
			continue
		}
		last = i
		s := samples[i]
		parts = append(parts, fmt.Sprintf("%d: RSS %s, heap %s", s.settled, mib(s.rss), mib(s.heap)))
	}
	return strings.Join(parts, "; ")
}

// currentRSS is VmRSS from /proc/self/status in bytes; -1 when unknown.
func currentRSS() int64 { return procStatusBytes("VmRSS:") }

// resetPeakRSS resets the kernel's peak RSS (VmHWM) of this process to its current RSS, so that
// peakRSS measures one phase. Where that is not possible the peak stays since the start.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSS is VmHWM from /proc/self/status in bytes; -1 when unknown.
func peakRSS() int64 { return procStatusBytes("VmHWM:") }

// procStatusBytes reads a "kB" field of /proc/self/status in bytes; -1 when unknown.
func procStatusBytes(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return -1
			}
			return kb << 10
		}
	}
	return -1
}

func mib(n int64) string {
	if n < 0 {
		return "unknown"
	}
	return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
}

// loadAverage is the first three fields of /proc/loadavg.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
