package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// shadowEvents are n orders of the seed program across markets, new and returning buyers.
func shadowEvents(n int) []engine.Event {
	markets := []struct{ country, currency, amount string }{
		{"US", "USD", "1000.00"}, {"GB", "GBP", "250.55"}, {"BR", "BRL", "99.99"}, {"JP", "JPY", "12345"}, {"DE", "EUR", "700.10"},
	}
	var out []engine.Event
	for i := range n {
		m := markets[i%len(markets)]
		raw := fmt.Sprintf(`{"order_id":"o-%d","program":"alibaba","affiliate_id":"aff-%d","status":"completed",`+
			`"placed_at":"2025-10-%02dT12:00:00Z","click_at":"2025-10-01T00:00:00Z","buyer":{"id":"b-%d","country":%q,"new":%t},`+
			`"traffic_country":%q,"currency":%q,"amount":%q,"items":[{"sku":"s","category":"home","amount":%q,"quantity":%d}]}`,
			i, i%4, 2+i%27, i, m.country, i%3 == 0, m.country, m.currency, m.amount, m.amount, 1+i%3)
		out = append(out, engine.Event{ID: fmt.Sprintf("ev-%d", i), StreamSeq: uint64(i + 1), Raw: []byte(raw)})
	}
	return out
}

// shadowPolicy is the seed's terms as shadow version n with the header lines extra and the edits
// (old, new pairs) applied.
func shadowPolicy(t *testing.T, n int, header string, edits ...string) *rules.Policy {
	t.Helper()
	src := seedWithTests("")
	edits = append([]string{"version: 1\n", fmt.Sprintf("version: %d\nstage: shadow\n", n) + header}, edits...)
	for i := 0; i < len(edits); i += 2 {
		if strings.Count(src, edits[i]) != 1 {
			t.Fatalf("the seed has not one %q", edits[i])
		}
		src = strings.Replace(src, edits[i], edits[i+1], 1)
	}
	p, ps := rules.Compile(fmt.Sprintf("alibaba/v%d.yaml", n), []byte(src))
	if p == nil {
		t.Fatal(ps)
	}
	return p
}

const returning6 = "when: order.buyer.country in selected_markets && !order.buyer.new\n    rate: \"6%\""

// TestPassWithShadows: a pass with shadow versions stores exactly what it stores without them
// (decisions, ledger, leaves, batch hash), and gives one shadow row per decided event in the
// sample, diverging where the terms differ, failing where the shadow's rule fails.
func TestPassWithShadows(t *testing.T) {
	ctx := context.Background()
	live, err := seedSet(t).Version("alibaba", 1)
	if err != nil {
		t.Fatal(err)
	}
	without := engine.New(mustSetOf(t, live))
	events := shadowEvents(60)
	head := engine.PartitionHead{Partition: 1, Epoch: 1, Hash: engine.GenesisHash}
	want, err := without.Pass(ctx, head, engine.DecodeEvents(events, nil), engine.NewSnapshot(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(want.Shadows) != 0 {
		t.Fatalf("a set without shadows gave %d shadow rows", len(want.Shadows))
	}

	cut := shadowPolicy(t, 2, "", returning6, strings.Replace(returning6, "6%", "5%", 1))
	sampled := shadowPolicy(t, 3, "sample: 0.5\n", returning6, strings.Replace(returning6, "6%", "4%", 1))
	failing := shadowPolicy(t, 4, "", "expr: order.status == \"completed\"",
		`expr: 'order.status == "completed" && (order.buyer.country == "GB" ? 1 / (size(order.items) - size(order.items)) == 0 : true)'`)
	with := engine.New(mustSetOf(t, live, cut, sampled, failing))
	got, err := with.Pass(ctx, head, engine.DecodeEvents(events, nil), engine.NewSnapshot(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Hash != want.Hash || got.Header != want.Header || len(got.Decisions) != len(want.Decisions) || len(got.Ledger) != len(want.Ledger) {
		t.Fatalf("with shadows the batch is %s (%d decisions, %d entries), without %s (%d, %d): the shadows changed the chain",
			got.Hash, len(got.Decisions), len(got.Ledger), want.Hash, len(want.Decisions), len(want.Ledger))
	}
	for i := range got.Decisions {
		if got.Decisions[i].LeafHash != want.Decisions[i].LeafHash {
			t.Fatalf("decision %d's leaf differs with shadows", i)
		}
	}

	byVersion := map[int][]engine.ShadowRow{}
	for _, r := range got.Shadows {
		byVersion[r.Version] = append(byVersion[r.Version], r)
		if r.Digest == "" || r.EventID == "" || r.PlacedAt.IsZero() || r.Program != "alibaba" {
			t.Errorf("row %+v lacks its identity", r)
		}
	}
	if n := len(byVersion[2]); n != len(got.Decisions) {
		t.Errorf("shadow v2: %d rows, want one per decision (%d)", n, len(got.Decisions))
	}
	for _, r := range byVersion[2] {
		d := got.Results[r.Result].Decision
		wantDiverged := d.Qualified && d.RateRule == "selected_returning"
		if r.Diverged != wantDiverged {
			t.Errorf("%s (%s): diverged %t, want %t", r.OrderID, d.RateRule, r.Diverged, wantDiverged)
		}
		if wantDiverged && (r.Cause.Kind != engine.CauseTerms || r.Cause.String() != "rate selected_returning: 6% → 5%" || r.Commission.Cmp(&d.Commission) >= 0) {
			t.Errorf("%s: cause %q, commission %s (live %s)", r.OrderID, r.Cause, r.Commission.Text('f'), d.Commission.Text('f'))
		}
		if r.LiveCommission.Cmp(&d.Commission) != 0 || r.LiveQualified != d.Qualified {
			t.Errorf("%s: the row's live side %s, the decision's %s", r.OrderID, r.LiveCommission.Text('f'), d.Commission.Text('f'))
		}
	}
	// A shadow that differs in terms only takes the live decision's rule outcomes (rulesAlike);
	// each of its rows is what evaluating its own rules gives, to the cent.
	for _, sh := range []*rules.Policy{cut, sampled} {
		for _, r := range byVersion[sh.Version] {
			full, err := with.DecideWith(ctx, sh, got.Results[r.Result].Order)
			if err != nil {
				t.Fatalf("v%d, %s: %v", sh.Version, r.OrderID, err)
			}
			verdict, commission := r.RateRule, r.Commission
			if !r.Diverged {
				live := got.Results[r.Result].Decision
				verdict, commission = live.RateRule, live.Commission
			}
			if full.RateRule != verdict || full.Commission.Cmp(&commission) != 0 {
				t.Errorf("v%d, %s: the row says %s %s, its rules %s %s", sh.Version, r.OrderID,
					verdict, commission.Text('f'), full.RateRule, full.Commission.Text('f'))
			}
		}
	}

	// The sample: exactly the orders whose identity hashes into it, whatever the batch.
	in := 0
	for _, r := range got.Results {
		if sampled.InSample(engine.SampleHash(r.Order.Program, r.Order.OrderID)) {
			in++
		}
	}
	if n := len(byVersion[3]); n != in || n == 0 || n == len(got.Decisions) {
		t.Errorf("sample 0.5: %d rows, want the %d orders its hash picks (some, not all)", n, in)
	}
	for _, r := range byVersion[3] {
		if !sampled.InSample(engine.SampleHash(r.Program, r.OrderID)) {
			t.Errorf("%s is outside the sample", r.OrderID)
		}
	}
	failed := 0
	for _, r := range byVersion[4] {
		if r.ErrorKind != "" {
			failed++
			if r.ErrorKind != engine.ErrorKindRule || !strings.Contains(r.Error, "division by zero") || r.Diverged {
				t.Errorf("%s: error %s %q, diverged %t", r.OrderID, r.ErrorKind, r.Error, r.Diverged)
			}
		}
	}
	if failed != len(got.Decisions)/5 {
		t.Errorf("shadow v4 failed on %d orders, want the %d British ones", failed, len(got.Decisions)/5)
	}

	// The live decisions never name a shadow: no row of the batch is decided by one.
	for _, d := range got.Decisions {
		if d.PolicyVersion != 1 {
			t.Errorf("decision of %s by v%d", d.OrderID, d.PolicyVersion)
		}
	}
	for _, p := range got.Policies {
		if p.IsShadow() {
			t.Errorf("the batch stores shadow %s as a used version", p.Identity())
		}
	}
}

// TestSampleHashIsStable: the sample hash of an order identity is fixed (reruns, other processes
// and other builds pick the same orders).
func TestSampleHashIsStable(t *testing.T) {
	if a, b := engine.SampleHash("alibaba", "o-1"), engine.SampleHash("alibaba", "o-1"); a != b {
		t.Fatal("SampleHash is not a function of its input")
	}
	if engine.SampleHash("alibab", "ao-1") == engine.SampleHash("alibaba", "o-1") {
		t.Error("program and order id run together")
	}
	// FNV-1a of "alibaba", 0xff, "o-1", worked out by hand from its definition.
	h := uint64(14695981039346656037)
	for _, c := range []byte("alibaba\xffo-1") {
		h = (h ^ uint64(c)) * 1099511628211
	}
	if got := engine.SampleHash("alibaba", "o-1"); got != h {
		t.Errorf("SampleHash(alibaba, o-1) = %#x, want %#x", got, h)
	}
}

func mustSetOf(t *testing.T, ps ...*rules.Policy) *rules.Set {
	t.Helper()
	set, problems := rules.NewSet(ps)
	if set == nil {
		t.Fatal(problems)
	}
	return set
}

// TestShadowOutcomeRoundTrip: an outcome as AppendOutcome stores it reads back the same
// (ParseShadowOutcome), with each kind of verdict, and an event id and error that are not valid
// UTF-8 or hold a NUL are stored as StorableText makes them, what the event's decision stores.
func TestShadowOutcomeRoundTrip(t *testing.T) {
	dec := func(s string) (d apd.Decimal) {
		if _, _, err := d.SetString(s); err != nil {
			t.Fatal(err)
		}
		return d
	}
	for _, c := range []struct {
		name string
		row  engine.ShadowRow
		want engine.ShadowOutcome
		id   string
	}{{
		name: "a rate cut",
		row: engine.ShadowRow{EventID: "ev-1", Diverged: true, Qualified: true, FailedRules: "[]", RateRule: "selected_returning",
			Rate: "5", Commission: dec("12.34"),
			Cause: engine.Cause{Kind: engine.CauseTerms, Stage: engine.StageRate, Rule: "selected_returning", Old: "6%", New: "5%"}},
		want: engine.ShadowOutcome{Diverged: true, Qualified: true, FailedRules: []string{}, RateRule: "selected_returning",
			Rate: dec("5"), Commission: dec("12.34"),
			Cause: engine.Cause{Kind: engine.CauseTerms, Stage: engine.StageRate, Rule: "selected_returning", Old: "6%", New: "5%"}},
		id: "ev-1",
	}, {
		name: "disqualified by a rule",
		row: engine.ShadowRow{EventID: "ev-2", Diverged: true, FailedRules: `["no_refunds","cookie \"window\""]`, Rate: "0", Commission: dec("0.00"),
			Cause: engine.Cause{Kind: engine.CauseOutcome, Stage: engine.StageQualify, Rule: "no_refunds", Old: "pass", New: "fail"}},
		want: engine.ShadowOutcome{Diverged: true, FailedRules: []string{"no_refunds", `cookie "window"`}, Rate: dec("0"), Commission: dec("0.00"),
			Cause: engine.Cause{Kind: engine.CauseOutcome, Stage: engine.StageQualify, Rule: "no_refunds", Old: "pass", New: "fail"}},
		id: "ev-2",
	}, {
		name: "a flat amount, rounded otherwise",
		row: engine.ShadowRow{EventID: "ev-3", Diverged: true, Qualified: true, RateRule: "cpa", Rate: "0", Flat: "2.50", Commission: dec("2.50"),
			Cause: engine.Cause{Kind: engine.CauseOther, Old: "half_up", New: "half_even"}},
		want: engine.ShadowOutcome{Diverged: true, Qualified: true, FailedRules: []string{}, RateRule: "cpa", Rate: dec("0"),
			Flat: dec("2.50"), HasFlat: true, Commission: dec("2.50"), Cause: engine.Cause{Kind: engine.CauseOther, Old: "half_up", New: "half_even"}},
		id: "ev-3",
	}, {
		name: "a failed shadow, its id and error not valid text",
		row:  engine.ShadowRow{EventID: "ev-\xff\x00", ErrorKind: engine.ErrorKindRule, Error: "division by zero\x00 in \xfe"},
		want: engine.ShadowOutcome{ErrorKind: engine.ErrorKindRule, Error: "division by zero\uFFFD in \uFFFD"},
		id:   engine.StorableText("ev-\xff\x00"),
	}} {
		t.Run(c.name, func(t *testing.T) {
			stored := c.row.AppendOutcome(nil)
			if !json.Valid(stored) {
				t.Fatalf("not JSON: %s", stored)
			}
			var got engine.ShadowOutcome
			id, err := engine.ParseShadowOutcome(stored, &got)
			if err != nil {
				t.Fatalf("%s: %v", stored, err)
			}
			if id != c.id || !reflect.DeepEqual(got, c.want) {
				t.Errorf("%s read back as %q %+v, want %q %+v", stored, id, got, c.id, c.want)
			}
		})
	}
	for _, bad := range []string{`{"qualified":true}`, `{"event":"e","rate":"five","commission":"1"}`, `[1]`} {
		if _, err := engine.ParseShadowOutcome([]byte(bad), &engine.ShadowOutcome{}); err == nil {
			t.Errorf("%s read without an error", bad)
		}
	}
}
