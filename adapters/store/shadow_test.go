package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// shadowSeedPolicy is the seed policy as shadow version 2 paying returning buyers in the selected
// markets rate instead of 6%, with the header lines extra (e.g. "sample: 0.5\n").
func shadowSeedPolicy(tb testing.TB, rate, extra string) *rules.Policy {
	tb.Helper()
	src := string(seedPolicy(tb).Source)
	for _, e := range [][2]string{
		{"version: 1\n", "version: 2\nstage: shadow\n" + extra},
		{"when: order.buyer.country in selected_markets && !order.buyer.new\n    rate: \"6%\"",
			"when: order.buyer.country in selected_markets && !order.buyer.new\n    rate: \"" + rate + "\""},
	} {
		if strings.Count(src, e[0]) != 1 {
			tb.Fatalf("the seed policy does not hold %q once", e[0])
		}
		src = strings.Replace(src, e[0], e[1], 1)
	}
	p, ps := rules.Compile("shadow/v2.yaml", []byte(src))
	if p == nil {
		tb.Fatalf("compiling the shadow: %v", ps)
	}
	return p
}

// runShadowSuite is the conformance suite's part for shadow outcomes (run by runSuite).
func runShadowSuite(t *testing.T, b backend) {
	ctx := context.Background()

	t.Run("shadow outcomes are stored once, apart from the chain and the ledger", func(t *testing.T) {
		s := openStore(t, b.fresh(t))
		shadow := shadowSeedPolicy(t, "5%", "")
		eng := engine.New(mustSetOf(t, seedPolicy(t), shadow))
		_, bw := writeShadowBatch(t, s, eng, batchSpec{prefix: "sh", orders: 200, invalid: 3, seed: 21})
		if len(bw.Shadows) != len(bw.Decisions) {
			t.Fatalf("%d shadow outcomes for %d decisions, want one each", len(bw.Shadows), len(bw.Decisions))
		}
		var ledgerBefore int64
		if err := s.DB().NewRaw("SELECT count(*) FROM ledger_entries").Scan(ctx, &ledgerBefore); err != nil {
			t.Fatal(err)
		}
		// The batch stored them; written again (as on their own), nothing twice.
		if n, err := s.WriteShadows(ctx, bw.Shadows); err != nil || n != 0 {
			t.Errorf("WriteShadows after the batch = %d, %v; want 0 new", n, err)
		}
		// Only the outcomes that differ from the live decision have a row; every outcome is
		// counted in its batch's row.
		var own, stored, ledgerAfter int64
		for _, r := range bw.Shadows {
			if r.Diverged || r.ErrorKind != "" {
				own++
			}
		}
		var rowsOwn int64
		if err := s.DB().NewRaw("SELECT count(*) FROM shadow_outcomes").Scan(ctx, &rowsOwn); err != nil {
			t.Fatal(err)
		}
		if err := s.DB().NewRaw("SELECT coalesce(sum(events), 0) FROM shadow_batches").Scan(ctx, &stored); err != nil {
			t.Fatal(err)
		}
		if err := s.DB().NewRaw("SELECT count(*) FROM ledger_entries").Scan(ctx, &ledgerAfter); err != nil {
			t.Fatal(err)
		}
		if own == 0 || own == int64(len(bw.Shadows)) || rowsOwn != own || stored != int64(len(bw.Shadows)) || ledgerAfter != ledgerBefore {
			t.Errorf("stored %d shadow rows of their own (want the %d diverging of %d), %d outcomes in batches (want %d), ledger %d entries (want %d, as before)",
				rowsOwn, own, len(bw.Shadows), stored, len(bw.Shadows), ledgerAfter, ledgerBefore)
		}
		// The chain and its leaves are the live decisions' alone.
		verifyChain(t, s, "alibaba", int64(len(bw.Decisions)))

		vs, err := s.ShadowVersions(ctx, "alibaba")
		if err != nil || len(vs) != 1 || vs[0].Version != 2 || vs[0].Digest != shadow.Digest || vs[0].Events != stored {
			t.Fatalf("ShadowVersions = %+v, %v; want v2 %s with %d events", vs, err, shadow.Digest, stored)
		}
		if vs[0].First.IsZero() || vs[0].Last.Before(vs[0].First) {
			t.Errorf("ShadowVersions range %s … %s", vs[0].First, vs[0].Last)
		}

		// The report read back: live before, shadow after, the difference the selected
		// returning buyers' commissions at 5% instead of 6%, worked out here from the results.
		rep, err := engine.ShadowReportOf(ctx, s.ShadowHistory(engine.ShadowFilter{Program: "alibaba", Version: 2}), engine.ShadowReportOptions{})
		if err != nil {
			t.Fatal(err)
		}
		type tot struct{ before, after apd.Decimal }
		want := map[string]*tot{}
		var diverged int64
		for _, r := range bw.Results {
			d := r.Decision
			if d == nil {
				continue
			}
			x := want[d.Currency.Code]
			if x == nil {
				x = &tot{}
				want[d.Currency.Code] = x
			}
			engine.SumContext.Add(&x.before, &x.before, &d.Commission)
			after := d.Commission
			if d.Qualified && d.RateRule == "selected_returning" {
				var v apd.Decimal
				engine.SumContext.Mul(&v, &d.Base, apd.New(5, -2))
				c := apd.BaseContext.WithPrecision(50)
				c.Rounding = apd.RoundHalfUp
				c.Quantize(&after, &v, d.Commission.Exponent)
				if after.Cmp(&d.Commission) != 0 {
					diverged++
				}
			}
			engine.SumContext.Add(&x.after, &x.after, &after)
		}
		if rep.Events != stored || rep.Compared != stored || rep.Diverged != diverged {
			t.Errorf("report: events %d, compared %d, diverged %d; want %d, %d, %d", rep.Events, rep.Compared, rep.Diverged, stored, stored, diverged)
		}
		if diverged == 0 {
			t.Fatalf("no order diverged: the batch has no selected returning buyer")
		}
		for _, ct := range rep.Totals {
			w := want[ct.Currency]
			if w == nil || ct.Before.Cmp(&w.before) != 0 || ct.After.Cmp(&w.after) != 0 {
				t.Errorf("%s: before %s after %s; want %v", ct.Currency, ct.Before.Text('f'), ct.After.Text('f'), w)
			}
		}
		if m := rep.Matrix; m.LiveOnly != 0 || m.ShadowOnly != 0 || m.BothQualified+m.NeitherQualify != stored {
			t.Errorf("matrix %+v: want only both or neither qualified", m)
		}
		if len(rep.Diverging) == 0 || rep.Diverging[0].Cause.Rule != "selected_returning" || rep.Diverging[0].Cause.Kind != engine.CauseTerms {
			t.Errorf("the top diverging order: %+v, want a change of selected_returning's terms", rep.Diverging)
		}

		latest, ok, err := s.LatestDecided(ctx, "alibaba")
		if err != nil || !ok || latest.PlacedAt.IsZero() {
			t.Fatalf("LatestDecided = %+v, %t, %v", latest, ok, err)
		}
		for _, r := range bw.Results {
			if r.Decision != nil && r.Order.PlacedAt.After(latest.PlacedAt) {
				t.Errorf("order %s placed %s after the latest decided %s", r.Order.OrderID, r.Order.PlacedAt, latest.PlacedAt)
			}
		}
		if _, ok, err := s.LatestDecided(ctx, "nosuch"); ok || err != nil {
			t.Errorf("LatestDecided of a program with no decision = %t, %v", ok, err)
		}
	})

	t.Run("a shadow that fails to decide is stored as its error, the batch as without it", func(t *testing.T) {
		s := openStore(t, b.fresh(t))
		broken := brokenShadowPolicy(t, 2)
		eng := engine.New(mustSetOf(t, seedPolicy(t), broken))
		results, bw := writeShadowBatch(t, s, eng, batchSpec{prefix: "se", orders: 200, seed: 22})
		if len(bw.Dead) != 0 || len(bw.Decisions) != 200 {
			t.Fatalf("%d decisions, %d dead letters; want 200, 0", len(bw.Decisions), len(bw.Dead))
		}
		failed := 0
		for _, r := range bw.Shadows {
			if r.ErrorKind != "" {
				failed++
				if r.ErrorKind != engine.ErrorKindRule || !strings.Contains(r.Error, "division by zero") {
					t.Errorf("shadow error %s: %s", r.ErrorKind, r.Error)
				}
			}
		}
		// sample 0.5: about half the orders, and exactly those the hash picks.
		want := 0
		for _, r := range results {
			if broken.InSample(engine.SampleHash(r.Order.Program, r.Order.OrderID)) {
				want++
			}
		}
		if len(bw.Shadows) != want || want < 60 || want > 140 || failed == 0 {
			t.Fatalf("%d shadow outcomes (%d failed); want the %d the sample picks", len(bw.Shadows), failed, want)
		}
		if _, err := s.WriteShadows(ctx, bw.Shadows); err != nil {
			t.Fatal(err)
		}
		rep, err := engine.ShadowReportOf(ctx, s.ShadowHistory(engine.ShadowFilter{Program: "alibaba"}), engine.ShadowReportOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Errors[engine.ErrorKindRule] != int64(failed) || rep.Compared != int64(want-failed) {
			t.Errorf("report: errors %v, compared %d; want %d rule errors, %d compared", rep.Errors, rep.Compared, failed, want-failed)
		}
		verifyChain(t, s, "alibaba", 200)
		// The filter by time selects by the order's time.
		rep, err = engine.ShadowReportOf(ctx, s.ShadowHistory(engine.ShadowFilter{Program: "alibaba", From: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}), engine.ShadowReportOptions{})
		if err != nil || rep.Events != 0 {
			t.Errorf("a range after every order: %d events, %v", rep.Events, err)
		}
	})
}

// runShadowMigrationSuite: outcomes stored a row each in shadow_decisions (migration
// 20261203000006, as the first build of shadows wrote them) read the same after migration
// 20261203000008 has moved them into their batches' rows as they read when written there.
func runShadowMigrationSuite(t *testing.T, b backend) {
	ctx := context.Background()
	s := openStore(t, b.fresh(t))
	cut := shadowSeedPolicy(t, "5%", "")
	broken := brokenShadowPolicy(t, 3)
	eng := engine.New(mustSetOf(t, seedPolicy(t), cut, broken))
	_, bw := writeShadowBatch(t, s, eng, batchSpec{prefix: "sm", orders: 300, seed: 23})
	report := func() string {
		t.Helper()
		rep, err := engine.ShadowReportOf(ctx, s.ShadowHistory(engine.ShadowFilter{Program: "alibaba"}), engine.ShadowReportOptions{MaxOrders: 1000, MaxErrors: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Diverged == 0 || rep.Errors[engine.ErrorKindRule] == 0 {
			t.Fatalf("report: %d diverged, errors %v; want some of each", rep.Diverged, rep.Errors)
		}
		j, err := json.Marshal(rep)
		if err != nil {
			t.Fatal(err)
		}
		return string(j)
	}
	want := report()

	// The store as migration 6 left it: shadow_decisions with a row per outcome of its own,
	// shadow_batches without outcomes, migration 8 not applied.
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := s.DB().ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec("DROP VIEW shadow_outcomes")
	exec("ALTER TABLE shadow_batches DROP COLUMN outcomes")
	if err := execScript(ctx, s.DB(), render(schemaShadow, typesFor(s.DB().Dialect().Name()))); err != nil {
		t.Fatal(err)
	}
	own := 0
	for _, r := range bw.Shadows {
		if !r.Diverged && r.ErrorKind == "" {
			continue
		}
		own++
		var flat any
		if r.Flat != "" {
			flat = r.Flat
		}
		rate, failed, stage := r.Rate, r.FailedRules, ""
		if rate == "" {
			rate = "0"
		}
		if failed == "" {
			failed = "[]"
		}
		if r.Cause.Kind == engine.CauseOutcome || r.Cause.Kind == engine.CauseTerms {
			stage = r.Cause.Stage.String()
		}
		exec("INSERT INTO shadow_decisions (program, version, digest, event_id, order_id, placed_at, diverged, qualified, failed_rules, "+
			"rate_rule, rate, flat, commission, currency, cause_kind, cause_stage, cause_rule, cause_old, cause_new, error_kind, error) "+
			"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
			r.Program, r.Version, r.Digest, r.EventID, r.OrderID, r.PlacedAt.UTC(), r.Diverged, r.Qualified, failed,
			r.RateRule, rate, flat, r.Commission.Text('f'), r.Currency, r.Cause.Kind, stage, r.Cause.Rule, r.Cause.Old, r.Cause.New,
			r.ErrorKind, r.Error)
	}
	exec("DELETE FROM " + migrationsTable + " WHERE name = '20261203000008'")

	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var moved int
	if err := s.DB().NewRaw("SELECT count(*) FROM shadow_outcomes").Scan(ctx, &moved); err != nil || moved != own {
		t.Fatalf("after migration 8: %d outcomes in shadow_outcomes (%v), want the %d of shadow_decisions", moved, err, own)
	}
	if got := report(); got != want {
		t.Errorf("the report after migration 8:\n%s\nwant, as written in the batches' rows:\n%s", got, want)
	}
	if _, err := s.DB().ExecContext(ctx, "SELECT count(*) FROM shadow_decisions"); err == nil {
		t.Error("shadow_decisions is still there")
	}
	if err := s.Migrate(ctx); err != nil {
		t.Errorf("migrating again: %v", err)
	}
}

// brokenShadowPolicy is the seed as shadow version n, sampling half the orders, whose rule divides
// by zero for every order in a selected market: a run-time error.
func brokenShadowPolicy(tb testing.TB, n int) *rules.Policy {
	tb.Helper()
	src := strings.Replace(string(shadowSeedPolicy(tb, "6%", "sample: 0.5\n").Source),
		"expr: order.status == \"completed\"", "expr: 'order.status == \"completed\" && (order.buyer.country in selected_markets ? 1 / (size(order.items) - size(order.items)) == 0 : true)'", 1)
	src = strings.Replace(src, "version: 2\n", fmt.Sprintf("version: %d\n", n), 1)
	p, ps := rules.Compile(fmt.Sprintf("shadow/v%d.yaml", n), []byte(src))
	if p == nil {
		tb.Fatal(ps)
	}
	return p
}

// writeShadowBatch decides the events of a generated batch with eng and stores them as a batch of a
// partition of their own.
func writeShadowBatch(tb testing.TB, s *Store, eng *engine.Engine, spec batchSpec) ([]engine.Result, *engine.BatchWrite) {
	tb.Helper()
	ctx := context.Background()
	results := genBatch(tb, spec)
	events := make([]engine.Event, len(results))
	for i := range results {
		events[i] = results[i].Event
	}
	w, err := engine.ClaimPartition(ctx, s, int(nextPart.Add(1)), nextEpoch.Add(1))
	if err != nil {
		tb.Fatal(err)
	}
	bw, err := w.Write(ctx, eng, events)
	if err != nil {
		tb.Fatal(err)
	}
	return results, bw
}
