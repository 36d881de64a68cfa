package engine_test

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/engine"
)

func TestLedgerEntriesOfALifecycle(t *testing.T) {
	eng := engine.New(mustSet(t, map[string]string{"shop/v1.yaml": shopPolicy(1, "2025-01-01T00:00:00Z", "10%", "")}))
	snap := engine.NewSnapshot()
	steps := []struct {
		ev   shopEvent
		want string // the entries, "kind affiliate currency amount" joined by "; "
	}{
		{shopEvent{id: "e1", order: "o", status: "pending", amount: "100.00", seq: 1}, ""},
		{shopEvent{id: "e2", order: "o", status: "completed", amount: "100.00", seq: 2}, "accrual aff-1 USD 10.00"},
		{shopEvent{id: "e2", order: "o", status: "completed", amount: "100.00", seq: 2}, ""}, // redelivered: nothing
		{shopEvent{id: "e3", order: "o", status: "completed", amount: "100.00", refunded: "30.00", seq: 3}, "adjustment aff-1 USD -3.00"},
		{shopEvent{id: "e4", order: "o", status: "completed", amount: "120.00", refunded: "30.00", seq: 4}, "adjustment aff-1 USD 2.00"},
		{shopEvent{id: "e5", order: "o", status: "completed", amount: "120.00", refunded: "30.00", affiliate: "aff-2", seq: 5}, "reversal aff-1 USD -9.00; accrual aff-2 USD 9.00"},
		{shopEvent{id: "e6", order: "o", status: "refunded", amount: "120.00", refunded: "120.00", affiliate: "aff-2", seq: 6}, "reversal aff-2 USD -9.00"},
		{shopEvent{id: "e7", order: "o", status: "cancelled", amount: "120.00", affiliate: "aff-2", seq: 7}, ""},
		{shopEvent{id: "e8", order: "o", status: "completed", amount: "50.00", affiliate: "aff-2", seq: 8}, "accrual aff-2 USD 5.00"},
	}
	for i, s := range steps {
		_, b := decideAndBook(t, eng, snap, s.ev)
		got := ""
		for j, e := range b.Entries {
			if j > 0 {
				got += "; "
			}
			got += fmt.Sprintf("%s %s %s %s", e.Kind, e.AffiliateID, e.Currency, e.Amount.Text('f'))
			if want := time.Date(2025, 4, 10, 12, 0, 0, 0, time.UTC); !e.ApproveAt.Equal(want) {
				t.Errorf("step %d: approve_at got %v, want %v (completed_at + hold_days 30)", i+1, e.ApproveAt, want)
			}
			if e.Result != 0 || e.EventID != s.ev.id || e.OrderID != "o" || e.Program != "shop" {
				t.Errorf("step %d: entry %+v does not name its result, event and order", i+1, e)
			}
		}
		if got != s.want {
			t.Errorf("step %d (%s): got entries %q, want %q", i+1, s.ev.status, got, s.want)
		}
	}
}

// TestLedgerSumsToTheCurrentDecisions is the ledger's invariant as a property: for random event
// sequences per order — statuses, amounts and refunds changing, affiliates and currencies now and
// then, events decided in random batches, some late (out of stream order), some redelivered — each
// affiliate's ledger sums, per currency, to its orders' current decisions' commissions.
func TestLedgerSumsToTheCurrentDecisions(t *testing.T) {
	eng := engine.New(mustSet(t, map[string]string{"shop/v1.yaml": shopPolicy(1, "2025-01-01T00:00:00Z", "7.5%", "")}))
	for seed := uint64(1); seed <= 40; seed++ {
		t.Run("seed "+strconv.FormatUint(seed, 10), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 99))
			evs := randomLifecycles(rng, 1+rng.IntN(12), 1+rng.IntN(8))
			// Decide in batches, in stream order but for a few late ones, with redeliveries.
			order := make([]int, len(evs))
			for i := range order {
				order[i] = i
			}
			for i := range order {
				if rng.IntN(6) == 0 && i+1 < len(order) {
					j := i + 1 + rng.IntN(min(3, len(order)-i-1))
					order[i], order[j] = order[j], order[i]
				}
			}
			snap := engine.NewSnapshot()
			booked := map[string]bool{} // event ids stored
			ledger := map[string]*apd.Decimal{}
			current := map[string]struct { // by order: its latest event decided, and what it pays
				seq   uint64
				key   string
				owing apd.Decimal
			}{}
			for start := 0; start < len(order); {
				n := 1 + rng.IntN(5)
				var batch []shopEvent
				for _, i := range order[start:min(start+n, len(order))] {
					batch = append(batch, evs[i])
					if rng.IntN(8) == 0 {
						batch = append(batch, evs[i]) // the same event twice in a batch
					}
				}
				if start > 0 && rng.IntN(5) == 0 {
					batch = append(batch, evs[order[rng.IntN(start)]]) // a redelivery of an event stored before
				}
				start += n

				events := make([]engine.Event, len(batch))
				for i, e := range batch {
					events[i] = e.event()
				}
				results := engine.DecodeEvents(events, nil)
				eng.DecideBatch(t.Context(), results, snap)
				// Like the store: an event stored already is skipped, the first of two in a batch is kept.
				skip := map[int]bool{}
				for i, r := range results {
					if booked[r.Event.ID] {
						skip[i] = true
					}
					booked[r.Event.ID] = true
				}
				b, err := engine.Book(snap, results, func(i int) bool { return skip[i] })
				if err != nil {
					t.Fatalf("Book: %v", err)
				}
				snap.Apply(b, nil)
				for _, e := range b.Entries {
					k := e.AffiliateID + " " + e.Currency
					if ledger[k] == nil {
						ledger[k] = new(apd.Decimal)
					}
					apdAdd(t, ledger[k], &e.Amount)
					if e.Kind == engine.Accrual && e.Amount.Sign() <= 0 || e.Kind == engine.Reversal && e.Amount.Sign() >= 0 || e.Amount.IsZero() {
						t.Errorf("%s of %s: got amount %s, want an accrual > 0, a reversal < 0, no entry of 0", e.Kind, e.OrderID, e.Amount.Text('f'))
					}
				}
				for i, r := range results {
					if skip[i] {
						continue
					}
					if r.Err != nil {
						t.Fatalf("event %s: %v", r.Event.ID, r.Err)
					}
					cur := current[r.Order.OrderID]
					if r.Event.StreamSeq > cur.seq {
						cur.seq = r.Event.StreamSeq
						cur.key = r.Decision.AffiliateID + " " + r.Decision.Currency.Code
						cur.owing = apd.Decimal{}
						if r.Decision.Qualified {
							cur.owing.Set(&r.Decision.Commission)
						}
						current[r.Order.OrderID] = cur
					}
				}
			}
			want := map[string]*apd.Decimal{}
			for _, c := range current {
				if want[c.key] == nil {
					want[c.key] = new(apd.Decimal)
				}
				apdAdd(t, want[c.key], &c.owing)
			}
			keys := map[string]bool{}
			for k := range want {
				keys[k] = true
			}
			for k := range ledger {
				keys[k] = true
			}
			var sorted []string
			for k := range keys {
				sorted = append(sorted, k)
			}
			sort.Strings(sorted)
			for _, k := range sorted {
				got, w := ledger[k], want[k]
				if got == nil {
					got = new(apd.Decimal)
				}
				if w == nil {
					w = new(apd.Decimal)
				}
				if got.Cmp(w) != 0 {
					t.Errorf("%s: ledger sums to %s, want %s (the current decisions' commissions)", k, got.Text('f'), w.Text('f'))
				}
			}
		})
	}
}

func apdAdd(t *testing.T, sum, x *apd.Decimal) {
	t.Helper()
	if _, err := apd.BaseContext.WithPrecision(60).Add(sum, sum, x); err != nil {
		t.Fatal(err)
	}
}

// randomLifecycles makes events for orders orders, up to per each, interleaved in stream order.
func randomLifecycles(rng *rand.Rand, orders, per int) []shopEvent {
	var seqs [][]shopEvent
	statuses := []string{"pending", "completed", "completed", "completed", "refunded", "cancelled"}
	for o := 0; o < orders; o++ {
		var evs []shopEvent
		amount := 1 + rng.IntN(50000)
		aff, cur := "aff-"+strconv.Itoa(rng.IntN(3)), []string{"USD", "EUR", "JPY"}[rng.IntN(3)]
		for i := 0; i < 1+rng.IntN(per); i++ {
			if rng.IntN(10) == 0 {
				aff = "aff-" + strconv.Itoa(rng.IntN(3))
			}
			if rng.IntN(12) == 0 {
				cur = []string{"USD", "EUR", "JPY"}[rng.IntN(3)]
			}
			if rng.IntN(4) == 0 {
				amount = 1 + rng.IntN(50000)
			}
			st := statuses[rng.IntN(len(statuses))]
			refunded := 0
			if st == "refunded" || rng.IntN(5) == 0 {
				refunded = rng.IntN(amount + 1)
			}
			money := func(minor int) string {
				if cur == "JPY" {
					return strconv.Itoa(minor)
				}
				return fmt.Sprintf("%d.%02d", minor/100, minor%100)
			}
			evs = append(evs, shopEvent{order: "o-" + strconv.Itoa(o), affiliate: aff, currency: cur, status: st,
				amount: money(amount), refunded: money(refunded)})
		}
		seqs = append(seqs, evs)
	}
	var out []shopEvent
	var seq uint64
	for {
		var open []int
		for i, s := range seqs {
			if len(s) > 0 {
				open = append(open, i)
			}
		}
		if len(open) == 0 {
			return out
		}
		i := open[rng.IntN(len(open))]
		seq++
		e := seqs[i][0]
		seqs[i] = seqs[i][1:]
		e.seq, e.id = seq, "ev-"+strconv.FormatUint(seq, 10)
		out = append(out, e)
	}
}
