package main

// End-to-end tests of the order lifecycle, the ledger and payouts (issue 5): the real service
// (embedded NATS on t.TempDir(), SQLite, no HTTP), events published to the stream, payouts run
// as the command runs them.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine/payout"
)

// lifecycleOrder is an order event of the seed program: a US new buyer (10%), referred by a
// click the day before.
type lifecycleOrder struct {
	id, affiliate, status, placed, completed, amount, refunded string
}

func (o lifecycleOrder) line() []byte {
	completed := ""
	if o.completed != "" {
		completed = fmt.Sprintf(`"completed_at":%q,`, o.completed)
	}
	placed, _ := time.Parse(time.RFC3339, o.placed)
	refunded := o.refunded
	if refunded == "" {
		refunded = "0"
	}
	return fmt.Appendf(nil, `{"order_id":%q,"program":"alibaba","affiliate_id":%q,"status":%q,"placed_at":%q,%s"click_at":%q,`+
		`"buyer":{"id":"b-%s","country":"US","new":true},"traffic_country":"US","currency":"USD","amount":%q,"refunded_amount":%q,`+
		`"items":[{"sku":"s-1","category":"electronics","amount":%q}]}`,
		o.id, o.affiliate, o.status, o.placed, completed, placed.Add(-24*time.Hour).Format(time.RFC3339), o.id, o.amount, refunded, o.amount)
}

// publishSettled publishes the orders and waits until the service has decided them.
func publishSettled(t *testing.T, svc *runningService, orders ...lifecycleOrder) {
	t.Helper()
	lines := make([][]byte, len(orders))
	for i, o := range orders {
		lines[i] = o.line()
	}
	publishDecided(t, svc, lines...)
}

// publishDecided publishes new events (none published before) and waits until the store holds a
// decision or a dead letter for each. (The consumer's pending count can lag a publish, so it is
// no proof that an event was decided.)
func publishDecided(t *testing.T, svc *runningService, lines ...[]byte) {
	t.Helper()
	count := func() (int64, error) {
		st, err := svc.store.Stats(context.Background())
		return st.Decisions + st.DeadLetters, err
	}
	before, err := count()
	if err != nil {
		t.Fatal(err)
	}
	last := publishAll(t, svc.js, svc.cfg.NATS, lines)
	want := before + int64(len(lines))
	waitUntil(t, 60*time.Second, fmt.Sprintf("%d events decided", len(lines)), func() (bool, string) {
		n, err := count()
		return err == nil && n >= want, fmt.Sprintf("%d of %d decided or dead-lettered (%v)", n, want, err)
	})
	waitSettledService(t, svc, last, 60*time.Second)
}

// payoutsJSON runs payouts with --format json and decodes its report.
func payoutsJSON(t *testing.T, cfg Config, p payoutsParams) (report struct {
	Runs []struct {
		Program      string `json:"program"`
		RunID        int64  `json:"run_id"`
		ClosedNow    bool   `json:"closed_now"`
		ClosedBefore bool   `json:"closed_before"`
		Payouts      int64  `json:"payouts"`
		Entries      int64  `json:"entries_paid"`
		Paid         []struct {
			Total string `json:"total"`
		} `json:"paid"`
	} `json:"runs"`
	Statements []struct {
		Program     string `json:"program"`
		AffiliateID string `json:"affiliate_id"`
		Currency    string `json:"currency"`
		Total       string `json:"total"`
		Payable     bool   `json:"payable"`
		Held        bool   `json:"held"`
		Lines       []struct {
			OrderID string `json:"order_id"`
			Kind    string `json:"kind"`
			Amount  string `json:"amount"`
		}
	} `json:"statements"`
	BankFiles []struct {
		Path          string `json:"path"`
		Currency      string `json:"currency"`
		MsgID         string `json:"msg_id"`
		Transfers     int    `json:"transfers"`
		ControlSum    string `json:"control_sum"`
		ExecutionDate string `json:"execution_date"`
	} `json:"bank_files"`
}) {
	t.Helper()
	p.Format = "json"
	p.Now = func() time.Time { return time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC) }
	var out, errOut bytes.Buffer
	err := runPayouts(context.Background(), cfg, p, &out, &errOut)
	switch {
	case p.Close && errors.Is(err, exitCode(1)) && strings.Contains(errOut.String(), "nothing paid: "):
		// a month another run closed: the report still says what that run paid
	case err != nil:
		t.Fatalf("payouts %+v: %v", p, err)
	}
	if err := json.Unmarshal(out.Bytes(), &report); err != nil {
		t.Fatalf("payouts %+v: decoding %s: %v", p, out.Bytes(), err)
	}
	return report
}

// TestPipelineRefundAfterPayout: a completed order is paid in the month its hold ends; refunded
// after that payout, its reversal is a negative line of the next month's statement, and closing
// a month twice pays nothing the second time.
func TestPipelineRefundAfterPayout(t *testing.T) {
	cfg := pipelineConfig(t)
	svc := startRunning(t, cfg)
	// Completed 2026-09-12, held 30 days: approved 2026-10-12, paid with October.
	sale := lifecycleOrder{id: "rp-1", affiliate: "aff-rp", status: "completed", placed: "2026-09-10T12:00:00Z", completed: "2026-09-12T12:00:00Z", amount: "1000.00"}
	late := lifecycleOrder{id: "rp-2", affiliate: "aff-rp", status: "completed", placed: "2026-10-10T12:00:00Z", completed: "2026-10-20T12:00:00Z", amount: "500.00"}
	publishSettled(t, svc, sale, lifecycleOrder{id: "rp-0", affiliate: "aff-rp", status: "pending", placed: "2026-09-10T12:00:00Z", amount: "70.00"}, late)
	// Paid by wire transfer: to the payee details set for the affiliate.
	setPayees(t, svc.store, payout.Payee{Program: "alibaba", AffiliateID: "aff-rp", Party: payout.Party{Name: "RP Ltd", IBAN: "DE89370400440532013000"}})

	preview := payoutsJSON(t, svc.cfg, payoutsParams{Month: "2026-10", Program: "alibaba"})
	if len(preview.Statements) != 1 || preview.Statements[0].Total != "100.00" || len(preview.Runs) != 1 || preview.Runs[0].ClosedBefore {
		t.Fatalf("October preview: got %+v, want one statement of 100.00 (rp-1 at 10%%; rp-2 is held until November 19), not closed", preview)
	}
	closed := payoutsJSON(t, svc.cfg, payoutsParams{Month: "2026-10", Close: true})
	if len(closed.Statements) != 1 || !closed.Statements[0].Payable || closed.Statements[0].Total != "100.00" {
		t.Fatalf("closing October: got statements %+v, want one payable statement of 100.00", closed.Statements)
	}
	if r := closed.Runs; len(r) == 0 || r[0].Program != "alibaba" || !r[0].ClosedNow || r[0].Payouts != 1 || r[0].Entries != 1 {
		t.Fatalf("closing October: got runs %+v, want alibaba closed now with 1 payout of 1 entry", r)
	}
	again := payoutsJSON(t, svc.cfg, payoutsParams{Month: "2026-10", Close: true, Program: "alibaba"})
	if len(again.Statements) != 0 || len(again.Runs) != 1 || !again.Runs[0].ClosedBefore || again.Runs[0].ClosedNow ||
		len(again.Runs[0].Paid) != 1 || again.Runs[0].Paid[0].Total != "100.00" {
		t.Fatalf("closing October twice: got %+v, want nothing paid now, closed before by the run that paid 100.00", again)
	}

	// The paid order is refunded in November.
	refund := sale
	refund.status, refund.refunded = "refunded", sale.amount
	publishSettled(t, svc, refund)
	ds, err := svc.store.DecisionsByOrder(context.Background(), "alibaba", "rp-1")
	if err != nil || len(ds) != 2 || ds[0].Qualified {
		t.Fatalf("rp-1: got %d decisions (%v), want the sale and the refund, the latest disqualified", len(ds), err)
	}
	nov := payoutsJSON(t, svc.cfg, payoutsParams{Month: "2026-11", Close: true, Program: "alibaba"})
	if len(nov.Statements) != 1 {
		t.Fatalf("November: got %+v, want one statement", nov.Statements)
	}
	lines := map[string]string{}
	for _, l := range nov.Statements[0].Lines {
		lines[l.OrderID+" "+l.Kind] = l.Amount
	}
	if want := map[string]string{"rp-1 reversal": "-100.00", "rp-2 accrual": "50.00"}; fmt.Sprint(lines) != fmt.Sprint(want) {
		t.Errorf("November's lines: got %v, want %v: the refund after the payout is a negative line", lines, want)
	}
	if s := nov.Statements[0]; s.Total != "-50.00" || s.Payable {
		t.Errorf("November: total %s payable %t, want -50.00 carried forward", s.Total, s.Payable)
	}
	// What the affiliate owes is carried into December's statement, netted against new sales.
	dec := payoutsJSON(t, svc.cfg, payoutsParams{Month: "2026-12", Program: "alibaba"})
	if len(dec.Statements) != 1 || dec.Statements[0].Total != "-50.00" {
		t.Errorf("December preview: got %+v, want the -50.00 carried forward", dec.Statements)
	}
	// Every entry of the ledger is one of these; the sum is what the current decisions owe.
	bs, err := svc.store.Balances(context.Background(), "alibaba")
	if err != nil || len(bs) != 1 || bs[0].Total.Text('f') != "50.00" {
		t.Errorf("the ledger balance of aff-rp: got %+v (%v), want 50.00 (rp-2's commission; rp-1 refunded)", bs, err)
	}
}

// TestPipelineLateEventKeepsTheOriginalVersion: an order decided under v1 keeps v1's terms for
// its later events although a v2 in force at its placed_at was loaded since; a new order of the
// same day is decided with v2.
func TestPipelineLateEventKeepsTheOriginalVersion(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "policies")
	if err := os.MkdirAll(filepath.Join(dir, "alibaba"), 0o755); err != nil {
		t.Fatal(err)
	}
	v1, err := os.ReadFile(filepath.Join(repoPolicies(t), "alibaba", "v1.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, filepath.Join(dir, "alibaba", "v1.yaml"), v1)
	cfg := pipelineConfig(t)
	cfg.Policies = dir
	svc := startRunning(t, cfg)

	sale := lifecycleOrder{id: "lv-1", affiliate: "aff-lv", status: "completed", placed: "2025-10-10T12:00:00Z", completed: "2025-10-11T12:00:00Z", amount: "2941.00"}
	publishSettled(t, svc, sale)

	// v2: retroactive from October 1st, paying new buyers in selected markets 12%.
	v2 := string(v1)
	if i := strings.Index(v2, "\ntests:"); i >= 0 {
		v2 = v2[:i+1]
	}
	v2 = strings.Replace(v2, "\nversion: 1\n", "\nversion: 2\n", 1)
	v2 = strings.Replace(v2, "\neffective_from: 2025-01-01T00:00:00Z\n", "\neffective_from: 2025-10-01T00:00:00Z\n", 1)
	v2 = strings.Replace(v2, "order.buyer.new\n    rate: \"10%\"", "order.buyer.new\n    rate: \"12%\"", 1)
	if strings.Count(v2, "version: 2") != 1 || !strings.Contains(v2, `rate: "12%"`) {
		t.Fatal("test data: could not derive v2 from v1.yaml")
	}
	writeAtomic(t, filepath.Join(dir, "alibaba", "v2.yaml"), []byte(v2))
	if err := svc.reload(context.Background()); err != nil {
		t.Fatalf("reloading with v2: %v", err)
	}

	corrected := sale
	corrected.amount = "2000.00" // the amount corrected after the sale
	fresh := lifecycleOrder{id: "lv-2", affiliate: "aff-lv", status: "completed", placed: "2025-10-10T12:00:00Z", completed: "2025-10-11T12:00:00Z", amount: "2000.00"}
	publishSettled(t, svc, corrected, fresh)

	ds, err := svc.store.DecisionsByOrder(context.Background(), "alibaba", "lv-1")
	if err != nil || len(ds) != 2 {
		t.Fatalf("lv-1: got %d decisions (%v), want 2: every event's decision is kept", len(ds), err)
	}
	if got := fmt.Sprintf("v%d %s, then v%d %s", ds[1].PolicyVersion, ds[1].Commission.Text('f'), ds[0].PolicyVersion, ds[0].Commission.Text('f')); got != "v1 294.10, then v1 200.00" {
		t.Errorf("lv-1: got %s, want v1 294.10, then v1 200.00 (the terms of the sale, not v2's 12%%)", got)
	}
	in, err := svc.store.DecisionInputs(context.Background(), ds[0].ID)
	if err != nil || !in.Pinned || in.Pin == nil || in.Pin.Version != 1 {
		t.Errorf("lv-1's later decision: inputs %+v (%v), want pinned to v1", in, err)
	}
	if d := lastDecision(t, svc, "lv-2"); d.PolicyVersion != 2 || d.Commission.Text('f') != "240.00" {
		t.Errorf("lv-2, a new order of the same day: got v%d %s, want v2 240.00", d.PolicyVersion, d.Commission.Text('f'))
	}
	es, err := svc.store.LedgerEntries(context.Background(), store.LedgerFilter{Program: "alibaba", OrderID: "lv-1"})
	if err != nil || len(es) != 2 || es[1].Kind != "adjustment" || es[1].Amount.Text('f') != "-94.10" {
		t.Errorf("lv-1's ledger: got %+v (%v), want an accrual of 294.10 and an adjustment of -94.10", es, err)
	}

	// Dropping v1 now would strand lv-1's later events: the reload is refused.
	if err := os.Remove(filepath.Join(dir, "alibaba", "v1.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := svc.reload(context.Background()); err == nil || !strings.Contains(err.Error(), "alibaba v1") {
		t.Errorf("reloading without v1: got %v, want a refusal naming alibaba v1", err)
	}
}

func lastDecision(t *testing.T, svc *runningService, orderID string) store.StoredDecision {
	t.Helper()
	ds, err := svc.store.DecisionsByOrder(context.Background(), "", orderID)
	if err != nil || len(ds) == 0 {
		t.Fatalf("%s: got %d decisions (%v), want one", orderID, len(ds), err)
	}
	return ds[0]
}

// tieredLine is an order event of the tiered example program (USD only, a click the day before).
func tieredLine(id, affiliate, status, placed, amount, refunded string) []byte {
	p, _ := time.Parse(time.RFC3339, placed)
	return fmt.Appendf(nil, `{"order_id":%q,"program":"tiered","affiliate_id":%q,"status":%q,"placed_at":%q,"completed_at":%q,"click_at":%q,`+
		`"buyer":{"id":"b-%s","country":"US","new":true},"currency":"USD","amount":%q,"refunded_amount":%q}`,
		id, affiliate, status, placed, p.Add(time.Hour).Format(time.RFC3339), p.Add(-24*time.Hour).Format(time.RFC3339), id, amount, refunded)
}

// TestPipelineTierBoundaryCrossedMidMonth: with the tiered example program, an affiliate's
// orders earn the base rate until its qualified sales of the month reach the silver threshold,
// then the silver rate; a refund takes its sale out of the month; a new month starts again. Each
// decision records the month's figures it was decided with.
func TestPipelineTierBoundaryCrossedMidMonth(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "policies")
	src, err := os.ReadFile(filepath.Join(repoPolicies(t), "examples", "tiered", "v1.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "tiered"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, filepath.Join(dir, "tiered", "v1.yaml"), src)
	cfg := pipelineConfig(t)
	cfg.Policies = dir
	svc := startRunning(t, cfg)

	// Silver from 10,000.00 USD sold this month; 4,000.00 per order.
	steps := []struct {
		line                []byte
		order               string
		rule, commission    string
		priorOrders         int64
		priorSales, comment string
	}{
		{tieredLine("t-1", "aff-t", "completed", "2025-10-03T10:00:00Z", "4000.00", "0"), "t-1", "base", "320.00", 0, "0", "the month's first order"},
		{tieredLine("t-2", "aff-t", "completed", "2025-10-08T10:00:00Z", "4000.00", "0"), "t-2", "base", "320.00", 1, "4000.00", ""},
		{tieredLine("x-1", "aff-x", "completed", "2025-10-09T10:00:00Z", "9000.00", "0"), "x-1", "base", "720.00", 0, "0", "another affiliate counts apart"},
		{tieredLine("t-3", "aff-t", "completed", "2025-10-12T10:00:00Z", "4000.00", "0"), "t-3", "base", "320.00", 2, "8000.00", "crosses the threshold, at the base rate"},
		{tieredLine("t-4", "aff-t", "completed", "2025-10-15T10:00:00Z", "4000.00", "0"), "t-4", "silver", "400.00", 3, "12000.00", "the first order past it: silver"},
		{tieredLine("t-2", "aff-t", "refunded", "2025-10-08T10:00:00Z", "4000.00", "4000.00"), "t-2", "", "0.00", 3, "12000.00", "t-2 refunded: its sale leaves the month"},
		{tieredLine("t-5", "aff-t", "completed", "2025-10-20T10:00:00Z", "4000.00", "0"), "t-5", "silver", "400.00", 3, "12000.00", "t-1, t-3, t-4"},
		{tieredLine("t-6", "aff-t", "completed", "2025-11-02T10:00:00Z", "4000.00", "0"), "t-6", "base", "320.00", 0, "0", "a new month"},
	}
	for i, s := range steps {
		publishDecided(t, svc, s.line)
		d := lastDecision(t, svc, s.order)
		if d.RateRule != s.rule || d.Commission.Text('f') != s.commission {
			t.Errorf("step %d, %s (%s): got %q paying %s, want %q paying %s", i+1, s.order, s.comment, d.RateRule, d.Commission.Text('f'), s.rule, s.commission)
		}
		in, err := svc.store.DecisionInputs(context.Background(), d.ID)
		if err != nil || in.Affiliate == nil {
			t.Fatalf("step %d: inputs %+v, %v; want the affiliate's month recorded", i+1, in, err)
		}
		if in.Affiliate.QualifiedOrders != s.priorOrders || in.Affiliate.QualifiedSales.Text('f') != s.priorSales {
			t.Errorf("step %d, %s: decided with %d orders, %s sold; want %d, %s", i+1, s.order,
				in.Affiliate.QualifiedOrders, in.Affiliate.QualifiedSales.Text('f'), s.priorOrders, s.priorSales)
		}
	}
}
