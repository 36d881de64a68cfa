package main

// Shadow versions end to end: the real service (embedded NATS on t.TempDir(), SQLite or
// PostgreSQL) decides sample orders with the live seed policy and, beside it, a shadow version;
// then `shadow report` is held to `replay` of the shadow's own file, the ledger, the chain and
// audit verify are held to the live decisions alone, and `policy promote` to its refusals.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine"
)

// shadowPolicies makes a policy directory holding the seed policy (alibaba/v1.yaml, mode 0640)
// and a shadow version 2 of it: the seed with stage: shadow (and header, e.g. "sample: 0.5\n"),
// the edits (old, new pairs, each found once) and, unless keepTests, no tests. It returns the
// directory and the shadow's path.
func shadowPolicies(t *testing.T, header string, keepTests bool, edits ...string) (dir, shadow string) {
	t.Helper()
	dir = t.TempDir()
	src, err := os.ReadFile(filepath.Join(repoPolicies(t), "alibaba", "v1.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "alibaba"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alibaba", "v1.yaml"), src, 0o640); err != nil {
		t.Fatal(err)
	}
	s := string(src)
	edits = append([]string{"version: 1\n", "version: 2\nstage: shadow\n" + header}, edits...)
	for i := 0; i < len(edits); i += 2 {
		if n := strings.Count(s, edits[i]); n != 1 {
			t.Fatalf("the seed policy has %d of %q, want 1", n, edits[i])
		}
		s = strings.Replace(s, edits[i], edits[i+1], 1)
	}
	if !keepTests {
		s = s[:strings.Index(s, "\ntests:")+1]
	}
	shadow = filepath.Join(dir, "alibaba", "v2.yaml")
	if err := os.WriteFile(shadow, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, shadow
}

// runShadowPipeline runs the service on the policies dir and the store dsn ("": SQLite) on 400
// October orders, 18 bad events and a later refunded event of 30 of them, until every event is
// settled, stops it (its shadow outcomes written), and returns its config and store.
func runShadowPipeline(t *testing.T, dsn, policies string) (Config, *runningService, *store.Store) {
	t.Helper()
	cfg := pipelineConfig(t)
	cfg.Policies = policies
	if dsn != "" {
		cfg.Store.DSN = dsn
	}
	r := startRunning(t, cfg)
	cfg = r.cfg
	good := sampleLines(t, 400, 17, "2025-10")
	publishAll(t, r.js, cfg.NATS, mix(good, badOrderLines(18), 5))
	var later [][]byte
	for _, l := range good {
		if len(later) < 30 && bytes.Contains(l, []byte(`"status":"completed"`)) {
			later = append(later, bytes.Replace(l, []byte(`"status":"completed"`), []byte(`"status":"refunded"`), 1))
		}
	}
	last := publishAll(t, r.js, cfg.NATS, later)
	waitSettledService(t, r, last, 2*time.Minute)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), cfg.storeConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return cfg, r, st
}

// shadowReportDoc runs shadow report --format json and decodes it.
func shadowReportDoc(t *testing.T, cfg Config, p shadowReportParams) httpapi.ShadowDocument {
	t.Helper()
	p.Format = "json"
	if p.Orders == 0 {
		p.Orders = 20
	}
	var out bytes.Buffer
	if err := runShadowReport(context.Background(), cfg, p, &out); err != nil {
		t.Fatalf("shadow report: %v", err)
	}
	var doc httpapi.ShadowDocument
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("the shadow report's JSON: %v\n%s", err, out.String())
	}
	return doc
}

// count runs a count query.
func count(t *testing.T, st *store.Store, query string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := st.DB().QueryRowContext(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// metricValue sums a metric's samples whose labels include want.
func metricValue(t *testing.T, svc *service, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := svc.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	samples:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue samples
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

var shadowBackends = []struct {
	name string
	dsn  func(*testing.T) string
}{
	{"sqlite", func(*testing.T) string { return "" }},
	{"postgres", func(t *testing.T) string { dsn, _, _ := postgresSchema(t, ""); return dsn }},
}

// TestShadowThroughPipeline: a shadow that cuts a rate shows the same totals as replay of its
// file over the same events; it is in no decision, ledger entry, leaf or payout; audit verify
// holds; promotion refuses a bad file and a backdated date and writes a good one.
func TestShadowThroughPipeline(t *testing.T) {
	for _, b := range shadowBackends {
		t.Run(b.name, func(t *testing.T) {
			dsn := b.dsn(t)
			dir, shadowFile := shadowPolicies(t, "", false, returningRate6, strings.Replace(returningRate6, `"6%"`, `"5%"`, 1))
			cfg, svc, st := runShadowPipeline(t, dsn, dir)

			decisions := count(t, st, "SELECT count(*) FROM decisions")
			if decisions != 430 {
				t.Fatalf("%d decisions stored, want 430 (400 orders, 30 of them refunded later)", decisions)
			}
			if n := count(t, st, "SELECT coalesce(sum(events), 0) FROM shadow_batches WHERE version = 2"); n != decisions {
				t.Errorf("%d shadow outcomes stored, want one per decision: %d", n, decisions)
			}
			if n := count(t, st, "SELECT count(*) FROM shadow_outcomes WHERE version = 2"); n == 0 || n >= decisions {
				t.Errorf("%d shadow outcomes with a row of their own, want those that differ from the live decisions: some, not all %d", n, decisions)
			}

			// October: the orders the service decided (replay would also price a dead letter
			// that decodes, an order of 2024 no version was in force for; the shadow decides
			// only what the live version decided).
			from, to := time.Date(2025, 10, 1, 0, 0, 0, 0, time.UTC), time.Date(2025, 11, 1, 0, 0, 0, 0, time.UTC)
			doc := shadowReportDoc(t, cfg, shadowReportParams{From: from, To: to})
			rep, _, err := replayReport(t, cfg, replayParams{Policy: shadowFile, From: from, To: to})
			if err != nil {
				t.Fatalf("replay of the shadow's file: %v", err)
			}
			if doc.Summary.Events != decisions || doc.Summary.Evaluated != 400 || rep.Summary.Evaluated != 400 {
				t.Errorf("shadow report: %d events, %d orders; replay %d orders; want %d, 400, 400", doc.Summary.Events, doc.Summary.Evaluated, rep.Summary.Evaluated, decisions)
			}
			if doc.Summary.Changed != rep.Summary.Changed || doc.Summary.CommissionChanged != rep.Summary.CommissionChanged || doc.Summary.Changed == 0 {
				t.Errorf("shadow report: %d changed, %d commission changed; replay %d, %d (and not 0)", doc.Summary.Changed, doc.Summary.CommissionChanged,
					rep.Summary.Changed, rep.Summary.CommissionChanged)
			}
			if got, want := jsonOf(t, doc.Summary.Totals), jsonOf(t, rep.Summary.Totals); got != want {
				t.Errorf("shadow report totals differ from replay's:\n got %s\nwant %s", got, want)
			}
			if rep.Candidate.Versions[0].Digest != doc.Shadow.Digests[0].Digest {
				t.Errorf("replay priced %s, the shadow is %s", rep.Candidate.Versions[0].Digest, doc.Shadow.Digests[0].Digest)
			}

			// The live decisions alone: no decision, stored version, ledger entry or leaf of v2.
			if n := count(t, st, "SELECT count(*) FROM decisions WHERE policy_version <> 1"); n != 0 {
				t.Errorf("%d decisions not made by v1", n)
			}
			if n := count(t, st, "SELECT count(*) FROM policy_versions WHERE version <> 1"); n != 0 {
				t.Errorf("%d stored policy versions besides v1", n)
			}
			if n := count(t, st, "SELECT count(*) FROM ledger_entries l JOIN decisions d ON d.id = l.decision_id WHERE d.policy_version <> 1"); n != 0 {
				t.Errorf("%d ledger entries of decisions not made by v1", n)
			}
			// The ledger's net per currency is the live commissions (report's before), never the
			// shadow's (after): what payouts pay from.
			ledger := ledgerNet(t, st)
			for _, tot := range doc.Summary.Totals {
				net := ledger[tot.Currency]
				if net == nil {
					net = new(apd.Decimal)
				}
				if net.Cmp(decimalOf(t, tot.Before)) != 0 {
					t.Errorf("%s: the ledger nets %s, the live decisions %s (the shadow %s)", tot.Currency, net.Text('f'), tot.Before, tot.After)
				}
			}
			if report, failed := verifyJSON(t, st); failed || !report.OK {
				t.Errorf("audit verify with shadow outcomes stored: %+v", report)
			}

			// The metrics counted every outcome and the divergences.
			labels := map[string]string{"program": "alibaba", "version": "2"}
			if n := metricValue(t, svc.service, "commissioner_shadow_decisions_total", labels); n != float64(decisions) {
				t.Errorf("commissioner_shadow_decisions_total = %v, want %d", n, decisions)
			}
			if n := metricValue(t, svc.service, "commissioner_shadow_divergences_total", labels); n == 0 {
				t.Errorf("commissioner_shadow_divergences_total = 0")
			}
			if d := metricValue(t, svc.service, "commissioner_shadow_commission_delta", map[string]string{"program": "alibaba", "version": "2", "currency": "USD"}); d >= 0 {
				t.Errorf("commissioner_shadow_commission_delta{USD} = %v, want < 0 (5%% instead of 6%%)", d)
			}

			t.Run("promotion", func(t *testing.T) { testPromotion(t, cfg, st, dir, shadowFile) })
		})
	}
}

// jsonOf is v as JSON, for comparing documents.
func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ledgerNet sums the ledger entries per currency, exactly.
func ledgerNet(t *testing.T, st *store.Store) map[string]*apd.Decimal {
	t.Helper()
	rows, err := st.DB().QueryContext(context.Background(), "SELECT currency, CAST(amount AS TEXT) FROM ledger_entries")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]*apd.Decimal{}
	for rows.Next() {
		var cur, amount string
		if err := rows.Scan(&cur, &amount); err != nil {
			t.Fatal(err)
		}
		if out[cur] == nil {
			out[cur] = new(apd.Decimal)
		}
		engine.SumContext.Add(out[cur], out[cur], decimalOf(t, amount))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// testPromotion holds policy promote to its refusals and its file, on a store whose decisions
// were made in October 2025 and the policy directory dir holding the shadow.
func testPromotion(t *testing.T, cfg Config, st *store.Store, dir, shadowFile string) {
	ctx := context.Background()
	cfg.Policies = dir
	promote := func(file, at string) (string, error) {
		t.Helper()
		when, err := parseReplayTime("--effective-from", at)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		err = runPolicyPromote(ctx, cfg, promoteParams{File: file, EffectiveFrom: when}, &out)
		return out.String(), err
	}
	v3 := filepath.Join(dir, "alibaba", "v3.yaml")
	refused := func(what, file, at, want string) {
		t.Helper()
		if _, err := promote(file, at); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error saying %q", what, err, want)
		}
		if _, err := os.Stat(v3); err == nil {
			t.Fatalf("%s: %s was written", what, v3)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("program: alibaba\nversion: 9\nstage: shadow\neffective_from: 2025-01-01T00:00:00Z\nrounding: half_up\nqualify:\n  - id: x\n    expr: order.stattus == 1\n    reason: r\nrates:\n  - id: all\n    when: \"true\"\n    rate: \"5%\"\n"), 0o644)
	refused("a file that does not compile", bad, "2026-01-01", "bad.yaml:8:")
	refused("a live version", filepath.Join(dir, "alibaba", "v1.yaml"), "2026-01-01", "is not a shadow version")
	// A shadow whose examples fail: the seed's tests expect 6% for returning buyers.
	failing := filepath.Join(t.TempDir(), "failing.yaml")
	src, _ := os.ReadFile(filepath.Join(repoPolicies(t), "alibaba", "v1.yaml"))
	os.WriteFile(failing, bytes.Replace(bytes.Replace(src, []byte("version: 1\n"), []byte("version: 2\nstage: shadow\n"), 1),
		[]byte(returningRate6), []byte(strings.Replace(returningRate6, `"6%"`, `"5%"`, 1)), 1), 0o644)
	refused("a shadow whose examples fail", failing, "2026-01-01", "fail their tests")
	latest, ok, err := st.LatestDecided(ctx, "alibaba")
	if err != nil || !ok {
		t.Fatalf("LatestDecided: %v, %t", err, ok)
	}
	refused("a date before the latest order decided", shadowFile, "2025-10-15", "is not after "+latest.PlacedAt.Format(time.RFC3339Nano))
	refused("the very time of the latest order decided", shadowFile, latest.PlacedAt.Format(time.RFC3339Nano), "which is decided already")

	out, err := promote(shadowFile, "2026-01-01")
	if err != nil {
		t.Fatalf("promoting: %v", err)
	}
	if !strings.Contains(out, "wrote "+v3+": alibaba v3, in force from 2026-01-01T00:00:00Z") {
		t.Errorf("promote said:\n%s", out)
	}
	got, err := os.ReadFile(v3)
	if err != nil {
		t.Fatal(err)
	}
	shadowSrc, _ := os.ReadFile(shadowFile)
	want := strings.Replace(strings.Replace(string(shadowSrc), "version: 2\nstage: shadow\n", "version: 3\n", 1),
		"effective_from: 2025-01-01T00:00:00Z", "effective_from: 2026-01-01T00:00:00Z", 1)
	if string(got) != want {
		t.Errorf("v3.yaml is not the shadow with version 3, effective 2026-01-01 and no stage:\n%s", got)
	}
	if info, err := os.Stat(v3); err != nil || info.Mode().Perm() != 0o640 {
		t.Errorf("v3.yaml mode %v (%v), want 0640 as v1.yaml", info.Mode().Perm(), err)
	}
	check, err := engine.CheckPolicies(ctx, dir)
	if err != nil || check.Err() != nil {
		t.Fatalf("the policies after promotion: %v, %v", err, check.Err())
	}
	p, err := check.Set.InForce("alibaba", time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC))
	if err != nil || p.Version != 3 || p.IsShadow() {
		t.Errorf("in force in February 2026: %v, %v; want the live v3", p, err)
	}
	if p, _ := check.Set.InForce("alibaba", time.Date(2025, 12, 1, 0, 0, 0, 0, time.UTC)); p == nil || p.Version != 1 {
		t.Errorf("in force in December 2025: %v, want v1", p)
	}

	// Never over an existing file.
	var le *os.LinkError
	if err := writeNewFile(v3, []byte("other"), 0o600); !errors.As(err, &le) {
		t.Errorf("writing over %s: %v, want the link refused", v3, err)
	}
	if again, _ := os.ReadFile(v3); string(again) != want {
		t.Errorf("%s changed", v3)
	}
}

// TestShadowRuleErrorLeavesLiveUntouched: a shadow whose rule fails at run time on some orders
// leaves every live decision and ack as without it; its failures are counted, logged and
// stored as errors, and the report counts them.
func TestShadowRuleErrorLeavesLiveUntouched(t *testing.T) {
	for _, b := range shadowBackends {
		t.Run(b.name, func(t *testing.T) {
			dir, _ := shadowPolicies(t, "sample: 0.5\n", false, "expr: order.status == \"completed\"",
				`expr: 'order.status == "completed" && (order.amount > decimal("500") ? 1 / (size(order.items) - size(order.items)) == 0 : true)'`)
			cfg, svc, st := runShadowPipeline(t, b.dsn(t), dir)
			stats := svc.consumer.Stats()
			if stats.FailedBatches != 0 || stats.Naked != 0 || stats.Termed != 18 {
				t.Errorf("consumer: %d failed batches, %d naked, %d termed; want 0, 0, 18 (the bad events)", stats.FailedBatches, stats.Naked, stats.Termed)
			}
			if n := count(t, st, "SELECT count(*) FROM decisions"); n != 430 {
				t.Errorf("%d decisions, want 430", n)
			}
			if n := count(t, st, "SELECT count(*) FROM dead_letters"); n != 18 {
				t.Errorf("%d dead letters, want the 18 bad events", n)
			}
			if report, failed := verifyJSON(t, st); failed || !report.OK {
				t.Errorf("audit verify: %+v", report)
			}
			failedRows := count(t, st, "SELECT count(*) FROM shadow_outcomes WHERE error_kind = 'rule_error'")
			all := count(t, st, "SELECT coalesce(sum(events), 0) FROM shadow_batches") // every outcome, agreeing ones included
			if failedRows == 0 || all <= failedRows || all >= 430 {
				t.Errorf("shadow outcomes: %d of %d failed; want some failed, some decided, and about half the events (sample 0.5)", failedRows, all)
			}
			labels := map[string]string{"program": "alibaba", "version": "2", "stage": "decide"}
			if n := metricValue(t, svc.service, "commissioner_shadow_failures_total", labels); n != float64(failedRows) {
				t.Errorf("commissioner_shadow_failures_total{stage=decide} = %v, want %d", n, failedRows)
			}
			if !strings.Contains(svc.logs.String(), "a shadow version could not decide events") {
				t.Errorf("the service did not log the shadow's failures")
			}
			doc := shadowReportDoc(t, cfg, shadowReportParams{Program: "alibaba", Version: 2})
			if doc.Summary.Errors[engine.ErrorKindRule] == 0 || len(doc.ErrorSamples) == 0 || !strings.Contains(doc.ErrorSamples[0].Reason, "division by zero") {
				t.Errorf("report: not decidable %v, samples %+v", doc.Summary.Errors, doc.ErrorSamples)
			}
		})
	}
}
