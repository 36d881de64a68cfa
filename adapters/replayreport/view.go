package replayreport

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/engine"
)

// Options say how a report is shown and what its reader is told beside the figures.
type Options struct {
	// Candidate names the candidate replayed: "alibaba v2 (pasted)", "policies/alibaba/v2.yaml".
	Candidate string
	// Range says which orders were replayed, in words: "every stored order (the latest event of
	// each)".
	Range string
	// OrderURL is the page of an order's decisions (the console's). Nil: orders are not linked,
	// and the report says which command explains one (commissioner explain).
	OrderURL func(orderID string) string
	// MoreChanges says how to list every changed order when the report lists only some: "--changes
	// N or --format csv lists more". Empty: nothing is said.
	MoreChanges string
	// Warnings are what the reader must know about how the report was made (the candidate's
	// examples that fail, stream messages skipped…); see also ReportWarnings.
	Warnings []string
}

// View is a replay laid out for reading: the money first, then what changed, the unchanged folded.
// Every amount is exact decimal text. Build it with New.
type View struct {
	Candidate, Range string
	Events           int64 // events read
	Evaluated        int64 // events the candidate decided
	Errors           int64 // events it could not decide (in no total)
	Changed          int64 // events whose commission changed
	SameVersion      int64 // events replayed with the version that recorded them
	Drift            int64 // of those, the ones that did not reproduce
	Warnings         []string

	// Totals are the currencies whose commission changed, TotalsUnchanged the others: every
	// currency's total is shown, the changed first.
	Totals          []Row
	TotalsUnchanged []Row
	TotalsChart     Chart // the change in % of the currencies whose commission changed

	Counts             []Count
	QualificationChart Chart

	// Breakdowns: by rate rule, by buyer market, by new vs returning buyer, and the affiliates
	// with the largest changes.
	Breakdowns []Breakdown

	Changes        []Change // the changed orders listed (the first by time placed)
	ChangesAll     int64    // every changed order, counted
	MoreChanges    string
	Linked         bool   // the orders link to their decision page
	ExplainExample string // without links: the command that explains the first listed order

	Drifted      []Drifted
	ErrorKinds   string // "invalid 2, rule_error 1"
	ErrorSamples []ErrorSample

	Candidates []CandidateVersion
	Recorded   []RecordedVersion
}

// Truncated reports whether more orders changed than are listed.
func (v *View) Truncated() bool { return v.ChangesAll > int64(len(v.Changes)) }

// Row is one row of the totals or of a breakdown: exact decimal text, the difference signed.
type Row struct {
	Key, Currency       string
	Orders, Changed     int64 // orders, and those whose commission changed
	Before, After, Diff string
	Sign                string // of the difference: "negative", "positive" or "zero"
	Percent             string // the difference in % of before, signed ("" when before is 0)
	// The rate-rule breakdown's: the recorded and the candidate rule, whether they differ.
	OldRule, NewRule string
	Moved            bool
	Rules            bool // a rate-rule row (its key is the two rules)

	percent    float64 // Percent, for a bar's length only
	hasPercent bool
}

// Count is one line of what changed: a label, a count, a note ("drift: 0"); Part: a part of the
// line above.
type Count struct {
	Label, Value, Note string
	Part               bool
}

// Breakdown is one table of the report: a chart of the rows that changed, those rows, and the
// others (folded).
type Breakdown struct {
	ID, Title string // the table's id (its folded rows': ID-unchanged) and heading
	KeyName   string // the key's column: "Market"; "" for the rate-rule breakdown
	Rules     bool   // the rate-rule breakdown: two key columns, recorded and candidate rule
	Sides     Sides  // the heads of the two sides' columns
	Note      string
	Chart     Chart
	Changed   []Row
	Unchanged []Row
}

// Change is one changed order.
type Change struct {
	OrderID, OrderURL, AffiliateID string
	PlacedAt                       string // RFC 3339, UTC
	PlacedDay, PlacedClock         string // PlacedAt cut before its T: "2025-10-01", "T05:17:14Z"
	Currency, Market, Buyer        string
	OldRule, NewRule               string
	Before, After, Diff, Sign      string
	Cause                          string
}

// Drifted is an order replayed with its recorded version that did not reproduce.
type Drifted struct {
	OrderID, EventID, Recorded, Replayed, Commission, DiffersIn string
}

// ErrorSample is an order the candidate could not decide.
type ErrorSample struct{ OrderID, EventID, Kind, Reason string }

// CandidateVersion is a version of the candidate, and how it chose the orders it decided.
type CandidateVersion struct {
	Program, Version, Digest, File, How string
	Orders                              int64
}

// RecordedVersion is a version that decided the recorded decisions compared with.
type RecordedVersion struct {
	Program, Version, Digest string
	Orders                   int64
}

// Sides name the two sides a report compares, in its column heads and its captions: a replay's
// recorded decisions and candidate, a shadow report's live decisions and shadow version.
type Sides struct {
	OldRule, NewRule string // the rate-rule breakdown's key columns: "Recorded rule", "Candidate rule"
	Before, After    string // the money columns: "Before", "After"
	old, new         string // in captions: "recorded", "candidate"
}

var replaySides = Sides{OldRule: "Recorded rule", NewRule: "Candidate rule", Before: "Before", After: "After", old: "recorded", new: "candidate"}

// New lays out rep. rep.Changes are the changed orders listed (nil: none, though
// rep.ChangesTotal counts them).
func New(rep *engine.ReplayReport, opts Options) *View {
	v := &View{Candidate: opts.Candidate, Range: opts.Range, Events: rep.Events, Evaluated: rep.Evaluated,
		Changed: rep.CommissionChanged, SameVersion: rep.SameVersion, Drift: rep.Drift, Warnings: opts.Warnings,
		ChangesAll: rep.ChangesTotal, MoreChanges: opts.MoreChanges, Linked: opts.OrderURL != nil}
	for _, n := range rep.Errors {
		v.Errors += n
	}
	v.setTotals(rep)
	v.setCounts(rep)
	v.Breakdowns = []Breakdown{rateRuleBreakdown(rep.ByRateRule, replaySides), marketBreakdown(rep.ByMarket, replaySides),
		buyerBreakdown(rep.ByBuyer, replaySides), affiliateBreakdown(rep.TopAffiliates, replaySides)}
	v.setChanges(rep, opts.OrderURL)
	for i := range rep.Drifted {
		c := &rep.Drifted[i]
		v.Drifted = append(v.Drifted, Drifted{OrderID: c.OrderID, EventID: c.EventID, Recorded: VerdictLabel(c.Old),
			Replayed: VerdictLabel(&c.New), Commission: CommissionChange(c), DiffersIn: strings.Join(c.DriftFields, ", ")})
	}
	v.ErrorKinds = ErrorKinds(rep.Errors)
	for _, e := range rep.ErrorSamples {
		v.ErrorSamples = append(v.ErrorSamples, ErrorSample{OrderID: e.OrderID, EventID: e.EventID, Kind: e.Kind, Reason: e.Reason})
	}
	for _, c := range rep.Candidates {
		how := "in force from " + c.EffectiveFrom.UTC().Format(time.RFC3339)
		if c.Pinned {
			how = "applied to every order (effective_from " + c.EffectiveFrom.UTC().Format(time.RFC3339) + " not applied)"
		}
		v.Candidates = append(v.Candidates, CandidateVersion{Program: c.Program, Version: "v" + strconv.Itoa(c.Version),
			Digest: c.Digest, File: c.File, How: how, Orders: c.Orders})
	}
	for _, r := range rep.Recorded {
		v.Recorded = append(v.Recorded, RecordedVersion{Program: r.Program, Version: "v" + strconv.Itoa(r.Version), Digest: r.Digest, Orders: r.Orders})
	}
	return v
}

// ReportWarnings are what the reader of a report must know about how rep was made: affiliate
// months assumed empty, versions whose text changed without a new number.
func ReportWarnings(rep *engine.ReplayReport) []string {
	var warnings []string
	if rep.AffiliateAssumed > 0 {
		warnings = append(warnings, fmt.Sprintf("%d orders were decided by a candidate version that reads the affiliate's month (affiliate.*) with none recorded for them: their month counted as empty", rep.AffiliateAssumed))
	}
	if rep.DigestMismatch > 0 {
		warnings = append(warnings, fmt.Sprintf("%d orders were recorded by a version with the candidate's number but another digest: that policy text changed without a new version", rep.DigestMismatch))
	}
	return warnings
}

func (v *View) setTotals(rep *engine.ReplayReport) {
	v.Totals, v.TotalsUnchanged, v.TotalsChart = totalsSection(rep.Totals,
		"Change in commission by currency, in % of the recorded commission", "The commission changed in no currency.")
}

// totalsSection is a report's totals per currency: the rows of the currencies whose commission
// changed, those of the others, and the chart of the change in % (titled title; empty its text
// when no currency changed). Replay and shadow reports show their totals alike.
func totalsSection(totals []engine.CurrencyTotal, title, empty string) (changed, unchanged []Row, chart Chart) {
	var bars []bar
	for _, t := range totals {
		r := newRow(engine.ReplayGroup{Key: t.Currency, Currency: t.Currency, Orders: t.Orders, Changed: t.Changed,
			Before: t.Before, After: t.After, Diff: t.Diff})
		if r.changed() {
			changed = append(changed, r)
			b := percentBar(r, r.Currency)
			b.Key = "" // the currency is the key
			bars = append(bars, b)
		} else {
			unchanged = append(unchanged, r)
		}
	}
	chart = newChart("change-bars", title, bars)
	if n := len(unchanged); n > 0 {
		chart.Note = plural(n, "currency", "currencies") + " unchanged, not charted"
	}
	if len(bars) == 0 && len(totals) > 0 {
		chart.Empty = empty
	}
	return changed, unchanged, chart
}

func (v *View) setCounts(rep *engine.ReplayReport) {
	n := func(x int64) string { return strconv.FormatInt(x, 10) }
	v.Counts = []Count{
		{Label: "Orders evaluated", Value: n(rep.Evaluated)},
		{Label: "with no recorded decision", Value: n(rep.Unrecorded), Note: "no commission before", Part: true},
		{Label: "not decidable by the candidate", Value: n(v.Errors), Note: ErrorKinds(rep.Errors), Part: true},
		{Label: "Newly qualified", Value: n(rep.NewlyQualified)},
		{Label: "Newly disqualified", Value: n(rep.NewlyDisqualified)},
		{Label: "Decision changed", Value: n(rep.Changed), Note: "in any way"},
		{Label: "Commission changed", Value: n(rep.CommissionChanged)},
	}
	if rep.SameVersion > 0 || rep.Drift > 0 {
		v.Counts = append(v.Counts, Count{Label: "Replayed with their recorded version", Value: n(rep.SameVersion), Note: "drift: " + n(rep.Drift)})
	}
	var bars []bar
	if rep.NewlyQualified > 0 || rep.NewlyDisqualified > 0 {
		bars = []bar{
			{Label: "newly qualified", Value: float64(rep.NewlyQualified), Text: n(rep.NewlyQualified), Sign: "positive"},
			{Label: "newly disqualified", Value: -float64(rep.NewlyDisqualified), Text: n(rep.NewlyDisqualified), Sign: "negative"},
		}
	}
	v.QualificationChart = newChart("qualification-bars", "Qualification changes (orders)", bars)
}

func rateRuleBreakdown(gs []engine.RateRuleGroup, s Sides) Breakdown {
	b := Breakdown{ID: "by-rate-rule", Title: "By rate rule (" + s.old + " → " + s.new + ")", Rules: true, Sides: s}
	// the chart: the orders of each move that changed, over every currency
	type move struct{ orders, changed int64 }
	moves := map[string]*move{}
	for _, g := range gs {
		r := newRow(g.ReplayGroup)
		r.OldRule, r.NewRule, r.Moved, r.Rules = ruleName(g.Old), ruleName(g.New), g.Old != g.New, true
		r.Key = r.OldRule + " → " + r.NewRule
		if r.changed() || r.Moved {
			b.Changed = append(b.Changed, r)
			m := moves[r.Key]
			if m == nil {
				m = &move{}
				moves[r.Key] = m
			}
			m.orders += r.Orders
			m.changed += r.Changed
		} else {
			b.Unchanged = append(b.Unchanged, r)
		}
	}
	var bars []bar
	for _, k := range sortedKeys(moves) {
		m := moves[k]
		bars = append(bars, bar{Label: k, Value: float64(m.orders), Sign: "count",
			Text: plural(int(m.orders), "order", "orders") + ", " + strconv.FormatInt(m.changed, 10) + " with another commission"})
	}
	b.Chart = newChart("rate-rule-bars", "Orders moving between rate rules or paid otherwise, "+s.old+" → "+s.new, bars)
	return b
}

func marketBreakdown(gs []engine.ReplayGroup, s Sides) Breakdown {
	b := keyedBreakdown("by-market", "By buyer market", "Market", gs, s)
	b.Chart = newChart("market-bars", "Change by buyer market, in % of the "+s.old+" commission", keyedBars(b.Changed))
	return b
}

func buyerBreakdown(gs []engine.ReplayGroup, s Sides) Breakdown {
	b := keyedBreakdown("by-buyer", "By new vs returning buyer", "Buyer", gs, s)
	b.Chart = newChart("buyer-bars", "Change by new vs returning buyer, in % of the "+s.old+" commission", keyedBars(b.Changed))
	return b
}

func affiliateBreakdown(gs []engine.ReplayGroup, s Sides) Breakdown {
	b := keyedBreakdown("top-affiliates", "Affiliates with the largest changes", "Affiliate", gs, s)
	b.Note = "The ten per currency whose commission changed the most; the others are in the totals."
	return b
}

func keyedBreakdown(id, title, keyName string, gs []engine.ReplayGroup, s Sides) Breakdown {
	b := Breakdown{ID: id, Title: title, KeyName: keyName, Sides: s}
	for _, g := range gs {
		r := newRow(g)
		if r.changed() {
			b.Changed = append(b.Changed, r)
		} else {
			b.Unchanged = append(b.Unchanged, r)
		}
	}
	return b
}

func keyedBars(rows []Row) []bar {
	var bars []bar
	for _, r := range rows {
		bars = append(bars, percentBar(r, r.Key+" · "+r.Currency))
	}
	return bars
}

// percentBar is a row's change in % as a bar: its length the percentage, its text the
// percentage and the difference (exact); with nothing before, only the difference.
func percentBar(r Row, label string) bar {
	b := bar{Label: label, Currency: r.Currency, Key: r.Key, Sign: r.Sign, Value: r.percent,
		Text: r.Percent + " (" + r.Diff + " " + r.Currency + ")"}
	if !r.hasPercent {
		b.Value, b.Text = 0, "new: "+r.Diff+" "+r.Currency
	}
	return b
}

func (v *View) setChanges(rep *engine.ReplayReport, orderURL func(string) string) {
	for i := range rep.Changes {
		ch := &rep.Changes[i]
		c := Change{OrderID: ch.OrderID, AffiliateID: ch.AffiliateID, PlacedAt: ch.PlacedAt.UTC().Format(time.RFC3339),
			Currency: ch.Currency, Market: ch.Market, Buyer: "returning", NewRule: ruleName(ch.New.RateRule),
			After: ch.New.Commission.Text('f'), Cause: ch.Cause.String()}
		c.PlacedDay, c.PlacedClock, _ = strings.Cut(c.PlacedAt, "T")
		c.PlacedClock = "T" + c.PlacedClock
		if orderURL != nil {
			c.OrderURL = orderURL(ch.OrderID)
		}
		if ch.NewBuyer {
			c.Buyer = "new"
		}
		var diff apd.Decimal
		if ch.Old == nil {
			c.OldRule, c.Before = ruleName(engine.NoRecord), "—"
			diff.Set(&ch.New.Commission)
		} else {
			c.OldRule, c.Before = ruleName(ch.Old.RateRule), ch.Old.Commission.Text('f')
			if _, err := engine.SumContext.Sub(&diff, &ch.New.Commission, &ch.Old.Commission); err != nil {
				c.Diff, c.Sign = "?", "zero"
			}
		}
		if c.Diff == "" {
			c.Diff, c.Sign = signed(&diff), signOf(&diff)
		}
		v.Changes = append(v.Changes, c)
	}
	if orderURL == nil && len(v.Changes) > 0 {
		v.ExplainExample = "commissioner explain " + shellQuote(v.Changes[0].OrderID)
	}
}

func newRow(g engine.ReplayGroup) Row {
	r := Row{Key: g.Key, Currency: g.Currency, Orders: g.Orders, Changed: g.Changed, Before: g.Before.Text('f'),
		After: g.After.Text('f'), Diff: signed(&g.Diff), Sign: signOf(&g.Diff)}
	r.Percent, r.percent, r.hasPercent = percentOf(&g.Diff, &g.Before)
	return r
}

// changed reports whether the row's commission changed.
func (r Row) changed() bool { return r.Changed > 0 || r.Sign != "zero" }

// percentOf is diff in % of before, rounded half-even to two decimals and signed ("+2.50%"), and
// as a number for a bar's length; ok is false when before is zero.
func percentOf(diff, before *apd.Decimal) (text string, v float64, ok bool) {
	if before.IsZero() {
		return "", 0, false
	}
	// enough digits for the integer part of any quotient, and two decimals
	digits := int64(34)
	if n := diff.NumDigits() + int64(diff.Exponent) - before.NumDigits() - int64(before.Exponent) + 3; n > 0 {
		digits += n
	}
	ctx := apd.BaseContext.WithPrecision(uint32(digits))
	var q apd.Decimal
	if _, err := ctx.Quo(&q, diff, before); err != nil {
		return "", 0, false
	}
	q.Exponent += 2 // × 100
	if _, err := ctx.Quantize(&q, &q, -2); err != nil {
		return "", 0, false
	}
	v, err := q.Float64() // a bar's length only
	if err != nil {
		return "", 0, false
	}
	return signed(&q) + "%", v, true
}

// ruleName is a rate rule as the report shows it: "" is not qualified.
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

// VerdictLabel summarises one side of a change: "v1 selected_returning 6%", "v1 not qualified
// (completed, click_in_window)", "(no decision)".
func VerdictLabel(s *engine.Verdict) string {
	if s == nil {
		return "(no decision)"
	}
	if !s.Qualified {
		return fmt.Sprintf("v%d not qualified (%s)", s.PolicyVersion, strings.Join(s.FailedRules, ", "))
	}
	return fmt.Sprintf("v%d %s %s", s.PolicyVersion, s.RateRule, s.Terms())
}

// CommissionChange is an order's commission before and after: "7.41 → 6.18" ("—" when none
// was recorded).
func CommissionChange(c *engine.OrderChange) string {
	old := "—"
	if c.Old != nil {
		old = c.Old.Commission.Text('f')
	}
	return old + " → " + c.New.Commission.Text('f')
}

// ErrorKinds lists the counts of the kinds of error in m, in a fixed order: "invalid 3, rule_error 1".
func ErrorKinds(m map[string]int64) string {
	var parts []string
	for _, k := range []string{engine.ErrorKindInvalid, engine.ErrorKindUnknownProgram, engine.ErrorKindNoPolicy, engine.ErrorKindPinMissing, engine.ErrorKindRule} {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	return strings.Join(parts, ", ")
}

// shellSafe are the arguments a POSIX shell reads as they are.
var shellSafe = regexp.MustCompile(`^[A-Za-z0-9._:/@%+=,-]+$`)

// shellQuote is s as one argument of a POSIX shell command.
func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
