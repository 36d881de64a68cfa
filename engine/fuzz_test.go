package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// FuzzDecodeOrder feeds arbitrary bytes to DecodeOrder. It must never panic; what it accepts must
// be valid JSON whose strings encoding/json reads the same way; an accepted order must decide the
// same way twice and encode to valid JSON.
//
//	go test ./engine -run '^$' -fuzz FuzzDecodeOrder -fuzztime 60s
func FuzzDecodeOrder(f *testing.F) {
	for _, s := range fuzzOrderSeeds(f) {
		f.Add([]byte(s))
	}
	e := engine.New(seedSet(f))
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := engine.DecodeOrder(data)
		if err != nil {
			var ie *engine.InputError
			if !errors.As(err, &ie) || o != nil {
				t.Fatalf("got %T %v with order %v, want an *InputError and no order", err, err, o)
			}
			return
		}
		if !json.Valid(data) {
			t.Fatalf("DecodeOrder accepted %q, which encoding/json says is not valid JSON", data)
		}
		checkAgainstEncodingJSON(t, data, o)
		checkInvariants(t, o)

		d1, err1 := e.Decide(ctx, o)
		d2, err2 := e.Decide(ctx, o)
		if (err1 == nil) != (err2 == nil) || (err1 != nil && err1.Error() != err2.Error()) {
			t.Fatalf("deciding twice: got errors %v and %v", err1, err2)
		}
		if err1 != nil {
			return
		}
		b1, b2 := d1.AppendJSON(nil, true), d2.AppendJSON(nil, true)
		if !bytes.Equal(b1, b2) {
			t.Fatalf("deciding twice: got\n%s\nand\n%s", b1, b2)
		}
		if !json.Valid(b1) {
			t.Fatalf("the decision encodes to invalid JSON: %s", b1)
		}
	})
}

// checkAgainstEncodingJSON decodes the same bytes with encoding/json and compares the strings
// and the amounts the order holds (keys matched exactly, as DecodeOrder does; the last of
// duplicate keys wins in both). encoding/json keeps numbers as json.Number, never float64.
func checkAgainstEncodingJSON(t *testing.T, data []byte, o *engine.Order) {
	t.Helper()
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("encoding/json cannot read what DecodeOrder accepted: %v", err)
	}
	str := func(m map[string]any, k string) string { s, _ := m[k].(string); return s }
	buyer, _ := m["buyer"].(map[string]any)
	for _, c := range []struct{ field, got, want string }{
		{"order_id", o.OrderID, str(m, "order_id")},
		{"program", o.Program, str(m, "program")},
		{"affiliate_id", o.AffiliateID, str(m, "affiliate_id")},
		{"status", string(o.Status), str(m, "status")},
		{"traffic_country", o.TrafficCountry, str(m, "traffic_country")},
		{"currency", o.Currency.Code, str(m, "currency")},
		{"buyer.id", o.Buyer.ID, str(buyer, "id")},
		{"buyer.country", o.Buyer.Country, str(buyer, "country")},
	} {
		if c.got != c.want {
			t.Fatalf("%s: DecodeOrder read %q, encoding/json %q, from %q", c.field, c.got, c.want, data)
		}
	}
	checkAmount(t, data, "amount", &o.Amount, m["amount"])
	checkAmount(t, data, "refunded_amount", &o.RefundedAmount, m["refunded_amount"])
	items, _ := m["items"].([]any)
	if len(items) != len(o.Items) {
		t.Fatalf("items: DecodeOrder read %d, encoding/json %d", len(o.Items), len(items))
	}
	for i, it := range items {
		im, _ := it.(map[string]any)
		if o.Items[i].SKU != str(im, "sku") || o.Items[i].Category != str(im, "category") {
			t.Fatalf("items[%d]: DecodeOrder read %q/%q, encoding/json %q/%q", i, o.Items[i].SKU, o.Items[i].Category, str(im, "sku"), str(im, "category"))
		}
		checkAmount(t, data, fmt.Sprintf("items[%d].amount", i), &o.Items[i].Amount, im["amount"])
	}
}

// checkAmount compares an amount DecodeOrder read with the value encoding/json read for it (a
// string or a json.Number): the same number, whatever its notation. An absent or null amount is
// not compared.
func checkAmount(t *testing.T, data []byte, field string, got *apd.Decimal, v any) {
	t.Helper()
	var text string
	switch x := v.(type) {
	case string:
		text = x
	case json.Number:
		text = x.String()
	default:
		return
	}
	var want apd.Decimal
	if _, _, err := want.SetString(text); err != nil {
		t.Fatalf("%s: DecodeOrder read %s, encoding/json %q, which is not a decimal, from %q", field, got.Text('f'), text, data)
	}
	if got.Cmp(&want) != 0 {
		t.Fatalf("%s: DecodeOrder read %s, encoding/json %s, from %q", field, got.Text('f'), want.Text('f'), data)
	}
}

// checkInvariants checks what every accepted order must hold.
func checkInvariants(t *testing.T, o *engine.Order) {
	t.Helper()
	if o.OrderID == "" || o.Program == "" || o.AffiliateID == "" || o.Buyer.ID == "" {
		t.Fatalf("accepted an order with an empty required field: %+v", o)
	}
	if _, ok := engine.LookupCurrency(o.Currency.Code); !ok || !engine.KnownCountry(o.Buyer.Country) {
		t.Fatalf("accepted currency %q, buyer country %q", o.Currency.Code, o.Buyer.Country)
	}
	if o.Amount.Negative || o.RefundedAmount.Negative || o.RefundedAmount.Cmp(&o.Amount) > 0 {
		t.Fatalf("accepted amount %s, refunded %s", o.Amount.Text('f'), o.RefundedAmount.Text('f'))
	}
	if o.Amount.Exponent < -o.Currency.MinorUnits || o.RefundedAmount.Exponent < -o.Currency.MinorUnits {
		t.Fatalf("accepted amount %s / refunded %s with more decimals than %s has", o.Amount.Text('f'), o.RefundedAmount.Text('f'), o.Currency.Code)
	}
	for i, it := range o.Items {
		if it.Quantity < 1 || it.Amount.Negative || it.SKU == "" {
			t.Fatalf("accepted items[%d] %+v", i, it)
		}
	}
}

// fuzzOrderSeeds returns valid and invalid orders: the seed policy's examples, a spread of
// markets and outcomes, and documents broken in the ways DecodeOrder must reject.
func fuzzOrderSeeds(f *testing.F) []string {
	src, err := os.ReadFile("../policies/alibaba/v1.yaml")
	if err != nil {
		f.Fatal(err)
	}
	p, ps := rules.Compile("v1.yaml", src)
	if p == nil {
		f.Fatal(ps)
	}
	var seeds []string
	for _, tc := range p.Tests {
		seeds = append(seeds, string(tc.Order))
	}
	seeds = append(seeds, mixedOrders()...)
	seeds = append(seeds,
		orderJSON(`order_id="a\"b\\c\/d\n\t\u00e9\ud83d\ude00"`),
		orderJSON(`order_id="x\ud800\u0041y"`),
		orderJSON(`amount=1.5e2`),
		orderJSON(`amount=-0.01`),
		orderJSON(`amount=" 12.00"`),
		orderJSON(`items=[{"sku":"s","quantity":99999999999999999999}]`),
		orderJSON(`extra={"nested":[1,2.5e3,{"a":null,"b":[true,false]}]}`),
		strings.Replace(orderJSON(), `"items":[`, `"items":[{"sku":"a"}],"items":[`, 1),
		orderJSON()+"{}",
		orderJSON()[:57],
		`{"x":`+strings.Repeat("[", 40)+strings.Repeat("]", 40)+`}`,
		"", "null", "[]", `"order"`, "{}", `{"order_id":"a`+"\xff"+`"}`,
	)
	return seeds
}

// FuzzOrderFields varies the values of a valid order's fields (amounts, currency, countries,
// timestamps, a category) rather than its bytes, to reach validation and the rules more often than
// FuzzDecodeOrder does. The same properties hold.
//
//	go test ./engine -run '^$' -fuzz FuzzOrderFields -fuzztime 60s
func FuzzOrderFields(f *testing.F) {
	f.Add("2941.00", "0", "USD", "US", true, "US", "2025-03-10T12:00:00Z", "2025-03-01T12:00:00Z", "electronics", false)
	f.Add("11111", "0", "JPY", "JP", false, "HK", "2025-03-31T09:00:00-03:00", "2025-03-01T13:00:00+01:00", "Weapons", false)
	f.Add("99999999999999999999.99", "0.01", "KWD", "KW", true, "CN", "2025-06-01T00:00:00Z", "", "drugs", true)
	f.Add("1e-3", "-0", "CLF", "XX", true, "", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999+14:00", "", true)
	f.Add("0.05", "0.05", "USD", "GB", false, "TW", "2025-01-01T00:00:00Z", "2025-01-01T00:00:00Z", "adult", false)
	e := engine.New(seedSet(f))
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, amount, refunded, currency, country string, isNew bool, traffic, placedAt, clickAt, category string, amountAsNumber bool) {
		q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
		amountJSON := q(amount)
		if amountAsNumber {
			amountJSON = amount
		}
		newJSON := "false"
		if isNew {
			newJSON = "true"
		}
		data := []byte(orderJSON(
			"amount="+amountJSON, "refunded_amount="+q(refunded), "currency="+q(currency),
			`buyer={"id":"b","country":`+q(country)+`,"new":`+newJSON+`}`,
			"traffic_country="+q(traffic), "placed_at="+q(placedAt), "click_at="+q(clickAt),
			`items=[{"sku":"s","category":`+q(category)+`}]`,
		))
		o, err := engine.DecodeOrder(data)
		if err != nil {
			var ie *engine.InputError
			if !errors.As(err, &ie) || ie.Field == "" && json.Valid(data) && !strings.Contains(ie.Msg, "JSON") {
				t.Fatalf("got %T %v, want an *InputError naming a field", err, err)
			}
			return
		}
		if !json.Valid(data) {
			t.Fatalf("DecodeOrder accepted %q, which encoding/json says is not valid JSON", data)
		}
		checkAgainstEncodingJSON(t, data, o)
		checkInvariants(t, o)
		d1, err1 := e.Decide(ctx, o)
		d2, err2 := e.Decide(ctx, o)
		if (err1 == nil) != (err2 == nil) || (err1 != nil && err1.Error() != err2.Error()) {
			t.Fatalf("deciding twice: got errors %v and %v", err1, err2)
		}
		if err1 != nil {
			return
		}
		if b1, b2 := d1.AppendJSON(nil, true), d2.AppendJSON(nil, true); !bytes.Equal(b1, b2) || !json.Valid(b1) {
			t.Fatalf("deciding twice: got\n%s\nand\n%s", b1, b2)
		}
		if d1.Commission.Negative || d1.Commission.Exponent != -o.Currency.MinorUnits {
			t.Fatalf("got commission %s for %s, want ≥ 0 with exactly %d decimals", d1.Commission.Text('f'), o.Currency.Code, o.Currency.MinorUnits)
		}
		if !d1.Qualified && !d1.Commission.IsZero() {
			t.Fatalf("a disqualified order earns %s, want 0", d1.Commission.Text('f'))
		}
	})
}
