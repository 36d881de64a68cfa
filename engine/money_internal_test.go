package engine

import (
	"math/rand"
	"strings"
	"testing"

	"github.com/cockroachdb/apd/v3"
)

// TestCommissionInt64MatchesApd checks that the int64 way of computing a rate commission gives,
// whenever it applies, exactly the decimal apd's way gives: the same digits, exponent and sign, in
// every rounding mode, for random amounts and rates and for the edges (ties, values below a tenth
// of the minor unit, zero, negative amounts, coefficients near the int64 limit).
func TestCommissionInt64MatchesApd(t *testing.T) {
	// every mode a policy can name (Round05Up it cannot, and the int64 way leaves it to apd)
	modes := []apd.Rounder{apd.RoundHalfUp, apd.RoundHalfEven, apd.RoundHalfDown, apd.RoundDown, apd.RoundUp,
		apd.RoundCeiling, apd.RoundFloor}
	if _, ok := rateCommissionInt64(apd.New(5, -2), apd.New(10, 0), 2, apd.Round05Up); ok {
		t.Error("the int64 way took Round05Up; it should leave it to apd")
	}
	currencies := []string{"USD", "JPY", "KWD", "CLF"}
	edges := [][2]string{
		{"0.05", "10"}, {"0.15", "10"}, {"0.25", "10"}, {"0.0001", "1"}, {"0.01", "1"}, {"0", "10"}, {"2941.00", "0"},
		{"-0.05", "10"}, {"-2941.07", "6"}, {"0.05", "-10"}, {"5", "10"}, {"15", "10"}, {"4.5", "1"},
		{"92233720368547758.07", "1"}, {"9223372036854775807", "100"}, {"922337203685477580.7", "10"},
		{"99999999999999999999.99", "10"}, {"1E+5", "10"}, {"123.456789", "7.25"}, {"0.000000000000000001", "50"},
	}
	r := rand.New(rand.NewSource(7))
	random := func() [2]string {
		digits := func(n int) string {
			var b strings.Builder
			for range n {
				b.WriteByte(byte('0' + r.Intn(10)))
			}
			return b.String()
		}
		amount := digits(1+r.Intn(12)) + "." + digits(r.Intn(5))
		rate := digits(1 + r.Intn(2))
		if r.Intn(2) == 0 {
			rate += "." + digits(1+r.Intn(3))
		}
		if r.Intn(10) == 0 {
			amount = "-" + amount
		}
		return [2]string{strings.TrimSuffix(amount, "."), rate}
	}
	cases := edges
	for range 20000 {
		cases = append(cases, random())
	}
	applied := 0
	for _, c := range cases {
		base, _, err := apd.NewFromString(c[0])
		if err != nil {
			t.Fatal(err)
		}
		rate, _, err := apd.NewFromString(c[1])
		if err != nil {
			t.Fatal(err)
		}
		for _, code := range currencies {
			cur, ok := LookupCurrency(code)
			if !ok {
				t.Fatalf("unknown currency %s", code)
			}
			for _, mode := range modes {
				got, ok := rateCommissionInt64(base, rate, cur.MinorUnits, mode)
				if !ok {
					continue
				}
				applied++
				want, err := commissionApd(base, rate, nil, cur, mode)
				if err != nil {
					t.Fatalf("%s × %s%% %s %s: apd: %v", c[0], c[1], code, mode, err)
				}
				if got.Text('f') != want.Text('f') || got.Exponent != want.Exponent || got.Negative != want.Negative {
					t.Errorf("%s × %s%% in %s, %s: int64 gave %s (exp %d, neg %t), apd %s (exp %d, neg %t)",
						c[0], c[1], code, mode, got.Text('f'), got.Exponent, got.Negative, want.Text('f'), want.Exponent, want.Negative)
				}
			}
		}
	}
	if applied < len(cases)*len(currencies)*len(modes)*9/10 {
		t.Errorf("the int64 way applied to %d of %d computations: it should cover nearly all of these", applied, len(cases)*len(currencies)*len(modes))
	}
}
