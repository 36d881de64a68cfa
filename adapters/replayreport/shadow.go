package replayreport

// The shadow report laid out for people: what a shadow version (stage: shadow) decided beside the
// live decisions of the same events (engine.ShadowReport), in the replay report's shapes — the
// live decisions as before, the shadow as after — so the console's shadow page and `commissioner
// shadow report --format html` show one view through one template body ("shadow-report").

import (
	"fmt"
	"html/template"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

var shadowSides = Sides{OldRule: "Live rule", NewRule: "Shadow rule", Before: "Live", After: "Shadow", old: "live", new: "shadow"}

// ShadowOptions say how a shadow report is shown.
type ShadowOptions struct {
	// Range says which orders the report covers, in words: "orders placed from 2025-10-01 to
	// 2025-10-31". "": ShadowRange of the report's filter.
	Range string
	// OrderURL is the page of an order's decisions (the console's). Nil: orders are not linked,
	// and the report says which command explains one (commissioner explain).
	OrderURL func(orderID string) string
	// PolicyURL is the page of a live policy version (the console's); nil: versions are not
	// linked.
	PolicyURL func(program string, version int) string
	// MoreOrders says how to list more diverging orders when only some are: "--orders N lists
	// more". Empty: nothing is said.
	MoreOrders string
	// Loaded are the shadow versions loaded now (the service's, or the policy directory's): a
	// stored version with the same program, version and digest shows their sample. Nil: no
	// sample is known.
	Loaded []*rules.Policy
}

// ShadowView is a shadow report laid out for reading: the money first (live against shadow per
// currency), the qualification matrix, the breakdowns with the unchanged rows folded, the orders
// that diverged most, then the events seen and the versions. Every amount is exact decimal text.
// Build it with NewShadow.
type ShadowView struct {
	Title            string // "Shadow alibaba v2 against the live decisions"
	Program, Version string // "alibaba", "v2"
	Range            string
	Events           int64 // shadow outcomes read: every event
	Compared         int64 // orders compared: each order's latest event
	Errors           int64 // of those, the orders the shadow could not decide (in no total)
	Diverged         int64 // compared orders the shadow decided otherwise in any way
	Changed          int64 // of those, the orders whose commission differs

	// Totals are the currencies whose commission differs, TotalsUnchanged the others.
	Totals          []Row
	TotalsUnchanged []Row
	TotalsChart     Chart

	Matrix             Matrix
	Counts             []Count
	QualificationChart Chart

	// Breakdowns: by rate rule (live → shadow), by the first rule whose outcome differs, by buyer
	// market, by new vs returning buyer, and the affiliates with the largest changes.
	Breakdowns []Breakdown

	Diverging      []Divergence // the orders listed, the largest commission differences first
	DivergingAll   int64        // every diverged order, counted
	MoreOrders     string
	Linked         bool   // the orders link to their decision page
	ProgramArg     string // the program as a shell argument
	ExplainExample string // without links: the command that explains the first listed order

	ErrorKinds   string
	ErrorSamples []ErrorSample

	Shadows []ShadowVersionRow
	Live    []LiveVersionRow
}

// Truncated reports whether more orders diverged than are listed.
func (v *ShadowView) Truncated() bool { return v.DivergingAll > int64(len(v.Diverging)) }

// Matrix is the compared orders by live × shadow qualification, with the margins.
type Matrix struct {
	BothQualified, LiveOnly, ShadowOnly, Neither int64
	LiveQualified, LiveNot                       int64 // the rows' totals
	ShadowQualified, ShadowNot                   int64 // the columns' totals
	Total                                        int64
}

// Divergence is one order the shadow decided otherwise: both outcomes, the money, the first rule
// whose outcome differs.
type Divergence struct {
	OrderID, OrderURL, Program, AffiliateID      string
	PlacedAt                                     string // RFC 3339, UTC
	PlacedDay, PlacedClock                       string
	Currency, Market, Buyer                      string
	Live, Shadow                                 string // "v1 selected_returning 6%", "v2 not qualified (completed)"
	LiveCommission, ShadowCommission, Diff, Sign string
	Cause                                        string
}

// ShadowVersionRow is a shadow version (and digest) the report read outcomes of.
type ShadowVersionRow struct {
	Program, Version, Digest string
	Events, Orders           int64
	Sample                   string // "10% of the orders", "every order", or why it is not known
}

// LiveVersionRow is a live version that decided the compared orders.
type LiveVersionRow struct {
	Program, Version, Digest, URL string
	Orders                        int64
}

// NewShadow lays out rep, the report of the outcomes f selected (its program and version
// resolved: engine.ResolveShadow). rep.Diverging are the diverging orders listed.
func NewShadow(rep *engine.ShadowReport, f engine.ShadowFilter, opts ShadowOptions) *ShadowView {
	v := &ShadowView{Title: ShadowTitle(f), Program: f.Program, Version: "v" + strconv.Itoa(f.Version), Range: opts.Range,
		Events: rep.Events, Compared: rep.Compared, Diverged: rep.Diverged, Changed: rep.CommissionChanged,
		DivergingAll: rep.DivergingTotal, MoreOrders: opts.MoreOrders, Linked: opts.OrderURL != nil}
	if v.Range == "" {
		v.Range = ShadowRange(f)
	}
	for _, n := range rep.Errors {
		v.Errors += n
	}
	v.setShadowTotals(rep)
	v.setMatrix(rep)
	v.Breakdowns = []Breakdown{rateRuleBreakdown(rep.ByRateRule, shadowSides), causeBreakdown(rep.ByCause),
		marketBreakdown(rep.ByMarket, shadowSides), buyerBreakdown(rep.ByBuyer, shadowSides), affiliateBreakdown(rep.TopAffiliates, shadowSides)}
	v.setDiverging(rep, opts.OrderURL)
	v.ProgramArg = shellQuote(f.Program)
	if !v.Linked && len(v.Diverging) > 0 {
		v.ExplainExample = "commissioner explain " + shellQuote(v.Diverging[0].OrderID) + " --program " + v.ProgramArg
	}
	v.ErrorKinds = ErrorKinds(rep.Errors)
	for _, e := range rep.ErrorSamples {
		v.ErrorSamples = append(v.ErrorSamples, ErrorSample{OrderID: e.OrderID, EventID: e.EventID, Kind: e.Kind, Reason: e.Reason})
	}
	for _, s := range rep.Shadows {
		v.Shadows = append(v.Shadows, ShadowVersionRow{Program: s.Program, Version: "v" + strconv.Itoa(s.Version), Digest: s.Digest,
			Events: s.Events, Orders: s.Orders, Sample: sampleOf(opts.Loaded, s)})
	}
	for _, r := range rep.Live {
		row := LiveVersionRow{Program: r.Program, Version: "v" + strconv.Itoa(r.Version), Digest: r.Digest, Orders: r.Orders}
		if opts.PolicyURL != nil {
			row.URL = opts.PolicyURL(r.Program, r.Version)
		}
		v.Live = append(v.Live, row)
	}
	return v
}

// ShadowTitle names a report of the outcomes f selects: "Shadow alibaba v2 against the live
// decisions".
func ShadowTitle(f engine.ShadowFilter) string {
	return fmt.Sprintf("Shadow %s v%d against the live decisions", f.Program, f.Version)
}

// ShadowRange says which orders f selects, by their time placed ([From, To), UTC): "every
// stored order", "orders placed from 2025-10-01T00:00:00Z to before 2025-11-01T00:00:00Z".
func ShadowRange(f engine.ShadowFilter) string {
	from, to := f.From.UTC().Format(time.RFC3339), f.To.UTC().Format(time.RFC3339)
	switch {
	case !f.From.IsZero() && !f.To.IsZero():
		return "orders placed from " + from + " to before " + to
	case !f.From.IsZero():
		return "orders placed from " + from
	case !f.To.IsZero():
		return "orders placed before " + to
	}
	return "every stored order"
}

// WriteShadowHTML writes rep, the report of the outcomes f selected, as one standalone HTML page
// titled ShadowTitle(f): the report's body (NewShadow) with the page's and the body's CSS inline,
// no script, nothing fetched. Orders are linked only when opts.OrderURL is set.
func WriteShadowHTML(w io.Writer, rep *engine.ShadowReport, f engine.ShadowFilter, opts ShadowOptions) error {
	v := NewShadow(rep, f, opts)
	return standalone.ExecuteTemplate(w, "shadow-page", struct {
		Title string
		CSS   template.CSS
		View  *ShadowView
	}{v.Title, template.CSS(pageCSS + string(reportCSS)), v})
}

func (v *ShadowView) setShadowTotals(rep *engine.ShadowReport) {
	v.Totals, v.TotalsUnchanged, v.TotalsChart = totalsSection(rep.Totals,
		"The shadow's change in commission by currency, in % of the live commission",
		"The shadow pays what the live decisions pay, in every currency.")
}

func (v *ShadowView) setMatrix(rep *engine.ShadowReport) {
	m := rep.Matrix
	v.Matrix = Matrix{BothQualified: m.BothQualified, LiveOnly: m.LiveOnly, ShadowOnly: m.ShadowOnly, Neither: m.NeitherQualify,
		LiveQualified: m.BothQualified + m.LiveOnly, LiveNot: m.ShadowOnly + m.NeitherQualify,
		ShadowQualified: m.BothQualified + m.ShadowOnly, ShadowNot: m.LiveOnly + m.NeitherQualify}
	v.Matrix.Total = v.Matrix.LiveQualified + v.Matrix.LiveNot
	n := func(x int64) string { return strconv.FormatInt(x, 10) }
	v.Counts = []Count{
		{Label: "Orders compared", Value: n(rep.Compared), Note: "each order's latest event the shadow decided"},
		{Label: "not decidable by the shadow", Value: n(v.Errors), Note: ErrorKinds(rep.Errors), Part: true},
		{Label: "Newly qualified", Value: n(m.ShadowOnly), Note: "the live decision did not qualify them, the shadow does"},
		{Label: "Newly disqualified", Value: n(m.LiveOnly), Note: "the live decision qualified them, the shadow does not"},
		{Label: "Decision changed", Value: n(rep.Diverged), Note: "in any way"},
		{Label: "Commission changed", Value: n(rep.CommissionChanged)},
	}
	var bars []bar
	if m.ShadowOnly > 0 || m.LiveOnly > 0 {
		bars = []bar{
			{Label: "newly qualified", Value: float64(m.ShadowOnly), Text: n(m.ShadowOnly), Sign: "positive"},
			{Label: "newly disqualified", Value: -float64(m.LiveOnly), Text: n(m.LiveOnly), Sign: "negative"},
		}
	}
	v.QualificationChart = newChart("qualification-bars", "Qualification changes, live → shadow (orders)", bars)
}

// causeBreakdown is the diverged orders by the first rule whose outcome differs, charted by
// orders over every currency.
func causeBreakdown(gs []engine.ReplayGroup) Breakdown {
	b := keyedBreakdown("by-cause", "By the first rule whose outcome differs", "First differing rule", gs, shadowSides)
	b.Note = "The diverged orders only; a rule whose outcome differs but pays the same is folded with the unchanged rows."
	type count struct{ orders, changed int64 }
	counts := map[string]*count{}
	for _, g := range gs {
		c := counts[g.Key]
		if c == nil {
			c = &count{}
			counts[g.Key] = c
		}
		c.orders += g.Orders
		c.changed += g.Changed
	}
	var bars []bar
	for _, k := range sortedKeys(counts) {
		c := counts[k]
		bars = append(bars, bar{Label: k, Key: k, Value: float64(c.orders), Sign: "count",
			Text: plural(int(c.orders), "order", "orders") + ", " + strconv.FormatInt(c.changed, 10) + " with another commission"})
	}
	b.Chart = newChart("cause-bars", "Diverged orders by the first rule whose outcome differs", bars)
	return b
}

func (v *ShadowView) setDiverging(rep *engine.ShadowReport, orderURL func(string) string) {
	for i := range rep.Diverging {
		ch := &rep.Diverging[i]
		d := Divergence{OrderID: ch.OrderID, Program: ch.Program, AffiliateID: ch.AffiliateID, PlacedAt: ch.PlacedAt.UTC().Format(time.RFC3339),
			Currency: ch.Currency, Market: ch.Market, Buyer: "returning", Live: VerdictLabel(ch.Old), Shadow: VerdictLabel(&ch.New),
			ShadowCommission: ch.New.Commission.Text('f'), Cause: ch.Cause.String()}
		d.PlacedDay, d.PlacedClock, _ = strings.Cut(d.PlacedAt, "T")
		d.PlacedClock = "T" + d.PlacedClock
		if ch.NewBuyer {
			d.Buyer = "new"
		}
		if orderURL != nil {
			d.OrderURL = orderURL(ch.OrderID)
		}
		var diff apd.Decimal
		if ch.Old == nil {
			d.LiveCommission = "—"
			diff.Set(&ch.New.Commission)
		} else {
			d.LiveCommission = ch.Old.Commission.Text('f')
			if _, err := engine.SumContext.Sub(&diff, &ch.New.Commission, &ch.Old.Commission); err != nil {
				d.Diff, d.Sign = "?", "zero"
			}
		}
		if d.Diff == "" {
			d.Diff, d.Sign = signed(&diff), signOf(&diff)
		}
		v.Diverging = append(v.Diverging, d)
	}
}

// sampleOf says which share of the orders the stored shadow version s decides, from the loaded
// version of the same program, version and digest.
func sampleOf(loaded []*rules.Policy, s engine.ShadowVersion) string {
	for _, p := range loaded {
		if p.Program == s.Program && p.Version == s.Version && p.Digest == s.Digest {
			return Sample(p)
		}
	}
	return "not known: not among the shadow versions loaded"
}

// Sample says which share of the orders the shadow version p decides: "every order", "10% of
// the orders (sample: 0.1)".
func Sample(p *rules.Policy) string {
	if p.Sample == nil {
		return "every order"
	}
	var pct apd.Decimal
	pct.Set(p.Sample)
	pct.Exponent += 2 // × 100
	pct.Reduce(&pct)
	return pct.Text('f') + "% of the orders (sample: " + p.Sample.Text('f') + ")"
}
