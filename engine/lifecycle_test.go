package engine_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// shopPolicy is a small program: completed orders qualify and earn rate% of amount − refunded.
func shopPolicy(version int, effectiveFrom, rate, extra string) string {
	return fmt.Sprintf(`program: shop
version: %d
effective_from: %s
rounding: half_up
payout: {hold_days: 30}
%s
qualify:
  - id: completed
    expr: order.status == "completed"
    reason: not completed
rates:
  - id: all
    when: "true"
    rate: "%s"
`, version, effectiveFrom, extra, rate)
}

// shopEvent is an order event of the shop program.
type shopEvent struct {
	id, order, affiliate, status, amount, refunded, placed, currency string
	seq                                                              uint64
}

func (e shopEvent) event() engine.Event {
	placed := e.placed
	if placed == "" {
		placed = "2025-03-10T12:00:00Z"
	}
	aff := e.affiliate
	if aff == "" {
		aff = "aff-1"
	}
	cur := e.currency
	if cur == "" {
		cur = "USD"
	}
	refunded := e.refunded
	if refunded == "" {
		refunded = "0"
	}
	raw := fmt.Sprintf(`{"order_id":%q,"program":"shop","affiliate_id":%q,"status":%q,"placed_at":%q,"completed_at":"2025-03-11T12:00:00Z",`+
		`"buyer":{"id":"b","country":"US","new":true},"currency":%q,"amount":%q,"refunded_amount":%q}`,
		e.order, aff, e.status, placed, cur, e.amount, refunded)
	return engine.Event{ID: e.id, StreamSeq: e.seq, Raw: []byte(raw)}
}

// decideAndBook decides events as one batch with eng over snap, books them, and lays the
// booking over snap, as the pipeline does with the store.
func decideAndBook(t *testing.T, eng *engine.Engine, snap *engine.Snapshot, evs ...shopEvent) ([]engine.Result, engine.Booking) {
	t.Helper()
	events := make([]engine.Event, len(evs))
	for i, e := range evs {
		events[i] = e.event()
	}
	results := engine.DecodeEvents(events, nil)
	eng.DecideBatch(context.Background(), results, snap)
	b, err := engine.Book(snap, results, nil)
	if err != nil {
		t.Fatalf("Book: %v", err)
	}
	snap.Apply(b, func(i int) int64 { return int64(i + 1) })
	return results, b
}

func TestDecideBatchPinsTheTermsOfTheSale(t *testing.T) {
	v1 := shopPolicy(1, "2025-01-01T00:00:00Z", "10%", "")
	v2 := shopPolicy(2, "2025-01-01T00:00:00Z", "20%", "") // a retroactive v2: in force from the same day, higher version
	v1InForce := shopPolicy(1, "2025-01-01T00:00:00Z", "10%", "lifecycle: {terms: in_force}")
	onlyV1 := engine.New(mustSet(t, map[string]string{"shop/v1.yaml": v1}))
	both := engine.New(mustSet(t, map[string]string{"shop/v1.yaml": v1, "shop/v2.yaml": v2}))
	onlyV2 := engine.New(mustSet(t, map[string]string{"shop/v2.yaml": v2}))

	type step struct {
		eng        *engine.Engine
		ev         shopEvent
		version    int    // want the decision by this version …
		commission string // … paying this
		pinned     bool
		err        error // or this error
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"a later event keeps the version of the first qualifying one", []step{
			{onlyV1, shopEvent{id: "e1", order: "o", status: "completed", amount: "100.00", seq: 1}, 1, "10.00", false, nil},
			{both, shopEvent{id: "e2", order: "o", status: "completed", amount: "80.00", seq: 2}, 1, "8.00", true, nil},
			{both, shopEvent{id: "e3", order: "fresh", status: "completed", amount: "80.00", seq: 3}, 2, "16.00", false, nil},
		}},
		{"before it qualifies, the version in force decides", []step{
			{onlyV1, shopEvent{id: "e1", order: "o", status: "pending", amount: "100.00", seq: 1}, 1, "0.00", false, nil},
			{both, shopEvent{id: "e2", order: "o", status: "completed", amount: "100.00", seq: 2}, 2, "20.00", false, nil},
			{both, shopEvent{id: "e3", order: "o", status: "refunded", amount: "100.00", refunded: "100.00", seq: 3}, 2, "0.00", true, nil},
		}},
		{"a pinned version that is not loaded is an error", []step{
			{onlyV1, shopEvent{id: "e1", order: "o", status: "completed", amount: "100.00", seq: 1}, 1, "10.00", false, nil},
			{onlyV2, shopEvent{id: "e2", order: "o", status: "refunded", amount: "100.00", refunded: "100.00", seq: 2}, 0, "", false, engine.ErrPinnedPolicyMissing},
		}},
		{"terms in_force: the version in force decides every event", []step{
			{engine.New(mustSet(t, map[string]string{"shop/v1.yaml": v1InForce})), shopEvent{id: "e1", order: "o", status: "completed", amount: "100.00", seq: 1}, 1, "10.00", false, nil},
			{engine.New(mustSet(t, map[string]string{"shop/v1.yaml": v1InForce, "shop/v2.yaml": v2})), shopEvent{id: "e2", order: "o", status: "completed", amount: "80.00", seq: 2}, 2, "16.00", false, nil},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			snap := engine.NewSnapshot()
			for i, s := range c.steps {
				results, _ := decideAndBook(t, s.eng, snap, s.ev)
				r := results[0]
				if s.err != nil {
					if !errors.Is(r.Err, s.err) {
						t.Fatalf("step %d: got error %v, want %v", i+1, r.Err, s.err)
					}
					continue
				}
				if r.Err != nil {
					t.Fatalf("step %d: got error %v, want a decision", i+1, r.Err)
				}
				d := r.Decision
				if d.PolicyVersion != s.version || d.Commission.Text('f') != s.commission || d.Lifecycle == nil || d.Lifecycle.Pinned != s.pinned {
					t.Errorf("step %d: got v%d paying %s (lifecycle %+v), want v%d paying %s (pinned %t)",
						i+1, d.PolicyVersion, d.Commission.Text('f'), d.Lifecycle, s.version, s.commission, s.pinned)
				}
			}
		})
	}
}

func TestDecideBatchPinsWithinTheBatch(t *testing.T) {
	v1 := shopPolicy(1, "2025-01-01T00:00:00Z", "10%", "")
	v2 := shopPolicy(2, "2025-03-01T00:00:00Z", "20%", "")
	eng := engine.New(mustSet(t, map[string]string{"shop/v1.yaml": v1, "shop/v2.yaml": v2}))
	snap := engine.NewSnapshot()
	// The first event qualifies under v1 (placed in February); the correction moves placed_at
	// into v2's time, but the order stays with the terms of its sale.
	results, _ := decideAndBook(t, eng, snap,
		shopEvent{id: "e1", order: "o", status: "completed", amount: "100.00", placed: "2025-02-10T00:00:00Z", seq: 1},
		shopEvent{id: "e2", order: "o", status: "completed", amount: "50.00", placed: "2025-03-10T00:00:00Z", seq: 2})
	for i, want := range []string{"v1 10.00", "v1 5.00"} {
		d := results[i].Decision
		if got := fmt.Sprintf("v%d %s", d.PolicyVersion, d.Commission.Text('f')); got != want {
			t.Errorf("event %d: got %s, want %s", i+1, got, want)
		}
	}
}

func TestBookRefusesAStaleHistory(t *testing.T) {
	eng := engine.New(mustSet(t, map[string]string{"shop/v1.yaml": shopPolicy(1, "2025-01-01T00:00:00Z", "10%", "")}))
	events := []engine.Event{shopEvent{id: "e2", order: "o", status: "completed", amount: "100.00", seq: 2}.event()}
	results := engine.DecodeEvents(events, nil)
	eng.DecideBatch(context.Background(), results, engine.NewSnapshot()) // decided seeing no history…
	// … while another batch stored the order's first qualifying event.
	fresh := engine.NewSnapshot()
	fresh.Orders[engine.OrderKey{Program: "shop", OrderID: "o"}] = engine.OrderState{AffiliateID: "aff-1", Currency: "USD",
		Month: "2025-03", EventID: "e1", StreamSeq: 1, Qualified: true, Pin: &engine.Pin{Version: 1, Digest: results[0].Decision.PolicyDigest}}
	if _, err := engine.Book(fresh, results, nil); !errors.Is(err, engine.ErrStaleHistory) {
		t.Fatalf("got %v, want ErrStaleHistory", err)
	}
	if _, err := engine.Book(engine.NewSnapshot(), results, nil); err != nil {
		t.Fatalf("booking with the history it was decided with: got %v, want no error", err)
	}
	// A decision made without the history is not checked.
	plain := engine.DecodeEvents(events, nil)
	d, err := eng.Decide(context.Background(), plain[0].Order)
	if err != nil {
		t.Fatal(err)
	}
	plain[0].Decision = d
	if _, err := engine.Book(fresh, plain, nil); err != nil {
		t.Fatalf("booking a decision made without history: got %v, want no error", err)
	}
}

func TestAnOlderEventDecidedLateDoesNotReplaceTheCurrentOne(t *testing.T) {
	eng := engine.New(mustSet(t, map[string]string{"shop/v1.yaml": shopPolicy(1, "2025-01-01T00:00:00Z", "10%", "")}))
	snap := engine.NewSnapshot()
	decideAndBook(t, eng, snap, shopEvent{id: "e2", order: "o", status: "refunded", amount: "100.00", refunded: "100.00", seq: 2})
	_, b := decideAndBook(t, eng, snap, shopEvent{id: "e1", order: "o", status: "completed", amount: "100.00", seq: 1})
	if len(b.Entries) != 0 {
		t.Errorf("got entries %+v, want none: the refund (sequence 2) stays the order's current event", b.Entries)
	}
	st := snap.Orders[engine.OrderKey{Program: "shop", OrderID: "o"}]
	if st.EventID != "e2" || st.Qualified || st.Pin == nil || st.Pin.Version != 1 {
		t.Errorf("got state %+v, want current e2, not qualified, pinned to v1 by the late e1", st)
	}
}

func TestAffiliateMonthInputs(t *testing.T) {
	tiered := `program: shop
version: 1
effective_from: 2025-01-01T00:00:00Z
rounding: half_up
constants:
  tier_sales: {decimal: "150.00"}
qualify:
  - id: completed
    expr: order.status == "completed"
    reason: not completed
rates:
  - id: top
    when: affiliate.month_qualified_sales >= tier_sales
    rate: "20%"
  - id: base
    when: "true"
    rate: "10%"
`
	eng := engine.New(mustSet(t, map[string]string{"shop/v1.yaml": tiered}))
	snap := engine.NewSnapshot()
	results, _ := decideAndBook(t, eng, snap,
		shopEvent{id: "e1", order: "o1", status: "completed", amount: "100.00", seq: 1},
		shopEvent{id: "e2", order: "o2", status: "completed", amount: "100.00", seq: 2},
		shopEvent{id: "e3", order: "o1", status: "completed", amount: "100.00", seq: 3},                                 // o1 again: itself not counted
		shopEvent{id: "e4", order: "o3", status: "completed", amount: "100.00", currency: "EUR", seq: 4},                // another currency
		shopEvent{id: "e5", order: "o4", status: "completed", amount: "100.00", placed: "2025-04-01T00:00:00Z", seq: 5}, // another month
		shopEvent{id: "e6", order: "o5", status: "completed", amount: "100.00", seq: 6},
	)
	_, _ = decideAndBook(t, eng, snap, shopEvent{id: "e7", order: "o2", status: "refunded", amount: "100.00", refunded: "100.00", seq: 7})
	more, _ := decideAndBook(t, eng, snap, shopEvent{id: "e8", order: "o6", status: "completed", amount: "10.00", seq: 8})
	results = append(results, more...)
	want := []string{
		"2025-03 0 0 base 10.00",
		"2025-03 1 100.00 base 10.00",
		"2025-03 1 100.00 base 10.00",
		"2025-03 0 0 base 10.00",
		"2025-04 0 0 base 10.00",
		"2025-03 2 200.00 top 20.00",
		"2025-03 2 200.00 top 2.00", // o1 and o5: o2 was refunded
	}
	for i, w := range want {
		d := results[i].Decision
		a := d.Affiliate
		if a == nil {
			t.Fatalf("event %d: got no affiliate inputs recorded", i+1)
		}
		got := fmt.Sprintf("%s %d %s %s %s", a.Month, a.QualifiedOrders, a.QualifiedSales.Text('f'), d.RateRule, d.Commission.Text('f'))
		if got != w {
			t.Errorf("event %d: got %s, want %s", i+1, got, w)
		}
		if j := strings.Index(string(d.AppendJSON(nil, false)), `"affiliate":{"month":"`+a.Month+`"`); j < 0 {
			t.Errorf("event %d: the decision's JSON does not record the affiliate inputs: %s", i+1, d.AppendJSON(nil, false))
		}
	}
}

func TestPolicyTestGivesAffiliateInputs(t *testing.T) {
	src := `program: shop
version: 1
effective_from: 2025-01-01T00:00:00Z
rounding: half_up
constants:
  tier_orders: 10
qualify: []
rates:
  - id: top
    when: affiliate.month_qualified_orders >= tier_orders
    rate: "20%"
  - id: base
    when: "true"
    rate: "10%"
tests:
  - name: the eleventh order of the month pays the top rate
    order: {order_id: t, program: shop, affiliate_id: a, status: completed, placed_at: "2025-03-01T00:00:00Z", buyer: {id: b, country: US, new: true}, currency: USD, amount: "10.00"}
    affiliate: {month_qualified_orders: 10, month_qualified_sales: "1000.00"}
    expect: {rate_rule: top, commission: "2.00"}
  - name: the first pays the base rate
    order: {order_id: t, program: shop, affiliate_id: a, status: completed, placed_at: "2025-03-01T00:00:00Z", buyer: {id: b, country: US, new: true}, currency: USD, amount: "10.00"}
    expect: {rate_rule: base, commission: "1.00"}
`
	set := mustSet(t, map[string]string{"shop/v1.yaml": src})
	for _, r := range engine.New(set).RunPolicyTests(context.Background()) {
		if !r.Passed() {
			t.Errorf("%s: %v", r.Name(), r.Diffs)
		}
	}
	p, _ := set.Version("shop", 1)
	if ps := rules.Lint(p); len(ps) > 0 {
		t.Errorf("lint: got %v, want no problem (the probes must reach the tier)", ps)
	}
}
