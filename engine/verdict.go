package engine

import "github.com/cockroachdb/apd/v3"

// Verdict is what a decision said, as it is stored and read back: the policy version that made it,
// whether the order qualified (and which qualification rules failed), the rate rule and its terms,
// and the money, exact. Decision is the engine's live form (Decision.Verdict); RecordedDecision
// (what replay compares with), audit.StoredDecision (what an auditor reads) and a replay's
// OrderChange sides are all this one vocabulary.
type Verdict struct {
	PolicyVersion int
	PolicyDigest  string
	Qualified     bool
	FailedRules   []string // in policy order; empty when qualified
	RateRule      string   // the rate rule that matched; "" when not qualified
	Rate          apd.Decimal
	Flat          apd.Decimal // meaningful only when HasFlat
	HasFlat       bool
	Base          apd.Decimal // the commissionable amount: amount − refunded_amount
	Commission    apd.Decimal // with the currency's minor units
	Currency      string      // ISO 4217 code
	Rounding      string      // the policy's rounding mode
}

// Verdict returns the decision's verdict, its amounts copied (its slices are shared).
func (d *Decision) Verdict() Verdict {
	v := Verdict{PolicyVersion: d.PolicyVersion, PolicyDigest: d.PolicyDigest, Qualified: d.Qualified,
		FailedRules: d.FailedRules, RateRule: d.RateRule, Rate: d.Rate, Flat: d.Flat, HasFlat: d.hasFlat,
		Base: d.Base, Commission: d.Commission, Currency: d.Currency.Code, Rounding: string(d.Rounding)}
	return v.clone() // the decision's amounts may be reused; the verdict's are its own
}

// clone is v with its amounts copied (its slices are shared). The amounts are zeroed before they
// are set: an apd.Decimal copied by value shares a large coefficient's big.Int, which Set would
// then write into rather than copy.
func (v *Verdict) clone() Verdict {
	c := *v
	c.Rate, c.Flat, c.Base, c.Commission = apd.Decimal{}, apd.Decimal{}, apd.Decimal{}, apd.Decimal{}
	c.Rate.Set(&v.Rate)
	c.Flat.Set(&v.Flat)
	c.Base.Set(&v.Base)
	c.Commission.Set(&v.Commission)
	return c
}

// Terms describes what the verdict's rate rule paid: "6%", "USD 1.00", "6% + USD 1.00"; "" when
// not qualified.
func (v *Verdict) Terms() string {
	if !v.Qualified {
		return ""
	}
	return terms(&v.Rate, &v.Flat, v.HasFlat, v.Currency)
}
