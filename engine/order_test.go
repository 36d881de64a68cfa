package engine_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/commissioner/commissioner/engine"
)

// baseFields is a valid order as (key, raw JSON value) pairs, in the order they are written.
var baseFields = [][2]string{
	{"order_id", `"o-1"`},
	{"program", `"alibaba"`},
	{"affiliate_id", `"aff-1"`},
	{"status", `"completed"`},
	{"placed_at", `"2025-03-10T12:00:00Z"`},
	{"completed_at", `"2025-03-12T08:30:00Z"`},
	{"click_at", `"2025-03-01T12:00:00Z"`},
	{"buyer", `{"id":"b-1","country":"US","new":true}`},
	{"traffic_country", `"US"`},
	{"currency", `"USD"`},
	{"amount", `"2941.00"`},
	{"refunded_amount", `"0"`},
	{"items", `[{"sku":"s-1","category":"electronics","amount":"2941.00","quantity":1}]`},
}

// orderJSON builds an order from baseFields with changes: "key=raw JSON" sets (or adds) a field,
// "-key" removes it.
func orderJSON(changes ...string) string {
	fields := append([][2]string(nil), baseFields...)
	for _, c := range changes {
		if key, ok := strings.CutPrefix(c, "-"); ok {
			for i, f := range fields {
				if f[0] == key {
					fields = append(fields[:i], fields[i+1:]...)
					break
				}
			}
			continue
		}
		key, raw, _ := strings.Cut(c, "=")
		found := false
		for i, f := range fields {
			if f[0] == key {
				fields[i][1], found = raw, true
			}
		}
		if !found {
			fields = append(fields, [2]string{key, raw})
		}
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, f := range fields {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:%s", f[0], f[1])
	}
	b.WriteByte('}')
	return b.String()
}

func TestDecodeOrderValid(t *testing.T) {
	o, err := engine.DecodeOrder([]byte(orderJSON()))
	if err != nil {
		t.Fatalf("got error %v, want none", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"order_id", o.OrderID, "o-1"},
		{"program", o.Program, "alibaba"},
		{"affiliate_id", o.AffiliateID, "aff-1"},
		{"status", o.Status, engine.StatusCompleted},
		{"placed_at", o.PlacedAt, time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)},
		{"completed_at", o.CompletedAt, time.Date(2025, 3, 12, 8, 30, 0, 0, time.UTC)},
		{"has_completed_at", o.HasCompletedAt, true},
		{"click_at", o.ClickAt, time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)},
		{"has_click", o.HasClick, true},
		{"buyer", o.Buyer, engine.Buyer{ID: "b-1", Country: "US", New: true}},
		{"traffic_country", o.TrafficCountry, "US"},
		{"currency", o.Currency, engine.Currency{Code: "USD", MinorUnits: 2}},
		{"amount", o.Amount.Text('f'), "2941.00"},
		{"refunded_amount", o.RefundedAmount.Text('f'), "0"},
		{"items", len(o.Items), 1},
		{"items[0].sku", o.Items[0].SKU, "s-1"},
		{"items[0].category", o.Items[0].Category, "electronics"},
		{"items[0].amount", o.Items[0].Amount.Text('f'), "2941.00"},
		{"items[0].quantity", o.Items[0].Quantity, int64(1)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

// TestDecodeOrderRejects feeds every kind of bad input and checks that it comes back as an
// *InputError naming the field ("" for a problem with the document as a whole).
func TestDecodeOrderRejects(t *testing.T) {
	long := strings.Repeat("x", 257)
	tooManyItems := "[" + strings.TrimSuffix(strings.Repeat(`{"sku":"s"},`, 1001), ",") + "]"
	deep := strings.Repeat("[", 40) + strings.Repeat("]", 40)
	cases := []struct {
		name      string
		input     string
		wantField string
		wantMsg   string // a substring of the message
	}{
		// missing or empty required fields
		{"missing order_id", orderJSON("-order_id"), "order_id", "required"},
		{"empty order_id", orderJSON(`order_id=""`), "order_id", "must not be empty"},
		{"missing program", orderJSON("-program"), "program", "required"},
		{"empty program", orderJSON(`program=""`), "program", "must not be empty"},
		{"missing affiliate_id", orderJSON("-affiliate_id"), "affiliate_id", "required"},
		{"empty affiliate_id", orderJSON(`affiliate_id=""`), "affiliate_id", "must not be empty"},
		{"missing status", orderJSON("-status"), "status", "required"},
		{"empty status", orderJSON(`status=""`), "status", "must not be empty"},
		{"missing placed_at", orderJSON("-placed_at"), "placed_at", "required"},
		{"missing buyer", orderJSON("-buyer"), "buyer", "required"},
		{"missing buyer.id", orderJSON(`buyer={"country":"US","new":true}`), "buyer.id", "required"},
		{"empty buyer.id", orderJSON(`buyer={"id":"","country":"US","new":true}`), "buyer.id", "required"},
		{"missing buyer.country", orderJSON(`buyer={"id":"b","new":true}`), "buyer.country", "required"},
		{"missing buyer.new", orderJSON(`buyer={"id":"b","country":"US"}`), "buyer.new", "required"},
		{"missing currency", orderJSON("-currency"), "currency", "required"},
		{"empty currency", orderJSON(`currency=""`), "currency", "must not be empty"},
		{"missing amount", orderJSON("-amount"), "amount", "required"},
		{"missing item sku", orderJSON(`items=[{"category":"c","amount":"1.00"}]`), "items[0].sku", "required"},
		{"order_id too long", orderJSON(`order_id="` + long + `"`), "order_id", "longer than 256"},
		{"buyer.id too long", orderJSON(`buyer={"id":"` + long + `","country":"US","new":true}`), "buyer.id", "longer than 256"},
		{"sku too long", orderJSON(`items=[{"sku":"` + long + `"}]`), "items[0]", "at most 256"},

		// wrong types
		{"order_id a number", orderJSON(`order_id=12`), "order_id", "must be a string"},
		{"program null", orderJSON(`program=null`), "program", "must be a string"},
		{"affiliate_id an object", orderJSON(`affiliate_id={}`), "affiliate_id", "must be a string"},
		{"status a list", orderJSON(`status=["completed"]`), "status", "must be a string"},
		{"placed_at a number", orderJSON(`placed_at=1741608000`), "placed_at", "must be a string"},
		{"click_at a bool", orderJSON(`click_at=true`), "click_at", "must be a string"},
		{"buyer a string", orderJSON(`buyer="b-1"`), "buyer", "must be an object"},
		{"buyer.id a number", orderJSON(`buyer={"id":1,"country":"US","new":true}`), "buyer.id", "must be a string"},
		{"buyer.country a number", orderJSON(`buyer={"id":"b","country":840,"new":true}`), "buyer.country", "must be a string"},
		{"buyer.new a string", orderJSON(`buyer={"id":"b","country":"US","new":"yes"}`), "buyer.new", "must be true or false"},
		{"buyer.new null", orderJSON(`buyer={"id":"b","country":"US","new":null}`), "buyer.new", "must be true or false"},
		{"traffic_country a number", orderJSON(`traffic_country=1`), "traffic_country", "must be a string"},
		{"currency a number", orderJSON(`currency=840`), "currency", "must be a string"},
		{"amount a bool", orderJSON(`amount=true`), "amount", "decimal"},
		{"amount null", orderJSON(`amount=null`), "amount", "decimal"},
		{"amount an object", orderJSON(`amount={"value":"1"}`), "amount", "decimal"},
		{"refunded_amount a list", orderJSON(`refunded_amount=[1]`), "refunded_amount", "decimal"},
		{"items an object", orderJSON(`items={"sku":"s"}`), "items", "must be a list"},
		{"items a string", orderJSON(`items="s-1"`), "items", "must be a list"},
		{"item a number", orderJSON(`items=[1]`), "items[0]", "must be an object"},
		{"second item a string", orderJSON(`items=[{"sku":"a"},"b"]`), "items[1]", "must be an object"},
		{"item sku a number", orderJSON(`items=[{"sku":5}]`), "items[0].sku", "must be a string"},
		{"item category a bool", orderJSON(`items=[{"sku":"s","category":false}]`), "items[0].category", "must be a string"},
		{"item quantity a string", orderJSON(`items=[{"sku":"s","quantity":"2"}]`), "items[0].quantity", "whole number"},
		{"item quantity a fraction", orderJSON(`items=[{"sku":"s","quantity":1.5}]`), "items[0].quantity", "whole number"},
		{"item quantity with an exponent", orderJSON(`items=[{"sku":"s","quantity":1e2}]`), "items[0].quantity", "whole number"},
		{"item quantity zero", orderJSON(`items=[{"sku":"s","quantity":0}]`), "items[0].quantity", "at least 1"},
		{"item quantity negative", orderJSON(`items=[{"sku":"s","quantity":-3}]`), "items[0].quantity", "at least 1"},
		{"item quantity beyond int64", orderJSON(`items=[{"sku":"s","quantity":99999999999999999999}]`), "items[0].quantity", "whole number"},
		{"too many items", orderJSON("items=" + tooManyItems), "items", "more than 1000 items"},

		// unknown values
		{"unknown status", orderJSON(`status="shipped"`), "status", `"shipped" is not one of`},
		{"status in capitals", orderJSON(`status="COMPLETED"`), "status", "is not one of"},
		{"unknown currency", orderJSON(`currency="XYZ"`), "currency", `"XYZ" is not an ISO 4217 currency code`},
		{"currency in lower case", orderJSON(`currency="usd"`), "currency", "is not an ISO 4217"},
		{"unknown buyer country", orderJSON(`buyer={"id":"b","country":"XX","new":true}`), "buyer.country", `"XX" is not an ISO 3166-1`},
		{"buyer country in lower case", orderJSON(`buyer={"id":"b","country":"us","new":true}`), "buyer.country", "is not an ISO 3166-1"},
		{"buyer country alpha-3", orderJSON(`buyer={"id":"b","country":"USA","new":true}`), "buyer.country", "is not an ISO 3166-1"},
		{"empty buyer country", orderJSON(`buyer={"id":"b","country":"","new":true}`), "buyer.country", "is not an ISO 3166-1"},
		{"unknown traffic country", orderJSON(`traffic_country="ZZ"`), "traffic_country", `"ZZ" is not an ISO 3166-1`},

		// amounts
		{"negative amount", orderJSON(`amount="-1.00"`), "amount", "negative"},
		{"negative amount as a number", orderJSON(`amount=-0.01`), "amount", "negative"},
		{"non-decimal amount", orderJSON(`amount="abc"`), "amount", "not a decimal number"},
		{"empty amount", orderJSON(`amount=""`), "amount", "not a decimal number"},
		{"amount with two points", orderJSON(`amount="1.2.3"`), "amount", "not a decimal number"},
		{"amount with a plus sign", orderJSON(`amount="+1.00"`), "amount", "not a decimal number"},
		{"amount with a comma", orderJSON(`amount="1,000.00"`), "amount", "not a decimal number"},
		{"amount NaN", orderJSON(`amount="NaN"`), "amount", "not a decimal number"},
		{"amount Infinity", orderJSON(`amount="Infinity"`), "amount", "not a decimal number"},
		{"amount with a currency sign", orderJSON(`amount="$12.00"`), "amount", "not a decimal number"},
		{"amount with a leading zero", orderJSON(`amount="01.50"`), "amount", "not a decimal number"},
		{"amount with a trailing point", orderJSON(`amount="1."`), "amount", "not a decimal number"},
		{"amount with a leading point", orderJSON(`amount=".5"`), "amount", "not a decimal number"},
		{"amount with spaces", orderJSON(`amount=" 12.00"`), "amount", "not a decimal number"},
		{"amount with a trailing space", orderJSON(`amount="12.00 "`), "amount", "not a decimal number"},
		{"USD amount with three decimals", orderJSON(`amount="12.345"`), "amount", "more decimal places than USD allows (2)"},
		{"USD amount number with three decimals", orderJSON(`amount=12.345`), "amount", "more decimal places than USD allows (2)"},
		{"JPY amount with decimals", orderJSON(`currency="JPY"`, `amount="100.5"`, "-items"), "amount", "more decimal places than JPY allows (0)"},
		{"KWD amount with four decimals", orderJSON(`currency="KWD"`, `amount="0.0001"`, "-items"), "amount", "more decimal places than KWD allows (3)"},
		{"amount too large", orderJSON(`amount="` + strings.Repeat("9", 41) + `"`), "amount", "more than 40 digits"},
		{"amount in exponent notation", orderJSON(`amount="1e3"`), "amount", `1e3 is in exponent notation: write a plain decimal such as "1000"`},
		{"amount as a JSON number in exponent notation", orderJSON(`amount=1.5e2`), "amount", "1.5e2 is in exponent notation"},
		{"item amount in exponent notation", orderJSON(`items=[{"sku":"s","amount":"2E1"}]`), "items[0].amount", "2E1 is in exponent notation"},
		{"5 000-digit amount, not echoed whole", orderJSON(`amount="` + strings.Repeat("1", 5000) + `"`), "amount",
			strings.Repeat("1", 32) + "… (5000 characters) is longer than 64 characters"},
		{"5 000-byte timestamp, not echoed whole", orderJSON(`placed_at="` + strings.Repeat("2", 5000) + `"`), "placed_at",
			`"` + strings.Repeat("2", 32) + `"… (5000 bytes) is not an RFC 3339 timestamp`},
		{"empty event_id", orderJSON(`event_id=""`), "event_id", "must not be empty"},
		{"event_id not a string", orderJSON(`event_id=7`), "event_id", "must be a string"},
		{"updated_at not a timestamp", orderJSON(`updated_at="yesterday"`), "updated_at", "not an RFC 3339 timestamp"},
		{"amount with a huge exponent", orderJSON(`amount=1e999999999`), "amount", ""},
		{"negative refunded_amount", orderJSON(`refunded_amount="-5"`), "refunded_amount", "negative"},
		{"non-decimal refunded_amount", orderJSON(`refunded_amount="five"`), "refunded_amount", "not a decimal number"},
		{"refunded_amount over the amount", orderJSON(`refunded_amount="2941.01"`), "refunded_amount", "more than the amount 2941.00"},
		{"refunded_amount with three decimals", orderJSON(`refunded_amount="0.001"`), "refunded_amount", "more decimal places"},
		{"negative item amount", orderJSON(`items=[{"sku":"s","amount":"-2"}]`), "items[0].amount", "negative"},
		{"item amount with three decimals", orderJSON(`items=[{"sku":"a","amount":"1"},{"sku":"s","amount":"1.001"}]`), "items[1].amount", "more decimal places"},
		{"non-decimal item amount", orderJSON(`items=[{"sku":"s","amount":"x"}]`), "items[0].amount", "not a decimal number"},

		// timestamps
		{"placed_at a date only", orderJSON(`placed_at="2025-03-10"`), "placed_at", "not an RFC 3339 timestamp"},
		{"placed_at without a zone", orderJSON(`placed_at="2025-03-10T12:00:00"`), "placed_at", "not an RFC 3339 timestamp"},
		{"placed_at with a bad month", orderJSON(`placed_at="2025-13-10T12:00:00Z"`), "placed_at", "not an RFC 3339 timestamp"},
		{"placed_at on a day that does not exist", orderJSON(`placed_at="2025-02-30T12:00:00Z"`), "placed_at", "not an RFC 3339 timestamp"},
		{"placed_at with a space", orderJSON(`placed_at="2025-03-10 12:00:00Z"`), "placed_at", "not an RFC 3339 timestamp"},
		{"placed_at unix text", orderJSON(`placed_at="1741608000"`), "placed_at", "not an RFC 3339 timestamp"},
		{"placed_at empty", orderJSON(`placed_at=""`), "placed_at", "not an RFC 3339 timestamp"},
		{"placed_at null", orderJSON(`placed_at=null`), "placed_at", "must be a string"},
		{"click_at malformed", orderJSON(`click_at="yesterday"`), "click_at", "not an RFC 3339 timestamp"},
		{"completed_at malformed", orderJSON(`completed_at="2025-03-12T25:00:00Z"`), "completed_at", "not an RFC 3339 timestamp"},

		// the document as a whole
		{"empty input", "", "", "empty input"},
		{"only spaces", " \n\t ", "", "empty input"},
		{"truncated", orderJSON()[:40], "", "malformed JSON"},
		{"unclosed object", `{"order_id":"o-1"`, "", "malformed JSON"},
		{"missing colon", `{"order_id" "o-1"}`, "", "malformed JSON"},
		{"trailing comma", `{"order_id":"o-1",}`, "", "malformed JSON"},
		{"single quotes", `{'order_id':'o-1'}`, "", "malformed JSON"},
		{"unquoted key", `{order_id:"o-1"}`, "", "malformed JSON"},
		{"bad literal in an unknown field", `{"x":tru}`, "", "malformed JSON"},
		{"bad number in an unknown field", `{"x":-}`, "", "malformed JSON"},
		{"nested too deeply in an unknown field", `{"x":` + deep + `}`, "", "nested too deeply"},
		{"trailing data", orderJSON() + `{}`, "", "data after the order object"},
		{"trailing garbage", orderJSON() + ` x`, "", "data after the order object"},
		{"two orders on a line", orderJSON() + orderJSON(), "", "data after the order object"},
		{"a list", `[` + orderJSON() + `]`, "", "must be a JSON object"},
		{"a string", `"order"`, "", "must be a JSON object"},
		{"a number", `42`, "", "must be a JSON object"},
		{"null", `null`, "", "must be a JSON object"},
		{"true", `true`, "", "must be a JSON object"},
		{"garbage", `hello`, "", "malformed JSON"},
		{"control character in a string", `{"order_id":"a` + "\x01" + `b"}`, "order_id", "control character"},
		{"invalid UTF-8 in a string", `{"order_id":"a` + "\xff" + `b"}`, "order_id", "invalid UTF-8"},
		{"bad escape", `{"order_id":"a\qb"}`, "order_id", "bad escape"},
		{"bad unicode escape", `{"order_id":"a\u12"}`, "order_id", `bad \u escape`},
		{"key not a string", `{1:"a"}`, "", "expected a key"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o, err := engine.DecodeOrder([]byte(c.input))
			if err == nil {
				t.Fatalf("got order %+v, want an error naming %q", o, c.wantField)
			}
			if o != nil {
				t.Errorf("got an order with the error, want nil")
			}
			var ie *engine.InputError
			if !errors.As(err, &ie) {
				t.Fatalf("got %T %v, want *engine.InputError", err, err)
			}
			if ie.Field != c.wantField {
				t.Errorf("got field %q, want %q (error %q)", ie.Field, c.wantField, err)
			}
			if !strings.Contains(ie.Msg, c.wantMsg) {
				t.Errorf("got message %q, want one containing %q", ie.Msg, c.wantMsg)
			}
			if !errors.Is(err, engine.ErrInvalidOrder) {
				t.Errorf("got errors.Is(err, ErrInvalidOrder) false, want true")
			}
			if c.wantField != "" && !strings.HasPrefix(err.Error(), c.wantField+": ") {
				t.Errorf("got error %q, want it to start with %q", err, c.wantField+": ")
			}
		})
	}
}

// TestDecodeOrderKeepsOrderID checks that a rejected order still names itself when its id was read.
func TestDecodeOrderKeepsOrderID(t *testing.T) {
	_, err := engine.DecodeOrder([]byte(orderJSON(`currency="XYZ"`)))
	var ie *engine.InputError
	if !errors.As(err, &ie) {
		t.Fatalf("got %v, want an *InputError", err)
	}
	if ie.OrderID != "o-1" {
		t.Errorf("got order id %q, want %q", ie.OrderID, "o-1")
	}
}

// TestDecodeOrderAccepts covers inputs that are unusual but valid.
func TestDecodeOrderAccepts(t *testing.T) {
	cases := []struct {
		name  string
		input string
		check func(t *testing.T, o *engine.Order)
	}{
		{"amount as a JSON number 0.1 stays exact", orderJSON(`amount=0.1`), func(t *testing.T, o *engine.Order) {
			wantText(t, "amount", o.Amount.Text('f'), "0.1")
		}},
		{"amount as a JSON number beyond float64 stays exact", orderJSON(`amount=99999999999999999999.99`, "-items"), func(t *testing.T, o *engine.Order) {
			wantText(t, "amount", o.Amount.Text('f'), "99999999999999999999.99")
		}},
		{"amount as a string beyond float64 stays exact", orderJSON(`amount="12345678901234567890.12"`, "-items"), func(t *testing.T, o *engine.Order) {
			wantText(t, "amount", o.Amount.Text('f'), "12345678901234567890.12")
		}},
		{"amount of 40 digits", orderJSON(`currency="JPY"`, `amount="`+strings.Repeat("9", 40)+`"`, "-items", "-refunded_amount"), func(t *testing.T, o *engine.Order) {
			wantText(t, "amount", o.Amount.Text('f'), strings.Repeat("9", 40))
		}},
		{"amount with extra zero decimals", orderJSON(`amount="12.5000"`), func(t *testing.T, o *engine.Order) {
			wantText(t, "amount", o.Amount.Text('f'), "12.50")
		}},
		{"negative zero amount", orderJSON(`amount="-0.00"`, "-items"), func(t *testing.T, o *engine.Order) {
			wantText(t, "amount", o.Amount.Text('f'), "0.00")
		}},
		{"JPY whole amount", orderJSON(`currency="JPY"`, `amount="11111"`, "-items"), func(t *testing.T, o *engine.Order) {
			wantText(t, "currency", fmt.Sprint(o.Currency), "{JPY 0}")
			wantText(t, "amount", o.Amount.Text('f'), "11111")
		}},
		{"KWD amount with three decimals", orderJSON(`currency="KWD"`, `amount="0.500"`, "-items"), func(t *testing.T, o *engine.Order) {
			wantText(t, "currency", fmt.Sprint(o.Currency), "{KWD 3}")
			wantText(t, "amount", o.Amount.Text('f'), "0.500")
		}},
		{"CLF amount with four decimals", orderJSON(`currency="CLF"`, `amount="1.2345"`, "-items"), func(t *testing.T, o *engine.Order) {
			wantText(t, "currency", fmt.Sprint(o.Currency), "{CLF 4}")
			wantText(t, "amount", o.Amount.Text('f'), "1.2345")
		}},
		{"escapes in strings", orderJSON(`order_id="a\"b\\c\/d\n\t\b\f\r\u00e9\ud83d\ude00"`), func(t *testing.T, o *engine.Order) {
			wantText(t, "order_id", o.OrderID, "a\"b\\c/d\n\t\b\f\ré😀")
		}},
		{"a lone surrogate becomes U+FFFD", orderJSON(`order_id="x\ud800y"`), func(t *testing.T, o *engine.Order) {
			wantText(t, "order_id", o.OrderID, "x\uFFFDy")
		}},
		// found by FuzzDecodeOrder: the escape after a lone high surrogate was swallowed
		{"a high surrogate before another escape keeps that escape", orderJSON(`order_id="x\ud800\u0041y"`), func(t *testing.T, o *engine.Order) {
			wantText(t, "order_id", o.OrderID, "x\uFFFDAy")
		}},
		{"a high surrogate before a pair", orderJSON(`order_id="\ud800\ud83d\ude00"`), func(t *testing.T, o *engine.Order) {
			wantText(t, "order_id", o.OrderID, "\uFFFD😀")
		}},
		{"a lone low surrogate", orderJSON(`order_id="a\udc00b"`), func(t *testing.T, o *engine.Order) {
			wantText(t, "order_id", o.OrderID, "a\uFFFDb")
		}},
		{"unicode as written", orderJSON(`order_id="注文-1"`, `affiliate_id="Zoë"`), func(t *testing.T, o *engine.Order) {
			wantText(t, "order_id", o.OrderID, "注文-1")
			wantText(t, "affiliate_id", o.AffiliateID, "Zoë")
		}},
		{"an escaped key", strings.Replace(orderJSON(), `"order_id"`, `"order\u005fid"`, 1), func(t *testing.T, o *engine.Order) {
			wantText(t, "order_id", o.OrderID, "o-1")
		}},
		{"unknown fields are ignored", orderJSON(`extra={"nested":[1,2.5e3,{"a":null,"b":[true,false]}],"s":"\u0041"}`, `buyer={"id":"b","country":"US","new":false,"tier":"gold"}`, `items=[{"sku":"s","colour":"red","amount":"1.00"}]`), func(t *testing.T, o *engine.Order) {
			wantText(t, "buyer.id", o.Buyer.ID, "b")
			wantText(t, "items[0].sku", o.Items[0].SKU, "s")
		}},
		{"whitespace everywhere", " {\n\t\"order_id\" :\r\n \"o-1\" ," + orderJSON()[1:] + "\n\n", func(t *testing.T, o *engine.Order) {
			wantText(t, "order_id", o.OrderID, "o-1")
		}},
		{"timestamps with offsets are read as instants", orderJSON(`placed_at="2025-03-10T14:00:00+02:00"`, `click_at="2025-03-01T07:00:00.5-05:00"`), func(t *testing.T, o *engine.Order) {
			wantText(t, "placed_at", o.PlacedAt.Format(time.RFC3339Nano), "2025-03-10T12:00:00Z")
			wantText(t, "click_at", o.ClickAt.Format(time.RFC3339Nano), "2025-03-01T12:00:00.5Z")
		}},
		{"absent optional fields", orderJSON("-completed_at", "-click_at", "-traffic_country", "-refunded_amount", "-items"), func(t *testing.T, o *engine.Order) {
			if o.HasClick || o.HasCompletedAt || o.TrafficCountry != "" || !o.RefundedAmount.IsZero() || o.Items != nil {
				t.Errorf("got %+v, want no click, no completed_at, no traffic country, no refund, no items", o)
			}
		}},
		{"null optional fields", orderJSON("completed_at=null", "click_at=null", "traffic_country=null", "refunded_amount=null", "items=null"), func(t *testing.T, o *engine.Order) {
			if o.HasClick || o.HasCompletedAt || o.TrafficCountry != "" || !o.RefundedAmount.IsZero() || o.Items != nil {
				t.Errorf("got %+v, want no click, no completed_at, no traffic country, no refund, no items", o)
			}
		}},
		{"an item's quantity defaults to 1", orderJSON(`items=[{"sku":"s"}]`), func(t *testing.T, o *engine.Order) {
			if o.Items[0].Quantity != 1 {
				t.Errorf("quantity: got %d, want 1", o.Items[0].Quantity)
			}
		}},
		{"the last of duplicate keys wins", strings.Replace(orderJSON(), `"status":"completed"`, `"status":"pending","status":"completed"`, 1), func(t *testing.T, o *engine.Order) {
			wantText(t, "status", string(o.Status), "completed")
		}},
		{"a repeated items list replaces the earlier one", strings.Replace(orderJSON(), `"items":[`, `"items":[{"sku":"old-1"},{"sku":"old-2"}],"items":[`, 1), func(t *testing.T, o *engine.Order) {
			if len(o.Items) != 1 || o.Items[0].SKU != "s-1" {
				t.Errorf("items: got %+v, want the last list only", o.Items)
			}
		}},
		{"a null items after a list clears it", strings.Replace(orderJSON(), `}]}`, `}],"items":null}`, 1), func(t *testing.T, o *engine.Order) {
			if o.Items != nil {
				t.Errorf("items: got %+v, want none", o.Items)
			}
		}},
		{"every status", orderJSON(`status="refunded"`, `refunded_amount="2941.00"`), func(t *testing.T, o *engine.Order) {
			wantText(t, "status", string(o.Status), "refunded")
		}},
		{"a refund equal to the amount", orderJSON(`refunded_amount="2941"`), func(t *testing.T, o *engine.Order) {
			wantText(t, "refunded_amount", o.RefundedAmount.Text('f'), "2941")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o, err := engine.DecodeOrder([]byte(c.input))
			if err != nil {
				t.Fatalf("got error %v, want an order", err)
			}
			c.check(t, o)
		})
	}
}

func wantText(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s: got %q, want %q", what, got, want)
	}
}

// TestDecodeOrderReportsEveryProblem: an event's problems come back together, in the order the
// fields are found, so a publisher fixes them in one round trip.
func TestDecodeOrderReportsEveryProblem(t *testing.T) {
	cases := []struct {
		name  string
		input string
		want  []string // field: message prefix, in order
	}{
		{"no buyer, no placed_at, unknown currency", orderJSON("-buyer", "-placed_at", `currency="XXX"`),
			[]string{"placed_at: required", "buyer: required", `currency: "XXX" is not an ISO 4217 currency code`}},
		{"wrong types are stepped over", orderJSON(`order_id=7`, `placed_at=true`, `buyer={"id":1,"country":"ZZ","new":"yes"}`, `amount={"v":1}`),
			[]string{"order_id: must be a string", "placed_at: must be a string", "buyer.id: must be a string",
				"buyer.new: must be true or false", "amount: must be a decimal string", `buyer.country: "ZZ" is not an ISO 3166-1`}},
		{"bad items each named", orderJSON(`items=[{"sku":"","quantity":0},"x",{"sku":"b","amount":"-1"}]`),
			[]string{"items[1]: must be an object", "items[0].sku: required", "items[0].quantity: must be at least 1", "items[2].amount: -1 is negative"}},
		{"a malformed value ends the reading, keeping what was found before", orderJSON(`order_id=7`, `status="lost"`, `currency="A`+"\x01"+`"`),
			[]string{"order_id: must be a string", "currency: invalid JSON at offset"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := engine.DecodeOrder([]byte(c.input))
			var ie *engine.InputError
			if !errors.As(err, &ie) {
				t.Fatalf("got %v, want an *InputError", err)
			}
			var got []string
			for _, p := range ie.Problems() {
				got = append(got, p.String())
			}
			if len(got) != len(c.want) {
				t.Fatalf("got %d problems %q, want %d like %q", len(got), got, len(c.want), c.want)
			}
			for i := range c.want {
				if !strings.HasPrefix(got[i], c.want[i]) {
					t.Errorf("problem %d: got %q, want it to start with %q", i, got[i], c.want[i])
				}
			}
			if want := strings.Join(got, "; "); err.Error() != want {
				t.Errorf("Error() = %q, want %q", err.Error(), want)
			}
		})
	}
}
