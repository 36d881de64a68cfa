package replayreport_test

import (
	"fmt"
	"os"
	"strings"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/adapters/replayreport"
	"github.com/commissioner/commissioner/engine"
)

func amount(s string) apd.Decimal {
	d, _, err := apd.NewFromString(s)
	if err != nil {
		panic(err)
	}
	return *d
}

// total is a currency's total, the difference computed exactly.
func total(currency, before, after string, changed int64) engine.CurrencyTotal {
	t := engine.CurrencyTotal{Currency: currency, Orders: 10, Changed: changed, Before: amount(before), After: amount(after)}
	if _, err := engine.SumContext.Sub(&t.Diff, &t.After, &t.Before); err != nil {
		panic(err)
	}
	return t
}

// New lays a replay out: the currencies whose commission changed lead, the others follow; the
// amounts are the exact decimals of the report.
func ExampleNew() {
	rep := &engine.ReplayReport{Events: 20, Evaluated: 20, CommissionChanged: 3, ChangesTotal: 3,
		Totals: []engine.CurrencyTotal{total("EUR", "50.00", "50.00", 0), total("USD", "1222.68", "1147.68", 3)}}
	v := replayreport.New(rep, replayreport.Options{Candidate: "v2.yaml", Range: "every order"})
	for _, r := range append(v.Totals, v.TotalsUnchanged...) {
		fmt.Println(r.Currency, r.Before, r.After, r.Diff, r.Percent)
	}
	fmt.Println(v.TotalsChart.Caption+":", v.TotalsChart.Bars[0].Label, v.TotalsChart.Bars[0].Text)
	// Output:
	// USD 1222.68 1147.68 -75.00 -6.13%
	// EUR 50.00 50.00 0.00 0.00%
	// Change in commission by currency, in % of the recorded commission: USD -6.13% (-75.00 USD)
}

// WriteHTML writes the standalone page: its CSS inline, no script, nothing fetched.
func ExampleWriteHTML() {
	rep := &engine.ReplayReport{Events: 20, Evaluated: 20, Totals: []engine.CurrencyTotal{total("USD", "1222.68", "1147.68", 3)}}
	var page strings.Builder
	if err := replayreport.WriteHTML(&page, rep, replayreport.Options{Candidate: "v2.yaml", Range: "every order"}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	html := page.String()
	fmt.Println(strings.Contains(html, "<title>Replay of v2.yaml</title>"), strings.Contains(html, "<style>"), strings.Contains(html, "<script"))
	fmt.Println(strings.Index(html, `<table id="totals">`) < strings.Index(html, "<svg"))
	// Output:
	// true true false
	// true
}
