package engine_test

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// loadPolicyFile writes src to dir/name and loads it as replay --policy FILE would.
func loadPolicyFile(t testing.TB, dir, name string, src []byte) (*rules.Set, *rules.Policy) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, src, 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := rules.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return set, set.All()[0]
}

func mustAxis(t testing.TB, spec string) engine.SweepAxis {
	t.Helper()
	ax, err := engine.ParseSweepAxis(spec)
	if err != nil {
		t.Fatal(err)
	}
	return ax
}

// sameReport reports whether a sweep point's report is the replay's of its file, but for the
// name of the file (the point's policy keeps the base's; the replay's is where it was written).
func sameReport(got, want *engine.ReplayReport) bool {
	g, w := *got, *want
	g.Candidates, w.Candidates = append([]engine.CandidateVersion(nil), g.Candidates...), append([]engine.CandidateVersion(nil), w.Candidates...)
	for i := range g.Candidates {
		g.Candidates[i].File = ""
	}
	for i := range w.Candidates {
		w.Candidates[i].File = ""
	}
	return reflect.DeepEqual(g, w)
}

// sweepHistory is recorded decisions of varied orders, with what a replay must count besides:
// events that are not valid orders, and events with no recorded decision.
func sweepHistory(t testing.TB, set *rules.Set, orders [][]byte) []engine.ReplayEvent {
	t.Helper()
	events := recordedHistory(t, set, orders)
	for i := range events {
		switch i % 37 {
		case 5:
			events[i].Event.Raw = []byte(`{"order_id":"broken-` + itoa(i) + `","program":`)
			events[i].Recorded = nil
		case 11:
			events[i].Recorded = nil
		}
	}
	return events
}

// TestSweepPointsEqualSeparateReplays: each point of a sweep reports exactly what a replay of
// that point's file reports, whatever the workers and however the history is split.
func TestSweepPointsEqualSeparateReplays(t *testing.T) {
	dir := t.TempDir()
	_, base := loadPolicyFile(t, dir, "v2.yaml", []byte(seedVariant(t, 2, "2025-11-01T00:00:00Z")))
	events := sweepHistory(t, seedSet(t), replayOrders(600, 21))
	axes := []engine.SweepAxis{mustAxis(t, "selected_returning.rate=4%..6%/1%"), mustAxis(t, "other_new.rate=8.5,9")}
	points, resolved, err := engine.SweepPoints(base, axes)
	if err != nil {
		t.Fatal(err)
	}
	if len(points) != 6 || len(resolved) != 2 {
		t.Fatalf("%d points, %d ranges; want 3 × 2 = 6, 2", len(points), len(resolved))
	}
	var labels []string
	digests := map[string]bool{}
	for _, p := range points {
		labels = append(labels, p.Label())
		digests[p.Policy.Digest] = true
	}
	wantLabels := []string{
		"selected_returning.rate=4%, other_new.rate=8.5%", "selected_returning.rate=4%, other_new.rate=9%",
		"selected_returning.rate=5%, other_new.rate=8.5%", "selected_returning.rate=5%, other_new.rate=9%",
		"selected_returning.rate=6%, other_new.rate=8.5%", "selected_returning.rate=6%, other_new.rate=9%",
	}
	if !reflect.DeepEqual(labels, wantLabels) {
		t.Errorf("points %q\nwant %q (the first range varies slowest)", labels, wantLabels)
	}
	if len(digests) != 6 || !digests[base.Digest] { // 6% and 9% are the base's own terms
		t.Errorf("%d digests, base's among them: %v; want 6, each point its own, the last the base's", len(digests), digests[base.Digest])
	}
	sets := make([]*rules.Set, len(points))
	for i := range points {
		sets[i] = points[i].Set
	}
	for _, c := range []struct {
		name string
		h    engine.History
		opts engine.ReplayOptions
	}{
		{"one worker", &sliceHistory{events: events, size: 50}, engine.ReplayOptions{Workers: 1}},
		{"a pool of workers", &sliceHistory{events: events, size: 17}, engine.ReplayOptions{Workers: 3, MaxChanges: 10}},
		{"a history in parts", &partedHistory{sliceHistory{events: events, size: 9}}, engine.ReplayOptions{Workers: 2, MaxChanges: 10}},
	} {
		t.Run(c.name, func(t *testing.T) {
			reports, err := engine.ReplaySweep(context.Background(), sets, c.h, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range points {
				// the point's file, written out and loaded as replay --policy FILE does
				set, _ := loadPolicyFile(t, t.TempDir(), "v2.yaml", p.Policy.Source)
				want := mustReplay(t, set, c.h, c.opts)
				if !sameReport(reports[i], want) {
					t.Errorf("point %d (%s): the sweep's report differs from a replay of its file:\n got %+v\nwant %+v", i+1, p.Label(), reports[i].Totals, want.Totals)
				}
			}
			if r := reports[0]; r.Events != 600 || r.Errors[engine.ErrorKindInvalid] == 0 || r.Unrecorded == 0 || r.CommissionChanged == 0 {
				t.Errorf("point 1: events %d, invalid %d, unrecorded %d, changed %d; want 600 and some of each", r.Events, r.Errors[engine.ErrorKindInvalid], r.Unrecorded, r.CommissionChanged)
			}
			if r := reports[5]; r.SameVersion != 0 || r.CommissionChanged != 0 {
				t.Errorf("the base's own terms: same version %d, changed %d; want 0 (another version number), 0", r.SameVersion, r.CommissionChanged)
			}
		})
	}
}

// TestSweepOfFlatAmountsAndAffiliateMonths: flat amounts sweep like rates, and a policy that reads
// the affiliate's month gets the recorded one at every point, from the one decoded order.
func TestSweepOfFlatAmountsAndAffiliateMonths(t *testing.T) {
	for _, c := range []struct {
		file, program string
		axes          []string
	}{
		{"../policies/examples/hybrid/v1.yaml", "hybrid", []string{"new_buyer.flat.USD=8.00..12.00/2", "returning_buyer.rate=2.5%,3%"}},
		{"../policies/examples/tiered/v1.yaml", "tiered", nil},
	} {
		t.Run(c.program, func(t *testing.T) {
			set, err := rules.LoadFile(c.file)
			if err != nil {
				t.Fatal(err)
			}
			base := set.All()[0]
			var orders [][]byte
			for _, o := range replayOrders(300, 5) {
				orders = append(orders, []byte(strings.Replace(string(o), `"program":"alibaba"`, `"program":"`+c.program+`"`, 1)))
			}
			events := sweepHistory(t, set, orders)
			if c.axes == nil { // tiered: sweep the rate of every tier there is
				for _, r := range base.Rates {
					c.axes = append(c.axes, r.ID+".rate="+r.Rate.Text('f')+"%,"+r.Rate.Text('f')+".5%")
				}
				for i := range events { // the months as recorded, some of them
					if rec := events[i].Recorded; rec != nil && i%3 == 0 {
						rec.Affiliate = &engine.AffiliateMonth{Month: engine.MonthOf(decode(t, string(orders[i])).PlacedAt), QualifiedOrders: int64(i)}
						rec.Affiliate.QualifiedSales.SetInt64(int64(i) * 1000)
					}
				}
			}
			var axes []engine.SweepAxis
			for _, a := range c.axes {
				axes = append(axes, mustAxis(t, a))
			}
			points, _, err := engine.SweepPoints(base, axes)
			if err != nil {
				t.Fatal(err)
			}
			sets := make([]*rules.Set, len(points))
			for i := range points {
				sets[i] = points[i].Set
			}
			h := &sliceHistory{events: events, size: 13}
			reports, err := engine.ReplaySweep(context.Background(), sets, h, engine.ReplayOptions{Workers: 2})
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range points {
				set, _ := loadPolicyFile(t, t.TempDir(), "v.yaml", p.Policy.Source)
				if want := mustReplay(t, set, h, engine.ReplayOptions{Workers: 2}); !sameReport(reports[i], want) {
					t.Errorf("point %d (%s): the sweep's report differs from a replay of its file", i+1, p.Label())
				}
			}
		})
	}
}

// TestReplaySweepOfUnlikeCandidates: candidates whose rules differ (not a sweep's points) are
// each decided in full, and still report what separate replays report.
func TestReplaySweepOfUnlikeCandidates(t *testing.T) {
	events := sweepHistory(t, seedSet(t), replayOrders(300, 23))
	sets := []*rules.Set{
		mustSet(t, map[string]string{"alibaba/v2.yaml": seedVariant(t, 2, "2025-11-01T00:00:00Z", returningSelected6, strings.Replace(returningSelected6, `"6%"`, `"5%"`, 1))}),
		// another condition, another qualification rule, another constant
		mustSet(t, map[string]string{"alibaba/v3.yaml": seedVariant(t, 3, "2025-11-01T00:00:00Z",
			"rates:\n", "rates:\n  - id: us_promo\n    when: order.buyer.country == \"US\"\n    rate: \"12%\"\n",
			"  - id: click_in_window\n", "  - id: click_in_window_gone\n",
			"banned_traffic_countries: [CN, IN, NG]", "banned_traffic_countries: [CN, IN]")}),
		seedSet(t), // v1 itself: reproduces
		mustSet(t, map[string]string{"alibaba/v2.yaml": seedVariant(t, 2, "2025-11-01T00:00:00Z", returningSelected6, strings.Replace(returningSelected6, `"6%"`, `"7%"`, 1))}),
	}
	h := &sliceHistory{events: events, size: 11}
	reports, err := engine.ReplaySweep(context.Background(), sets, h, engine.ReplayOptions{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i, set := range sets {
		if want := mustReplay(t, set, h, engine.ReplayOptions{Workers: 2}); !reflect.DeepEqual(reports[i], want) {
			t.Errorf("candidate %d: the sweep's report differs from a replay's", i+1)
		}
	}
	if reports[2].SameVersion == 0 || reports[2].Drift != 0 || reports[1].CommissionChanged == reports[0].CommissionChanged {
		t.Errorf("v1: same version %d, drift %d; want some, 0; v3 changed %d, as many as v2 (%d)", reports[2].SameVersion, reports[2].Drift, reports[1].CommissionChanged, reports[0].CommissionChanged)
	}
}

func TestParseSweepAxis(t *testing.T) {
	for _, c := range []struct {
		spec, term string
		values     []string // as written into the policy
		err        string
	}{
		{spec: "selected_returning.rate=4%..7%/0.5%", term: "selected_returning.rate", values: []string{"4%", "4.5%", "5%", "5.5%", "6%", "6.5%", "7%"}},
		{spec: "selected_returning.rate=4..7/0.5", term: "selected_returning.rate", values: []string{"4%", "4.5%", "5%", "5.5%", "6%", "6.5%", "7%"}},
		// the end is included only when it lands on a step
		{spec: "x.rate=4%..5%/0.3%", term: "x.rate", values: []string{"4%", "4.3%", "4.6%", "4.9%"}},
		{spec: "x.rate=5%..5%", term: "x.rate", values: []string{"5%"}},
		{spec: "x.rate=0%..100%/50%", term: "x.rate", values: []string{"0%", "50%", "100%"}},
		{spec: "x.rate=5.50%,6%,4.25%", term: "x.rate", values: []string{"5.5%", "6%", "4.25%"}},
		{spec: "x.flat=1.00..3.00/0.50", term: "x.flat", values: []string{"1.00", "1.50", "2.00", "2.50", "3.00"}},
		{spec: "x.flat.USD=1..2/0.25", term: "x.flat.USD", values: []string{"1.00", "1.25", "1.50", "1.75", "2.00"}},
		{spec: "x.flat.JPY=100..300/100", term: "x.flat.JPY", values: []string{"100", "200", "300"}},
		{spec: "x.rate=1%..64%/1%", term: "x.rate", values: nil}, // 64: the most
		// mistakes
		{spec: "x.rate", err: `--sweep "x.rate": want TERM=FROM..TO/STEP`},
		{spec: "x.rate=", err: `no values after =`},
		{spec: "x.fee=1..2/1", err: `a rate rule's terms are x.rate and x.flat`},
		{spec: "x.rate=7%..4%/0.5%", err: `from 7% is above to 4%`},
		{spec: "x.rate=4%..7%", err: `a range needs a step: 4%..7%/STEP`},
		{spec: "x.rate=4%..7%/0%", err: `the step must be above 0`},
		{spec: "x.rate=4%..7%/-1%", err: `step: -1% is below 0`},
		{spec: "x.rate=90%..110%/10%", err: `to: 110% is above 100%`},
		{spec: "x.rate=four..7/1", err: `from: "four" is not a percentage such as 5% or 5.5%`},
		{spec: "x.rate=1e1..2e1/1", err: `from: "1e1" is not a percentage`},
		{spec: "x.flat=1.00..3.00/0.50%", err: `step: "0.50%" is not a decimal amount such as 2.50`},
		{spec: "x.rate=0%..100%/1%", err: `0%..100% by 1% is 101 points; a sweep has at most 64`},
		{spec: "x.rate=0%..100%/0.0000001%", err: `is 1000000001 points; a sweep has at most 64`},
		{spec: "x.rate=5%,5.0%", err: `5% is listed twice`},
	} {
		t.Run(c.spec, func(t *testing.T) {
			ax, err := engine.ParseSweepAxis(c.spec)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Errorf("got %v, want an error with %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, v := range ax.Values {
				got = append(got, ax.Term.Format(v))
			}
			if ax.Term.String() != c.term || c.values != nil && !reflect.DeepEqual(got, c.values) {
				t.Errorf("got %s = %q, want %s = %q", ax.Term, got, c.term, c.values)
			}
		})
	}
}

func TestSweepPointsRefuses(t *testing.T) {
	_, base := loadPolicyFile(t, t.TempDir(), "v2.yaml", []byte(seedVariant(t, 2, "2025-11-01T00:00:00Z")))
	for _, c := range []struct {
		axes []string
		err  string
	}{
		{[]string{"selected_returnin.rate=4%..7%/1%"}, `--sweep selected_returnin.rate=4%..7%/1%: ` + base.File + `: no rate rule "selected_returnin" (the rate rules: selected_new, selected_returning, other_new, other_returning)`},
		{[]string{"selected_new.flat=1..2/1"}, `rule selected_new pays no flat amount, only a rate: nothing for selected_new.flat to vary`},
		{[]string{"selected_new.rate=1%..8%/1%", "other_new.rate=1%..9%/1%"}, `the sweep has 8 × 9 = 72 points; at most 64 in one sweep`},
		{[]string{"selected_new.rate=1%,2%", "selected_new.rate=3%"}, `--sweep selected_new.rate=3%: selected_new.rate is swept already (--sweep selected_new.rate=1%,2%)`},
	} {
		var axes []engine.SweepAxis
		for _, a := range c.axes {
			axes = append(axes, mustAxis(t, a))
		}
		if _, _, err := engine.SweepPoints(base, axes); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%q: got %v\nwant an error with %q", c.axes, err, c.err)
		}
	}
}

func TestParseBudget(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{in: "USD:-5000", want: "USD:-5000"},
		{in: "EUR:+2000.50", want: "EUR:2000.50"},
		{in: "JPY:0", want: "JPY:0"},
		{in: "USD:-0", want: "USD:0"},
		{in: "USD", err: `--budget "USD": want CUR:AMOUNT, e.g. USD:-5000`},
		{in: "usd:-5000", err: `"usd" is not an ISO 4217 currency code`},
		{in: "XXY:1", err: `"XXY" is not an ISO 4217 currency code`},
		{in: "USD:-5,000", err: `"-5,000" is not a decimal amount`},
		{in: "USD:", err: `"" is not a decimal amount`},
		{in: "USD:1e3", err: `"1e3" is not a decimal amount`},
	} {
		b, err := engine.ParseBudget(c.in)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q: got %v, want an error with %q", c.in, err, c.err)
		case c.err == "" && (err != nil || b.String() != c.want):
			t.Errorf("%q: got %v, %v; want %s", c.in, b.String(), err, c.want)
		}
	}
}

// reportWithDiffs is a report whose totals have these differences (currency → diff).
func reportWithDiffs(t *testing.T, diffs map[string]string) *engine.ReplayReport {
	rep := &engine.ReplayReport{}
	for cur, d := range diffs {
		var ct engine.CurrencyTotal
		ct.Currency = cur
		if _, _, err := ct.Diff.SetString(d); err != nil {
			t.Fatal(err)
		}
		rep.Totals = append(rep.Totals, ct)
	}
	return rep
}

func TestBudgetCrossing(t *testing.T) {
	// a curve of USD differences, one per point
	for _, c := range []struct {
		name    string
		budget  string
		diffs   []string
		point   int // 1-based
		keeps   bool
		keeping int
	}{
		{"a saving: the least cut that saves enough", "USD:-5000", []string{"-14058.28", "-10543.71", "-7029.14", "-3514.57", "0.00", "3514.57"}, 3, true, 3},
		{"a saving exactly met", "USD:-7029.14", []string{"-14058.28", "-7029.14", "-3514.57"}, 2, true, 2},
		{"no point saves enough: the closest", "USD:-20000", []string{"-14058.28", "-7029.14", "0.00"}, 1, false, 0},
		{"a cost ceiling: the most generous within it", "USD:4000", []string{"-3514.57", "0.00", "3514.57", "7029.14"}, 3, true, 3},
		{"no increase at all", "USD:0", []string{"3514.57", "0.00", "-3514.57"}, 2, true, 2},
		{"every point over a ceiling: the cheapest", "USD:100", []string{"700.00", "300.00", "500.00"}, 2, false, 0},
		{"a tie: the first point", "USD:-10", []string{"-20.00", "-20.00", "0.00"}, 1, true, 2},
		{"a non-monotonic grid", "USD:-100", []string{"-150.00", "-90.00", "-120.00", "-300.00"}, 3, true, 3},
		{"a currency with no orders: a difference of 0", "GBP:-1", []string{"-1.00", "-2.00"}, 1, false, 0},
		{"a currency with no orders keeps to a positive budget", "GBP:0", []string{"-1.00", "-2.00"}, 1, true, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := engine.ParseBudget(c.budget)
			if err != nil {
				t.Fatal(err)
			}
			var reps []*engine.ReplayReport
			for _, d := range c.diffs {
				reps = append(reps, reportWithDiffs(t, map[string]string{"USD": d, "EUR": "-99999.00"}))
			}
			got := b.Crossing(reps)
			want, _ := b.Difference(reps[c.point-1])
			if got.Point != c.point-1 || got.Keeps != c.keeps || got.Keeping != c.keeping || got.Difference.Cmp(&want) != 0 {
				t.Errorf("got point %d (keeps %v, %d keeping, difference %s); want point %d (keeps %v, %d keeping, difference %s)",
					got.Point+1, got.Keeps, got.Keeping, got.Difference.Text('f'), c.point, c.keeps, c.keeping, want.Text('f'))
			}
		})
	}
}

func TestBudgetKeeps(t *testing.T) {
	for _, c := range []struct {
		budget, diff string
		keeps        bool
	}{
		{"USD:-5000", "-5000.00", true}, // exactly the saving asked
		{"USD:-5000", "-5000.01", true},
		{"USD:-5000", "-4999.99", false}, // saves less than asked
		{"USD:-5000", "0.00", false},
		{"USD:2000", "2000.00", true}, // exactly the cost allowed
		{"USD:2000", "2000.01", false},
		{"USD:2000", "-10.00", true},
		{"USD:0", "0.00", true},
		{"USD:0", "0.01", false},
	} {
		b, err := engine.ParseBudget(c.budget)
		if err != nil {
			t.Fatal(err)
		}
		d, _, _ := apd.NewFromString(c.diff)
		if got := b.Keeps(d); got != c.keeps {
			t.Errorf("budget %s, difference %s: keeps %v, want %v", c.budget, c.diff, got, c.keeps)
		}
	}
}

// BenchmarkReplaySweep is BenchmarkReplay's engine share for a sweep of 8 points: the events are
// decoded once and decided 8 times. Compare its cpu-ns/op with BenchmarkReplay's.
//
//	go test ./engine -run '^$' -bench 'Replay(Sweep)?$' -benchtime 5x
func BenchmarkReplaySweep(b *testing.B) {
	events := recordedHistory(b, seedSet(b), replayOrders(20000, 10))
	_, base := loadPolicyFile(b, b.TempDir(), "v2.yaml", []byte(seedVariant(b, 2, "2025-11-01T00:00:00Z")))
	points, _, err := engine.SweepPoints(base, []engine.SweepAxis{mustAxis(b, "selected_returning.rate=4%..7.5%/0.5%")})
	if err != nil {
		b.Fatal(err)
	}
	sets := make([]*rules.Set, len(points))
	for i := range points {
		sets[i] = points[i].Set
	}
	h := &sliceHistory{events: events, size: 512}
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		if _, err := engine.ReplaySweep(context.Background(), sets, h, engine.ReplayOptions{MaxChanges: 1}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(events)*b.N)/b.Elapsed().Seconds(), "orders/s")
	b.ReportMetric(float64(len(points)), "points")
}
