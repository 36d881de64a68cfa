package replayreport_test

import (
	"fmt"
	"os"
	"strings"

	"github.com/commissioner/commissioner/adapters/replayreport"
	"github.com/commissioner/commissioner/engine"
)

// NewShadow lays a shadow report out in the replay report's shapes: the live decisions are
// before, the shadow after; the changed currencies lead.
func ExampleNewShadow() {
	rep := &engine.ShadowReport{Events: 24, Compared: 20, Diverged: 3, CommissionChanged: 3,
		Matrix: engine.QualificationMatrix{BothQualified: 14, NeitherQualify: 6},
		Totals: []engine.CurrencyTotal{total("EUR", "50.00", "50.00", 0), total("USD", "1222.68", "1147.68", 3)}}
	v := replayreport.NewShadow(rep, engine.ShadowFilter{Program: "alibaba", Version: 2}, replayreport.ShadowOptions{})
	fmt.Println(v.Title)
	for _, r := range append(v.Totals, v.TotalsUnchanged...) {
		fmt.Println(r.Currency, r.Before, r.After, r.Diff, r.Percent)
	}
	fmt.Println(v.Matrix.LiveQualified, v.Matrix.ShadowQualified, v.Matrix.Total)
	// Output:
	// Shadow alibaba v2 against the live decisions
	// USD 1222.68 1147.68 -75.00 -6.13%
	// EUR 50.00 50.00 0.00 0.00%
	// 14 14 20
}

// WriteShadowHTML writes the standalone page: its CSS inline, no script, the money first.
func ExampleWriteShadowHTML() {
	rep := &engine.ShadowReport{Events: 20, Compared: 20, Totals: []engine.CurrencyTotal{total("USD", "1222.68", "1147.68", 3)}}
	var page strings.Builder
	if err := replayreport.WriteShadowHTML(&page, rep, engine.ShadowFilter{Program: "alibaba", Version: 2}, replayreport.ShadowOptions{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	html := page.String()
	fmt.Println(strings.Contains(html, "<title>Shadow alibaba v2 against the live decisions</title>"), strings.Contains(html, "<script"))
	fmt.Println(strings.Index(html, `<table id="totals">`) < strings.Index(html, "<svg"))
	// Output:
	// true false
	// true
}
