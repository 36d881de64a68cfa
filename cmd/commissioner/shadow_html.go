package main

import (
	"fmt"
	"html/template"
	"io"
	"strconv"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/engine"
)

// The shadow report as one self-contained HTML page: inline CSS, an inline SVG bar per currency
// (the shadow's change in %), the tables of the text report. Money is exact decimal text.

var shadowHTML = template.Must(template.New("shadow").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Shadow {{.Program}} v{{.Version}}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;margin:.4em 0}th,td{padding:.2em .7em;border-bottom:1px solid #ddd;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}.neg{color:#a40000}.pos{color:#006400}
.meta{color:#555}code{font-size:.92em}
</style></head><body>
<h1>Shadow {{.Program}} v{{.Version}} against the live decisions</h1>
<p class="meta">{{.Range}}. The shadow's outcomes are outside the chain, the ledger and the payouts.</p>
<ul class="meta">{{range .Shadows}}<li>shadow {{.Program}} v{{.Version}} <code>{{.Digest}}</code>: {{.Events}} events, {{.Orders}} orders</li>{{end}}
{{range .Live}}<li>live {{.Program}} v{{.Version}} <code>{{.Digest}}</code>: {{.Orders}} orders</li>{{end}}</ul>
<table>{{range .Counts}}<tr><td>{{.Label}}</td><td class="n">{{.Value}}</td><td class="meta">{{.Note}}</td></tr>{{end}}</table>
<h2>Qualification (live × shadow)</h2>
<table><tr><th>live \ shadow</th><th>qualified</th><th>not qualified</th></tr>
<tr><th>qualified</th><td class="n">{{.Matrix.BothQualified}}</td><td class="n">{{.Matrix.LiveOnly}}</td></tr>
<tr><th>not qualified</th><td class="n">{{.Matrix.ShadowOnly}}</td><td class="n">{{.Matrix.NeitherQualify}}</td></tr></table>
<h2>Commission by currency: the shadow's change</h2>
<svg width="560" height="{{.ChartHeight}}" role="img" aria-label="change per currency in percent">
{{range $i, $b := .Bars}}<text x="0" y="{{$b.Y}}" dy="12">{{$b.Label}}</text>
<rect x="{{$b.X}}" y="{{$b.Y}}" width="{{$b.W}}" height="14" fill="{{$b.Fill}}"/>
<text x="{{$b.TextX}}" y="{{$b.Y}}" dy="12">{{$b.Pct}}</text>{{end}}</svg>
{{range .Tables}}<h2>{{.Title}}</h2>{{if .Rows}}<table><tr>{{range .Head}}<th>{{.}}</th>{{end}}</tr>
{{range .Rows}}<tr>{{range .}}<td{{if .Num}} class="n{{if .Neg}} neg{{else if .Pos}} pos{{end}}"{{end}}>{{if .Code}}<code>{{.Text}}</code>{{else}}{{.Text}}{{end}}</td>{{end}}</tr>
{{end}}</table>{{else}}<p class="meta">(none)</p>{{end}}{{end}}
</body></html>
`))

type htmlCell struct {
	Text          string
	Num, Neg, Pos bool
	Code          bool
}

type htmlTable struct {
	Title string
	Head  []string
	Rows  [][]htmlCell
}

type htmlBar struct {
	Label, Pct, Fill string
	X, Y, W, TextX   int
}

// writeShadowHTML writes the report as one self-contained page.
func writeShadowHTML(w io.Writer, rep *engine.ShadowReport, f engine.ShadowFilter) error {
	text := func(s string) htmlCell { return htmlCell{Text: s} }
	num := func(v int64) htmlCell { return htmlCell{Text: strconv.FormatInt(v, 10), Num: true} }
	money := func(d *apd.Decimal) htmlCell { return htmlCell{Text: d.Text('f'), Num: true} }
	diff := func(d *apd.Decimal) htmlCell {
		return htmlCell{Text: httpapi.SignedDecimal(d), Num: true, Neg: d.Sign() < 0, Pos: d.Sign() > 0}
	}
	moneyHead := []string{"currency", "orders", "changed", "live", "shadow", "difference"}
	group := func(keyed bool, gs []engine.ReplayGroup) [][]htmlCell {
		var rows [][]htmlCell
		for _, g := range gs {
			var r []htmlCell
			if keyed {
				r = append(r, text(g.Key))
			}
			r = append(r, text(g.Currency), num(g.Orders), num(g.Changed), money(&g.Before), money(&g.After), diff(&g.Diff))
			rows = append(rows, r)
		}
		return rows
	}
	var totals []engine.ReplayGroup
	for _, t := range rep.Totals {
		totals = append(totals, engine.ReplayGroup{Currency: t.Currency, Orders: t.Orders, Changed: t.Changed, Before: t.Before, After: t.After, Diff: t.Diff})
	}
	var rules [][]htmlCell
	for _, g := range rep.ByRateRule {
		if g.Old == "" && g.New == "" && g.Changed == 0 {
			continue
		}
		rules = append(rules, append([]htmlCell{text(ruleLabel(g.Old)), text(ruleLabel(g.New))}, group(false, []engine.ReplayGroup{g.ReplayGroup})[0]...))
	}
	var orders [][]htmlCell
	for i := range rep.Diverging {
		c := &rep.Diverging[i]
		var d apd.Decimal
		if c.Old != nil {
			_, _ = engine.SumContext.Sub(&d, &c.New.Commission, &c.Old.Commission)
		}
		orders = append(orders, []htmlCell{text(c.OrderID), text(c.PlacedAt.UTC().Format(time.RFC3339)), text(c.Currency), text(sideLabel(c.Old)),
			text(sideLabel(&c.New)), text(commissionLabel(c)), diff(&d), text(c.Cause.String()),
			{Text: httpapi.ExplainCommand(c.Program, c.OrderID), Code: true}})
	}
	var errs [][]htmlCell
	for _, e := range rep.ErrorSamples {
		errs = append(errs, []htmlCell{text(e.OrderID), text(e.EventID), text(e.Kind), text(e.Reason)})
	}
	page := struct {
		Program     string
		Version     int
		Range       string
		Shadows     []engine.ShadowVersion
		Live        []engine.RecordedVersion
		Counts      []struct{ Label, Value, Note string }
		Matrix      engine.QualificationMatrix
		Bars        []htmlBar
		ChartHeight int
		Tables      []htmlTable
	}{Program: f.Program, Version: f.Version, Range: shadowRangeLabel(f), Shadows: rep.Shadows, Live: rep.Live, Matrix: rep.Matrix}
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	page.Counts = []struct{ Label, Value, Note string }{
		{"Events the shadow decided", n(rep.Events), ""},
		{"Orders compared", n(rep.Compared), "each order's latest event"},
		{"Not decidable by the shadow", n(countTotal(rep.Errors)), errorKinds(rep.Errors)},
		{"Newly qualified", n(rep.Matrix.ShadowOnly), ""},
		{"Newly disqualified", n(rep.Matrix.LiveOnly), ""},
		{"Decision changed", n(rep.Diverged), ""},
		{"Commission changed", n(rep.CommissionChanged), ""},
	}
	page.Bars = shadowBars(rep.Totals)
	page.ChartHeight = 20*len(page.Bars) + 4
	page.Tables = []htmlTable{
		{"Commission by currency", moneyHead, group(false, totals)},
		{"By rate rule (live → shadow)", append([]string{"live", "shadow"}, moneyHead...), rules},
		{"By the first rule whose outcome differs", append([]string{"rule"}, moneyHead...), group(true, rep.ByCause)},
		{"By buyer market", append([]string{"market"}, moneyHead...), group(true, rep.ByMarket)},
		{"By new vs returning buyer", append([]string{"buyer"}, moneyHead...), group(true, rep.ByBuyer)},
		{"Affiliates with the largest changes", append([]string{"affiliate"}, moneyHead...), group(true, rep.TopAffiliates)},
		{fmt.Sprintf("Diverging orders (%d of %d, the largest differences first)", len(rep.Diverging), rep.DivergingTotal),
			[]string{"order", "placed", "currency", "live", "shadow", "commission", "difference", "what made the difference", "explain"}, orders},
	}
	if len(errs) > 0 {
		page.Tables = append(page.Tables, htmlTable{fmt.Sprintf("Not decidable by the shadow (%d)", countTotal(rep.Errors)), []string{"order", "event", "kind", "reason"}, errs})
	}
	return shadowHTML.Execute(w, page)
}

// shadowBars are the chart's bars: per currency the shadow's change in % of the live total
// (a bar's length only; the figures in the tables are exact).
func shadowBars(totals []engine.CurrencyTotal) []htmlBar {
	const zero, scale = 300, 240 // the zero line's x, and the pixels of the largest change
	var pcts []float64
	largest := 0.0
	for _, t := range totals {
		p := 0.0
		if !t.Before.IsZero() {
			var q apd.Decimal
			_, _ = apd.BaseContext.WithPrecision(20).Quo(&q, &t.Diff, &t.Before)
			p, _ = q.Float64()
			p *= 100
		}
		pcts = append(pcts, p)
		largest = max(largest, p, -p)
	}
	var bars []htmlBar
	for i, t := range totals {
		p := pcts[i]
		wd := 0
		if largest > 0 {
			wd = int(scale * max(p, -p) / largest)
		}
		b := htmlBar{Label: t.Currency, Pct: fmt.Sprintf("%+.2f%%", p), Y: 20*i + 2, W: wd, X: zero, TextX: zero + wd + 6, Fill: "#2e7d32"}
		if p < 0 {
			b.X, b.TextX, b.Fill = zero-wd, zero+6, "#c62828"
		}
		bars = append(bars, b)
	}
	return bars
}
