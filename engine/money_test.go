package engine_test

import (
	"testing"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/engine"
)

func dec(t *testing.T, s string) *apd.Decimal {
	t.Helper()
	if s == "" {
		return nil
	}
	d, _, err := apd.NewFromString(s)
	if err != nil {
		t.Fatalf("bad decimal %q in test: %v", s, err)
	}
	return d
}

func currency(t *testing.T, code string) engine.Currency {
	t.Helper()
	c, ok := engine.LookupCurrency(code)
	if !ok {
		t.Fatalf("unknown currency %q in test", code)
	}
	return c
}

// roundingModes lists every rounding mode a policy may name, in the order of the want columns below.
var roundingModes = []apd.Rounder{
	apd.RoundHalfUp, apd.RoundHalfEven, apd.RoundHalfDown, apd.RoundDown, apd.RoundUp, apd.RoundCeiling, apd.RoundFloor,
}

// TestCommissionRounding computes base × rate% + flat under every rounding mode. Each want row
// is worked by hand: the exact product first, then the rounding to the currency's minor unit.
func TestCommissionRounding(t *testing.T) {
	cases := []struct {
		name               string
		base, rate, flat   string // "" = nil
		cur                string
		exact              string // the unrounded result, for the reader
		halfUp, halfEven   string
		halfDown, down, up string
		ceiling, floor     string
	}{
		{"USD tie", "0.05", "10", "", "USD", "0.0050", "0.01", "0.00", "0.00", "0.00", "0.01", "0.01", "0.00"},
		{"USD tie odd", "0.15", "10", "", "USD", "0.0150", "0.02", "0.02", "0.01", "0.01", "0.02", "0.02", "0.01"},
		{"USD below half", "0.13", "10", "", "USD", "0.0130", "0.01", "0.01", "0.01", "0.01", "0.02", "0.02", "0.01"},
		{"USD above half", "0.17", "10", "", "USD", "0.0170", "0.02", "0.02", "0.02", "0.01", "0.02", "0.02", "0.01"},
		{"USD exact", "1.00", "10", "", "USD", "0.1000", "0.10", "0.10", "0.10", "0.10", "0.10", "0.10", "0.10"},
		{"USD zero base", "0.00", "10", "", "USD", "0.0000", "0.00", "0.00", "0.00", "0.00", "0.00", "0.00", "0.00"},
		{"USD zero rate", "2941.00", "0", "", "USD", "0.0000", "0.00", "0.00", "0.00", "0.00", "0.00", "0.00", "0.00"},
		{"USD full rate", "2941.07", "100", "", "USD", "2941.0700", "2941.07", "2941.07", "2941.07", "2941.07", "2941.07", "2941.07", "2941.07"},
		{"USD fractional rate", "333.33", "0.5", "", "USD", "1.666650", "1.67", "1.67", "1.67", "1.66", "1.67", "1.67", "1.66"},
		{"USD tiny above zero", "0.01", "1", "", "USD", "0.0001", "0.00", "0.00", "0.00", "0.00", "0.01", "0.01", "0.00"},
		{"USD nine thousandths", "0.09", "10", "", "USD", "0.0090", "0.01", "0.01", "0.01", "0.00", "0.01", "0.01", "0.00"},
		// below a tenth of a cent: only up and ceiling leave zero (apd's Quantize alone gave 0.00 for every mode)
		{"USD flat below a tenth of a cent", "1.00", "", "0.0009", "USD", "0.0009", "0.00", "0.00", "0.00", "0.00", "0.01", "0.01", "0.00"},
		{"JPY below a tenth of a yen", "1", "1", "", "JPY", "0.01", "0", "0", "0", "0", "1", "1", "0"},
		{"KWD far below a fils", "0.001", "0.001", "", "KWD", "0.00000001", "0.000", "0.000", "0.000", "0.000", "0.001", "0.001", "0.000"},
		{"USD beyond float64", "99999999999999999999.99", "10", "", "USD", "9999999999999999999.9990",
			"10000000000000000000.00", "10000000000000000000.00", "10000000000000000000.00", "9999999999999999999.99",
			"10000000000000000000.00", "10000000000000000000.00", "9999999999999999999.99"},
		{"JPY tie", "12345", "10", "", "JPY", "1234.50", "1235", "1234", "1234", "1234", "1235", "1235", "1234"},
		{"JPY below half", "11111", "10", "", "JPY", "1111.10", "1111", "1111", "1111", "1111", "1112", "1112", "1111"},
		{"JPY 40 digits at 100%", "9999999999999999999999999999999999999999", "100", "", "JPY", "9999999999999999999999999999999999999999.00",
			"9999999999999999999999999999999999999999", "9999999999999999999999999999999999999999", "9999999999999999999999999999999999999999",
			"9999999999999999999999999999999999999999", "9999999999999999999999999999999999999999", "9999999999999999999999999999999999999999",
			"9999999999999999999999999999999999999999"},
		{"KWD tie", "1.225", "10", "", "KWD", "0.12250", "0.123", "0.122", "0.122", "0.122", "0.123", "0.123", "0.122"},
		{"KWD exact", "10.000", "5", "", "KWD", "0.50000", "0.500", "0.500", "0.500", "0.500", "0.500", "0.500", "0.500"},
		{"CLF tie", "1.2345", "10", "", "CLF", "0.123450", "0.1235", "0.1234", "0.1234", "0.1234", "0.1235", "0.1235", "0.1234"},
		{"CLF odd tie", "1.2355", "10", "", "CLF", "0.123550", "0.1236", "0.1236", "0.1235", "0.1235", "0.1236", "0.1236", "0.1235"},
		{"flat only", "2941.00", "", "5.00", "USD", "5.00", "5.00", "5.00", "5.00", "5.00", "5.00", "5.00", "5.00"},
		{"flat only JPY", "11111", "", "500", "JPY", "500", "500", "500", "500", "500", "500", "500", "500"},
		{"flat with more decimals than the currency", "1.00", "", "0.005", "USD", "0.005", "0.01", "0.00", "0.00", "0.00", "0.01", "0.01", "0.00"},
		{"hybrid", "100.00", "10", "2.50", "USD", "12.5000", "12.50", "12.50", "12.50", "12.50", "12.50", "12.50", "12.50"},
		// 0.05 × 10% = 0.005 and flat 0.005 sum to 0.010: rounded once it is 0.01 under every mode
		// (rounding each part first would give 0.00 half-even and 0.02 half-up).
		{"hybrid rounds once", "0.05", "10", "0.005", "USD", "0.0100", "0.01", "0.01", "0.01", "0.01", "0.01", "0.01", "0.01"},
		{"neither rate nor flat", "2941.00", "", "", "USD", "0", "0.00", "0.00", "0.00", "0.00", "0.00", "0.00", "0.00"},
	}
	for _, c := range cases {
		wants := []string{c.halfUp, c.halfEven, c.halfDown, c.down, c.up, c.ceiling, c.floor}
		for i, mode := range roundingModes {
			t.Run(c.name+"/"+string(mode), func(t *testing.T) {
				got, err := engine.Commission(dec(t, c.base), dec(t, c.rate), dec(t, c.flat), currency(t, c.cur), mode)
				if err != nil {
					t.Fatalf("got error %v, want %s", err, wants[i])
				}
				if got.Text('f') != wants[i] {
					t.Errorf("%s × %s%% + %s = %s rounded %s: got %s, want %s", c.base, c.rate, c.flat, c.exact, mode, got.Text('f'), wants[i])
				}
				if got.Negative {
					t.Errorf("got a negative commission %s, want none", got.Text('f'))
				}
				if got.Exponent != -currency(t, c.cur).MinorUnits {
					t.Errorf("got exponent %d, want %d (exactly the currency's minor units)", got.Exponent, -currency(t, c.cur).MinorUnits)
				}
			})
		}
	}
}

// TestCommissionDoesNotChangeItsInputs checks that Commission leaves base, rate and flat alone.
func TestCommissionDoesNotChangeItsInputs(t *testing.T) {
	base, rate, flat := dec(t, "0.05"), dec(t, "10"), dec(t, "0.005")
	if _, err := engine.Commission(base, rate, flat, currency(t, "USD"), apd.RoundHalfUp); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, got, want string }{
		{"base", base.Text('f'), "0.05"}, {"rate", rate.Text('f'), "10"}, {"flat", flat.Text('f'), "0.005"},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %s, want %s", c.name, c.got, c.want)
		}
	}
}

func TestLookupCurrency(t *testing.T) {
	cases := []struct {
		code  string
		units int32
		ok    bool
	}{
		{"USD", 2, true}, {"EUR", 2, true}, {"GBP", 2, true}, {"JPY", 0, true}, {"KRW", 0, true},
		{"KWD", 3, true}, {"BHD", 3, true}, {"CLF", 4, true}, {"XYZ", 0, false}, {"usd", 0, false}, {"", 0, false},
	}
	for _, c := range cases {
		got, ok := engine.LookupCurrency(c.code)
		if ok != c.ok || (ok && (got.Code != c.code || got.MinorUnits != c.units)) {
			t.Errorf("LookupCurrency(%q): got %+v, %t, want {%s %d}, %t", c.code, got, ok, c.code, c.units, c.ok)
		}
	}
}
