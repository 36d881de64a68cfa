package main

// replay end to end: orders flow through the real service (embedded NATS on t.TempDir(), the
// real engine, SQLite or PostgreSQL), then `commissioner replay` prices candidate policies
// against what was recorded. Expected figures are worked out here from the stored decisions and
// events, not from the replay's code.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/adapters/httpapi"
	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// candidateFile writes the seed policy as another version with edits (old, new pairs, each
// found exactly once) to dir/name and returns its path.
func candidateFile(t testing.TB, dir, name string, version int, effectiveFrom string, edits ...string) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(repoPolicies(t), "alibaba", "v1.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(src)
	edits = append([]string{"version: 1\n", "version: " + strconv.Itoa(version) + "\n",
		"effective_from: 2025-01-01T00:00:00Z", "effective_from: " + effectiveFrom}, edits...)
	for i := 0; i < len(edits); i += 2 {
		if n := strings.Count(s, edits[i]); n != 1 {
			t.Fatalf("the seed policy has %d of %q, want 1", n, edits[i])
		}
		s = strings.Replace(s, edits[i], edits[i+1], 1)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const returningRate6 = "when: order.buyer.country in selected_markets && !order.buyer.new\n    rate: \"6%\""

// writeCandidate is the candidate of docs/program-manager.md and the README's tour: version 2,
// in force from November 2025, paying returning buyers in the selected markets rate instead of 6%.
func writeCandidate(t testing.TB, dir, rate string) string {
	t.Helper()
	return candidateFile(t, dir, "v2.yaml", 2, "2025-11-01T00:00:00Z", returningRate6, strings.Replace(returningRate6, `"6%"`, `"`+rate+`"`, 1))
}

// replayReport runs replay and decodes its JSON report; it returns the exit error too.
func replayReport(t *testing.T, cfg Config, p replayParams) (httpapi.ReplayDocument, string, error) {
	t.Helper()
	if p.Format == "" {
		p.Format = "json"
	}
	if p.Source == "" {
		p.Source = "store"
	}
	if p.Changes == 0 {
		p.Changes = -1
	}
	p.Workers = runtime.GOMAXPROCS(0)
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := runReplay(ctx, cfg, p, &out, &errOut)
	var doc httpapi.ReplayDocument
	if p.Format == "json" && p.Out == "" && out.Len() > 0 {
		if jerr := json.Unmarshal(out.Bytes(), &doc); jerr != nil {
			t.Fatalf("the JSON report does not decode: %v\n%s", jerr, out.String())
		}
	}
	if p.Format != "json" {
		return doc, out.String(), err
	}
	return doc, errOut.String(), err
}

// storedOrder is one order's latest event in the range with its latest decision, read straight
// from the tables.
type storedOrder struct {
	order     *engine.Order
	qualified bool
	failed    []string
	rateRule  string
	base      apd.Decimal
	currency  string
	commision apd.Decimal
}

// storedOctober reads every alibaba order placed in October 2025: its latest event (highest
// stream sequence) and that event's latest decision.
func storedOctober(t *testing.T, st *store.Store) map[string]*storedOrder {
	t.Helper()
	rows, err := st.DB().QueryContext(context.Background(), `SELECT d.order_id, d.stream_seq, d.raw, d.id, d.qualified, d.failed_rules, d.rate_rule,
		CAST(d.base AS TEXT), CAST(d.commission AS TEXT), d.currency
		FROM decisions d WHERE d.program = 'alibaba' AND d.placed_at >= ? AND d.placed_at < ?`,
		time.Date(2025, 10, 1, 0, 0, 0, 0, time.UTC), time.Date(2025, 11, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	type row struct {
		seq, id int64
		o       storedOrder
	}
	latest := map[string]row{}
	for rows.Next() {
		var r row
		var orderID, failed, base, commission string
		var raw []byte
		if err := rows.Scan(&orderID, &r.seq, &raw, &r.id, &r.o.qualified, &failed, &r.o.rateRule, &base, &commission, &r.o.currency); err != nil {
			t.Fatal(err)
		}
		if r.o.order, err = engine.DecodeOrder(raw); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(failed), &r.o.failed); err != nil {
			t.Fatal(err)
		}
		if _, _, err := r.o.base.SetString(base); err != nil {
			t.Fatal(err)
		}
		if _, _, err := r.o.commision.SetString(commission); err != nil {
			t.Fatal(err)
		}
		if old, ok := latest[orderID]; !ok || r.seq > old.seq || r.seq == old.seq && r.id > old.id {
			latest[orderID] = r
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	out := map[string]*storedOrder{}
	for id, r := range latest {
		o := r.o
		out[id] = &o
	}
	return out
}

// decimalOf parses an exact decimal from the report.
func decimalOf(t *testing.T, s string) *apd.Decimal {
	t.Helper()
	d, _, err := apd.NewFromString(strings.TrimPrefix(s, "+"))
	if err != nil {
		t.Fatalf("report amount %q: %v", s, err)
	}
	return d
}

func TestReplaySQLite(t *testing.T) { testReplay(t, "") }

func TestReplayPostgres(t *testing.T) {
	dsn, _, _ := postgresSchema(t, "")
	testReplay(t, dsn)
}

// testReplay decides sample orders through the service on the store dsn ("" : SQLite in the
// data directory) and replays candidates against them.
func testReplay(t *testing.T, dsn string) {
	cfg := pipelineConfig(t)
	if dsn != "" {
		cfg.Store.DSN = dsn
	}
	r := startRunning(t, cfg)
	cfg = r.cfg
	good := sampleLines(t, 400, 17, "2025-10")
	publishAll(t, r.js, cfg.NATS, mix(good, badOrderLines(18), 5))
	// A later event of 30 orders that were completed: now refunded. Only the latest event of
	// each order is replayed.
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

	ctx := context.Background()
	st, err := store.Open(ctx, cfg.storeConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	stored := storedOctober(t, st)
	if len(stored) != 400 {
		t.Fatalf("the store holds %d October orders with decisions, want 400", len(stored))
	}
	from, to := time.Date(2025, 10, 1, 0, 0, 0, 0, time.UTC), time.Date(2025, 11, 1, 0, 0, 0, 0, time.UTC)
	october := replayParams{From: from, To: to}
	dir := t.TempDir()

	t.Run("the deployed policies reproduce every decision", func(t *testing.T) {
		for _, p := range []replayParams{
			{Policy: repoPolicies(t)},                   // the directory, as deployed
			{Version: 1, Program: "alibaba"},            // the stored version
			{Policy: repoPolicies(t), Source: "stream"}, // from the stream's history
		} {
			p.From, p.To = october.From, october.To
			doc, stderr, err := replayReport(t, cfg, p)
			if err != nil {
				t.Fatalf("replay %+v: %v\n%s", p, err, stderr)
			}
			s := doc.Summary
			if s.Evaluated != 400 || s.SameVersion != 400 || s.Drift != 0 || s.Changed != 0 || s.CommissionChanged != 0 || doc.ChangesTotal != 0 {
				t.Errorf("replay %+v: evaluated %d, same version %d, drift %d, changed %d, commission changed %d, changes %d; want 400, 400, 0, 0, 0, 0",
					p, s.Evaluated, s.SameVersion, s.Drift, s.Changed, s.CommissionChanged, doc.ChangesTotal)
			}
			for _, tot := range s.Totals {
				if tot.Before != tot.After || strings.Trim(tot.Diff, "0.") != "" {
					t.Errorf("replay %+v: %s before %s, after %s, difference %s; want no difference", p, tot.Currency, tot.Before, tot.After, tot.Diff)
				}
			}
		}
	})

	candidate := writeCandidate(t, dir, "5%")
	t.Run("a lower returning-buyer rate in the selected markets, priced exactly", func(t *testing.T) {
		// Worked out from the stored decisions: every qualified selected_returning decision now
		// earns base × 5%, rounded half-up to the currency's minor units.
		type totals struct{ before, after apd.Decimal }
		want := map[string]*totals{}
		var changed int64
		ctx := apd.BaseContext.WithPrecision(200)
		ctx.Rounding = apd.RoundHalfUp
		five := apd.New(5, -2)
		for _, o := range stored {
			tot := want[o.currency]
			if tot == nil {
				tot = &totals{}
				want[o.currency] = tot
			}
			ctx.Add(&tot.before, &tot.before, &o.commision)
			after := o.commision
			if o.qualified && o.rateRule == "selected_returning" {
				var x apd.Decimal
				ctx.Mul(&x, &o.base, five)
				ctx.Quantize(&after, &x, o.commision.Exponent)
				if after.Cmp(&o.commision) != 0 {
					changed++
				}
			}
			ctx.Add(&tot.after, &tot.after, &after)
		}
		if changed < 20 {
			t.Fatalf("only %d orders change: the sample tests too little", changed)
		}
		for _, source := range []string{"store", "stream"} {
			p := october
			p.Policy, p.Source = candidate, source
			doc, stderr, err := replayReport(t, cfg, p)
			if err != nil {
				t.Fatalf("replay from the %s: %v\n%s", source, err, stderr)
			}
			s := doc.Summary
			if s.Evaluated != 400 || s.CommissionChanged != changed || s.NewlyQualified != 0 || s.NewlyDisqualified != 0 || s.SameVersion != 0 {
				t.Errorf("from the %s: evaluated %d, commission changed %d, newly qualified %d, disqualified %d, same version %d; want 400, %d, 0, 0, 0",
					source, s.Evaluated, s.CommissionChanged, s.NewlyQualified, s.NewlyDisqualified, s.SameVersion, changed)
			}
			if len(s.Totals) != len(want) {
				t.Errorf("from the %s: totals in %d currencies, want %d", source, len(s.Totals), len(want))
			}
			for _, tot := range s.Totals {
				w := want[tot.Currency]
				var diff apd.Decimal
				ctx.Sub(&diff, &w.after, &w.before)
				if decimalOf(t, tot.Before).Cmp(&w.before) != 0 || decimalOf(t, tot.After).Cmp(&w.after) != 0 || decimalOf(t, tot.Diff).Cmp(&diff) != 0 {
					t.Errorf("from the %s, %s: got before %s, after %s, difference %s; want %s, %s, %s",
						source, tot.Currency, tot.Before, tot.After, tot.Diff, w.before.Text('f'), w.after.Text('f'), diff.Text('f'))
				}
			}
			if len(doc.Candidate.Versions) != 1 || doc.Candidate.Versions[0].Version != 2 || !doc.Candidate.Versions[0].Pinned {
				t.Errorf("candidate = %+v, want v2 applied to every order", doc.Candidate.Versions)
			}
			for _, c := range doc.Changes {
				if c.Cause.Text != "rate selected_returning: 6% → 5%" {
					t.Errorf("order %s: cause %q, want the rate's terms", c.OrderID, c.Cause.Text)
					break
				}
			}
		}
	})

	t.Run("a candidate that forbids electronics and allows tobacco", func(t *testing.T) {
		cand := candidateFile(t, dir, "v3.yaml", 3, "2025-11-01T00:00:00Z", "    - tobacco\n", "    - electronics\n")
		var wantIn, wantOut int64
		for _, o := range stored {
			var electronics, tobacco, otherForbidden bool
			for _, it := range o.order.Items {
				switch c := strings.ToLower(it.Category); c {
				case "electronics":
					electronics = true
				case "tobacco":
					tobacco = true
				case "weapons", "drugs", "counterfeit", "adult", "hazardous_chemicals", "live_animals", "prescription_medicine":
					otherForbidden = true
				}
			}
			onlyItems := len(o.failed) == 1 && o.failed[0] == "no_forbidden_items"
			switch {
			case o.qualified && electronics:
				wantOut++
			case onlyItems && tobacco && !electronics && !otherForbidden:
				wantIn++
			}
		}
		if wantOut == 0 {
			t.Fatal("no qualified order has an electronics item: the sample tests nothing")
		}
		p := october
		p.Policy = cand
		doc, stderr, err := replayReport(t, cfg, p)
		if err != nil {
			t.Fatalf("replay: %v\n%s", err, stderr)
		}
		if s := doc.Summary; s.NewlyQualified != wantIn || s.NewlyDisqualified != wantOut {
			t.Errorf("newly qualified %d, disqualified %d; want %d, %d", s.NewlyQualified, s.NewlyDisqualified, wantIn, wantOut)
		}
		for _, c := range doc.Changes {
			if c.Old != nil && c.Old.Qualified && !c.New.Qualified && c.Cause.Text != "qualify no_forbidden_items: pass → fail" {
				t.Errorf("order %s: cause %q, want no_forbidden_items pass → fail", c.OrderID, c.Cause.Text)
			}
		}
	})

	t.Run("--record stores one replay run and nothing else", func(t *testing.T) {
		before, err := st.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		p := october
		p.Policy, p.Record = candidate, true
		doc, stderr, err := replayReport(t, cfg, p)
		if err != nil {
			t.Fatalf("replay: %v\n%s", err, stderr)
		}
		runs, err := st.ReplayRuns(ctx)
		if err != nil {
			t.Fatal(err)
		}
		set, err := rules.LoadFile(candidate)
		if err != nil {
			t.Fatal(err)
		}
		v2, _ := set.Version("alibaba", 2)
		if len(runs) != 1 || runs[0].CandidateProgram != "alibaba" || runs[0].CandidateVersion != 2 || runs[0].CandidateDigest != v2.Digest ||
			runs[0].CandidateSource != string(v2.Source) {
			t.Fatalf("replay runs = %+v, want one of alibaba v2 %s", runs, v2.Digest)
		}
		var summary httpapi.ReplaySummaryDoc
		var params httpapi.ReplayParamsDoc
		if err := json.Unmarshal(runs[0].Summary, &summary); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(runs[0].Parameters, &params); err != nil {
			t.Fatal(err)
		}
		if summary.Evaluated != 400 || summary.CommissionChanged != doc.Summary.CommissionChanged || params.From != "2025-10-01T00:00:00Z" || params.Policy != candidate {
			t.Errorf("recorded summary %+v, parameters %+v; want the run's", summary, params)
		}
		after, err := st.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if after.Decisions != before.Decisions || after.Events != before.Events {
			t.Errorf("decisions %d → %d, events %d → %d: a replay must write none", before.Decisions, after.Decisions, before.Events, after.Events)
		}
	})

	t.Run("html, csv and table reports", func(t *testing.T) {
		p := october
		p.Policy, p.Format = candidate, "html"
		_, html, err := replayReport(t, cfg, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"<!DOCTYPE html>", "<svg", "Change in commission by currency", "selected_returning"} {
			if !strings.Contains(html, want) {
				t.Errorf("the HTML report lacks %q", want)
			}
		}
		for _, banned := range []string{"<script", "http://", "https://cdn"} {
			if strings.Contains(strings.ReplaceAll(html, `xmlns="http://www.w3.org/2000/svg"`, ""), banned) {
				t.Errorf("the HTML report contains %q: it must be self-contained", banned)
			}
		}
		out := filepath.Join(t.TempDir(), "changes.csv")
		p.Format, p.Out = "csv", out
		if _, _, err := replayReport(t, cfg, p); err != nil {
			t.Fatal(err)
		}
		rows, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		totals, err := os.ReadFile(filepath.Join(filepath.Dir(out), "changes.totals.csv"))
		if err != nil {
			t.Fatal(err)
		}
		doc, _, err := replayReport(t, cfg, replayParams{Policy: candidate, From: from, To: to})
		if err != nil {
			t.Fatal(err)
		}
		if n := bytes.Count(rows, []byte("\n")); int64(n) != doc.ChangesTotal+1 {
			t.Errorf("changes.csv has %d lines, want %d changes and a header", n, doc.ChangesTotal)
		}
		if !bytes.HasPrefix(totals, []byte("group,recorded_rule,key,currency,")) || !bytes.Contains(totals, []byte("\ntotal,,,USD,")) {
			t.Errorf("changes.totals.csv:\n%s\nwant the header and a USD total", totals)
		}
	})

	t.Run("a decision altered in the store is drift", func(t *testing.T) {
		var id int64
		var commission string
		err := st.DB().QueryRowContext(ctx, `SELECT id, CAST(commission AS TEXT) FROM decisions WHERE qualified AND currency = 'USD' ORDER BY id LIMIT 1`).Scan(&id, &commission)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.DB().ExecContext(ctx, `UPDATE decisions SET commission = '0.01' WHERE id = ?`, id); err != nil {
			t.Fatal(err)
		}
		p := october
		p.Policy = repoPolicies(t)
		doc, stderr, err := replayReport(t, cfg, p)
		var code exitCode
		if !errors.As(err, &code) || code != exitDrift {
			t.Fatalf("replay after an edit: got %v, want exit status %d\n%s", err, exitDrift, stderr)
		}
		if doc.Summary.Drift != 1 || len(doc.Drifted) != 1 || doc.Drifted[0].Old.Commission != "0.01" || !strings.Contains(stderr, "drift: 1 of 400") {
			t.Errorf("drift %d, drifted %+v, stderr %q; want the one altered decision (was %s)", doc.Summary.Drift, doc.Drifted, stderr, commission)
		}
	})
}
