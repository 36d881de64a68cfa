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
	err := runAuditVerify(context.Background(), st, auditVerifyParams{JSON: true, Workers: 2, MaxFindings: 10000}, &out)
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
	return doc, failed
}

// verifyText runs audit verify and returns what it printed.
func verifyText(t *testing.T, st *store.Store) string {
	t.Helper()
	var out bytes.Buffer
	if err := runAuditVerify(context.Background(), st, auditVerifyParams{Workers: 2, MaxFindings: 5}, &out); err != nil && !errors.Is(err, exitCode(1)) {
		t.Fatalf("audit verify: %v", err)
	}
	return out.String()
}

type seen struct {
	kind     string
	chainSeq int64
	id       int64
}

func kinds(doc auditJSON) []seen {
	var out []seen
	for _, f := range doc.Findings {
		out = append(out, seen{f.Kind, f.ChainSeq, f.DecisionID})
	}
	return out
}

func rowOf(t *testing.T, st *store.Store, seq int64) store.StoredDecision {
	t.Helper()
	var found *store.StoredDecision
	if err := st.WalkChain(context.Background(), "alibaba", func(d store.StoredDecision) error {
		if d.ChainSeq == seq {
			found = &d
		}
		return nil
	}); err != nil || found == nil {
		t.Fatalf("reading chain_seq %d: %v (found %t)", seq, err, found != nil)
	}
	return *found
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
			if failed || len(doc.Findings) != 0 || len(doc.Chains) != 1 {
				t.Fatalf("clean store: exit 1 %t, findings %v, chains %d; want a pass over one chain", failed, kinds(doc), len(doc.Chains))
			}
			if c := doc.Chains[0]; c.Rows != orders || c.Reproduced != orders || c.LastSeq != orders || c.HeadSeq == nil || *c.HeadSeq != orders {
				t.Fatalf("clean chain = %+v, want %d rows, all reproduced, head %d", c, orders, orders)
			}
			if out := verifyText(t, st); !strings.Contains(out, fmt.Sprintf("OK: %d decisions verified", orders)) {
				t.Errorf("clean verify printed:\n%s", out)
			}

			// 1. A commission edited in place: named as altered, with the field.
			altered := rowOf(t, st, 17)
			sqlExec(t, st, "UPDATE decisions SET commission = '99999.99' WHERE id = ?", altered.ID)
			want := []seen{{store.FindingAltered, 17, altered.ID}}
			doc, failed = verifyJSON(t, st)
			if got := kinds(doc); !failed || !slices.Equal(got, want) {
				t.Fatalf("after UPDATE: exit 1 %t, findings %v; want %v", failed, got, want)
			}
			if d := doc.Findings[0].Diffs; len(d) != 1 || d[0].Field != "commission" || d[0].Stored != "99999.99" {
				t.Errorf("altered row diffs = %+v, want commission stored 99999.99", d)
			}
			if c := doc.Chains[0]; c.First == nil || c.First.ChainSeq != 17 || c.First.DecisionID != altered.ID {
				t.Errorf("chain's first finding = %+v, want chain_seq 17 decision %d", c.First, altered.ID)
			}
			out := verifyText(t, st)
			if !strings.Contains(out, fmt.Sprintf("FINDING alibaba chain_seq 17 decision %d order %s: altered", altered.ID, altered.OrderID)) ||
				!strings.Contains(out, `commission: stored "99999.99", re-run "`) || !strings.Contains(out, "FAILED: 1 finding (1 altered)") {
				t.Errorf("verify after UPDATE printed:\n%s", out)
			}

			// explain shows the drift loudly and exits 1.
			var x bytes.Buffer
			err := runExplain(ctx, st, explainParams{OrderID: altered.OrderID}, &x)
			if !errors.Is(err, exitCode(1)) || !strings.Contains(x.String(), "!! DRIFT") ||
				!strings.Contains(x.String(), "the stored row was altered after it was decided") {
				t.Errorf("explain of the altered order: err %v, printed:\n%s", err, x.String())
			}

			// 2. A deleted row: its position is missing, its event an orphan.
			deleted := rowOf(t, st, 40)
			sqlExec(t, st, "DELETE FROM decisions WHERE id = ?", deleted.ID)
			want = append(want, seen{store.FindingMissing, 40, 0}, seen{store.FindingOrphanEvent, 0, 0})
			doc, _ = verifyJSON(t, st)
			if got := kinds(doc); !slices.Equal(got, want) {
				t.Fatalf("after DELETE: findings %v; want %v", got, want)
			}
			if f := doc.Findings[1]; !strings.Contains(f.Detail, fmt.Sprintf("between decision %d (chain_seq 39) and decision %d (chain_seq 41)",
				rowOf(t, st, 39).ID, rowOf(t, st, 41).ID)) {
				t.Errorf("missing finding: %q, want it to name the neighbours", f.Detail)
			}
			if f := doc.Findings[2]; f.EventID != deleted.EventID {
				t.Errorf("orphan event %s, want %s (the deleted decision's)", f.EventID, deleted.EventID)
			}

			// 3. A forged row appended after the last one, linked to it, head moved too.
			last := rowOf(t, st, orders)
			hash, err := store.ChainHash(last.Hash, []byte("forged"))
			if err != nil {
				t.Fatal(err)
			}
			sqlExec(t, st, `INSERT INTO decisions (event_id, order_id, program, affiliate_id, policy_version, policy_digest, qualified,
				failed_rules, rate_rule, rate, flat, base, commission, currency, rounding, trace, env, stream_seq, decided_at, chain_seq, prev_hash, hash)
				SELECT 'forged-event', order_id, program, 'aff-forger', policy_version, policy_digest, qualified,
				failed_rules, rate_rule, rate, flat, base, commission, currency, rounding, trace, env, 0, decided_at, ?, ?, ?
				FROM decisions WHERE id = ?`, orders+1, last.Hash, hash, rowOf(t, st, 5).ID)
			sqlExec(t, st, "UPDATE chain_heads SET chain_seq = ?, hash = ? WHERE program = 'alibaba'", orders+1, hash)
			forged := rowOf(t, st, orders+1)
			want = slices.Insert(want, 2, seen{store.FindingUnverifiable, orders + 1, forged.ID})
			doc, _ = verifyJSON(t, st)
			if got := kinds(doc); !slices.Equal(got, want) {
				t.Fatalf("after INSERT: findings %v; want %v", got, want)
			}
			if f := doc.Findings[2]; f.Reason != store.ReasonEventMissing {
				t.Errorf("forged row: reason %q, want %s", f.Reason, store.ReasonEventMissing)
			}

			// 4. The stored policy source edited: its digest no longer matches, and no decision it
			// made can be verified.
			sqlExec(t, st, `UPDATE policy_versions SET source = REPLACE(source, 'rate: "6%"', 'rate: "5%"') WHERE program = 'alibaba'`)
			doc, failed = verifyJSON(t, st)
			if !failed || len(doc.Findings) == 0 || doc.Findings[0].Kind != store.FindingPolicy || doc.Findings[0].Reason != store.ReasonPolicyAltered {
				t.Fatalf("after editing the policy source: findings %v; want a policy_altered finding first", kinds(doc))
			}
			if n := doc.ByKind[store.FindingUnverifiable]; n != orders {
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
			if err := runExplain(ctx, st, explainParams{OrderID: "alibaba-7"}, &out); err != nil {
				t.Fatalf("explain: %v\n%s", err, out.String())
			}
			for _, want := range []string{ // sample order 7 (seed 7) fails the click window
				"order alibaba-7: 1 decision, newest first",
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
			if err := runExplain(ctx, st, explainParams{OrderID: orderID}, &out); err != nil {
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
			if err := runExplain(ctx, st, explainParams{OrderID: "alibaba-7", Program: "alibaba", JSON: true}, &out); err != nil {
				t.Fatal(err)
			}
			var doc explainJSON
			if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
				t.Fatal(err)
			}
			if !doc.Reproduced || len(doc.Decisions) != 1 || doc.Decisions[0].Check == nil || !doc.Decisions[0].Check.HashOK {
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

			err := runExplain(ctx, st, explainParams{OrderID: "no-such-order"}, io.Discard)
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
