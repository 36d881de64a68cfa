package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/commissioner/commissioner/engine"
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

// got is a finding reduced to what a test checks.
type gotFinding struct {
	Kind     string
	Reason   string
	ChainSeq int64
}

func verifyAll(t *testing.T, s *Store) (*VerifyReport, []Finding) {
	t.Helper()
	var fs []Finding
	rep, err := s.Verify(context.Background(), VerifyOptions{Workers: 2, OnFinding: func(f Finding) { fs = append(fs, f) }})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if rep.Findings != len(fs) {
		t.Errorf("report counts %d findings, OnFinding got %d", rep.Findings, len(fs))
	}
	return rep, fs
}

func reduce(fs []Finding) []gotFinding {
	out := make([]gotFinding, len(fs))
	for i, f := range fs {
		out[i] = gotFinding{Kind: f.Kind, Reason: f.Reason, ChainSeq: f.ChainSeq}
	}
	return out
}

func exec(t *testing.T, s *Store, query string, args ...any) {
	t.Helper()
	if _, err := s.DB().ExecContext(context.Background(), query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// rowAt reads the decision at a chain position.
func rowAt(t *testing.T, s *Store, seq int64) StoredDecision {
	t.Helper()
	return rowIn(t, s, "alibaba", seq)
}

// rowIn reads the decision at a position of a program's chain.
func rowIn(t *testing.T, s *Store, program string, seq int64) StoredDecision {
	t.Helper()
	var out *StoredDecision
	err := s.WalkChain(context.Background(), program, func(d StoredDecision) error {
		if d.ChainSeq == seq {
			out = &d
		}
		return nil
	})
	if err != nil || out == nil {
		t.Fatalf("reading chain_seq %d: %v (found %t)", seq, err, out != nil)
	}
	return *out
}

// forge inserts a copy of the row at chain position from as a decision of a made-up event at
// position at, linked to prev and hashed as SaveBatch would hash the copy's content.
func forge(t *testing.T, s *Store, from, at int64, prev string) string {
	t.Helper()
	src := rowAt(t, s, from)
	hash, err := ChainHash(prev, []byte("forged "+src.EventID))
	if err != nil {
		t.Fatal(err)
	}
	exec(t, s, `INSERT INTO decisions (event_id, order_id, program, affiliate_id, policy_version, policy_digest, qualified,
		failed_rules, rate_rule, rate, flat, base, commission, currency, rounding, trace, env, stream_seq, decided_at, chain_seq, prev_hash, hash)
		SELECT 'forged-1', 'forged-order', program, affiliate_id, policy_version, policy_digest, qualified,
		failed_rules, rate_rule, rate, flat, base, commission, currency, rounding, trace, env, 999999, decided_at, ?, ?, ?
		FROM decisions WHERE program = 'alibaba' AND chain_seq = ?`, at, prev, hash, from)
	return hash
}

func runAuditSuite(t *testing.T, b backend) {
	ctx := context.Background()

	t.Run("a clean store verifies", func(t *testing.T) {
		s, n := auditStore(t, b)
		rep, fs := verifyAll(t, s)
		if len(fs) != 0 {
			t.Fatalf("got %d findings, want none; the first: %v", len(fs), fs[0])
		}
		if len(rep.Chains) != 1 {
			t.Fatalf("got %d chains, want 1", len(rep.Chains))
		}
		c := rep.Chains[0]
		if c.Rows != n || c.Reproduced != n || c.LastSeq != n || c.Head.ChainSeq != n || c.LastHash != c.Head.Hash {
			t.Errorf("chain report = rows %d, reproduced %d, last %d, head %d; want all %d, last hash = head hash",
				c.Rows, c.Reproduced, c.LastSeq, c.Head.ChainSeq, n)
		}
		if rep.Policies != 1 {
			t.Errorf("checked %d policy versions, want 1", rep.Policies)
		}
	})

	cases := []struct {
		name   string
		tamper func(t *testing.T, s *Store, n int64)
		want   func(n int64) []gotFinding
		check  func(t *testing.T, fs []Finding)
	}{
		{
			name: "an updated commission is named as altered",
			tamper: func(t *testing.T, s *Store, n int64) {
				exec(t, s, "UPDATE decisions SET commission = '99999.99' WHERE program = 'alibaba' AND chain_seq = 17")
			},
			want: func(int64) []gotFinding { return []gotFinding{{FindingAltered, "", 17}} },
			check: func(t *testing.T, fs []Finding) {
				d := fs[0].Diffs
				if len(d) != 1 || d[0].Field != "commission" || d[0].Stored != "99999.99" {
					t.Errorf("diffs = %+v, want one: commission stored 99999.99", d)
				}
			},
		},
		{
			name: "a changed trace outcome and rate rule are named",
			tamper: func(t *testing.T, s *Store, n int64) {
				d := rowAt(t, s, 40)
				exec(t, s, "UPDATE decisions SET rate_rule = 'forged_rule' WHERE id = ?", d.ID)
			},
			want: func(int64) []gotFinding { return []gotFinding{{FindingAltered, "", 40}} },
		},
		{
			name: "a rule outcome rewritten in the trace is named",
			tamper: func(t *testing.T, s *Store, n int64) {
				exec(t, s, `UPDATE decisions SET trace = REPLACE(trace, '["qualify","completed","pass"]', '["qualify","completed","fail"]')
					WHERE program = 'alibaba' AND chain_seq = 8`)
			},
			want: func(int64) []gotFinding { return []gotFinding{{FindingAltered, "", 8}} },
			check: func(t *testing.T, fs []Finding) {
				if d := fs[0].Diffs; len(d) != 1 || d[0] != (FieldDiff{"trace[completed]", "fail", "pass"}) {
					t.Errorf("diffs = %+v, want trace[completed] stored fail, re-run pass", d)
				}
			},
		},
		{
			name: "a column that no longer parses is a finding, not a failed audit",
			tamper: func(t *testing.T, s *Store, n int64) {
				exec(t, s, "UPDATE decisions SET failed_rules = 'not json', env = '' WHERE program = 'alibaba' AND chain_seq = 9")
			},
			want: func(int64) []gotFinding { return []gotFinding{{FindingAltered, "", 9}} },
			check: func(t *testing.T, fs []Finding) {
				d := fs[0].Diffs
				if len(d) != 2 || d[0].Field != "failed_rules" || d[0].Stored != "not json" || d[1].Field != "env" {
					t.Errorf("diffs = %+v, want failed_rules stored \"not json\" and env", d)
				}
			},
		},
		{
			name: "a deleted row is named as missing, its event as an orphan",
			tamper: func(t *testing.T, s *Store, n int64) {
				exec(t, s, "DELETE FROM decisions WHERE program = 'alibaba' AND chain_seq = 33")
			},
			want: func(int64) []gotFinding {
				return []gotFinding{{FindingMissing, "", 33}, {FindingOrphanEvent, "", 0}}
			},
		},
		{
			name: "deleted last rows are named as missing at the end",
			tamper: func(t *testing.T, s *Store, n int64) {
				exec(t, s, "DELETE FROM decisions WHERE program = 'alibaba' AND chain_seq >= ?", n-1)
			},
			want: func(n int64) []gotFinding {
				return []gotFinding{{FindingMissing, "", n - 1}, {FindingOrphanEvent, "", 0}, {FindingOrphanEvent, "", 0}}
			},
		},
		{
			name: "a forged row appended with a consistent hash and head is named",
			tamper: func(t *testing.T, s *Store, n int64) {
				last := rowAt(t, s, n)
				hash := forge(t, s, 5, n+1, last.Hash)
				exec(t, s, "UPDATE chain_heads SET chain_seq = ?, hash = ? WHERE program = 'alibaba'", n+1, hash)
			},
			want: func(n int64) []gotFinding {
				return []gotFinding{{FindingUnverifiable, ReasonEventMissing, n + 1}}
			},
		},
		{
			name: "a forged row appended without moving the head is named twice",
			tamper: func(t *testing.T, s *Store, n int64) {
				forge(t, s, 5, n+1, rowAt(t, s, n).Hash)
			},
			want: func(n int64) []gotFinding {
				return []gotFinding{{FindingInserted, "", n + 1}, {FindingUnverifiable, ReasonEventMissing, n + 1}}
			},
		},
		{
			name: "a row replaced in the middle breaks the next link",
			tamper: func(t *testing.T, s *Store, n int64) {
				prev := rowAt(t, s, 49).Hash
				exec(t, s, "DELETE FROM decisions WHERE program = 'alibaba' AND chain_seq = 50")
				forge(t, s, 5, 50, prev)
			},
			want: func(int64) []gotFinding {
				return []gotFinding{{FindingUnverifiable, ReasonEventMissing, 50}, {FindingBrokenLink, "", 51}, {FindingOrphanEvent, "", 0}}
			},
		},
		{
			name: "a rewritten hash is named, and the link after it",
			tamper: func(t *testing.T, s *Store, n int64) {
				exec(t, s, "UPDATE decisions SET hash = ? WHERE program = 'alibaba' AND chain_seq = 60", strings.Repeat("ab", 32))
			},
			want: func(int64) []gotFinding {
				return []gotFinding{{FindingHashMismatch, "", 60}, {FindingBrokenLink, "", 61}}
			},
		},
		{
			name: "a rewritten chain head is named",
			tamper: func(t *testing.T, s *Store, n int64) {
				exec(t, s, "UPDATE chain_heads SET hash = ? WHERE program = 'alibaba'", strings.Repeat("cd", 32))
			},
			want: func(n int64) []gotFinding { return []gotFinding{{FindingHeadMismatch, "", n}} },
		},
		{
			name: "an altered policy source is named, and every decision it made is unverifiable",
			tamper: func(t *testing.T, s *Store, n int64) {
				exec(t, s, `UPDATE policy_versions SET source = REPLACE(source, 'rate: "10%"', 'rate: "12%"') WHERE program = 'alibaba' AND version = 1`)
			},
			want: func(n int64) []gotFinding {
				out := []gotFinding{{FindingPolicy, ReasonPolicyAltered, 0}}
				for i := int64(1); i <= n; i++ {
					out = append(out, gotFinding{FindingUnverifiable, ReasonPolicyAltered, i})
				}
				return out
			},
			check: func(t *testing.T, fs []Finding) {
				if !strings.Contains(fs[0].Detail, "was stored with digest sha256:") {
					t.Errorf("policy finding = %q, want it to name both digests", fs[0].Detail)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, n := auditStore(t, b)
			tc.tamper(t, s, n)
			_, fs := verifyAll(t, s)
			got, want := reduce(fs), tc.want(n)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				var lines []string
				for _, f := range fs[:min(len(fs), 5)] {
					lines = append(lines, f.String())
				}
				t.Fatalf("findings:\ngot  %v\nwant %v\nthe first:\n%s", got, want, strings.Join(lines, "\n"))
			}
			for _, f := range fs {
				if f.ChainSeq != 0 && f.Kind != FindingMissing && f.DecisionID == 0 {
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
		d := rowAt(t, s, 3)
		x, err := NewAuditor(s).Explain(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if !x.Recheck.Reproduced() || !x.Recheck.HashOK || x.Explanation == nil || x.Event == nil {
			t.Fatalf("Explain = reproduced %t, hash ok %t, explanation %t, event %t, err %v; want all true",
				x.Recheck.Reproduced(), x.Recheck.HashOK, x.Explanation != nil, x.Event != nil, x.Recheck.Err)
		}
		if x.Policy.Digest != d.PolicyDigest || len(x.Explanation.Rules) != len(d.Trace) {
			t.Errorf("Explain: policy digest %s, %d rules; want %s, %d", x.Policy.Digest, len(x.Explanation.Rules), d.PolicyDigest, len(d.Trace))
		}

		exec(t, s, "UPDATE decisions SET commission = '1.00', qualified = ? WHERE id = ?", !d.Qualified, d.ID)
		d2, err := s.Decision(ctx, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		x, err = NewAuditor(s).Explain(ctx, d2)
		if err != nil {
			t.Fatal(err)
		}
		var fields []string
		for _, f := range x.Recheck.Diffs {
			fields = append(fields, f.Field)
		}
		if got := strings.Join(fields, ","); got != "qualified,commission" || !x.Recheck.HashOK {
			t.Errorf("Explain of an altered row: diffs %s, hash ok %t; want qualified,commission and true", got, x.Recheck.HashOK)
		}

		exec(t, s, "DELETE FROM order_events WHERE event_id = ?", d.EventID)
		x, err = NewAuditor(s).Explain(ctx, d2)
		if err != nil {
			t.Fatal(err)
		}
		var re *RecheckError
		if !errors.As(x.Recheck.Err, &re) || re.Reason != ReasonEventMissing || !errors.Is(x.Recheck.Err, ErrCannotRecheck) {
			t.Errorf("Explain without the event: err %v, want a RecheckError %s", x.Recheck.Err, ReasonEventMissing)
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
		if len(fs) != 0 || rep.Chains[0].Reproduced != 5 {
			t.Fatalf("verify: %v, %d reproduced; want nothing found and 5", reduce(fs), rep.Chains[0].Reproduced)
		}
		top := rowIn(t, s, "shop", 4) // s-3: the affiliate had three qualified orders before it
		if top.RateRule != "top" {
			t.Fatalf("s-3 was decided with %s, want top (the tier)", top.RateRule)
		}
		x, err := NewAuditor(s).Explain(ctx, top)
		if err != nil {
			t.Fatal(err)
		}
		if !x.Recheck.Reproduced() || !x.Recheck.HashOK || x.Inputs.Affiliate == nil || x.Inputs.Affiliate.QualifiedOrders != 3 {
			t.Fatalf("Explain: reproduced %t hash %t inputs %+v; want reproduced with 3 orders before it", x.Recheck.Reproduced(), x.Recheck.HashOK, x.Inputs.Affiliate)
		}
		// The recorded inputs edited: the re-run pays the base rate, which neither the row nor
		// its hash says.
		exec(t, s, "UPDATE decision_inputs SET month_qualified_orders = 0 WHERE decision_id = ?", top.ID)
		_, fs = verifyAll(t, s)
		if got, want := reduce(fs), []gotFinding{{FindingNotReproduced, "", 4}}; fmt.Sprint(got) != fmt.Sprint(want) {
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

// BenchmarkVerify measures audit verify over 20 000 stored decisions: stream the chain with
// each decision's event, decide every event again with the stored policy, compare, rehash.
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
				if _, err := s.SaveBatch(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			var rows int64
			for range b.N {
				rep, err := s.Verify(ctx, VerifyOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if !rep.OK() {
					b.Fatalf("%d findings", rep.Findings)
				}
				rows += rep.Chains[0].Rows
			}
			b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "decisions/s")
		})
	}
}
