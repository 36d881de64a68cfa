package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// ledgerPolicy is a program whose completed orders earn 7.5% of amount − refunded_amount, and
// 20% once the affiliate has 300.00 of qualified sales in the month (when tiered).
func ledgerPolicy(version int, tiered bool) string {
	tier := ""
	if tiered {
		tier = `
  - id: top
    when: affiliate.month_qualified_sales >= decimal("300.00")
    rate: "20%"`
	}
	return fmt.Sprintf(`program: shop
version: %d
effective_from: 2025-01-01T00:00:00Z
rounding: half_up
payout: {hold_days: 30}
qualify:
  - id: completed
    expr: order.status == "completed"
    reason: not completed
rates:%s
  - id: all
    when: "true"
    rate: "7.5%%"
`, version, tier)
}

func ledgerEngine(t testing.TB, files map[string]string) *engine.Engine {
	t.Helper()
	dir := t.TempDir()
	for name, src := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	set, err := rules.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return engine.New(set)
}

type shopOrder struct {
	id, affiliate, status, currency, placed string
	amount, refunded                        int // minor units
}

func (o shopOrder) event(id string, seq uint64) engine.Event {
	money := func(m int) string {
		if o.currency == "JPY" {
			return strconv.Itoa(m)
		}
		return fmt.Sprintf("%d.%02d", m/100, m%100)
	}
	placed := o.placed
	if placed == "" {
		placed = "2025-03-10T12:00:00Z"
	}
	raw := fmt.Sprintf(`{"order_id":%q,"program":"shop","affiliate_id":%q,"status":%q,"placed_at":%q,"completed_at":"2025-03-11T00:00:00Z",`+
		`"buyer":{"id":"b","country":"US","new":true},"currency":%q,"amount":%q,"refunded_amount":%q}`,
		o.id, o.affiliate, o.status, placed, o.currency, money(o.amount), money(o.refunded))
	return engine.Event{ID: id, Subject: "orders.shop", StreamSeq: seq, Raw: []byte(raw)}
}

// decideAndSave is the pipeline's processor: load the history, decide, save; again when the
// history went stale meanwhile. It returns how many attempts were stale.
func decideAndSave(t *testing.T, s *Store, eng *engine.Engine, events []engine.Event) int {
	t.Helper()
	ctx := context.Background()
	results := engine.DecodeEvents(events, nil)
	orders, months := eng.HistoryKeys(results)
	for attempt := 0; ; attempt++ {
		h, err := s.LoadHistory(ctx, orders, months)
		if err != nil {
			t.Errorf("LoadHistory: %v", err)
			return attempt
		}
		eng.DecideBatch(ctx, results, h)
		_, err = s.SaveBatch(ctx, results)
		if errors.Is(err, engine.ErrStaleHistory) && attempt < 100 {
			continue
		}
		if err != nil {
			t.Errorf("SaveBatch: %v", err)
		}
		return attempt
	}
}

// currentOwed computes, from the decisions table alone, what each (affiliate currency) is owed:
// the commission of each order's current decision (its event with the highest stream sequence).
func currentOwed(t *testing.T, s *Store) map[string]string {
	t.Helper()
	ctx := context.Background()
	var rows []struct {
		OrderID     string `bun:"order_id"`
		AffiliateID string `bun:"affiliate_id"`
		Currency    string `bun:"currency"`
		Qualified   bool   `bun:"qualified"`
		Commission  string `bun:"commission"`
		StreamSeq   int64  `bun:"stream_seq"`
	}
	commission := "commission"
	if s.kind == Postgres {
		commission = "commission::text AS commission"
	}
	if err := s.DB().NewRaw("SELECT order_id, affiliate_id, currency, qualified, "+commission+", stream_seq FROM decisions WHERE program = 'shop'").Scan(ctx, &rows); err != nil {
		t.Fatal(err)
	}
	type cur struct {
		seq  int64
		key  string
		owed string
	}
	byOrder := map[string]cur{}
	for _, r := range rows {
		if c, ok := byOrder[r.OrderID]; ok && c.seq >= r.StreamSeq {
			continue
		}
		owed := "0"
		if r.Qualified {
			owed = r.Commission
		}
		byOrder[r.OrderID] = cur{r.StreamSeq, r.AffiliateID + " " + r.Currency, owed}
	}
	sums := map[string]*apd.Decimal{}
	for _, c := range byOrder {
		d, _, err := apd.NewFromString(c.owed)
		if err != nil {
			t.Fatal(err)
		}
		if sums[c.key] == nil {
			sums[c.key] = new(apd.Decimal)
		}
		exactSum.Add(sums[c.key], sums[c.key], d)
	}
	out := map[string]string{}
	for k, d := range sums {
		if !d.IsZero() {
			out[k] = d.Text('f')
		}
	}
	return out
}

func ledgerTotals(t *testing.T, s *Store) map[string]string {
	t.Helper()
	bs, err := s.Balances(context.Background(), "shop")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, b := range bs {
		if !b.Total.IsZero() {
			out[b.AffiliateID+" "+b.Currency] = b.Total.Text('f')
		}
	}
	return out
}

func sameSums(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, x := range a {
		dx, _, _ := apd.NewFromString(x)
		dy, _, err := apd.NewFromString(b[k])
		if err != nil || dx.Cmp(dy) != 0 {
			return false
		}
	}
	return true
}

func runLedgerSuite(t *testing.T, b backend) {
	ctx := context.Background()

	t.Run("the ledger sums to the current decisions, with two writers, late and redelivered events", func(t *testing.T) {
		cfg := b.fresh(t)
		s1, s2 := openStore(t, cfg), openStore(t, cfg)
		eng := ledgerEngine(t, map[string]string{"shop/v1.yaml": ledgerPolicy(1, true)})
		rng := rand.New(rand.NewPCG(7, 11))
		// 40 orders of 4 affiliates, up to 6 events each, in stream order.
		var events []engine.Event
		var seq uint64
		statuses := []string{"pending", "completed", "completed", "refunded", "cancelled"}
		for o := 0; o < 40; o++ {
			ord := shopOrder{id: "o-" + strconv.Itoa(o), affiliate: "aff-" + strconv.Itoa(o%4), currency: []string{"USD", "EUR"}[o%2], amount: 1 + rng.IntN(40000)}
			for i := 0; i < 1+rng.IntN(6); i++ {
				ord.status = statuses[rng.IntN(len(statuses))]
				ord.refunded = 0
				if ord.status == "refunded" || rng.IntN(4) == 0 {
					ord.refunded = rng.IntN(ord.amount + 1)
				}
				if rng.IntN(8) == 0 {
					ord.affiliate = "aff-" + strconv.Itoa(rng.IntN(4))
				}
				seq++
				events = append(events, ord.event("ev-"+strconv.FormatUint(seq, 10), seq))
			}
		}
		rng.Shuffle(len(events), func(i, j int) { // processing order is not stream order
			if rng.IntN(3) == 0 {
				events[i], events[j] = events[j], events[i]
			}
		})
		var batches [][]engine.Event
		for start := 0; start < len(events); {
			n := 1 + rng.IntN(12)
			batch := append([]engine.Event(nil), events[start:min(start+n, len(events))]...)
			if start > 0 && rng.IntN(3) == 0 {
				batch = append(batch, events[rng.IntN(start)]) // redelivered
			}
			batches = append(batches, batch)
			start += n
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		stale := 0
		for w, s := range []*Store{s1, s2} {
			wg.Go(func() {
				for i := w; i < len(batches); i += 2 {
					n := decideAndSave(t, s, eng, batches[i])
					mu.Lock()
					stale += n
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		t.Logf("%d events in %d batches by two writers; %d stale attempts decided again", len(events), len(batches), stale)
		// Every redelivered batch again: nothing changes.
		before := ledgerTotals(t, s1)
		entries, _ := s1.LedgerEntries(ctx, LedgerFilter{})
		for _, batch := range batches[:5] {
			decideAndSave(t, s1, eng, batch)
		}
		if after, again := ledgerTotals(t, s1), mustEntries(t, s1); fmt.Sprint(after) != fmt.Sprint(before) || len(again) != len(entries) {
			t.Errorf("redelivering batches changed the ledger: %d entries %v, want %d entries %v", len(again), after, len(entries), before)
		}
		owed := currentOwed(t, s1)
		if got := ledgerTotals(t, s1); !sameSums(got, owed) {
			t.Errorf("ledger per affiliate and currency = %v, want the current decisions' commissions %v", got, owed)
		}
		if len(owed) == 0 || len(entries) == 0 {
			t.Fatalf("the generated events qualified nothing: want a mix")
		}
		// Every entry names a stored decision of its order and event.
		for _, e := range entries {
			d, err := s1.Decision(ctx, e.DecisionID)
			if err != nil || d.OrderID != e.OrderID || d.EventID != e.EventID {
				t.Errorf("entry %d (%s of %s, event %s): decision %d = %+v, %v; want the decision of that event", e.ID, e.Kind, e.OrderID, e.EventID, e.DecisionID, d.OrderID, err)
			}
			if e.Status != StatusPending || e.PayoutID != 0 {
				t.Errorf("entry %d: status %q payout %d, want pending and unpaid", e.ID, e.Status, e.PayoutID)
			}
		}
	})

	t.Run("a batch decided with a stale history is refused and stores nothing", func(t *testing.T) {
		s := openStore(t, b.fresh(t))
		eng := ledgerEngine(t, map[string]string{"shop/v1.yaml": ledgerPolicy(1, false)})
		o := shopOrder{id: "o-1", affiliate: "a", status: "completed", currency: "USD", amount: 10000}
		stale := engine.DecodeEvents([]engine.Event{o.event("e2", 2)}, nil)
		eng.DecideBatch(ctx, stale, engine.NewSnapshot())
		decideAndSave(t, s, eng, []engine.Event{o.event("e1", 1)}) // meanwhile, the order qualified
		before := mustStats(t, s)
		if _, err := s.SaveBatch(ctx, stale); !errors.Is(err, engine.ErrStaleHistory) {
			t.Fatalf("got %v, want ErrStaleHistory", err)
		}
		if after := mustStats(t, s); after.Events != before.Events || after.Decisions != before.Decisions {
			t.Errorf("after a refused batch: %+v, want %+v", after, before)
		}
		if n := decideAndSave(t, s, eng, []engine.Event{o.event("e2", 2)}); n != 0 {
			t.Errorf("deciding it again with a fresh history: %d stale attempts, want 0", n)
		}
	})

	t.Run("pins: the set must keep pinned versions, and decisions record their inputs", func(t *testing.T) {
		s := openStore(t, b.fresh(t))
		v1 := ledgerEngine(t, map[string]string{"shop/v1.yaml": ledgerPolicy(1, true)})
		o := shopOrder{id: "o-1", affiliate: "a", status: "completed", currency: "USD", amount: 10000}
		decideAndSave(t, s, v1, []engine.Event{shopOrder{id: "o-0", affiliate: "a", status: "completed", currency: "USD", amount: 50000}.event("e0", 1)})
		decideAndSave(t, s, v1, []engine.Event{o.event("e1", 2)})
		both := ledgerEngine(t, map[string]string{"shop/v1.yaml": ledgerPolicy(1, true), "shop/v2.yaml": ledgerPolicy(2, false)})
		o.amount = 9000
		decideAndSave(t, s, both, []engine.Event{o.event("e2", 3)})
		ds, err := s.DecisionsByOrder(ctx, "shop", "o-1")
		if err != nil || len(ds) != 2 {
			t.Fatalf("got %d decisions, %v; want 2", len(ds), err)
		}
		latest := ds[0]
		if latest.PolicyVersion != 1 || latest.Commission.Text('f') != "18.00" {
			t.Errorf("the later event: got v%d paying %s, want v1 (pinned) paying 18.00 (the top tier: 500.00 sold before)", latest.PolicyVersion, latest.Commission.Text('f'))
		}
		in, err := s.DecisionInputs(ctx, latest.ID)
		if err != nil {
			t.Fatal(err)
		}
		if in.Pin == nil || in.Pin.Version != 1 || !in.Pinned || in.Affiliate == nil || in.Affiliate.QualifiedOrders != 1 ||
			in.Affiliate.QualifiedSales.Text('f') != "500.00" || in.Affiliate.Month != "2025-03" {
			t.Errorf("inputs = %+v (affiliate %+v), want pinned to v1, 1 order of 500.00 in 2025-03", in, in.Affiliate)
		}
		if err := s.CheckPinned(ctx, both.Policies().All()); err != nil {
			t.Errorf("CheckPinned with v1 loaded: %v", err)
		}
		onlyV2 := ledgerEngine(t, map[string]string{"shop/v2.yaml": ledgerPolicy(2, false)})
		if err := s.CheckPinned(ctx, onlyV2.Policies().All()); !errors.Is(err, ErrPinnedVersionMissing) {
			t.Errorf("CheckPinned without v1: got %v, want ErrPinnedVersionMissing", err)
		}
		// With v1 gone anyway, the event is dead-lettered with its reason, not decided with v2.
		decideAndSave(t, s, onlyV2, []engine.Event{o.event("e3", 4)})
		var kind string
		if err := s.DB().NewSelect().Table("dead_letters").Column("kind").Where("event_id = 'e3'").Scan(ctx, &kind); err != nil || kind != KindPinMissing {
			t.Errorf("the event of an order pinned to a missing version: dead letter kind %q (%v), want %q", kind, err, KindPinMissing)
		}
	})
}

func mustEntries(t *testing.T, s *Store) []engine.LedgerEntry {
	t.Helper()
	es, err := s.LedgerEntries(context.Background(), LedgerFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func TestSQLiteLedger(t *testing.T) { runLedgerSuite(t, sqliteBackend()) }

func TestPostgresLedger(t *testing.T) {
	postgresAdmin(t)
	runLedgerSuite(t, postgresBackend())
}
