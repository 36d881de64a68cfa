package httpapi

import (
	"context"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/adapters/store"
	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

var _ ShadowReader = (*store.Store)(nil)

// shadowStore is a store whose decisions were made with the seed policy and a shadow of it
// paying returning buyers in the selected markets 5% instead of 6%; it returns the store, the
// shadow and the batch.
func shadowStore(t *testing.T, cfg store.Config) (*store.Store, *rules.Policy, *engine.BatchWrite) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	set, err := rules.LoadDir("../../policies")
	if err != nil {
		t.Fatal(err)
	}
	live, _ := set.Version("alibaba", 1)
	src := strings.Replace(string(live.Source), "version: 1\n", "version: 2\nstage: shadow\n", 1)
	src = strings.Replace(src, "when: order.buyer.country in selected_markets && !order.buyer.new\n    rate: \"6%\"",
		"when: order.buyer.country in selected_markets && !order.buyer.new\n    rate: \"5%\"", 1)
	shadow, ps := rules.Compile("shadow/v2.yaml", []byte(src))
	if shadow == nil {
		t.Fatal(ps)
	}
	withShadow, ps := rules.NewSet([]*rules.Policy{live, shadow})
	if withShadow == nil {
		t.Fatal(ps)
	}
	var events []engine.Event
	markets := []struct{ country, currency, amount string }{{"US", "USD", "1000.00"}, {"GB", "GBP", "250.50"}, {"BR", "BRL", "99.99"}}
	for i := range 30 {
		m := markets[i%len(markets)]
		raw := `{"order_id":"o-` + strconv.Itoa(i) + `","program":"alibaba","affiliate_id":"aff-1","status":"completed",` +
			`"placed_at":"2025-10-1` + strconv.Itoa(i%10) + `T12:00:00Z","click_at":"2025-10-01T00:00:00Z","buyer":{"id":"b","country":"` + m.country +
			`","new":` + map[bool]string{true: "true", false: "false"}[i%2 == 0] + `},"traffic_country":"` + m.country +
			`","currency":"` + m.currency + `","amount":"` + m.amount + `"}`
		events = append(events, engine.Event{ID: "ev-" + strconv.Itoa(i), Subject: "orders.alibaba", StreamSeq: uint64(i + 1), Raw: []byte(raw)})
	}
	w, err := engine.ClaimPartition(ctx, st, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := w.Write(ctx, engine.New(withShadow), events)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.WriteShadows(ctx, b.Shadows); err != nil {
		t.Fatal(err)
	}
	return st, shadow, b
}

func TestShadowReportAPI(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			st, shadow, batch := shadowStore(t, b.fresh(t))
			m := NewMetrics()
			srv := New(Config{Addr: "127.0.0.1:0"}, m.Registry, func(context.Context) error { return nil })
			opts := AuditOptions{Tokens: []string{testToken}}
			srv.MountAuditAPI(NewAuditAPI(st, opts))
			srv.Handle("GET /v1/shadow/report", NewShadowReportHandler(st, opts))
			ts := httptest.NewServer(srv.Handler())
			t.Cleanup(ts.Close)

			if r := call(t, ts, "GET", "/v1/shadow/report", "", nil); r.status != 401 {
				t.Errorf("without a token: status %d, want 401", r.status)
			}
			if r := call(t, ts, "GET", "/v1/shadow/report", "not-the-token-0123456789", nil); r.status != 401 {
				t.Errorf("with a wrong token: status %d, want 401", r.status)
			}

			r := call(t, ts, "GET", "/v1/shadow/report", testToken, nil)
			wantStatus(t, r, 200, "the report, program and version found alone")
			doc := decode[ShadowDocument](t, r)
			if doc.Shadow.Program != "alibaba" || doc.Shadow.Version != 2 || len(doc.Shadow.Digests) != 1 || doc.Shadow.Digests[0].Digest != shadow.Digest {
				t.Errorf("shadow %+v, want alibaba v2 %s", doc.Shadow, shadow.Digest)
			}
			// Worked out from the batch: selected returning buyers (US, GB; odd orders) earn 5%.
			want := map[string]struct{ before, after apd.Decimal }{}
			var diverged int64
			for _, res := range batch.Results {
				d := res.Decision
				x := want[d.Currency.Code]
				engine.SumContext.Add(&x.before, &x.before, &d.Commission)
				after := d.Commission
				if d.RateRule == "selected_returning" {
					diverged++
					var v apd.Decimal
					engine.SumContext.Mul(&v, &d.Base, apd.New(5, -2))
					c := apd.BaseContext.WithPrecision(40)
					c.Rounding = apd.RoundHalfUp
					c.Quantize(&after, &v, -2)
				}
				engine.SumContext.Add(&x.after, &x.after, &after)
				want[d.Currency.Code] = x
			}
			if doc.Summary.Events != 30 || doc.Summary.Evaluated != 30 || doc.Summary.Changed != diverged || doc.DivergingTotal != diverged {
				t.Errorf("summary %+v, diverging %d; want 30 events, 30 evaluated, %d changed", doc.Summary, doc.DivergingTotal, diverged)
			}
			if len(doc.Summary.Totals) != len(want) {
				t.Errorf("totals %+v, want %d currencies", doc.Summary.Totals, len(want))
			}
			for _, tot := range doc.Summary.Totals {
				w := want[tot.Currency]
				var diff apd.Decimal
				engine.SumContext.Sub(&diff, &w.after, &w.before)
				if tot.Before != w.before.Text('f') || tot.After != w.after.Text('f') || tot.Diff != SignedDecimal(&diff) {
					t.Errorf("%s: before %s after %s difference %s; want %s, %s, %s", tot.Currency, tot.Before, tot.After, tot.Diff,
						w.before.Text('f'), w.after.Text('f'), SignedDecimal(&diff))
				}
			}
			if len(doc.Diverging) == 0 || !strings.HasPrefix(doc.Diverging[0].Explain, "commissioner explain o-") || doc.Diverging[0].Cause.Rule != "selected_returning" {
				t.Errorf("diverging %+v", doc.Diverging)
			}

			r = call(t, ts, "GET", "/v1/shadow/report?program=alibaba&version=2&from=2025-10-15&to=2025-11&orders=1", testToken, nil)
			wantStatus(t, r, 200, "a range")
			doc = decode[ShadowDocument](t, r)
			if doc.Summary.Events != 15 || len(doc.Diverging) != 1 || doc.Parameters.From != "2025-10-15T00:00:00Z" {
				t.Errorf("from 2025-10-15: %d events, %d listed, from %q; want 15, 1, 2025-10-15T00:00:00Z", doc.Summary.Events, len(doc.Diverging), doc.Parameters.From)
			}

			for _, c := range []struct {
				query  string
				status int
			}{
				{"?version=x", 400}, {"?from=yesterday", 400}, {"?orders=0", 400}, {"?colour=blue", 400},
				{"?from=2025-11&to=2025-10", 400}, {"?program=nosuch", 404}, {"?version=7", 404},
			} {
				r := call(t, ts, "GET", "/v1/shadow/report"+c.query, testToken, nil)
				wantStatus(t, r, c.status, c.query)
			}
		})
	}
}
