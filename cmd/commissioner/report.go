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

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/engine"
)

// writeReplayReport writes the report in format to the file path (standard output when "").
func writeReplayReport(run *replayRun, format, path string, stdout io.Writer) error {
	w := stdout
	var f *os.File
	if path != "" {
		var err error
		if f, err = os.Create(path); err != nil {
			return fmt.Errorf("writing the report: %w", err)
		}
		defer f.Close()
		w = f
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	var err error
	switch format {
	case "json":
		err = writeReportJSON(bw, run)
	case "csv":
		err = writeReportCSV(bw, run, path)
	case "html":
		err = writeReportHTML(bw, run)
	default:
		err = writeReportTable(bw, run)
	}
	if err == nil {
		err = bw.Flush()
	}
	if err == nil && f != nil {
		err = f.Close()
	}
	if err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	return nil
}

// --- the document: the report as JSON, and the parts --record stores ---

type replayDoc struct {
	Candidate     candidateDoc      `json:"candidate"`
	Recorded      []recordedDoc     `json:"recorded_versions"`
	Parameters    replayParamsJSON  `json:"parameters"`
	Summary       replaySummaryJSON `json:"summary"`
	ByRateRule    []rateRuleDoc     `json:"by_rate_rule"`
	ByMarket      []groupDoc        `json:"by_market"`
	ByBuyer       []groupDoc        `json:"by_buyer"`
	TopAffiliates []groupDoc        `json:"top_affiliates"`
	ChangesTotal  int64             `json:"changes_total"`
	Changes       []changeDoc       `json:"changes"`
	Drifted       []changeDoc       `json:"drifted"`
	ErrorSamples  []errorDoc        `json:"error_samples"`
	Warnings      []string          `json:"warnings"`
}

type candidateDoc struct {
	Source   string                `json:"source"`
	Versions []candidateVersionDoc `json:"versions"`
}

type candidateVersionDoc struct {
	Program       string `json:"program"`
	Version       int    `json:"version"`
	Digest        string `json:"digest"`
	EffectiveFrom string `json:"effective_from"`
	File          string `json:"file"`
	Pinned        bool   `json:"applied_to_every_order"`
	Orders        int64  `json:"orders"`
}

type recordedDoc struct {
	Program string `json:"program"`
	Version int    `json:"version"`
	Digest  string `json:"digest"`
	Orders  int64  `json:"orders"`
}

type replayParamsJSON struct {
	Policy         string                `json:"policy,omitempty"`
	Version        int                   `json:"version,omitempty"`
	Program        string                `json:"program,omitempty"`
	From           string                `json:"from,omitempty"`
	To             string                `json:"to,omitempty"`
	Affiliate      string                `json:"affiliate,omitempty"`
	LatestPerOrder bool                  `json:"latest_per_order"`
	Source         string                `json:"source"`
	Candidates     []candidateVersionDoc `json:"candidates,omitempty"`
}

type replaySummaryJSON struct {
	Events            int64            `json:"events"`
	Evaluated         int64            `json:"evaluated"`
	Unrecorded        int64            `json:"without_recorded_decision"`
	Errors            map[string]int64 `json:"not_decidable"`
	NewlyQualified    int64            `json:"newly_qualified"`
	NewlyDisqualified int64            `json:"newly_disqualified"`
	Changed           int64            `json:"decision_changed"`
	CommissionChanged int64            `json:"commission_changed"`
	SameVersion       int64            `json:"same_version"`
	Drift             int64            `json:"drift"`
	DigestMismatch    int64            `json:"digest_mismatch"`
	AffiliateAssumed  int64            `json:"affiliate_month_assumed"`
	Totals            []groupDoc       `json:"totals"`
}

type groupDoc struct {
	Key      string `json:"key,omitempty"`
	Currency string `json:"currency"`
	Orders   int64  `json:"orders"`
	Changed  int64  `json:"commission_changed"`
	Before   string `json:"before"`
	After    string `json:"after"`
	Diff     string `json:"difference"`
}

type rateRuleDoc struct {
	Old string `json:"recorded_rule"`
	New string `json:"candidate_rule"`
	groupDoc
}

type changeDoc struct {
	OrderID     string   `json:"order_id"`
	EventID     string   `json:"event_id"`
	Program     string   `json:"program"`
	AffiliateID string   `json:"affiliate_id"`
	PlacedAt    string   `json:"placed_at"`
	Currency    string   `json:"currency"`
	Market      string   `json:"market"`
	Buyer       string   `json:"buyer"`
	Old         *sideDoc `json:"recorded"`
	New         sideDoc  `json:"candidate"`
	Diff        string   `json:"difference"`
	Cause       causeDoc `json:"cause"`
	Drift       bool     `json:"drift,omitempty"`
	DriftFields []string `json:"drift_fields,omitempty"`
}

type sideDoc struct {
	PolicyVersion int      `json:"policy_version"`
	PolicyDigest  string   `json:"policy_digest"`
	Qualified     bool     `json:"qualified"`
	FailedRules   []string `json:"failed_rules"`
	RateRule      string   `json:"rate_rule"`
	Rate          string   `json:"rate"`
	Flat          string   `json:"flat,omitempty"`
	Commission    string   `json:"commission"`
}

type causeDoc struct {
	Kind  string `json:"kind"`
	Stage string `json:"stage,omitempty"`
	Rule  string `json:"rule,omitempty"`
	Old   string `json:"recorded,omitempty"`
	New   string `json:"candidate,omitempty"`
	Text  string `json:"text"`
}

type errorDoc struct {
	EventID string `json:"event_id"`
	Program string `json:"program,omitempty"`
	OrderID string `json:"order_id,omitempty"`
	Kind    string `json:"kind"`
	Reason  string `json:"reason"`
}

func candidateDocs(rep *engine.ReplayReport) []candidateVersionDoc {
	out := make([]candidateVersionDoc, 0, len(rep.Candidates))
	for _, c := range rep.Candidates {
		out = append(out, candidateVersionDoc{Program: c.Program, Version: c.Version, Digest: c.Digest,
			EffectiveFrom: c.EffectiveFrom.UTC().Format(time.RFC3339), File: c.File, Pinned: c.Pinned, Orders: c.Orders})
	}
	return out
}

func replayParamsDoc(run *replayRun) replayParamsJSON {
	p := run.Params
	d := replayParamsJSON{Policy: p.Policy, Version: p.Version, Program: p.Program, Affiliate: p.Affiliate,
		LatestPerOrder: !p.AllEvents, Source: p.Source}
	if !p.From.IsZero() {
		d.From = p.From.Format(time.RFC3339Nano)
	}
	if !p.To.IsZero() {
		d.To = p.To.Format(time.RFC3339Nano)
	}
	if run.Report != nil {
		d.Candidates = candidateDocs(run.Report)
	}
	return d
}

func replaySummaryDoc(rep *engine.ReplayReport) replaySummaryJSON {
	s := replaySummaryJSON{Events: rep.Events, Evaluated: rep.Evaluated, Unrecorded: rep.Unrecorded, Errors: rep.Errors,
		NewlyQualified: rep.NewlyQualified, NewlyDisqualified: rep.NewlyDisqualified, Changed: rep.Changed,
		CommissionChanged: rep.CommissionChanged, SameVersion: rep.SameVersion, Drift: rep.Drift, DigestMismatch: rep.DigestMismatch,
		AffiliateAssumed: rep.AffiliateAssumed,
		Totals:           []groupDoc{}}
	for _, t := range rep.Totals {
		s.Totals = append(s.Totals, groupDoc{Currency: t.Currency, Orders: t.Orders, Changed: t.Changed,
			Before: t.Before.Text('f'), After: t.After.Text('f'), Diff: signedDecimal(&t.Diff)})
	}
	return s
}

func groupDocs(gs []engine.ReplayGroup) []groupDoc {
	out := make([]groupDoc, 0, len(gs))
	for _, g := range gs {
		out = append(out, groupDocOf(g))
	}
	return out
}

func groupDocOf(g engine.ReplayGroup) groupDoc {
	return groupDoc{Key: g.Key, Currency: g.Currency, Orders: g.Orders, Changed: g.Changed,
		Before: g.Before.Text('f'), After: g.After.Text('f'), Diff: signedDecimal(&g.Diff)}
}

func sideDocOf(s *engine.DecisionSummary) sideDoc {
	d := sideDoc{PolicyVersion: s.PolicyVersion, PolicyDigest: s.PolicyDigest, Qualified: s.Qualified,
		FailedRules: s.FailedRules, RateRule: s.RateRule, Rate: s.Rate.Text('f'), Commission: s.Commission.Text('f')}
	if d.FailedRules == nil {
		d.FailedRules = []string{}
	}
	if s.HasFlat {
		d.Flat = s.Flat.Text('f')
	}
	return d
}

func changeDocOf(c *engine.OrderChange) changeDoc {
	d := changeDoc{OrderID: c.OrderID, EventID: c.EventID, Program: c.Program, AffiliateID: c.AffiliateID,
		PlacedAt: c.PlacedAt.UTC().Format(time.RFC3339), Currency: c.Currency, Market: c.Market, Buyer: buyerKind(c.NewBuyer),
		New: sideDocOf(&c.New), Diff: changeDiff(c), Drift: c.Drift, DriftFields: c.DriftFields,
		Cause: causeDoc{Kind: c.Cause.Kind, Rule: c.Cause.Rule, Old: c.Cause.Old, New: c.Cause.New, Text: c.Cause.String()}}
	if c.Cause.Kind == engine.CauseOutcome || c.Cause.Kind == engine.CauseTerms {
		d.Cause.Stage = c.Cause.Stage.String()
	}
	if c.Old != nil {
		old := sideDocOf(c.Old)
		d.Old = &old
	}
	return d
}

func buyerKind(isNew bool) string {
	if isNew {
		return "new"
	}
	return "returning"
}

// changeDiff is the candidate's commission less the recorded one (none recorded: 0).
func changeDiff(c *engine.OrderChange) string {
	var d apd.Decimal
	if c.Old == nil {
		d.Set(&c.New.Commission)
	} else if _, err := reportMoneyCtx.Sub(&d, &c.New.Commission, &c.Old.Commission); err != nil {
		return "?"
	}
	return signedDecimal(&d)
}

// reportMoneyCtx subtracts amounts exactly (commissions have at most a few dozen digits).
var reportMoneyCtx = apd.Context{Precision: 1000, MaxExponent: apd.MaxExponent, MinExponent: apd.MinExponent,
	Traps: apd.DefaultTraps | apd.Inexact | apd.Rounded}

// signed prints a difference with its sign: +1.50, -0.25, 0.00.
func signedDecimal(d *apd.Decimal) string {
	s := d.Text('f')
	if d.Sign() > 0 {
		return "+" + s
	}
	return s
}

func (run *replayRun) listedChanges() []engine.OrderChange {
	if run.ChangesCap < 0 {
		return nil
	}
	return run.Report.Changes
}

func buildReplayDoc(run *replayRun) replayDoc {
	rep := run.Report
	d := replayDoc{
		Candidate:     candidateDoc{Source: run.Candidate, Versions: candidateDocs(rep)},
		Recorded:      []recordedDoc{},
		Parameters:    replayParamsDoc(run),
		Summary:       replaySummaryDoc(rep),
		ByMarket:      groupDocs(rep.ByMarket),
		ByBuyer:       groupDocs(rep.ByBuyer),
		TopAffiliates: groupDocs(rep.TopAffiliates),
		ByRateRule:    []rateRuleDoc{},
		ChangesTotal:  rep.ChangesTotal,
		Changes:       []changeDoc{},
		Drifted:       []changeDoc{},
		ErrorSamples:  []errorDoc{},
		Warnings:      append([]string{}, run.Warnings...),
	}
	d.Parameters.Candidates = nil // in candidate.versions
	for _, r := range rep.Recorded {
		d.Recorded = append(d.Recorded, recordedDoc{Program: r.Program, Version: r.Version, Digest: r.Digest, Orders: r.Orders})
	}
	for _, g := range rep.ByRateRule {
		d.ByRateRule = append(d.ByRateRule, rateRuleDoc{Old: g.Old, New: g.New, groupDoc: groupDocOf(g.ReplayGroup)})
	}
	changes := run.listedChanges()
	for i := range changes {
		d.Changes = append(d.Changes, changeDocOf(&changes[i]))
	}
	for i := range rep.Drifted {
		d.Drifted = append(d.Drifted, changeDocOf(&rep.Drifted[i]))
	}
	for _, e := range rep.ErrorSamples {
		d.ErrorSamples = append(d.ErrorSamples, errorDoc{EventID: e.EventID, Program: e.Program, OrderID: e.OrderID, Kind: e.Kind, Reason: e.Reason})
	}
	return d
}

func writeReportJSON(w io.Writer, run *replayRun) error {
	return writeJSONDoc(w, buildReplayDoc(run))
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
		row := []string{c.OrderID, c.EventID, c.Program, c.AffiliateID, c.PlacedAt.UTC().Format(time.RFC3339), c.Currency, c.Market, buyerKind(c.NewBuyer)}
		if c.Old == nil {
			row = append(row, "", "", "", "", "", "")
		} else {
			row = append(row, strconv.Itoa(c.Old.PolicyVersion), strconv.FormatBool(c.Old.Qualified), strings.Join(c.Old.FailedRules, " "),
				c.Old.RateRule, c.Old.Terms(c.Currency), c.Old.Commission.Text('f'))
		}
		row = append(row, strconv.Itoa(c.New.PolicyVersion), strconv.FormatBool(c.New.Qualified), strings.Join(c.New.FailedRules, " "),
			c.New.RateRule, c.New.Terms(c.Currency), c.New.Commission.Text('f'), changeDiff(c), c.Cause.String(), strconv.FormatBool(c.Drift))
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
	cw := csv.NewWriter(w)
	cw.Write(csvTotalsHeader)
	row := func(group, old string, g engine.ReplayGroup) {
		cw.Write([]string{group, old, g.Key, g.Currency, strconv.FormatInt(g.Orders, 10), strconv.FormatInt(g.Changed, 10),
			g.Before.Text('f'), g.After.Text('f'), signedDecimal(&g.Diff)})
	}
	for _, t := range rep.Totals {
		row("total", "", engine.ReplayGroup{Currency: t.Currency, Orders: t.Orders, Changed: t.Changed, Before: t.Before, After: t.After, Diff: t.Diff})
	}
	for _, g := range rep.ByRateRule {
		g.Key = g.New
		row("rate_rule", g.Old, g.ReplayGroup)
	}
	for _, g := range rep.ByMarket {
		row("market", "", g)
	}
	for _, g := range rep.ByBuyer {
		row("buyer", "", g)
	}
	for _, g := range rep.TopAffiliates {
		row("affiliate", "", g)
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

// sideLabel summarises one side of a change: "v1 selected_returning 6%", "v1 not qualified
// (completed, click_in_window)", "(none)".
func sideLabel(s *engine.DecisionSummary, currency string) string {
	if s == nil {
		return "(no decision)"
	}
	if !s.Qualified {
		return fmt.Sprintf("v%d not qualified (%s)", s.PolicyVersion, strings.Join(s.FailedRules, ", "))
	}
	return fmt.Sprintf("v%d %s %s", s.PolicyVersion, s.RateRule, s.Terms(currency))
}

func commissionLabel(c *engine.OrderChange) string {
	old := "—"
	if c.Old != nil {
		old = c.Old.Commission.Text('f')
	}
	return old + " → " + c.New.Commission.Text('f')
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

func writeReportTable(w io.Writer, run *replayRun) error {
	rep := run.Report
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("Replay of %s\n", run.Candidate)
	for _, l := range candidateLines(rep) {
		p("  candidate  %s\n", l)
	}
	for _, r := range rep.Recorded {
		p("  recorded   %s v%d %s: %d orders\n", r.Program, r.Version, r.Digest, r.Orders)
	}
	p("  orders     %s\n", rangeLabel(run))
	p("  dry run: nothing was written to decisions\n\n")

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
	line("  not decidable by the candidate", n(countTotal(rep.Errors)), errorKinds(rep.Errors))
	line("Newly qualified", n(rep.NewlyQualified))
	line("Newly disqualified", n(rep.NewlyDisqualified))
	line("Decision changed", n(rep.Changed))
	line("Commission changed", n(rep.CommissionChanged))
	if rep.SameVersion > 0 {
		line("Replayed with their recorded version", n(rep.SameVersion), fmt.Sprintf("drift: %d", rep.Drift))
	}
	tw.Flush()

	moneyTable := func(title string, head []string, rows [][]string) {
		p("\n%s\n", title)
		if len(rows) == 0 {
			p("  (none)\n")
			return
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  "+strings.Join(head, "\t"))
		for _, r := range rows {
			fmt.Fprintln(tw, "  "+strings.Join(r, "\t"))
		}
		tw.Flush()
	}
	money := func(g engine.ReplayGroup) []string {
		return []string{g.Currency, n(g.Orders), n(g.Changed), g.Before.Text('f'), g.After.Text('f'), signedDecimal(&g.Diff)}
	}
	moneyHead := []string{"CURRENCY", "ORDERS", "CHANGED", "BEFORE", "AFTER", "DIFFERENCE"}
	var rows [][]string
	for _, t := range rep.Totals {
		rows = append(rows, money(engine.ReplayGroup{Currency: t.Currency, Orders: t.Orders, Changed: t.Changed, Before: t.Before, After: t.After, Diff: t.Diff}))
	}
	moneyTable("Commission by currency", moneyHead, rows)

	rows = nil
	var folded, foldedOrders int64
	for _, g := range rep.ByRateRule {
		if !run.Params.All && g.Old == "" && g.New == "" && g.Changed == 0 {
			folded++
			foldedOrders += g.Orders
			continue
		}
		rows = append(rows, append([]string{ruleLabel(g.Old), ruleLabel(g.New)}, money(g.ReplayGroup)...))
	}
	rateTitle := "By rate rule (recorded → candidate)"
	if folded > 0 && len(rows) == 0 {
		p("\n%s\n", rateTitle)
	} else {
		moneyTable(rateTitle, append([]string{"RECORDED", "CANDIDATE"}, moneyHead...), rows)
	}
	if folded > 0 {
		p("  (%d rows not shown: (not qualified) → (not qualified), %d orders, nothing to pay before or after; --all lists them)\n",
			folded, foldedOrders)
	}
	groupTable := func(title, key string, gs []engine.ReplayGroup) {
		var rows [][]string
		for _, g := range gs {
			rows = append(rows, append([]string{g.Key}, money(g)...))
		}
		moneyTable(title, append([]string{key}, moneyHead...), rows)
	}
	groupTable("By buyer market", "MARKET", rep.ByMarket)
	groupTable("By new vs returning buyer", "BUYER", rep.ByBuyer)
	groupTable("Affiliates with the largest changes (top 10 per currency)", "AFFILIATE", rep.TopAffiliates)

	changes := run.listedChanges()
	title := fmt.Sprintf("Per-order changes (%d)", rep.ChangesTotal)
	if int64(len(changes)) < rep.ChangesTotal {
		title = fmt.Sprintf("Per-order changes (the first %d of %d by placed_at; --changes N or --format csv for more)", len(changes), rep.ChangesTotal)
	}
	moneyTable(title, []string{"ORDER", "PLACED", "CURRENCY", "RECORDED", "CANDIDATE", "COMMISSION", "DIFFERENCE", "WHAT MADE THE DIFFERENCE"}, changeRows(changes))

	if rep.SameVersion > 0 || rep.Drift > 0 {
		title := fmt.Sprintf("Drift: %d of %d orders replayed with their recorded version did not reproduce", rep.Drift, rep.SameVersion)
		var rows [][]string
		for i := range rep.Drifted {
			c := &rep.Drifted[i]
			rows = append(rows, []string{c.OrderID, c.EventID, sideLabel(c.Old, c.Currency), sideLabel(&c.New, c.Currency), commissionLabel(c), strings.Join(c.DriftFields, ", ")})
		}
		moneyTable(title, []string{"ORDER", "EVENT", "RECORDED", "REPLAYED", "COMMISSION", "DIFFERS IN"}, rows)
	}
	if len(rep.ErrorSamples) > 0 {
		var rows [][]string
		for _, e := range rep.ErrorSamples {
			rows = append(rows, []string{e.OrderID, e.EventID, e.Kind, e.Reason})
		}
		moneyTable(fmt.Sprintf("Not decidable by the candidate (%d; the first %d)", countTotal(rep.Errors), len(rows)), []string{"ORDER", "EVENT", "KIND", "REASON"}, rows)
	}
	for _, warn := range run.Warnings {
		p("\nwarning: %s\n", warn)
	}
	return nil
}

func changeRows(changes []engine.OrderChange) [][]string {
	var rows [][]string
	for i := range changes {
		c := &changes[i]
		rows = append(rows, []string{c.OrderID, c.PlacedAt.UTC().Format(time.RFC3339), c.Currency, sideLabel(c.Old, c.Currency),
			sideLabel(&c.New, c.Currency), commissionLabel(c), changeDiff(c), c.Cause.String()})
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

func errorKinds(m map[string]int64) string {
	var parts []string
	for _, k := range []string{engine.ErrorKindInvalid, engine.ErrorKindUnknownProgram, engine.ErrorKindNoPolicy, engine.ErrorKindPinMissing, engine.ErrorKindRule} {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	return strings.Join(parts, ", ")
}
