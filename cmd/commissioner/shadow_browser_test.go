package main

import (
	"cmp"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// TestShadowHTMLInABrowser opens `shadow report --format html`'s page from a file in a real
// headless Chromium, with long rule ids and causes: no chart text is clipped, nothing is wider
// than the window, the money comes before any chart, the unchanged rows are folded, and the page
// runs no script and fetches nothing.
func TestShadowHTMLInABrowser(t *testing.T) {
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
	rep := &engine.ShadowReport{Events: 240, Compared: 200, Errors: map[string]int64{}, Diverged: 60, CommissionChanged: 60, DivergingTotal: 60,
		Matrix:  engine.QualificationMatrix{BothQualified: 120, LiveOnly: 10, ShadowOnly: 3, NeitherQualify: 67},
		Shadows: []engine.ShadowVersion{{Program: "alibaba", Version: 2, Digest: "sha256:" + strings.Repeat("5a", 32), Events: 240, Orders: 200}},
		Live:    []engine.RecordedVersion{{Program: "alibaba", Version: 1, Digest: "sha256:" + strings.Repeat("be", 32), Orders: 200}}}
	for _, c := range []struct{ currency, before, after string }{{"USD", "23038.29", "21570.08"}, {"EUR", "9529.24", "9529.24"}, {"KWD", "11.674", "11.674"}} {
		x := g(c.currency, c.currency, c.before, c.after, 0)
		rep.Totals = append(rep.Totals, engine.CurrencyTotal{Currency: c.currency, Orders: x.Orders, Changed: 30, Before: x.Before, After: x.After, Diff: x.Diff})
	}
	for _, m := range [][2]string{{"selected_returning", long}, {"other_new", long + "_and_then_some_more_words_to_be_sure"}, {"selected_new", "selected_new"}, {"selected_returning", ""}} {
		changed, after := int64(10), "900.00"
		if m[0] == "selected_new" {
			changed, after = 0, "1000.00"
		}
		rep.ByRateRule = append(rep.ByRateRule, engine.RateRuleGroup{Old: m[0], New: m[1], ReplayGroup: g("", "USD", "1000.00", after, changed)})
	}
	rep.ByCause = []engine.ReplayGroup{g("rate "+long+": no_match → match", "USD", "1000.00", "900.00", 10),
		g("qualify click_in_window_of_thirty_days_with_a_long_id: pass → fail", "USD", "40.00", "0.00", 10)}
	rep.ByMarket = []engine.ReplayGroup{g("US", "USD", "1000.00", "900.00", 10), g("DE", "EUR", "500.00", "500.00", 0)}
	rep.ByBuyer = []engine.ReplayGroup{g("returning", "USD", "1000.00", "900.00", 10), g("new", "USD", "500.00", "500.00", 0)}
	rep.TopAffiliates = []engine.ReplayGroup{g("affiliate-with-a-rather-long-identifier-0001", "USD", "100.00", "90.00", 2)}
	old := &engine.Verdict{PolicyVersion: 1, Qualified: true, RateRule: "selected_returning", Rate: dec("6"), Commission: dec("6.00"), Currency: "USD"}
	for i := range 3 {
		rep.Diverging = append(rep.Diverging, engine.OrderChange{EventID: "e", Program: "alibaba", OrderID: "alibaba-" + strings.Repeat("9", i+1),
			AffiliateID: "aff-0001", PlacedAt: time.Date(2025, 10, 1, 5, i, 0, 0, time.UTC), Currency: "USD", Market: "US", Old: old,
			New:   engine.Verdict{PolicyVersion: 2, Qualified: true, RateRule: long, Rate: dec("5"), Commission: dec("5.00"), Currency: "USD"},
			Cause: engine.Cause{Kind: engine.CauseOutcome, Stage: engine.StageRate, Rule: long, Old: "no_match", New: "match"}})
	}
	path := filepath.Join(t.TempDir(), "shadow.html")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeShadowHTML(f, rep, engine.ShadowFilter{Program: "alibaba", Version: 2}, shadowReportParams{}); err != nil {
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
	checkReportLayout(t, bctx, "the standalone shadow report")
	labels, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("svg text.label")].map(t => t.textContent)`))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"selected_returning → " + long, "rate " + long + ": no_match → match", "newly disqualified"} {
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

// storeShadowOutcomes stores in st what a shadow version 2 of the seed policy (6% → 5% for a
// returning buyer of a selected market) decides of st's decided alibaba events, as serve would
// have with the shadow loaded: the events are decided again, with the shadow beside the seed
// policy, in a scratch store, and the shadow's outcomes written to st.
func storeShadowOutcomes(t *testing.T, st *store.Store) {
	t.Helper()
	ctx := context.Background()
	var events []engine.Event
	if err := st.ReplayHistory(store.EventFilter{Program: "alibaba"}).Walk(ctx, func(batch []engine.ReplayEvent) error {
		for _, e := range batch {
			if e.Recorded != nil {
				events = append(events, e.Event)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(events, func(a, b engine.Event) int { return cmp.Compare(a.StreamSeq, b.StreamSeq) })
	dir, _ := shadowPolicies(t, "", false, returningRate6, strings.Replace(returningRate6, `"6%"`, `"5%"`, 1))
	set, err := rules.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	scratch, err := store.Open(ctx, store.Config{DSN: "sqlite://" + filepath.Join(t.TempDir(), "scratch.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer scratch.Close()
	w, err := engine.ClaimPartition(ctx, scratch, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := w.Write(ctx, engine.New(set), events)
	if err != nil {
		t.Fatal(err)
	}
	// Each outcome belongs to the batch that stored its live decision in st (the store records
	// which events a shadow decided by batch), not to the scratch store's.
	for i := range b.Shadows {
		r := &b.Shadows[i]
		if err := st.DB().QueryRowContext(ctx, "SELECT part, batch_seq FROM decisions WHERE event_id = ?", r.EventID).Scan(&r.Partition, &r.BatchSeq); err != nil {
			t.Fatalf("the batch of event %s: %v", r.EventID, err)
		}
	}
	if n, err := st.WriteShadows(ctx, b.Shadows); err != nil || n == 0 {
		t.Fatalf("storing %d shadow outcomes: %d stored, %v", len(b.Shadows), n, err)
	}
}

// checkShadowPage opens the console's shadow versions (at base, signed in), follows the link to
// the shadow's report and holds it to `shadow report --format json` of the same store: the same
// USD difference; the report's body laid out as the standalone one (nothing clipped, the money
// first).
func checkShadowPage(t *testing.T, bctx context.Context, base string, cfg Config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.CSS(`nav a[href="/ui/shadows"]`)),
		chromedp.Click(chromedp.CSS(`nav a[href="/ui/shadows"]`)), chromedp.WaitVisible(chromedp.CSS(`table#shadows`)),
		chromedp.Click(chromedp.CSS(`table#shadows a[href="/ui/shadows/alibaba/2"]`)), chromedp.WaitVisible(chromedp.CSS(`table#qualification`))); err != nil {
		t.Fatalf("opening the shadow report from the navigation: %v", err)
	}
	checkReportLayout(t, bctx, "the shadow page")
	page, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`table#totals tr.total[data-currency="USD"] td.diff`)))
	if err != nil {
		t.Fatal(err)
	}
	doc := shadowReportDoc(t, cfg, shadowReportParams{Program: "alibaba", Version: 2})
	var cli string
	for _, tot := range doc.Summary.Totals {
		if tot.Currency == "USD" {
			cli = tot.Diff
		}
	}
	if cli == "" || !strings.HasPrefix(cli, "-") || strings.TrimSpace(page) != cli {
		t.Errorf("the shadow page's USD difference %q, shadow report --format json's %q: want the same, negative", page, cli)
	}
}
