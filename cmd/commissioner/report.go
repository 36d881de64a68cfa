package main

// The replay report in its formats: table (for people at a terminal), json, csv and html
// (report_html.go). Every format renders the same replayRun. Money is printed from exact
// decimals, never through float.

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/adapters/replayreport"
	"github.com/commissioner/commissioner/engine"
)

// writeReplayReport writes the report in format to the file path (standard output when "").
func writeReplayReport(run *replayRun, format, path string, stdout io.Writer) error {
	return writeReportFile(path, stdout, "the report", func(w io.Writer) error {
		switch format {
		case "json":
			return writeReportJSON(w, run)
		case "csv":
			return writeReportCSV(w, run, path)
		case "html":
			return writeReportHTML(w, run)
		}
		return writeReportTable(w, run)
	})
}

// writeReportFile runs write on a buffer to the file path (created; standard output when "") and
// flushes and closes it: the one way replay, sweep and shadow reports reach their output. An
// error names what (the report) and is returned once, whichever step failed.
func writeReportFile(path string, stdout io.Writer, what string, write func(io.Writer) error) error {
	w := stdout
	var f *os.File
	if path != "" {
		var err error
		if f, err = os.Create(path); err != nil {
			return fmt.Errorf("writing %s: %w", what, err)
		}
		defer f.Close()
		w = f
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	err := write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil && f != nil {
		err = f.Close()
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", what, err)
	}
	return nil
}

// --- the document (httpapi.ReplayDocument): the report as JSON, and the parts --record stores ---

func replayParamsDoc(run *replayRun) httpapi.ReplayParamsDoc {
	p := run.Params
	d := httpapi.ReplayParamsDoc{Policy: p.Policy, Version: p.Version, Program: p.Program, Affiliate: p.Affiliate,
		LatestPerOrder: !p.AllEvents, Source: p.Source}
	if !p.From.IsZero() {
		d.From = p.From.Format(time.RFC3339Nano)
	}
	if !p.To.IsZero() {
		d.To = p.To.Format(time.RFC3339Nano)
	}
	if run.Report != nil {
		d.Candidates = httpapi.ReplayVersionDocs(run.Report)
	}
	return d
}

func (run *replayRun) listedChanges() []engine.OrderChange {
	if run.ChangesCap < 0 {
		return nil
	}
	return run.Report.Changes
}

func writeReportJSON(w io.Writer, run *replayRun) error {
	return writeJSONDoc(w, httpapi.NewReplayDocument(run.Report, run.Candidate, replayParamsDoc(run), run.listedChanges(), run.Warnings))
}

// --- csv ---

var csvChangeHeader = []string{"order_id", "event_id", "program", "affiliate_id", "placed_at", "currency", "market", "buyer",
	"recorded_version", "recorded_qualified", "recorded_failed_rules", "recorded_rate_rule", "recorded_terms", "recorded_commission",
	"candidate_version", "candidate_qualified", "candidate_failed_rules", "candidate_rate_rule", "candidate_terms", "candidate_commission",
	"difference", "cause", "drift"}

var csvTotalsHeader = []string{"group", "recorded_rule", "key", "currency", "orders", "commission_changed", "before", "after", "difference"}

// writeReportCSV writes one row per changed order (all of them unless --changes), then the
// totals and breakdowns: to path's .totals file when writing to a file, else after a blank line.
func writeReportCSV(w io.Writer, run *replayRun, path string) error {
	cw := csv.NewWriter(w)
	cw.Write(csvChangeHeader)
	changes := run.listedChanges()
	for i := range changes {
		c := &changes[i]
		row := []string{c.OrderID, c.EventID, c.Program, c.AffiliateID, c.PlacedAt.UTC().Format(time.RFC3339), c.Currency, c.Market, httpapi.BuyerKind(c.NewBuyer)}
		if c.Old == nil {
			row = append(row, "", "", "", "", "", "")
		} else {
			row = append(row, strconv.Itoa(c.Old.PolicyVersion), strconv.FormatBool(c.Old.Qualified), strings.Join(c.Old.FailedRules, " "),
				c.Old.RateRule, c.Old.Terms(), c.Old.Commission.Text('f'))
		}
		row = append(row, strconv.Itoa(c.New.PolicyVersion), strconv.FormatBool(c.New.Qualified), strings.Join(c.New.FailedRules, " "),
			c.New.RateRule, c.New.Terms(), c.New.Commission.Text('f'), httpapi.ChangeDifference(c), c.Cause.String(), strconv.FormatBool(c.Drift))
		cw.Write(row)
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return err
	}
	if path == "" {
		if _, err := io.WriteString(w, "\n"); err != nil {
			return err
		}
		return writeTotalsCSV(w, run)
	}
	f, err := os.Create(totalsPath(path))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := writeTotalsCSV(f, run); err != nil {
		return err
	}
	return f.Close()
}

func writeTotalsCSV(w io.Writer, run *replayRun) error {
	rep := run.Report
	return writeGroupsCSV(w, csvTotalsHeader, rep.Totals, rep.ByRateRule,
		csvGroups{"market", rep.ByMarket}, csvGroups{"buyer", rep.ByBuyer}, csvGroups{"affiliate", rep.TopAffiliates})
}

// csvGroups are one breakdown of a report, named in the CSV's group column.
type csvGroups struct {
	name   string
	groups []engine.ReplayGroup
}

// writeGroupsCSV writes a report's money as CSV under header (group, old, key, currency, orders,
// changed, before, after, difference): the totals per currency, the moves between rate rules
// (old: the recorded or live rule), then each breakdown in turn. Replay's totals file and the
// shadow report's share it.
func writeGroupsCSV(w io.Writer, header []string, totals []engine.CurrencyTotal, byRateRule []engine.RateRuleGroup, breakdowns ...csvGroups) error {
	cw := csv.NewWriter(w)
	cw.Write(header)
	row := func(group, old string, g engine.ReplayGroup) {
		cw.Write([]string{group, old, g.Key, g.Currency, strconv.FormatInt(g.Orders, 10), strconv.FormatInt(g.Changed, 10),
			g.Before.Text('f'), g.After.Text('f'), httpapi.SignedDecimal(&g.Diff)})
	}
	for _, t := range totals {
		row("total", "", engine.ReplayGroup{Currency: t.Currency, Orders: t.Orders, Changed: t.Changed, Before: t.Before, After: t.After, Diff: t.Diff})
	}
	for _, g := range byRateRule {
		g.Key = g.New
		row("rate_rule", g.Old, g.ReplayGroup)
	}
	for _, b := range breakdowns {
		for _, g := range b.groups {
			row(b.name, "", g)
		}
	}
	cw.Flush()
	return cw.Error()
}

// --- table ---

// ruleLabel names a rate rule in a breakdown: "" is not qualified.
func ruleLabel(id string) string {
	if id == "" {
		return "(not qualified)"
	}
	return id
}

// rangeLabel describes the orders replayed.
func rangeLabel(run *replayRun) string {
	p := run.Params
	var parts []string
	switch {
	case !p.From.IsZero() && !p.To.IsZero():
		parts = append(parts, fmt.Sprintf("placed in [%s, %s)", p.From.Format(time.RFC3339), p.To.Format(time.RFC3339)))
	case !p.From.IsZero():
		parts = append(parts, "placed from "+p.From.Format(time.RFC3339))
	case !p.To.IsZero():
		parts = append(parts, "placed before "+p.To.Format(time.RFC3339))
	default:
		parts = append(parts, "placed at any time")
	}
	if p.Program != "" {
		parts = append(parts, "program "+p.Program)
	}
	if p.Affiliate != "" {
		parts = append(parts, "affiliate "+p.Affiliate)
	}
	if p.AllEvents {
		parts = append(parts, "every event of each order")
	} else {
		parts = append(parts, "the latest event of each order")
	}
	parts = append(parts, "read from the "+p.Source)
	return strings.Join(parts, ", ")
}

func candidateLines(rep *engine.ReplayReport) []string {
	var out []string
	for _, c := range rep.Candidates {
		how := "in force from " + c.EffectiveFrom.UTC().Format(time.RFC3339)
		if c.Pinned {
			how = "applied to every order (effective_from " + c.EffectiveFrom.UTC().Format(time.RFC3339) + " not applied)"
		}
		out = append(out, fmt.Sprintf("%s v%d %s, %s, %s: %d orders", c.Program, c.Version, c.Digest, c.File, how, c.Orders))
	}
	return out
}

// writeReportTable writes the replay report as text: the header, the counts, the money tables
// and the changes, drift and errors listed.
func writeReportTable(w io.Writer, run *replayRun) error {
	rep := run.Report
	fmt.Fprintf(w, "Replay of %s\n", run.Candidate)
	for _, l := range candidateLines(rep) {
		fmt.Fprintf(w, "  candidate  %s\n", l)
	}
	for _, r := range rep.Recorded {
		fmt.Fprintf(w, "  recorded   %s v%d %s: %d orders\n", r.Program, r.Version, r.Digest, r.Orders)
	}
	fmt.Fprintf(w, "  orders     %s\n", rangeLabel(run))
	fmt.Fprintf(w, "  dry run: nothing was written to decisions\n\n")
	writeReportCounts(w, rep)

	moneyHead := []string{"CURRENCY", "ORDERS", "CHANGED", "BEFORE", "AFTER", "DIFFERENCE"}
	writeMoneyTable(w, "Commission by currency", moneyHead, groupRows(currencyGroups(rep), false))
	writeRateRuleTable(w, rep.ByRateRule, moneyHead, run.Params.All)
	writeMoneyTable(w, "By buyer market", append([]string{"MARKET"}, moneyHead...), groupRows(rep.ByMarket, true))
	writeMoneyTable(w, "By new vs returning buyer", append([]string{"BUYER"}, moneyHead...), groupRows(rep.ByBuyer, true))
	writeMoneyTable(w, "Affiliates with the largest changes (top 10 per currency)", append([]string{"AFFILIATE"}, moneyHead...), groupRows(rep.TopAffiliates, true))

	changes := run.listedChanges()
	title := fmt.Sprintf("Per-order changes (%d)", rep.ChangesTotal)
	if int64(len(changes)) < rep.ChangesTotal {
		title = fmt.Sprintf("Per-order changes (the first %d of %d by placed_at; --changes N or --format csv for more)", len(changes), rep.ChangesTotal)
	}
	writeMoneyTable(w, title, []string{"ORDER", "PLACED", "CURRENCY", "RECORDED", "CANDIDATE", "COMMISSION", "DIFFERENCE", "WHAT MADE THE DIFFERENCE"}, changeRows(changes))
	if rep.SameVersion > 0 || rep.Drift > 0 {
		title := fmt.Sprintf("Drift: %d of %d orders replayed with their recorded version did not reproduce", rep.Drift, rep.SameVersion)
		writeMoneyTable(w, title, []string{"ORDER", "EVENT", "RECORDED", "REPLAYED", "COMMISSION", "DIFFERS IN"}, driftRows(rep))
	}
	if len(rep.ErrorSamples) > 0 {
		rows := errorSampleRows(rep)
		writeMoneyTable(w, fmt.Sprintf("Not decidable by the candidate (%d; the first %d)", countTotal(rep.Errors), len(rows)), []string{"ORDER", "EVENT", "KIND", "REASON"}, rows)
	}
	for _, warn := range run.Warnings {
		fmt.Fprintf(w, "\nwarning: %s\n", warn)
	}
	return nil
}

// writeReportCounts writes the table of the orders evaluated and how their decisions changed.
func writeReportCounts(w io.Writer, rep *engine.ReplayReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	line := func(cells ...string) {
		for len(cells) > 0 && cells[len(cells)-1] == "" {
			cells = cells[:len(cells)-1]
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	line("Orders evaluated", n(rep.Evaluated))
	line("  with no recorded decision", n(rep.Unrecorded))
	line("  not decidable by the candidate", n(countTotal(rep.Errors)), replayreport.ErrorKinds(rep.Errors))
	line("Newly qualified", n(rep.NewlyQualified))
	line("Newly disqualified", n(rep.NewlyDisqualified))
	line("Decision changed", n(rep.Changed))
	line("Commission changed", n(rep.CommissionChanged))
	if rep.SameVersion > 0 {
		line("Replayed with their recorded version", n(rep.SameVersion), fmt.Sprintf("drift: %d", rep.Drift))
	}
	tw.Flush()
}

// writeMoneyTable writes a titled, aligned table of the report, or "(none)" under the title when
// it has no rows.
func writeMoneyTable(w io.Writer, title string, head []string, rows [][]string) {
	fmt.Fprintf(w, "\n%s\n", title)
	if len(rows) == 0 {
		fmt.Fprintf(w, "  (none)\n")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  "+strings.Join(head, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, "  "+strings.Join(r, "\t"))
	}
	tw.Flush()
}

// writeRateRuleTable writes the money by recorded and candidate rate rule. Unless all, the rows
// of orders not qualified before or after, with nothing to pay, are folded into one line.
func writeRateRuleTable(w io.Writer, groups []engine.RateRuleGroup, moneyHead []string, all bool) {
	var rows [][]string
	var folded, foldedOrders int64
	for _, g := range groups {
		if !all && g.Old == "" && g.New == "" && g.Changed == 0 {
			folded++
			foldedOrders += g.Orders
			continue
		}
		rows = append(rows, rateRuleRow(g))
	}
	rateTitle := "By rate rule (recorded → candidate)"
	if folded > 0 && len(rows) == 0 {
		fmt.Fprintf(w, "\n%s\n", rateTitle)
	} else {
		writeMoneyTable(w, rateTitle, append([]string{"RECORDED", "CANDIDATE"}, moneyHead...), rows)
	}
	if folded > 0 {
		fmt.Fprintf(w, "  (%d rows not shown: (not qualified) → (not qualified), %d orders, nothing to pay before or after; --all lists them)\n",
			folded, foldedOrders)
	}
}

// moneyCells are a group's money columns: currency, orders, orders changed, the commission
// before and after, and the difference.
func moneyCells(g engine.ReplayGroup) []string {
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	return []string{g.Currency, n(g.Orders), n(g.Changed), g.Before.Text('f'), g.After.Text('f'), httpapi.SignedDecimal(&g.Diff)}
}

// groupRows are the rows of groups' money columns, led by each group's key when keyed.
func groupRows(gs []engine.ReplayGroup, keyed bool) [][]string {
	var rows [][]string
	for _, g := range gs {
		if keyed {
			rows = append(rows, append([]string{g.Key}, moneyCells(g)...))
		} else {
			rows = append(rows, moneyCells(g))
		}
	}
	return rows
}

// rateRuleRow is a rate-rule group's row: the recorded and candidate rule, then its money.
func rateRuleRow(g engine.RateRuleGroup) []string {
	return append([]string{ruleLabel(g.Old), ruleLabel(g.New)}, moneyCells(g.ReplayGroup)...)
}

// currencyGroups are the report's totals per currency as groups keyed by the currency.
func currencyGroups(rep *engine.ReplayReport) []engine.ReplayGroup {
	var totals []engine.ReplayGroup
	for _, t := range rep.Totals {
		totals = append(totals, engine.ReplayGroup{Key: t.Currency, Currency: t.Currency, Orders: t.Orders, Changed: t.Changed, Before: t.Before, After: t.After, Diff: t.Diff})
	}
	return totals
}

// driftRows are the rows of the orders replayed with their recorded version that did not
// reproduce.
func driftRows(rep *engine.ReplayReport) [][]string {
	var rows [][]string
	for i := range rep.Drifted {
		c := &rep.Drifted[i]
		rows = append(rows, []string{c.OrderID, c.EventID, replayreport.VerdictLabel(c.Old), replayreport.VerdictLabel(&c.New), replayreport.CommissionChange(c), strings.Join(c.DriftFields, ", ")})
	}
	return rows
}

// errorSampleRows are the rows of the sampled orders the candidate could not decide.
func errorSampleRows(rep *engine.ReplayReport) [][]string {
	var rows [][]string
	for _, e := range rep.ErrorSamples {
		rows = append(rows, []string{e.OrderID, e.EventID, e.Kind, e.Reason})
	}
	return rows
}

func changeRows(changes []engine.OrderChange) [][]string {
	var rows [][]string
	for i := range changes {
		c := &changes[i]
		rows = append(rows, []string{c.OrderID, c.PlacedAt.UTC().Format(time.RFC3339), c.Currency, replayreport.VerdictLabel(c.Old),
			replayreport.VerdictLabel(&c.New), replayreport.CommissionChange(c), httpapi.ChangeDifference(c), c.Cause.String()})
	}
	return rows
}

func countTotal(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}
