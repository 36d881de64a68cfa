package engine

import (
	"testing"

	"github.com/cockroachdb/apd/v3"
)

// TestSetPlainDecimal checks that the fast path for plain amounts gives exactly what apd's
// SetString gives (form, sign, coefficient and exponent), and declines what it does not handle.
func TestSetPlainDecimal(t *testing.T) {
	cases := []struct {
		text string
		fast bool // whether setPlainDecimal handles it
	}{
		{"0", true}, {"-0", true}, {"0.00", true}, {"-0.00", true}, {"2941.00", true}, {"0.05", true},
		{"12345", true}, {"-1.5", true}, {"999999999999999999", true}, {"99999999999999999.9", true},
		{"0.00000000000000001", true}, {"0.000000000000000001", false}, {"1000000000000000000", false}, {"99999999999999999999.99", false},
		{"1e3", false}, {"1.5E-2", false}, {"", false}, {"-", false}, {".5", false}, {"1.", false},
		{"1.2.3", false}, {"+1", false}, {"1,5", false}, {"- 1", false},
	}
	for _, c := range cases {
		var fast, slow apd.Decimal
		got := setPlainDecimal(&fast, []byte(c.text))
		if got != c.fast {
			t.Errorf("%q: got handled %t, want %t", c.text, got, c.fast)
			continue
		}
		if !got {
			continue
		}
		if _, _, err := slow.SetString(c.text); err != nil {
			t.Fatalf("%q: SetString: %v", c.text, err)
		}
		if fast.Form != slow.Form || fast.Negative != slow.Negative || fast.Exponent != slow.Exponent || fast.Coeff.Cmp(&slow.Coeff) != 0 {
			t.Errorf("%q: got %+v (%s), want %+v (%s)", c.text, fast, fast.Text('f'), slow, slow.Text('f'))
		}
	}
}
