package main

// End-to-end tests of explain and audit verify (issue 4): orders flow through the real service
// (embedded JetStream on t.TempDir(), the real engine and policies) into SQLite or a fresh
// PostgreSQL schema; then rows are edited, deleted and forged directly in SQL and audit verify
// must name each one.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine/audit"
)

// auditBackends are the stores the service writes to in these tests.
var auditBackends = []struct {
	name string
	dsn  func(t *testing.T) string // "" keeps SQLite in the data directory
}{
	{"sqlite", func(*testing.T) string { return "" }},
	{"postgres", func(t *testing.T) string { dsn, _, _ := postgresSchema(t, ""); return dsn }},
}

// pipelineStore runs the service on n sample orders until every one is decided, stops it, and
// returns its store, opened again.
func pipelineStore(t *testing.T, dsn string, n int, tokens ...string) (*store.Store, *runningService) {
	t.Helper()
	cfg := pipelineConfig(t)
	cfg.Store.DSN = dsn
	cfg.HTTP.Tokens = tokens
	if len(tokens) > 0 {
		cfg.HTTP.Addr = "127.0.0.1:0"
	}
	svc := startRunning(t, cfg)
	last := publishAll(t, svc.js, svc.cfg.NATS, sampleLines(t, n, 7, "2025-10"))
	waitSettledService(t, svc, last, 2*time.Minute)
	st, err := store.Open(context.Background(), svc.cfg.storeConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, svc
}

// verifyJSON runs audit verify --json and returns its report and whether it exited 1.
func verifyJSON(t *testing.T, st *store.Store) (auditJSON, bool) {
	t.Helper()
	var out bytes.Buffer
	err := runAuditVerify(context.Background(), st, auditVerifyParams{JSON: true, Workers: 2, MaxFindings: 10000}, audit.VerifyOptions{}, &out, io.Discard)
	failed := false
	var code exitCode
	switch {
	case errors.As(err, &code) && code == 1:
		failed = true
	case err != nil:
		t.Fatalf("audit verify: %v", err)
	}
	var doc auditJSON
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("audit verify --json: %v\n%s", err, out.Bytes())
	}
	if doc.OK == failed {
		t.Errorf("audit verify: ok %t but exit 1 %t", doc.OK, failed)
	}
	// Every run is recorded, for the console's health page.
	run, err := st.LastVerifyRun(context.Background())
	if err != nil || run.By != "cli" || run.OK() != doc.OK || run.Findings != doc.FindingsTotal || run.Decisions != doc.Decisions {
		t.Errorf("the recorded run: %+v, %v; want by cli, ok %t, %d findings, %d decisions", run, err, doc.OK, doc.FindingsTotal, doc.Decisions)
	}
	return doc, failed
}

// verifyText runs audit verify and returns what it printed.
func verifyText(t *testing.T, st *store.Store) string {
	t.Helper()
	var out bytes.Buffer
	if err := runAuditVerify(context.Background(), st, auditVerifyParams{Workers: 2, MaxFindings: 5}, audit.VerifyOptions{}, &out, io.Discard); err != nil && !errors.Is(err, exitCode(1)) {
		t.Fatalf("audit verify: %v", err)
	}
	return out.String()
}

type seen struct {
	kind string
	id   int64 // the decision named; 0 when none
}

// kinds are the findings as (kind, decision), sorted: their order follows the orders' ids and
// the partitions, which the stream decides.
func kinds(doc auditJSON) []seen {
	var out []seen
	for _, f := range doc.Findings {
		out = append(out, seen{f.Kind, f.DecisionID})
	}
	return sortSeen(out)
}

func sortSeen(s []seen) []seen {
	slices.SortFunc(s, func(a, b seen) int {
		if c := strings.Compare(a.kind, b.kind); c != 0 {
			return c
		}
		return int(a.id - b.id)
	})
	return s
}

// rowOf reads the nth decision stored (1, 2, …; by id).
func rowOf(t *testing.T, st *store.Store, n int) store.StoredDecision {
	t.Helper()
	var id int64
	if err := st.DB().NewRaw("SELECT id FROM decisions ORDER BY id LIMIT 1 OFFSET ?", n-1).Scan(context.Background(), &id); err != nil {
		t.Fatalf("reading decision #%d: %v", n, err)
	}
	d, err := st.Decision(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// qualifiedFrom is the first decision from the nth on that booked a commission.
func qualifiedFrom(t *testing.T, st *store.Store, n int) store.StoredDecision {
	t.Helper()
	for i := n; i < n+100; i++ {
		if d := rowOf(t, st, i); d.Qualified && !d.Commission.IsZero() {
			return d
		}
	}
	t.Fatalf("no qualified decision from #%d", n)
	return store.StoredDecision{}
}

func sqlExec(t *testing.T, st *store.Store, query string, args ...any) {
	t.Helper()
	if _, err := st.DB().ExecContext(context.Background(), query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// TestAuditVerifyThroughPipeline: a clean store verifies; then, one after another, a commission
// updated in SQL, a deleted row, a forged row and an edited policy source are each named.
func TestAuditVerifyThroughPipeline(t *testing.T) {
	const orders = 300
	for _, b := range auditBackends {
		t.Run(b.name, func(t *testing.T) {
			st, _ := pipelineStore(t, b.dsn(t), orders)
			ctx := context.Background()

			doc, failed := verifyJSON(t, st)
			if failed || len(doc.Findings) != 0 || len(doc.Partitions) == 0 {
				t.Fatalf("clean store: exit 1 %t, findings %v, partitions %d; want a pass", failed, kinds(doc), len(doc.Partitions))
			}
			if doc.Decisions != orders || doc.Reproduced != orders {
				t.Fatalf("clean store: %d decisions, %d reproduced; want %d", doc.Decisions, doc.Reproduced, orders)
			}
			for _, p := range doc.Partitions {
				if p.HeadSeq == nil || *p.HeadSeq != p.LastSeq || p.HeadHash != p.LastHash || p.Batches == 0 {
					t.Errorf("clean partition %+v: want its head on its last batch", p)
				}
			}
			if out := verifyText(t, st); !strings.Contains(out, fmt.Sprintf("OK: %d decisions verified", orders)) {
				t.Errorf("clean verify printed:\n%s", out)
			}

			// 1. A commission edited in place: named as altered, with the field.
			altered := rowOf(t, st, 17)
			sqlExec(t, st, "UPDATE decisions SET commission = '99999.99' WHERE id = ?", altered.ID)
			want := []seen{{audit.FindingAltered, altered.ID}}
			doc, failed = verifyJSON(t, st)
			if got := kinds(doc); !failed || !slices.Equal(got, want) {
				t.Fatalf("after UPDATE: exit 1 %t, findings %v; want %v", failed, got, want)
			}
			if d := doc.Findings[0].Diffs; len(d) != 1 || d[0].Field != "commission" || d[0].Stored != "99999.99" {
				t.Errorf("altered row diffs = %+v, want commission stored 99999.99", d)
			}
			if f := doc.Findings[0]; f.Partition == nil || *f.Partition != altered.Partition || f.BatchSeq != altered.BatchSeq || f.Leaf == nil || *f.Leaf != altered.Leaf {
				t.Errorf("the finding's place = %+v, want partition %d batch %d leaf %d", f, altered.Partition, altered.BatchSeq, altered.Leaf)
			}
			out := verifyText(t, st)
			if !strings.Contains(out, fmt.Sprintf("FINDING alibaba partition %d batch %d leaf %d decision %d order %s: altered",
				altered.Partition, altered.BatchSeq, altered.Leaf, altered.ID, altered.OrderID)) ||
				!strings.Contains(out, `commission: stored "99999.99", re-run "`) || !strings.Contains(out, "FAILED: 1 finding (1 altered)") {
				t.Errorf("verify after UPDATE printed:\n%s", out)
			}

			// explain shows the drift loudly and exits 1.
			var x bytes.Buffer
			err := runExplain(ctx, st, explainParams{OrderID: altered.OrderID}, nil, &x)
			if !errors.Is(err, exitCode(1)) || !strings.Contains(x.String(), "!! DRIFT") ||
				!strings.Contains(x.String(), "the stored row was altered after it was decided") {
				t.Errorf("explain of the altered order: err %v, printed:\n%s", err, x.String())
			}

			// 2. A deleted decision (and the event its row holds): its leaf is missing from its
			// batch (whose root no longer matches), its ledger entry is left over.
			deleted := qualifiedFrom(t, st, 40)
			sqlExec(t, st, "DELETE FROM decisions WHERE id = ?", deleted.ID)
			want = sortSeen(append(want, seen{audit.FindingLedger, deleted.ID}, seen{audit.FindingMissing, 0}, seen{audit.FindingRootMismatch, 0}))
			doc, _ = verifyJSON(t, st)
			if got := kinds(doc); !slices.Equal(got, want) {
				t.Fatalf("after DELETE: findings %v; want %v", got, want)
			}
			for _, f := range doc.Findings {
				if f.Kind == audit.FindingMissing && (f.BatchSeq != deleted.BatchSeq || f.Leaf == nil || *f.Leaf != deleted.Leaf) {
					t.Errorf("missing finding %+v, want batch %d leaf %d", f, deleted.BatchSeq, deleted.Leaf)
				}
			}

			// 3. A forged decision put into the same batch, after its last leaf.
			var leaves int
			if err := st.DB().NewRaw("SELECT leaves FROM batches WHERE part = ? AND seq = ?", deleted.Partition, int64(deleted.BatchSeq)).Scan(ctx, &leaves); err != nil {
				t.Fatal(err)
			}
			sqlExec(t, st, `INSERT INTO decisions (event_id, order_id, program, affiliate_id, policy_version, policy_digest, qualified,
				failed_rules, rate_rule, rate, flat, base, commission, currency, rounding, trace, env, subject, stream_seq, raw, placed_at, received_at,
				month, prev_id, is_current, pin_version, pin_digest, decided_at, part, batch_seq, leaf, leaf_hash)
				SELECT 'forged-event', 'forged-order', program, 'aff-forger', policy_version, policy_digest, qualified,
				failed_rules, rate_rule, rate, flat, base, commission, currency, rounding, trace, env, subject, 0, raw, placed_at, received_at,
				month, 0, is_current, pin_version, pin_digest, decided_at, ?, ?, ?, leaf_hash
				FROM decisions WHERE id = ?`, deleted.Partition, int64(deleted.BatchSeq), leaves, qualifiedFrom(t, st, 5).ID) // a qualified row: its forgery books nothing its re-run books
			var forged int64
			if err := st.DB().NewRaw("SELECT id FROM decisions WHERE event_id = 'forged-event'").Scan(ctx, &forged); err != nil {
				t.Fatal(err)
			}
			// Its event names another order, and it booked nothing.
			want = sortSeen(append(want, seen{audit.FindingNotReproduced, forged}, seen{audit.FindingLedger, forged}, seen{audit.FindingInserted, forged}))
			doc, _ = verifyJSON(t, st)
			if got := kinds(doc); !slices.Equal(got, want) {
				t.Fatalf("after INSERT: findings %v; want %v", got, want)
			}
			for _, f := range doc.Findings {
				if f.Kind == audit.FindingNotReproduced && f.DecisionID != forged {
					t.Errorf("not reproduced: decision %d, want %d (the forged row, whose event names another order)", f.DecisionID, forged)
				}
			}

			// 4. The stored policy source edited: its digest no longer matches, and no decision it
			// made can be verified.
			sqlExec(t, st, `UPDATE policy_versions SET source = REPLACE(source, 'rate: "6%"', 'rate: "5%"') WHERE program = 'alibaba'`)
			doc, failed = verifyJSON(t, st)
			if !failed || len(doc.Findings) == 0 || doc.Findings[0].Kind != audit.FindingPolicy || doc.Findings[0].Reason != audit.ReasonPolicyAltered {
				t.Fatalf("after editing the policy source: findings %v; want a policy_altered finding first", kinds(doc))
			}
			if n := doc.ByKind[audit.FindingUnverifiable]; n != orders {
				t.Errorf("after editing the policy source: %d unverifiable rows, want %d (every stored row)", n, orders)
			}
			if !strings.Contains(doc.Findings[0].Detail, "the source was altered") {
				t.Errorf("policy finding: %q", doc.Findings[0].Detail)
			}
			if out := verifyText(t, st); !strings.Contains(out, "policy versions: 1 checked; 1 cannot be used") || !strings.Contains(out, "more not shown") {
				t.Errorf("verify after the policy edit printed:\n%s", out)
			}
		})
	}
}

// TestExplainThroughPipeline explains decisions stored by the service: every rule with its
// inputs, the check, and the same through --json.
func TestExplainThroughPipeline(t *testing.T) {
	for _, b := range auditBackends {
		t.Run(b.name, func(t *testing.T) {
			st, _ := pipelineStore(t, b.dsn(t), 60)
			ctx := context.Background()
			var out bytes.Buffer
			if err := runExplain(ctx, st, explainParams{OrderID: "alibaba-7"}, nil, &out); err != nil {
				t.Fatalf("explain: %v\n%s", err, out.String())
			}
			for _, want := range []string{ // sample order 7 (seed 7) fails the click window
				"order alibaba-7: 1 decision, in stream order; current: decision ",
				"  effective from  2025-01-01T00:00:00Z (",
				"  qualified       no: failed click_in_window\n",
				"  check           reproduced: deciding the stored event again with v1 gives exactly this decision",
				"  qualification: every rule must pass",
				"\n    click_in_window          fail\n      reason No affiliate click in the 30 days",
				"      read   order.status = \"completed\"",
				"  rates: not evaluated (the order did not qualify)",
			} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("explain output lacks %q:\n%s", want, out.String())
				}
			}

			// A qualified order: the matching rate rule, and why each earlier one did not match.
			var orderID, rateRule string
			if err := st.DB().QueryRowContext(ctx, "SELECT order_id, rate_rule FROM decisions WHERE qualified AND rate_rule = 'other_new' ORDER BY id LIMIT 1").
				Scan(&orderID, &rateRule); err != nil {
				t.Fatal(err)
			}
			out.Reset()
			if err := runExplain(ctx, st, explainParams{OrderID: orderID}, nil, &out); err != nil {
				t.Fatalf("explain: %v\n%s", err, out.String())
			}
			for _, want := range []string{
				"  qualified       yes: every qualification rule passed\n  rate rule       other_new: 9%\n",
				"  rates: the first rule that matches sets the rate",
				"\n    selected_new             no match       pays 10%\n",
				"\n    selected_returning       no match       pays 6%\n",
				"\n    other_new                match          pays 9%\n",
				"\n    other_returning          not evaluated  pays 5%\n",
				"      read   order.buyer.country = ",
			} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("explain output lacks %q:\n%s", want, out.String())
				}
			}

			out.Reset()
			if err := runExplain(ctx, st, explainParams{OrderID: "alibaba-7", Program: "alibaba", JSON: true}, nil, &out); err != nil {
				t.Fatal(err)
			}
			var doc explainJSON
			if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
				t.Fatal(err)
			}
			if !doc.Reproduced || len(doc.Decisions) != 1 || doc.Decisions[0].Check == nil || !doc.Decisions[0].Check.LeafOK || doc.Decisions[0].Chain.Inclusion == nil || !doc.Decisions[0].Chain.Inclusion.Verified {
				t.Fatalf("explain --json: %s", out.Bytes())
			}
			d := doc.Decisions[0]
			matched := 0
			for _, r := range d.Trace {
				if r.Expr == "" || r.Line == 0 {
					t.Errorf("rule %s: no expression or line", r.Rule)
				}
				if r.Outcome == "match" {
					matched++
					if r.Rule != d.RateRule || len(r.Inputs) == 0 {
						t.Errorf("the matching rule %s (inputs %v), want %s with its inputs", r.Rule, r.Inputs, d.RateRule)
					}
				}
			}
			if d.Qualified && matched != 1 {
				t.Errorf("%d matching rate rules, want 1", matched)
			}

			err := runExplain(ctx, st, explainParams{OrderID: "no-such-order"}, nil, io.Discard)
			if err == nil || !strings.Contains(err.Error(), "order no-such-order has no stored decision") {
				t.Errorf("explain of an unknown order: %v", err)
			}
		})
	}
}

// TestAuditAPIOnTheService calls the audit API of a running service: the token from the
// configuration opens it, and nothing else does.
func TestAuditAPIOnTheService(t *testing.T) {
	const token = "service-test-token-0123456789"
	_, svc := pipelineStore(t, "", 20, token)
	base := "http://" + svc.httpAddr
	get := func(path, tok string) (int, []byte) {
		req, _ := http.NewRequest("GET", base+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, body
	}
	if code, body := get("/v1/orders/alibaba-3/decisions", ""); code != 401 {
		t.Errorf("without a token: %d %s, want 401", code, body)
	}
	if code, body := get("/v1/orders/alibaba-3/decisions", token); code != 200 || !bytes.Contains(body, []byte(`"order_id": "alibaba-3"`)) {
		t.Errorf("with the token: %d %s, want 200 and the order's decisions", code, body)
	}
	if code, _ := get("/v1/policies/alibaba/1", token); code != 200 {
		t.Errorf("policy: %d, want 200", code)
	}
	if code, _ := get("/healthz", ""); code != 200 {
		t.Errorf("/healthz: %d, want 200 without a token", code)
	}
}
