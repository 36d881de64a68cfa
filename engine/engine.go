package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/rules"
)

// ErrNoRateRule: a qualified order matched no rate rule (a policy defect `policy check` lints for).
var ErrNoRateRule = errors.New("no rate rule matched")

// ErrNoFlatAmount: the matching rate rule has flat amounts, but none in the order's currency.
var ErrNoFlatAmount = errors.New("no flat amount for the order's currency")

// Error kinds: why an event could not be decided. They are a dead letter's kind (Pass) and a
// replay error's (ReplayError); the consumer and the reports branch on them, never on the text.
const (
	ErrorKindInvalid        = "invalid"         // the event is not a valid order
	ErrorKindUnknownProgram = "unknown_program" // no version of its program is loaded (in a replay: the candidate has none)
	ErrorKindNoPolicy       = "no_policy"       // no version of its program was in force at its time
	ErrorKindPinMissing     = "pin_missing"     // its order is pinned to a version that is not loaded
	ErrorKindRule           = "rule_error"      // a rule failed to evaluate, no rate rule matched…
)

// ErrorKind classifies why an event could not be decided: one of the ErrorKind… constants.
func ErrorKind(err error) string {
	switch {
	case errors.Is(err, ErrInvalidOrder):
		return ErrorKindInvalid
	case errors.Is(err, rules.ErrUnknownProgram):
		return ErrorKindUnknownProgram
	case errors.Is(err, rules.ErrNoPolicyInForce):
		return ErrorKindNoPolicy
	case errors.Is(err, ErrPinnedPolicyMissing):
		return ErrorKindPinMissing
	}
	return ErrorKindRule
}

// Engine decides orders against an immutable policy set. It is safe for concurrent use.
type Engine struct {
	set  *rules.Set
	pool sync.Pool
	// alike holds, for each version of a program (live) and each shadow of it, whether the two
	// differ in terms only (rulesAlike): then the shadow's decision is the live one's rule
	// outcomes with its own terms, and its rules need no evaluation of their own.
	alike map[[2]*rules.Policy]bool
}

type evalState struct {
	vars rules.Vars
	act  *rules.Activation
}

// New returns an engine over a loaded policy set.
func New(set *rules.Set) *Engine {
	e := &Engine{set: set, alike: map[[2]*rules.Policy]bool{}}
	for _, program := range set.Programs() {
		for _, sh := range set.Shadows(program) {
			for _, v := range set.Versions(program) {
				e.alike[[2]*rules.Policy{v, sh}] = rulesAlike(v, sh)
			}
		}
	}
	e.pool.New = func() any {
		st := &evalState{}
		st.act = rules.NewActivation(&st.vars)
		return st
	}
	return e
}

// Policies returns the engine's policy set.
func (e *Engine) Policies() *rules.Set { return e.set }

// PolicyFor returns the policy version in force for the order: the latest effective_from at or
// before placed_at.
func (e *Engine) PolicyFor(o *Order) (*rules.Policy, error) {
	return e.set.InForce(o.Program, o.PlacedAt)
}

// Decide decides an order with the version in force at its placed_at.
func (e *Engine) Decide(ctx context.Context, o *Order) (*Decision, error) {
	p, err := e.PolicyFor(o)
	if err != nil {
		return nil, err
	}
	return e.DecideWith(ctx, p, o)
}

// DecideWith decides an order with a given policy version (replay, --version, an order's
// lifecycle). The policy must be of the order's program.
func (e *Engine) DecideWith(ctx context.Context, p *rules.Policy, o *Order) (*Decision, error) {
	if p.Program != o.Program {
		return nil, fmt.Errorf("%w: order %s is of program %q, the policy of %q", rules.ErrUnknownProgram, o.OrderID, o.Program, p.Program)
	}
	st := e.pool.Get().(*evalState)
	defer e.pool.Put(st)
	o.fillVars(&st.vars)
	st.act.Reset(&st.vars)

	d := &Decision{
		OrderID: o.OrderID, Program: o.Program, AffiliateID: o.AffiliateID,
		Policy: p, PolicyVersion: p.Version, PolicyDigest: p.Digest,
		Currency: o.Currency, Rounding: p.Rounding, Env: rules.EnvFingerprint(),
	}
	if n := len(p.Qualify) + len(p.Rates); n <= len(d.traceBuf) {
		d.Trace = d.traceBuf[:0:n]
	} else {
		d.Trace = make([]Outcome, 0, n)
	}
	if p.ReadsAffiliate() {
		d.Affiliate = &AffiliateMonth{Month: MonthOf(o.PlacedAt), QualifiedOrders: o.Affiliate.QualifiedOrders}
		d.Affiliate.QualifiedSales.Set(&o.Affiliate.QualifiedSales)
	}
	d.Qualified = true
	for i, r := range p.Qualify {
		ok, err := r.Eval(ctx, st.act)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.File, err)
		}
		d.Trace = append(d.Trace, Outcome{Stage: StageQualify, Index: int32(i), Result: ok})
		if !ok {
			d.Qualified = false
			d.FailedRules = append(d.FailedRules, r.ID)
		}
	}
	if !d.Qualified {
		d.Commission, _ = roundTo(&d.Commission, o.Currency, p.Rounding)
		return d, nil
	}
	for i, r := range p.Rates {
		ok, err := r.Eval(ctx, st.act)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.File, err)
		}
		d.Trace = append(d.Trace, Outcome{Stage: StageRate, Index: int32(i), Result: ok})
		if !ok {
			continue
		}
		if err := d.setTerms(p, r, o); err != nil {
			return nil, err
		}
		return d, nil
	}
	return nil, fmt.Errorf("%s: %w for order %s (program %s v%d)", p.File, ErrNoRateRule, o.OrderID, p.Program, p.Version)
}

// setTerms sets what the matching rate rule r of p pays the order: its rate rule, rate, flat
// amount, the commissionable amount and the commission.
func (d *Decision) setTerms(p *rules.Policy, r *rules.RateRule, o *Order) error {
	d.RateRule = r.ID
	if r.Rate != nil {
		d.Rate.Set(r.Rate)
	}
	var flat *apd.Decimal
	if r.Flat != nil {
		if flat = r.Flat[o.Currency.Code]; flat == nil {
			return fmt.Errorf("%s: rule %s: %w %s", p.File, r.ID, ErrNoFlatAmount, o.Currency.Code)
		}
		d.Flat.Set(flat)
		d.hasFlat = true
	}
	d.Base = CommissionableAmount(o)
	c, err := Commission(&d.Base, r.Rate, flat, o.Currency, p.Rounding)
	if err != nil {
		return fmt.Errorf("order %s: %w", o.OrderID, err)
	}
	d.Commission = c
	return nil
}

// Stage is the part of a policy a rule belongs to.
type Stage uint8

const (
	StageQualify Stage = iota
	StageRate
)

func (s Stage) String() string {
	if s == StageRate {
		return "rate"
	}
	return "qualify"
}

// Outcome is what one rule said about the order. Rules not listed were not evaluated (rate rules
// after the first match, or all rate rules of an order that failed qualification).
type Outcome struct {
	Stage  Stage
	Result bool
	Index  int32 // the rule's position in its section
}

// Decision is the engine's verdict on one order event under one policy version.
type Decision struct {
	OrderID       string
	Program       string
	AffiliateID   string
	Policy        *rules.Policy
	PolicyVersion int
	PolicyDigest  string
	Qualified     bool
	FailedRules   []string // the qualification rules that failed, in policy order
	RateRule      string   // the rate rule that matched; "" when not qualified
	Rate          apd.Decimal
	Flat          apd.Decimal
	Base          apd.Decimal // the commissionable amount: amount − refunded_amount
	Commission    apd.Decimal // with exactly Currency.MinorUnits decimals
	Currency      Currency
	Rounding      apd.Rounder
	Trace         []Outcome
	// Env is the CEL environment fingerprint the rules ran in (rules.EnvFingerprint).
	Env string
	// Affiliate is the affiliate.* inputs the rules were given, recorded when the policy reads
	// them (nil otherwise), so that the decision can be reproduced.
	Affiliate *AffiliateMonth
	// Lifecycle is what the order's history said when DecideBatch decided the event; nil for a
	// decision made without the history (Decide, DecideWith).
	Lifecycle *Lifecycle

	hasFlat bool
	// traceBuf backs Trace for policies of up to len(traceBuf) rules, so that a decision is one
	// allocation rather than two.
	traceBuf [12]Outcome
}

// HasFlat reports whether the matching rule paid a flat amount.
func (d *Decision) HasFlat() bool { return d.hasFlat }

// RuleID returns the id of the rule an outcome is about.
func (d *Decision) RuleID(o Outcome) string {
	if o.Stage == StageRate {
		return d.Policy.Rates[o.Index].ID
	}
	return d.Policy.Qualify[o.Index].ID
}

// EffectiveFrom is when the deciding policy version took effect.
func (d *Decision) EffectiveFrom() time.Time { return d.Policy.EffectiveFrom }
