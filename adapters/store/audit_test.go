package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/engine/audit"
	"github.com/commissioner/commissioner/rules"
)

// tieredPolicy pays more from an affiliate's third qualified order of the month: its decisions
// read affiliate.*, which the store records with each decision.
const tieredPolicy = `program: shop
version: 1
effective_from: 2025-01-01T00:00:00Z
rounding: half_up
constants:
  tier_orders: 3
qualify:
  - id: completed
    expr: order.status == "completed"
    reason: not completed
rates:
  - id: top
    when: affiliate.month_qualified_orders >= tier_orders
    rate: "20%"
  - id: base
    when: "true"
    rate: "10%"
`

func TestAuditSQLite(t *testing.T)   { runAuditSuite(t, sqliteBackend()) }
func TestAuditPostgres(t *testing.T) { runAuditSuite(t, postgresBackend()) }

// auditStore is a fresh store holding two batches of real engine results (decisions, dead
// letters) in one chain.
func auditStore(t *testing.T, b backend) (*Store, int64) {
	t.Helper()
	s := openStore(t, b.fresh(t))
	var n int64
	for i, spec := range []batchSpec{
		{prefix: "a", orders: 150, invalid: 3, noPolicy: 2, seed: 11},
		{prefix: "b", seqBase: 1000, orders: 150, invalid: 2, seed: 12},
	} {
		results := genBatch(t, spec)
		saved := mustSave(t, s, results)
		if saved.Decisions == 0 {
			t.Fatalf("batch %d stored no decisions", i)
		}
		n += int64(saved.Decisions)
	}
	return s, n
}

// gotFinding is a finding reduced to what a test checks: its kind, reason and place.
type gotFinding struct {
	Kind   string
	Reason string
	Batch  uint64 // 0 when about no batch
	Leaf   int    // -1 when about no leaf
}

func verifyAll(t *testing.T, s *Store) (*audit.VerifyReport, []audit.Finding) {
	t.Helper()
	var fs []audit.Finding
	rep, err := audit.Verify(context.Background(), s, audit.VerifyOptions{Workers: 2, OnFinding: func(f audit.Finding) { fs = append(fs, f) }})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if rep.Findings != len(fs) {
		t.Errorf("report counts %d findings, OnFinding got %d", rep.Findings, len(fs))
	}
	return rep, fs
}

func reduce(fs []audit.Finding) []gotFinding {
	out := make([]gotFinding, len(fs))
	for i, f := range fs {
		out[i] = gotFinding{Kind: f.Kind, Reason: f.Reason, Batch: f.BatchSeq, Leaf: f.Leaf}
		if f.BatchSeq == 0 {
			out[i].Leaf = -1
		}
	}
	return out
}

func exec(t *testing.T, s *Store, query string, args ...any) {
	t.Helper()
	if _, err := s.DB().ExecContext(context.Background(), query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// rowAt reads the decision at a batch and leaf of the store's one partition.
func rowAt(t *testing.T, s *Store, batch uint64, leaf int) StoredDecision {
	t.Helper()
	var id int64
	if err := s.DB().NewRaw("SELECT id FROM decisions WHERE batch_seq = ? AND leaf = ?", int64(batch), leaf).Scan(context.Background(), &id); err != nil {
		t.Fatalf("reading batch %d leaf %d: %v", batch, leaf, err)
	}
	d, err := s.Decision(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// qualifiedAt is the first qualified decision of batch 1 from leaf on (it booked an accrual).
func qualifiedAt(t *testing.T, s *Store, from int) StoredDecision {
	t.Helper()
	for leaf := from; leaf < from+100; leaf++ {
		if d := rowAt(t, s, 1, leaf); d.Qualified && !d.Commission.IsZero() {
			return d
		}
	}
	t.Fatalf("no qualified decision in batch 1 from leaf %d", from)
	return StoredDecision{}
}

func runAuditSuite(t *testing.T, b backend) {
	ctx := context.Background()

	t.Run("a clean store verifies", func(t *testing.T) {
		s, n := auditStore(t, b)
		rep, fs := verifyAll(t, s)
		if len(fs) != 0 {
			t.Fatalf("got %d findings, want none; the first: %v", len(fs), fs[0])
		}
		if len(rep.Partitions) != 1 {
			t.Fatalf("got %d partitions, want 1", len(rep.Partitions))
		}
		c := rep.Partitions[0]
		if rep.Decisions != n || rep.Reproduced != n || c.Batches != 2 || c.LastSeq != 2 || c.Head.Seq != 2 || c.LastHash != c.Head.Hash.String() {
			t.Errorf("report = decisions %d, reproduced %d, batches %d, last %d, head %d; want %d, %d, 2, 2, 2, last hash = head hash",
				rep.Decisions, rep.Reproduced, c.Batches, c.LastSeq, c.Head.Seq, n, n)
		}
		if c.Leaves != n+7 {
			t.Errorf("%d leaves, want %d decisions and 7 dead letters", c.Leaves, n)
		}
		if rep.Policies != 1 {
			t.Errorf("checked %d policy versions, want 1", rep.Policies)
		}
	})

	cases := []struct {
		name   string
		tamper func(t *testing.T, s *Store, n int64) any
		want   func(n int64, x any) []gotFinding
		check  func(t *testing.T, fs []audit.Finding)
	}{
		{
			name: "an updated commission is named as altered",
			tamper: func(t *testing.T, s *Store, n int64) any {
				exec(t, s, "UPDATE decisions SET commission = '99999.99' WHERE batch_seq = 1 AND leaf = 17")
				return nil
			},
			want: func(int64, any) []gotFinding { return []gotFinding{{audit.FindingAltered, "", 1, 17}} },
			check: func(t *testing.T, fs []audit.Finding) {
				d := fs[0].Diffs
				if len(d) != 1 || d[0].Field != "commission" || d[0].Stored != "99999.99" {
					t.Errorf("diffs = %+v, want one: commission stored 99999.99", d)
				}
			},
		},
		{
			name: "a changed rate rule is named",
			tamper: func(t *testing.T, s *Store, n int64) any {
				exec(t, s, "UPDATE decisions SET rate_rule = 'forged_rule' WHERE id = ?", rowAt(t, s, 2, 40).ID)
				return nil
			},
			want: func(int64, any) []gotFinding { return []gotFinding{{audit.FindingAltered, "", 2, 40}} },
		},
		{
			name: "a rule outcome rewritten in the trace is named",
			tamper: func(t *testing.T, s *Store, n int64) any {
				d := qualifiedAt(t, s, 8)
				exec(t, s, `UPDATE decisions SET trace = REPLACE(trace, '["qualify","completed","pass"]', '["qualify","completed","fail"]') WHERE id = ?`, d.ID)
				return d.Leaf
			},
			want: func(_ int64, leaf any) []gotFinding { return []gotFinding{{audit.FindingAltered, "", 1, leaf.(int)}} },
			check: func(t *testing.T, fs []audit.Finding) {
				if d := fs[0].Diffs; len(d) != 1 || d[0] != (audit.FieldDiff{Field: "trace[completed]", Stored: "fail", Rerun: "pass"}) {
					t.Errorf("diffs = %+v, want trace[completed] stored fail, re-run pass", d)
				}
			},
		},
		{
			name: "a column that no longer parses is a finding, not a failed audit",
			tamper: func(t *testing.T, s *Store, n int64) any {
				exec(t, s, "UPDATE decisions SET failed_rules = 'not json', env = '' WHERE batch_seq = 1 AND leaf = 9")
				return nil
			},
			want: func(int64, any) []gotFinding { return []gotFinding{{audit.FindingAltered, "", 1, 9}} },
			check: func(t *testing.T, fs []audit.Finding) {
				d := fs[0].Diffs
				if len(d) != 2 || d[0].Field != "failed_rules" || d[0].Stored != "not json" || d[1].Field != "env" {
					t.Errorf("diffs = %+v, want failed_rules stored \"not json\" and env", d)
				}
			},
		},
		{
			name: "a deleted decision is named: its ledger entry is left over, its leaf is missing",
			tamper: func(t *testing.T, s *Store, n int64) any {
				d := qualifiedAt(t, s, 33)
				exec(t, s, "DELETE FROM decisions WHERE id = ?", d.ID)
				return d.Leaf
			},
			want: func(_ int64, leaf any) []gotFinding {
				return []gotFinding{{audit.FindingLedger, "", 0, -1}, {audit.FindingMissing, "", 1, leaf.(int)}, {audit.FindingRootMismatch, "", 1, -1}}
			},
		},
		{
			name: "a deleted last batch is named as missing at the end",
			tamper: func(t *testing.T, s *Store, n int64) any {
				exec(t, s, "DELETE FROM ledger_entries WHERE decision_id IN (SELECT id FROM decisions WHERE batch_seq = 2)")
				exec(t, s, "DELETE FROM dead_letters WHERE batch_seq = 2")
				exec(t, s, "DELETE FROM decisions WHERE batch_seq = 2")
				exec(t, s, "DELETE FROM batches WHERE seq = 2")
				return nil
			},
			want: func(int64, any) []gotFinding { return []gotFinding{{audit.FindingMissing, "", 2, -1}} },
		},
		{
			name: "a forged decision inserted into a batch is named",
			tamper: func(t *testing.T, s *Store, n int64) any {
				exec(t, s, `INSERT INTO decisions (event_id, order_id, program, affiliate_id, policy_version, policy_digest, qualified,
					failed_rules, rate_rule, rate, flat, base, commission, currency, rounding, trace, env, subject, stream_seq, raw, placed_at, received_at,
					month, prev_id, is_current, pin_version, pin_digest, decided_at, part, batch_seq, leaf, leaf_hash)
					SELECT 'forged-1', 'forged-order', program, affiliate_id, policy_version, policy_digest, qualified,
					failed_rules, rate_rule, rate, flat, base, commission, currency, rounding, trace, env, subject, 999999, raw, placed_at, received_at,
					month, 0, is_current, pin_version, pin_digest, decided_at, part, batch_seq, 155, leaf_hash
					FROM decisions WHERE batch_seq = 1 AND leaf = 5`)
				return nil
			},
			want: func(int64, any) []gotFinding {
				// Its event names another order, and it booked nothing.
				return []gotFinding{{audit.FindingNotReproduced, "", 1, 155}, {audit.FindingLedger, "", 1, 155}, {audit.FindingInserted, "", 1, 155},
					{audit.FindingRootMismatch, "", 1, -1}}
			},
		},
		{
			name: "two batches swapped are named",
			tamper: func(t *testing.T, s *Store, n int64) any {
				for _, table := range []string{"decisions", "dead_letters"} {
					exec(t, s, "UPDATE "+table+" SET batch_seq = -batch_seq")
					exec(t, s, "UPDATE "+table+" SET batch_seq = CASE batch_seq WHEN -1 THEN 2 ELSE 1 END")
				}
				exec(t, s, "UPDATE batches SET seq = -seq")
				exec(t, s, "UPDATE batches SET seq = CASE seq WHEN -1 THEN 2 ELSE 1 END")
				return nil
			},
			want: func(int64, any) []gotFinding {
				return []gotFinding{{audit.FindingBrokenLink, "", 1, -1}, {audit.FindingBatchHash, "", 1, -1}, {audit.FindingBrokenLink, "", 2, -1},
					{audit.FindingBatchHash, "", 2, -1}, {audit.FindingHeadMismatch, "", 2, -1}}
			},
		},
		{
			name: "an edited batch root is named",
			tamper: func(t *testing.T, s *Store, n int64) any {
				exec(t, s, "UPDATE batches SET root = ? WHERE seq = 1", strings.Repeat("ab", 32))
				return nil
			},
			want: func(int64, any) []gotFinding {
				return []gotFinding{{audit.FindingBatchHash, "", 1, -1}, {audit.FindingRootMismatch, "", 1, -1}}
			},
		},
		{
			name: "a rewritten leaf hash is named",
			tamper: func(t *testing.T, s *Store, n int64) any {
				exec(t, s, "UPDATE decisions SET leaf_hash = ? WHERE batch_seq = 2 AND leaf = 60", strings.Repeat("ab", 32))
				return nil
			},
			want: func(int64, any) []gotFinding {
				return []gotFinding{{audit.FindingLeafMismatch, "", 2, 60}, {audit.FindingRootMismatch, "", 2, -1}}
			},
		},
		{
			name: "an edited ledger amount is named",
			tamper: func(t *testing.T, s *Store, n int64) any {
				d := qualifiedAt(t, s, 20)
				exec(t, s, "UPDATE ledger_entries SET amount = '99999.00' WHERE decision_id = ?", d.ID)
				return nil
			},
			want:  func(int64, any) []gotFinding { return []gotFinding{{audit.FindingLedger, "", 1, -2}} },
			check: checkLedgerDiff("99999.00"),
		},
		{
			name: "an edited ledger affiliate is named",
			tamper: func(t *testing.T, s *Store, n int64) any {
				d := qualifiedAt(t, s, 50)
				exec(t, s, "UPDATE ledger_entries SET affiliate_id = 'aff-mallory' WHERE decision_id = ?", d.ID)
				return nil
			},
			want:  func(int64, any) []gotFinding { return []gotFinding{{audit.FindingLedger, "", 1, -2}} },
			check: checkLedgerDiff("aff-mallory"),
		},
		{
			name: "an edited order state is named: a decision no longer current, another pin",
			tamper: func(t *testing.T, s *Store, n int64) any {
				d := qualifiedAt(t, s, 70)
				exec(t, s, "UPDATE decisions SET is_current = ?, pin_version = 9 WHERE id = ?", false, d.ID)
				return d
			},
			want: func(_ int64, d any) []gotFinding {
				return []gotFinding{{audit.FindingOrderState, "", d.(StoredDecision).BatchSeq, d.(StoredDecision).Leaf}}
			},
			check: func(t *testing.T, fs []audit.Finding) {
				if d := fs[0].Diffs; len(d) != 2 || d[0].Field != "is_current" || d[0].Stored != "false" || d[1].Field != "pin" {
					t.Errorf("diffs = %+v, want is_current stored false and the pin", d)
				}
			},
		},

		{
			name: "a rewritten partition head is named",
			tamper: func(t *testing.T, s *Store, n int64) any {
				exec(t, s, "UPDATE partitions SET hash = ?", strings.Repeat("cd", 32))
				return nil
			},
			want: func(int64, any) []gotFinding { return []gotFinding{{audit.FindingHeadMismatch, "", 2, -1}} },
		},
		{
			name: "an altered policy source is named, and every decision it made is unverifiable",
			tamper: func(t *testing.T, s *Store, n int64) any {
				exec(t, s, `UPDATE policy_versions SET source = REPLACE(source, 'rate: "10%"', 'rate: "12%"') WHERE program = 'alibaba' AND version = 1`)
				return nil
			},
			want: func(n int64, _ any) []gotFinding {
				out := []gotFinding{{audit.FindingPolicy, audit.ReasonPolicyAltered, 0, -1}}
				for range n {
					out = append(out, gotFinding{audit.FindingUnverifiable, audit.ReasonPolicyAltered, 0, 0})
				}
				return out
			},
			check: func(t *testing.T, fs []audit.Finding) {
				if !strings.Contains(fs[0].Detail, "was stored with digest sha256:") {
					t.Errorf("policy finding = %q, want it to name both digests", fs[0].Detail)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, n := auditStore(t, b)
			x := tc.tamper(t, s, n)
			_, fs := verifyAll(t, s)
			got, want := reduce(fs), tc.want(n, x)
			for i := range want {
				// Leaf -2: any leaf; batch and leaf 0: any place (order by order findings name
				// their decision's place).
				if i < len(got) && (want[i].Leaf == -2 || want[i].Batch == 0 && want[i].Leaf == 0) {
					want[i].Batch, want[i].Leaf = got[i].Batch, got[i].Leaf
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				var lines []string
				for _, f := range fs[:min(len(fs), 6)] {
					lines = append(lines, f.String())
				}
				t.Fatalf("findings:\ngot  %v\nwant %v\nthe first:\n%s", got, want, strings.Join(lines, "\n"))
			}
			for _, f := range fs {
				if f.Leaf >= 0 && f.Kind != audit.FindingMissing && f.DecisionID == 0 {
					t.Errorf("finding %v names no decision id", f)
				}
			}
			if tc.check != nil {
				tc.check(t, fs)
			}
		})
	}

	t.Run("explain re-runs a decision and shows it reproduces", func(t *testing.T) {
		s, _ := auditStore(t, b)
		d := rowAt(t, s, 1, 3)
		x, err := audit.NewAuditor(s).Explain(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if !x.Recheck.Reproduced() || !x.Recheck.LeafOK || x.Explanation == nil || x.Event == nil || x.Inclusion == nil || !x.Inclusion.Verified {
			t.Fatalf("Explain = reproduced %t, leaf ok %t (%v), explanation %t, event %t, inclusion %+v, err %v; want all true",
				x.Recheck.Reproduced(), x.Recheck.LeafOK, x.Recheck.LeafErr, x.Explanation != nil, x.Event != nil, x.Inclusion, x.Recheck.Err)
		}
		if len(x.Inclusion.Path) != 8 || x.Inclusion.Batch.Leaves != 155 {
			t.Errorf("inclusion path of %d hashes in a batch of %d leaves, want 8 in 155", len(x.Inclusion.Path), x.Inclusion.Batch.Leaves)
		}
		if x.Policy.Digest != d.PolicyDigest || len(x.Explanation.Rules) != len(d.Trace) {
			t.Errorf("Explain: policy digest %s, %d rules; want %s, %d", x.Policy.Digest, len(x.Explanation.Rules), d.PolicyDigest, len(d.Trace))
		}

		exec(t, s, "UPDATE decisions SET commission = '1.00', qualified = ? WHERE id = ?", !d.Qualified, d.ID)
		d2, err := s.Decision(ctx, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		x, err = audit.NewAuditor(s).Explain(ctx, d2)
		if err != nil {
			t.Fatal(err)
		}
		var fields []string
		for _, f := range x.Recheck.Diffs {
			fields = append(fields, f.Field)
		}
		if got := strings.Join(fields, ","); got != "qualified,commission" || !x.Recheck.LeafOK {
			t.Errorf("Explain of an altered row: diffs %s, leaf ok %t; want qualified,commission and true", got, x.Recheck.LeafOK)
		}
		exec(t, s, "UPDATE decisions SET leaf_hash = ? WHERE id = ?", strings.Repeat("ab", 32), d.ID)
		if d2, err = s.Decision(ctx, d.ID); err != nil {
			t.Fatal(err)
		}
		if x, err = audit.NewAuditor(s).Explain(ctx, d2); err != nil || x.Inclusion.Verified || x.Recheck.LeafOK {
			t.Errorf("Explain with the leaf hash rewritten: inclusion verified %t, leaf ok %t, %v; want neither", x.Inclusion.Verified, x.Recheck.LeafOK, err)
		}

		// The event no longer found by its id (the row's event_id edited): it cannot be re-run.
		exec(t, s, "UPDATE decisions SET event_id = 'elsewhere' WHERE id = ?", d.ID)
		x, err = audit.NewAuditor(s).Explain(ctx, d2)
		if err != nil {
			t.Fatal(err)
		}
		var re *audit.RecheckError
		if !errors.As(x.Recheck.Err, &re) || re.Reason != audit.ReasonEventMissing || !errors.Is(x.Recheck.Err, audit.ErrCannotRecheck) {
			t.Errorf("Explain without the event: err %v, want a audit.RecheckError %s", x.Recheck.Err, audit.ReasonEventMissing)
		}
	})

	t.Run("decisions that read the affiliate's month reproduce with their recorded inputs", func(t *testing.T) {
		s := openStore(t, b.fresh(t))
		p, problems := rules.Compile("shop/v1.yaml", []byte(tieredPolicy))
		if p == nil {
			t.Fatal(problems)
		}
		eng := engine.New(mustSetOf(t, p))
		// Five orders of one affiliate in one month, one batch each: from the fourth on, the
		// affiliate has three qualified orders before it and the top rate applies.
		for i := range 5 {
			raw := fmt.Sprintf(`{"order_id":"s-%d","program":"shop","affiliate_id":"a-1","status":"completed","placed_at":"2025-03-%02dT12:00:00Z",`+
				`"buyer":{"id":"b","country":"US","new":true},"currency":"USD","amount":"100.00"}`, i, i+1)
			results := engine.DecodeEvents([]engine.Event{event(fmt.Sprintf("s-e%d", i), uint64(i+1), []byte(raw))}, nil)
			orders, months := eng.HistoryKeys(results)
			hist, err := s.LoadHistory(ctx, orders, months)
			if err != nil {
				t.Fatal(err)
			}
			eng.DecideBatch(ctx, results, hist)
			if results[0].Err != nil {
				t.Fatal(results[0].Err)
			}
			mustSave(t, s, results)
		}
		rep, fs := verifyAll(t, s)
		if len(fs) != 0 || rep.Reproduced != 5 {
			t.Fatalf("verify: %v, %d reproduced; want nothing found and 5", reduce(fs), rep.Reproduced)
		}
		top := rowAt(t, s, 4, 0) // s-3, the fourth batch: the affiliate had three qualified orders before it
		if top.RateRule != "top" {
			t.Fatalf("s-3 was decided with %s, want top (the tier)", top.RateRule)
		}
		x, err := audit.NewAuditor(s).Explain(ctx, top)
		if err != nil {
			t.Fatal(err)
		}
		if !x.Recheck.Reproduced() || !x.Recheck.LeafOK || x.Inputs.Affiliate == nil || x.Inputs.Affiliate.QualifiedOrders != 3 {
			t.Fatalf("Explain: reproduced %t leaf %t inputs %+v; want reproduced with 3 orders before it", x.Recheck.Reproduced(), x.Recheck.LeafOK, x.Inputs.Affiliate)
		}
		// The recorded inputs edited: the re-run pays the base rate, which neither the row nor
		// its hash says.
		exec(t, s, "UPDATE decision_inputs SET month_qualified_orders = 0 WHERE decision_id = ?", top.ID)
		_, fs = verifyAll(t, s)
		if got, want := reduce(fs), []gotFinding{{audit.FindingNotReproduced, "", 4, 0}, {audit.FindingLedger, "", 4, 0}}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("after editing the inputs: %v, want %v", got, want)
		}
	})

	t.Run("an order's decisions page newest first", func(t *testing.T) {
		s := openStore(t, b.fresh(t))
		// The same order three times (three events), in two programs' worth of batches.
		for i := range 3 {
			r := genBatch(t, batchSpec{prefix: fmt.Sprintf("p%d", i), seqBase: uint64(i * 10), orders: 1, seed: 5})
			mustSave(t, s, r)
		}
		all, err := s.DecisionsByOrder(ctx, "", "p0-o0")
		if err != nil || len(all) != 1 {
			t.Fatalf("DecisionsByOrder = %d, %v; want 1", len(all), err)
		}
		// The generator names orders by prefix: store two more events of order p0-o0.
		for i := range 2 {
			r := genBatch(t, batchSpec{prefix: "p0", seqBase: uint64(100 + i*10), orders: 1, seed: uint64(20 + i)})
			mustSave(t, s, r)
		}
		var ids []int64
		before := int64(0)
		for range 5 {
			page, err := s.OrderDecisionsPage(ctx, "", "p0-o0", before, 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			for _, d := range page {
				ids = append(ids, d.ID)
			}
			before = page[len(page)-1].ID
		}
		if len(ids) != 3 || ids[0] < ids[1] || ids[1] < ids[2] {
			t.Errorf("paged ids = %v, want 3 descending", ids)
		}
		if page, err := s.OrderDecisionsPage(ctx, "nosuch", "p0-o0", 0, 10); err != nil || len(page) != 0 {
			t.Errorf("another program's page = %d, %v; want none", len(page), err)
		}
	})
}

// BenchmarkVerify measures audit verify over 20 000 stored decisions: stream the decisions order
// by order with their events, decide every event again with the stored policy, compare, book
// again, recompute leaves; then walk the partition's batches and roots.
// decisions/s is the figure.
func BenchmarkVerify(b *testing.B) {
	for _, bc := range []struct {
		name string
		be   backend
	}{{"sqlite", sqliteBackend()}, {"postgres", postgresBackend()}} {
		b.Run(bc.name, func(b *testing.B) {
			s := openStore(b, bc.be.fresh(b))
			ctx := context.Background()
			for i := range 20 {
				batch := genBatch(b, batchSpec{prefix: fmt.Sprintf("v%d", i), seqBase: uint64(i * 1000), orders: 1000, seed: uint64(i)})
				if _, err := saveBatch(ctx, s, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			var rows int64
			for range b.N {
				rep, err := audit.Verify(ctx, s, audit.VerifyOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if !rep.OK() {
					b.Fatalf("%d findings", rep.Findings)
				}
				rows += rep.Decisions
			}
			b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "decisions/s")
		})
	}
}

func checkLedgerDiff(stored string) func(t *testing.T, fs []audit.Finding) {
	return func(t *testing.T, fs []audit.Finding) {
		if d := fs[0].Diffs; len(d) != 1 || !strings.Contains(d[0].Stored, stored) || strings.Contains(d[0].Rerun, stored) {
			t.Errorf("diffs = %+v, want one ledger line stored with %s", d, stored)
		}
	}
}
