package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/engine/audit"
	"github.com/commissioner/commissioner/rules"
)

// whatIfMaxChanges is how many changed orders the result page lists (POST /v1/replay's default);
// every change is counted.
const whatIfMaxChanges = 100

// whatIfData is the what-if page: the form (with what was asked) and, after a run, the result.
type whatIfData struct {
	Policy, Version, From, To, Affiliate string
	Versions                             []versionOption
	Problems                             []problemView // the candidate's compile or lint problems
	Result                               *whatIfResult
}

type versionOption struct {
	Value, Label string // "alibaba/2", "alibaba v2"
	Selected     bool
}

type problemView struct {
	Line, Column int
	Severity     string
	Rule         string
	Message      string
}

// whatIfResult is a replay laid out: the money first, then what changed.
type whatIfResult struct {
	Candidate  string // "alibaba v2 (pasted)"
	Range      string // the orders replayed, in words
	Events     int64
	Evaluated  int64
	Errors     int64
	Changed    int64 // commission changed
	Totals     []groupRow
	Bars       []barRow
	ByRateRule groupTable
	ByMarket   groupTable
	ByBuyer    groupTable
	Changes    []changeRow
	ChangesAll int64
	Truncated  bool // more changed than listed
	BarsHeight int
}

// groupRow is one row of the totals or a breakdown: exact decimal text, the difference signed.
type groupRow struct {
	Key, Currency        string
	Orders, Changed      int64
	Before, After, Diff  string
	Sign                 string // "negative", "positive", "zero"
	OldRule, NewRule     string // the rate-rule breakdown's
	RateRuleMoved        bool
	ChangePercent        string // the totals': the difference in % of before ("" when before is 0)
	changePercent        float64
	hasPercent, isChange bool
}

// groupTable is a breakdown: the rows whose commission changed, and the others (folded).
type groupTable struct{ Changed, Unchanged []groupRow }

// barRow is one currency's bar of the change in % (inline SVG; geometry only, the figures are
// the exact text beside it).
type barRow struct {
	Currency, Percent, Sign string
	Y, X, Width, TextY      int
}

type changeRow struct {
	OrderID, OrderURL, AffiliateID, PlacedAt string
	Currency, Market, Buyer                  string
	OldRule, NewRule, Before, After, Diff    string
	Sign, Cause                              string
}

// GET /ui/whatif: the form.
func (c *Console) whatIfForm(w http.ResponseWriter, r *http.Request, s *session) error {
	q := r.URL.Query()
	d := whatIfData{Version: q.Get("version"), From: q.Get("from"), To: q.Get("to"), Affiliate: q.Get("affiliate")}
	if err := c.versionOptions(r.Context(), &d); err != nil {
		return err
	}
	c.render(w, http.StatusOK, "whatif", page{Title: "What-if", CSRF: s.csrf, SignedIn: true, Data: d})
	return nil
}

func (c *Console) versionOptions(ctx context.Context, d *whatIfData) error {
	sps, err := c.st.PolicyVersions(ctx, "")
	if err != nil {
		return err
	}
	for _, sp := range sps {
		v := fmt.Sprintf("%s/%d", sp.Program, sp.Version)
		d.Versions = append(d.Versions, versionOption{Value: v, Label: fmt.Sprintf("%s v%d", sp.Program, sp.Version), Selected: v == d.Version})
	}
	return nil
}

// POST /ui/whatif: a bounded dry-run replay of the candidate (pasted, or a stored version) on the
// stored orders, as POST /v1/replay runs it; at most MaxReplays at once.
func (c *Console) whatIf(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	f := r.PostForm
	d := whatIfData{Policy: f.Get("policy"), Version: f.Get("version"), From: strings.TrimSpace(f.Get("from")),
		To: strings.TrimSpace(f.Get("to")), Affiliate: strings.TrimSpace(f.Get("affiliate"))}
	if err := c.versionOptions(ctx, &d); err != nil {
		return err
	}
	show := func(status int) error {
		c.render(w, status, "whatif", page{Title: "What-if", CSRF: s.csrf, SignedIn: true, Data: d})
		return nil
	}
	from, err := parseDay("from", d.From)
	if err != nil {
		return err
	}
	to, err := parseDay("to", d.To)
	if err != nil {
		return err
	}
	if !to.IsZero() {
		to = to.AddDate(0, 0, 1) // to is inclusive: the whole day
	}
	if !from.IsZero() && !to.IsZero() && !from.Before(to) {
		return pageError{http.StatusBadRequest, "from must not be after to."}
	}
	var (
		file, source, origin string
	)
	switch {
	case strings.TrimSpace(d.Policy) != "" && d.Version != "":
		return pageError{http.StatusBadRequest, "Paste a candidate policy or pick a stored version, not both."}
	case strings.TrimSpace(d.Policy) != "":
		file, source, origin = "candidate.yaml", d.Policy, "pasted"
	case d.Version != "":
		program, v, ok := strings.Cut(d.Version, "/")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 1 {
			return pageError{http.StatusBadRequest, "version must be a stored version (program/N)."}
		}
		sp, err := c.st.PolicyVersion(ctx, program, n)
		if errors.Is(err, audit.ErrNotFound) {
			return pageError{http.StatusNotFound, fmt.Sprintf("Policy %s v%d is not stored.", program, n)}
		} else if err != nil {
			return err
		}
		file, source, origin = sp.File, string(sp.Source), "stored"
	default:
		return pageError{http.StatusBadRequest, "Paste a candidate policy or pick a stored version."}
	}
	p, problems := rules.Compile(file, []byte(source))
	if p == nil {
		d.Problems = problemViews(problems)
		return show(http.StatusUnprocessableEntity)
	}
	if lint := rules.Lint(p); lint.HasErrors() {
		d.Problems = problemViews(lint)
		return show(http.StatusUnprocessableEntity)
	}
	set, dup := rules.NewSet([]*rules.Policy{p})
	if set == nil {
		d.Problems = problemViews(dup)
		return show(http.StatusUnprocessableEntity)
	}

	select {
	case c.replays <- struct{}{}:
		defer func() { <-c.replays }()
	default:
		w.Header().Set("Retry-After", "5")
		return pageError{http.StatusTooManyRequests, fmt.Sprintf(
			"%d what-if replays are running, the most at once: try again in a few seconds.", c.opts.MaxReplays)}
	}
	ef := engine.EventFilter{Program: p.Program, Affiliate: d.Affiliate, LatestPerOrder: true, From: from, To: to}
	rep, err := engine.Replay(ctx, set, engine.LimitHistory(c.st.ReplayHistory(ef), c.opts.ReplayMaxOrders),
		engine.ReplayOptions{MaxChanges: whatIfMaxChanges})
	switch {
	case errors.Is(err, engine.ErrTooManyEvents):
		return pageError{http.StatusUnprocessableEntity, fmt.Sprintf(
			"The range holds more than %d orders, the most one what-if replays: narrow it (from, to, affiliate), or run `commissioner replay`.",
			c.opts.ReplayMaxOrders)}
	case errors.Is(err, context.DeadlineExceeded):
		return pageError{http.StatusGatewayTimeout, fmt.Sprintf(
			"The replay took longer than %s, the most one what-if runs: narrow the range (from, to, affiliate), or run `commissioner replay`.",
			c.opts.ReplayTimeout)}
	case err != nil:
		return err
	}
	d.Result = newWhatIfResult(rep, fmt.Sprintf("%s v%d (%s)", p.Program, p.Version, origin), d)
	return show(http.StatusOK)
}

func problemViews(ps rules.Problems) []problemView {
	out := make([]problemView, 0, len(ps))
	for _, p := range ps {
		sev := "error"
		if p.Severity == rules.SeverityWarning {
			sev = "warning"
		}
		out = append(out, problemView{Line: p.Line, Column: p.Column, Severity: sev, Rule: p.Rule, Message: p.Message})
	}
	return out
}

func newWhatIfResult(rep *engine.ReplayReport, candidate string, d whatIfData) *whatIfResult {
	res := &whatIfResult{Candidate: candidate, Events: rep.Events, Evaluated: rep.Evaluated, Changed: rep.CommissionChanged,
		ChangesAll: rep.ChangesTotal}
	for _, n := range rep.Errors {
		res.Errors += n
	}
	rng := "every stored order"
	switch {
	case d.From != "" && d.To != "":
		rng = "orders placed from " + d.From + " to " + d.To
	case d.From != "":
		rng = "orders placed from " + d.From
	case d.To != "":
		rng = "orders placed up to " + d.To
	}
	if d.Affiliate != "" {
		rng += " of affiliate " + d.Affiliate
	}
	res.Range = rng + " (the latest event of each)"
	for _, t := range rep.Totals {
		g := newGroupRow(engine.ReplayGroup{Currency: t.Currency, Orders: t.Orders, Changed: t.Changed, Before: t.Before, After: t.After, Diff: t.Diff})
		if t.Before.Sign() != 0 {
			var pct apd.Decimal
			ctx := apd.BaseContext.WithPrecision(34)
			ctx.Quo(&pct, &t.Diff, &t.Before)
			ctx.Mul(&pct, &pct, apd.New(100, 0))
			ctx.Quantize(&pct, &pct, -2)
			g.ChangePercent = signed(&pct) + "%"
			g.changePercent, _ = pct.Float64() // the bar's length only
			g.hasPercent = true
		}
		res.Totals = append(res.Totals, g)
	}
	res.Bars = bars(res.Totals)
	res.BarsHeight = len(res.Bars) * barHeight
	for _, g := range rep.ByRateRule {
		row := newGroupRow(g.ReplayGroup)
		row.OldRule, row.NewRule, row.RateRuleMoved = ruleName(g.Old), ruleName(g.New), g.Old != g.New
		res.ByRateRule.add(row)
	}
	for _, g := range rep.ByMarket {
		res.ByMarket.add(newGroupRow(g))
	}
	for _, g := range rep.ByBuyer {
		res.ByBuyer.add(newGroupRow(g))
	}
	for i := range rep.Changes {
		ch := &rep.Changes[i]
		row := changeRow{OrderID: ch.OrderID, OrderURL: orderPath(ch.OrderID), AffiliateID: ch.AffiliateID,
			PlacedAt: ch.PlacedAt.UTC().Format(time.RFC3339), Currency: ch.Currency, Market: ch.Market, Buyer: "returning",
			NewRule: ruleName(ch.New.RateRule), After: ch.New.Commission.Text('f'), Cause: ch.Cause.String()}
		if ch.NewBuyer {
			row.Buyer = "new"
		}
		var diff apd.Decimal
		if ch.Old == nil {
			row.OldRule, row.Before = ruleName(engine.NoRecord), "—"
			diff.Set(&ch.New.Commission)
		} else {
			row.OldRule, row.Before = ruleName(ch.Old.RateRule), ch.Old.Commission.Text('f')
			engine.SumContext.Sub(&diff, &ch.New.Commission, &ch.Old.Commission)
		}
		row.Diff, row.Sign = signed(&diff), signOf(&diff)
		res.Changes = append(res.Changes, row)
	}
	res.Truncated = res.ChangesAll > int64(len(res.Changes))
	return res
}

func (t *groupTable) add(g groupRow) {
	if g.Changed > 0 || g.isChange {
		t.Changed = append(t.Changed, g)
	} else {
		t.Unchanged = append(t.Unchanged, g)
	}
}

func newGroupRow(g engine.ReplayGroup) groupRow {
	return groupRow{Key: g.Key, Currency: g.Currency, Orders: g.Orders, Changed: g.Changed, Before: g.Before.Text('f'),
		After: g.After.Text('f'), Diff: signed(&g.Diff), Sign: signOf(&g.Diff), isChange: g.Diff.Sign() != 0}
}

// ruleName is a rate rule as the page shows it: "" is not qualified.
func ruleName(r string) string {
	if r == "" {
		return "(not qualified)"
	}
	return r
}

// signed prints a difference with its sign: +1.50, -0.25, 0.00.
func signed(d *apd.Decimal) string {
	s := d.Text('f')
	if d.Sign() > 0 {
		return "+" + s
	}
	return s
}

func signOf(d *apd.Decimal) string {
	switch d.Sign() {
	case -1:
		return "negative"
	case 1:
		return "positive"
	}
	return "zero"
}

// The bars' geometry: a zero line in the middle of barWidth, each bar a row barHeight high.
const (
	barWidth  = 400
	barHeight = 24
)

// bars lays out one bar per currency with a change in %: its length relative to the largest.
func bars(totals []groupRow) []barRow {
	largest := 0.0
	for _, t := range totals {
		if t.hasPercent && abs(t.changePercent) > largest {
			largest = abs(t.changePercent)
		}
	}
	var out []barRow
	for _, t := range totals {
		if !t.hasPercent {
			continue
		}
		b := barRow{Currency: t.Currency, Percent: t.ChangePercent, Sign: t.Sign, Y: len(out) * barHeight, X: barWidth / 2}
		b.TextY = b.Y + barHeight/2 + 4
		if largest > 0 {
			b.Width = int(abs(t.changePercent) / largest * (barWidth/2 - 10))
		}
		if t.changePercent < 0 {
			b.X -= b.Width
		}
		out = append(out, b)
	}
	return out
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}
