package replayreport

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// shadowSample is a shadow report of alibaba v2 (6% → 5% for returning buyers, and one order the
// shadow newly disqualifies): USD changed, EUR unchanged; three diverging orders listed of four
// (one whose id looks like a script); one order the shadow could not decide.
func shadowSample(t *testing.T) (*engine.ShadowReport, engine.ShadowFilter) {
	t.Helper()
	rep := &engine.ShadowReport{
		Shadows: []engine.ShadowVersion{{Program: "alibaba", Version: 2, Digest: "sha256:5ad0", Events: 14, Orders: 11}},
		Live:    []engine.RecordedVersion{{Program: "alibaba", Version: 1, Digest: "sha256:beef", Orders: 10}},
		Events:  14, Compared: 10, Errors: map[string]int64{engine.ErrorKindRule: 1},
		ErrorSamples: []engine.ReplayError{{EventID: "e-9", Program: "alibaba", OrderID: "o-9", Kind: engine.ErrorKindRule, Reason: "division by zero"}},
		Matrix:       engine.QualificationMatrix{BothQualified: 6, LiveOnly: 1, NeitherQualify: 3},
		Diverged:     4, CommissionChanged: 4, DivergingTotal: 4,
		ByMarket:      []engine.ReplayGroup{group(t, "US", "USD", 7, 4, "100.00", "88.00"), group(t, "DE", "EUR", 3, 0, "50.00", "50.00")},
		ByBuyer:       []engine.ReplayGroup{group(t, "returning", "USD", 7, 4, "100.00", "88.00"), group(t, "new", "EUR", 3, 0, "50.00", "50.00")},
		TopAffiliates: []engine.ReplayGroup{group(t, "aff-1", "USD", 2, 2, "60.00", "50.00")},
		ByCause: []engine.ReplayGroup{group(t, "rate selected_returning: 6% → 5%", "USD", 3, 3, "60.00", "50.00"),
			group(t, "qualify completed: pass → fail", "USD", 1, 1, "2.00", "0.00")},
	}
	for _, g := range []struct {
		old, new string
		g        engine.ReplayGroup
	}{
		{"selected_returning", "selected_returning", group(t, "", "USD", 6, 3, "98.00", "88.00")},
		{"selected_returning", "", group(t, "", "USD", 1, 1, "2.00", "0.00")},
		{"selected_new", "selected_new", group(t, "", "EUR", 3, 0, "50.00", "50.00")},
		{"", "", group(t, "", "USD", 3, 0, "0", "0")},
	} {
		rep.ByRateRule = append(rep.ByRateRule, engine.RateRuleGroup{Old: g.old, New: g.new, ReplayGroup: g.g})
	}
	for _, c := range []struct{ currency, before, after string }{{"EUR", "50.00", "50.00"}, {"USD", "100.00", "88.00"}} {
		g := group(t, c.currency, c.currency, 5, 4, c.before, c.after)
		if g.Diff.IsZero() {
			g.Changed = 0
		}
		rep.Totals = append(rep.Totals, engine.CurrencyTotal{Currency: c.currency, Orders: g.Orders, Changed: g.Changed, Before: g.Before, After: g.After, Diff: g.Diff})
	}
	placed := time.Date(2025, 10, 1, 5, 17, 14, 0, time.UTC)
	cause := engine.Cause{Kind: engine.CauseTerms, Stage: engine.StageRate, Rule: "selected_returning", Old: "6%", New: "5%"}
	rep.Diverging = []engine.OrderChange{
		{EventID: "e-2", Program: "alibaba", OrderID: "<script>x</script>", AffiliateID: "aff-2", PlacedAt: placed, Currency: "USD", Market: "US",
			Old: verdict(t, 1, "selected_returning", "6", "12.00"), New: *verdict(t, 2, "selected_returning", "5", "10.00"), Cause: cause},
		{EventID: "e-4", Program: "alibaba", OrderID: "o-4", AffiliateID: "aff-1", PlacedAt: placed.Add(time.Hour), Currency: "USD", Market: "US",
			Old: verdict(t, 1, "selected_returning", "6", "2.00"), New: *verdict(t, 2, "", "0", "0.00"),
			Cause: engine.Cause{Kind: engine.CauseOutcome, Stage: engine.StageQualify, Rule: "completed", Old: "pass", New: "fail"}},
		{EventID: "e-1", Program: "alibaba", OrderID: "o-1", AffiliateID: "aff-1", PlacedAt: placed.Add(2 * time.Hour), Currency: "USD", Market: "US",
			Old: verdict(t, 1, "selected_returning", "6", "6.00"), New: *verdict(t, 2, "selected_returning", "5", "5.00"), Cause: cause},
	}
	f := engine.ShadowFilter{Program: "alibaba", Version: 2, From: time.Date(2025, 10, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2025, 11, 1, 0, 0, 0, 0, time.UTC)}
	return rep, f
}

func renderShadow(t *testing.T, rep *engine.ShadowReport, f engine.ShadowFilter, opts ShadowOptions) string {
	t.Helper()
	var b strings.Builder
	if err := WriteShadowHTML(&b, rep, f, opts); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// loadedShadow is a compiled shadow version 2 of alibaba with the sample line given ("" none),
// and the digest its stored outcomes carry in shadowSample.
func loadedShadow(t *testing.T, sample string) *rules.Policy {
	t.Helper()
	b, err := os.ReadFile("../../policies/alibaba/v1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	if !strings.Contains(src, "\nversion: 1\n") {
		t.Fatal("the seed policy has no line version: 1")
	}
	src = strings.Replace(src, "\nversion: 1\n", "\nversion: 2\nstage: shadow\n"+sample, 1)
	p, problems := rules.Compile("alibaba/v2.yaml", []byte(src))
	if p == nil {
		t.Fatal(problems)
	}
	return p
}

// TestShadowHTML: the shadow report as pages, one case per way it is shown.
func TestShadowHTML(t *testing.T) {
	cases := []struct {
		name    string
		report  func(t *testing.T) (*engine.ShadowReport, engine.ShadowFilter)
		opts    func(t *testing.T, rep *engine.ShadowReport) ShadowOptions
		want    []string
		wantNot []string
		before  [][2]string
		folded  map[string][]string
	}{{
		name:   "standalone: money first, then the matrix, the breakdowns, the orders, the versions",
		report: shadowSample,
		opts: func(t *testing.T, rep *engine.ShadowReport) ShadowOptions {
			return ShadowOptions{MoreOrders: "--orders N lists more"}
		},
		want: []string{
			"<title>Shadow alibaba v2 against the live decisions</title>", "<style>", "<h1>Shadow alibaba v2 against the live decisions</h1>",
			`Shadow <strong>alibaba v2</strong> beside the live decisions of orders placed from 2025-10-01T00:00:00Z to before 2025-11-01T00:00:00Z: 10 orders compared`,
			`4 decided otherwise, 4 with another commission, 1 the shadow could not decide (in no total).`,
			// the totals, exact, live before and shadow after, the changed currency first
			`<th class="num">Live</th><th class="num">Shadow</th><th class="num">Difference</th>`,
			`<tr class="total" data-currency="USD"><td>USD</td><td class="num">5</td><td class="num">4</td>` + "\n" +
				`<td class="num before">100.00</td><td class="num after">88.00</td><td class="num diff negative">-12.00</td><td class="num">-12.00%</td></tr>`,
			`Unchanged: 1 currency, the shadow pays what the live decisions pay`, `<g class="bar" data-currency="USD">`, `-12.00% (-12.00 USD)`,
			// the matrix
			`<table id="qualification" class="matrix">`, `<td class="num both">6</td><td class="num diff negative" id="newly-disqualified">1</td><td class="num">7</td>`,
			`<td class="num diff zero" id="newly-qualified">0</td><td class="num neither">3</td>`,
			`<th scope="row">Newly disqualified</th><td class="num">1</td>`, `>newly disqualified</text>`,
			// the breakdowns, in the shadow's words
			`<h2>By rate rule (live → shadow)</h2>`, `<th>Live rule</th><th>Shadow rule</th>`, `<td class="label">→ (not qualified)</td>`,
			`<h2>By the first rule whose outcome differs</h2>`, `<th>First differing rule</th>`, `>rate selected_returning: 6% → 5%</text>`,
			`3 orders, 3 with another commission`, `Change by buyer market, in % of the live commission`,
			// the diverging orders: both outcomes, the first differing rule, the command
			`<table id="diverging">`, `<td class="label">v1 selected_returning 6%</td><td class="label">v2 selected_returning 5%</td>`,
			`<td class="num">12.00</td><td class="num">10.00</td><td class="num diff negative">-2.00</td>`,
			`v2 not qualified (completed)`, `qualify completed: pass → fail`,
			`<td class="label">&lt;script&gt;x&lt;/script&gt;</td>`,
			`Each order's live decisions, rule by rule: <code class="explain">commissioner explain ORDER_ID --program alibaba</code>; for the first, <code class="explain">commissioner explain &#39;&lt;script&gt;x&lt;/script&gt;&#39; --program alibaba</code>.`,
			`4 orders decided otherwise by the shadow; the 3 with the largest commission differences are listed (--orders N lists more).`,
			`Not decidable by the shadow: 1 (rule_error 1)`, `division by zero`,
			// the events and the versions
			`The shadow decided 14 events of orders placed from`, `10 orders.`,
			`<tr class="shadow"><th scope="row">shadow</th><td>alibaba</td><td>v2</td><td class="label"><code>sha256:5ad0</code></td><td class="num">14</td><td class="num">11</td><td class="label">not known: not among the shadow versions loaded</td></tr>`,
			`<tr class="live"><th scope="row">live</th><td>alibaba</td><td>v1</td>`,
		},
		wantNot: []string{"<script", "<a ", "<link", "src=", "https://", "@import", `<g class="bar" data-currency="EUR">`},
		before: [][2]string{
			{`id="shadow-summary"`, `<table id="totals">`}, {`<table id="totals">`, "<svg"}, {`id="totals"`, `id="qualification"`},
			{`id="qualification"`, `id="by-rate-rule"`}, {`id="by-rate-rule"`, `id="by-cause"`}, {`id="by-cause"`, `id="by-market"`},
			{`id="by-market"`, `id="by-buyer"`}, {`id="by-buyer"`, `id="top-affiliates"`}, {`id="top-affiliates"`, `id="diverging"`},
			{`id="diverging"`, `id="errors"`}, {`id="errors"`, `id="events-seen"`}, {`id="events-seen"`, `id="shadow-versions"`},
		},
		folded: map[string][]string{
			"by-rate-rule": {`<td class="label">selected_new</td>`, `<td class="label">(not qualified)</td>`},
			"by-market":    {`data-key="DE"`},
			"by-buyer":     {`data-key="new"`},
		},
	}, {
		name:   "in the console: orders and live versions linked, the sample of the loaded version",
		report: shadowSample,
		opts: func(t *testing.T, rep *engine.ShadowReport) ShadowOptions {
			p := loadedShadow(t, "sample: 0.25\n")
			rep.Shadows[0].Digest = p.Digest
			return ShadowOptions{Range: "orders placed from 2025-10-01 to 2025-10-31", OrderURL: orderLink,
				PolicyURL: func(program string, version int) string { return "/ui/policies/" + program + "/" + "1" }, Loaded: []*rules.Policy{p}}
		},
		want: []string{`<a href="/ui/orders/%3Cscript%3Ex%3C%2Fscript%3E">&lt;script&gt;x&lt;/script&gt;</a>`, `<a href="/ui/orders/o-1"><span class="nobr">o-1</span></a>`,
			`beside the live decisions of orders placed from 2025-10-01 to 2025-10-31:`, `<td><a href="/ui/policies/alibaba/1">v1</a></td>`,
			`<td class="label">25% of the orders (sample: 0.25)</td>`, "4 orders decided otherwise by the shadow; the 3 with the largest commission differences are listed."},
		wantNot: []string{"commissioner explain", "<script"},
	}, {
		name: "a shadow deciding every order, and nothing diverged",
		report: func(t *testing.T) (*engine.ShadowReport, engine.ShadowFilter) {
			g := group(t, "US", "USD", 4, 0, "40.00", "40.00")
			p := loadedShadow(t, "")
			return &engine.ShadowReport{Events: 4, Compared: 4, Errors: map[string]int64{},
					Shadows:    []engine.ShadowVersion{{Program: "alibaba", Version: 2, Digest: p.Digest, Events: 4, Orders: 4}},
					Matrix:     engine.QualificationMatrix{BothQualified: 4},
					Totals:     []engine.CurrencyTotal{{Currency: "USD", Orders: 4, Before: g.Before, After: g.After, Diff: g.Diff}},
					ByRateRule: []engine.RateRuleGroup{{Old: "selected_new", New: "selected_new", ReplayGroup: g}},
					ByMarket:   []engine.ReplayGroup{g}},
				engine.ShadowFilter{Program: "alibaba", Version: 2}
		},
		opts: func(t *testing.T, rep *engine.ShadowReport) ShadowOptions {
			return ShadowOptions{Loaded: []*rules.Policy{loadedShadow(t, "")}}
		},
		want: []string{`<p class="chart-empty" id="change-bars">The shadow pays what the live decisions pay, in every currency.</p>`,
			"No order diverged: the shadow decides as the live decisions did.", "beside the live decisions of every stored order:",
			`<td class="label">every order</td>`, `<details class="unchanged" id="by-market-unchanged"><summary>1 unchanged row</summary>`},
		wantNot: []string{"<svg", `id="errors"`, "commissioner explain"},
	}, {
		name: "no order compared",
		report: func(t *testing.T) (*engine.ShadowReport, engine.ShadowFilter) {
			return &engine.ShadowReport{Errors: map[string]int64{}}, engine.ShadowFilter{Program: "alibaba", Version: 3, To: time.Date(2025, 11, 1, 0, 0, 0, 0, time.UTC)}
		},
		opts:    func(*testing.T, *engine.ShadowReport) ShadowOptions { return ShadowOptions{} },
		want:    []string{"No order was compared: nothing to price.", "0 orders compared", "orders placed before 2025-11-01T00:00:00Z", "<h1>Shadow alibaba v3 against the live decisions</h1>"},
		wantNot: []string{"<svg", `<tbody class="unchanged">`},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rep, f := c.report(t)
			page := renderShadow(t, rep, f, c.opts(t, rep))
			for _, s := range c.want {
				if !strings.Contains(page, s) {
					t.Errorf("the page lacks %q", s)
				}
			}
			for _, s := range c.wantNot {
				if strings.Contains(strings.ReplaceAll(page, `xmlns="http://www.w3.org/2000/svg"`, ""), s) {
					t.Errorf("the page holds %q", s)
				}
			}
			for _, p := range c.before {
				i, j := strings.Index(page, p[0]), strings.Index(page, p[1])
				if i < 0 || j < 0 || i > j {
					t.Errorf("%q is at %d, %q at %d: want the first before the second", p[0], i, p[1], j)
				}
			}
			for id, rows := range c.folded {
				f := folded(page, id)
				for _, r := range rows {
					if !strings.Contains(f, r) {
						t.Errorf("%s: %q is not folded in its <details>", id, r)
					}
				}
			}
			if t.Failed() {
				t.Logf("the page:\n%s", page)
			}
		})
	}
}

// TestShadowViewIsTheReportsMoney: the view's totals and matrix are the report's, exact; every
// chart label is whole in the page and the money comes before any chart.
func TestShadowViewIsTheReportsMoney(t *testing.T) {
	rep, f := shadowSample(t)
	v := NewShadow(rep, f, ShadowOptions{})
	rows := append(append([]Row(nil), v.Totals...), v.TotalsUnchanged...)
	if len(rows) != len(rep.Totals) {
		t.Fatalf("%d rows for %d currencies", len(rows), len(rep.Totals))
	}
	for _, tot := range rep.Totals {
		found := false
		for _, r := range rows {
			if r.Currency == tot.Currency {
				found = true
				if r.Before != tot.Before.Text('f') || r.After != tot.After.Text('f') || r.Diff != signed(&tot.Diff) {
					t.Errorf("%s: view %s %s %s, report %s %s %s", tot.Currency, r.Before, r.After, r.Diff, tot.Before.Text('f'), tot.After.Text('f'), signed(&tot.Diff))
				}
			}
		}
		if !found {
			t.Errorf("%s is not in the view", tot.Currency)
		}
	}
	if m := v.Matrix; m.Total != rep.Compared || m.LiveQualified != 7 || m.ShadowQualified != 6 || m.LiveNot != 3 || m.ShadowNot != 4 {
		t.Errorf("matrix %+v: want the margins of 6, 1, 0, 3 (10 orders)", m)
	}
	page := renderShadow(t, rep, f, ShadowOptions{})
	loc := firstSVG.FindStringIndex(page)
	if loc == nil {
		t.Fatal("no chart")
	}
	if i := strings.Index(page, `<tr class="total" data-currency="USD">`); i < 0 || i > loc[0] {
		t.Errorf("the USD total is at %d, the first <svg> at %d: want the money first", i, loc[0])
	}
	var labels []string
	for _, m := range svgText.FindAllStringSubmatch(page, -1) {
		labels = append(labels, m[1])
	}
	for _, want := range []string{"USD", "selected_returning → selected_returning", "selected_returning → (not qualified)",
		"rate selected_returning: 6% → 5%", "qualify completed: pass → fail", "US · USD", "returning · USD", "newly disqualified"} {
		found := false
		for _, l := range labels {
			found = found || l == want
		}
		if !found {
			t.Errorf("no chart label %q in %q", want, labels)
		}
	}
}

func TestSampleOf(t *testing.T) {
	for _, c := range []struct{ sample, want string }{
		{"", "every order"},
		{"sample: 0.1\n", "10% of the orders (sample: 0.1)"},
		{"sample: 0.125\n", "12.5% of the orders (sample: 0.125)"},
		{"sample: 0.50\n", "50% of the orders (sample: 0.50)"},
		{"sample: 1\n", "100% of the orders (sample: 1)"},
	} {
		p := loadedShadow(t, c.sample)
		sv := engine.ShadowVersion{Program: p.Program, Version: p.Version, Digest: p.Digest}
		if got := sampleOf([]*rules.Policy{p}, sv); got != c.want {
			t.Errorf("%q: sampleOf = %q, want %q", c.sample, got, c.want)
		}
		sv.Digest = "sha256:other"
		if got := sampleOf([]*rules.Policy{p}, sv); !strings.HasPrefix(got, "not known") {
			t.Errorf("another digest: sampleOf = %q, want not known", got)
		}
	}
}
