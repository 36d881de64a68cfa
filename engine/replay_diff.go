package engine

// Comparing a candidate's decision with the recorded one: what each rule said, what differs,
// what caused the difference, and what a decision by the recorded version itself does not
// reproduce (drift).

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/apd/v3"
)

// Rule outcomes, as traces record them.
const (
	OutcomePass         = "pass"     // a qualification rule held
	OutcomeFail         = "fail"     // a qualification rule did not hold
	OutcomeMatch        = "match"    // the rate rule that set the rate
	OutcomeNoMatch      = "no_match" // a rate rule before the one that matched
	OutcomeNotEvaluated = "not_evaluated"
	// OutcomeAbsent is a rule one of the two compared policy versions does not have.
	OutcomeAbsent = "absent"
)

// RuleOutcome is what one rule said about an order.
type RuleOutcome struct {
	Stage   Stage
	Rule    string // the rule id
	Outcome string // OutcomePass, OutcomeFail, OutcomeMatch, OutcomeNoMatch or OutcomeNotEvaluated
}

// RecordedDecision is a decision as it was stored: what a replay compares the candidate's
// decision with. Replay only reads it: its slices may be shared between decisions.
type RecordedDecision struct {
	Verdict
	// Trace is what every rule of the recorded version said, in policy order (qualification
	// rules, then rate rules).
	Trace []RuleOutcome
	// Pin is the version the order was pinned to when the event was decided, and Pinned
	// whether the event was decided with it (an order's later events keep the terms of its
	// sale; see DecideBatch). Pin may be nil when the event was not decided with it.
	Pin    *Pin
	Pinned bool
	// Affiliate is the affiliate.* inputs the decision was made with; nil when its policy read
	// none.
	Affiliate *AffiliateMonth
}

// Outcomes lists what every rule of the deciding policy said, in policy order: qualification
// rules, then rate rules (the same list the store records as the trace).
func (d *Decision) Outcomes() []RuleOutcome {
	p := d.Policy
	out := make([]RuleOutcome, 0, len(p.Qualify)+len(p.Rates))
	for i, r := range p.Qualify {
		out = append(out, RuleOutcome{Stage: StageQualify, Rule: r.ID, Outcome: d.outcome(StageQualify, i)})
	}
	for i, r := range p.Rates {
		out = append(out, RuleOutcome{Stage: StageRate, Rule: r.ID, Outcome: d.outcome(StageRate, i)})
	}
	return out
}

// outcome is what rule i of a stage said. Qualification rules are all evaluated, first in the
// trace; rate rules follow, up to the one that matched.
func (d *Decision) outcome(stage Stage, i int) string {
	nq := len(d.Policy.Qualify)
	if stage == StageQualify {
		if i < len(d.Trace) && d.Trace[i].Result {
			return OutcomePass
		}
		if i < len(d.Trace) {
			return OutcomeFail
		}
		return OutcomeNotEvaluated
	}
	if k := nq + i; k < len(d.Trace) {
		if d.Trace[k].Result {
			return OutcomeMatch
		}
		return OutcomeNoMatch
	}
	return OutcomeNotEvaluated
}

// summary is the candidate's side of an order change: its verdict, amounts copied (a decision
// may be reused once the change is kept).
func (d *Decision) summary() Verdict { return d.Verdict() }

// summary is the recorded side of an order change.
func (r *RecordedDecision) summary() *Verdict {
	v := r.Verdict.clone()
	return &v
}

// terms describes what a rate paid (see Verdict.Terms).
func terms(rate, flat *apd.Decimal, hasFlat bool, currency string) string {
	var parts []string
	if !rate.IsZero() || !hasFlat {
		parts = append(parts, rate.Text('f')+"%")
	}
	if hasFlat {
		parts = append(parts, currency+" "+flat.Text('f'))
	}
	return strings.Join(parts, " + ")
}

// OrderChange is one event whose decision changed.
type OrderChange struct {
	EventID     string
	Program     string
	OrderID     string
	AffiliateID string
	PlacedAt    time.Time
	Currency    string
	Market      string // the buyer's country
	NewBuyer    bool
	Old         *Verdict // nil when no decision was recorded
	New         Verdict
	// Cause is what made the difference: the first rule whose outcome differs between the two
	// traces, or the matching rate rule whose terms changed.
	Cause Cause
	// Drift: decided with the recorded version itself, the decision did not reproduce.
	// DriftFields names what differed.
	Drift       bool
	DriftFields []string
}

// Cause kinds.
const (
	CauseOutcome  = "outcome"   // a rule's outcome differs (Old and New are outcomes)
	CauseTerms    = "terms"     // the same rate rule matched with other terms (Old and New are terms)
	CauseOther    = "other"     // no rule differs: the rounding, the base or the currency did (Old, New say which)
	CauseNoRecord = "no_record" // there was no recorded decision
	CauseNone     = ""          // nothing differs (a drifted trace only)
)

// Cause is the rule that made the difference between two decisions of an order.
type Cause struct {
	Kind     string
	Stage    Stage
	Rule     string
	Old, New string
}

// String says what made the difference: "qualify no_forbidden_items: pass → fail",
// "rate selected_returning: 6% → 5%", "rounding half_up → half_even", "no recorded decision".
func (c Cause) String() string {
	switch c.Kind {
	case CauseOutcome:
		return fmt.Sprintf("%s %s: %s → %s", c.Stage, c.Rule, c.Old, c.New)
	case CauseTerms:
		return fmt.Sprintf("rate %s: %s → %s", c.Rule, c.Old, c.New)
	case CauseOther:
		return fmt.Sprintf("%s → %s", c.Old, c.New)
	case CauseNoRecord:
		return "no recorded decision"
	}
	return ""
}

// decisionDiff says what differs between a candidate decision and a recorded one, by value
// (2 and 2.00 are the same rate).
type decisionDiff struct {
	changed    bool // anything below
	qualified  bool
	failed     bool
	rateRule   bool
	terms      bool // rate or flat
	commission bool // amount or currency
}

func compareDecisions(d *Decision, r *RecordedDecision) decisionDiff {
	var x decisionDiff
	x.qualified = d.Qualified != r.Qualified
	x.failed = !slices.Equal(d.FailedRules, r.FailedRules)
	x.rateRule = d.RateRule != r.RateRule
	x.terms = d.Rate.Cmp(&r.Rate) != 0 || d.hasFlat != r.HasFlat || d.hasFlat && d.Flat.Cmp(&r.Flat) != 0
	x.commission = d.Commission.Cmp(&r.Commission) != 0 || d.Currency.Code != r.Currency
	x.changed = x.qualified || x.failed || x.rateRule || x.terms || x.commission
	return x
}

// exactEqual: the same value written the same way (so the same text).
func exactEqual(a, b *apd.Decimal) bool {
	return a.Cmp(b) == 0 && a.Exponent == b.Exponent && a.Negative == b.Negative
}

// driftOf names what a decision by the recorded version itself does not reproduce of the
// recorded decision: every field, written exactly, and every rule's outcome.
func driftOf(d *Decision, r *RecordedDecision, x *decisionDiff) []string {
	var f []string
	add := func(differs bool, name string) {
		if differs {
			f = append(f, name)
		}
	}
	add(x.qualified, "qualified")
	add(x.failed, "failed_rules")
	add(x.rateRule, "rate_rule")
	add(!exactEqual(&d.Rate, &r.Rate), "rate")
	add(d.hasFlat != r.HasFlat || d.hasFlat && !exactEqual(&d.Flat, &r.Flat), "flat")
	add(!exactEqual(&d.Base, &r.Base), "base")
	add(!exactEqual(&d.Commission, &r.Commission), "commission")
	add(d.Currency.Code != r.Currency, "currency")
	add(string(d.Rounding) != r.Rounding, "rounding")
	add(!traceMatches(d, r.Trace), "trace")
	return f
}

// traceMatches reports whether the recorded trace is exactly what d's rules said, without
// allocating.
func traceMatches(d *Decision, trace []RuleOutcome) bool {
	p := d.Policy
	if len(trace) != len(p.Qualify)+len(p.Rates) {
		return false
	}
	for i, r := range p.Qualify {
		t := &trace[i]
		if t.Stage != StageQualify || t.Rule != r.ID || t.Outcome != d.outcome(StageQualify, i) {
			return false
		}
	}
	for i, r := range p.Rates {
		t := &trace[len(p.Qualify)+i]
		if t.Stage != StageRate || t.Rule != r.ID || t.Outcome != d.outcome(StageRate, i) {
			return false
		}
	}
	return true
}

// effective is what a rule's outcome means for the decision: a qualification rule a version
// lacks lets every order through; a rate rule that was not reached, or that a version lacks,
// did not match.
func effective(stage Stage, outcome string) string {
	switch {
	case stage == StageQualify && outcome == OutcomeAbsent:
		return OutcomePass
	case stage == StageRate && (outcome == OutcomeAbsent || outcome == OutcomeNotEvaluated):
		return OutcomeNoMatch
	}
	return outcome
}

// causeOf finds what made the difference between the recorded decision and the candidate's:
// the first rule, in policy order (qualification rules, then rate rules; the candidate's order,
// then rules only the recorded version had), whose outcome differs in effect. When every rule
// said the same, the matching rate rule's terms, else the rounding, base or currency.
func causeOf(d *Decision, r *RecordedDecision) Cause {
	newOutcomes := d.Outcomes()
	for _, stage := range [...]Stage{StageQualify, StageRate} {
		old := map[string]string{}
		var oldOrder []string
		for _, t := range r.Trace {
			if t.Stage == stage {
				old[t.Rule] = t.Outcome
				oldOrder = append(oldOrder, t.Rule)
			}
		}
		seen := map[string]bool{}
		for _, n := range newOutcomes {
			if n.Stage != stage {
				continue
			}
			seen[n.Rule] = true
			o, ok := old[n.Rule]
			if !ok {
				o = OutcomeAbsent
			}
			if effective(stage, o) != effective(stage, n.Outcome) {
				return Cause{Kind: CauseOutcome, Stage: stage, Rule: n.Rule, Old: o, New: n.Outcome}
			}
		}
		for _, id := range oldOrder {
			if !seen[id] && effective(stage, old[id]) != effective(stage, OutcomeAbsent) {
				return Cause{Kind: CauseOutcome, Stage: stage, Rule: id, Old: old[id], New: OutcomeAbsent}
			}
		}
	}
	if d.Qualified && r.Qualified && d.RateRule == r.RateRule {
		oldTerms := terms(&r.Rate, &r.Flat, r.HasFlat, r.Currency)
		newTerms := terms(&d.Rate, &d.Flat, d.hasFlat, d.Currency.Code)
		if oldTerms != newTerms {
			return Cause{Kind: CauseTerms, Stage: StageRate, Rule: d.RateRule, Old: oldTerms, New: newTerms}
		}
	}
	switch {
	case string(d.Rounding) != r.Rounding:
		return Cause{Kind: CauseOther, Old: "rounding " + r.Rounding, New: "rounding " + string(d.Rounding)}
	case d.Base.Cmp(&r.Base) != 0:
		return Cause{Kind: CauseOther, Old: "base " + r.Base.Text('f'), New: "base " + d.Base.Text('f')}
	case d.Currency.Code != r.Currency:
		return Cause{Kind: CauseOther, Old: "currency " + r.Currency, New: "currency " + d.Currency.Code}
	}
	return Cause{Kind: CauseNone}
}
