package rules_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/rules"
)

// policyWith writes a one-version policy with constants and one qualification rule per expression.
func policyWith(constants string, exprs ...string) string {
	var b strings.Builder
	b.WriteString("program: p\nversion: 1\neffective_from: 2025-01-01T00:00:00Z\nrounding: half_up\n")
	if constants != "" {
		b.WriteString("constants:\n" + constants)
	}
	b.WriteString("qualify:\n")
	for i, e := range exprs {
		fmt.Fprintf(&b, "  - id: q%d\n    expr: |-\n      %s\n    reason: r\n", i, e)
	}
	b.WriteString("rates:\n  - id: r\n    when: \"true\"\n    rate: \"1%\"\n")
	return b.String()
}

func mustDec(s string) *apd.Decimal {
	d, _, err := apd.NewFromString(s)
	if err != nil {
		panic(err)
	}
	return d
}

func testVars() rules.Vars {
	return rules.Vars{
		OrderID: "o-1", Program: "p", AffiliateID: "aff", Status: "completed",
		PlacedAt: time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC),
		ClickAt:  time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC), HasClick: true,
		BuyerID: "b", BuyerCountry: "US", BuyerNew: true, TrafficCountry: "HK", Currency: "USD",
		Amount: mustDec("12.50"), RefundedAmount: mustDec("0"),
		Items: []rules.Item{{SKU: "a", Category: "Weapons", Quantity: 2, Amount: mustDec("10.00")}, {SKU: "b", Category: "books", Quantity: 1, Amount: mustDec("2.50")}},
	}
}

const typedConstants = `  window: {duration: 720h}
  threshold: {decimal: "12.5"}
  small: {decimal: "0.01"}
  launch: {timestamp: 2025-03-01T00:00:00+01:00}
  max_qty: 3
  label: gold
  strict: true
  markets: [US, CA]
  qtys: [1, 2, 3]
  none: []
`

// TestRuleEvaluation compiles typed constants and expressions over the order schema, and
// evaluates them against one order's facts.
func TestRuleEvaluation(t *testing.T) {
	cases := []struct {
		expr string
		want bool
	}{
		// durations and timestamps are CEL types; constants keep their declared types
		{"order.placed_at - order.click_at <= window", true},
		{`order.placed_at - order.click_at == duration("216h")`, true},
		{"order.click_at > launch", true}, // launch is 2025-02-28T23:00:00Z
		{`launch == timestamp("2025-02-28T23:00:00Z")`, true},
		{`order.placed_at == timestamp("2025-03-10T14:00:00+02:00")`, true},
		{`order.placed_at.getHours() == 12`, true}, // in UTC: rules read no local clock
		// decimals compare by value, whatever their scale, against decimals and ints
		{"order.amount == threshold", true},
		{"order.amount >= threshold && order.amount <= threshold", true},
		{"order.amount > threshold", false},
		{"order.amount > small", true},
		{`order.amount == decimal("12.5")`, true},
		{`order.amount == decimal("12.500")`, true},
		{`order.amount == decimal("12.51")`, false},
		{`order.amount != decimal("12.51")`, true},
		{`order.amount > decimal("1e1")`, true},
		{"order.amount > 12", true},
		{"order.amount < 13", true},
		{"order.amount >= 13", false},
		{"order.amount <= 12", false},
		{"order.amount > order.refunded_amount", true},
		{"order.refunded_amount == decimal(0)", true},
		{`order.refunded_amount == decimal("0.00")`, true},
		{`decimal("99999999999999999999.99") > decimal("99999999999999999999.98")`, true},
		// ints, strings, bools and lists
		{"order.items.all(i, i.quantity <= max_qty)", true},
		{"order.items[0].quantity in qtys", true},
		{`label == "gold" && strict`, true},
		{"order.buyer.country in markets", true},
		{"!(order.traffic_country in markets)", true},
		{"size(none) == 0", true},
		{`order.items.exists(i, i.category.lowerAscii() == "weapons")`, true},
		{`order.items.exists(i, i.category == "weapons")`, false},
		{"size(order.items) == 2 && order.items[1].sku == 'b'", true},
		// order.items is a list like any other: macros and presence tests behave as CEL defines
		// them (comparing whole items or lists of them has no cost bound, so Compile refuses it)
		{`order.items.map(i, i.sku) == ["a", "b"]`, true},
		{"order.items.filter(i, i.quantity > 1).size() == 1", true},
		{`order.items.exists_one(i, i.sku == "a")`, true},
		{"has(order.items[0].sku) && size(order.items + order.items) == 4", true},
		{`order.items.all(i, i.category.lowerAscii() != "weapons")`, false},
		{"order.has_click && !order.has_completed_at", true},
		// absent timestamps read as 1970-01-01T00:00:00Z, as the schema documents
		{`order.completed_at == timestamp("1970-01-01T00:00:00Z")`, true},
	}
	exprs := make([]string, len(cases))
	for i, c := range cases {
		exprs[i] = c.expr
	}
	p, ps := rules.Compile("p.yaml", []byte(policyWith(typedConstants, exprs...)))
	if p == nil {
		t.Fatalf("got problems:\n%v", ps)
	}
	v := testVars()
	act := rules.NewActivation(&v)
	for i, c := range cases {
		t.Run(c.expr, func(t *testing.T) {
			got, err := p.Qualify[i].Eval(context.Background(), act)
			if err != nil {
				t.Fatalf("got error %v, want %t", err, c.want)
			}
			if got != c.want {
				t.Errorf("got %t, want %t", got, c.want)
			}
		})
	}
}

// TestConstants checks how each constant is typed, and what is refused.
func TestConstants(t *testing.T) {
	p, ps := rules.Compile("p.yaml", []byte(policyWith(typedConstants, "true")))
	if p == nil {
		t.Fatalf("got problems:\n%v", ps)
	}
	var got []string
	for _, c := range p.Constants {
		got = append(got, fmt.Sprintf("%s %s = %s", c.Name, c.Type, c.Text))
	}
	want := []string{
		`label string = "gold"`,
		`launch google.protobuf.Timestamp = timestamp("2025-03-01T00:00:00+01:00")`,
		`markets list(string) = ["US", "CA"]`,
		`max_qty int = 3`,
		`none list(string) = []`,
		`qtys list(int) = [1, 2, 3]`,
		`small commissioner.Decimal = decimal("0.01")`,
		`strict bool = true`,
		`threshold commissioner.Decimal = decimal("12.5")`,
		`window google.protobuf.Duration = duration("720h")`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got constants\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	bad := []struct {
		name, constants, code, want string
	}{
		{"a float", "  rate: 0.1\n", rules.CodeInvalid, `rate: write a decimal as {decimal: "0.1"}`},
		{"a mixed list", "  l: [a, 1]\n", rules.CodeInvalid, "l: a list mixes strings and numbers"},
		{"a list of floats", "  l: [1.5]\n", rules.CodeInvalid, "l: list items must be strings or whole numbers"},
		{"a nested list", "  l: [[a]]\n", rules.CodeType, "l: a list constant holds strings or whole numbers"},
		{"a bad duration", "  w: {duration: 30 days}\n", rules.CodeInvalid, `w: "30 days" is not a duration`},
		{"a bad decimal", "  d: {decimal: ten}\n", rules.CodeInvalid, `d: "ten" is not a decimal number`},
		{"a bad timestamp", "  ts: {timestamp: 2025-13-01}\n", rules.CodeInvalid, `ts: "2025-13-01" is not an RFC 3339 timestamp`},
		{"an unknown type", "  x: {money: 5}\n", rules.CodeUnknownKey, `x: unknown constant type "money"`},
		{"two types", "  x: {duration: 1h, decimal: \"1\"}\n", rules.CodeType, "x: a typed constant is one of"},
		{"a bad name", "  Bad-Name: 1\n", rules.CodeInvalid, `constant name "Bad-Name" must be lower-case`},
		{"the order's name", "  order: 1\n", rules.CodeInvalid, `constant name "order" clashes with the order schema`},
		{"an int beyond int64", "  n: 99999999999999999999\n", rules.CodeInvalid, `n: write a decimal as {decimal: "99999999999999999999"}`},
		{"a null", "  n: null\n", rules.CodeInvalid, "n: !!null values are not supported"},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			p, ps := rules.Compile("p.yaml", []byte(policyWith(c.constants, "true")))
			if p != nil {
				t.Errorf("got a policy, want problems")
			}
			if len(ps) != 1 || ps[0].Code != c.code || ps[0].Rule != "constants" || !strings.Contains(ps[0].Message, c.want) || ps[0].Line != 6 {
				t.Errorf("got %v (code %v), want one %s problem at line 6 in constants containing %q", problemLines(ps), problemCodes(ps), c.code, c.want)
			}
		})
	}
}

// TestDecimalTypeChecks checks that rules cannot mix decimals with floats, strings or == on ints.
func TestDecimalTypeChecks(t *testing.T) {
	cases := []struct{ expr, code, want string }{
		{"order.amount > 1.5", rules.CodeCELType, "found no matching overload for '_>_' applied to '(commissioner.Decimal, double)'"},
		{`order.amount < "10"`, rules.CodeCELType, "found no matching overload for '_<_' applied to '(commissioner.Decimal, string)'"},
		{"order.amount == 0", rules.CodeCELType, "amounts are exact decimals, compare with decimal(0)"},
		{"order.amount + order.refunded_amount > decimal(0)", rules.CodeCELType, "found no matching overload for '_+_'"},
		{"order.amount", rules.CodeCELType, "the expression must be a bool, it is commissioner.Decimal"},
		{"decimal(1.5) > order.amount", rules.CodeCELType, "found no matching overload for 'decimal' applied to '(double)'"},
		{"order.items[0].amount > decimal(0)", rules.CodeCELType, "undefined field 'amount'"},
		{"order.buyer.new == 1", rules.CodeCELType, "found no matching overload for '_==_' applied to '(bool, int)'"},
		{"now() > order.placed_at", rules.CodeCELType, "undeclared reference to 'now'"},
	}
	for _, c := range cases {
		t.Run(c.expr, func(t *testing.T) {
			p, ps := rules.Compile("p.yaml", []byte(policyWith("", c.expr)))
			if p != nil {
				t.Fatalf("got a policy, want a type error")
			}
			if len(ps) == 0 || ps[0].Code != c.code || ps[0].Rule != "q0" || !strings.Contains(ps[0].Message, c.want) {
				t.Errorf("got %v (code %v), want %s in rule q0: …%s…", problemLines(ps), problemCodes(ps), c.code, c.want)
			}
		})
	}
	// a decimal() of a string that is not a number is an evaluation error, never a pass or a fail
	p, ps := rules.Compile("p.yaml", []byte(policyWith("", `order.amount > decimal("ten")`)))
	if p == nil {
		t.Fatalf("got %v, want the policy to compile", ps)
	}
	v := testVars()
	if got, err := p.Qualify[0].Eval(context.Background(), rules.NewActivation(&v)); err == nil || !strings.Contains(err.Error(), "rule q0") {
		t.Errorf("got %t, %v, want an error naming rule q0", got, err)
	}
}

// TestCostLimit refuses a rule whose estimated cost is unbounded or too high, and accepts one
// iterating over the items once.
func TestCostLimit(t *testing.T) {
	cases := []struct {
		expr string
		ok   bool
	}{
		{`order.items.exists(i, i.category.lowerAscii() in ["a", "b"])`, true},
		{`order.items.all(i, order.items.all(j, order.items.all(k, i.sku != k.sku || j.sku != k.sku)))`, false},
		{`order.items.all(i, order.items.exists(j, order.items.exists(k, i.quantity + j.quantity == k.quantity)))`, false},
		{`order.items.map(i, order.items.map(j, order.items.map(k, i.sku + j.sku + k.sku))).size() > 0`, false},
	}
	for _, c := range cases {
		t.Run(c.expr, func(t *testing.T) {
			p, ps := rules.Compile("p.yaml", []byte(policyWith("", c.expr)))
			if c.ok && p == nil {
				t.Fatalf("got %v, want the rule accepted", problemLines(ps))
			}
			if !c.ok {
				if p != nil {
					t.Fatalf("got the rule accepted, want it refused for its cost")
				}
				if len(ps) != 1 || ps[0].Code != rules.CodeCost || ps[0].Rule != "q0" {
					t.Errorf("got %v (code %v), want one %s problem in rule q0", problemLines(ps), problemCodes(ps), rules.CodeCost)
				}
			}
		})
	}
}

// TestAbsentTimestamps checks that a rule reading an absent click or completion sees
// 1970-01-01T00:00:00Z, so arithmetic on it works (a zero time.Time would overflow a duration).
func TestAbsentTimestamps(t *testing.T) {
	p, ps := rules.Compile("p.yaml", []byte(policyWith(typedConstants,
		"order.placed_at - order.click_at > window",
		`order.click_at == timestamp("1970-01-01T00:00:00Z")`,
		"order.completed_at < order.placed_at")))
	if p == nil {
		t.Fatalf("got problems:\n%v", ps)
	}
	v := testVars()
	v.HasClick, v.ClickAt = false, time.Time{}
	v.HasCompletedAt, v.CompletedAt = false, time.Time{}
	act := rules.NewActivation(&v)
	for _, r := range p.Qualify {
		got, err := r.Eval(context.Background(), act)
		if err != nil || !got {
			t.Errorf("%s: got %t, %v, want true", r.Expr, got, err)
		}
	}
}

// TestLowerASCII checks lowerAscii against ext.Strings' definition (runes, ASCII letters
// lowered, invalid UTF-8 bytes turned into U+FFFD), which the faster binding must match.
func TestLowerASCII(t *testing.T) {
	reference := func(s string) string {
		runes := []rune(s)
		for i, r := range runes {
			if r <= unicode.MaxASCII {
				runes[i] = unicode.ToLower(r)
			}
		}
		return string(runes)
	}
	p, ps := rules.Compile("p.yaml", []byte(policyWith("", "order.buyer.id.lowerAscii() == order.affiliate_id")))
	if p == nil {
		t.Fatalf("got problems %v", ps)
	}
	for _, s := range []string{"", "weapons", "Weapons", "PRESCRIPTION_MEDICINE", "TacoCÆt Xii", "ÀÉÎ abc XYZ", "注文ABC",
		"a\xffB", "\xc3", "Z\xe2\x82", "@[`{", "already lower 123"} {
		v := testVars()
		v.BuyerID, v.AffiliateID = s, reference(s)
		got, err := p.Qualify[0].Eval(context.Background(), rules.NewActivation(&v))
		if err != nil || !got {
			t.Errorf("%q.lowerAscii(): got a different result from %q (%v)", s, reference(s), err)
		}
	}
}

// TestRuntimeCostLimit checks that the runtime limit still stops a rule on facts larger than the
// cost estimate assumed (more than MaxItems items, which DecodeOrder never lets through), while
// the same rule runs on an order within the bounds.
func TestRuntimeCostLimit(t *testing.T) {
	p, ps := rules.Compile("p.yaml", []byte(policyWith("", `order.items.all(i, i.sku.lowerAscii().startsWith("sku") && i.category.size() >= 0)`)))
	if p == nil {
		t.Fatalf("got problems %v", ps)
	}
	items := func(n int) []rules.Item {
		out := make([]rules.Item, n)
		for i := range out {
			out[i] = rules.Item{SKU: "SKU-" + strings.Repeat("x", 200), Category: "c", Quantity: 1, Amount: mustDec("1")}
		}
		return out
	}
	v := testVars()
	v.Items = items(rules.MaxItems)
	if got, err := p.Qualify[0].Eval(context.Background(), rules.NewActivation(&v)); err != nil || !got {
		t.Errorf("%d items: got %t, %v, want true", rules.MaxItems, got, err)
	}
	v.Items = items(100 * rules.MaxItems)
	if got, err := p.Qualify[0].Eval(context.Background(), rules.NewActivation(&v)); err == nil || !strings.Contains(err.Error(), "cost limit exceeded") {
		t.Errorf("%d items: got %t, %v, want the cost limit exceeded", 100*rules.MaxItems, got, err)
	}
	// a string longer than MaxStringLen is also outside the estimate
	v.Items = items(1)
	v.OrderID = strings.Repeat("x", rules.MaxStringLen+1)
	if got, err := p.Qualify[0].Eval(context.Background(), rules.NewActivation(&v)); err != nil || !got {
		t.Errorf("a long order id: got %t, %v, want true (the limited program, well under its limit)", got, err)
	}
}

// TestEvalHonoursContext checks that a cancelled context stops evaluation with its error.
func TestEvalHonoursContext(t *testing.T) {
	p, ps := rules.Compile("p.yaml", []byte(policyWith("", "true")))
	if p == nil {
		t.Fatalf("got problems %v", ps)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	v := testVars()
	if _, err := p.Qualify[0].Eval(ctx, rules.NewActivation(&v)); !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
}
