package main

// The replay report as one self-contained HTML page: inline CSS and inline SVG chartBar charts, no
// scripts and nothing fetched from anywhere.

import (
	"fmt"
	"html/template"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/engine"
)

// chartBar is one chartBar of a chart: a label, a value that sets its length (display only), the text
// printed beside it, and whether it is highlighted.
type chartBar struct {
	Label string
	Value float64
	Text  string
	Hot   bool
}

// svgBars draws horizontal bars; negative values go left of the axis.
func svgBars(title string, bars []chartBar) template.HTML {
	if len(bars) == 0 {
		return template.HTML("<p class=muted>" + template.HTMLEscapeString(title) + ": nothing to chart.</p>")
	}
	const (
		labelW = 190
		textW  = 130
		barW   = 420
		rowH   = 22
		top    = 28
	)
	maxAbs, hasNeg := 0.0, false
	for _, b := range bars {
		v := b.Value
		if v < 0 {
			v, hasNeg = -v, true
		}
		maxAbs = max(maxAbs, v)
	}
	if maxAbs == 0 {
		maxAbs = 1
	}
	axis := float64(labelW)
	half := float64(barW)
	if hasNeg {
		half = float64(barW) / 2
		axis = float64(labelW) + half
	}
	width := labelW + barW + textW
	height := top + rowH*len(bars) + 8
	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="%s">`,
		width, height, width, height, template.HTMLEscapeString(title))
	fmt.Fprintf(&s, `<text x="0" y="16" class="ct">%s</text>`, template.HTMLEscapeString(title))
	for i, b := range bars {
		y := top + i*rowH
		l := half * absf(b.Value) / maxAbs
		x := axis
		if b.Value < 0 {
			x = axis - l
		}
		class := "b"
		switch {
		case b.Hot && b.Value < 0:
			class = "bn"
		case b.Hot:
			class = "bp"
		}
		fmt.Fprintf(&s, `<text x="%d" y="%d" class="cl">%s</text>`, labelW-6, y+15, template.HTMLEscapeString(b.Label))
		fmt.Fprintf(&s, `<rect x="%.1f" y="%d" width="%.1f" height="%d" class="%s"/>`, x, y+3, max(l, 0.5), rowH-6, class)
		fmt.Fprintf(&s, `<text x="%d" y="%d" class="cv">%s</text>`, labelW+barW+6, y+15, template.HTMLEscapeString(b.Text))
	}
	fmt.Fprintf(&s, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" class="ax"/>`, axis, top, axis, height-6)
	s.WriteString(`</svg>`)
	return template.HTML(s.String())
}

func absf(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}

// percentChange is diff / before × 100, rounded to two decimals, as text and as a number for
// the chartBar's length; ok is false when before is zero.
func percentChange(before, diff *apd.Decimal) (text string, v float64, ok bool) {
	if before.IsZero() {
		return "", 0, false
	}
	ctx := apd.BaseContext.WithPrecision(34)
	var q apd.Decimal
	if _, err := ctx.Quo(&q, diff, before); err != nil {
		return "", 0, false
	}
	q.Exponent += 2
	var r apd.Decimal
	if _, err := ctx.Quantize(&r, &q, -2); err != nil {
		return "", 0, false
	}
	text = r.Text('f')
	v, _ = strconv.ParseFloat(text, 64) // the chartBar's length only
	if r.Sign() > 0 {
		text = "+" + text
	}
	return text + "%", v, true
}

func percentBars(gs []engine.ReplayGroup, label func(engine.ReplayGroup) string) []chartBar {
	var out []chartBar
	for _, g := range gs {
		text, v, ok := percentChange(&g.Before, &g.Diff)
		if !ok {
			if g.After.IsZero() {
				continue
			}
			text, v = "new: "+g.Currency+" "+g.After.Text('f'), 0
		}
		out = append(out, chartBar{Label: label(g), Value: v, Text: text + " (" + httpapi.SignedDecimal(&g.Diff) + ")", Hot: !g.Diff.IsZero()})
	}
	return out
}

type replayHTMLSection struct {
	Title string
	Head  []string
	Rows  [][]string
	Note  string
}

type replayHTMLPage struct {
	Title      string
	Candidates []string
	Recorded   []string
	Range      string
	Summary    [][2]string
	Drift      bool
	Charts     []template.HTML
	Sections   []replayHTMLSection
	Warnings   []string
}

var replayTemplate = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#1d232a}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #d8dee4;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0} th,td{padding:3px 10px;text-align:left;border-bottom:1px solid #eef1f4;vertical-align:top}
th{background:#f6f8fa;font-weight:600} td.n{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#636c76} .drift{background:#ffebe9;border:1px solid #ff8182;padding:.5em 1em} .ok{color:#1a7f37}
.summary td:first-child{color:#636c76} .charts{display:flex;flex-wrap:wrap;gap:1.5em}
svg .ct{font-weight:600;font-size:13px} svg .cl{font-size:12px;text-anchor:end} svg .cv{font-size:12px;fill:#424a53}
svg .b{fill:#afb8c1} svg .bp{fill:#2da44e} svg .bn{fill:#cf222e} svg .ax{stroke:#57606a;stroke-width:1}
code{font-size:12px}
</style></head><body>
<h1>{{.Title}}</h1>
{{range .Candidates}}<div>candidate: <code>{{.}}</code></div>{{end}}
{{range .Recorded}}<div class=muted>recorded: <code>{{.}}</code></div>{{end}}
<div class=muted>orders: {{.Range}}</div>
<div class=muted>A dry run: nothing was written to decisions.</div>
{{if .Drift}}<p class=drift>Drift: orders replayed with the very policy version that decided them did not reproduce their recorded decision. See the drift section.</p>{{end}}
<h2>Summary</h2>
<table class=summary>{{range .Summary}}<tr><td>{{index . 0}}</td><td class=n>{{index . 1}}</td></tr>{{end}}</table>
<h2>Charts</h2>
<div class=charts>{{range .Charts}}<div>{{.}}</div>{{end}}</div>
{{range .Sections}}<h2>{{.Title}}</h2>{{if .Note}}<p class=muted>{{.Note}}</p>{{end}}
{{if .Rows}}<table><tr>{{range .Head}}<th>{{.}}</th>{{end}}</tr>
{{range .Rows}}<tr>{{range .}}<td>{{.}}</td>{{end}}</tr>
{{end}}</table>{{else}}<p class=muted>(none)</p>{{end}}
{{end}}
{{range .Warnings}}<p class=muted>warning: {{.}}</p>{{end}}
</body></html>
`))

// writeReportHTML writes the replay report as an HTML page: the header, the summary, the charts
// and the tables.
func writeReportHTML(w io.Writer, run *replayRun) error {
	rep := run.Report
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	page := replayHTMLPage{
		Title:    "Replay of " + run.Candidate,
		Range:    rangeLabel(run),
		Drift:    rep.Drift > 0,
		Warnings: run.Warnings,
	}
	page.Candidates = candidateLines(rep)
	for _, r := range rep.Recorded {
		page.Recorded = append(page.Recorded, fmt.Sprintf("%s v%d %s: %d orders", r.Program, r.Version, r.Digest, r.Orders))
	}
	page.Summary = [][2]string{
		{"Orders evaluated", n(rep.Evaluated)},
		{"with no recorded decision", n(rep.Unrecorded)},
		{"not decidable by the candidate", n(countTotal(rep.Errors))},
		{"Newly qualified", n(rep.NewlyQualified)},
		{"Newly disqualified", n(rep.NewlyDisqualified)},
		{"Decision changed", n(rep.Changed)},
		{"Commission changed", n(rep.CommissionChanged)},
		{"Replayed with their recorded version", n(rep.SameVersion)},
		{"Drift", n(rep.Drift)},
	}
	var totals []engine.ReplayGroup
	for _, t := range rep.Totals {
		totals = append(totals, engine.ReplayGroup{Key: t.Currency, Currency: t.Currency, Orders: t.Orders, Changed: t.Changed,
			Before: t.Before, After: t.After, Diff: t.Diff})
	}
	page.Charts = replayCharts(rep, totals)
	page.Sections = replayHTMLSections(run, totals)
	return replayTemplate.Execute(w, page)
}

// replayCharts are the page's charts: the change in % per currency (comparable across
// currencies), the orders moving between rate rules, the change in % per buyer market and per
// kind of buyer, and the changes in qualification.
func replayCharts(rep *engine.ReplayReport, totals []engine.ReplayGroup) []template.HTML {
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	var charts []template.HTML
	charts = append(charts, svgBars("Change in commission by currency (%)", percentBars(totals, func(g engine.ReplayGroup) string { return g.Currency })))
	moves := map[string]int64{}
	hot := map[string]bool{}
	for _, g := range rep.ByRateRule {
		k := ruleLabel(g.Old) + " → " + ruleLabel(g.New)
		moves[k] += g.Orders
		hot[k] = g.Old != g.New || g.Changed > 0
	}
	var moveBars []chartBar
	for _, k := range replaySortedKeys(moves) {
		moveBars = append(moveBars, chartBar{Label: k, Value: float64(moves[k]), Text: n(moves[k]) + " orders", Hot: hot[k]})
	}
	charts = append(charts, svgBars("Orders by rate rule, recorded → candidate", moveBars))
	charts = append(charts, svgBars("Change by buyer market (%)", percentBars(rep.ByMarket, func(g engine.ReplayGroup) string { return g.Key + " · " + g.Currency })))
	charts = append(charts, svgBars("Change by new vs returning buyer (%)", percentBars(rep.ByBuyer, func(g engine.ReplayGroup) string { return g.Key + " · " + g.Currency })))
	qual := []chartBar{
		{Label: "newly qualified", Value: float64(rep.NewlyQualified), Text: n(rep.NewlyQualified), Hot: true},
		{Label: "newly disqualified", Value: -float64(rep.NewlyDisqualified), Text: n(rep.NewlyDisqualified), Hot: true},
	}
	return append(charts, svgBars("Qualification changes", qual))
}

// replayHTMLSections are the page's tables: the money by currency, rate rule, market, buyer and
// affiliate, then the changes, drift and errors listed.
func replayHTMLSections(run *replayRun, totals []engine.ReplayGroup) []replayHTMLSection {
	rep := run.Report
	moneyHead := []string{"Currency", "Orders", "Commission changed", "Before", "After", "Difference"}
	var rateRows [][]string
	for _, g := range rep.ByRateRule {
		rateRows = append(rateRows, rateRuleRow(g))
	}
	keyed := func(title, key string, gs []engine.ReplayGroup) replayHTMLSection {
		return replayHTMLSection{Title: title, Head: append([]string{key}, moneyHead...), Rows: groupRows(gs, true)}
	}
	sections := []replayHTMLSection{
		{Title: "Commission by currency", Head: moneyHead, Rows: groupRows(totals, false)},
		{Title: "By rate rule (recorded → candidate)", Head: append([]string{"Recorded", "Candidate"}, moneyHead...), Rows: rateRows},
		keyed("By buyer market", "Market", rep.ByMarket),
		keyed("By new vs returning buyer", "Buyer", rep.ByBuyer),
		keyed("Affiliates with the largest changes (top 10 per currency)", "Affiliate", rep.TopAffiliates),
	}
	changes := run.listedChanges()
	note := ""
	if int64(len(changes)) < rep.ChangesTotal {
		note = fmt.Sprintf("The first %d of %d by placed_at; --changes N or --format csv for more.", len(changes), rep.ChangesTotal)
	}
	sections = append(sections, replayHTMLSection{Title: fmt.Sprintf("Per-order changes (%d)", rep.ChangesTotal), Note: note,
		Head: []string{"Order", "Placed", "Currency", "Recorded", "Candidate", "Commission", "Difference", "What made the difference"},
		Rows: changeRows(changes)})
	if rep.SameVersion > 0 || rep.Drift > 0 {
		sections = append(sections, replayHTMLSection{
			Title: fmt.Sprintf("Drift: %d of %d orders replayed with their recorded version did not reproduce", rep.Drift, rep.SameVersion),
			Head:  []string{"Order", "Event", "Recorded", "Replayed", "Commission", "Differs in"}, Rows: driftRows(rep)})
	}
	if len(rep.ErrorSamples) > 0 {
		sections = append(sections, replayHTMLSection{Title: fmt.Sprintf("Not decidable by the candidate (%d)", countTotal(rep.Errors)),
			Head: []string{"Order", "Event", "Kind", "Reason"}, Rows: errorSampleRows(rep)})
	}
	return sections
}

func replaySortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
