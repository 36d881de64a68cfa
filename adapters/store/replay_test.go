package store

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

func TestReplaySQLite(t *testing.T)   { runReplaySuite(t, sqliteBackend()) }
func TestReplayPostgres(t *testing.T) { runReplaySuite(t, postgresBackend()) }

// walkAll reads a whole history.
func walkAll(t *testing.T, h *History) []engine.ReplayEvent {
	t.Helper()
	var out []engine.ReplayEvent
	err := h.Walk(context.Background(), func(b []engine.ReplayEvent) error {
		if len(b) == 0 || len(b) > h.BatchSize {
			t.Errorf("got a batch of %d, want 1…%d", len(b), h.BatchSize)
		}
		out = append(out, b...)
		return nil
	})
	if err != nil {
		t.Fatalf("Walk: %v", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Event.ID < out[j].Event.ID })
	return out
}

// recordOf is what the store must read back for a decision.
func recordOf(d *engine.Decision) *engine.RecordedDecision {
	return &engine.RecordedDecision{Verdict: d.Verdict(), Trace: d.Outcomes()}
}

// sameRecord compares decimals by their text, exactly as written.
func sameRecord(got, want *engine.RecordedDecision) string {
	if (got == nil) != (want == nil) {
		return fmt.Sprintf("got %v, want %v", got, want)
	}
	if got == nil {
		return ""
	}
	text := func(r *engine.RecordedDecision) string {
		flat := ""
		if r.HasFlat {
			flat = r.Flat.Text('f')
		}
		return fmt.Sprintf("v%d %s q=%t failed=%v rule=%q rate=%s flat=%s base=%s commission=%s %s %s trace=%v",
			r.PolicyVersion, r.PolicyDigest, r.Qualified, r.FailedRules, r.RateRule, r.Rate.Text('f'), flat,
			r.Base.Text('f'), r.Commission.Text('f'), r.Currency, r.Rounding, r.Trace)
	}
	if g, w := text(got), text(want); g != w {
		return fmt.Sprintf("got  %s\nwant %s", g, w)
	}
	return ""
}

func runReplaySuite(t *testing.T, b backend) {
	ctx := context.Background()

	t.Run("the history is every stored event with its decision, read back exactly", func(t *testing.T) {
		s := openStore(t, b.fresh(t))
		results := genBatch(t, batchSpec{prefix: "h", orders: 300, invalid: 4, unknownProgram: 3, noPolicy: 2, seed: 11})
		// A flat amount and a rate with decimals, through a policy of another program.
		results = append(results, shopResults(t)...)
		mustSave(t, s, results)
		h := s.History(EventFilter{})
		h.BatchSize = 37
		got := walkAll(t, h)
		want := map[string]*engine.RecordedDecision{}
		stored := 0
		for _, r := range results {
			if r.Order == nil {
				continue // never stored as an event
			}
			stored++
			if r.Decision != nil {
				want[r.Event.ID] = recordOf(r.Decision)
			} else {
				want[r.Event.ID] = nil
			}
		}
		if len(got) != stored {
			t.Fatalf("Walk gave %d events, want %d", len(got), stored)
		}
		raw := map[string]string{}
		for _, r := range results {
			raw[r.Event.ID] = string(r.Event.Raw)
		}
		for _, ev := range got {
			w, ok := want[ev.Event.ID]
			if !ok {
				t.Errorf("event %s: not expected", ev.Event.ID)
				continue
			}
			if diff := sameRecord(ev.Recorded, w); diff != "" {
				t.Errorf("event %s: %s", ev.Event.ID, diff)
			}
			if string(ev.Event.Raw) != raw[ev.Event.ID] {
				t.Errorf("event %s: raw %q, want %q", ev.Event.ID, ev.Event.Raw, raw[ev.Event.ID])
			}
		}

		// Replaying with the policies that decided them reproduces every decision.
		set := mustSetOf(t, append(seedEngine(t).Policies().All(), shopPolicy(t))...)
		rep, err := engine.Replay(ctx, set, s.History(EventFilter{}), engine.ReplayOptions{AsDeployed: true})
		if err != nil {
			t.Fatal(err)
		}
		wantDecided := int64(len(want) - 5) // no policy (2) and unknown program (3) have none
		if rep.SameVersion != wantDecided || rep.Drift != 0 || rep.Changed != 0 {
			t.Errorf("same version %d, drift %d, changed %d; want %d, 0, 0 (drifted: %+v)", rep.SameVersion, rep.Drift, rep.Changed, wantDecided, rep.Drifted)
		}
	})

	t.Run("latest per order, latest decision per event, and the filters", func(t *testing.T) {
		s := openStore(t, b.fresh(t))
		first := genBatch(t, batchSpec{prefix: "f", orders: 120, seed: 12})
		mustSave(t, s, first)
		// A later event of 20 orders: the same order refunded, with a higher stream sequence.
		var later []engine.Event
		for i, r := range first[:20] {
			raw := strings.Replace(string(r.Event.Raw), `"status":"completed"`, `"status":"refunded"`, 1)
			later = append(later, event(fmt.Sprintf("f-later-%d", i), 1000+uint64(i), []byte(raw)))
		}
		mustSave(t, s, decide(t, later))
		all := walkAll(t, s.History(EventFilter{}))
		latest := walkAll(t, s.History(EventFilter{LatestPerOrder: true}))
		if len(all) != 140 || len(latest) != 120 {
			t.Fatalf("all events %d, latest per order %d; want 140, 120", len(all), len(latest))
		}
		// Parts walked one after the other give the same events, each once.
		for _, f := range []EventFilter{{}, {LatestPerOrder: true}} {
			h := s.History(f)
			h.minPart = 4
			parts, err := h.Partitions(ctx, 3)
			if err != nil {
				t.Fatal(err)
			}
			var got []engine.ReplayEvent
			for _, p := range parts {
				got = append(got, walkAll(t, p.(*History))...)
			}
			sort.Slice(got, func(i, j int) bool { return got[i].Event.ID < got[j].Event.ID })
			want := all
			if f.LatestPerOrder {
				want = latest
			}
			if len(parts) != 25 || !reflect.DeepEqual(got, want) {
				t.Errorf("%d parts of %+v gave %d events, want 25 parts (24 of decisions, the dead letters') and the %d events of one walk", len(parts), f, len(got), len(want))
			}
		}
		for _, ev := range latest {
			for i := range 20 {
				if ev.Event.ID == first[i].Event.ID {
					t.Errorf("latest per order kept %s, superseded by f-later-%d", ev.Event.ID, i)
				}
			}
		}
		// Filters: program, placed_at range, affiliate, combined with latest per order.
		from, to := time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC), time.Date(2025, 3, 20, 0, 0, 0, 0, time.UTC)
		f := EventFilter{Program: "alibaba", From: from, To: to, LatestPerOrder: true}
		for _, ev := range latest {
			if o, _ := engine.DecodeOrder(ev.Event.Raw); !o.PlacedAt.Before(from) && o.PlacedAt.Before(to) {
				f.Affiliate = o.AffiliateID // an affiliate with an order in the range
			}
		}
		var want []string
		for _, ev := range latest {
			o, _ := engine.DecodeOrder(ev.Event.Raw)
			if !o.PlacedAt.Before(from) && o.PlacedAt.Before(to) && o.AffiliateID == f.Affiliate {
				want = append(want, ev.Event.ID)
			}
		}
		var gotIDs []string
		for _, ev := range walkAll(t, s.History(f)) {
			gotIDs = append(gotIDs, ev.Event.ID)
		}
		if len(want) == 0 || !reflect.DeepEqual(gotIDs, want) {
			t.Errorf("filtered: got %v, want %v (non-empty)", gotIDs, want)
		}
		if n := len(walkAll(t, s.History(EventFilter{Program: "nosuch"}))); n != 0 {
			t.Errorf("another program: %d events, want 0", n)
		}

		// The stream replay's lookup by event id.
		ids := []string{first[0].Event.ID, first[50].Event.ID, "f-later-3", "no-such-event"}
		recs, err := s.RecordedDecisions(ctx, ids)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 3 || recs[first[0].Event.ID].PolicyVersion != 1 || recs[first[50].Event.ID].PolicyVersion != 1 || recs["f-later-3"] == nil {
			t.Errorf("RecordedDecisions = %d entries (%v), want 3: two of v1 and the later event's", len(recs), recs)
		}
		if diff := sameRecord(recs[first[50].Event.ID], recordOf(first[50].Decision)); diff != "" {
			t.Errorf("RecordedDecisions(%s): %s", first[50].Event.ID, diff)
		}
	})

	t.Run("a replay run is recorded", func(t *testing.T) {
		s := openStore(t, b.fresh(t))
		p := seedPolicy(t)
		id, err := s.SaveReplayRun(ctx, ReplayRun{CandidateProgram: p.Program, CandidateVersion: p.Version, CandidateDigest: p.Digest,
			CandidateSource: string(p.Source), Parameters: json.RawMessage(`{"from":"2025-10-01T00:00:00Z"}`), Summary: json.RawMessage(`{"events":3}`)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.SaveReplayRun(ctx, ReplayRun{CandidateProgram: "x", Parameters: json.RawMessage(`{not json`)}); err == nil {
			t.Error("SaveReplayRun with invalid JSON: got no error, want one")
		}
		runs, err := s.ReplayRuns(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(runs) != 1 || runs[0].ID != id || runs[0].CandidateDigest != p.Digest || runs[0].CandidateSource != string(p.Source) ||
			string(runs[0].Parameters) != `{"from":"2025-10-01T00:00:00Z"}` || string(runs[0].Summary) != `{"events":3}` || runs[0].CreatedAt.IsZero() {
			t.Errorf("ReplayRuns = %+v, want the one run", runs)
		}
		// Replaying writes no decision.
		mustSave(t, s, genBatch(t, batchSpec{prefix: "d", orders: 30, seed: 13}))
		before := mustStats(t, s)
		if _, err := engine.Replay(ctx, seedEngine(t).Policies(), s.History(EventFilter{}), engine.ReplayOptions{}); err != nil {
			t.Fatal(err)
		}
		if after := mustStats(t, s); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("stats after a replay = %+v, want %+v", after, before)
		}
	})

	t.Run("pins and the affiliate's month read back, and replay reproduces with them", func(t *testing.T) {
		s := openStore(t, b.fresh(t))
		tiered, err := rules.LoadFile("../../policies/examples/tiered/v1.yaml")
		if err != nil {
			t.Fatal(err)
		}
		eng := engine.New(tiered)
		decideAndSave := func(events []engine.Event) []engine.Result {
			t.Helper()
			results := engine.DecodeEvents(events, nil)
			orders, months := eng.HistoryKeys(results)
			hist, err := s.LoadHistory(ctx, orders, months)
			if err != nil {
				t.Fatal(err)
			}
			eng.DecideBatch(ctx, results, hist)
			mustSave(t, s, results)
			return results
		}
		order := func(i int, status string) []byte {
			return []byte(fmt.Sprintf(`{"order_id":"ti-%d","program":"tiered","affiliate_id":"aff-1","status":%q,`+
				`"placed_at":"2025-03-%02dT10:00:00Z","click_at":"2025-03-01T00:00:00Z","buyer":{"id":"b","country":"US","new":true},`+
				`"currency":"USD","amount":"3000.00"}`, i, status, 2+i))
		}
		var events []engine.Event
		for i := range 25 {
			events = append(events, event(fmt.Sprintf("ti-ev-%d", i), uint64(i+1), order(i, "completed")))
		}
		first := decideAndSave(events)
		// Later events of the first five orders: pinned to the version of their sale.
		var later []engine.Event
		for i := range 5 {
			later = append(later, event(fmt.Sprintf("ti-later-%d", i), uint64(100+i), order(i, "refunded")))
		}
		second := decideAndSave(later)
		if first[24].Decision.RateRule != "gold" || second[0].Decision.Lifecycle == nil || !second[0].Decision.Lifecycle.Pinned {
			t.Fatalf("fixture: the last order's rule %q, the later event pinned %+v; want gold, pinned", first[24].Decision.RateRule, second[0].Decision.Lifecycle)
		}
		byID := map[string]engine.ReplayEvent{}
		for _, ev := range walkAll(t, s.History(EventFilter{})) {
			byID[ev.Event.ID] = ev
		}
		for _, r := range append(first, second...) {
			got := byID[r.Event.ID].Recorded
			if got == nil {
				t.Fatalf("event %s: no recorded decision", r.Event.ID)
			}
			want := r.Decision.Affiliate
			if got.Affiliate == nil || got.Affiliate.Month != want.Month || got.Affiliate.QualifiedOrders != want.QualifiedOrders ||
				got.Affiliate.QualifiedSales.Cmp(&want.QualifiedSales) != 0 {
				t.Errorf("event %s: recorded affiliate month %+v, want %+v", r.Event.ID, got.Affiliate, want)
			}
			lc := r.Decision.Lifecycle
			if got.Pinned != lc.Pinned || (lc.Pinned && (got.Pin == nil || *got.Pin != *lc.Pin)) {
				t.Errorf("event %s: recorded pin %+v pinned %t, want %+v %t", r.Event.ID, got.Pin, got.Pinned, lc.Pin, lc.Pinned)
			}
		}
		rep, err := engine.Replay(ctx, tiered, s.History(EventFilter{Program: "tiered", LatestPerOrder: true}), engine.ReplayOptions{AsDeployed: true})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Evaluated != 25 || rep.SameVersion != 25 || rep.Drift != 0 || rep.AffiliateAssumed != 0 {
			t.Errorf("replay: evaluated %d, same version %d, drift %d (%+v), assumed %d; want 25, 25, 0, 0",
				rep.Evaluated, rep.SameVersion, rep.Drift, rep.Drifted, rep.AffiliateAssumed)
		}
	})

	t.Run("a trace altered in the store reads back as altered", func(t *testing.T) {
		s := openStore(t, b.fresh(t))
		results := genBatch(t, batchSpec{prefix: "t", orders: 60, seed: 15})
		mustSave(t, s, results)
		var victim string
		for _, r := range results {
			if r.Decision != nil && r.Decision.Qualified {
				victim = r.Event.ID // after other qualified ones with the same rules, whose trace is shared
			}
		}
		if _, err := s.DB().ExecContext(ctx, `UPDATE decisions SET trace = replace(trace, '"pass"', '"fail"') WHERE event_id = ?`, victim); err != nil {
			t.Fatal(err)
		}
		for _, ev := range walkAll(t, s.History(EventFilter{})) {
			fails := 0
			if ev.Recorded == nil {
				continue
			}
			for _, o := range ev.Recorded.Trace {
				if o.Outcome == "fail" {
					fails++
				}
			}
			switch {
			case ev.Event.ID == victim && fails != 5:
				t.Errorf("the altered trace of %s reads back with %d fails, want 5: %v", victim, fails, ev.Recorded.Trace)
			case ev.Event.ID != victim && ev.Recorded.Qualified && fails != 0:
				t.Errorf("event %s: a qualified decision's trace has %d fails", ev.Event.ID, fails)
			}
		}
	})

	t.Run("a walk stops at fn's error and at a cancelled context", func(t *testing.T) {
		s := openStore(t, b.fresh(t))
		mustSave(t, s, genBatch(t, batchSpec{prefix: "c", orders: 50, seed: 14}))
		h := s.History(EventFilter{})
		h.BatchSize = 10
		stop := fmt.Errorf("enough")
		calls := 0
		if err := h.Walk(ctx, func([]engine.ReplayEvent) error { calls++; return stop }); err != stop || calls != 1 {
			t.Errorf("Walk = %v after %d calls, want fn's error after 1", err, calls)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := h.Walk(cctx, func([]engine.ReplayEvent) error { return nil }); err == nil {
			t.Error("Walk with a cancelled context: got no error")
		}
	})
}

// versionTwo is the seed policy as version 2, in force from 2025-02-01.
func versionTwo(tb testing.TB) *rules.Policy {
	tb.Helper()
	src := strings.Replace(string(seedPolicy(tb).Source), "version: 1\n", "version: 2\n", 1)
	src = strings.Replace(src, "effective_from: 2025-01-01T00:00:00Z", "effective_from: 2025-02-01T00:00:00Z", 1)
	p, ps := rules.Compile("v2.yaml", []byte(src))
	if p == nil {
		tb.Fatalf("compiling v2: %v", ps)
	}
	return p
}

const shopSource = `program: shop
version: 3
effective_from: 2025-01-01T00:00:00Z
rounding: half_even
qualify:
  - id: completed
    expr: order.status == "completed"
    reason: not completed
rates:
  - id: flat_and_rate
    when: "true"
    rate: "2.50%"
    flat: {USD: "1.25", KWD: "0.125"}
`

func shopPolicy(tb testing.TB) *rules.Policy {
	tb.Helper()
	p, ps := rules.Compile("shop/v3.yaml", []byte(shopSource))
	if p == nil {
		tb.Fatalf("compiling the shop policy: %v", ps)
	}
	return p
}

// shopResults are decisions with a flat amount, a rate with decimals and three-decimal money.
func shopResults(tb testing.TB) []engine.Result {
	tb.Helper()
	e := engine.New(mustSetOf(tb, shopPolicy(tb)))
	var events []engine.Event
	for i, c := range []struct{ cur, amount, status string }{{"USD", "10.01", "completed"}, {"KWD", "1.234", "completed"}, {"USD", "5.00", "pending"}} {
		raw := fmt.Sprintf(`{"order_id":"s-%d","program":"shop","affiliate_id":"a","status":%q,"placed_at":"2025-03-01T00:00:00Z","buyer":{"id":"b","country":"US","new":true},"currency":%q,"amount":%q}`,
			i, c.status, c.cur, c.amount)
		events = append(events, event(fmt.Sprintf("shop-%d", i), 5000+uint64(i), []byte(raw)))
	}
	out := e.DecideEvents(context.Background(), events, nil)
	for _, r := range out {
		if r.Err != nil {
			tb.Fatalf("deciding %s: %v", r.Event.ID, r.Err)
		}
	}
	if !out[0].Decision.HasFlat() {
		tb.Fatal("the shop decision has no flat amount")
	}
	return out
}

func TestSetDecimal(t *testing.T) {
	for _, s := range []string{"0", "0.00", "294.10", "-1.5", "10", "0.500", "12345678901234567", "123456789012345678901234.5678", "1E+3", "-0"} {
		var got apd.Decimal
		if err := setDecimal(&got, []byte(s), "x"); err != nil {
			t.Errorf("setDecimal(%q): %v", s, err)
			continue
		}
		want, _, _ := apd.NewFromString(s)
		if got.Text('f') != want.Text('f') || got.Cmp(want) != 0 {
			t.Errorf("setDecimal(%q) = %s, want %s", s, got.Text('f'), want.Text('f'))
		}
	}
	for _, bad := range []string{"", "-", "1.2.3", "abc", "1,5"} {
		var d apd.Decimal
		if err := setDecimal(&d, []byte(bad), "x"); err == nil {
			t.Errorf("setDecimal(%q) = %s, want an error", bad, d.Text('f'))
		}
	}
}

func TestParseTraceAndLists(t *testing.T) {
	sc := newRecordScanner()
	got, err := sc.parseTrace([]byte(`[["qualify","completed","pass"],["rate","a\"b","match"],["rate","é","not_evaluated"]]`))
	want := []engine.RuleOutcome{{Stage: engine.StageQualify, Rule: "completed", Outcome: "pass"},
		{Stage: engine.StageRate, Rule: `a"b`, Outcome: "match"}, {Stage: engine.StageRate, Rule: "é", Outcome: "not_evaluated"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("parseTrace = %v, %v; want %v", got, err, want)
	}
	if _, err := sc.parseTrace([]byte(`[["qualify","x"`)); err == nil {
		t.Error("parseTrace of a cut trace: got no error")
	}
	list, err := sc.stringList([]byte(`["completed","click_in_window"]`))
	if err != nil || !reflect.DeepEqual(list, []string{"completed", "click_in_window"}) {
		t.Errorf("stringList = %v, %v", list, err)
	}
	if list, err := sc.stringList([]byte(`[]`)); err != nil || list != nil {
		t.Errorf("stringList([]) = %v, %v; want nil", list, err)
	}
	if list, err := sc.stringList([]byte(`["a\\b"]`)); err != nil || !reflect.DeepEqual(list, []string{`a\b`}) {
		t.Errorf(`stringList(["a\\b"]) = %v, %v`, list, err)
	}
}
