package engine

import (
	"fmt"

	"github.com/cockroachdb/apd/v3"
)

// exact is the context for money arithmetic: wide enough that multiplying any accepted amount
// (at most 40 digits) by any rate (at most 100%, a few digits) is exact; only Quantize rounds,
// with the policy's mode.
var exact = apd.Context{
	Precision:   100,
	MaxExponent: apd.MaxExponent,
	MinExponent: apd.MinExponent,
	Traps:       apd.DefaultTraps,
	Rounding:    apd.RoundHalfEven,
}

// Commission computes base × rate% + flat, rounded once to the currency's minor unit with the
// given rounding mode. rate or flat may be nil. The result has exactly MinorUnits decimals.
func Commission(base *apd.Decimal, rate *apd.Decimal, flat *apd.Decimal, cur Currency, rounding apd.Rounder) (apd.Decimal, error) {
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
