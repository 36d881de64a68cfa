package main

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/engine/payout"
	"github.com/commissioner/commissioner/rules"
)

// payoutsParams are the payouts command's options.
type payoutsParams struct {
	Month   string // "2026-10"
	Close   bool
	Format  string // table, csv or json
	Program string // "" every program
	Lines   bool   // table and csv: one row per ledger entry
	// Export, when set, writes the bank files (pain.001) of the runs closed now (Close) or
	// closed before (a reprint), named after it per program and currency (exportPath).
	Export string
	// ExecutionDate is the transfers' requested execution date ("2026-11-03"); "" the default,
	// payout.ExecutionDate of the run's closing time.
	ExecutionDate string
	// Now is the closing time recorded for a run (the wall clock when nil). Statements never
	// read it: what is payable depends only on the month.
	Now func() time.Time
}

func newPayoutsCmd(s streams) *cobra.Command {
	p := payoutsParams{Format: "table"}
	cmd := &cobra.Command{
		Use:   "payouts --month YYYY-MM",
		Short: "Build the month's payout statements per affiliate and currency; --close pays them",
		Long: `Builds the statements of a month: per program, affiliate and currency, the ledger entries approved
before the end of the month (their hold passed) and not paid yet — accruals, adjustments and
reversals as negative lines, including reversals of commissions paid in an earlier month. A
statement is paid when its total is positive and reaches the program's payout.minimum for the
currency (none by default); otherwise it is carried forward to the next month. A wire-transfer
statement of an affiliate without payee details (commissioner affiliates set) is held: listed, not
paid, carried forward. --close records the payout run and marks the paid entries, atomically: a
month closes once per program, and no entry is ever paid twice.

--export FILE writes the bank file of what the run paid by wire transfer: an ISO 20022 pain.001.001.09
credit transfer initiation per program and currency, named after FILE (bank/2025-11.xml gives
bank/2025-11-alibaba-USD.xml), mode 0600, from the account in payouts.debtor. With --close it is
the run closed now; without, the run that closed the month before (the same file again).`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd, storeFlags|flagPolicies) // policies: the payout terms
	f := cmd.Flags()
	f.StringVar(&p.Month, "month", "", "the payout month, e.g. 2026-10 (required)")
	f.BoolVar(&p.Close, "close", false, "record the payout run and mark its entries paid")
	f.StringVar(&p.Format, "format", p.Format, "output format: table, csv or json")
	f.StringVar(&p.Program, "program", "", "only this program")
	f.BoolVar(&p.Lines, "lines", false, "table and csv: list every ledger entry of each statement")
	f.StringVar(&p.Export, "export", "", "write the run's bank files (pain.001), one per program and currency, named after `FILE`")
	f.StringVar(&p.ExecutionDate, "execution-date", "", "with --export: the requested execution date, YYYY-MM-DD (default: the day the run closed, or the Monday after)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if p.Month == "" {
			return usageError{errors.New("payouts: --month is required (e.g. --month 2026-10)")}
		}
		if p.Format != "table" && p.Format != "csv" && p.Format != "json" {
			return usageError{fmt.Errorf("payouts: --format %q is not one of table, csv, json", p.Format)}
		}
		if p.ExecutionDate != "" && p.Export == "" {
			return usageError{errors.New("payouts: --execution-date is for the bank file: give --export FILE too")}
		}
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		return runPayouts(cmd.Context(), cfg, p, s.out, s.err)
	}
	return cmd
}

// payoutReport is what payouts prints.
type payoutReport struct {
	Month      string
	AsOf       time.Time
	Close      bool
	Runs       []payoutRunReport
	Statements []engine.Statement
	// Files are the bank files written (--export); OtherMethods the payments of the exported runs
	// paid by a method other than wire transfer, which are in no file.
	Files        []bankFile
	OtherMethods []payout.Payment
}

// payoutRunReport is one program's run: closed now, or before.
type payoutRunReport struct {
	Program string
	Run     store.PayoutRun
	Closed  bool // by this invocation (false: found closed, or not closed)
	Before  bool // closed by an earlier run
	// Paid are the statements an earlier run paid (Before): a closed month reprinted.
	Paid []engine.Statement
}

// held returns the statements held for want of payee details (payout.Hold).
func held(sts []engine.Statement) []engine.Statement {
	var out []engine.Statement
	for _, s := range sts {
		if isHeld(s) {
			out = append(out, s)
		}
	}
	return out
}

func isHeld(s engine.Statement) bool { return !s.Payable && s.CarriedForward == payout.HeldReason }

// payoutsRun is the state of one payouts invocation shared by its steps: the parameters, the
// month's bounds, the open store and how statements are built from ledger entries.
type payoutsRun struct {
	p        payoutsParams
	month    string
	asOf     time.Time
	st       *store.Store
	programs []string // the programs the run covers, sorted
	// build makes statements of ledger entries under each program's payout terms; buildPayable
	// also holds those of affiliates without payee details.
	build, buildPayable func([]engine.LedgerEntry) ([]engine.Statement, error)
}

// runPayouts builds the month's statements, closes (pays) the month with --close, writes the
// bank files with --export and prints the report; see newPayoutsCmd for the whole contract.
func runPayouts(ctx context.Context, cfg Config, p payoutsParams, out, errOut io.Writer) error {
	month, asOf, err := engine.MonthBounds(p.Month)
	if err != nil {
		return usageError{fmt.Errorf("payouts: %w", err)}
	}
	// What the bank file needs is checked before anything is paid.
	ex, err := payoutsBankExport(cfg, p)
	if err != nil {
		return err
	}
	set, err := rules.LoadDir(cfg.Policies)
	if err != nil {
		return fmt.Errorf("payouts: loading policies from %s (for the payout terms):\n%w", cfg.Policies, err)
	}
	st, err := store.Open(ctx, cfg.storeConfig())
	if err != nil {
		return err
	}
	defer st.Close()
	r := &payoutsRun{p: p, month: month, asOf: asOf, st: st}
	if err := r.prepare(ctx, set); err != nil {
		return err
	}
	rep := payoutReport{Month: month, AsOf: asOf, Close: p.Close}
	if !p.Close {
		err = r.preview(ctx, &rep)
	} else {
		err = r.closeMonth(ctx, &rep)
	}
	if err != nil {
		return err
	}
	closedBefore, err := r.reprintClosedBefore(ctx, &rep)
	if err != nil {
		return err
	}
	exportErr := r.export(ctx, &rep, ex)
	if err := writePayouts(out, rep, p); err != nil {
		return err
	}
	if exportErr != nil {
		if p.Close {
			return fmt.Errorf("%w\nthe month is closed and paid as listed: `payouts --month %s --export FILE` writes its bank file again", exportErr, month)
		}
		return exportErr
	}
	return r.notify(errOut, rep, closedBefore)
}

// payoutsBankExport checks what --export needs (the debtor's account, the execution date and
// the file's directory) before anything is paid; the zero bankExport without --export.
func payoutsBankExport(cfg Config, p payoutsParams) (bankExport, error) {
	var ex bankExport
	if p.Export == "" {
		return ex, nil
	}
	var err error
	if ex.debtor, err = cfg.Payouts.debtor(); err != nil {
		return ex, fmt.Errorf("payouts: --export: %w", err)
	}
	ex.path = p.Export
	if p.ExecutionDate != "" {
		if ex.exec, err = time.Parse(time.DateOnly, p.ExecutionDate); err != nil {
			return ex, usageError{fmt.Errorf("payouts: --execution-date %q is not a date such as 2026-11-03", p.ExecutionDate)}
		}
	}
	if fi, err := os.Stat(filepath.Dir(p.Export)); err != nil || !fi.IsDir() {
		return ex, fmt.Errorf("payouts: --export %s: the directory %s does not exist", p.Export, filepath.Dir(p.Export))
	}
	return ex, nil
}

// prepare sets how statements are built (under the payout terms in force at the end of the
// month, or else the program's first version) and which programs the run covers.
func (r *payoutsRun) prepare(ctx context.Context, set *rules.Set) error {
	terms := func(program string) (rules.Payout, bool) {
		vs := set.Versions(program)
		if len(vs) == 0 {
			return rules.Payout{}, false
		}
		if pol, err := set.InForce(program, r.asOf.Add(-time.Nanosecond)); err == nil {
			return pol.Payout, true
		}
		return vs[0].Payout, true
	}
	r.build = func(entries []engine.LedgerEntry) ([]engine.Statement, error) {
		return engine.Statements(entries, terms)
	}
	// The statements payable now: those of affiliates without payee details are held.
	payees, err := r.st.Payees(ctx, r.p.Program)
	if err != nil {
		return err
	}
	known := make(map[[2]string]bool, len(payees))
	for _, pe := range payees {
		known[[2]string{pe.Program, pe.AffiliateID}] = true
	}
	r.buildPayable = func(entries []engine.LedgerEntry) ([]engine.Statement, error) {
		sts, err := r.build(entries)
		if err == nil {
			payout.Hold(sts, func(program, affiliate string) bool { return known[[2]string{program, affiliate}] })
		}
		return sts, err
	}
	r.programs = []string{r.p.Program}
	if r.p.Program == "" {
		inLedger, err := r.st.LedgerPrograms(ctx)
		if err != nil {
			return err
		}
		r.programs = slices.Compact(slices.Sorted(slices.Values(append(set.Programs(), inLedger...))))
	}
	return nil
}

// preview fills rep without --close: the statements payable now and, per program, the run that
// closed the month before, if any. --export then needs such a run.
func (r *payoutsRun) preview(ctx context.Context, rep *payoutReport) error {
	entries, err := r.st.Payable(ctx, r.p.Program, r.asOf)
	if err != nil {
		return err
	}
	if rep.Statements, err = r.buildPayable(entries); err != nil {
		return err
	}
	for _, prog := range r.programs {
		rr := payoutRunReport{Program: prog}
		run, err := r.st.PayoutRun(ctx, prog, r.month)
		switch {
		case err == nil:
			rr.Run, rr.Before = run, true
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		rep.Runs = append(rep.Runs, rr)
	}
	if r.p.Export != "" && !slices.ContainsFunc(rep.Runs, func(r payoutRunReport) bool { return r.Before }) {
		return fmt.Errorf("payouts: --export: %s is not closed (%s): nothing was paid, so there is no bank file; "+
			"--close --export FILE pays it and writes the file", r.month, strings.Join(r.programs, ", "))
	}
	return nil
}

// closeMonth fills rep with --close: it closes the month of each program, paying its statements, or
// finds it closed before.
func (r *payoutsRun) closeMonth(ctx context.Context, rep *payoutReport) error {
	now := time.Now
	if r.p.Now != nil {
		now = r.p.Now
	}
	for _, prog := range r.programs {
		run, sts, err := r.st.ClosePayouts(ctx, prog, r.month, r.asOf, now(), r.buildPayable)
		rr := payoutRunReport{Program: prog, Run: run}
		switch {
		case errors.Is(err, store.ErrAlreadyClosed):
			rr.Before = true
		case err != nil:
			return err
		default:
			rr.Closed = true
		}
		rep.Runs = append(rep.Runs, rr)
		rep.Statements = append(rep.Statements, sts...)
	}
	return nil
}

// reprintClosedBefore adds to each run of a month closed before what it paid, to reprint, and
// returns a line per such run saying when it closed the month.
func (r *payoutsRun) reprintClosedBefore(ctx context.Context, rep *payoutReport) ([]string, error) {
	var closedBefore []string
	for i := range rep.Runs {
		rr := &rep.Runs[i]
		if !rr.Before {
			continue
		}
		entries, err := r.st.PaidEntries(ctx, rr.Run.ID)
		if err != nil {
			return nil, err
		}
		if rr.Paid, err = r.build(entries); err != nil {
			return nil, err
		}
		closedBefore = append(closedBefore, fmt.Sprintf("%s %s was closed by run %d at %s", rr.Program, r.month, rr.Run.ID, rr.Run.ClosedAt.Format(time.RFC3339)))
	}
	return closedBefore, nil
}

// export writes the bank files with --export: of the runs closed now (--close), or before (a
// reprint). It adds the files written to rep, also when it fails part way.
func (r *payoutsRun) export(ctx context.Context, rep *payoutReport, ex bankExport) error {
	if r.p.Export == "" {
		return nil
	}
	for _, rr := range rep.Runs {
		if rr.Closed || (!r.p.Close && rr.Before) {
			files, others, err := exportRun(ctx, r.st, rr.Run, ex)
			rep.Files, rep.OtherMethods = append(rep.Files, files...), append(rep.OtherMethods, others...)
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// notify writes to errOut what JSON and CSV output leave out (held statements, files written)
// and fails with exit code 1 when --close paid nothing because the month was closed before.
func (r *payoutsRun) notify(errOut io.Writer, rep payoutReport, closedBefore []string) error {
	if r.p.Format != "table" {
		// Table output says these itself; JSON and CSV keep standard output to the data.
		if hs := held(rep.Statements); len(hs) > 0 {
			fmt.Fprintf(errOut, "payouts: held %d statement(s) of affiliates without payee details: not paid, carried forward (commissioner affiliates set)\n", len(hs))
		}
		for _, f := range rep.Files {
			fmt.Fprintf(errOut, "payouts: wrote %s\n", bankFileLine(f))
		}
	}
	// --close that closed nothing, because another run had closed the month, says so and fails:
	// whatever the format, a script must not take it for a payment.
	closedNow := slices.ContainsFunc(rep.Runs, func(r payoutRunReport) bool { return r.Closed })
	if r.p.Close && !closedNow && len(closedBefore) > 0 {
		hint := ""
		if r.p.Export != "" {
			hint = fmt.Sprintf(" (no bank file written: `payouts --month %s --export FILE` writes the closed run's again)", r.month)
		}
		fmt.Fprintf(errOut, "payouts: nothing paid: %s%s\n", strings.Join(closedBefore, "; "), hint)
		return exitCode(1)
	}
	return nil
}

// bankFileLine describes a bank file written.
func bankFileLine(f bankFile) string {
	return fmt.Sprintf("bank file %s: pain.001 %s, %d transfer(s), %s %s, execution date %s", f.Path, f.MsgID, f.Transfers,
		f.ControlSum.Text('f'), f.Currency, f.ExecutionDate)
}

func writePayouts(out io.Writer, rep payoutReport, p payoutsParams) error {
	switch p.Format {
	case "json":
		return writePayoutsJSON(out, rep)
	case "csv":
		return writePayoutsCSV(out, rep, p.Lines)
	}
	return writePayoutsTable(out, rep, p.Lines)
}

func (r payoutReport) status() string {
	var closedNow, before []string
	for _, run := range r.Runs {
		switch {
		case run.Closed:
			closedNow = append(closedNow, fmt.Sprintf("%s run %d: %d payout(s), %d entries paid", run.Program, run.Run.ID, run.Run.Payouts, run.Run.Entries))
		case run.Before && r.Close:
			before = append(before, fmt.Sprintf("%s was closed by run %d at %s: nothing paid now", run.Program, run.Run.ID, run.Run.ClosedAt.Format(time.RFC3339)))
		case run.Before:
			before = append(before, fmt.Sprintf("%s closed by run %d at %s (what is listed came after it)", run.Program, run.Run.ID, run.Run.ClosedAt.Format(time.RFC3339)))
		}
	}
	var parts []string
	if len(closedNow) > 0 {
		parts = append(parts, "closed: "+strings.Join(closedNow, "; "))
	}
	parts = append(parts, before...)
	if !r.Close {
		parts = append(parts, "not closed by this run (preview; --close pays)")
	}
	return strings.Join(parts, "; ")
}

func writePayoutsTable(out io.Writer, r payoutReport, lines bool) error {
	fmt.Fprintf(out, "payouts %s: entries approved before %s and not paid yet: %d statement(s)\n", r.Month, r.AsOf.Format(time.RFC3339), len(r.Statements))
	fmt.Fprintln(out, r.status())
	if err := writeStatementsTable(out, r.Statements, lines); err != nil {
		return err
	}
	totals, err := engine.StatementTotals(r.Statements)
	if err != nil {
		return err
	}
	verb := "payable"
	if r.Close {
		verb = "paid"
	}
	for _, t := range totals {
		fmt.Fprintf(out, "total %s: %s %s, %s carried forward\n", t.Currency, verb, t.Paid.Text('f'), t.Carried.Text('f'))
	}
	if hs := held(r.Statements); len(hs) > 0 {
		fmt.Fprintf(out, "\nheld: %d statement(s) of affiliates without payee details, not paid, carried forward "+
			"(commissioner affiliates set --program P AFFILIATE …, or affiliates import):\n", len(hs))
		for _, s := range hs {
			fmt.Fprintf(out, "  %s %s %s %s\n", s.Program, s.AffiliateID, s.Currency, s.Total.Text('f'))
		}
	}
	// A month closed before: what it paid, reprinted.
	for _, run := range r.Runs {
		if !run.Before {
			continue
		}
		fmt.Fprintf(out, "\npaid by run %d of %s at %s: %d statement(s), %d entries\n", run.Run.ID, run.Program,
			run.Run.ClosedAt.Format(time.RFC3339), len(run.Paid), run.Run.Entries)
		if err := writeStatementsTable(out, run.Paid, lines); err != nil {
			return err
		}
		totals, err := engine.StatementTotals(run.Paid)
		if err != nil {
			return err
		}
		for _, t := range totals {
			fmt.Fprintf(out, "total %s: paid %s by run %d\n", t.Currency, t.Paid.Text('f'), run.Run.ID)
		}
	}
	if len(r.Files) > 0 || len(r.OtherMethods) > 0 {
		fmt.Fprintln(out)
	}
	for _, f := range r.Files {
		fmt.Fprintln(out, bankFileLine(f))
	}
	for _, o := range r.OtherMethods {
		fmt.Fprintf(out, "not in a bank file: payout %d to %s, %s %s, paid by %s\n", o.ID, o.AffiliateID, o.Amount.Text('f'), o.Currency, o.Method)
	}
	return nil
}

// writeStatementsTable writes statements as a table, with their lines when asked.
func writeStatementsTable(out io.Writer, sts []engine.Statement, lines bool) error {
	if len(sts) == 0 {
		return nil
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROGRAM\tAFFILIATE\tCURRENCY\tLINES\tACCRUALS\tADJUSTMENTS\tREVERSALS\tTOTAL\tPAYOUT")
	for _, s := range sts {
		payout := s.Method
		if !s.Payable {
			payout = s.CarriedForward
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", s.Program, s.AffiliateID, s.Currency, len(s.Lines),
			s.Accruals.Text('f'), s.Adjustments.Text('f'), s.Reversals.Text('f'), s.Total.Text('f'), payout)
		if lines {
			for _, e := range s.Lines {
				fmt.Fprintf(tw, "\t  %s\t%s\t\t\t\t\t%s\t%s, approved %s, decision %d\n", e.OrderID, e.Kind, e.Amount.Text('f'),
					paidText(e), e.ApproveAt.Format("2006-01-02"), e.DecisionID)
			}
		}
	}
	return tw.Flush()
}

func paidText(e engine.LedgerEntry) string {
	if e.PayoutID != 0 {
		return "paid by payout " + strconv.FormatInt(e.PayoutID, 10)
	}
	return "unpaid"
}

func writePayoutsCSV(out io.Writer, r payoutReport, lines bool) error {
	w := csv.NewWriter(out)
	// paid_by_run is the run that paid a statement of a month closed before; empty for one
	// payable now.
	type group struct {
		sts []engine.Statement
		run string
	}
	groups := []group{{sts: r.Statements}}
	for _, run := range r.Runs {
		if run.Before {
			groups = append(groups, group{sts: run.Paid, run: strconv.FormatInt(run.Run.ID, 10)})
		}
	}
	if lines {
		w.Write([]string{"month", "program", "affiliate_id", "currency", "order_id", "kind", "amount", "approve_at", "entry_id", "decision_id", "event_id",
			"statement_payable", "method", "paid_by_run"})
		for _, g := range groups {
			for _, s := range g.sts {
				for _, e := range s.Lines {
					w.Write([]string{r.Month, s.Program, s.AffiliateID, s.Currency, e.OrderID, string(e.Kind), e.Amount.Text('f'),
						e.ApproveAt.Format(time.RFC3339), strconv.FormatInt(e.ID, 10), strconv.FormatInt(e.DecisionID, 10), e.EventID,
						strconv.FormatBool(s.Payable), s.Method, g.run})
				}
			}
		}
	} else {
		w.Write([]string{"month", "program", "affiliate_id", "currency", "lines", "accruals", "adjustments", "reversals", "total", "payable", "method",
			"carried_forward", "paid_by_run"})
		for _, g := range groups {
			for _, s := range g.sts {
				w.Write([]string{r.Month, s.Program, s.AffiliateID, s.Currency, strconv.Itoa(len(s.Lines)), s.Accruals.Text('f'),
					s.Adjustments.Text('f'), s.Reversals.Text('f'), s.Total.Text('f'), strconv.FormatBool(s.Payable), s.Method, s.CarriedForward, g.run})
			}
		}
	}
	w.Flush()
	return w.Error()
}

type statementJSON struct {
	Program        string     `json:"program"`
	AffiliateID    string     `json:"affiliate_id"`
	Currency       string     `json:"currency"`
	Method         string     `json:"method"`
	Accruals       string     `json:"accruals"`
	Adjustments    string     `json:"adjustments"`
	Reversals      string     `json:"reversals"`
	Total          string     `json:"total"`
	Minimum        *string    `json:"minimum"`
	Payable        bool       `json:"payable"`
	Held           bool       `json:"held"` // carried forward for want of payee details
	CarriedForward string     `json:"carried_forward,omitempty"`
	Lines          []lineJSON `json:"lines"`
}

type lineJSON struct {
	EntryID    int64     `json:"entry_id"`
	OrderID    string    `json:"order_id"`
	Kind       string    `json:"kind"`
	Amount     string    `json:"amount"`
	ApproveAt  time.Time `json:"approve_at"`
	DecisionID int64     `json:"decision_id"`
	EventID    string    `json:"event_id"`
	PayoutID   int64     `json:"payout_id,omitempty"`
}

type runJSON struct {
	Program  string     `json:"program"`
	RunID    int64      `json:"run_id,omitempty"`
	Closed   bool       `json:"closed_now"`
	Before   bool       `json:"closed_before"`
	ClosedAt *time.Time `json:"closed_at,omitempty"`
	Payouts  int64      `json:"payouts"`
	Entries  int64      `json:"entries_paid"`
	// Paid are the statements the run paid, for a month closed before (closed_before).
	Paid []statementJSON `json:"paid,omitempty"`
}

type totalJSON struct {
	Currency       string `json:"currency"`
	Paid           string `json:"paid"`
	CarriedForward string `json:"carried_forward"`
}

func writePayoutsJSON(out io.Writer, r payoutReport) error {
	doc := struct {
		Month      string          `json:"month"`
		AsOf       time.Time       `json:"as_of"`
		Close      bool            `json:"close"`
		Runs       []runJSON       `json:"runs"`
		Statements []statementJSON `json:"statements"`
		Totals     []totalJSON     `json:"totals"`
		BankFiles  []bankFileJSON  `json:"bank_files,omitempty"`
	}{Month: r.Month, AsOf: r.AsOf, Close: r.Close, Runs: []runJSON{}, Statements: []statementJSON{}, Totals: []totalJSON{}}
	for _, run := range r.Runs {
		j := runJSON{Program: run.Program, RunID: run.Run.ID, Closed: run.Closed, Before: run.Before, Payouts: run.Run.Payouts, Entries: run.Run.Entries}
		if run.Run.ID != 0 {
			t := run.Run.ClosedAt
			j.ClosedAt = &t
		}
		if run.Before {
			j.Paid = statementsJSON(run.Paid)
		}
		doc.Runs = append(doc.Runs, j)
	}
	doc.Statements = statementsJSON(r.Statements)
	totals, err := engine.StatementTotals(r.Statements)
	if err != nil {
		return err
	}
	for _, t := range totals {
		doc.Totals = append(doc.Totals, totalJSON{Currency: t.Currency, Paid: t.Paid.Text('f'), CarriedForward: t.Carried.Text('f')})
	}
	for _, f := range r.Files {
		doc.BankFiles = append(doc.BankFiles, bankFileJSON{Path: f.Path, Program: f.Program, Currency: f.Currency, MsgID: f.MsgID,
			Transfers: f.Transfers, ControlSum: f.ControlSum.Text('f'), ExecutionDate: f.ExecutionDate})
	}
	return writeJSONDoc(out, doc)
}

type bankFileJSON struct {
	Path          string `json:"path"`
	Program       string `json:"program"`
	Currency      string `json:"currency"`
	MsgID         string `json:"msg_id"`
	Transfers     int    `json:"transfers"`
	ControlSum    string `json:"control_sum"`
	ExecutionDate string `json:"execution_date"`
}

// statementsJSON renders statements for JSON (never null).
func statementsJSON(sts []engine.Statement) []statementJSON {
	out := []statementJSON{}
	for _, s := range sts {
		j := statementJSON{Program: s.Program, AffiliateID: s.AffiliateID, Currency: s.Currency, Method: s.Method,
			Accruals: s.Accruals.Text('f'), Adjustments: s.Adjustments.Text('f'), Reversals: s.Reversals.Text('f'), Total: s.Total.Text('f'),
			Payable: s.Payable, Held: isHeld(s), CarriedForward: s.CarriedForward, Lines: []lineJSON{}}
		if s.Minimum != nil {
			m := s.Minimum.Text('f')
			j.Minimum = &m
		}
		for _, e := range s.Lines {
			j.Lines = append(j.Lines, lineJSON{EntryID: e.ID, OrderID: e.OrderID, Kind: string(e.Kind), Amount: e.Amount.Text('f'),
				ApproveAt: e.ApproveAt, DecisionID: e.DecisionID, EventID: e.EventID, PayoutID: e.PayoutID})
		}
		out = append(out, j)
	}
	return out
}
