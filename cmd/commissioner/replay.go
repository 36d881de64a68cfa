package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/adapters/replayreport"
	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/adapters/stream"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// exitDrift is replay's exit status when a decision replayed with its own recorded policy
// version did not reproduce.
const exitDrift = 3

type replayParams struct {
	Policy    string // candidate policy file or directory
	Version   int    // or: a stored version of Program
	Program   string
	From, To  time.Time // placed_at in [From, To); zero: unbounded
	Affiliate string
	AllEvents bool   // every stored event, not only each order's latest
	Format    string // table, json, csv, html
	Out       string // "" : standard output
	Record    bool
	Source    string // store or stream
	Changes   int    // per-order changes listed; < 0: the format's default
	Workers   int
	// All lists every row of the table's breakdowns; without it the rows of orders not
	// qualified before or after (nothing to pay, nothing changed) are folded into one line.
	All bool
	// Sweep are the --sweep ranges: with any, the candidate's terms are varied over them and
	// every point priced in one pass (sweep.go). Budgets are the --budget bounds (sweep.go).
	Sweep   []engine.SweepAxis
	Budgets []engine.Budget
}

func newReplayCmd(s streams) *cobra.Command {
	p := replayParams{Format: "table", Source: "store", Changes: -1, Workers: runtime.GOMAXPROCS(0)}
	var from, to string
	var sweeps, budgets []string
	cmd := &cobra.Command{
		Use:   "replay (--policy FILE_OR_DIR | --version N) [--program P] [--from T] [--to T] [--affiliate A] [--format table|json|csv|html] [--out FILE] [--record] [--source store|stream] [--sweep RULE.rate=FROM..TO/STEP]… [--budget CUR:AMOUNT]…",
		Short: "Price a policy change on real history: re-decide stored orders with a candidate policy and compare",
		Long: `Re-decides the stored order events in the range (the latest event of each order, unless
--all-events) with a candidate policy — a policy file or directory not yet deployed (--policy), or
a stored version (--version N, its source text read from the store and its digest checked) — and
compares each decision with the one recorded for the event.

Which candidate version decides an order: a single policy file (or --version) decides every
order of its program, whatever its effective_from: the replay answers "what if these terms had
applied". A policy directory decides each event as the service would: with the version its order
was pinned to when the recorded decision was pinned (the terms of the sale), else the version in
force at its placed_at — replaying the deployed directory reproduces what the service decided.
Rules that read the affiliate's month (affiliate.*) get the figures recorded with the decision.

The report gives the orders evaluated, qualification changes each way, orders whose commission
changed, total commission before, after and the difference per currency (exact decimals),
breakdowns by rate rule, buyer market and new vs returning buyer, the affiliates with the
largest changes, and the per-order changes with the rule that made the difference.

Formats: table (default), json, csv and html (self-contained, with inline SVG charts). csv writes
one row per changed order; with --out FILE.csv the totals and breakdowns go to FILE.totals.csv,
on standard output they follow the rows after one blank line, as a second table with its header.

It is a dry run: nothing is written to decisions. --record stores the run (candidate, digest,
source, parameters, summary) in the replay_runs table for audit.

Orders decided with the very version that recorded them must reproduce exactly; any difference
is drift, listed in the report, and replay exits with status 3.

--source stream reads the events from the NATS stream's history (an ordered consumer over every
partition's stored events, orders.p.>, in stream order) instead of the store; recorded decisions still come from the store, by event id.
--from and --to take RFC 3339 times, dates (2025-10-01) or months (2025-10), in UTC; --to is exclusive.

--sweep RULE.rate=4%..7%/0.5% (or RULE.flat.CUR=1.00..3.00/0.50, or a list: RULE.rate=5%,5.5%)
prices the candidate file with the rule's term set to each value, in one pass over the history;
several --sweep form a grid (at most 64 points). It prints the cost curve: per currency, the
commission before and after and the orders changed at each point.

--budget CUR:AMOUNT bounds the change in CUR: a candidate keeps to it when its difference (after −
before) is at most AMOUNT — USD:-5000 asks for a saving of at least 5000 USD, USD:2000 allows at
most 2000 USD more. A single candidate that does not keep to a budget makes replay exit with status
4 (after the report); a sweep names the point at which its change crosses each budget (of the
points that keep to it, the one closest to it) and exits with status 4 when no point keeps to one.`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd, storeFlags|natsFlags) // nats: --source stream
	f := cmd.Flags()
	f.StringVar(&p.Policy, "policy", "", "candidate policy file or directory")
	f.IntVar(&p.Version, "version", 0, "replay with this stored version of --program instead of --policy")
	f.StringVar(&p.Program, "program", "", "only orders of this program (default: the candidate's, when it has one)")
	f.StringVar(&from, "from", "", "only orders placed at or after this time")
	f.StringVar(&to, "to", "", "only orders placed before this time")
	f.StringVar(&p.Affiliate, "affiliate", "", "only orders of this affiliate")
	f.BoolVar(&p.AllEvents, "all-events", false, "every stored event of each order, not only the latest")
	f.StringVar(&p.Format, "format", p.Format, "report format: table, json, csv or html")
	f.StringVarP(&p.Out, "out", "o", "", "write the report to this file (default: standard output)")
	f.BoolVar(&p.Record, "record", false, "store this replay run (not its decisions) in the replay_runs table")
	f.StringVar(&p.Source, "source", p.Source, "where the events come from: store or stream")
	f.IntVar(&p.Changes, "changes", p.Changes, "per-order changes to list (default: 100 for table and html, all for json and csv; 0: none)")
	f.IntVar(&p.Workers, "workers", p.Workers, "events decided in parallel")
	f.BoolVar(&p.All, "all", false, "table: list every rate-rule row, also the unchanged (not qualified) → (not qualified) ones")
	f.StringArrayVar(&sweeps, "sweep", nil, "vary a term of the candidate file: RULE.rate=4%..7%/0.5%, RULE.flat.CUR=1.00..3.00/0.50 or RULE.rate=5%,6%; several form a grid")
	f.StringArrayVar(&budgets, "budget", nil, "CUR:AMOUNT: the most the change in CUR may be (USD:-5000: save at least 5000 USD); exit status 4 when a candidate does not keep to it")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		var err error
		if err := p.parseSweep(sweeps, budgets); err != nil {
			return err
		}
		if p.From, err = parseReplayTime("--from", from); err != nil {
			return err
		}
		if p.To, err = parseReplayTime("--to", to); err != nil {
			return err
		}
		if err := p.validate(); err != nil {
			return err
		}
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		if len(p.Sweep) > 0 {
			return runSweep(cmd.Context(), cfg, p, s.out, s.err)
		}
		return runReplay(cmd.Context(), cfg, p, s.out, s.err)
	}
	return cmd
}

// parseReplayTime reads an RFC 3339 time, a date or a month (UTC).
func parseReplayTime(flag, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02", "2006-01"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, usageError{fmt.Errorf("%s %q: want an RFC 3339 time (2025-10-01T00:00:00Z), a date (2025-10-01) or a month (2025-10)", flag, v)}
}

func (p *replayParams) validate() error {
	var errs []error
	switch {
	case p.Policy == "" && p.Version == 0:
		errs = append(errs, errors.New("give the candidate: --policy FILE_OR_DIR, or --version N of a stored version"))
	case p.Policy != "" && p.Version != 0:
		errs = append(errs, errors.New("--policy and --version are exclusive: give one candidate"))
	case p.Version < 0:
		errs = append(errs, fmt.Errorf("--version %d: versions are positive", p.Version))
	}
	switch p.Format {
	case "table", "json", "csv", "html":
	default:
		errs = append(errs, fmt.Errorf("--format %q: want table, json, csv or html", p.Format))
	}
	if p.Source != "store" && p.Source != "stream" {
		errs = append(errs, fmt.Errorf("--source %q: want store or stream", p.Source))
	}
	if !p.From.IsZero() && !p.To.IsZero() && !p.From.Before(p.To) {
		errs = append(errs, fmt.Errorf("--from %s is not before --to %s", p.From.Format(time.RFC3339), p.To.Format(time.RFC3339)))
	}
	errs = append(errs, p.validateSweep()...)
	if err := errors.Join(errs...); err != nil {
		return usageError{err}
	}
	return nil
}

// changesLimit is how many per-order changes the report keeps (engine.ReplayOptions.MaxChanges).
func (p *replayParams) changesLimit() int {
	switch {
	case p.Changes > 0:
		return p.Changes
	case p.Changes == 0:
		return -1 // none: handled by the renderers; the engine keeps one
	case p.Format == "table" || p.Format == "html":
		return 100
	}
	return 0 // all
}

// replayRun is one replay's inputs and result, what the renderers and --record need.
type replayRun struct {
	Params     replayParams
	Candidate  string // where the candidate came from: a path, or "store: program vN"
	Filter     store.EventFilter
	Pinned     bool // a single file or a stored version: applied to every order
	Report     *engine.ReplayReport
	Warnings   []string
	ChangesCap int // the listed changes the user asked for (< 0: none)
}

// runReplay loads the candidate, opens the store (and the stream), replays and writes the
// report; with drift it returns exitCode(3) after the report is written.
func runReplay(ctx context.Context, cfg Config, p replayParams, out, errOut io.Writer) error {
	if err := requireStore(cfg); err != nil {
		return err
	}
	st, err := store.Open(ctx, cfg.storeConfig())
	if err != nil {
		return err
	}
	defer st.Close()

	run := &replayRun{}
	set, err := replayCandidate(ctx, st, &p, run)
	if err != nil {
		return err
	}
	run.Params = p // with the program the candidate implies
	run.Filter = store.EventFilter{Program: p.Program, From: p.From, To: p.To, Affiliate: p.Affiliate, LatestPerOrder: !p.AllEvents}

	h, fromStream, closeHistory, err := replayHistory(ctx, cfg, st, p, run.Filter)
	if err != nil {
		return err
	}
	defer closeHistory()

	limit := p.changesLimit()
	run.ChangesCap = limit
	// A replay allocates fast and keeps little (batches in flight, the aggregates): collecting
	// a quarter as often saves a good share of the CPU for a few tens of MB more.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	maxChanges := limit
	if limit < 0 {
		maxChanges = 1 // none are listed; the engine keeps at least one
	}
	rep, elapsed, err := replayShowingProgress(ctx, set, h, engine.ReplayOptions{Workers: p.Workers, MaxChanges: maxChanges, AsDeployed: !run.Pinned}, errOut)
	if err != nil {
		return err
	}
	run.Report = rep
	run.Warnings = append(run.Warnings, replayWarnings(rep, fromStream)...)

	if err := writeReplayReport(run, p.Format, p.Out, out); err != nil {
		return err
	}
	// The table ends with the warnings: on standard output it has said them. Any other report
	// (a file, json, csv, html) leaves them to standard error, said there once.
	if p.Format != "table" || p.Out != "" {
		for _, w := range run.Warnings {
			fmt.Fprintf(errOut, "warning: %s\n", w)
		}
	}
	rate := float64(rep.Events) / max(elapsed.Seconds(), 1e-9)
	fmt.Fprintf(errOut, "replayed %d events (%d evaluated) in %v: %.0f events/s\n", rep.Events, rep.Evaluated, elapsed.Round(time.Millisecond), rate)
	if p.Record {
		id, err := recordReplay(ctx, st, set, run)
		if err != nil {
			return err
		}
		fmt.Fprintf(errOut, "recorded replay run %d\n", id)
	}
	budgetErr := checkReplayBudgets(p.Budgets, rep, errOut)
	if rep.Drift > 0 {
		fmt.Fprintf(errOut, "drift: %d of %d orders replayed with their recorded policy version did not reproduce their decision\n", rep.Drift, rep.SameVersion)
		return exitCode(exitDrift)
	}
	return budgetErr
}

// replayHistory is where the replay reads the events: the store, or the stream's history (with
// the store's decisions); closeHistory releases what it opened.
func replayHistory(ctx context.Context, cfg Config, st *store.Store, p replayParams, filter store.EventFilter) (h engine.History, fromStream *stream.History, closeHistory func(), err error) {
	if p.Source != "stream" {
		return st.History(filter), nil, func() {}, nil
	}
	sh, closeStream, err := openStreamHistory(ctx, cfg, st, filter)
	if err != nil {
		return nil, nil, nil, err
	}
	return sh, sh, closeStream, nil
}

// replayShowingProgress replays h with the candidate set, showing on a terminal errOut how many
// events were read; it returns the report and how long the replay took.
func replayShowingProgress(ctx context.Context, set *rules.Set, h engine.History, opts engine.ReplayOptions, errOut io.Writer) (*engine.ReplayReport, time.Duration, error) {
	start := time.Now()
	var read atomic.Int64
	prog := startProgress(errOut, func() string {
		return "replay: events read " + perSecond(read.Load(), start)
	})
	defer prog.Stop()
	rep, err := engine.Replay(ctx, set, countEvents(h, &read), opts)
	prog.Stop()
	return rep, time.Since(start), err
}

// replayWarnings are what the reader of the report must know about how it was made: stream
// messages skipped, affiliate months assumed empty, versions whose text changed.
func replayWarnings(rep *engine.ReplayReport, fromStream *stream.History) []string {
	var warnings []string
	if fromStream != nil && fromStream.Skipped > 0 {
		warnings = append(warnings, fmt.Sprintf("skipped %d stream messages that are not valid orders (the service dead-lettered them)", fromStream.Skipped))
	}
	return append(warnings, replayreport.ReportWarnings(rep)...) // affiliate months assumed, digests that differ
}

// countEvents counts in n the events walked from h (for the progress line); a partitioned
// history stays one, its parts counted too.
func countEvents(h engine.History, n *atomic.Int64) engine.History {
	c := countingHistory{h: h, n: n}
	if ph, ok := h.(engine.PartitionedHistory); ok {
		return countingPartitionedHistory{countingHistory: c, ph: ph}
	}
	return c
}

type countingHistory struct {
	h engine.History
	n *atomic.Int64
}

func (c countingHistory) Walk(ctx context.Context, fn func(batch []engine.ReplayEvent) error) error {
	return c.h.Walk(ctx, func(batch []engine.ReplayEvent) error {
		c.n.Add(int64(len(batch)))
		return fn(batch)
	})
}

type countingPartitionedHistory struct {
	countingHistory
	ph engine.PartitionedHistory
}

func (c countingPartitionedHistory) Partitions(ctx context.Context, n int) ([]engine.History, error) {
	parts, err := c.ph.Partitions(ctx, n)
	if err != nil {
		return nil, err
	}
	out := make([]engine.History, len(parts))
	for i, part := range parts {
		out[i] = countingHistory{h: part, n: c.n}
	}
	return out, nil
}

var (
	_ engine.History            = countingHistory{}
	_ engine.PartitionedHistory = countingPartitionedHistory{}
)

// requireStore refuses a SQLite store file that does not exist: opening it would create an
// empty one, and the replay would find nothing.
func requireStore(cfg Config) error {
	dsn := cfg.Store.DSN
	if cfg.storeConfig().Backend() != store.SQLite {
		return nil
	}
	path := strings.TrimPrefix(dsn, "sqlite://")
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("replaying: no store at %s (%v): give --store-dsn, or --data-dir of a service that decided orders", path, err)
	}
	return nil
}

// replayCandidate loads the candidate policy set: the --policy file or directory (restricted to
// --program when given), or the stored --version, compiled from its stored source and checked
// against its digest. It fills p.Program from a one-program candidate.
func replayCandidate(ctx context.Context, st *store.Store, p *replayParams, run *replayRun) (*rules.Set, error) {
	var set *rules.Set
	if p.Version > 0 {
		if p.Program == "" {
			programs, err := st.DecisionPrograms(ctx)
			if err != nil {
				return nil, err
			}
			if len(programs) != 1 {
				return nil, usageError{fmt.Errorf("--version %d: give --program (the store holds decisions of %d programs)", p.Version, len(programs))}
			}
			p.Program = programs[0]
		}
		sp, err := st.PolicyVersion(ctx, p.Program, p.Version)
		if err != nil {
			return nil, fmt.Errorf("loading the candidate: %w", err)
		}
		pol, problems := rules.Compile(sp.File, sp.Source)
		if pol == nil {
			return nil, fmt.Errorf("loading the candidate: stored %s v%d does not compile any more:\n%w", sp.Program, sp.Version, problems)
		}
		if pol.Digest != sp.Digest {
			return nil, fmt.Errorf("loading the candidate: stored %s v%d has digest %s, but its stored source hashes to %s: the stored policy was altered",
				sp.Program, sp.Version, sp.Digest, pol.Digest)
		}
		if pol.Program != sp.Program || pol.Version != sp.Version {
			return nil, fmt.Errorf("loading the candidate: stored %s v%d's source says %s v%d", sp.Program, sp.Version, pol.Program, pol.Version)
		}
		s, ps := rules.NewSet([]*rules.Policy{pol})
		if s == nil {
			return nil, ps
		}
		set = s
		run.Candidate = fmt.Sprintf("stored %s v%d", sp.Program, sp.Version)
		run.Pinned = true
	} else {
		s, err := rules.LoadFile(p.Policy)
		if err != nil {
			return nil, fmt.Errorf("loading the candidate policy %s:\n%w", p.Policy, err)
		}
		set = s
		run.Candidate = p.Policy
		if info, err := os.Stat(p.Policy); err == nil && !info.IsDir() {
			run.Pinned = true
			set = set.WithShadowsLive() // a shadow's file is priced as if it were in force
		}
		if p.Program != "" {
			vs := set.Versions(p.Program)
			if len(vs) == 0 {
				return nil, fmt.Errorf("loading the candidate: %s has no version of program %q (it has %s)", p.Policy, p.Program, strings.Join(set.Programs(), ", "))
			}
			if set, _ = rules.NewSet(vs); set == nil {
				return nil, fmt.Errorf("loading the candidate: program %s", p.Program)
			}
		} else if progs := set.Programs(); len(progs) == 1 {
			p.Program = progs[0]
		}
		for _, w := range s.Warnings() {
			run.Warnings = append(run.Warnings, "candidate: "+w.String())
		}
	}
	// The candidate's own examples: a changed rate usually breaks some, which is no reason not
	// to price it, but worth saying.
	failed, total := 0, 0
	for _, r := range engine.New(set).RunPolicyTests(ctx) {
		total++
		if !r.Passed() {
			failed++
		}
	}
	if failed > 0 {
		w := fmt.Sprintf("candidate: %d of its %d example orders fail", failed, total)
		if p.Policy != "" {
			w += " (commissioner policy test --policies " + p.Policy + ")"
		}
		run.Warnings = append(run.Warnings, w)
	}
	return set, nil
}

// recordReplay stores the run in replay_runs: the candidate version that decided the most
// events (all of them in the parameters), the parameters and the summary.
func recordReplay(ctx context.Context, st *store.Store, set *rules.Set, run *replayRun) (int64, error) {
	rep := run.Report
	var main *rules.Policy
	var mainOrders int64 = -1
	for _, c := range rep.Candidates {
		if c.Orders > mainOrders || c.Orders == mainOrders && main != nil && c.Version > main.Version {
			if p, err := set.Version(c.Program, c.Version); err == nil {
				main, mainOrders = p, c.Orders
			}
		}
	}
	if main == nil {
		return 0, errors.New("recording the replay: the candidate has no version")
	}
	params, err := json.Marshal(replayParamsDoc(run))
	if err != nil {
		return 0, err
	}
	summary, err := json.Marshal(httpapi.NewReplaySummaryDoc(rep))
	if err != nil {
		return 0, err
	}
	return st.SaveReplayRun(ctx, store.ReplayRun{
		CandidateProgram: main.Program, CandidateVersion: main.Version, CandidateDigest: main.Digest,
		CandidateSource: string(main.Source), Parameters: params, Summary: summary,
	})
}

// totalsPath is where a csv report's totals go: FILE.csv → FILE.totals.csv.
func totalsPath(out string) string {
	ext := filepath.Ext(out)
	return strings.TrimSuffix(out, ext) + ".totals" + ext
}
