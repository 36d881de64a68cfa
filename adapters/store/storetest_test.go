package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/engine/audit"
	"github.com/commissioner/commissioner/rules"
)

// backend is one database the conformance suite runs against.
type backend struct {
	// fresh makes a new, empty database (dropped when the test ends) and returns its config.
	// Several Stores may be opened on one config.
	fresh func(tb testing.TB) Config
	// kill, when set, breaks every connection of the database made by fresh, while a
	// transaction is open (the database becoming unreachable mid-batch).
	kill func(t *testing.T, cfg Config)
}

// openStore opens a Store and closes it when the test ends.
func openStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open(%s): %v", cfg, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func mustSave(t *testing.T, s *Store, results []engine.Result) Saved {
	t.Helper()
	saved, err := saveBatch(context.Background(), s, results)
	if err != nil {
		t.Fatalf("SaveBatch: %v", err)
	}
	return saved
}

func mustStats(t *testing.T, s *Store) Stats {
	t.Helper()
	st, err := s.Stats(context.Background())
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	return st
}

// runSuite is the store conformance suite: every database the store supports must pass it.
func runSuite(t *testing.T, b backend) {
	ctx := context.Background()
	runShadowSuite(t, b) // shadow_test.go
	t.Run("shadow outcomes stored a row each are moved into their batches by migration 8", func(t *testing.T) {
		runShadowMigrationSuite(t, b)
	})

	t.Run("saves decisions, events and dead letters", func(t *testing.T) {
		s := openStore(t, b.fresh(t))
		results := genBatch(t, batchSpec{prefix: "a", orders: 300, invalid: 5, unknownProgram: 3, noPolicy: 2, seed: 1})
		want := expected(results)
		if want.qualified == 0 || want.qualified == want.decisions {
			t.Fatalf("the generated batch has %d qualified of %d decisions: want a mix", want.qualified, want.decisions)
		}
		got := mustSave(t, s, results)
		if got != (Saved{Events: want.events, Decisions: want.decisions, DeadLetters: want.dead}) {
			t.Errorf("SaveBatch = %+v, want %+v", got, Saved{Events: want.events, Decisions: want.decisions, DeadLetters: want.dead})
		}
		st := mustStats(t, s)
		if st.Events != int64(want.events) || st.Decisions != int64(want.decisions) || st.Qualified != int64(want.qualified) || st.DeadLetters != int64(want.dead) {
			t.Errorf("Stats = events %d, decisions %d, qualified %d, dead %d; want %d, %d, %d, %d",
				st.Events, st.Decisions, st.Qualified, st.DeadLetters, want.events, want.decisions, want.qualified, want.dead)
		}
		checkStatsBreakdown(t, st, results)

		// Dead letters carry their kind and reason.
		var dl []struct {
			EventID string `bun:"event_id"`
			Kind    string `bun:"kind"`
			Reason  string `bun:"reason"`
			OrderID string `bun:"order_id"`
			Raw     []byte `bun:"raw"`
		}
		if err := s.DB().NewSelect().Table("dead_letters").Column("event_id", "kind", "reason", "order_id", "raw").Scan(ctx, &dl); err != nil {
			t.Fatal(err)
		}
		kinds := map[string]int{}
		byID := map[string]int{}
		for i, d := range dl {
			kinds[d.Kind]++
			byID[d.EventID] = i
		}
		if want := map[string]int{engine.ErrorKindInvalid: 5, engine.ErrorKindUnknownProgram: 3, engine.ErrorKindNoPolicy: 2}; fmt.Sprint(kinds) != fmt.Sprint(want) {
			t.Errorf("dead letters by kind = %v, want %v", kinds, want)
		}
		for _, r := range results {
			if r.Err == nil {
				continue
			}
			d := dl[byID[r.Event.ID]]
			if d.Reason != r.Err.Error() || d.OrderID != r.OrderID() || string(d.Raw) != string(r.Event.Raw) {
				t.Errorf("dead letter %s = reason %q, order %q, raw %q; want %q, %q, %q",
					r.Event.ID, d.Reason, d.OrderID, d.Raw, r.Err, r.OrderID(), r.Event.Raw)
			}
		}

		// Each decision reads back exactly as decided.
		for _, r := range results {
			if r.Err != nil {
				continue
			}
			ds, err := s.DecisionsByOrder(ctx, "alibaba", r.Order.OrderID)
			if err != nil {
				t.Fatal(err)
			}
			if len(ds) != 1 {
				t.Fatalf("DecisionsByOrder(%s) = %d decisions, want 1", r.Order.OrderID, len(ds))
			}
			checkDecision(t, ds[0], r)
			byID, err := s.Decision(ctx, ds[0].ID)
			if err != nil {
				t.Fatal(err)
			}
			checkDecision(t, byID, r)
		}
		if _, err := s.Decision(ctx, 1<<40); !errors.Is(err, ErrNotFound) {
			t.Errorf("Decision(missing) error = %v, want ErrNotFound", err)
		}

		// The policy version is stored with its exact source.
		p := seedPolicy(t)
		sp, err := s.PolicyVersion(ctx, "alibaba", 1)
		if err != nil {
			t.Fatal(err)
		}
		if sp.Digest != p.Digest || string(sp.Source) != string(p.Source) || sp.File != p.File || !sp.EffectiveFrom.Equal(p.EffectiveFrom) || sp.FirstUsedAt.IsZero() {
			t.Errorf("PolicyVersion = digest %s, file %s, effective %s, first used %s, %d bytes; want %s, %s, %s, set, %d bytes",
				sp.Digest, sp.File, sp.EffectiveFrom, sp.FirstUsedAt, len(sp.Source), p.Digest, p.File, p.EffectiveFrom, len(p.Source))
		}
		if _, err := s.PolicyVersion(ctx, "alibaba", 99); !errors.Is(err, ErrNotFound) {
			t.Errorf("PolicyVersion(v99) error = %v, want ErrNotFound", err)
		}
		if n, err := s.CountDuplicateDecisions(ctx); err != nil || n != 0 {
			t.Errorf("CountDuplicateDecisions = %d, %v; want 0", n, err)
		}
		verifyChain(t, s, "alibaba", int64(want.decisions))
	})

	t.Run("a redelivered batch doubles nothing and keeps the chain", func(t *testing.T) {
		s := openStore(t, b.fresh(t))
		first := genBatch(t, batchSpec{prefix: "r", orders: 200, invalid: 3, unknownProgram: 1, seed: 2})
		want := expected(first)
		mustSave(t, s, first)
		heads, _ := s.PartitionHeads(ctx)
		before := mustStats(t, s)

		again := mustSave(t, s, first)
		if again != (Saved{Duplicates: len(first)}) {
			t.Errorf("saving the batch again = %+v, want %+v", again, Saved{Duplicates: len(first)})
		}
		after := mustStats(t, s)
		if fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("Stats after redelivery = %+v, want %+v", after, before)
		}
		// The redelivered batch is recorded (its stream position) with no leaf.
		heads2, _ := s.PartitionHeads(ctx)
		if len(heads2) != 1 || heads2[0].Seq != heads[0].Seq+1 {
			t.Errorf("partition heads after redelivery = %v, want one more batch than %v", heads2, heads)
		}
		if leaves := mustStats(t, s); leaves.Decisions != before.Decisions {
			t.Errorf("redelivery stored decisions")
		}

		// A batch half redelivered, half new (and one event twice in it) stores only the new.
		fresh := genBatch(t, batchSpec{prefix: "r2", orders: 100, invalid: 2, seed: 3})
		mixed := append(append(append([]engine.Result{}, first[:100]...), fresh...), fresh[0])
		got := mustSave(t, s, mixed)
		wantFresh := expected(fresh)
		if got != (Saved{Events: wantFresh.events, Decisions: wantFresh.decisions, DeadLetters: wantFresh.dead, Duplicates: 101}) {
			t.Errorf("saving a mixed batch = %+v, want %+v", got, Saved{Events: wantFresh.events, Decisions: wantFresh.decisions, DeadLetters: wantFresh.dead, Duplicates: 101})
		}
		verifyChain(t, s, "alibaba", int64(want.decisions+wantFresh.decisions))
		if n, err := s.CountDuplicateDecisions(ctx); err != nil || n != 0 {
			t.Errorf("CountDuplicateDecisions = %d, %v; want 0", n, err)
		}

		// An empty batch is fine.
		if got := mustSave(t, s, nil); got != (Saved{}) {
			t.Errorf("SaveBatch(nil) = %+v, want zero", got)
		}
	})

	t.Run("two writers on one database keep one chain", func(t *testing.T) {
		cfg := b.fresh(t)
		s1, s2 := openStore(t, cfg), openStore(t, cfg)
		// Both writers save the same 6 batches, in opposite orders, plus 3 batches of their own:
		// every event must be decided once, and the chain must be one chain.
		var shared, own1, own2 [][]engine.Result
		for i := range 6 {
			shared = append(shared, genBatch(t, batchSpec{prefix: "s" + strconv.Itoa(i), orders: 150, invalid: 1, seed: uint64(10 + i)}))
		}
		for i := range 3 {
			own1 = append(own1, genBatch(t, batchSpec{prefix: "x" + strconv.Itoa(i), orders: 150, seed: uint64(20 + i)}))
			own2 = append(own2, genBatch(t, batchSpec{prefix: "y" + strconv.Itoa(i), orders: 150, seed: uint64(30 + i)}))
		}
		run := func(s *Store, batches [][]engine.Result) (Saved, error) {
			var total Saved
			for _, bt := range batches {
				got, err := saveBatch(ctx, s, bt)
				if err != nil {
					return total, err
				}
				total.Events += got.Events
				total.Decisions += got.Decisions
				total.DeadLetters += got.DeadLetters
				total.Duplicates += got.Duplicates
			}
			return total, nil
		}
		var reversed [][]engine.Result
		for i := len(shared) - 1; i >= 0; i-- {
			reversed = append(reversed, shared[i])
		}
		var wg sync.WaitGroup
		var got [2]Saved
		var errs [2]error
		interleave := func(own, sh [][]engine.Result) [][]engine.Result {
			var out [][]engine.Result
			for i := range sh {
				out = append(out, sh[i])
				if i < len(own) {
					out = append(out, own[i])
				}
			}
			return out
		}
		wg.Add(2)
		go func() { defer wg.Done(); got[0], errs[0] = run(s1, interleave(own1, shared)) }()
		go func() { defer wg.Done(); got[1], errs[1] = run(s2, interleave(own2, reversed)) }()
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("writer %d: %v", i+1, err)
			}
		}
		var want counts
		for _, bt := range append(append(append([][]engine.Result{}, shared...), own1...), own2...) {
			c := expected(bt)
			want.events += c.events
			want.decisions += c.decisions
			want.dead += c.dead
		}
		if d := got[0].Decisions + got[1].Decisions; d != want.decisions {
			t.Errorf("the writers stored %d decisions together, want %d", d, want.decisions)
		}
		if e := got[0].Events + got[1].Events; e != want.events {
			t.Errorf("the writers stored %d events together, want %d", e, want.events)
		}
		st := mustStats(t, s1)
		if st.Decisions != int64(want.decisions) || st.Events != int64(want.events) || st.DeadLetters != int64(want.dead) {
			t.Errorf("Stats = %d decisions, %d events, %d dead; want %d, %d, %d", st.Decisions, st.Events, st.DeadLetters, want.decisions, want.events, want.dead)
		}
		if n, err := s1.CountDuplicateDecisions(ctx); err != nil || n != 0 {
			t.Errorf("CountDuplicateDecisions = %d, %v; want 0", n, err)
		}
		verifyChain(t, s2, "alibaba", int64(want.decisions))
	})

	t.Run("stores opening a new database at once both migrate it", func(t *testing.T) {
		cfg := b.fresh(t)
		var wg sync.WaitGroup
		var stores [3]*Store
		var errs [3]error
		for i := range stores {
			wg.Add(1)
			go func() { defer wg.Done(); stores[i], errs[i] = Open(ctx, cfg) }()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("Open %d: %v", i+1, err)
				continue
			}
			defer stores[i].Close()
		}
		if t.Failed() {
			return
		}
		mustSave(t, stores[0], genBatch(t, batchSpec{prefix: "m", orders: 5, seed: 16}))
		if err := stores[2].Migrate(ctx); err != nil {
			t.Errorf("Migrate again: %v", err)
		}
		if st := mustStats(t, stores[1]); st.Decisions != 5 {
			t.Errorf("another store sees %d decisions, want 5", st.Decisions)
		}
	})

	t.Run("a policy file changed under the same version is refused", func(t *testing.T) {
		cfg := b.fresh(t)
		s := openStore(t, cfg)
		p, changed := seedPolicy(t), changedSeedPolicy(t)
		if err := s.CheckPolicies(ctx, nil); err != nil {
			t.Fatalf("CheckPolicies(none): %v", err)
		}
		if err := s.CheckPolicies(ctx, seedEngine(t).Policies().All()); err != nil {
			t.Errorf("CheckPolicies before any use: %v", err)
		}
		if err := s.CheckPolicies(ctx, []*rules.Policy{changed}); err != nil {
			t.Errorf("CheckPolicies(changed) before the version was used: %v (an unused version may change)", err)
		}
		mustSave(t, s, genBatch(t, batchSpec{prefix: "p", orders: 10, seed: 4}))
		if err := s.CheckPolicies(ctx, seedEngine(t).Policies().All()); err != nil {
			t.Errorf("CheckPolicies(same files): %v", err)
		}
		err := s.CheckPolicies(ctx, []*rules.Policy{changed})
		if !errors.Is(err, ErrPolicyChanged) {
			t.Fatalf("CheckPolicies(changed) = %v, want ErrPolicyChanged", err)
		}
		for _, want := range []string{p.File, "alibaba", "version 1", p.Digest, changed.Digest, "bump the version"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("CheckPolicies error %q does not say %q", err, want)
			}
		}
		var pc *PolicyChangedError
		if !errors.As(err, &pc) || pc.StoredDigest != p.Digest || pc.CurrentDigest != changed.Digest {
			t.Errorf("CheckPolicies error = %#v, want a *PolicyChangedError with both digests", err)
		}

		// Decisions made with the changed file are refused too, by a Store that has not seen the
		// version yet (another process) and by one that has.
		e := engine.New(mustSetOf(t, changed))
		ev := event("changed-1", 1000, genOrder(randFor(5), "changed-1").JSON())
		results := e.DecideEvents(ctx, []engine.Event{ev}, nil)
		if results[0].Err != nil {
			t.Fatal(results[0].Err)
		}
		for name, st := range map[string]*Store{"the same store": s, "another store": openStore(t, cfg)} {
			_, err := saveBatch(ctx, st, results)
			if !errors.Is(err, ErrPolicyChanged) {
				t.Errorf("%s: SaveBatch with the changed policy = %v, want ErrPolicyChanged", name, err)
			}
		}
		if st := mustStats(t, s); st.Decisions != 10 {
			t.Errorf("after refused batches, %d decisions stored, want 10", st.Decisions)
		}
	})

	t.Run("totals and decimals are exact", func(t *testing.T) {
		s := openStore(t, b.fresh(t))
		r := randFor(6)
		var events []engine.Event
		add := func(o orderSpec) {
			events = append(events, event("big-"+o.ID, uint64(len(events)+1), o.JSON()))
		}
		// Amounts whose commissions sum far beyond float64's 15–17 significant digits.
		for i, amount := range []string{"12345678901234567.89", "98765432109876543.21", "55555555555555555.55", "123.45", "33333333333333333.33"} {
			o := genOrder(r, "big"+strconv.Itoa(i))
			o.Status, o.Traffic, o.Category, o.Refunded = "completed", "US", "books", ""
			o.Country, o.Currency, o.Amount, o.New = "US", "USD", amount, true // 10%
			o.ClickAt = o.PlacedAt.Add(-time.Hour)
			add(o)
		}
		// Currencies with 0 and 3 minor units, and rounding ties.
		for i, c := range []struct{ country, currency, amount string }{{"JP", "JPY", "12345"}, {"ZA", "ZAR", "1000.10"}, {"GB", "GBP", "123.45"}} {
			o := genOrder(r, "cur"+strconv.Itoa(i))
			o.Status, o.Traffic, o.Category, o.Refunded = "completed", c.country, "books", ""
			o.Country, o.Currency, o.Amount = c.country, c.currency, c.amount
			o.ClickAt = o.PlacedAt.Add(-time.Hour)
			add(o)
		}
		o := genOrder(r, "bhd")
		o.Status, o.Traffic, o.Category, o.Refunded, o.Country, o.Currency, o.Amount = "completed", "BR", "books", "", "BR", "BHD", "1.234"
		o.ClickAt = o.PlacedAt.Add(-time.Hour)
		add(o)
		results := decide(t, events)
		want := map[string]*apd.Decimal{}
		for _, res := range results {
			if res.Err != nil || !res.Decision.Qualified {
				t.Fatalf("order %s: %v (qualified %v): the test needs every order to qualify", res.Event.ID, res.Err, res.Decision != nil && res.Decision.Qualified)
			}
			d := res.Decision
			if want[d.Currency.Code] == nil {
				want[d.Currency.Code] = new(apd.Decimal)
			}
			if _, err := engine.SumContext.Add(want[d.Currency.Code], want[d.Currency.Code], &d.Commission); err != nil {
				t.Fatal(err)
			}
		}
		mustSave(t, s, results)
		st := mustStats(t, s)
		if got, w := st.Commission["USD"], "19999999990000012.35"; got != w || want["USD"].Text('f') != w {
			t.Errorf("USD total = %s (engine sum %s), want %s", got, want["USD"].Text('f'), w)
		}
		if f, _ := strconv.ParseFloat(st.Commission["USD"], 64); strconv.FormatFloat(f, 'f', 2, 64) == st.Commission["USD"] {
			t.Errorf("USD total %s survives float64: the case does not test exactness", st.Commission["USD"])
		}
		for cur, w := range want {
			if st.Commission[cur] != w.Text('f') {
				t.Errorf("%s total = %q, want %q", cur, st.Commission[cur], w.Text('f'))
			}
		}
		if len(st.Commission) != len(want) {
			t.Errorf("Stats.Commission = %v, want %d currencies", st.Commission, len(want))
		}
		for _, res := range results {
			ds, err := s.DecisionsByOrder(ctx, "", res.Order.OrderID)
			if err != nil || len(ds) != 1 {
				t.Fatalf("DecisionsByOrder(%s) = %d, %v", res.Order.OrderID, len(ds), err)
			}
			checkDecision(t, ds[0], res)
		}
	})

	t.Run("a stale owner cannot store the batch it held", func(t *testing.T) {
		cfg := b.fresh(t)
		s1, s2 := openStore(t, cfg), openStore(t, cfg) // two processes
		eng := seedEngine(t)
		events := func(prefix string) []engine.Event {
			var out []engine.Event
			for _, r := range genBatch(t, batchSpec{prefix: prefix, orders: 30, invalid: 1, seed: 21}) {
				out = append(out, r.Event)
			}
			return out
		}
		old, err := engine.ClaimPartition(ctx, s1, 5, 10)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := old.Write(ctx, eng, events("s0")); err != nil {
			t.Fatal(err)
		}
		// The old owner holds a batch, decided, when its lease passes to another process.
		held := engine.DecodeEvents(events("s1"), nil)
		orders, months := eng.HistoryKeys(held)
		hist, err := s1.LoadHistory(ctx, orders, months)
		if err != nil {
			t.Fatal(err)
		}
		batch, err := eng.Pass(ctx, old.Head(), held, hist, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := engine.ClaimPartition(ctx, s1, 5, 9); !errors.Is(err, engine.ErrFenced) {
			t.Errorf("claiming with an older epoch: %v, want ErrFenced", err)
		}
		next, err := engine.ClaimPartition(ctx, s2, 5, 11)
		if err != nil {
			t.Fatal(err)
		}
		if h := next.Head(); h.Seq != 1 || h.Hash != old.Head().Hash || h.LastStreamSeq == 0 {
			t.Errorf("the new owner's head %+v, want the old owner's %+v", h, old.Head())
		}
		before := mustStats(t, s2)
		if err := s1.WriteBatch(ctx, batch); !errors.Is(err, engine.ErrFenced) {
			t.Fatalf("the stale owner's write: %v, want ErrFenced", err)
		}
		if _, err := old.Write(ctx, eng, events("s1")); !errors.Is(err, engine.ErrFenced) {
			t.Fatalf("the stale owner's writer: %v, want ErrFenced", err)
		}
		if after := mustStats(t, s2); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("the stale owner stored something: %+v, want %+v", after, before)
		}
		// The new owner stores the same events, once; the stale owner still cannot, even as the
		// next batch of the chain it knew.
		w, err := next.Write(ctx, eng, events("s1"))
		if err != nil || w.Header.Seq != 2 || len(w.Decisions) != 30 {
			t.Fatalf("the new owner's write: %v, %+v", err, w)
		}
		if err := s1.WriteBatch(ctx, batch); !errors.Is(err, engine.ErrFenced) {
			t.Errorf("the stale owner's write after the new owner's: %v, want ErrFenced", err)
		}
		verifyChain(t, s2, "alibaba", 60)
	})

	t.Run("a failure mid-batch writes nothing", func(t *testing.T) {
		cfg := b.fresh(t)
		s := openStore(t, cfg)
		base := genBatch(t, batchSpec{prefix: "f0", orders: 50, seed: 8})
		mustSave(t, s, base)
		before := mustStats(t, s)
		heads, _ := s.PartitionHeads(ctx)
		batch := genBatch(t, batchSpec{prefix: "f1", orders: 200, invalid: 2, seed: 9})

		// unchanged looks through a new Store: s's own pool may hold connections that died.
		unchanged := func(what string) {
			t.Helper()
			observer := openStore(t, cfg)
			if after := mustStats(t, observer); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("after %s: Stats = %+v, want unchanged %+v", what, after, before)
			}
			if h, _ := observer.PartitionHeads(ctx); fmt.Sprint(h) != fmt.Sprint(heads) {
				t.Errorf("after %s: chain heads = %v, want unchanged %v", what, h, heads)
			}
		}

		// The context is cancelled with the transaction open.
		cctx, cancel := context.WithCancel(ctx)
		s.hookBeforeCommit = func(context.Context) error { cancel(); return nil }
		if _, err := saveBatch(cctx, s, batch); !errors.Is(err, context.Canceled) {
			t.Errorf("SaveBatch with the context cancelled mid-batch = %v, want context.Canceled", err)
		}
		s.hookBeforeCommit = nil
		unchanged("a cancelled batch")

		// The database goes away with the transaction open.
		if b.kill != nil {
			s.hookBeforeCommit = func(context.Context) error { b.kill(t, cfg); return nil }
			if _, err := saveBatch(ctx, s, batch); err == nil {
				t.Errorf("SaveBatch with the connection killed mid-batch succeeded, want an error")
			}
			s.hookBeforeCommit = nil
			unchanged("a batch whose connection died")
		}

		// A batch whose policy version is new dies mid-way: the version must not be taken as
		// stored (the retry must store it).
		fresh := openStore(t, b.fresh(t))
		fresh.hookBeforeCommit = func(context.Context) error { return errors.New("injected failure") }
		if _, err := saveBatch(ctx, fresh, batch); err == nil || !strings.Contains(err.Error(), "injected failure") {
			t.Errorf("SaveBatch with an injected failure = %v, want it", err)
		}
		fresh.hookBeforeCommit = nil
		mustSave(t, fresh, batch)
		if _, err := fresh.PolicyVersion(ctx, "alibaba", 1); err != nil {
			t.Errorf("after the retry, PolicyVersion: %v", err)
		}

		// The retry after the failures stores everything, once. As the pipeline does, it retries
		// while connections that died with the server fail one by one (at most the pool's size).
		want := expected(batch)
		var got Saved
		var err error
		for range 10 {
			if got, err = saveBatch(ctx, s, batch); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("retrying SaveBatch: %v", err)
		}
		if got != (Saved{Events: want.events, Decisions: want.decisions, DeadLetters: want.dead}) {
			t.Errorf("the retry = %+v, want %+v", got, Saved{Events: want.events, Decisions: want.decisions, DeadLetters: want.dead})
		}
		verifyChain(t, s, "alibaba", before.Decisions+int64(want.decisions))

		// A closed store refuses.
		closed, err := Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := closed.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := saveBatch(ctx, closed, genBatch(t, batchSpec{prefix: "f2", orders: 5, seed: 10})); err == nil {
			t.Errorf("SaveBatch on a closed store succeeded, want an error")
		}
	})

	t.Run("events stream in placed_at order with filters", func(t *testing.T) {
		s := openStore(t, b.fresh(t))
		results := genBatch(t, batchSpec{prefix: "e", orders: 300, seed: 11})
		// A lifecycle: the same order again, later in the stream, now refunded.
		first := results[0].Order
		again := genOrder(randFor(12), first.OrderID)
		again.PlacedAt, again.Affiliate, again.Status, again.Refunded = first.PlacedAt, first.AffiliateID, "refunded", again.Amount
		results = append(results, decide(t, []engine.Event{event("e-again", 5000, again.JSON())})...)
		mustSave(t, s, results)

		collect := func(f EventFilter) []StoredEvent {
			t.Helper()
			var out []StoredEvent
			if err := s.Events(ctx, f, func(e StoredEvent) error { out = append(out, e); return nil }); err != nil {
				t.Fatalf("Events(%+v): %v", f, err)
			}
			return out
		}
		all := collect(EventFilter{})
		if len(all) != len(results) {
			t.Fatalf("Events() = %d events, want %d", len(all), len(results))
		}
		for i := 1; i < len(all); i++ {
			if all[i].PlacedAt.Before(all[i-1].PlacedAt) {
				t.Fatalf("Events() not in placed_at order at %d: %s after %s", i, all[i].PlacedAt, all[i-1].PlacedAt)
			}
		}
		byID := map[string]engine.Result{}
		for _, r := range results {
			byID[r.Event.ID] = r
		}
		for _, e := range all {
			r := byID[e.EventID]
			if string(e.Raw) != string(r.Event.Raw) || e.OrderID != r.Order.OrderID || e.Program != "alibaba" ||
				e.StreamSeq != r.Event.StreamSeq || !e.PlacedAt.Equal(r.Order.PlacedAt) || !e.ReceivedAt.Equal(r.Event.ReceivedAt) ||
				e.AffiliateID != r.Order.AffiliateID || e.Subject != r.Event.Subject {
				t.Fatalf("stored event %+v does not match %+v", e, r.Event)
			}
		}
		latest := collect(EventFilter{LatestPerOrder: true})
		if len(latest) != len(results)-1 {
			t.Errorf("Events(LatestPerOrder) = %d, want %d", len(latest), len(results)-1)
		}
		for _, e := range latest {
			if e.OrderID == first.OrderID && e.EventID != "e-again" {
				t.Errorf("Events(LatestPerOrder) kept %s for order %s, want e-again", e.EventID, first.OrderID)
			}
		}
		from, to := time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC), time.Date(2025, 3, 20, 0, 0, 0, 0, time.UTC)
		aff := results[1].Order.AffiliateID
		var wantRange, wantAff int
		for _, r := range results {
			if !r.Order.PlacedAt.Before(from) && r.Order.PlacedAt.Before(to) {
				wantRange++
			}
			if r.Order.AffiliateID == aff {
				wantAff++
			}
		}
		if got := collect(EventFilter{Program: "alibaba", From: from, To: to}); len(got) != wantRange || wantRange == 0 {
			t.Errorf("Events(from, to) = %d, want %d", len(got), wantRange)
		}
		if got := collect(EventFilter{Affiliate: aff}); len(got) != wantAff {
			t.Errorf("Events(affiliate %s) = %d, want %d", aff, len(got), wantAff)
		}
		if got := collect(EventFilter{Program: "other"}); len(got) != 0 {
			t.Errorf("Events(program other) = %d, want 0", len(got))
		}
		stop := errors.New("stop")
		n := 0
		if err := s.Events(ctx, EventFilter{}, func(StoredEvent) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
			t.Errorf("Events with fn failing = %v after %d calls, want stop after 1", err, n)
		}
		ds, err := s.DecisionsByOrder(ctx, "alibaba", first.OrderID)
		if err != nil || len(ds) != 2 || ds[0].EventID != "e-again" {
			t.Errorf("DecisionsByOrder(lifecycle) = %d decisions (first %v), %v; want 2, newest e-again first", len(ds), firstEventID(ds), err)
		}
	})

	t.Run("audit catches an edited row", func(t *testing.T) {
		s := openStore(t, b.fresh(t))
		results := genBatch(t, batchSpec{prefix: "t", orders: 40, seed: 13})
		mustSave(t, s, results)
		verifyChain(t, s, "alibaba", 40)
		// Edit a decision's commission behind the store's back, then put it back and delete a row.
		var original string
		if err := s.DB().NewRaw("SELECT commission FROM decisions WHERE batch_seq = 1 AND leaf = 7").Scan(ctx, &original); err != nil {
			t.Fatal(err)
		}
		if _, err := s.DB().NewRaw("UPDATE decisions SET commission = ? WHERE batch_seq = 1 AND leaf = 7", "999999.99").Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if err := checkChain(t, s, "alibaba", 40); err == nil || !strings.Contains(err.Error(), "batch 1 leaf 7 decision") {
			t.Errorf("verifying after editing decision 7 = %v, want it named", err)
		}
		if _, err := s.DB().NewRaw("UPDATE decisions SET commission = ? WHERE batch_seq = 1 AND leaf = 7", original).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s.DB().NewRaw("DELETE FROM decisions WHERE batch_seq = 1 AND leaf = 12").Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if err := checkChain(t, s, "alibaba", 40); err == nil || !strings.Contains(err.Error(), "batch 1 leaf 12: missing") {
			t.Errorf("verifying after deleting decision 12 = %v, want leaf 12 named missing", err)
		}
	})

	t.Run("ids with escapes, NUL and invalid UTF-8 are stored", func(t *testing.T) {
		s := openStore(t, b.fresh(t))
		tricky := `tab\there back\\slash new\nline \"quote\" é` // JSON escapes: a tab, a backslash, a newline, quotes
		o := genOrder(randFor(15), "x")
		raw := strings.Replace(string(o.JSON()), `"order_id":"x"`, `"order_id":"`+tricky+`"`, 1)
		nul := strings.Replace(string(o.JSON()), `"order_id":"x"`, `"order_id":"nul\u0000 and \udfff"`, 1)
		bad := strings.Replace(string(o.JSON()), `"order_id":"x"`, "\"order_id\":\"bytes \xff\xfe\"", 1)
		results := decide(t, []engine.Event{
			event("tricky\t1", 1, []byte(raw)), event("nul", 2, []byte(nul)), event("bad\xff", 3, []byte(bad)),
		})
		if results[0].Err != nil {
			t.Fatalf("deciding %s: %v", raw, results[0].Err)
		}
		mustSave(t, s, results)
		if again := mustSave(t, s, results); again != (Saved{Duplicates: 3}) {
			t.Errorf("saving again = %+v, want 3 duplicates", again)
		}
		ds, err := s.DecisionsByOrder(ctx, "alibaba", results[0].Order.OrderID)
		if err != nil || len(ds) != 1 {
			t.Fatalf("DecisionsByOrder(%q) = %d, %v; want 1", results[0].Order.OrderID, len(ds), err)
		}
		checkDecision(t, ds[0], results[0])
		// The order's state (written in bulk, as arrays on PostgreSQL) keeps the ids exactly.
		key := engine.OrderKey{Program: "alibaba", OrderID: results[0].Order.OrderID}
		snap, err := s.LoadHistory(ctx, []engine.OrderKey{key}, nil)
		if err != nil {
			t.Fatalf("LoadHistory: %v", err)
		}
		if st, ok := snap.Orders[key]; !ok || st.EventID != "tricky\t1" || st.AffiliateID != results[0].Order.AffiliateID {
			t.Errorf("the state of order %q = %+v (found %v), want event tricky\t1 of affiliate %s", key.OrderID, st, ok, results[0].Order.AffiliateID)
		}
		if st := mustStats(t, s); st.Decisions+st.DeadLetters != 3 {
			t.Errorf("stored %d decisions and %d dead letters, want 3 in all", st.Decisions, st.DeadLetters)
		}
		verifyChain(t, s, "alibaba", mustStats(t, s).Decisions)
	})

	t.Run("audit catches an edited order event", func(t *testing.T) {
		s := openStore(t, b.fresh(t))
		results := genBatch(t, batchSpec{prefix: "w", orders: 20, seed: 14})
		mustSave(t, s, results)
		verifyChain(t, s, "alibaba", 20)
		// Raise the amount of the order behind decision 5: re-deciding it no longer gives the
		// chained bytes.
		var eventID string
		if err := s.DB().NewRaw("SELECT event_id FROM decisions WHERE batch_seq = 1 AND leaf = 5").Scan(ctx, &eventID); err != nil {
			t.Fatal(err)
		}
		var r engine.Result
		for _, x := range results {
			if x.Event.ID == eventID {
				r = x
			}
		}
		edited := strings.Replace(string(r.Event.Raw), `"amount":"`, `"amount":"9`, 2)
		if _, err := s.DB().NewRaw("UPDATE decisions SET raw = ? WHERE event_id = ?", []byte(edited), eventID).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if err := checkChain(t, s, "alibaba", 20); err == nil || !strings.Contains(err.Error(), "batch 1 leaf 5 decision") {
			t.Errorf("verifying after editing the event of decision 5 = %v, want it named", err)
		}
	})
}

func firstEventID(ds []StoredDecision) string {
	if len(ds) == 0 {
		return ""
	}
	return ds[0].EventID
}

// checkDecision compares a stored decision with the engine's.
func checkDecision(t *testing.T, got StoredDecision, r engine.Result) {
	t.Helper()
	d := r.Decision
	failed := d.FailedRules
	if failed == nil {
		failed = []string{}
	}
	gotFailed := got.FailedRules
	if gotFailed == nil {
		gotFailed = []string{}
	}
	type view struct {
		EventID, OrderID, Program, Affiliate, Digest, RateRule, Rate, Base, Commission, Flat, Currency, Rounding, Env string
		Version                                                                                                       int
		Qualified, HasFlat                                                                                            bool
		Failed                                                                                                        string
		StreamSeq                                                                                                     uint64
	}
	flat := ""
	if d.HasFlat() {
		flat = d.Flat.Text('f')
	}
	gotFlat := ""
	if got.HasFlat {
		gotFlat = got.Flat.Text('f')
	}
	g := view{got.EventID, got.OrderID, got.Program, got.AffiliateID, got.PolicyDigest, got.RateRule, got.Rate.Text('f'),
		got.Base.Text('f'), got.Commission.Text('f'), gotFlat, got.Currency, got.Rounding, got.Env, got.PolicyVersion,
		got.Qualified, got.HasFlat, fmt.Sprint(gotFailed), got.StreamSeq}
	w := view{r.Event.ID, d.OrderID, d.Program, d.AffiliateID, d.PolicyDigest, d.RateRule, d.Rate.Text('f'),
		d.Base.Text('f'), d.Commission.Text('f'), flat, d.Currency.Code, string(d.Rounding), d.Env, d.PolicyVersion,
		d.Qualified, d.HasFlat(), fmt.Sprint(failed), r.Event.StreamSeq}
	if g != w {
		t.Errorf("stored decision of %s:\n got %+v\nwant %+v", r.Event.ID, g, w)
	}
	if len(got.Trace) != len(d.Policy.Qualify)+len(d.Policy.Rates) {
		t.Errorf("stored trace of %s has %d entries, want %d", r.Event.ID, len(got.Trace), len(d.Policy.Qualify)+len(d.Policy.Rates))
	}
	for _, o := range d.Trace {
		i := int(o.Index)
		if o.Stage == engine.StageRate {
			i += len(d.Policy.Qualify)
		}
		te := got.Trace[i]
		want := map[bool]string{true: "pass", false: "fail"}[o.Result]
		if o.Stage == engine.StageRate {
			want = map[bool]string{true: "match", false: "no_match"}[o.Result]
		}
		if te.Stage != o.Stage.String() || te.Rule != d.RuleID(o) || te.Outcome != want {
			t.Errorf("stored trace of %s [%d] = %+v, want {%s %s %s}", r.Event.ID, i, te, o.Stage, d.RuleID(o), want)
		}
	}
}

// checkStatsBreakdown compares Stats' per-rule counts and totals with the results.
func checkStatsBreakdown(t *testing.T, st Stats, results []engine.Result) {
	t.Helper()
	byRate, byFailed := map[string]int64{}, map[string]int64{}
	totals := map[string]*apd.Decimal{}
	for _, r := range results {
		if r.Err != nil {
			continue
		}
		d := r.Decision
		if d.Qualified {
			byRate[d.RateRule]++
			if totals[d.Currency.Code] == nil {
				totals[d.Currency.Code] = new(apd.Decimal)
			}
			engine.SumContext.Add(totals[d.Currency.Code], totals[d.Currency.Code], &d.Commission)
		}
		for _, f := range d.FailedRules {
			byFailed[f]++
		}
	}
	if fmt.Sprint(st.ByRateRule) != fmt.Sprint(byRate) {
		t.Errorf("Stats.ByRateRule = %v, want %v", st.ByRateRule, byRate)
	}
	if fmt.Sprint(st.ByFailedRule) != fmt.Sprint(byFailed) {
		t.Errorf("Stats.ByFailedRule = %v, want %v", st.ByFailedRule, byFailed)
	}
	want := map[string]string{}
	for c, d := range totals {
		want[c] = d.Text('f')
	}
	if fmt.Sprint(st.Commission) != fmt.Sprint(want) {
		t.Errorf("Stats.Commission = %v, want %v", st.Commission, want)
	}
}

// verifyChain fails the test unless checkChain passes.
func verifyChain(t *testing.T, s *Store, program string, wantLen int64) {
	t.Helper()
	if err := checkChain(t, s, program, wantLen); err != nil {
		t.Errorf("verifying the chain of %s: %v", program, err)
	}
}

// checkChain verifies the store as audit verify does (every decision re-run and booked again,
// every leaf, root and link) and counts the program's decisions.
func checkChain(t *testing.T, s *Store, program string, wantLen int64) error {
	t.Helper()
	var found []string
	rep, err := audit.Verify(context.Background(), s, audit.VerifyOptions{Program: program, OnFinding: func(f audit.Finding) {
		found = append(found, f.String())
	}})
	if err != nil {
		return err
	}
	if !rep.OK() {
		return fmt.Errorf("%d findings:\n%s", rep.Findings, strings.Join(found, "\n"))
	}
	if rep.Decisions != wantLen || rep.Reproduced != wantLen {
		return fmt.Errorf("%d decisions, %d reproduced; want %d", rep.Decisions, rep.Reproduced, wantLen)
	}
	return nil
}
