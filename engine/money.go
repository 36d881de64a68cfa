package engine

import (
	"fmt"
	"math/bits"

	"github.com/cockroachdb/apd/v3"
)

// The engine owns money, and with it the two exact contexts the project computes money with,
// one per need; no other package declares its own. Neither is ever changed.

// exact is the context for a commission: wide enough that multiplying any accepted amount
// (at most 40 digits) by any rate (at most 100%, a few digits) is exact; only Quantize rounds,
// with the policy's mode.
var exact = apd.Context{
	Precision:   100,
	MaxExponent: apd.MaxExponent,
	MinExponent: apd.MinExponent,
	Traps:       apd.DefaultTraps,
	Rounding:    apd.RoundHalfEven,
}

// SumContext adds up money without ever rounding: Inexact and Rounded trap, so a total that
// would not be exact (far beyond any money amount) is an error, never a silently rounded one;
// a Quantize that would have to round is an error too. Replay totals, bank files' control sums
// and the store's SQL sums use it. Use it as it is: never change it.
var SumContext = apd.Context{
	Precision:   2000,
	MaxExponent: apd.MaxExponent,
	MinExponent: apd.MinExponent,
	Traps:       apd.DefaultTraps | apd.Inexact | apd.Rounded,
}

// Commission computes base × rate% + flat, rounded once to the currency's minor unit with the
// given rounding mode. rate or flat may be nil. The result has exactly MinorUnits decimals.
func Commission(base *apd.Decimal, rate *apd.Decimal, flat *apd.Decimal, cur Currency, rounding apd.Rounder) (apd.Decimal, error) {
	if flat == nil && rate != nil {
		if c, ok := rateCommissionInt64(base, rate, cur.MinorUnits, rounding); ok {
			return c, nil
		}
	}
	return commissionApd(base, rate, flat, cur, rounding)
}

// commissionApd is Commission in apd's arithmetic, for every case.
func commissionApd(base *apd.Decimal, rate *apd.Decimal, flat *apd.Decimal, cur Currency, rounding apd.Rounder) (apd.Decimal, error) {
	var sum apd.Decimal
	if rate != nil {
		// base × rate / 100, done as a multiplication and an exponent shift: no division, no rounding.
		var prod apd.Decimal
		if _, err := exact.Mul(&prod, base, rate); err != nil {
			return apd.Decimal{}, fmt.Errorf("computing %s × %s%%: %w", base.Text('f'), rate.Text('f'), err)
		}
		prod.Exponent -= 2
		sum.Set(&prod)
	}
	if flat != nil {
		if _, err := exact.Add(&sum, &sum, flat); err != nil {
			return apd.Decimal{}, fmt.Errorf("adding flat %s: %w", flat.Text('f'), err)
		}
	}
	return roundTo(&sum, cur, rounding)
}

// roundTo rounds d to the currency's minor units with the rounding mode.
func roundTo(d *apd.Decimal, cur Currency, rounding apd.Rounder) (apd.Decimal, error) {
	if d.Form == apd.Finite && d.IsZero() { // every disqualified order: nothing to round
		var zero apd.Decimal
		zero.SetFinite(0, -cur.MinorUnits)
		return zero, nil
	}
	ctx := exact
	ctx.Rounding = rounding
	var out apd.Decimal
	// apd's Quantize turns a value below a tenth of the unit into 0 whatever the rounding mode
	// (0.0001 rounded up to cents gave 0.00, not 0.01). Such a value is rounded one unit further
	// from zero, where its digits count, and the unit is then taken back: the same result in every mode.
	x, tiny := d, !d.IsZero() && int64(d.Exponent)+d.NumDigits() < int64(-cur.MinorUnits)
	var unit, shifted apd.Decimal
	if tiny {
		unit.SetFinite(1, -cur.MinorUnits)
		unit.Negative = d.Negative
		if _, err := exact.Add(&shifted, d, &unit); err != nil {
			return apd.Decimal{}, fmt.Errorf("rounding %s to %d decimals: %w", d.Text('f'), cur.MinorUnits, err)
		}
		x = &shifted
	}
	if _, err := ctx.Quantize(&out, x, -cur.MinorUnits); err != nil {
		return apd.Decimal{}, fmt.Errorf("rounding %s to %d decimals: %w", d.Text('f'), cur.MinorUnits, err)
	}
	if tiny {
		if _, err := exact.Sub(&out, &out, &unit); err != nil {
			return apd.Decimal{}, fmt.Errorf("rounding %s to %d decimals: %w", d.Text('f'), cur.MinorUnits, err)
		}
	}
	if out.IsZero() {
		out.Negative = false
	}
	return out, nil
}

// CommissionableAmount is the amount a rate applies to: the order amount less what was refunded.
func CommissionableAmount(o *Order) apd.Decimal {
	var base apd.Decimal
	exact.Sub(&base, &o.Amount, &o.RefundedAmount)
	return base
}

// pow10 holds 10^0 … 10^18, the powers of ten an int64 holds.
var pow10 = func() (p [19]int64) {
	p[0] = 1
	for i := 1; i < len(p); i++ {
		p[i] = p[i-1] * 10
	}
	return p
}()

// rateCommissionInt64 is Commission of a rate alone (no flat amount) in int64 arithmetic, for the
// usual case: base and rate coefficients that fit in an int64, a product that does too, and at
// most 18 digits to shift. It reports false otherwise, and Commission does it with apd. It rounds
// the way Commission does (apd's Rounder decides whether the discarded digits add one), so both
// ways give the same decimal, digit for digit: TestCommissionInt64MatchesApd checks it over
// random and edge values in every rounding mode. An order's commission is most of what deciding
// it costs outside the rules (a quarter of a microsecond through apd's Mul and Quantize).
func rateCommissionInt64(base, rate *apd.Decimal, minorUnits int32, rounding apd.Rounder) (apd.Decimal, bool) {
	// Round05Up looks at the result's last digit, which roundTo's handling of values below a tenth
	// of the unit changes; no policy can name it (rules.Compile), so it is left to apd.
	if rounding == apd.Round05Up || base.Form != apd.Finite || rate.Form != apd.Finite || !base.Coeff.IsInt64() || !rate.Coeff.IsInt64() {
		return apd.Decimal{}, false
	}
	b, r := base.Coeff.Int64(), rate.Coeff.Int64()
	if b < 0 || r < 0 { // apd keeps the sign apart: coefficients are never negative
		return apd.Decimal{}, false
	}
	hi, prod := bits.Mul64(uint64(b), uint64(r))
	if hi != 0 || prod > 1<<63-1 {
		return apd.Decimal{}, false
	}
	neg := base.Negative != rate.Negative
	// base × rate / 100 has exponent eb + er − 2; the result has exponent −minorUnits.
	shift := int64(-minorUnits) - (int64(base.Exponent) + int64(rate.Exponent) - 2)
	q := int64(prod)
	switch {
	case shift < 0: // more digits wanted than the product has: exact, scale up
		if -shift >= int64(len(pow10)) {
			return apd.Decimal{}, false
		}
		hi, lo := bits.Mul64(uint64(q), uint64(pow10[-shift]))
		if hi != 0 || lo > 1<<63-1 {
			return apd.Decimal{}, false
		}
		q = int64(lo)
	case shift > 0: // digits to discard: round
		if shift >= int64(len(pow10)) {
			return apd.Decimal{}, false
		}
		unit := pow10[shift]
		rem := q % unit
		q /= unit
		if rem != 0 {
			half := 1 // the discarded digits against one half: -1 below, 0 equal, 1 above
			if 2*rem < unit {
				half = -1
			} else if 2*rem == unit {
				half = 0
			}
			var res apd.BigInt
			res.SetInt64(q)
			if rounding.ShouldAddOne(&res, neg, half) {
				q++
			}
		}
	}
	var out apd.Decimal
	out.SetFinite(q, -minorUnits)
	out.Negative = neg && q != 0
	return out, true
}
