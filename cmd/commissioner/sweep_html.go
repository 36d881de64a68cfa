package main

// The sweep as one self-contained HTML page: inline CSS, an inline SVG line chart of the cost
// curve per currency (the difference at each point, the budget as a line), the tables beside
// them; no script, nothing fetched. Money is printed from exact decimals; float64 only places
// points on the chart.

import (
	"fmt"
	"html/template"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/engine"
)

const sweepCSS = `body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1100px;color:#1d232b;padding:0 16px}
h1{font-size:22px;margin:0 0 6px}h2{font-size:17px;margin:28px 0 8px}
.meta{color:#4a5563;margin:2px 0}.muted{color:#6b7480}
table{border-collapse:collapse;margin:8px 0 4px;font-variant-numeric:tabular-nums}
th,td{padding:3px 10px;border-bottom:1px solid #e3e7ec;text-align:right;white-space:nowrap}
th{background:#f4f6f9;font-weight:600}td:first-child,th:first-child{text-align:left}
tr.hot td{background:#fff4d6;font-weight:600}
.keeps{color:#1b7a3a}.over{color:#b42318}
.budgets li{margin:3px 0}.warn{color:#8a5a00}
svg{display:block;margin:6px 0 2px;max-width:100%;height:auto}
svg .axis{stroke:#9aa3ad;stroke-width:1}svg .grid{stroke:#e3e7ec;stroke-width:1}
svg .curve{fill:none;stroke:#2f6fde;stroke-width:2}svg .pt{fill:#2f6fde}svg .pt.hot{fill:#e08a00;stroke:#1d232b;stroke-width:1.5}
svg .budget{stroke:#b42318;stroke-width:1.5;stroke-dasharray:6 4}
svg text{font:12px system-ui,sans-serif;fill:#4a5563}svg text.bl{fill:#b42318}svg .ct{font-weight:600;fill:#1d232b}`

// writeSweepHTML writes the sweep as a standalone HTML page.
func writeSweepHTML(w io.Writer, sr *sweepRun) error {
	var b strings.Builder
	esc := template.HTMLEscapeString
	b.WriteString("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>Sweep of " + esc(sr.Run.Candidate) + "</title>\n")
	b.WriteString("<style>\n" + sweepCSS + "\n</style></head><body>\n")
	base := sr.Base
	fmt.Fprintf(&b, "<h1>Sweep of %s</h1>\n", esc(sr.Run.Candidate))
	fmt.Fprintf(&b, "<p class=meta>%s: %d points</p>\n", esc(axesLabel(sr.Axes)), len(sr.Points))
	fmt.Fprintf(&b, "<p class=meta>candidate %s v%d %s, applied to every order (effective_from %s not applied); each point is this file with its values written in, with its own digest</p>\n",
		esc(base.Program), base.Version, esc(base.Digest), esc(base.EffectiveFrom.UTC().Format(time.RFC3339)))
	for _, r := range sr.Reports[0].Recorded {
		fmt.Fprintf(&b, "<p class=meta>recorded %s v%d %s: %d orders</p>\n", esc(r.Program), r.Version, esc(r.Digest), r.Orders)
	}
	fmt.Fprintf(&b, "<p class=meta>orders %s</p>\n<p class=meta>dry run: nothing was written to decisions</p>\n", esc(rangeLabel(&sr.Run)))

	if lines := sweepBudgetLines(sr); len(lines) > 0 {
		b.WriteString("<h2>Budgets</h2>\n<p class=muted>A point keeps to CUR:AMOUNT when its difference in CUR (after − before) is at most AMOUNT.</p>\n<ul class=budgets>\n")
		for _, l := range lines {
			fmt.Fprintf(&b, "<li>%s</li>\n", esc(l))
		}
		b.WriteString("</ul>\n")
	}

	curves, unchanged := sweepCurrencies(sr)
	for _, cur := range curves {
		budget, crossing := budgetOf(sr, cur)
		fmt.Fprintf(&b, "<h2>Cost curve in %s</h2>\n", esc(cur))
		b.WriteString(string(sweepChart(sr, cur, budget, crossing)))
		b.WriteString(sweepCurveTable(sr, cur, budget, crossing))
	}
	if len(unchanged) > 0 {
		fmt.Fprintf(&b, "<p class=muted>Unchanged at every point: %s</p>\n", esc(strings.Join(unchanged, ", ")))
	}

	b.WriteString("<h2>Points</h2>\n<table><tr><th>point</th>")
	for _, ax := range sr.Axes {
		fmt.Fprintf(&b, "<th>%s</th>", esc(ax.Term.String()))
	}
	b.WriteString("<th>digest</th><th>evaluated</th><th>not decidable</th><th>newly qualified</th><th>newly disqualified</th><th>commission changed</th></tr>\n")
	for i, rep := range sr.Reports {
		fmt.Fprintf(&b, "<tr><td>%d</td>", i+1)
		for _, v := range pointValues(&sr.Points[i]) {
			fmt.Fprintf(&b, "<td>%s</td>", esc(v))
		}
		fmt.Fprintf(&b, "<td title=\"%s\">%s</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td></tr>\n", esc(sr.Points[i].Policy.Digest),
			esc(shortDigest(sr.Points[i].Policy.Digest)), rep.Evaluated, countTotal(rep.Errors), rep.NewlyQualified, rep.NewlyDisqualified, rep.CommissionChanged)
	}
	b.WriteString("</table>\n")
	for _, warn := range sr.Run.Warnings {
		fmt.Fprintf(&b, "<p class=warn>warning: %s</p>\n", esc(warn))
	}
	b.WriteString("</body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// sweepCurveTable is the currency's money at each point, the crossing point highlighted.
func sweepCurveTable(sr *sweepRun, cur string, budget *engine.Budget, crossing *engine.BudgetCrossing) string {
	esc := template.HTMLEscapeString
	var b strings.Builder
	b.WriteString("<table><tr><th>point</th>")
	for _, ax := range sr.Axes {
		fmt.Fprintf(&b, "<th>%s</th>", esc(ax.Term.String()))
	}
	b.WriteString("<th>orders</th><th>changed</th><th>before</th><th>after</th><th>difference</th>")
	if budget != nil {
		fmt.Fprintf(&b, "<th>budget %s</th>", esc(budget.Amount.Text('f')))
	}
	b.WriteString("</tr>\n")
	for i, rep := range sr.Reports {
		t := pointTotal(rep, cur)
		hot := budget != nil && crossing.Point == i
		if hot {
			b.WriteString("<tr class=hot>")
		} else {
			b.WriteString("<tr>")
		}
		fmt.Fprintf(&b, "<td>%d</td>", i+1)
		for _, v := range pointValues(&sr.Points[i]) {
			fmt.Fprintf(&b, "<td>%s</td>", esc(v))
		}
		fmt.Fprintf(&b, "<td>%d</td><td>%d</td><td>%s</td><td>%s</td><td>%s</td>", t.Orders, t.Changed,
			esc(t.Before.Text('f')), esc(t.After.Text('f')), esc(httpapi.SignedDecimal(&t.Diff)))
		if budget != nil {
			cell := `<td class=over>over</td>`
			if budget.Keeps(&t.Diff) {
				cell = `<td class=keeps>keeps</td>`
			}
			if hot {
				cell = strings.Replace(cell, "</td>", " ← crosses</td>", 1)
			}
			b.WriteString(cell)
		}
		b.WriteString("</tr>\n")
	}
	b.WriteString("</table>\n")
	return b.String()
}

// chartFloat is a decimal as a float64, for placing it on a chart only.
func chartFloat(d *apd.Decimal) float64 {
	f, err := d.Float64()
	if err != nil {
		return 0
	}
	return f
}

// sweepChart draws the currency's difference at each point as a line, with the zero line, the
// budget (dashed) and the crossing point marked. Each point's circle has a title with its values
// and exact difference.
func sweepChart(sr *sweepRun, cur string, budget *engine.Budget, crossing *engine.BudgetCrossing) template.HTML {
	const (
		width, height           = 760, 320
		left, right, top, below = 96, 24, 34, 64
	)
	esc := template.HTMLEscapeString
	plotW, plotH := float64(width-left-right), float64(height-top-below)
	n := len(sr.Reports)
	diffs := make([]apd.Decimal, n)
	ys := make([]float64, n)
	lo, hi := 0.0, 0.0
	minI, maxI := 0, 0
	for i, rep := range sr.Reports {
		t := pointTotal(rep, cur)
		diffs[i].Set(&t.Diff)
		ys[i] = chartFloat(&diffs[i])
		lo, hi = min(lo, ys[i]), max(hi, ys[i])
		if diffs[i].Cmp(&diffs[minI]) < 0 {
			minI = i
		}
		if diffs[i].Cmp(&diffs[maxI]) > 0 {
			maxI = i
		}
	}
	var by float64
	if budget != nil {
		by = chartFloat(&budget.Amount)
		lo, hi = min(lo, by), max(hi, by)
	}
	if hi == lo {
		hi, lo = hi+1, lo-1
	}
	pad := (hi - lo) * 0.06
	lo, hi = lo-pad, hi+pad
	y := func(v float64) float64 { return float64(top) + (hi-v)/(hi-lo)*plotH }
	x := func(i int) float64 {
		if n == 1 {
			return float64(left) + plotW/2
		}
		return float64(left) + float64(i)/float64(n-1)*plotW
	}
	var s strings.Builder
	title := "Difference in " + cur + " (after − before) at each point"
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="%s">`,
		width, height, width, height, esc(title))
	fmt.Fprintf(&s, `<text x="0" y="16" class="ct">%s</text>`, esc(title))
	// axes, and the zero line with the extremes labelled with their exact amounts
	fmt.Fprintf(&s, `<line class="axis" x1="%d" y1="%d" x2="%d" y2="%d"/>`, left, top, left, height-below)
	fmt.Fprintf(&s, `<line class="axis" x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>`, left, y(0), width-right, y(0))
	fmt.Fprintf(&s, `<text x="%d" y="%.1f" text-anchor="end">0</text>`, left-6, y(0)+4)
	for k, i := range []int{minI, maxI} {
		if diffs[i].IsZero() || k == 1 && maxI == minI {
			continue
		}
		fmt.Fprintf(&s, `<line class="grid" x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>`, left, y(ys[i]), width-right, y(ys[i]))
		fmt.Fprintf(&s, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`, left-6, y(ys[i])+4, esc(httpapi.SignedDecimal(&diffs[i])))
	}
	if budget != nil {
		fmt.Fprintf(&s, `<line class="budget" x1="%d" y1="%.1f" x2="%d" y2="%.1f"/>`, left, y(by), width-right, y(by))
		fmt.Fprintf(&s, `<text class="bl" x="%d" y="%.1f" text-anchor="end">budget %s</text>`, width-right, y(by)-5, esc(budget.Amount.Text('f')))
	}
	// the curve and its points
	pts := make([]string, n)
	for i := range n {
		pts[i] = fmt.Sprintf("%.1f,%.1f", x(i), y(ys[i]))
	}
	fmt.Fprintf(&s, `<polyline class="curve" points="%s"/>`, strings.Join(pts, " "))
	every := max(1, (n+11)/12) // at most about 12 labels under the axis
	for i := range n {
		class, r := "pt", 4
		if budget != nil && crossing.Point == i {
			class, r = "pt hot", 7
		}
		label := sr.Points[i].Label()
		fmt.Fprintf(&s, `<circle class="%s" cx="%.1f" cy="%.1f" r="%d"><title>point %d: %s: %s %s</title></circle>`,
			class, x(i), y(ys[i]), r, i+1, esc(label), esc(httpapi.SignedDecimal(&diffs[i])), esc(cur))
		if i%every == 0 || i == n-1 {
			tick := strconv.Itoa(i + 1)
			if len(sr.Axes) == 1 {
				tick = pointValues(&sr.Points[i])[0]
			}
			fmt.Fprintf(&s, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, x(i), height-below+18, esc(tick))
		}
	}
	xTitle := "point (the tables name each point's values)"
	if len(sr.Axes) == 1 {
		xTitle = sr.Axes[0].Term.String()
	}
	fmt.Fprintf(&s, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, float64(left)+plotW/2, height-below+44, esc(xTitle))
	s.WriteString(`</svg>`)
	return template.HTML(s.String())
}
