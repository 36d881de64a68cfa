package console

// The health page's view of the running service (Options.Ops) and the two actions the console
// takes: starting audit verify (any signed-in user: it changes no money) and closing a payout
// month (an operator only).

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/engine/audit"
)

// maxPolicyLoads is how many policy loads the health page lists.
const maxPolicyLoads = 20

type opsView struct {
	Loads               []loadRow
	Lag                 []PartitionLag
	LagErr              string // the stream could not be asked
	Pending, AckPending uint64 // the partitions' sums
}

type loadRow struct {
	At, Outcome, Detail string
	Applied             bool
}

type verifyView struct {
	Available bool   // the service can run audit verify (Options.Ops)
	Running   string // when the running one started; "" when none runs
	Last      *verifyRunRow
}

type verifyRunRow struct {
	ID                            int64
	OK                            bool
	Verdict, By, Program          string
	StartedAt, FinishedAt, Took   string
	Decisions, Reproduced, Orders int64
	Findings, Checkpoints         int
	ByKind                        []string // "kind: n", by kind
	Err                           string
}

// opsView asks the service for its policy loads and stream lag; nil without Options.Ops. A lag
// that cannot be read is shown as such: the rest of the page still serves.
func (c *Console) opsView(ctx context.Context) *opsView {
	if c.opts.Ops == nil {
		return nil
	}
	v := &opsView{}
	for i, l := range c.opts.Ops.PolicyLoads() {
		if i == maxPolicyLoads {
			break
		}
		row := loadRow{At: l.At.UTC().Format(time.RFC3339), Applied: l.Applied, Outcome: "refused", Detail: l.Err}
		if l.Applied {
			row.Outcome, row.Detail = "applied", strings.Join(l.Versions, ", ")
		}
		v.Loads = append(v.Loads, row)
	}
	lag, err := c.opts.Ops.Lag(ctx)
	if err != nil {
		v.LagErr = err.Error()
	}
	v.Lag = lag
	for _, p := range lag {
		v.Pending += p.Pending
		v.AckPending += p.AckPending
	}
	return v
}

// verifyView is the last recorded audit verify and whether one is running.
func (c *Console) verifyView(ctx context.Context) (verifyView, error) {
	v := verifyView{Available: c.opts.Ops != nil}
	if v.Available {
		if t := c.opts.Ops.VerifyRunning(); !t.IsZero() {
			v.Running = t.UTC().Format(time.RFC3339)
		}
	}
	run, err := c.st.LastVerifyRun(ctx)
	switch {
	case errors.Is(err, audit.ErrNotFound):
		return v, nil
	case err != nil:
		return v, err
	}
	row := &verifyRunRow{ID: run.ID, OK: run.OK(), By: run.By, Program: run.Program, StartedAt: run.StartedAt.UTC().Format(time.RFC3339),
		FinishedAt: run.FinishedAt.UTC().Format(time.RFC3339), Took: run.FinishedAt.Sub(run.StartedAt).Round(time.Millisecond).String(),
		Decisions: run.Decisions, Reproduced: run.Reproduced, Orders: run.Orders, Findings: run.Findings, Checkpoints: run.Checkpoints, Err: run.Err}
	switch {
	case run.Err != "":
		row.Verdict = "did not finish"
	case run.Findings > 0:
		row.Verdict = fmt.Sprintf("FAILED: %d finding(s)", run.Findings)
	default:
		row.Verdict = "OK: nothing found"
	}
	for _, k := range slices.Sorted(maps.Keys(run.ByKind)) {
		row.ByKind = append(row.ByKind, fmt.Sprintf("%s: %d", k, run.ByKind[k]))
	}
	v.Last = row
	return v, nil
}

// startVerify starts audit verify in the background (POST /ui/health/verify) and returns to
// the health page, which shows it running and, once recorded, its result.
func (c *Console) startVerify(w http.ResponseWriter, r *http.Request, s *session) error {
	if c.opts.Ops == nil {
		return pageError{http.StatusNotImplemented, "This console is not served by a running service: run `commissioner audit verify`."}
	}
	c.opts.Ops.StartVerify("console " + s.role()) // one running already: the page shows it
	http.Redirect(w, r, "/ui/health#verify", http.StatusSeeOther)
	return nil
}

// closePayouts closes a month (POST /ui/payouts/{month}/close): an operator only, a month that
// has ended, and a confirmation that names the month.
func (c *Console) closePayouts(w http.ResponseWriter, r *http.Request, s *session) error {
	if err := needOperator(s, "closing a payout month"); err != nil {
		return err
	}
	if c.opts.Payouts == nil {
		return pageError{http.StatusNotImplemented, "This console cannot close payout months: run `commissioner payouts --close`."}
	}
	month := r.PathValue("month")
	m, asOf, err := engine.MonthBounds(month)
	if err != nil || m != month {
		return pageError{http.StatusBadRequest, fmt.Sprintf("%q is not a month such as 2026-10.", month)}
	}
	if c.opts.Now().Before(asOf) {
		return pageError{http.StatusConflict, fmt.Sprintf("%s has not ended: it can be closed from %s.", m, asOf.UTC().Format(time.RFC3339))}
	}
	if r.PostForm.Get("confirm") != m {
		return pageError{http.StatusBadRequest, fmt.Sprintf("To close %s, type the month (%s) in the confirmation field.", m, m)}
	}
	if _, err := c.opts.Payouts.ClosePayoutMonth(r.Context(), m); err != nil {
		return err
	}
	c.opts.Log.Info("console: payout month closed", "month", m)
	http.Redirect(w, r, payoutsPath(m), http.StatusSeeOther)
	return nil
}
