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

func runLoad(ctx context.Context, cfg Config, p loadParams, out, errOut io.Writer) (err error) {
	cfg.WatchPolicies = false
	if p.BatchSize > 0 || p.Partitions > 0 {
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
	}
	var cleanups []func() error
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			err = errors.Join(err, cleanups[i]())
		}
	}()
	var pg *store.Scratch // nil with SQLite
	if cfg.storeConfig().Kind() == store.Postgres {
		// A schema of the run's own (unless the DSN names one), its connections named so that the
		// server's CPU can be read.
		if pg, err = store.NewScratch(ctx, cfg.Store.DSN, "commissioner_load", p.Keep); err != nil {
			return fmt.Errorf("load: %w", err)
		}
		if p.Keep && pg.Schema != "" {
			fmt.Fprintf(errOut, "load: PostgreSQL schema %s (kept)\n", pg.Schema)
		}
		cfg.Store.DSN = pg.DSN
		cleanups = append(cleanups, pg.Close)
	}
	if cfg.NATS.URL != "" {
		suffix := randomHex(4)
		cfg.NATS.Stream, cfg.NATS.Subjects, cfg.NATS.Durable = "LOAD_"+suffix, "load"+suffix+".>", "load_"+suffix
		if p.Keep {
			fmt.Fprintf(errOut, "load: NATS stream %s on %s (kept)\n", cfg.NATS.Stream, cfg.NATS.Subjects)
		}
	}
	if cfg.NATS.URL != "" && !p.Keep {
		cleanups = append(cleanups, func() error {
			nc, err := stream.Connect(context.Background(), cfg.NATS)
			if err != nil {
				return fmt.Errorf("deleting stream %s: %w", cfg.NATS.Stream, err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return fmt.Errorf("deleting stream %s: %w", cfg.NATS.Stream, err)
			}
			return stream.DeleteStream(context.Background(), js, cfg.NATS) // and its owners bucket
		})
	}

	// On a terminal, a progress line: the orders published, then the orders settled (instead of
	// a line every 5 s). The log and the report are written through it.
	var running atomic.Pointer[service]
	var want0 atomic.Int64 // the orders to settle, once known (0: publishing)
	sent := &lineCounter{}
	var phaseStart atomic.Int64 // UnixNano
	phaseStart.Store(time.Now().UnixNano())
	prog := startProgress(errOut, func() string {
		svc := running.Load()
		if svc == nil {
			return "load: starting the service"
		}
		st := svc.consumer.Stats()
		settled := int64(st.Acked + st.Termed)
		if n := want0.Load(); n > 0 || p.Rate > 0 {
			return fmt.Sprintf("load: %d of %d settled, %s", settled, max(n, int64(p.Orders)), perSecond(settled, time.Unix(0, phaseStart.Load())))
		}
		return fmt.Sprintf("load: published %d of %d orders, %s", sent.lines.Load(), p.Orders, perSecond(sent.lines.Load(), time.Unix(0, phaseStart.Load())))
	})
	defer prog.Stop()
	out, errOut = prog.Through(out), prog

	log := slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: slog.LevelWarn}))
	svc, err := startService(ctx, cfg, log)
	if err != nil {
		return err
	}
	running.Store(svc)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	started := false
	defer func() {
		if !started {
			svc.close()
			return
		}
		stop()
		err = errors.Join(err, <-done)
	}()
	natsAt := "embedded, " + cfg.NATS.DataDir
	if cfg.NATS.URL != "" {
		natsAt = "external server, stream " + cfg.NATS.Stream
	}
	fmt.Fprintf(out, "load: %d orders (%d‰ bad), batches of %d, %d partitions, GOMAXPROCS %d, load average %s\n",
		p.Orders, p.BadPerMille, cfg.NATS.BatchSize, cfg.NATS.Partitions, runtime.GOMAXPROCS(0), loadAverage())
	fmt.Fprintf(out, "store: %s\nnats:  %s\n", svc.store, natsAt)

	pub, err := stream.NewPublisher(svc.js, cfg.NATS)
	if err != nil {
		return err
	}
	// sample writes the generated orders to a pipe for the publisher, paced at p.Rate when set.
	sample := func() *io.PipeReader {
		pr, pw := io.Pipe()
		go func() {
			var dst io.Writer = pw
			if p.Rate > 0 {
				dst = &pacedWriter{w: pw, rate: p.Rate, start: time.Now()}
			}
			w := bufio.NewWriterSize(dst, 1<<16)
			err := writeSample(w, sampleParams{N: p.Orders, Seed: p.Seed, Program: "alibaba", Month: "2025-10", Bad: p.BadPerMille})
			if err == nil {
				err = w.Flush()
			}
			pw.CloseWithError(err)
		}()
		return pr
	}

	// want is how many events the consumer must settle, and lastSeq the stream sequence of the
	// last: known once publishing is done.
	var want, lastSeq uint64
	var publishPeak int64
	type published struct {
		st   stream.PublishStats
		took time.Duration
		err  error
	}
	var publishing chan published // steady state: the publisher's result
	if p.Rate == 0 {
		// Phase 1: publish everything before anything is consumed.
		resetPeakRSS()
		pr := sample()
		start, cpu0 := time.Now(), processCPU()
		sent.r = pr
		phaseStart.Store(start.UnixNano())
		pst, err := pub.PublishLines(ctx, sent, p.Concurrency)
		pr.Close()
		if err != nil {
			return fmt.Errorf("load: publishing: %w", err)
		}
		took, cpu := time.Since(start), processCPU()-cpu0
		publishPeak = peakRSS()
		fmt.Fprintf(out, "published %d orders in %v: %.0f orders/s (%d accepted, %d already in the stream), %.1f µs CPU per order, peak RSS %s\n",
			pst.Lines, took.Round(time.Millisecond), float64(pst.Lines)/took.Seconds(), pst.Accepted, pst.Duplicates,
			float64(cpu.Microseconds())/float64(max(pst.Lines, 1)), mib(publishPeak))
		if err := writeHeapProfile(p.MemProfile); err != nil {
			return err
		}
		if want, lastSeq = uint64(pst.Accepted), pst.LastSeq; want == 0 {
			return errors.New("load: the stream already held every order (a data directory of an earlier run?): nothing to decide")
		}
		want0.Store(int64(want))
	} else {
		fmt.Fprintf(out, "steady state: publishing at %d orders/s while consuming\n", p.Rate)
		publishing = make(chan published, 1)
	}

	// Phase 2: consume until everything published is settled (in the steady state, while it is
	// being published).
	resetPeakRSS()
	if p.CPUProfile != "" {
		f, err := os.Create(p.CPUProfile)
		if err != nil {
			return fmt.Errorf("load: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("load: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	pgBefore := backendCPU(ctx, pg)
	start, cpu0 := time.Now(), processCPU()
	phaseStart.Store(start.UnixNano())
	started = true
	go func() { done <- svc.Run(runCtx) }()
	if publishing != nil {
		go func() {
			pr := sample()
			start := time.Now()
			pst, err := pub.PublishLines(runCtx, pr, p.Concurrency)
			pr.Close()
			publishing <- published{st: pst, took: time.Since(start), err: err}
		}()
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	lastReport := start
	var samples []memSample
	var backlog uint64
	halfwayProfiled := false // with Rate: the heap profile is written once half the orders are settled
	for {
		st := svc.consumer.Stats()
		if publishing == nil && st.Acked+st.Termed >= want {
			if ok, err := stream.Settled(ctx, svc.js, cfg.NATS, lastSeq); err == nil && ok {
				break
			}
		}
		if time.Since(lastReport) >= 5*time.Second {
			lastReport = time.Now()
			settled := st.Acked + st.Termed
			if p.Rate > 0 {
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				samples = append(samples, memSample{settled: settled, rss: currentRSS(), heap: int64(ms.HeapInuse)})
				if p.MemProfile != "" && !halfwayProfiled && settled >= uint64(p.Orders)/2 {
					halfwayProfiled = true
					if err := writeHeapProfile(p.MemProfile); err != nil {
						return err
					}
				}
				if infos, err := stream.PartitionConsumers(ctx, svc.js, cfg.NATS); err == nil {
					var pending uint64
					for _, ci := range infos {
						if ci != nil {
							pending += ci.NumPending + uint64(ci.NumAckPending)
						}
					}
					backlog = max(backlog, pending)
				}
			}
			if !prog.on { // on a terminal, the progress line says it
				fmt.Fprintf(errOut, "load: %d of %d settled after %v\n", settled, max(want, uint64(p.Orders)), time.Since(start).Round(time.Second))
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-done:
			started = false
			if err == nil {
				err = errors.New("the service stopped")
			}
			return fmt.Errorf("load: consuming: %w", err)
		case r := <-publishing:
			publishing = nil
			if r.err != nil {
				return fmt.Errorf("load: publishing: %w", r.err)
			}
			// The publisher's CPU is not told apart from the consumer's: both run in this process.
			fmt.Fprintf(out, "published %d orders in %v: %.0f orders/s (%d accepted, %d already in the stream)\n",
				r.st.Lines, r.took.Round(time.Millisecond), float64(r.st.Lines)/r.took.Seconds(), r.st.Accepted, r.st.Duplicates)
			if want, lastSeq = uint64(r.st.Accepted), r.st.LastSeq; want == 0 {
				return errors.New("load: the stream already held every order (a data directory of an earlier run?): nothing to decide")
			}
			want0.Store(int64(want))
		case <-tick.C:
		}
	}
	took, cpu := time.Since(start), processCPU()-cpu0
	prog.Stop()
	if p.CPUProfile != "" {
		pprof.StopCPUProfile()
	}
	pgCPU := backendCPU(ctx, pg) - pgBefore
	if p.MemProfile != "" {
		if err := writeHeapProfile(p.MemProfile + ".consume"); err != nil {
			return err
		}
	}
	consumePeak := peakRSS()
	st := svc.consumer.Stats()
	fmt.Fprintf(out, "decided %d orders in %v: %.0f orders/s end to end (%d batches, %d failed, %d events redelivered or naked)\n",
		want, took.Round(time.Millisecond), float64(want)/took.Seconds(), st.Batches, st.FailedBatches, st.Naked)
	perOrder := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(want) }
	fmt.Fprintf(out, "CPU while deciding: this process %.1f µs per order (%.0f%% of one core)", perOrder(cpu), 100*cpu.Seconds()/took.Seconds())
	if pgCPU > 0 {
		fmt.Fprintf(out, ", PostgreSQL backends %.1f µs per order (%.0f%% of one core)", perOrder(pgCPU), 100*pgCPU.Seconds()/took.Seconds())
	}
	fmt.Fprintln(out)

	// Where the time went, from the service's own histograms (summed over the partitions, each
	// processed by its own worker).
	sums := metricSums(svc)
	if n := sums["commissioner_batch_seconds_count"]; n > 0 {
		fmt.Fprintf(out, "per batch (mean of %.0f): %.1f ms in all, %.1f ms decode+evaluate, %.1f ms store; busy %.0f%% of the wall time per partition\n",
			n, 1000*sums["commissioner_batch_seconds_sum"]/n,
			1000*sums["commissioner_batch_evaluation_seconds_sum"]/n, 1000*sums["commissioner_batch_store_seconds_sum"]/n,
			100*sums["commissioner_batch_seconds_sum"]/float64(cfg.NATS.Partitions)/took.Seconds())
	}
	var decisions, dead int64
	db := svc.store.DB()
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
	if p.Rate == 0 {
		fmt.Fprintf(out, "memory: peak RSS %s publishing, %s consuming; after the run Go heap %s in use, %s from the OS\n",
			mib(publishPeak), mib(consumePeak), mib(int64(ms.HeapInuse)), mib(int64(ms.Sys)))
	} else {
		fmt.Fprintf(out, "memory: peak RSS %s; after the run Go heap %s in use, %s from the OS; the stream's backlog peaked at %d orders\n",
			mib(consumePeak), mib(int64(ms.HeapInuse)), mib(int64(ms.Sys)), backlog)
		fmt.Fprintf(out, "memory while running, by orders settled: %s\n", quarterSamples(samples, want))
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
