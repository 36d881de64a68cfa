package main

// replay --sweep and --budget: the cost curve of a candidate's terms across ranges of values,
// priced on history in one pass (engine.ReplaySweep), and budgets a candidate — or the point of a
// sweep — must keep to. The report comes as a table, json (httpapi.SweepDocument), csv and html
// (sweep_html.go).

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// exitBudget is replay's exit status when a candidate does not keep to a --budget, or no point
// of a sweep keeps to one.
const exitBudget = 4

// parseSweep reads the --sweep ranges and --budget bounds into p.
func (p *replayParams) parseSweep(sweeps, budgets []string) error {
	var errs []error
	for _, s := range sweeps {
		ax, err := engine.ParseSweepAxis(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p.Sweep = append(p.Sweep, ax)
	}
	seen := map[string]string{}
	for _, s := range budgets {
		b, err := engine.ParseBudget(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if prev, dup := seen[b.Currency]; dup {
			errs = append(errs, fmt.Errorf("--budget %s: %s has a budget already (--budget %s): give one per currency", s, b.Currency, prev))
			continue
		}
		seen[b.Currency] = s
		p.Budgets = append(p.Budgets, b)
	}
	if err := errors.Join(errs...); err != nil {
		return usageError{err}
	}
	return nil
}

// validateSweep says what does not go with --sweep: the options about one candidate's orders.
func (p *replayParams) validateSweep() []error {
	if len(p.Sweep) == 0 {
		return nil
	}
	var errs []error
	if p.Record {
		errs = append(errs, errors.New("--record stores one candidate's run: replay a point's file on its own to record it, not a --sweep"))
	}
	if p.Changes >= 0 {
		errs = append(errs, errors.New("--changes lists one candidate's changed orders; a --sweep lists none (replay a point's file on its own for them)"))
	}
	if p.All {
		errs = append(errs, errors.New("--all lists one candidate's rate-rule rows; a --sweep shows none"))
	}
	return errs
}

// sweepRun is one sweep's inputs and result, what the renderers need.
type sweepRun struct {
	Run       replayRun // the parameters, where the candidate came from, the filter and the warnings
	Base      *rules.Policy
	Axes      []engine.SweepAxis // resolved: a flat amount's currency named
	Points    []engine.SweepPoint
	Reports   []*engine.ReplayReport // one per point
	Crossings []engine.BudgetCrossing
}

// runSweep loads the candidate, makes the sweep's points, replays the history once for all of
// them and writes the cost curve. After the report it returns exitCode(exitDrift) when a point
// decided by the very version that recorded a decision did not reproduce it, else
// exitCode(exitBudget) when no point keeps to a budget.
func runSweep(ctx context.Context, cfg Config, p replayParams, out, errOut io.Writer) error {
	if err := requireStore(cfg); err != nil {
		return err
	}
	st, err := store.Open(ctx, cfg.storeConfig())
	if err != nil {
		return err
	}
	defer st.Close()

	sr := &sweepRun{}
	set, err := replayCandidate(ctx, st, &p, &sr.Run)
	if err != nil {
		return err
	}
	if !sr.Run.Pinned || len(set.All()) != 1 {
		return usageError{fmt.Errorf("--sweep varies the terms of one policy version: %s is a directory; give one of its files (--policy DIR/vN.yaml) or --version N", p.Policy)}
	}
	sr.Base = set.All()[0]
	if sr.Points, sr.Axes, err = engine.SweepPoints(sr.Base, p.Sweep); err != nil {
		return usageError{err}
	}
	sr.Run.Params = p
	sr.Run.Filter = store.EventFilter{Program: p.Program, From: p.From, To: p.To, Affiliate: p.Affiliate, LatestPerOrder: !p.AllEvents}
	h, fromStream, closeHistory, err := replayHistory(ctx, cfg, st, p, sr.Run.Filter)
	if err != nil {
		return err
	}
	defer closeHistory()

	defer debug.SetGCPercent(debug.SetGCPercent(400)) // as replay: allocates fast, keeps little
	sets := make([]*rules.Set, len(sr.Points))
	for i := range sr.Points {
		sets[i] = sr.Points[i].Set.WithShadowsLive() // a shadow's file is priced as if it were in force, as replay --policy does
	}
	// The points list no orders: each keeps the one the engine keeps at least.
	opts := engine.ReplayOptions{Workers: p.Workers, MaxChanges: 1}
	reports, elapsed, err := sweepShowingProgress(ctx, sets, h, opts, len(sr.Points), errOut)
	if err != nil {
		return err
	}
	sr.Reports = reports
	seen := map[string]bool{}
	for _, rep := range reports {
		for _, w := range replayWarnings(rep, fromStream) {
			if !seen[w] {
				seen[w] = true
				sr.Run.Warnings = append(sr.Run.Warnings, w)
			}
		}
	}
	for i := range p.Budgets {
		sr.Crossings = append(sr.Crossings, p.Budgets[i].Crossing(reports))
	}

	if err := writeSweepReport(sr, p.Format, p.Out, out); err != nil {
		return err
	}
	if p.Format != "table" || p.Out != "" { // the table has said them
		for _, w := range sr.Run.Warnings {
			fmt.Fprintf(errOut, "warning: %s\n", w)
		}
		for _, l := range sweepBudgetLines(sr) {
			fmt.Fprintf(errOut, "budget %s\n", l)
		}
	}
	first := reports[0]
	rate := float64(first.Events) / max(elapsed.Seconds(), 1e-9)
	fmt.Fprintf(errOut, "swept %d points over %d events (%d evaluated at each point) in %v: %.0f events/s\n",
		len(sr.Points), first.Events, first.Evaluated, elapsed.Round(time.Millisecond), rate)

	var drifted []string
	for i, rep := range reports {
		if rep.Drift > 0 {
			drifted = append(drifted, fmt.Sprintf("point %d (%s): %d of %d", i+1, sr.Points[i].Label(), rep.Drift, rep.SameVersion))
		}
	}
	if len(drifted) > 0 {
		fmt.Fprintf(errOut, "drift: orders replayed with their recorded policy version did not reproduce their decision at %s\n", strings.Join(drifted, "; "))
		return exitCode(exitDrift)
	}
	for i, c := range sr.Crossings {
		if c.Keeping == 0 {
			b := &p.Budgets[i]
			fmt.Fprintf(errOut, "budget %s: no point of the sweep keeps to it (%s)\n", b, budgetAsk(b))
			return exitCode(exitBudget)
		}
	}
	return nil
}

// sweepShowingProgress replays h once for every point's candidate, showing on a terminal errOut
// how many events were read; it returns the points' reports and how long it took.
func sweepShowingProgress(ctx context.Context, sets []*rules.Set, h engine.History, opts engine.ReplayOptions, points int, errOut io.Writer) ([]*engine.ReplayReport, time.Duration, error) {
	start := time.Now()
	var read atomic.Int64
	prog := startProgress(errOut, func() string {
		return fmt.Sprintf("sweep of %d points: events read %s", points, perSecond(read.Load(), start))
	})
	defer prog.Stop()
	reps, err := engine.ReplaySweep(ctx, sets, countEvents(h, &read), opts)
	prog.Stop()
	return reps, time.Since(start), err
}

// --- budgets ---

// budgetAsk says what a budget asks in words: "save at least 5000 USD", "cost at most 2000 USD
// more", "cost nothing more".
func budgetAsk(b *engine.Budget) string {
	var abs apd.Decimal
	abs.Abs(&b.Amount)
	switch b.Amount.Sign() {
	case -1:
		return fmt.Sprintf("save at least %s %s", abs.Text('f'), b.Currency)
	case 1:
		return fmt.Sprintf("cost at most %s %s more", abs.Text('f'), b.Currency)
	}
	return "cost nothing more in " + b.Currency
}

// budgetGap says by how much a difference misses a budget: "1485.43 short" of a saving, "1514.57
// over" a cost; "" when it keeps to it.
func budgetGap(b *engine.Budget, diff *apd.Decimal) string {
	if b.Keeps(diff) {
		return ""
	}
	var gap apd.Decimal
	if _, err := engine.SumContext.Sub(&gap, diff, &b.Amount); err != nil {
		return "?"
	}
	if b.Amount.Sign() < 0 {
		return gap.Text('f') + " short"
	}
	return gap.Text('f') + " over"
}

// checkReplayBudgets says on errOut how the replay's differences stand against the budgets; it
// returns exitCode(exitBudget) when the candidate does not keep to one.
func checkReplayBudgets(budgets []engine.Budget, rep *engine.ReplayReport, errOut io.Writer) error {
	var err error
	for i := range budgets {
		b := &budgets[i]
		diff, found := b.Difference(rep)
		none := ""
		if !found {
			none = fmt.Sprintf(" (no %s orders were replayed)", b.Currency)
		}
		if b.Keeps(&diff) {
			fmt.Fprintf(errOut, "budget %s (%s): kept: the %s difference is %s%s\n", b, budgetAsk(b), b.Currency, httpapi.SignedDecimal(&diff), none)
			continue
		}
		fmt.Fprintf(errOut, "budget %s (%s): not kept: the %s difference is %s, %s%s\n", b, budgetAsk(b), b.Currency, httpapi.SignedDecimal(&diff), budgetGap(b, &diff), none)
		err = exitCode(exitBudget)
	}
	return err
}

// sweepBudgetLines say where the sweep's change crosses each budget.
func sweepBudgetLines(sr *sweepRun) []string {
	var out []string
	for i, c := range sr.Crossings {
		b := &sr.Run.Params.Budgets[i]
		if c.Point < 0 {
			continue
		}
		pt := fmt.Sprintf("point %d (%s), difference %s", c.Point+1, sr.Points[c.Point].Label(), httpapi.SignedDecimal(&c.Difference))
		if c.Keeps {
			out = append(out, fmt.Sprintf("%s (%s): crossed at %s; %d of %d points keep to it", b, budgetAsk(b), pt, c.Keeping, len(sr.Points)))
		} else {
			out = append(out, fmt.Sprintf("%s (%s): no point keeps to it; the closest is %s, %s", b, budgetAsk(b), pt, budgetGap(b, &c.Difference)))
		}
	}
	return out
}

// --- the report ---

// writeSweepReport writes the sweep in format to the file path (standard output when "").
func writeSweepReport(sr *sweepRun, format, path string, stdout io.Writer) error {
	return writeReportFile(path, stdout, "the report", func(w io.Writer) error {
		switch format {
		case "json":
			return writeJSONDoc(w, sweepDocument(sr))
		case "csv":
			return writeSweepCSV(w, sr)
		case "html":
			return writeSweepHTML(w, sr)
		}
		return writeSweepTable(w, sr)
	})
}

func sweepDocument(sr *sweepRun) httpapi.SweepDocument {
	return httpapi.NewSweepDocument(sr.Run.Candidate, sr.Base, replayParamsDoc(&sr.Run), sr.Axes, sr.Points, sr.Reports,
		sr.Run.Params.Budgets, sr.Crossings, sr.Run.Warnings)
}

// axesLabel describes the ranges: "selected_returning.rate = 4%..7%/0.5%".
func axesLabel(axes []engine.SweepAxis) string {
	parts := make([]string, len(axes))
	for i, ax := range axes {
		parts[i] = ax.Term.String() + " = " + ax.Spec
	}
	return strings.Join(parts, " × ")
}

// sweepCurrencies are the currencies to draw a cost curve of — those with a budget first, in the
// budgets' order, then those whose commission changes at some point, by code — and those of the
// points' totals unchanged at every point, by code.
func sweepCurrencies(sr *sweepRun) (curves, unchanged []string) {
	changes := map[string]bool{}
	for _, rep := range sr.Reports {
		for _, t := range rep.Totals {
			changes[t.Currency] = changes[t.Currency] || !t.Diff.IsZero() || t.Changed > 0
		}
	}
	budgeted := map[string]bool{}
	for _, b := range sr.Run.Params.Budgets {
		budgeted[b.Currency] = true
		curves = append(curves, b.Currency)
	}
	for _, cur := range sortedCurrencies(changes) {
		switch {
		case budgeted[cur]:
		case changes[cur]:
			curves = append(curves, cur)
		default:
			unchanged = append(unchanged, cur)
		}
	}
	return curves, unchanged
}

func sortedCurrencies(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// pointTotal is a point's total in a currency (a zero one, with no orders, when it has none).
func pointTotal(rep *engine.ReplayReport, cur string) engine.CurrencyTotal {
	for _, t := range rep.Totals {
		if t.Currency == cur {
			return t
		}
	}
	return engine.CurrencyTotal{Currency: cur}
}

// budgetOf is the budget in the currency and its crossing, if there is one.
func budgetOf(sr *sweepRun, cur string) (*engine.Budget, *engine.BudgetCrossing) {
	for i := range sr.Run.Params.Budgets {
		if sr.Run.Params.Budgets[i].Currency == cur {
			return &sr.Run.Params.Budgets[i], &sr.Crossings[i]
		}
	}
	return nil, nil
}

// pointValues are a point's values, one cell per range.
func pointValues(p *engine.SweepPoint) []string {
	out := make([]string, len(p.Values))
	for i, v := range p.Values {
		out[i] = v.Term.Format(v.Value)
	}
	return out
}

// shortDigest is "sha256:" and the first 12 hex digits of a digest.
func shortDigest(d string) string {
	if len(d) > len("sha256:")+12 {
		return d[:len("sha256:")+12] + "…"
	}
	return d
}

// writeSweepTable writes the sweep as text: the header, each point's counts, the cost curve of
// each currency that changes, and the budgets.
func writeSweepTable(w io.Writer, sr *sweepRun) error {
	b := sr.Base
	fmt.Fprintf(w, "Sweep of %s: %s, %d points\n", sr.Run.Candidate, axesLabel(sr.Axes), len(sr.Points))
	fmt.Fprintf(w, "  candidate  %s v%d %s, %s, applied to every order (effective_from %s not applied); each point is this file with its values written in, with its own digest\n",
		b.Program, b.Version, b.Digest, b.File, b.EffectiveFrom.UTC().Format(time.RFC3339))
	for _, r := range sr.Reports[0].Recorded {
		fmt.Fprintf(w, "  recorded   %s v%d %s: %d orders\n", r.Program, r.Version, r.Digest, r.Orders)
	}
	fmt.Fprintf(w, "  orders     %s\n", rangeLabel(&sr.Run))
	fmt.Fprintf(w, "  dry run: nothing was written to decisions\n")

	terms := make([]string, len(sr.Axes))
	for i, ax := range sr.Axes {
		terms[i] = ax.Term.String()
	}
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	var rows [][]string
	for i, rep := range sr.Reports {
		row := append([]string{n(int64(i + 1))}, pointValues(&sr.Points[i])...)
		row = append(row, shortDigest(sr.Points[i].Policy.Digest), n(rep.Evaluated), n(countTotal(rep.Errors)),
			n(rep.NewlyQualified), n(rep.NewlyDisqualified), n(rep.CommissionChanged))
		rows = append(rows, row)
	}
	writeMoneyTable(w, "Points", append(append([]string{"POINT"}, terms...), "DIGEST", "EVALUATED", "NOT DECIDABLE", "NEWLY QUALIFIED", "NEWLY DISQUALIFIED", "COMMISSION CHANGED"), rows)

	curves, unchanged := sweepCurrencies(sr)
	for _, cur := range curves {
		budget, crossing := budgetOf(sr, cur)
		head := append(append([]string{"POINT"}, terms...), "ORDERS", "CHANGED", "BEFORE", "AFTER", "DIFFERENCE")
		if budget != nil {
			head = append(head, "BUDGET "+budget.Amount.Text('f'))
		}
		var rows [][]string
		for i, rep := range sr.Reports {
			t := pointTotal(rep, cur)
			row := append([]string{n(int64(i + 1))}, pointValues(&sr.Points[i])...)
			row = append(row, n(t.Orders), n(t.Changed), t.Before.Text('f'), t.After.Text('f'), httpapi.SignedDecimal(&t.Diff))
			if budget != nil {
				cell := "over"
				if budget.Keeps(&t.Diff) {
					cell = "keeps"
				}
				if crossing.Point == i {
					cell += " ← crosses"
				}
				row = append(row, cell)
			}
			rows = append(rows, row)
		}
		writeMoneyTable(w, "Cost curve in "+cur, head, rows)
	}
	if len(unchanged) > 0 {
		fmt.Fprintf(w, "\nUnchanged at every point: %s\n", strings.Join(unchanged, ", "))
	}
	if lines := sweepBudgetLines(sr); len(lines) > 0 {
		fmt.Fprintf(w, "\nBudgets (a point keeps to CUR:AMOUNT when its difference in CUR is at most AMOUNT)\n")
		for _, l := range lines {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	for _, warn := range sr.Run.Warnings {
		fmt.Fprintf(w, "\nwarning: %s\n", warn)
	}
	return nil
}

// writeSweepCSV writes one row per point and currency: the point's values and digest, then the
// currency's money, then the budget in that currency, whether the point keeps to it and whether
// it is where the change crosses it.
func writeSweepCSV(w io.Writer, sr *sweepRun) error {
	cw := csv.NewWriter(w)
	head := []string{"point"}
	for _, ax := range sr.Axes {
		head = append(head, ax.Term.String())
	}
	cw.Write(append(head, "digest", "currency", "orders", "commission_changed", "before", "after", "difference", "budget", "keeps_budget", "crosses_budget"))
	for i, rep := range sr.Reports {
		for _, t := range rep.Totals {
			row := append([]string{strconv.Itoa(i + 1)}, pointValues(&sr.Points[i])...)
			row = append(row, sr.Points[i].Policy.Digest, t.Currency, strconv.FormatInt(t.Orders, 10), strconv.FormatInt(t.Changed, 10),
				t.Before.Text('f'), t.After.Text('f'), httpapi.SignedDecimal(&t.Diff))
			if b, c := budgetOf(sr, t.Currency); b != nil {
				row = append(row, b.Amount.Text('f'), strconv.FormatBool(b.Keeps(&t.Diff)), strconv.FormatBool(c.Point == i))
			} else {
				row = append(row, "", "", "")
			}
			cw.Write(row)
		}
	}
	cw.Flush()
	return cw.Error()
}
