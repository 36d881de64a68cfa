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
	"time"

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
		_, err = saveBatch(ctx, s, results)
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
	if s.backend == Postgres {
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
		engine.SumContext.Add(sums[c.key], sums[c.key], d)
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
		// Two owners of two partitions share an order (its events name two affiliates): one
		// decides e2 with the history before the other stores e1.
		s := openStore(t, b.fresh(t))
		eng := ledgerEngine(t, map[string]string{"shop/v1.yaml": ledgerPolicy(1, false)})
		o := shopOrder{id: "o-1", affiliate: "a", status: "completed", currency: "USD", amount: 10000}
		w, err := engine.ClaimPartition(ctx, s, 7, 100)
		if err != nil {
			t.Fatal(err)
		}
		stale := engine.DecodeEvents([]engine.Event{o.event("e2", 2)}, nil)
		orders, months := eng.HistoryKeys(stale)
		hist, err := s.LoadHistory(ctx, orders, months)
		if err != nil {
			t.Fatal(err)
		}
		b, err := eng.Pass(ctx, w.Head(), stale, hist, nil)
		if err != nil {
			t.Fatal(err)
		}
		decideAndSave(t, s, eng, []engine.Event{o.event("e1", 1)}) // meanwhile, the order qualified
		before := mustStats(t, s)
		if err := s.WriteBatch(ctx, b); !errors.Is(err, engine.ErrStaleHistory) {
			t.Fatalf("got %v, want ErrStaleHistory", err)
		}
		if after := mustStats(t, s); after.Events != before.Events || after.Decisions != before.Decisions {
			t.Errorf("after a refused batch: %+v, want %+v", after, before)
		}
		// The writer passes it again with a fresh history and stores it.
		got, err := w.Write(ctx, eng, []engine.Event{o.event("e2", 2)})
		if err != nil || len(got.Decisions) != 1 || got.Header.Seq != 1 {
			t.Fatalf("writing it again: %v, %+v", err, got)
		}
		if owed, totals := currentOwed(t, s), ledgerTotals(t, s); !sameSums(totals, owed) {
			t.Errorf("ledger %v, want the current decisions' %v", totals, owed)
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
		if err := s.DB().NewSelect().Table("dead_letters").Column("kind").Where("event_id = 'e3'").Scan(ctx, &kind); err != nil || kind != engine.ErrorKindPinMissing {
			t.Errorf("the event of an order pinned to a missing version: dead letter kind %q (%v), want %q", kind, err, engine.ErrorKindPinMissing)
		}
	})
}

func runPayoutSuite(t *testing.T, b backend) {
	ctx := context.Background()
	eng := ledgerEngine(t, map[string]string{"shop/v1.yaml": ledgerPolicy(1, false)})
	noMinimum := func(string) (rules.Payout, bool) { return rules.Payout{Method: "wire_transfer"}, true }
	build := func(terms func(string) (rules.Payout, bool)) func([]engine.LedgerEntry) ([]engine.Statement, error) {
		return func(es []engine.LedgerEntry) ([]engine.Statement, error) { return engine.Statements(es, terms) }
	}
	now := time.Date(2025, 5, 2, 9, 0, 0, 0, time.UTC)
	// Completed 2025-03-11, held 30 days: approved 2025-04-10, payable in April's statement.
	_, april, _ := engine.MonthBounds("2025-04")
	_, may, _ := engine.MonthBounds("2025-05")

	t.Run("a reversal after the payout is a negative line of the next statement", func(t *testing.T) {
		s := openStore(t, b.fresh(t))
		o := shopOrder{id: "o-1", affiliate: "a", status: "completed", currency: "USD", amount: 10000}
		decideAndSave(t, s, eng, []engine.Event{o.event("e1", 1), shopOrder{id: "o-2", affiliate: "a", status: "completed", currency: "USD", amount: 2000}.event("e2", 2)})
		if es, _ := s.Payable(ctx, "shop", time.Date(2025, 4, 10, 0, 0, 0, 0, time.UTC)); len(es) != 0 {
			t.Errorf("payable before the hold ends: got %d entries, want none", len(es))
		}
		run, sts, err := s.ClosePayouts(ctx, "shop", "2025-04", april, now, build(noMinimum))
		if err != nil {
			t.Fatal(err)
		}
		if len(sts) != 1 || !sts[0].Payable || sts[0].Total.Text('f') != "9.00" || run.Payouts != 1 || run.Entries != 2 {
			t.Fatalf("April: run %+v, statements %+v; want one payable statement of 9.00 (7.50 + 1.50) paying 2 entries", run, sts)
		}
		// Closing April again pays nothing.
		if _, _, err := s.ClosePayouts(ctx, "shop", "2025-04", april, now, build(noMinimum)); !errors.Is(err, ErrAlreadyClosed) {
			t.Errorf("closing April twice: got %v, want ErrAlreadyClosed", err)
		}
		// The order is refunded after it was paid.
		o.status, o.refunded = "refunded", o.amount
		decideAndSave(t, s, eng, []engine.Event{o.event("e3", 3)})
		es, err := s.Payable(ctx, "shop", may)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != 1 || es[0].Kind != engine.Reversal || es[0].Amount.Text('f') != "-7.50" || es[0].OrderID != "o-1" {
			t.Fatalf("May's payable entries: got %+v, want the reversal of o-1, -7.50", es)
		}
		_, sts, err = s.ClosePayouts(ctx, "shop", "2025-05", may, now, build(noMinimum))
		if err != nil {
			t.Fatal(err)
		}
		if len(sts) != 1 || sts[0].Payable || sts[0].Total.Text('f') != "-7.50" || sts[0].Reversals.Text('f') != "-7.50" {
			t.Errorf("May: got %+v, want one statement of -7.50, carried forward (nothing owed)", sts)
		}
		// Carried forward: the reversal is still unpaid, and nets against the next commission.
		if es, _ := s.Payable(ctx, "shop", may); len(es) != 1 {
			t.Errorf("after May: %d payable entries, want the reversal carried forward", len(es))
		}
	})

	t.Run("a balance below the minimum is carried forward", func(t *testing.T) {
		s := openStore(t, b.fresh(t))
		decideAndSave(t, s, eng, []engine.Event{shopOrder{id: "o-1", affiliate: "a", status: "completed", currency: "USD", amount: 10000}.event("e1", 1)})
		minimum := func(string) (rules.Payout, bool) {
			return rules.Payout{Method: "wire_transfer", Minimum: map[string]*apd.Decimal{"USD": apd.New(5000, -2)}}, true
		}
		run, sts, err := s.ClosePayouts(ctx, "shop", "2025-04", april, now, build(minimum))
		if err != nil {
			t.Fatal(err)
		}
		if len(sts) != 1 || sts[0].Payable || sts[0].Minimum == nil || run.Payouts != 0 || run.Entries != 0 {
			t.Fatalf("got run %+v, statements %+v; want 7.50 below the minimum 50.00, nothing paid", run, sts)
		}
		es, _ := s.LedgerEntries(ctx, LedgerFilter{})
		if len(es) != 1 || es[0].PayoutID != 0 || es[0].Status != StatusApproved {
			t.Errorf("got entries %+v, want the entry approved and unpaid", es)
		}
		if es, _ := s.Payable(ctx, "shop", may); len(es) != 1 {
			t.Errorf("May: %d payable entries, want the one carried forward", len(es))
		}
	})

	t.Run("concurrent closes never pay an entry twice", func(t *testing.T) {
		cfg := b.fresh(t)
		stores := []*Store{openStore(t, cfg), openStore(t, cfg)}
		var events []engine.Event
		for i := 0; i < 60; i++ {
			events = append(events, shopOrder{id: "o-" + strconv.Itoa(i), affiliate: "aff-" + strconv.Itoa(i%5), status: "completed", currency: "USD", amount: 1000 + i}.event("e"+strconv.Itoa(i), uint64(i+1)))
		}
		decideAndSave(t, stores[0], eng, events)
		months := []string{"2025-04", "2025-04", "2025-05", "2025-05", "2025-06", "2025-04"}
		var wg sync.WaitGroup
		errs := make([]error, len(months))
		for i, m := range months {
			wg.Go(func() {
				month, asOf, _ := engine.MonthBounds(m)
				_, _, errs[i] = stores[i%2].ClosePayouts(ctx, "shop", month, asOf, now, build(noMinimum))
			})
		}
		wg.Wait()
		closed := map[string]int{}
		for i, err := range errs {
			switch {
			case err == nil:
				closed[months[i]]++
			case !errors.Is(err, ErrAlreadyClosed):
				t.Errorf("close %d (%s): %v", i, months[i], err)
			}
		}
		if closed["2025-04"] != 1 || closed["2025-05"] != 1 || closed["2025-06"] != 1 {
			t.Errorf("closed runs per month: got %v, want each month closed exactly once", closed)
		}
		var paid struct {
			Entries int64 `bun:"entries"`
			Payouts int64 `bun:"payouts"`
		}
		if err := stores[0].DB().NewRaw("SELECT (SELECT count(*) FROM ledger_entries WHERE payout_id IS NOT NULL) AS entries, "+
			"(SELECT COALESCE(SUM(entries), 0) FROM payouts) AS payouts").Scan(ctx, &paid); err != nil {
			t.Fatal(err)
		}
		if paid.Entries != 60 || paid.Payouts != 60 {
			t.Errorf("got %d entries marked paid and %d counted in payouts, want 60 and 60: every entry paid once", paid.Entries, paid.Payouts)
		}
		bs, _ := stores[0].Balances(ctx, "shop")
		var ledgerTotal, payoutTotal apd.Decimal
		for _, b := range bs {
			engine.SumContext.Add(&ledgerTotal, &ledgerTotal, &b.Total)
		}
		var amounts []string
		amount := "amount"
		if stores[0].backend == Postgres {
			amount = "amount::text"
		}
		if err := stores[0].DB().NewRaw("SELECT "+amount+" FROM payouts").Scan(ctx, &amounts); err != nil {
			t.Fatal(err)
		}
		for _, a := range amounts {
			d, _, _ := apd.NewFromString(a)
			engine.SumContext.Add(&payoutTotal, &payoutTotal, d)
		}
		if ledgerTotal.Cmp(&payoutTotal) != 0 {
			t.Errorf("payouts total %s, want the ledger's %s", payoutTotal.Text('f'), ledgerTotal.Text('f'))
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

func TestSQLiteLedger(t *testing.T) {
	runLedgerSuite(t, sqliteBackend())
	runPayoutSuite(t, sqliteBackend())
}

func TestPostgresLedger(t *testing.T) {
	postgresAdmin(t)
	runLedgerSuite(t, postgresBackend())
	runPayoutSuite(t, postgresBackend())
}
