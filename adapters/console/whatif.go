package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/commissioner/commissioner/adapters/replayreport"
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
	Problems                             []problemView      // the candidate's compile or lint problems
	Result                               *replayreport.View // after a run: the replay report's body
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
	set = set.WithShadowsLive() // a shadow version's text is priced as if it were in force, as replay --policy does

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
	d.Result = whatIfReport(rep, fmt.Sprintf("%s v%d (%s)", p.Program, p.Version, origin), d)
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

// whatIfReport lays out a what-if's replay as `replay --format html` does (one view model, one
// template body): the changed orders link to their decision pages.
func whatIfReport(rep *engine.ReplayReport, candidate string, d whatIfData) *replayreport.View {
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
	return replayreport.New(rep, replayreport.Options{
		Candidate:   candidate,
		Range:       rng + " (the latest event of each)",
		OrderURL:    orderPath,
		MoreChanges: "commissioner replay --format csv lists them all",
		Warnings:    replayreport.ReportWarnings(rep),
	})
}

// GET /ui/assets/replay-report.css: the stylesheet of the replay report's body, the what-if
// result's (replayreport.CSS; the standalone report inlines the same).
func replayReportCSS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Write(replayreport.CSS())
}
