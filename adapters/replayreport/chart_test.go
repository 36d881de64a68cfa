package replayreport

import (
	"html/template"
	"math"
	"strconv"
	"strings"
	"testing"
)

// TestChartNeverClipsALabel: for labels from short to far longer than any column, the chart
// leaves each label the room its (over)estimated width needs — beside the bars when it fits the
// label column, on a line of its own above its bar otherwise — the SVG is as wide as its widest
// line, and the rendered SVG holds each label whole in one <text>.
func TestChartNeverClipsALabel(t *testing.T) {
	cases := []struct {
		name    string
		labels  []string
		stacked bool
	}{
		{"currencies", []string{"USD", "EUR"}, false},
		{"markets", []string{"US · USD", "returning · EUR"}, false},
		{"the clipped label of old", []string{"other_returning → other_returning", "er_new → other_new"}, true},
		{"a long rate-rule move", []string{"selected_returning → " + longRule, "x"}, true},
		{"wide letters", []string{strings.Repeat("W", 30)}, true},
		{"beyond ASCII", []string{"返回买家 → 新买家", "größer → kleiner"}, false},
		{"no label", []string{""}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var bars []bar
			for i, l := range c.labels {
				bars = append(bars, bar{Label: l, Value: float64(i) - 0.5, Text: "-1.00% (-12.34 USD)", Sign: "negative"})
			}
			ch := newChart("test-bars", "caption", bars)
			if ch.Stacked != c.stacked {
				t.Errorf("stacked %v, want %v (label width %d)", ch.Stacked, c.stacked, ch.LabelWidth)
			}
			for _, b := range ch.Bars {
				need := int(math.Ceil(textWidth(b.Label, chartFontSize)))
				if need > ch.LabelWidth || need > ch.Width {
					t.Errorf("%q needs %d px: label column %d, chart %d", b.Label, need, ch.LabelWidth, ch.Width)
				}
				if !ch.Stacked && (b.X < float64(ch.LabelWidth) || float64(ch.BarsX) < float64(ch.LabelWidth)) {
					t.Errorf("%q: the bar starts at %.1f, inside the label column (%d)", b.Label, b.X, ch.LabelWidth)
				}
				if ch.Stacked && (b.Y < float64(b.LabelY) || b.TextY <= b.LabelY) {
					t.Errorf("%q: the bar (y %.0f) or its figure (y %d) is not under its label (y %d)", b.Label, b.Y, b.TextY, b.LabelY)
				}
				if b.X < 0 || b.X+b.W > float64(ch.ValueX) {
					t.Errorf("%q: the bar [%.1f, %.1f] leaves its room [0, %d]", b.Label, b.X, b.X+b.W, ch.ValueX)
				}
				if end := ch.ValueX + int(math.Ceil(textWidth(b.Text, chartFontSize))); end > ch.Width {
					t.Errorf("the figure %q ends at %d, beyond the chart's %d", b.Text, end, ch.Width)
				}
			}
			var svg strings.Builder
			tmpl := template.Must(ParseTemplates(template.New("t")))
			if err := tmpl.ExecuteTemplate(&svg, "replay-chart", ch); err != nil {
				t.Fatal(err)
			}
			out := svg.String()
			if c.labels[0] == "" {
				return
			}
			if !strings.Contains(out, `width="`+strconv.Itoa(ch.Width)+`" height="`+strconv.Itoa(ch.Height)+`" viewBox="0 0 `+strconv.Itoa(ch.Width)) {
				t.Errorf("the SVG is not %d × %d:\n%s", ch.Width, ch.Height, out)
			}
			for _, l := range c.labels {
				if !strings.Contains(out, `font-size="13">`+template.HTMLEscapeString(l)+`</text>`) {
					t.Errorf("the label %q is not whole in one <text>:\n%s", l, out)
				}
			}
		})
	}
}

// TestChartBars: a bar's length is its value relative to the largest, negative ones left of the
// zero line, which sits at the middle only when the chart has both signs.
func TestChartBars(t *testing.T) {
	cases := []struct {
		name   string
		values []float64
		axis   float64 // from the bars' room start
		widths []float64
	}{
		{"all positive", []float64{10, 5}, 0, []float64{chartBarArea, chartBarArea / 2}},
		{"all negative", []float64{-10, -2.5}, chartBarArea, []float64{chartBarArea, chartBarArea / 4}},
		{"both", []float64{-10, 10, 0}, chartBarArea / 2, []float64{chartBarArea / 2, chartBarArea / 2, 1}},
		{"nothing changed", []float64{0}, 0, []float64{1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var bars []bar
			for _, v := range c.values {
				bars = append(bars, bar{Label: "USD", Value: v, Text: "x"})
			}
			ch := newChart("id", "caption", bars)
			if got := ch.Axis - float64(ch.BarsX); got != c.axis {
				t.Errorf("the zero line at %.1f of the room, want %.1f", got, c.axis)
			}
			for i, b := range ch.Bars {
				if b.W != c.widths[i] {
					t.Errorf("bar %d (%v): width %.1f, want %.1f", i, c.values[i], b.W, c.widths[i])
				}
				if c.values[i] < 0 && b.X+b.W != ch.Axis || c.values[i] >= 0 && b.X != ch.Axis {
					t.Errorf("bar %d (%v) spans [%.1f, %.1f], not from the zero line %.1f", i, c.values[i], b.X, b.X+b.W, ch.Axis)
				}
			}
		})
	}
}

// TestTextWidthOverestimates: the estimate is at least what DejaVu Sans (the sans-serif and
// system-ui of Debian's chromium, among the widest) draws, for the kinds of text the charts hold.
// The widths, in em, are chromium's (canvas measureText, 100px "DejaVu Sans").
func TestTextWidthOverestimates(t *testing.T) {
	for _, c := range []struct {
		text string
		em   float64
	}{
		{"selected_returning", 9.325},
		{"other_returning → other_returning", 17.010},
		{"other_returning → other_market_returning_buyer_with_a_very_long_rate_rule_name", 41.853},
		{"USD", 2.137},
		{"MXN", 2.296},
		{"WWWWW", 4.944},
		{"mmmmm", 4.871},
		{"-16.66% (-118.14 MXN)", 11.746},
		{"285 orders, 285 with another commission", 20.897},
		{"größer → kleiner", 8.176},
		{"返回买家 → 新买家", 7 + 0.7 + 1}, // CJK ideographs are 1 em in any font that has them
	} {
		if got := textWidth(c.text, 1); got < c.em {
			t.Errorf("textWidth(%q) = %.2f em, less than DejaVu Sans's %.3f", c.text, got, c.em)
		}
	}
}
