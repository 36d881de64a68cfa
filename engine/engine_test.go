package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

func decode(t testing.TB, s string) *engine.Order {
	t.Helper()
	o, err := engine.DecodeOrder([]byte(s))
	if err != nil {
		t.Fatalf("decoding %s: %v", s, err)
	}
	return o
}

// TestDecideEncodes checks the exact bytes of a decision line, with and without the trace.
func TestDecideEncodes(t *testing.T) {
	set := seedSet(t)
	e := engine.New(set)
	p, err := set.Version("alibaba", 1)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		order string
		want  string
		trace []string // outcomes in policy order, with the trace
	}{
		{"qualified", orderJSON(), `{"order_id":"o-1","program":"alibaba","policy_version":1,"policy_digest":"` + p.Digest +
			`","qualified":true,"failed_rules":[],"rate_rule":"selected_new","rate":"10","commission":"294.10","currency":"USD"}`,
			[]string{"pass", "pass", "pass", "pass", "pass", "match", "not_evaluated", "not_evaluated", "not_evaluated"}},
		{"other returning", orderJSON(`buyer={"id":"b","country":"ZA","new":false}`, `currency="ZAR"`, `amount="1000.10"`, "-items"),
			`{"order_id":"o-1","program":"alibaba","policy_version":1,"policy_digest":"` + p.Digest +
				`","qualified":true,"failed_rules":[],"rate_rule":"other_returning","rate":"5","commission":"50.01","currency":"ZAR"}`,
			[]string{"pass", "pass", "pass", "pass", "pass", "no_match", "no_match", "no_match", "match"}},
		{"disqualified JPY", orderJSON(`status="pending"`, `traffic_country="CN"`, `currency="JPY"`, `amount="11111"`, "-items"),
			`{"order_id":"o-1","program":"alibaba","policy_version":1,"policy_digest":"` + p.Digest +
				`","qualified":false,"failed_rules":["completed","traffic_allowed"],"rate_rule":"","rate":"0","commission":"0","currency":"JPY"}`,
			[]string{"fail", "pass", "fail", "pass", "pass", "not_evaluated", "not_evaluated", "not_evaluated", "not_evaluated"}},
		{"disqualified CLF", orderJSON("-click_at", `currency="CLF"`, `amount="1.2345"`, "-items"),
			`{"order_id":"o-1","program":"alibaba","policy_version":1,"policy_digest":"` + p.Digest +
				`","qualified":false,"failed_rules":["click_in_window"],"rate_rule":"","rate":"0","commission":"0.0000","currency":"CLF"}`,
			[]string{"pass", "pass", "pass", "pass", "fail", "not_evaluated", "not_evaluated", "not_evaluated", "not_evaluated"}},
		{"escaped order id", orderJSON(`order_id="a\"b\\c\n\u0001\u2028<é>"`, `currency="KWD"`, `amount="10.000"`, "-items"),
			`{"order_id":"a\"b\\c\n\u0001\u2028<é>","program":"alibaba","policy_version":1,"policy_digest":"` + p.Digest +
				`","qualified":true,"failed_rules":[],"rate_rule":"selected_new","rate":"10","commission":"1.000","currency":"KWD"}`,
			[]string{"pass", "pass", "pass", "pass", "pass", "match", "not_evaluated", "not_evaluated", "not_evaluated"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := e.Decide(context.Background(), decode(t, c.order))
			if err != nil {
				t.Fatalf("got error %v, want a decision", err)
			}
			if got := string(d.AppendJSON(nil, false)); got != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
			traced := d.AppendJSON([]byte("prefix "), true)
			if !bytes.HasPrefix(traced, []byte("prefix ")) {
				t.Fatalf("got %q, want the decision appended after the prefix", traced)
			}
			traced = traced[len("prefix "):]
			if !json.Valid(traced) {
				t.Fatalf("got invalid JSON %s", traced)
			}
			var got struct {
				OrderID string `json:"order_id"`
				Trace   []struct{ Stage, Rule, Expr, Outcome string }
			}
			if err := json.Unmarshal(traced, &got); err != nil {
				t.Fatal(err)
			}
			if got.OrderID != d.OrderID {
				t.Errorf("order_id: got %q, want %q", got.OrderID, d.OrderID)
			}
			var outcomes []string
			for i, tr := range got.Trace {
				outcomes = append(outcomes, tr.Outcome)
				var wantStage, wantID, wantExpr string
				if i < len(p.Qualify) {
					wantStage, wantID, wantExpr = "qualify", p.Qualify[i].ID, p.Qualify[i].Expr
				} else {
					r := p.Rates[i-len(p.Qualify)]
					wantStage, wantID, wantExpr = "rate", r.ID, r.When
				}
				if tr.Stage != wantStage || tr.Rule != wantID || tr.Expr != wantExpr {
					t.Errorf("trace[%d]: got %s %s %q, want %s %s %q", i, tr.Stage, tr.Rule, tr.Expr, wantStage, wantID, wantExpr)
				}
			}
			if fmt.Sprint(outcomes) != fmt.Sprint(c.trace) {
				t.Errorf("trace outcomes: got %v, want %v", outcomes, c.trace)
			}
			if !bytes.HasPrefix(traced, []byte(strings.TrimSuffix(c.want, "}"))) {
				t.Errorf("got traced line %s, want it to start with the untraced fields", traced)
			}
		})
	}
}

func TestAppendErrorJSON(t *testing.T) {
	cases := []struct {
		line    int
		orderID string
		err     error
		want    string
	}{
		{3, "o-1", &engine.InputError{OrderID: "o-1", Field: "currency", Msg: `"XYZ" is not an ISO 4217 currency code`},
			`{"line":3,"order_id":"o-1","error":"currency: \"XYZ\" is not an ISO 4217 currency code","errors":[{"field":"currency","message":"\"XYZ\" is not an ISO 4217 currency code"}]}`},
		{0, "o-2", &engine.InputError{OrderID: "o-2", Field: "placed_at", Msg: "required", More: []engine.FieldError{{Field: "buyer", Msg: "required"}}},
			`{"order_id":"o-2","error":"placed_at: required; buyer: required","errors":[{"field":"placed_at","message":"required"},{"field":"buyer","message":"required"}]}`},
		{1, "", &engine.InputError{Msg: "malformed JSON: unexpected end of JSON"}, `{"line":1,"error":"malformed JSON: unexpected end of JSON"}`},
		{0, "a\tb", errors.New("x\x7f\xffy"), `{"order_id":"a\tb","error":"x` + "\x7f" + `\ufffdy"}`},
	}
	for _, c := range cases {
		got := string(engine.AppendErrorJSON(nil, c.line, c.orderID, c.err))
		if got != c.want {
			t.Errorf("got %s, want %s", got, c.want)
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("got invalid JSON %s", got)
		}
	}
}

// mixedOrders returns a spread of valid orders: every rule outcome, several markets and currencies.
func mixedOrders() []string {
	var out []string
	buyers := []string{`{"id":"b","country":"US","new":true}`, `{"id":"b","country":"GB","new":false}`,
		`{"id":"b","country":"BR","new":true}`, `{"id":"b","country":"KW","new":false}`}
	money := [][2]string{{"USD", `"2941.00"`}, {"JPY", `"11111"`}, {"KWD", `"1.225"`}, {"EUR", `99999999999999999999.99`}, {"USD", `"0.05"`}}
	variants := []string{"", `status="pending"`, `traffic_country="NG"`, `click_at=null`, "refund",
		`items=[{"sku":"a","category":"books"},{"sku":"b","category":"Tobacco"}]`}
	n := 0
	for _, b := range buyers {
		for _, m := range money {
			for _, v := range variants {
				n++
				changes := []string{fmt.Sprintf(`order_id="o-%d"`, n), "buyer=" + b, `currency="` + m[0] + `"`, "amount=" + m[1], "-items"}
				if v == "refund" {
					v = "refunded_amount=" + m[1]
				}
				if v != "" {
					changes = append(changes, v)
				}
				out = append(out, orderJSON(changes...))
			}
		}
	}
	return out
}

// TestDecideIsDeterministic decides the same orders again and again, on one goroutine and on
// many at once (run it with -race), and with a second engine over a second load of the same
// files: every decision must encode to identical bytes.
func TestDecideIsDeterministic(t *testing.T) {
	orders := mixedOrders()
	encodeAll := func(e *engine.Engine) [][]byte {
		out := make([][]byte, len(orders))
		for i, s := range orders {
			d, err := e.Decide(context.Background(), decode(t, s))
			if err != nil {
				t.Errorf("order %d: got error %v, want a decision", i, err)
				continue
			}
			out[i] = d.AppendJSON(d.AppendJSON(nil, false), true)
		}
		return out
	}
	e := engine.New(seedSet(t))
	want := encodeAll(e)
	compare := func(t *testing.T, got [][]byte) {
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Errorf("order %d: got\n%s\nwant\n%s", i, got[i], want[i])
			}
		}
	}
	t.Run("again", func(t *testing.T) { compare(t, encodeAll(e)) })
	t.Run("another engine", func(t *testing.T) { compare(t, encodeAll(engine.New(seedSet(t)))) })
	t.Run("goroutines", func(t *testing.T) {
		const workers = 8
		results := make([][][]byte, workers)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for range 5 {
					results[w] = encodeAll(e)
				}
			})
		}
		wg.Wait()
		for w := range workers {
			compare(t, results[w])
		}
	})
	// A decoded order is not changed by deciding it.
	t.Run("same order object", func(t *testing.T) {
		o := decode(t, orders[0])
		var first []byte
		for i := range 3 {
			d, err := e.Decide(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			got := d.AppendJSON(nil, true)
			if i == 0 {
				first = got
			} else if !bytes.Equal(got, first) {
				t.Errorf("decision %d: got %s, want %s", i, got, first)
			}
		}
	})
}

// TestVersionSelection picks the version in force at the order's placed_at: v1 from 2025-01-01,
// v2 from 2025-06-01 (paying 12% instead of 10% to a new buyer in a selected market).
func TestVersionSelection(t *testing.T) {
	v1 := seedWithTests("")
	v2 := strings.Replace(withVersion(v1, 2, "2025-06-01T00:00:00Z"), `rate: "10%"`, `rate: "12%"`, 1)
	other := strings.Replace(withVersion(v1, 1, "2025-01-01T00:00:00Z"), "program: alibaba", "program: other", 1)
	set := mustSet(t, map[string]string{"alibaba/v1.yaml": v1, "alibaba/v2.yaml": v2, "other/v1.yaml": other})
	e := engine.New(set)

	cases := []struct {
		name           string
		placedAt       string
		wantVersion    int
		wantCommission string
		wantErr        error
	}{
		{"well before the boundary", "2025-03-10T12:00:00Z", 1, "294.10", nil},
		{"one second before the boundary", "2025-05-31T23:59:59Z", 1, "294.10", nil},
		{"one nanosecond before the boundary", "2025-05-31T23:59:59.999999999Z", 1, "294.10", nil},
		{"at the boundary", "2025-06-01T00:00:00Z", 2, "352.92", nil},
		{"at the boundary, written with a positive offset", "2025-06-01T02:00:00+02:00", 2, "352.92", nil},
		{"at the boundary, written with a negative offset", "2025-05-31T20:00:00-04:00", 2, "352.92", nil},
		{"one second before the boundary, with an offset", "2025-06-01T01:59:59+02:00", 1, "294.10", nil},
		{"a local date after the boundary that is still before it", "2025-06-01T09:00:00+14:00", 1, "294.10", nil},
		{"after the boundary", "2025-09-01T00:00:00Z", 2, "352.92", nil},
		{"at v1's start", "2025-01-01T00:00:00Z", 1, "294.10", nil},
		{"before v1", "2024-12-31T23:59:59Z", 0, "", rules.ErrNoPolicyInForce},
		{"before v1, written with an offset", "2025-01-01T00:59:59+01:00", 0, "", rules.ErrNoPolicyInForce},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// the click is always within the window, one hour before the order
			o := decode(t, orderJSON(`placed_at="`+c.placedAt+`"`, "-click_at"))
			o.ClickAt, o.HasClick = o.PlacedAt.Add(-3600e9), true
			d, err := e.Decide(context.Background(), o)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("got %v, want %v", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want version %d", err, c.wantVersion)
			}
			if d.PolicyVersion != c.wantVersion || d.Commission.Text('f') != c.wantCommission {
				t.Errorf("got version %d commission %s, want version %d commission %s", d.PolicyVersion, d.Commission.Text('f'), c.wantVersion, c.wantCommission)
			}
			p, _ := set.Version("alibaba", c.wantVersion)
			if d.PolicyDigest != p.Digest || d.Policy != p {
				t.Errorf("got digest %s, want %s", d.PolicyDigest, p.Digest)
			}
		})
	}

	t.Run("unknown program", func(t *testing.T) {
		_, err := e.Decide(context.Background(), decode(t, orderJSON(`program="amazon"`)))
		if !errors.Is(err, rules.ErrUnknownProgram) {
			t.Errorf("got %v, want rules.ErrUnknownProgram", err)
		}
	})
	t.Run("DecideWith forces a version", func(t *testing.T) {
		p1, err := set.Version("alibaba", 1)
		if err != nil {
			t.Fatal(err)
		}
		o := decode(t, orderJSON(`placed_at="2025-09-01T00:00:00Z"`, `click_at="2025-08-31T00:00:00Z"`))
		d, err := e.DecideWith(context.Background(), p1, o)
		if err != nil {
			t.Fatal(err)
		}
		if d.PolicyVersion != 1 || d.Commission.Text('f') != "294.10" {
			t.Errorf("got version %d commission %s, want version 1 commission 294.10", d.PolicyVersion, d.Commission.Text('f'))
		}
	})
	t.Run("DecideWith a policy of another program", func(t *testing.T) {
		p, err := set.Version("other", 1)
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.DecideWith(context.Background(), p, decode(t, orderJSON()))
		if !errors.Is(err, rules.ErrUnknownProgram) {
			t.Errorf("got %v, want rules.ErrUnknownProgram", err)
		}
	})
	t.Run("unknown version", func(t *testing.T) {
		if _, err := set.Version("alibaba", 3); !errors.Is(err, rules.ErrUnknownVersion) {
			t.Errorf("got %v, want rules.ErrUnknownVersion", err)
		}
		if _, err := set.Version("amazon", 1); !errors.Is(err, rules.ErrUnknownProgram) {
			t.Errorf("got %v, want rules.ErrUnknownProgram", err)
		}
	})
	t.Run("same effective_from: the higher version wins", func(t *testing.T) {
		v3 := strings.Replace(withVersion(v1, 3, "2025-06-01T00:00:00Z"), `rate: "10%"`, `rate: "11%"`, 1)
		set := mustSet(t, map[string]string{"v1.yaml": v1, "v2.yaml": v2, "v3.yaml": v3})
		p, err := set.InForce("alibaba", decode(t, orderJSON(`placed_at="2025-06-01T00:00:00Z"`)).PlacedAt)
		if err != nil || p.Version != 3 {
			t.Errorf("got %v, %v, want version 3", p, err)
		}
	})
}

// TestDecideErrors covers the policy defects the engine reports instead of deciding.
func TestDecideErrors(t *testing.T) {
	v1 := seedWithTests("")
	noMatch := strings.NewReplacer(
		`when: order.buyer.country in selected_markets && order.buyer.new`, `when: "false"`,
		`when: order.buyer.country in selected_markets && !order.buyer.new`, `when: "false"`,
		`when: '!(order.buyer.country in selected_markets) && order.buyer.new'`, `when: "false"`,
		`when: '!(order.buyer.country in selected_markets) && !order.buyer.new'`, `when: "false"`,
	).Replace(v1)
	flatEUR := strings.Replace(v1, `rate: "10%"`, `flat: {EUR: "5.00"}`, 1)
	hybrid := strings.Replace(v1, `rate: "10%"`, "rate: \"10%\"\n    flat: {USD: \"2.50\", JPY: \"300\"}", 1)

	t.Run("no rate rule matched", func(t *testing.T) {
		e := engine.New(mustSet(t, map[string]string{"v1.yaml": noMatch}))
		_, err := e.Decide(context.Background(), decode(t, orderJSON()))
		if !errors.Is(err, engine.ErrNoRateRule) {
			t.Errorf("got %v, want ErrNoRateRule", err)
		}
		// a disqualified order never reaches the rate rules
		d, err := e.Decide(context.Background(), decode(t, orderJSON(`status="pending"`)))
		if err != nil || d.Qualified {
			t.Errorf("got %v, %v, want a disqualified decision", d, err)
		}
	})
	t.Run("no flat amount in the order's currency", func(t *testing.T) {
		e := engine.New(mustSet(t, map[string]string{"v1.yaml": flatEUR}))
		_, err := e.Decide(context.Background(), decode(t, orderJSON()))
		if !errors.Is(err, engine.ErrNoFlatAmount) {
			t.Errorf("got %v, want ErrNoFlatAmount", err)
		}
	})
	t.Run("hybrid rate and flat", func(t *testing.T) {
		e := engine.New(mustSet(t, map[string]string{"v1.yaml": hybrid}))
		// 2941.00 × 10 / 100 = 294.10; + 2.50 = 296.60
		d, err := e.Decide(context.Background(), decode(t, orderJSON()))
		if err != nil {
			t.Fatal(err)
		}
		if got := string(d.AppendJSON(nil, false)); !strings.Contains(got, `"rate":"10","flat":"2.50","commission":"296.60"`) {
			t.Errorf("got %s, want rate 10, flat 2.50, commission 296.60", got)
		}
		// JPY: 11111 × 10 / 100 = 1111.1; + 300 = 1411.1 -> 1411
		d, err = e.Decide(context.Background(), decode(t, orderJSON(`currency="JPY"`, `amount="11111"`, "-items")))
		if err != nil {
			t.Fatal(err)
		}
		if d.Commission.Text('f') != "1411" || !d.HasFlat() {
			t.Errorf("got commission %s (flat %t), want 1411 with a flat amount", d.Commission.Text('f'), d.HasFlat())
		}
	})
}

// TestDecideEvents decides a batch, keeping one result per event in order.
func TestDecideEvents(t *testing.T) {
	e := engine.New(seedSet(t))
	events := []engine.Event{
		{ID: "1", Raw: []byte(orderJSON())},
		{ID: "2", Raw: []byte(orderJSON(`order_id="o-2"`, `currency="XYZ"`))},
		{ID: "3", Raw: []byte(`{"order_id":`)},
		{ID: "4", Raw: []byte(orderJSON(`order_id="o-4"`, `program="amazon"`))},
		{ID: "5", Raw: []byte(orderJSON(`order_id="o-5"`, `status="pending"`))},
	}
	got := e.DecideEvents(context.Background(), events, nil)
	if len(got) != len(events) {
		t.Fatalf("got %d results, want %d", len(got), len(events))
	}
	want := []struct {
		id      string
		orderID string
		errIs   error
	}{{"1", "o-1", nil}, {"2", "o-2", engine.ErrInvalidOrder}, {"3", "", engine.ErrInvalidOrder}, {"4", "o-4", rules.ErrUnknownProgram}, {"5", "o-5", nil}}
	for i, w := range want {
		r := got[i]
		if r.Event.ID != w.id || r.OrderID() != w.orderID {
			t.Errorf("result %d: got event %s order %q, want event %s order %q", i, r.Event.ID, r.OrderID(), w.id, w.orderID)
		}
		if w.errIs == nil && (r.Err != nil || r.Decision == nil) {
			t.Errorf("result %d: got error %v, want a decision", i, r.Err)
		}
		if w.errIs != nil && (!errors.Is(r.Err, w.errIs) || r.Decision != nil) {
			t.Errorf("result %d: got %v, want %v and no decision", i, r.Err, w.errIs)
		}
	}
}
