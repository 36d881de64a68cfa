package engine_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// sliceHistory is a History over events held in memory, passed in batches of size.
type sliceHistory struct {
	events []engine.ReplayEvent
	size   int
	err    error // returned after the events, when set
}

func (h *sliceHistory) Walk(ctx context.Context, fn func([]engine.ReplayEvent) error) error {
	size := max(h.size, 1)
	for start := 0; start < len(h.events); start += size {
		if err := ctx.Err(); err != nil {
			return err
		}
		batch := append([]engine.ReplayEvent(nil), h.events[start:min(start+size, len(h.events))]...)
		if err := fn(batch); err != nil {
			return err
		}
	}
	return h.err
}

// partedHistory is a sliceHistory that splits itself into parts (PartitionedHistory): three
// per walker, of uneven sizes.
type partedHistory struct{ sliceHistory }

func (h *partedHistory) Partitions(_ context.Context, n int) ([]engine.History, error) {
	var parts []engine.History
	per := (len(h.events) + 3*n - 1) / (3 * n)
	for start, i := 0, 0; start < len(h.events); start, i = start+per*(1+i%2), i+1 {
		parts = append(parts, &sliceHistory{events: h.events[start:min(start+per*(1+i%2), len(h.events))], size: h.size})
	}
	return parts, nil
}

// recordOf is what a store records for a decision.
func recordOf(d *engine.Decision) *engine.RecordedDecision {
	return &engine.RecordedDecision{Verdict: d.Verdict(), Trace: d.Outcomes()}
}

var replayCountries = []struct {
	country, currency string
}{{"US", "USD"}, {"GB", "GBP"}, {"DE", "EUR"}, {"NL", "EUR"}, {"JP", "JPY"}, {"BR", "USD"}, {"KW", "KWD"}, {"ES", "EUR"}}

var minorUnits = map[string]int32{"USD": 2, "GBP": 2, "EUR": 2, "JPY": 0, "KWD": 3}

// replayOrders makes n varied orders placed in March 2025: both kinds of buyer, selected and
// other markets, a few currencies, and a share that fails a qualification rule.
func replayOrders(n int, seed uint64) [][]byte {
	r := rand.New(rand.NewPCG(seed, 3))
	out := make([][]byte, n)
	for i := range out {
		c := replayCountries[r.IntN(len(replayCountries))]
		amount := fmt.Sprintf("%d.%02d", 1+r.IntN(5000), r.IntN(100))
		switch minorUnits[c.currency] {
		case 0:
			amount = fmt.Sprint(100 + r.IntN(900000))
		case 3:
			amount = fmt.Sprintf("%d.%03d", r.IntN(400), r.IntN(1000))
		}
		status, category := "completed", []string{"electronics", "toys", "apparel", "home"}[r.IntN(4)]
		switch r.IntN(20) {
		case 0:
			status = "pending"
		case 1:
			category = "tobacco"
		}
		out[i] = []byte(orderJSON(
			fmt.Sprintf(`order_id="o-%05d"`, i), fmt.Sprintf(`affiliate_id="aff-%d"`, r.IntN(7)), fmt.Sprintf(`status=%q`, status),
			fmt.Sprintf(`placed_at="2025-03-%02dT%02d:00:00Z"`, 1+r.IntN(28), r.IntN(24)), `click_at="2025-02-27T00:00:00Z"`,
			fmt.Sprintf(`buyer={"id":"b-%d","country":%q,"new":%t}`, i, c.country, r.IntN(3) == 0),
			fmt.Sprintf(`traffic_country=%q`, c.country), fmt.Sprintf(`currency=%q`, c.currency), fmt.Sprintf(`amount=%q`, amount),
			fmt.Sprintf(`items=[{"sku":"s","category":%q,"amount":%q,"quantity":1}]`, category, amount), "-completed_at"))
	}
	return out
}

// recordedHistory decides every order with set (as the service would have) and records it.
func recordedHistory(t testing.TB, set *rules.Set, orders [][]byte) []engine.ReplayEvent {
	t.Helper()
	e := engine.New(set)
	out := make([]engine.ReplayEvent, len(orders))
	for i, raw := range orders {
		d, err := e.Decide(context.Background(), decode(t, string(raw)))
		if err != nil {
			t.Fatalf("deciding order %d: %v", i, err)
		}
		out[i] = engine.ReplayEvent{Event: engine.Event{ID: fmt.Sprintf("ev-%05d", i), StreamSeq: uint64(i + 1), Raw: raw}, Recorded: recordOf(d)}
	}
	return out
}

// seedVariant is the seed policy's terms (no tests) with edits applied: old → new, each
// replaced exactly once.
func seedVariant(t testing.TB, version int, effectiveFrom string, edits ...string) string {
	t.Helper()
	src := withVersion(seedWithTests(""), version, effectiveFrom)
	for i := 0; i < len(edits); i += 2 {
		if strings.Count(src, edits[i]) != 1 {
			t.Fatalf("the seed policy has %d of %q, want 1", strings.Count(src, edits[i]), edits[i])
		}
		src = strings.Replace(src, edits[i], edits[i+1], 1)
	}
	return src
}

const returningSelected6 = "when: order.buyer.country in selected_markets && !order.buyer.new\n    rate: \"6%\""

func mustReplay(t *testing.T, set *rules.Set, h engine.History, opts engine.ReplayOptions) *engine.ReplayReport {
	t.Helper()
	rep, err := engine.Replay(context.Background(), set, h, opts)
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	return rep
}

func TestReplaySameVersionReproducesEverything(t *testing.T) {
	set := seedSet(t)
	events := recordedHistory(t, set, replayOrders(400, 1))
	rep := mustReplay(t, set, &sliceHistory{events: events, size: 7}, engine.ReplayOptions{Workers: 3})
	if rep.Events != 400 || rep.Evaluated != 400 || rep.SameVersion != 400 {
		t.Errorf("events, evaluated, same version = %d, %d, %d; want 400 each", rep.Events, rep.Evaluated, rep.SameVersion)
	}
	if rep.Drift != 0 || rep.Changed != 0 || rep.CommissionChanged != 0 || rep.ChangesTotal != 0 || len(rep.Changes) != 0 {
		t.Errorf("drift %d, changed %d, commission changed %d, changes %d (%d listed); want 0 each",
			rep.Drift, rep.Changed, rep.CommissionChanged, rep.ChangesTotal, len(rep.Changes))
	}
	for _, tot := range rep.Totals {
		if tot.Before.Cmp(&tot.After) != 0 || !tot.Diff.IsZero() {
			t.Errorf("%s: before %s, after %s, diff %s; want equal totals", tot.Currency, tot.Before.Text('f'), tot.After.Text('f'), tot.Diff.Text('f'))
		}
	}
	if len(rep.Candidates) != 1 || !rep.Candidates[0].Pinned || rep.Candidates[0].Orders != 400 {
		t.Errorf("candidates = %+v, want v1 pinned with 400 orders", rep.Candidates)
	}
	if len(rep.Recorded) != 1 || rep.Recorded[0].Version != 1 || rep.Recorded[0].Orders != 400 {
		t.Errorf("recorded versions = %+v, want v1 with 400 orders", rep.Recorded)
	}
	if len(rep.TopAffiliates) != 0 {
		t.Errorf("top affiliates = %d groups, want none (nothing changed)", len(rep.TopAffiliates))
	}
}

func TestReplayPricesARateChange(t *testing.T) {
	v1 := seedSet(t)
	events := recordedHistory(t, v1, replayOrders(600, 2))
	v2 := mustSet(t, map[string]string{"alibaba/v2.yaml": seedVariant(t, 2, "2025-11-01T00:00:00Z",
		returningSelected6, strings.Replace(returningSelected6, `"6%"`, `"5%"`, 1))})
	rep := mustReplay(t, v2, &sliceHistory{events: events, size: 50}, engine.ReplayOptions{})

	// Expected, worked out from the recorded decisions alone: every qualified selected_returning
	// decision now earns base × 5%, rounded half-up; nothing else changes.
	type total struct{ before, after apd.Decimal }
	want := map[string]*total{}
	changed := int64(0)
	ctx := apd.BaseContext.WithPrecision(100)
	ctx.Rounding = apd.RoundHalfUp
	for _, ev := range events {
		r := ev.Recorded
		tot := want[r.Currency]
		if tot == nil {
			tot = &total{}
			want[r.Currency] = tot
		}
		ctx.Add(&tot.before, &tot.before, &r.Commission)
		after := r.Commission
		if r.Qualified && r.RateRule == "selected_returning" {
			var x apd.Decimal
			ctx.Mul(&x, &r.Base, dec(t, "0.05"))
			ctx.Quantize(&after, &x, -minorUnits[r.Currency])
			if after.Cmp(&r.Commission) != 0 {
				changed++
			}
		}
		ctx.Add(&tot.after, &tot.after, &after)
	}
	if changed == 0 {
		t.Fatal("no order is a selected-market returning buyer's: the fixture tests nothing")
	}
	if rep.CommissionChanged != changed || rep.Changed != changed || rep.ChangesTotal != changed {
		t.Errorf("commission changed %d, changed %d, changes %d; want %d each", rep.CommissionChanged, rep.Changed, rep.ChangesTotal, changed)
	}
	if rep.NewlyQualified != 0 || rep.NewlyDisqualified != 0 || rep.SameVersion != 0 || rep.Drift != 0 {
		t.Errorf("newly qualified %d, disqualified %d, same version %d, drift %d; want 0 each",
			rep.NewlyQualified, rep.NewlyDisqualified, rep.SameVersion, rep.Drift)
	}
	if len(rep.Totals) != len(want) {
		t.Errorf("got totals in %d currencies, want %d", len(rep.Totals), len(want))
	}
	for _, tot := range rep.Totals {
		w := want[tot.Currency]
		var diff apd.Decimal
		ctx.Sub(&diff, &w.after, &w.before)
		if tot.Before.Cmp(&w.before) != 0 || tot.After.Cmp(&w.after) != 0 || tot.Diff.Cmp(&diff) != 0 {
			t.Errorf("%s: got before %s after %s diff %s, want %s %s %s", tot.Currency, tot.Before.Text('f'), tot.After.Text('f'),
				tot.Diff.Text('f'), w.before.Text('f'), w.after.Text('f'), diff.Text('f'))
		}
		if tot.Diff.Sign() > 0 {
			t.Errorf("%s: the total went up by %s on a rate cut", tot.Currency, tot.Diff.Text('f'))
		}
	}
	for _, c := range rep.Changes {
		if c.Cause.Kind != engine.CauseTerms || c.Cause.Rule != "selected_returning" || c.Cause.Old != "6%" || c.Cause.New != "5%" {
			t.Errorf("order %s: cause %+v (%s), want the terms of selected_returning 6%% → 5%%", c.OrderID, c.Cause, c.Cause)
			break
		}
	}
	for _, g := range rep.ByRateRule {
		if g.Old != g.New {
			t.Errorf("rate rule group %s → %s: no order should change rule", g.Old, g.New)
		}
		if g.Old != "selected_returning" && !g.Diff.IsZero() {
			t.Errorf("rate rule %s (%s) changed by %s, want 0", g.Old, g.Currency, g.Diff.Text('f'))
		}
	}
	for _, g := range rep.ByBuyer {
		if g.Key == "new" && !g.Diff.IsZero() {
			t.Errorf("new buyers (%s) changed by %s, want 0", g.Currency, g.Diff.Text('f'))
		}
	}
	if len(rep.Candidates) != 1 || rep.Candidates[0].Version != 2 || !rep.Candidates[0].Pinned || rep.Candidates[0].Orders != 600 {
		t.Errorf("candidates = %+v: want v2, applied to every order though it takes effect in November", rep.Candidates)
	}
	// The top affiliates are sorted by the size of their change, largest first.
	for i := 1; i < len(rep.TopAffiliates); i++ {
		a, b := rep.TopAffiliates[i-1], rep.TopAffiliates[i]
		var x, y apd.Decimal
		x.Abs(&a.Diff)
		y.Abs(&b.Diff)
		if a.Currency == b.Currency && x.Cmp(&y) < 0 {
			t.Errorf("top affiliates: %s (%s) before %s (%s)", a.Key, a.Diff.Text('f'), b.Key, b.Diff.Text('f'))
		}
	}
}

func TestReplayCountsQualificationChangesEachWay(t *testing.T) {
	v1 := seedSet(t)
	events := recordedHistory(t, v1, replayOrders(500, 3))
	// v2 forbids toys and no longer forbids tobacco.
	v2 := mustSet(t, map[string]string{"alibaba/v2.yaml": seedVariant(t, 2, "2025-01-01T00:00:00Z",
		"    - tobacco\n", "    - toys\n")})
	rep := mustReplay(t, v2, &sliceHistory{events: events, size: 64}, engine.ReplayOptions{Workers: 2})
	var wantIn, wantOut int64
	for _, ev := range events {
		raw := string(ev.Event.Raw)
		onlyFails := len(ev.Recorded.FailedRules) == 1 && ev.Recorded.FailedRules[0] == "no_forbidden_items"
		switch {
		case strings.Contains(raw, `"tobacco"`) && onlyFails:
			wantIn++
		case strings.Contains(raw, `"toys"`) && ev.Recorded.Qualified:
			wantOut++
		}
	}
	if wantIn == 0 || wantOut == 0 {
		t.Fatalf("fixture: %d tobacco-only failures, %d qualified toy orders; want some of each", wantIn, wantOut)
	}
	if rep.NewlyQualified != wantIn || rep.NewlyDisqualified != wantOut {
		t.Errorf("newly qualified %d, disqualified %d; want %d, %d", rep.NewlyQualified, rep.NewlyDisqualified, wantIn, wantOut)
	}
	for _, c := range rep.Changes {
		if c.Old.Qualified != c.New.Qualified {
			want := engine.Cause{Kind: engine.CauseOutcome, Stage: engine.StageQualify, Rule: "no_forbidden_items", Old: "pass", New: "fail"}
			if c.New.Qualified {
				want.Old, want.New = "fail", "pass"
			}
			if c.Cause != want {
				t.Errorf("order %s: cause %s, want %s", c.OrderID, c.Cause, want)
			}
		}
	}
}

func TestReplayReportsDrift(t *testing.T) {
	set := seedSet(t)
	events := recordedHistory(t, set, replayOrders(50, 4))
	var qualified []int
	for i, ev := range events {
		if ev.Recorded.Qualified {
			qualified = append(qualified, i)
		}
	}
	a, b, c := &events[qualified[0]], &events[qualified[1]], &events[qualified[2]]
	a.Recorded.Commission.Set(dec(t, "0.01"))        // an altered amount
	b.Recorded.Trace[0].Outcome = engine.OutcomeFail // an altered trace only
	rescaled := c.Recorded.Commission.Text('f')      // the same value written with one more digit
	if !strings.Contains(rescaled, ".") {
		rescaled += "."
	}
	c.Recorded.Commission.Set(dec(t, rescaled+"0"))
	rep := mustReplay(t, set, &sliceHistory{events: events}, engine.ReplayOptions{})
	if rep.SameVersion != 50 || rep.Drift != 3 || len(rep.Drifted) != 3 {
		t.Fatalf("same version %d, drift %d (%d listed); want 50, 3, 3", rep.SameVersion, rep.Drift, len(rep.Drifted))
	}
	fields := map[string][]string{}
	for _, d := range rep.Drifted {
		fields[d.EventID] = d.DriftFields
	}
	want := map[string][]string{a.Event.ID: {"commission"}, b.Event.ID: {"trace"}, c.Event.ID: {"commission"}}
	if !reflect.DeepEqual(fields, want) {
		t.Errorf("drift fields = %v, want %v", fields, want)
	}
	// Only the altered amount is a change in the decision's value.
	if rep.CommissionChanged != 1 || rep.ChangesTotal != 1 {
		t.Errorf("commission changed %d, changes %d; want 1, 1", rep.CommissionChanged, rep.ChangesTotal)
	}
}

func TestReplayErrorsAndUnrecordedEvents(t *testing.T) {
	set := seedSet(t)
	events := recordedHistory(t, set, replayOrders(20, 5))
	events[3].Recorded = nil // dead-lettered when it arrived
	events = append(events,
		engine.ReplayEvent{Event: engine.Event{ID: "bad-json", Raw: []byte(`{"order_id":`)}},
		engine.ReplayEvent{Event: engine.Event{ID: "other-program", Raw: []byte(orderJSON(`order_id="x-1"`, `program="shop"`))}},
	)
	rep := mustReplay(t, set, &sliceHistory{events: events, size: 4}, engine.ReplayOptions{})
	if rep.Events != 22 || rep.Evaluated != 20 || rep.Unrecorded != 1 {
		t.Errorf("events %d, evaluated %d, unrecorded %d; want 22, 20, 1", rep.Events, rep.Evaluated, rep.Unrecorded)
	}
	wantErrs := map[string]int64{engine.ErrorKindInvalid: 1, engine.ErrorKindUnknownProgram: 1}
	if !reflect.DeepEqual(rep.Errors, wantErrs) || len(rep.ErrorSamples) != 2 {
		t.Errorf("errors %v (%d samples), want %v", rep.Errors, len(rep.ErrorSamples), wantErrs)
	}
	if rep.ChangesTotal != 1 || len(rep.Changes) != 1 || rep.Changes[0].Old != nil || rep.Changes[0].Cause.Kind != engine.CauseNoRecord {
		t.Errorf("changes %d %+v, want the one unrecorded event", rep.ChangesTotal, rep.Changes)
	}
}

func TestReplayChoosesTheCandidateVersion(t *testing.T) {
	// A directory with two versions: each order gets the one in force at its placed_at.
	v1 := string(seedPolicy(t)) // the very file that recorded the decisions
	v2 := seedVariant(t, 2, "2025-03-15T00:00:00Z", returningSelected6, strings.Replace(returningSelected6, `"6%"`, `"5%"`, 1))
	both := mustSet(t, map[string]string{"alibaba/v1.yaml": v1, "alibaba/v2.yaml": v2})
	events := recordedHistory(t, seedSet(t), replayOrders(300, 6))
	rep := mustReplay(t, both, &sliceHistory{events: events}, engine.ReplayOptions{})
	var early, late int64
	for _, ev := range events {
		if o := decode(t, string(ev.Event.Raw)); o.PlacedAt.Day() < 15 {
			early++
		} else {
			late++
		}
	}
	got := map[int]int64{}
	for _, c := range rep.Candidates {
		got[c.Version] = c.Orders
		if c.Pinned {
			t.Errorf("v%d is pinned, want in force by date (two versions)", c.Version)
		}
	}
	if got[1] != early || got[2] != late || rep.SameVersion != early || rep.DigestMismatch != 0 {
		t.Errorf("orders by version %v, same version %d, digest mismatches %d; want v1 %d, v2 %d, same %d, 0",
			got, rep.SameVersion, rep.DigestMismatch, early, late, early)
	}

	// The seed's terms without its tests are another text with the same version number.
	edited := mustSet(t, map[string]string{"alibaba/v1.yaml": seedWithTests("")})
	rep = mustReplay(t, edited, &sliceHistory{events: events}, engine.ReplayOptions{})
	if rep.DigestMismatch != 300 || rep.SameVersion != 0 || rep.Changed != 0 {
		t.Errorf("an edited v1: digest mismatches %d, same version %d, changed %d; want 300, 0, 0", rep.DigestMismatch, rep.SameVersion, rep.Changed)
	}
	for _, c := range rep.Changes {
		if c.PlacedAt.Day() < 15 {
			t.Errorf("order %s placed %s changed: v1 was in force", c.OrderID, c.PlacedAt)
		}
	}
	// As deployed, a single version that takes effect after the orders decides none of them;
	// otherwise it decides every one.
	later := mustSet(t, map[string]string{"alibaba/v2.yaml": seedVariant(t, 2, "2025-11-01T00:00:00Z")})
	if rep := mustReplay(t, later, &sliceHistory{events: events}, engine.ReplayOptions{}); rep.Evaluated != 300 || !rep.Candidates[0].Pinned {
		t.Errorf("a later single version: evaluated %d, pinned %t; want 300, true", rep.Evaluated, rep.Candidates[0].Pinned)
	}
	rep = mustReplay(t, later, &sliceHistory{events: events}, engine.ReplayOptions{AsDeployed: true})
	if rep.Evaluated != 0 || rep.Errors[engine.ErrorKindNoPolicy] != 300 || rep.Candidates[0].Pinned {
		t.Errorf("a later version, not pinned: evaluated %d, errors %v, pinned %t; want 0, 300 no_policy, false", rep.Evaluated, rep.Errors, rep.Candidates[0].Pinned)
	}
}

func TestReplayIsDeterministicAcrossWorkers(t *testing.T) {
	events := recordedHistory(t, seedSet(t), replayOrders(700, 7))
	v2 := mustSet(t, map[string]string{"alibaba/v2.yaml": seedVariant(t, 2, "2025-01-01T00:00:00Z",
		returningSelected6, strings.Replace(returningSelected6, `"6%"`, `"5.5%"`, 1), "    - tobacco\n", "    - toys\n")})
	var reports []*engine.ReplayReport
	for _, workers := range []int{1, 2, 5} {
		reports = append(reports, mustReplay(t, v2, &sliceHistory{events: events, size: 33}, engine.ReplayOptions{Workers: workers, MaxChanges: 25}))
		// A history in parts: the walkers take them in turn and decide inline.
		reports = append(reports, mustReplay(t, v2, &partedHistory{sliceHistory{events: events, size: 33}}, engine.ReplayOptions{Workers: workers, MaxChanges: 25}))
	}
	all := mustReplay(t, v2, &sliceHistory{events: events, size: 33}, engine.ReplayOptions{Workers: 3})
	if all.ChangesTotal < 50 || int64(len(all.Changes)) != all.ChangesTotal {
		t.Fatalf("all changes: %d listed of %d; want all, and at least 50", len(all.Changes), all.ChangesTotal)
	}
	for i, r := range reports {
		if len(r.Changes) != 25 || !reflect.DeepEqual(r.Changes, all.Changes[:25]) {
			t.Errorf("run %d: the 25 changes kept are not the first 25 of all", i)
		}
		if !reflect.DeepEqual(r.Totals, all.Totals) || !reflect.DeepEqual(r.ByRateRule, all.ByRateRule) ||
			!reflect.DeepEqual(r.TopAffiliates, all.TopAffiliates) || r.ChangesTotal != all.ChangesTotal {
			t.Errorf("run %d: the report differs from the one with 3 workers", i)
		}
	}
}

func TestReplayStopsOnAHistoryError(t *testing.T) {
	boom := errors.New("disk on fire")
	events := recordedHistory(t, seedSet(t), replayOrders(10, 8))
	_, err := engine.Replay(context.Background(), seedSet(t), &sliceHistory{events: events, err: boom}, engine.ReplayOptions{})
	if !errors.Is(err, boom) {
		t.Errorf("got %v, want the history's error", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := engine.Replay(ctx, seedSet(t), &sliceHistory{events: events}, engine.ReplayOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: got %v, want context.Canceled", err)
	}
}

func TestReplayCauseWithRulesOnlyOneVersionHas(t *testing.T) {
	v1 := seedSet(t)
	events := recordedHistory(t, v1, replayOrders(200, 9))
	// v2 inserts a rate rule before all others: US buyers earn 12%; and drops the click rule.
	v2 := mustSet(t, map[string]string{"alibaba/v2.yaml": seedVariant(t, 2, "2025-01-01T00:00:00Z",
		"rates:\n", "rates:\n  - id: us_promo\n    when: order.buyer.country == \"US\"\n    rate: \"12%\"\n",
		"  - id: click_in_window\n", "  - id: click_in_window_gone\n")})
	rep := mustReplay(t, v2, &sliceHistory{events: events}, engine.ReplayOptions{})
	seen := map[string]bool{}
	for _, c := range rep.Changes {
		seen[c.Cause.String()] = true
	}
	for _, want := range []string{"rate us_promo: absent → match"} {
		if !seen[want] {
			t.Errorf("causes %v: want %q among them", seen, want)
		}
	}
}

// BenchmarkReplay measures the engine's share of a replay — decode, decide with the candidate,
// compare and aggregate — over events held in memory (no store), on every core.
func BenchmarkReplay(b *testing.B) {
	events := recordedHistory(b, seedSet(b), replayOrders(20000, 10))
	v2 := mustSet(b, map[string]string{"alibaba/v2.yaml": seedVariant(b, 2, "2025-11-01T00:00:00Z",
		returningSelected6, strings.Replace(returningSelected6, `"6%"`, `"5%"`, 1))})
	h := &sliceHistory{events: events, size: 512}
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		if _, err := engine.Replay(context.Background(), v2, h, engine.ReplayOptions{MaxChanges: 100}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(events)*b.N)/b.Elapsed().Seconds(), "orders/s")
}

func TestReplayKeepsPinsAsTheServiceWould(t *testing.T) {
	v1set := seedSet(t)
	v1, _ := v1set.Version("alibaba", 1)
	events := recordedHistory(t, v1set, replayOrders(200, 11))
	// Every other event is a later event of its order, decided with the order's pin (v1).
	var pinned int64
	for i := range events {
		if i%2 == 0 {
			events[i].Recorded.Pin, events[i].Recorded.Pinned = &engine.Pin{Version: 1, Digest: v1.Digest}, true
			pinned++
		}
	}
	// The directory gains v2 (5% for returning buyers in the selected markets), in force from
	// before every order: unpinned events get it, pinned ones keep v1.
	v2 := seedVariant(t, 2, "2025-02-01T00:00:00Z", returningSelected6, strings.Replace(returningSelected6, `"6%"`, `"5%"`, 1))
	dir := mustSet(t, map[string]string{"alibaba/v1.yaml": string(seedPolicy(t)), "alibaba/v2.yaml": v2})
	rep := mustReplay(t, dir, &sliceHistory{events: events}, engine.ReplayOptions{})
	got := map[int]int64{}
	for _, c := range rep.Candidates {
		got[c.Version] = c.Orders
	}
	if got[1] != pinned || got[2] != 200-pinned || rep.SameVersion != pinned || rep.Drift != 0 {
		t.Errorf("orders by version %v, same version %d, drift %d; want v1 %d (the pinned), v2 %d, same %d, 0", got, rep.SameVersion, rep.Drift, pinned, 200-pinned, pinned)
	}
	for _, c := range rep.Changes {
		if c.New.PolicyVersion != 2 {
			t.Errorf("order %s changed under v%d, want only unpinned orders (v2) to change", c.OrderID, c.New.PolicyVersion)
		}
	}
	// Without v1 the service could not decide the pinned events: neither can the replay.
	only2 := mustSet(t, map[string]string{"alibaba/v2.yaml": v2})
	rep = mustReplay(t, only2, &sliceHistory{events: events}, engine.ReplayOptions{AsDeployed: true})
	if rep.Errors[engine.ErrorKindPinMissing] != pinned || rep.Evaluated != 200-pinned {
		t.Errorf("without the pinned version: errors %v, evaluated %d; want %d pin_missing, %d evaluated", rep.Errors, rep.Evaluated, pinned, 200-pinned)
	}
	// A single file asks "what if": it decides every order, pinned or not.
	rep = mustReplay(t, only2, &sliceHistory{events: events}, engine.ReplayOptions{})
	if rep.Evaluated != 200 || len(rep.Errors) != 0 {
		t.Errorf("pinned candidate: evaluated %d, errors %v; want 200, none", rep.Evaluated, rep.Errors)
	}
}

func TestReplayUsesTheRecordedAffiliateMonth(t *testing.T) {
	set, err := rules.LoadFile("../policies/examples/tiered/v1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, _ := set.Version("tiered", 1)
	e := engine.New(set)
	// The same affiliate's orders, each decided with the month's sales so far (as the pipeline
	// records them): the first ones at the base rate, later ones at silver and gold.
	var events []engine.ReplayEvent
	sales := apd.New(0, 0)
	for i := range 40 {
		raw := []byte(orderJSON(fmt.Sprintf(`order_id="ti-%d"`, i), `program="tiered"`, `currency="USD"`,
			`amount="2500.00"`, `items=[]`, `traffic_country="US"`))
		o := decode(t, string(raw))
		o.Affiliate = engine.AffiliateMonth{Month: engine.MonthOf(o.PlacedAt), QualifiedOrders: int64(i)}
		o.Affiliate.QualifiedSales.Set(sales)
		d, err := e.DecideWith(context.Background(), p, o)
		if err != nil {
			t.Fatal(err)
		}
		rec := recordOf(d)
		rec.Affiliate = d.Affiliate
		events = append(events, engine.ReplayEvent{Event: engine.Event{ID: fmt.Sprintf("ti-ev-%d", i), Raw: raw}, Recorded: rec})
		apd.BaseContext.Add(sales, sales, &d.Base)
	}
	if events[39].Recorded.RateRule != "gold" || events[0].Recorded.RateRule != "base" {
		t.Fatalf("fixture: rate rules %s … %s, want base … gold", events[0].Recorded.RateRule, events[39].Recorded.RateRule)
	}
	rep := mustReplay(t, set, &sliceHistory{events: events, size: 7}, engine.ReplayOptions{Workers: 3})
	if rep.SameVersion != 40 || rep.Drift != 0 || rep.Changed != 0 || rep.AffiliateAssumed != 0 {
		t.Errorf("with the recorded month: same version %d, drift %d, changed %d, assumed %d; want 40, 0, 0, 0",
			rep.SameVersion, rep.Drift, rep.Changed, rep.AffiliateAssumed)
	}
	// Without the recorded month every order counts as the month's first: all at the base rate.
	for i := range events {
		events[i].Recorded.Affiliate = nil
	}
	rep = mustReplay(t, set, &sliceHistory{events: events}, engine.ReplayOptions{})
	if rep.AffiliateAssumed != 40 || rep.Drift == 0 {
		t.Errorf("without the recorded month: assumed %d, drift %d; want 40 and some drift", rep.AffiliateAssumed, rep.Drift)
	}
}

// TestVerdictOwnsItsAmounts: a decision's verdict keeps its amounts when the decision's amounts change,
// however large they are (beyond apd's inline coefficients, which a copy by value would share).
func TestVerdictOwnsItsAmounts(t *testing.T) {
	set := mustSet(t, map[string]string{"shop/v1.yaml": shopPolicy(1, "2025-01-01T00:00:00Z", "10%", "")})
	big := strings.Repeat("9", 38) + ".00"
	o, err := engine.DecodeOrder([]byte(`{"order_id":"o","program":"shop","affiliate_id":"a","status":"completed",` +
		`"placed_at":"2025-03-10T12:00:00Z","buyer":{"id":"b","country":"US","new":true},"currency":"USD","amount":"` + big + `"}`))
	if err != nil {
		t.Fatal(err)
	}
	d, err := engine.New(set).Decide(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	v := d.Verdict()
	want := v.Commission.Text('f')
	d.Commission.Coeff.Add(&d.Commission.Coeff, apd.NewBigInt(1))
	if got := v.Commission.Text('f'); got != want {
		t.Errorf("the verdict's commission changed with the decision's: %s, was %s", got, want)
	}
}
