package replayreport

import (
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/engine"
)

// longRule is a rate-rule id longer than any label column: its label must still show whole.
const longRule = "other_market_returning_buyer_with_a_very_long_rate_rule_name"

func dec(t *testing.T, s string) apd.Decimal {
	t.Helper()
	d, _, err := apd.NewFromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return *d
}

// group is a breakdown's group: before and after, the difference computed.
func group(t *testing.T, key, currency string, orders, changed int64, before, after string) engine.ReplayGroup {
	t.Helper()
	g := engine.ReplayGroup{Key: key, Currency: currency, Orders: orders, Changed: changed, Before: dec(t, before), After: dec(t, after)}
	if _, err := engine.SumContext.Sub(&g.Diff, &g.After, &g.Before); err != nil {
		t.Fatal(err)
	}
	return g
}

func verdict(t *testing.T, version int, rule, rate, commission string) *engine.Verdict {
	t.Helper()
	v := &engine.Verdict{PolicyVersion: version, Qualified: rule != "", RateRule: rule, Rate: dec(t, rate), Commission: dec(t, commission), Currency: "USD"}
	if rule == "" {
		v.FailedRules = []string{"completed"}
	}
	return v
}

// sample is a replay of a 6% → 5% candidate that also moves some orders to a rule with a long id:
// USD changed, EUR unchanged, JPY paid for the first time; markets and buyers changed and not;
// three changed orders listed of five (one with no recorded decision, one whose id looks like a
// script); one drifted order; one order the candidate could not decide.
func sample(t *testing.T) *engine.ReplayReport {
	t.Helper()
	rep := &engine.ReplayReport{
		Events: 12, Evaluated: 11, Unrecorded: 1, Errors: map[string]int64{engine.ErrorKindRule: 1},
		NewlyQualified: 1, Changed: 5, CommissionChanged: 5, SameVersion: 2, Drift: 1, ChangesTotal: 5,
		Candidates: []engine.CandidateVersion{{Program: "alibaba", Version: 2, Digest: "sha256:c0ffee", File: "v2.yaml",
			EffectiveFrom: time.Date(2025, 11, 1, 0, 0, 0, 0, time.UTC), Pinned: true, Orders: 11}},
		Recorded: []engine.RecordedVersion{{Program: "alibaba", Version: 1, Digest: "sha256:beef", Orders: 10}},
		ByMarket: []engine.ReplayGroup{group(t, "US", "USD", 6, 4, "100.00", "90.00"), group(t, "DE", "EUR", 3, 0, "50.00", "50.00"),
			group(t, "JP", "JPY", 1, 1, "0", "120")},
		ByBuyer:       []engine.ReplayGroup{group(t, "returning", "USD", 6, 4, "100.00", "90.00"), group(t, "new", "EUR", 3, 0, "50.00", "50.00")},
		TopAffiliates: []engine.ReplayGroup{group(t, "aff-1", "USD", 2, 2, "60.00", "50.00")},
		ErrorSamples:  []engine.ReplayError{{EventID: "e-9", Program: "alibaba", OrderID: "o-9", Kind: engine.ErrorKindRule, Reason: "no rate rule matched"}},
	}
	for _, g := range []struct {
		old, new string
		g        engine.ReplayGroup
	}{
		{"selected_returning", "selected_returning", group(t, "", "USD", 4, 4, "80.00", "66.67")},
		{"other_returning", longRule, group(t, "", "USD", 2, 0, "20.00", "20.00")},
		{"selected_new", "selected_new", group(t, "", "EUR", 3, 0, "50.00", "50.00")},
		{"", "", group(t, "", "USD", 1, 0, "0", "0")},
		{engine.NoRecord, "other_new", group(t, "", "JPY", 1, 1, "0", "120")},
	} {
		rep.ByRateRule = append(rep.ByRateRule, engine.RateRuleGroup{Old: g.old, New: g.new, ReplayGroup: g.g})
	}
	for _, c := range []struct{ currency, before, after string }{{"EUR", "50.00", "50.00"}, {"JPY", "0", "120"}, {"USD", "100.00", "90.00"}} {
		g := group(t, c.currency, c.currency, 3, 1, c.before, c.after)
		if g.Diff.IsZero() {
			g.Changed = 0
		}
		rep.Totals = append(rep.Totals, engine.CurrencyTotal{Currency: c.currency, Orders: g.Orders, Changed: g.Changed, Before: g.Before, After: g.After, Diff: g.Diff})
	}
	placed := time.Date(2025, 10, 1, 5, 17, 14, 0, time.UTC)
	cause := engine.Cause{Kind: engine.CauseTerms, Stage: engine.StageRate, Rule: "selected_returning", Old: "6%", New: "5%"}
	rep.Changes = []engine.OrderChange{
		{EventID: "e-1", Program: "alibaba", OrderID: "o-1", AffiliateID: "aff-1", PlacedAt: placed, Currency: "USD", Market: "US",
			Old: verdict(t, 1, "selected_returning", "6", "6.00"), New: *verdict(t, 2, "selected_returning", "5", "5.00"), Cause: cause},
		{EventID: "e-2", Program: "alibaba", OrderID: "<script>x</script>", AffiliateID: "aff-2", PlacedAt: placed.Add(time.Hour), Currency: "USD",
			Market: "US", Old: verdict(t, 1, "selected_returning", "6", "12.00"), New: *verdict(t, 2, "selected_returning", "5", "10.00"), Cause: cause},
		{EventID: "e-3", Program: "alibaba", OrderID: "o-3", AffiliateID: "aff-3", PlacedAt: placed.Add(2 * time.Hour), Currency: "JPY", Market: "JP",
			NewBuyer: true, New: *verdict(t, 2, "other_new", "9", "120"), Cause: engine.Cause{Kind: engine.CauseNoRecord}},
	}
	rep.Drifted = []engine.OrderChange{{EventID: "e-7", OrderID: "o-7", Old: verdict(t, 1, "selected_new", "10", "10.00"),
		New: *verdict(t, 1, "selected_new", "10", "10.01"), Drift: true, DriftFields: []string{"commission"}}}
	return rep
}

var (
	firstSVG  = regexp.MustCompile(`<svg[ >]`)
	svgText   = regexp.MustCompile(`<text class="label"[^>]*>([^<]*)</text>`)
	orderLink = func(id string) string { return "/ui/orders/" + url.PathEscape(id) }
)

// render writes sample as the standalone page with opts.
func render(t *testing.T, rep *engine.ReplayReport, opts Options) string {
	t.Helper()
	var b strings.Builder
	if err := WriteHTML(&b, rep, opts); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// folded is the text of a breakdown's <details> of unchanged rows ("" without one).
func folded(page, id string) string {
	i := strings.Index(page, `<details class="unchanged" id="`+id+`-unchanged">`)
	if i < 0 {
		return ""
	}
	return page[i : i+strings.Index(page[i:], "</details>")]
}

// TestWriteHTML: the report as pages, one case per way it is shown; each says what the page must
// hold (want), must not (wantNot) and what must come first (before: a before b).
func TestWriteHTML(t *testing.T) {
	cases := []struct {
		name    string
		report  func(t *testing.T) *engine.ReplayReport
		opts    Options
		want    []string
		wantNot []string
		before  [][2]string
		folded  map[string][]string // breakdown id → rows folded in its <details>
	}{{
		name:   "standalone: money first, the unchanged folded, nothing fetched",
		report: sample,
		opts:   Options{Candidate: "v2.yaml", Range: "orders placed in October", MoreChanges: "--changes N lists more", Warnings: []string{"candidate: 1 of its 1 example orders fail"}},
		want: []string{
			"<title>Replay of v2.yaml</title>", "<style>", "<h1>Replay of v2.yaml</h1>",
			`Candidate <strong>v2.yaml</strong> replayed on orders placed in October: 12 events read, 11 decided, 5 with another commission, 1 the candidate could not decide (in no total).`,
			`<li class="warning">warning: candidate: 1 of its 1 example orders fail</li>`,
			// the totals, exact, the changed currencies first
			`<tr class="total" data-currency="USD"><td>USD</td><td class="num">3</td><td class="num">1</td>` + "\n" +
				`<td class="num before">100.00</td><td class="num after">90.00</td><td class="num diff negative">-10.00</td><td class="num">-10.00%</td></tr>`,
			`<td class="num before">0</td><td class="num after">120</td><td class="num diff positive">&#43;120</td><td class="num"></td></tr>`,
			`<tbody class="unchanged">`, `Unchanged: 1 currency, the candidate pays what was recorded`,
			`<g class="bar" data-currency="USD">`, `-10.00% (-10.00 USD)`, `new: &#43;120 JPY`, `1 currency unchanged, not charted`,
			// the long label whole, in one text element
			`>other_returning → ` + longRule + `</text>`,
			`<td class="label">→ other_<wbr>market_<wbr>returning_<wbr>buyer_<wbr>with_<wbr>a_<wbr>very_<wbr>long_<wbr>rate_<wbr>rule_<wbr>name</td>`,
			`<td class="label">selected_returning</td>`, `<details class="unchanged" id="by-rate-rule-unchanged"><summary>2 unchanged rows</summary>`,
			`<th scope="row">Replayed with their recorded version</th><td class="num">2</td><td class="note">drift: 1</td>`,
			// the changes: not linked, the command to explain one; the script-like id escaped
			`<table id="changes">`, `<td class="label"><span class="nobr">o-1</span></td>`, `&lt;script&gt;x&lt;/script&gt;`,
			`5 orders changed; the first 3 by time placed are listed (--changes N lists more).`,
			`<code class="explain">commissioner explain o-1</code>`, `<td class="time">2025-10-01<wbr>T05:17:14Z</td>`,
			`rate selected_returning: 6% → 5%`, `no recorded decision`, `<td class="label">(no decision) → other_new</td>`,
			`id="drift-alert"`, `<td class="label">v1 selected_new 10%</td>`, `<td>10.00 → 10.01</td>`,
			`Not decidable by the candidate: 1 (rule_error 1)`, `no rate rule matched`,
			`<td class="label"><code>sha256:c0ffee</code></td><td class="label">v2.yaml, applied to every order (effective_from 2025-11-01T00:00:00Z not applied)</td>`,
		},
		wantNot: []string{"<script", "<a ", "<link", "src=", "https://", "@import", `<g class="bar" data-currency="EUR">`},
		before: [][2]string{
			{`id="replay-summary"`, `<table id="totals">`}, {`<table id="totals">`, "<svg"}, {`data-currency="USD"`, `<tbody class="unchanged">`},
			{`<tbody class="unchanged">`, `data-currency="EUR"`}, {`id="totals"`, `id="by-rate-rule"`}, {`id="by-rate-rule"`, `id="by-market"`},
			{`id="by-market"`, `id="by-buyer"`}, {`id="by-buyer"`, `id="top-affiliates"`}, {`id="top-affiliates"`, `id="changes"`},
			{`id="changes"`, `id="drifted"`}, {`id="drifted"`, `id="errors"`}, {`id="errors"`, `id="versions-compared"`},
		},
		folded: map[string][]string{
			"by-rate-rule": {`<td class="label">selected_new</td>`, `<td class="label">(not qualified)</td>`},
			"by-market":    {`data-key="DE"`},
			"by-buyer":     {`data-key="new"`},
		},
	}, {
		name:   "in the console: the orders link to their decision page",
		report: sample,
		opts:   Options{Candidate: "alibaba v2 (pasted)", Range: "every stored order", OrderURL: orderLink},
		want: []string{`<a href="/ui/orders/o-1"><span class="nobr">o-1</span></a>`, `<a href="/ui/orders/%3Cscript%3Ex%3C%2Fscript%3E">&lt;script&gt;x&lt;/script&gt;</a>`,
			"5 orders changed; the first 3 by time placed are listed."},
		wantNot: []string{"commissioner explain", "<script"},
	}, {
		name: "nothing changed: every currency unchanged, no chart, no order",
		report: func(t *testing.T) *engine.ReplayReport {
			g := group(t, "US", "USD", 4, 0, "40.00", "40.00")
			return &engine.ReplayReport{Events: 4, Evaluated: 4, Errors: map[string]int64{}, SameVersion: 4,
				Totals:     []engine.CurrencyTotal{{Currency: "USD", Orders: 4, Before: g.Before, After: g.After, Diff: g.Diff}},
				ByRateRule: []engine.RateRuleGroup{{Old: "selected_new", New: "selected_new", ReplayGroup: g}},
				ByMarket:   []engine.ReplayGroup{g}}
		},
		opts: Options{Candidate: "v1.yaml", Range: "every order"},
		want: []string{`<p class="chart-empty" id="change-bars">The commission changed in no currency.</p>`, "No commission changed.", "No order changed.",
			`<tr class="total" data-currency="USD"><td>USD</td>`, `drift: 0`, `<details class="unchanged" id="by-market-unchanged"><summary>1 unchanged row</summary>`},
		wantNot: []string{"<svg", `id="drift-alert"`, "commissioner explain", `id="errors"`},
	}, {
		name: "no order decided",
		report: func(t *testing.T) *engine.ReplayReport {
			return &engine.ReplayReport{Errors: map[string]int64{}}
		},
		opts:    Options{Candidate: "v1.yaml", Range: "no order"},
		want:    []string{"No order was decided: nothing to compare.", "0 events read"},
		wantNot: []string{"<svg", `<tbody class="unchanged">`},
	}, {
		name: "changes counted, none listed (--changes 0)",
		report: func(t *testing.T) *engine.ReplayReport {
			rep := sample(t)
			rep.Changes = nil
			return rep
		},
		opts: Options{Candidate: "v2.yaml", Range: "every order", MoreChanges: "--changes N lists more"},
		want: []string{"5 orders changed; none is listed (--changes N lists more).", "No order listed."},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			page := render(t, c.report(t), c.opts)
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

// TestTotalsBeforeTheFirstChart: whatever the report holds, the money per currency comes before
// any chart.
func TestTotalsBeforeTheFirstChart(t *testing.T) {
	page := render(t, sample(t), Options{Candidate: "v2.yaml"})
	loc := firstSVG.FindStringIndex(page)
	if loc == nil {
		t.Fatal("no chart")
	}
	if i := strings.Index(page, `<tr class="total" data-currency="USD">`); i < 0 || i > loc[0] {
		t.Errorf("the USD total is at %d, the first <svg> at %d: want the money first", i, loc[0])
	}
	// every label of every chart is in the page whole
	var labels []string
	for _, m := range svgText.FindAllStringSubmatch(page, -1) {
		labels = append(labels, m[1])
	}
	for _, want := range []string{"USD", "JPY", "selected_returning → selected_returning", "other_returning → " + longRule,
		"(no decision) → other_new", "US · USD", "JP · JPY", "returning · USD", "newly qualified"} {
		found := false
		for _, l := range labels {
			found = found || l == want
		}
		if !found {
			t.Errorf("no chart label %q in %q", want, labels)
		}
	}
}

func TestPercentOf(t *testing.T) {
	for _, c := range []struct {
		diff, before, want string
		ok                 bool
	}{
		{"-10.00", "100.00", "-10.00%", true},
		{"1", "3", "+33.33%", true},
		{"2", "3", "+66.67%", true},
		{"0.00", "55.10", "0.00%", true},
		{"-118.14", "708.92", "-16.66%", true},
		{"120", "0", "", false},
		{"123456789012345678901234567890.12", "0.01", "+1234567890123456789012345678901200.00%", true},
	} {
		diff, before := dec(t, c.diff), dec(t, c.before)
		got, _, ok := percentOf(&diff, &before)
		if got != c.want || ok != c.ok {
			t.Errorf("percentOf(%s, %s) = %q, %v; want %q, %v", c.diff, c.before, got, ok, c.want, c.ok)
		}
	}
}

func TestBreakable(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"selected_returning", "selected_returning"}, // short: whole
		{"<script>x</script>", "&lt;script&gt;x&lt;/script&gt;"},
		{"rate selected_returning: 6% → 5%", "rate selected_returning: 6% → 5%"},
		{"a_very_long_rate_rule_name", "a_<wbr>very_<wbr>long_<wbr>rate_<wbr>rule_<wbr>name"},
		{"abcdefghijklmnopqrstuvwxyz", "abcdefghijklmnopqrst<wbr>uvwxyz"},
		{"<b>_long_enough_to_break_</b>", "&lt;b&gt;_<wbr>long_<wbr>enough_<wbr>to_<wbr>break_<wbr>&lt;/<wbr>b&gt;"},
		{"alibaba-40", `<span class="nobr">alibaba-40</span>`},
		{"affiliate-with-a-rather-long-identifier", "affiliate-<wbr>with-<wbr>a-<wbr>rather-<wbr>long-<wbr>identifier"},
		{"", ""},
	} {
		if got := string(breakable(c.in)); got != c.want {
			t.Errorf("breakable(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"alibaba-4", "alibaba-4"},
		{"<script>x</script>", "'<script>x</script>'"},
		{"it's", `'it'\''s'`},
		{"a b", "'a b'"},
	} {
		if got := shellQuote(c.in); got != c.want {
			t.Errorf("shellQuote(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
