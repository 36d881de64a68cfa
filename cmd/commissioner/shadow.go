package main

// commissioner shadow report: what a shadow version (stage: shadow) decided beside the live
// decisions of the same events, priced like a replay (live as before, shadow as after).

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/adapters/replayreport"
	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine"
)

var _ httpapi.ShadowReader = (*store.Store)(nil)

type shadowReportParams struct {
	Program  string
	Version  int
	From, To time.Time // placed_at in [From, To); zero: unbounded
	Format   string    // table, json, csv, html
	Out      string    // "": standard output
	Orders   int       // diverging orders listed
	Policies string    // the policy directory: html shows the shadow versions' sample from it
}

func newShadowCmd(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "shadow",
		Short: "Shadow versions: what a policy not yet in force decides on the live stream",
		Args:  cobra.NoArgs,
	}
	p := shadowReportParams{Format: "table", Orders: 20}
	var from, to string
	report := &cobra.Command{
		Use:   "report [--program P] [--version N] [--from T] [--to T] [--format table|json|csv|html] [--out FILE] [--orders N]",
		Short: "Compare a shadow version's outcomes with the live decisions of the same events",
		Long: `A policy file marked "stage: shadow" is a shadow version: serve decides every event of its program
with the live version as always and, in the same pass, with the shadow (or its sample: "sample: 0.1"),
and stores the shadow's outcome apart from the decisions — outside the chain, the ledger and the
payouts. This report reads those outcomes beside the live decisions of the same events, each
order once (its latest event the shadow decided), and prices them like replay: totals per currency
live (before) and shadow (after) with the difference, the live × shadow qualification matrix,
breakdowns by rate rule, by the first rule whose outcome differed, by buyer market, by new vs
returning buyer and by affiliate, the orders that diverged most with both outcomes (and the
explain command of each), and how many events it saw.

--program and --version may be left out when only one program, or one shadow version of it, has
outcomes stored. --from and --to bound the orders' placed_at (RFC 3339, a date 2025-10-01 or a
month 2025-10, UTC; --to exclusive). Formats: table (default), json (replay's summary.totals
shape), csv (one row per diverging order listed, then the totals and breakdowns after a blank
line, or in FILE.totals.csv with --out FILE.csv) and html (one self-contained page).`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(report, storeFlags)
	f := report.Flags()
	f.StringVar(&p.Program, "program", "", "the shadow's program (default: the one program with shadow outcomes)")
	f.IntVar(&p.Version, "version", 0, "the shadow version (default: the program's one shadow version with outcomes)")
	f.StringVar(&from, "from", "", "only orders placed at or after this time")
	f.StringVar(&to, "to", "", "only orders placed before this time")
	f.StringVar(&p.Format, "format", p.Format, "report format: table, json, csv or html")
	f.StringVarP(&p.Out, "out", "o", "", "write the report to this file (default: standard output)")
	f.IntVar(&p.Orders, "orders", p.Orders, "diverging orders to list, the largest commission differences first")
	report.RunE = func(cmd *cobra.Command, _ []string) error {
		var err error
		if p.From, err = parseReplayTime("--from", from); err != nil {
			return err
		}
		if p.To, err = parseReplayTime("--to", to); err != nil {
			return err
		}
		switch {
		case p.Format != "table" && p.Format != "json" && p.Format != "csv" && p.Format != "html":
			return usageError{fmt.Errorf("--format %q: want table, json, csv or html", p.Format)}
		case p.Version < 0:
			return usageError{fmt.Errorf("--version %d: versions are positive", p.Version)}
		case p.Orders < 1:
			return usageError{fmt.Errorf("--orders %d: want at least 1", p.Orders)}
		case !p.From.IsZero() && !p.To.IsZero() && !p.From.Before(p.To):
			return usageError{fmt.Errorf("--from %s is not before --to %s", p.From.Format(time.RFC3339), p.To.Format(time.RFC3339))}
		}
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		return runShadowReport(cmd.Context(), cfg, p, s.out)
	}
	cmd.AddCommand(report)
	return cmd
}

// runShadowReport reads the shadow outcomes p selects from the store and writes the report.
func runShadowReport(ctx context.Context, cfg Config, p shadowReportParams, out io.Writer) error {
	if err := existingStore(cfg, "shadow report"); err != nil {
		return err
	}
	st, err := store.Open(ctx, cfg.storeConfig())
	if err != nil {
		return err
	}
	defer st.Close()
	stored, err := st.ShadowVersions(ctx, p.Program)
	if err != nil {
		return err
	}
	filter, err := engine.ResolveShadow(stored, engine.ShadowFilter{Program: p.Program, Version: p.Version, From: p.From, To: p.To})
	if err != nil {
		if errors.Is(err, engine.ErrShadowAmbiguous) {
			return usageError{fmt.Errorf("shadow report: %w (--program, --version)", err)}
		}
		return fmt.Errorf("shadow report: %w", err)
	}
	rep, err := engine.ShadowReportOf(ctx, st.ShadowHistory(filter), engine.ShadowReportOptions{MaxOrders: p.Orders})
	if err != nil {
		return fmt.Errorf("shadow report: %w", err)
	}
	p.Policies = cfg.Policies
	return writeShadowReport(rep, filter, p, out)
}

// writeShadowReport writes the report in p's format to p.Out (standard output when "").
func writeShadowReport(rep *engine.ShadowReport, f engine.ShadowFilter, p shadowReportParams, stdout io.Writer) error {
	return writeReportFile(p.Out, stdout, "the shadow report", func(w io.Writer) error {
		switch p.Format {
		case "json":
			return writeJSONDoc(w, httpapi.NewShadowDocument(rep, f))
		case "csv":
			return writeShadowCSV(w, rep, p.Out)
		case "html":
			return writeShadowHTML(w, rep, f, p)
		}
		return writeShadowTable(w, rep, f)
	})
}

// shadowRangeLabel describes the orders a report covers.
func shadowRangeLabel(f engine.ShadowFilter) string {
	var when string
	switch {
	case !f.From.IsZero() && !f.To.IsZero():
		when = fmt.Sprintf("placed in [%s, %s)", f.From.Format(time.RFC3339), f.To.Format(time.RFC3339))
	case !f.From.IsZero():
		when = "placed from " + f.From.Format(time.RFC3339)
	case !f.To.IsZero():
		when = "placed before " + f.To.Format(time.RFC3339)
	default:
		when = "placed at any time"
	}
	return when + ", program " + f.Program + ", the latest event of each order the shadow decided"
}

// writeShadowTable writes the report as text.
func writeShadowTable(w io.Writer, rep *engine.ShadowReport, f engine.ShadowFilter) error {
	fmt.Fprintf(w, "Shadow %s v%d against the live decisions\n", f.Program, f.Version)
	for _, v := range rep.Shadows {
		fmt.Fprintf(w, "  shadow     %s v%d %s: %d events, %d orders\n", v.Program, v.Version, v.Digest, v.Events, v.Orders)
	}
	for _, r := range rep.Live {
		fmt.Fprintf(w, "  live       %s v%d %s: %d orders\n", r.Program, r.Version, r.Digest, r.Orders)
	}
	fmt.Fprintf(w, "  orders     %s\n", shadowRangeLabel(f))
	fmt.Fprintf(w, "  the shadow's outcomes are outside the chain, the ledger and the payouts\n\n")

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	line := func(cells ...string) {
		for len(cells) > 0 && cells[len(cells)-1] == "" {
			cells = cells[:len(cells)-1]
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	line("Events the shadow decided", n(rep.Events))
	line("Orders compared", n(rep.Compared), "(each order's latest event)")
	line("  not decidable by the shadow", n(countTotal(rep.Errors)), replayreport.ErrorKinds(rep.Errors))
	line("Newly qualified", n(rep.Matrix.ShadowOnly))
	line("Newly disqualified", n(rep.Matrix.LiveOnly))
	line("Decision changed", n(rep.Diverged))
	line("Commission changed", n(rep.CommissionChanged))
	tw.Flush()

	fmt.Fprintf(w, "\nQualification (live × shadow)\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  LIVE \\ SHADOW\tQUALIFIED\tNOT QUALIFIED")
	fmt.Fprintf(tw, "  qualified\t%d\t%d\n", rep.Matrix.BothQualified, rep.Matrix.LiveOnly)
	fmt.Fprintf(tw, "  not qualified\t%d\t%d\n", rep.Matrix.ShadowOnly, rep.Matrix.NeitherQualify)
	tw.Flush()

	moneyHead := []string{"CURRENCY", "ORDERS", "CHANGED", "LIVE", "SHADOW", "DIFFERENCE"}
	var totals []engine.ReplayGroup
	for _, t := range rep.Totals {
		totals = append(totals, engine.ReplayGroup{Key: t.Currency, Currency: t.Currency, Orders: t.Orders, Changed: t.Changed, Before: t.Before, After: t.After, Diff: t.Diff})
	}
	writeMoneyTable(w, "Commission by currency", moneyHead, groupRows(totals, false))
	var rules [][]string
	for _, g := range rep.ByRateRule {
		if g.Old == "" && g.New == "" && g.Changed == 0 {
			continue // not qualified either way: nothing to pay (counted in the matrix)
		}
		rules = append(rules, append([]string{ruleLabel(g.Old), ruleLabel(g.New)}, moneyCells(g.ReplayGroup)...))
	}
	writeMoneyTable(w, "By rate rule (live → shadow; orders qualified neither way left out)", append([]string{"LIVE", "SHADOW"}, moneyHead...), rules)
	writeMoneyTable(w, "By the first rule whose outcome differs", append([]string{"RULE"}, moneyHead...), groupRows(rep.ByCause, true))
	writeMoneyTable(w, "By buyer market", append([]string{"MARKET"}, moneyHead...), groupRows(rep.ByMarket, true))
	writeMoneyTable(w, "By new vs returning buyer", append([]string{"BUYER"}, moneyHead...), groupRows(rep.ByBuyer, true))
	writeMoneyTable(w, "Affiliates with the largest changes (top 10 per currency)", append([]string{"AFFILIATE"}, moneyHead...), groupRows(rep.TopAffiliates, true))

	title := fmt.Sprintf("Diverging orders (%d)", rep.DivergingTotal)
	if int64(len(rep.Diverging)) < rep.DivergingTotal {
		title = fmt.Sprintf("Diverging orders (the %d of %d with the largest differences; --orders N for more)", len(rep.Diverging), rep.DivergingTotal)
	}
	var rows [][]string
	for i := range rep.Diverging {
		c := &rep.Diverging[i]
		rows = append(rows, []string{c.OrderID, c.PlacedAt.UTC().Format(time.RFC3339), c.Currency, replayreport.VerdictLabel(c.Old), replayreport.VerdictLabel(&c.New),
			replayreport.CommissionChange(c), httpapi.ChangeDifference(c), c.Cause.String(), httpapi.ExplainCommand(c.Program, c.OrderID)})
	}
	writeMoneyTable(w, title, []string{"ORDER", "PLACED", "CURRENCY", "LIVE", "SHADOW", "COMMISSION", "DIFFERENCE", "WHAT MADE THE DIFFERENCE", "EXPLAIN"}, rows)
	if len(rep.ErrorSamples) > 0 {
		var rows [][]string
		for _, e := range rep.ErrorSamples {
			rows = append(rows, []string{e.OrderID, e.EventID, e.Kind, e.Reason})
		}
		writeMoneyTable(w, fmt.Sprintf("Not decidable by the shadow (%d; the first %d)", countTotal(rep.Errors), len(rows)), []string{"ORDER", "EVENT", "KIND", "REASON"}, rows)
	}
	return nil
}

var csvShadowHeader = []string{"order_id", "event_id", "program", "affiliate_id", "placed_at", "currency", "market", "buyer",
	"live_version", "live_qualified", "live_failed_rules", "live_rate_rule", "live_terms", "live_commission",
	"shadow_version", "shadow_qualified", "shadow_failed_rules", "shadow_rate_rule", "shadow_terms", "shadow_commission",
	"difference", "cause", "explain"}

var csvShadowTotalsHeader = []string{"group", "live_rule", "key", "currency", "orders", "commission_changed", "live", "shadow", "difference"}

// writeShadowCSV writes one row per diverging order listed, then the totals and breakdowns: in
// path's .totals file when writing to a file, else after a blank line.
func writeShadowCSV(w io.Writer, rep *engine.ShadowReport, path string) error {
	cw := csv.NewWriter(w)
	cw.Write(csvShadowHeader)
	for i := range rep.Diverging {
		c := &rep.Diverging[i]
		row := []string{c.OrderID, c.EventID, c.Program, c.AffiliateID, c.PlacedAt.UTC().Format(time.RFC3339), c.Currency, c.Market, httpapi.BuyerKind(c.NewBuyer)}
		for _, v := range []*engine.Verdict{c.Old, &c.New} {
			if v == nil {
				row = append(row, "", "", "", "", "", "")
				continue
			}
			row = append(row, strconv.Itoa(v.PolicyVersion), strconv.FormatBool(v.Qualified), strings.Join(v.FailedRules, " "), v.RateRule, v.Terms(), v.Commission.Text('f'))
		}
		cw.Write(append(row, httpapi.ChangeDifference(c), c.Cause.String(), httpapi.ExplainCommand(c.Program, c.OrderID)))
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return err
	}
	totals := func(w io.Writer) error {
		return writeGroupsCSV(w, csvShadowTotalsHeader, rep.Totals, rep.ByRateRule, csvGroups{"first_differing_rule", rep.ByCause},
			csvGroups{"market", rep.ByMarket}, csvGroups{"buyer", rep.ByBuyer}, csvGroups{"affiliate", rep.TopAffiliates})
	}
	if path == "" {
		if _, err := io.WriteString(w, "\n"); err != nil {
			return err
		}
		return totals(w)
	}
	f, err := os.Create(totalsPath(path))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := totals(f); err != nil {
		return err
	}
	return f.Close()
}

// mountShadowAPI serves GET /v1/shadow/report beside the audit API, with its tokens.
func mountShadowAPI(srv *httpapi.Server, st *store.Store, cfg httpapi.Config, log *slog.Logger) {
	srv.Handle("GET /v1/shadow/report", httpapi.NewShadowReportHandler(st, httpapi.AuditOptions{Tokens: cfg.Tokens, OperatorTokens: cfg.OperatorTokens, Log: log}))
}

// existingStore refuses a SQLite store file that does not exist (what, the command, says so):
// opening it would create an empty one, with nothing to report or check against.
func existingStore(cfg Config, what string) error {
	if cfg.storeConfig().Backend() != store.SQLite {
		return nil
	}
	path := strings.TrimPrefix(cfg.Store.DSN, "sqlite://")
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("%s: no store at %s (%v): give --store-dsn, or --data-dir of the service that decided the orders", what, path, err)
	}
	return nil
}
