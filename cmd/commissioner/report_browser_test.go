package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/engine"
)

// reportLayoutCheck is run in a page that shows the replay report (the what-if page, the
// standalone file): what it returns is what is wrong — a chart's text outside its SVG (clipped),
// the page wider than the window (a table or chart cut at its right edge), a chart before the
// money, unchanged rows shown unfolded.
const reportLayoutCheck = `(() => {
  const wrong = [];
  for (const svg of document.querySelectorAll("svg")) {
    const vb = svg.viewBox.baseVal;
    for (const t of svg.querySelectorAll("text")) {
      const b = t.getBBox();
      if (b.x < -0.5 || b.y < -0.5 || b.x + b.width > vb.width + 0.5 || b.y + b.height > vb.height + 0.5) {
        wrong.push("clipped: " + JSON.stringify(t.textContent) + " spans x " + b.x.toFixed(1) + " to " + (b.x + b.width).toFixed(1) +
          ", y " + b.y.toFixed(1) + " to " + (b.y + b.height).toFixed(1) + " in a " + vb.width + " × " + vb.height + " SVG");
      }
    }
  }
  const page = document.documentElement.scrollWidth;
  if (page > window.innerWidth) wrong.push("the page is " + page + " px wide in a " + window.innerWidth + " px window");
  const totals = document.querySelector("table#totals"), chart = document.querySelector("svg");
  if (!totals) wrong.push("no totals table");
  else if (chart && chart.getBoundingClientRect().top < totals.getBoundingClientRect().bottom) wrong.push("a chart comes before the money");
  for (const d of document.querySelectorAll("details.unchanged")) if (d.open) wrong.push(d.id + " is open");
  if (document.querySelectorAll("details.unchanged").length === 0) wrong.push("no unchanged rows folded");
  return wrong;
})()`

// checkReportLayout fails the test for everything reportLayoutCheck finds in the page bctx shows.
func checkReportLayout(t *testing.T, bctx context.Context, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
	defer cancel()
	wrong, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](reportLayoutCheck))
	if err != nil {
		t.Fatalf("%s: checking the layout: %v", what, err)
	}
	for _, w := range wrong {
		t.Errorf("%s: %s", what, w)
	}
}

// TestReplayHTMLInABrowser opens `replay --format html`'s page from a file in a real headless
// Chromium, at the console's window size, with the labels that were once clipped and longer
// ones: no text is clipped, nothing is wider than the window, the money comes first, the
// unchanged rows are folded, and the page runs no script and fetches nothing.
func TestReplayHTMLInABrowser(t *testing.T) {
	bctx := browser(t)
	dec := func(s string) apd.Decimal {
		d, _, err := apd.NewFromString(s)
		if err != nil {
			t.Fatal(err)
		}
		return *d
	}
	g := func(key, currency, before, after string, changed int64) engine.ReplayGroup {
		r := engine.ReplayGroup{Key: key, Currency: currency, Orders: 40, Changed: changed, Before: dec(before), After: dec(after)}
		engine.SumContext.Sub(&r.Diff, &r.After, &r.Before)
		return r
	}
	const long = "other_market_returning_buyer_with_a_very_long_rate_rule_name"
	rep := &engine.ReplayReport{Events: 200, Evaluated: 200, Errors: map[string]int64{}, Changed: 60, CommissionChanged: 60, ChangesTotal: 60}
	for _, c := range []struct{ currency, before, after string }{{"USD", "23038.29", "21570.08"}, {"EUR", "9529.24", "9529.24"}, {"KWD", "11.674", "11.674"}} {
		x := g(c.currency, c.currency, c.before, c.after, 0)
		rep.Totals = append(rep.Totals, engine.CurrencyTotal{Currency: c.currency, Orders: x.Orders, Changed: 30, Before: x.Before, After: x.After, Diff: x.Diff})
	}
	for _, m := range [][2]string{{"er_returning", "other_returning"}, {"other_returning", "other_returning"}, {"selected_returning", "selected_returning"},
		{"selected_returning", long}, {"other_new", long + "_and_then_some_more_words_to_be_sure"}, {"selected_new", "selected_new"}} {
		changed := int64(0)
		if m[0] != "selected_new" {
			changed = 10
		}
		after := "900.00"
		if changed == 0 {
			after = "1000.00"
		}
		rep.ByRateRule = append(rep.ByRateRule, engine.RateRuleGroup{Old: m[0], New: m[1], ReplayGroup: g("", "USD", "1000.00", after, changed)})
	}
	rep.ByMarket = []engine.ReplayGroup{g("US", "USD", "1000.00", "900.00", 10), g("DE", "EUR", "500.00", "500.00", 0)}
	rep.ByBuyer = []engine.ReplayGroup{g("returning", "USD", "1000.00", "900.00", 10), g("new", "USD", "500.00", "500.00", 0)}
	rep.TopAffiliates = []engine.ReplayGroup{g("affiliate-with-a-rather-long-identifier-0001", "USD", "100.00", "90.00", 2)}
	old := &engine.Verdict{PolicyVersion: 1, Qualified: true, RateRule: "selected_returning", Rate: dec("6"), Commission: dec("6.00"), Currency: "USD"}
	for i := range 3 {
		rep.Changes = append(rep.Changes, engine.OrderChange{EventID: "e", Program: "alibaba", OrderID: "alibaba-" + strings.Repeat("9", i+1),
			AffiliateID: "aff-0001", PlacedAt: time.Date(2025, 10, 1, 5, i, 0, 0, time.UTC), Currency: "USD", Market: "US", Old: old,
			New:   engine.Verdict{PolicyVersion: 2, Qualified: true, RateRule: long, Rate: dec("5"), Commission: dec("5.00"), Currency: "USD"},
			Cause: engine.Cause{Kind: engine.CauseOutcome, Stage: engine.StageRate, Rule: long, Old: "no_match", New: "match"}})
	}
	run := &replayRun{Params: replayParams{Source: "store", Program: "alibaba"}, Candidate: "policies/alibaba/v3.yaml", Report: rep, ChangesCap: 100}
	path := filepath.Join(t.TempDir(), "report.html")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeReportHTML(f, run); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate("file://"+path), chromedp.WaitVisible(chromedp.CSS(`table#totals`))); err != nil {
		t.Fatalf("opening the report: %v", err)
	}
	checkReportLayout(t, bctx, "the standalone report")
	labels, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("svg text.label")].map(t => t.textContent)`))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"er_returning → other_returning", "selected_returning → " + long} {
		found := false
		for _, l := range labels {
			found = found || l == want
		}
		if !found {
			t.Errorf("no chart label %q among %q", want, labels)
		}
	}
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("script, link, img, iframe, object, a[href]").length`))
	if err != nil || n != 0 {
		t.Errorf("the report has %d script, link, img, iframe, object or link elements (%v): want none", n, err)
	}
}
