package console

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/commissioner/commissioner/engine"
)

// payoutsPath is the payouts page of a month ("2026-10").
func payoutsPath(month string) string { return "/ui/payouts/" + month }

// payoutsIndex sends ?month= (the form of the payouts page), or else the previous month, to its page.
func (c *Console) payoutsIndex(w http.ResponseWriter, r *http.Request, _ *session) error {
	month := r.URL.Query().Get("month")
	if month == "" {
		now := c.opts.Now().UTC()
		month = time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC).AddDate(0, -1, 0).Format("2006-01")
	}
	m, _, err := engine.MonthBounds(month)
	if err != nil {
		return pageError{http.StatusBadRequest, "The month must be a month such as 2026-10."}
	}
	http.Redirect(w, r, payoutsPath(m), http.StatusSeeOther)
	return nil
}

type statementRow struct {
	Program, AffiliateID, Currency          string
	Accruals, Adjustments, Reversals, Total string
	Payable                                 bool
	Payout                                  string // the method, or why it is carried forward
	Lines                                   []statementLine
}

type statementLine struct {
	EntryID, DecisionID        int64
	OrderID, OrderURL, Kind    string
	Amount, ApproveAt, EventID string
	Paid                       string
}

type totalRow struct{ Currency, Paid, Carried string }

type runView struct {
	ID                int64
	Program, ClosedAt string
	Payouts, Entries  int64
	Statements        []statementRow
	Totals            []totalRow
}

type payoutsData struct {
	Month, AsOf, Prev, Next, CSV string
	Statements                   []statementRow
	Totals                       []totalRow
	Runs                         []runView
	Closed                       string // the sentence naming the runs that closed the month; "" when none did
	// Close is the closing form's state: "" (the console cannot close months), "operator"
	// (show the form), "reader" (say who can), "open" (the month has not ended) or "nothing"
	// (no statement is payable now).
	Close, CloseAction string
}

// payouts shows a month's statements (GET /ui/payouts/2026-10) or writes them as CSV
// (/ui/payouts/2026-10.csv, the columns of `commissioner payouts --format csv`).
func (c *Console) payouts(w http.ResponseWriter, r *http.Request, s *session) error {
	month, asCSV := strings.CutSuffix(r.PathValue("month"), ".csv")
	m, _, err := engine.MonthBounds(month)
	if err != nil || m != month {
		return pageError{http.StatusBadRequest, fmt.Sprintf("%q is not a month such as 2026-10.", month)}
	}
	pm, err := c.st.PayoutMonth(r.Context(), m)
	if err != nil {
		return err
	}
	if asCSV {
		return writePayoutsCSV(w, pm)
	}
	t, _ := time.Parse("2006-01", m)
	d := payoutsData{Month: m, AsOf: pm.AsOf.UTC().Format(time.RFC3339), Prev: payoutsPath(t.AddDate(0, -1, 0).Format("2006-01")),
		Next: payoutsPath(t.AddDate(0, 1, 0).Format("2006-01")), CSV: payoutsPath(m) + ".csv", Statements: statementRows(pm.Statements)}
	if d.Totals, err = totalRows(pm.Statements); err != nil {
		return err
	}
	var closed []string
	for _, run := range pm.Runs {
		rv := runView{ID: run.ID, Program: run.Program, ClosedAt: run.ClosedAt.UTC().Format(time.RFC3339), Payouts: run.Payouts,
			Entries: run.Entries, Statements: statementRows(run.Paid)}
		if rv.Totals, err = totalRows(run.Paid); err != nil {
			return err
		}
		d.Runs = append(d.Runs, rv)
		closed = append(closed, fmt.Sprintf("%s by run %d at %s (%d payout(s), %d entries paid)", run.Program, run.ID, rv.ClosedAt, run.Payouts, run.Entries))
	}
	if len(closed) > 0 {
		d.Closed = m + " is closed: " + strings.Join(closed, "; ") + "."
	}
	d.Close, d.CloseAction = c.closeState(s, pm), payoutsPath(m)+"/close"
	c.render(w, http.StatusOK, "payouts", s.page("Payouts "+m, d))
	return nil
}

// closeState is what the page offers for closing the month (payoutsData.Close).
func (c *Console) closeState(s *session, pm PayoutMonth) string {
	payable := slices.ContainsFunc(pm.Statements, func(st engine.Statement) bool { return st.Payable })
	switch {
	case c.opts.Payouts == nil:
		return ""
	case c.opts.Now().Before(pm.AsOf):
		return "open"
	case !payable:
		return "nothing"
	}
	return s.role()
}

func statementRows(sts []engine.Statement) []statementRow {
	var out []statementRow
	for _, st := range sts {
		row := statementRow{Program: st.Program, AffiliateID: st.AffiliateID, Currency: st.Currency, Accruals: st.Accruals.Text('f'),
			Adjustments: st.Adjustments.Text('f'), Reversals: st.Reversals.Text('f'), Total: st.Total.Text('f'), Payable: st.Payable, Payout: st.Method}
		if !st.Payable {
			row.Payout = st.CarriedForward
		}
		for _, e := range st.Lines {
			l := statementLine{EntryID: e.ID, DecisionID: e.DecisionID, OrderID: e.OrderID, OrderURL: orderPath(e.OrderID), Kind: string(e.Kind),
				Amount: e.Amount.Text('f'), ApproveAt: e.ApproveAt.UTC().Format(time.RFC3339), EventID: e.EventID, Paid: "unpaid"}
			if e.PayoutID != 0 {
				l.Paid = "payout " + strconv.FormatInt(e.PayoutID, 10)
			}
			row.Lines = append(row.Lines, l)
		}
		out = append(out, row)
	}
	return out
}

func totalRows(sts []engine.Statement) ([]totalRow, error) {
	totals, err := engine.StatementTotals(sts)
	if err != nil {
		return nil, err
	}
	out := make([]totalRow, len(totals))
	for i, t := range totals {
		out[i] = totalRow{Currency: t.Currency, Paid: t.Paid.Text('f'), Carried: t.Carried.Text('f')}
	}
	return out, nil
}

// payoutsCSVHeader are the columns of `commissioner payouts --format csv` (one row per statement).
var payoutsCSVHeader = []string{"month", "program", "affiliate_id", "currency", "lines", "accruals", "adjustments", "reversals", "total",
	"payable", "method", "carried_forward", "paid_by_run"}

// writePayoutsCSV writes a month's statements as `commissioner payouts --format csv` does: those
// payable now (paid_by_run empty), then those each closing run paid.
func writePayoutsCSV(w http.ResponseWriter, pm PayoutMonth) error {
	var buf bytes.Buffer
	cw := csv.NewWriter(&buf)
	cw.Write(payoutsCSVHeader)
	write := func(sts []engine.Statement, run string) {
		for _, s := range sts {
			cw.Write([]string{pm.Month, s.Program, s.AffiliateID, s.Currency, strconv.Itoa(len(s.Lines)), s.Accruals.Text('f'),
				s.Adjustments.Text('f'), s.Reversals.Text('f'), s.Total.Text('f'), strconv.FormatBool(s.Payable), s.Method, s.CarriedForward, run})
		}
	}
	write(pm.Statements, "")
	for _, run := range pm.Runs {
		write(run.Paid, strconv.FormatInt(run.ID, 10))
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="payouts-`+pm.Month+`.csv"`)
	w.Write(buf.Bytes())
	return nil
}
