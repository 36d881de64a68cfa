package replayreport

import (
	"math"
	"strings"
	"unicode"
)

// The charts' geometry, in the SVG's user units (CSS pixels at scale 1).
const (
	chartFontSize  = 13  // labels and figures, px
	chartRowHeight = 24  // one bar's row
	chartBarHeight = 16  // a bar's thickness
	chartBarArea   = 360 // the bars' room; split at the zero line when some bars go left
	chartGap       = 12  // between the labels, the bars and the figures
	// chartLabelColumn is the widest label column: with a longer label, every label goes on a
	// line of its own above its bar (a row chartStackedRowHeight high), as wide as it needs.
	chartLabelColumn      = 240
	chartStackedRowHeight = 42
)

// The bars' colours by sign (presentation attributes: the chart needs no stylesheet).
var barFills = map[string]string{"negative": "#a3212a", "positive": "#1e6b3a", "zero": "#8c959f", "count": "#4a6fa5"}

// bar is what a chart is made of: a label, a value that sets the bar's length (display only),
// the exact text printed beside it, and its sign ("negative", "positive", "zero", "count").
type bar struct {
	Label, Text   string
	Currency, Key string // the data attributes that name it
	Sign          string
	Value         float64
}

// Chart is a horizontal bar chart laid out for inline SVG: a column of labels on the left, sized
// from the longest label, the bars (negative values left of the zero line), then a column of
// figures sized from the longest figure. When the longest label is wider than chartLabelColumn,
// each label goes on its own line above its bar instead (Stacked). The SVG is as wide as its
// widest line, so no text is clipped; each label is one <text>, whole.
type Chart struct {
	ID, Caption string
	Note        string // said after the caption: "2 currencies unchanged, not charted"
	Empty       string // said instead of the chart when it has no bar ("": nothing)
	Width       int
	Height      int
	Stacked     bool    // the labels above their bars
	LabelWidth  int     // the longest label's estimated width
	BarsX       int     // where the bars' room starts
	ValueX      int     // where the figures start
	Axis        float64 // the zero line
	Bars        []Bar
}

// Bar is one bar's geometry and text.
type Bar struct {
	Label, Text   string
	Currency, Key string
	Fill          string
	X, Y, W       float64 // the rectangle
	H             int
	LabelY, TextY int // the baselines of the label and of the figure
	// AxisY1, AxisY2: the zero line beside the bar, drawn per bar when the chart is stacked (a
	// line through the whole chart would cross the labels).
	AxisY1, AxisY2 int
}

func newChart(id, caption string, bars []bar) Chart {
	c := Chart{ID: id, Caption: caption}
	if len(bars) == 0 {
		return c
	}
	var labelW, textW, largest float64
	var neg, pos bool
	for _, b := range bars {
		labelW = max(labelW, textWidth(b.Label, chartFontSize))
		textW = max(textW, textWidth(b.Text, chartFontSize))
		largest = max(largest, math.Abs(b.Value))
		neg = neg || b.Value < 0
		pos = pos || b.Value > 0
	}
	c.LabelWidth = int(math.Ceil(labelW))
	rowHeight := chartRowHeight
	c.Stacked = c.LabelWidth > chartLabelColumn
	if c.Stacked {
		rowHeight = chartStackedRowHeight
	} else {
		c.BarsX = c.LabelWidth + chartGap
	}
	c.ValueX = c.BarsX + chartBarArea + chartGap
	c.Width = c.ValueX + int(math.Ceil(textW)) + 2
	if c.Stacked {
		c.Width = max(c.Width, c.LabelWidth+2)
	}
	c.Height = len(bars) * rowHeight
	room := float64(chartBarArea)
	c.Axis = float64(c.BarsX)
	switch {
	case neg && pos:
		room /= 2
		c.Axis += room
	case neg:
		c.Axis += room
	}
	for i, b := range bars {
		l := 0.0
		if largest > 0 {
			l = room * math.Abs(b.Value) / largest
		}
		l = max(l, 1) // a bar of no change is still seen
		x := c.Axis
		if b.Value < 0 {
			x -= l
		}
		y := i * rowHeight
		fill := barFills[b.Sign]
		if fill == "" {
			fill = barFills["zero"]
		}
		nb := Bar{Label: b.Label, Text: b.Text, Currency: b.Currency, Key: b.Key, Fill: fill,
			X: round1(x), Y: float64(y + (chartRowHeight-chartBarHeight)/2), W: round1(l), H: chartBarHeight, LabelY: y + 16, TextY: y + 16}
		if c.Stacked { // the label on its line, the bar and its figure under it
			nb.LabelY = y + 14
			nb.Y = float64(y + 20)
			nb.TextY = y + 33
			nb.AxisY1, nb.AxisY2 = y+18, y+38
		}
		c.Bars = append(c.Bars, nb)
	}
	return c
}

// textWidth overestimates how wide s is drawn at size px in a proportional sans-serif font
// (system-ui, DejaVu Sans, Helvetica…): 0.65 em for a lower-case letter, a digit or most
// punctuation, 1 em for a capital, m, w and symbols, 1.25 em for anything beyond ASCII (an arrow,
// an accented letter, a CJK ideogram), less for the narrowest. The label column is sized from
// it, so a label is never clipped, at worst followed by some room.
func textWidth(s string, size float64) float64 {
	em := 0.0
	for _, r := range s {
		switch {
		case r == ' ':
			em += 0.35
		case strings.ContainsRune("ijlI.,:;'|!()[]", r):
			em += 0.45
		case r >= 0x80:
			em += 1.25
		case unicode.IsUpper(r) || strings.ContainsRune("mw%@#&WM", r):
			em += 1
		default:
			em += 0.65
		}
	}
	return em * size
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }
