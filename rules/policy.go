package rules

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"github.com/cockroachdb/apd/v3"
)

// Limits on what one rule may cost. The estimate is checked when a policy is compiled (with
// order.items bounded by MaxItems); the runtime limit stops any evaluation that goes beyond it.
const (
	MaxItems         = 1000
	MaxEstimatedCost = 1_000_000
	RuntimeCostLimit = 1_000_000
)

// Policy is one compiled, immutable version of a program's terms. It is safe for concurrent use.
type Policy struct {
	Program       string
	Version       int
	EffectiveFrom time.Time
	Description   string
	Rounding      apd.Rounder
	Payout        Payout
	Lifecycle     Lifecycle
	// Stage is StageShadow for a shadow version (stage: shadow): decided beside the live
	// version and compared with it, never in force, pinned or booked. "" for a live version.
	Stage string
	// Sample is the share of events a shadow decides (sample: 0.1), chosen by a hash of the
	// order's identity (InSample); nil when it decides every event.
	Sample *apd.Decimal

	File   string // the path it was loaded from
	Source []byte // the file's bytes, exactly
	Digest string // "sha256:" + hex SHA-256 of Source

	Constants []Constant
	Qualify   []*Rule     // all must pass
	Rates     []*RateRule // first match wins
	Tests     []TestCase

	readsAffiliate bool // some rule reads an affiliate.* input
	// sampled: Sample is set and below 1; an event is in the sample when its hash is below
	// sampleBelow (InSample).
	sampled     bool
	sampleBelow uint64
}

// ReadsAffiliate reports whether any rule reads the affiliate's month figures (affiliate.*): only
// then does deciding an order need them, and does its decision record them.
func (p *Policy) ReadsAffiliate() bool { return p.readsAffiliate }

// Payout holds the program's payout terms.
type Payout struct {
	Schedule string // "monthly"
	Method   string // "wire_transfer"
	// Minimum per currency; a currency not listed has no minimum.
	Minimum map[string]*apd.Decimal
	// HoldDays is how long a commission stays pending after the order completes.
	HoldDays int
}

// Lifecycle says how an order's later events are decided.
type Lifecycle struct {
	// Terms is TermsFirstQualifying (the default) or TermsInForce.
	Terms string
}

// The lifecycle terms a policy may set (lifecycle: {terms: …}).
const (
	// TermsFirstQualifying: every event of an order after its first qualifying one is decided
	// with the version that decided that event (the terms in force at the sale).
	TermsFirstQualifying = "first_qualifying"
	// TermsInForce: every event is decided with the version in force at its placed_at, as
	// loaded when it is decided.
	TermsInForce = "in_force"
)

// Constant is a named value rules refer to, so a manager edits a list, not an expression.
type Constant struct {
	Name  string
	Type  *cel.Type
	Value ref.Val
	Text  string // as written, for explanations
	Line  int
}

// Rule is a qualification rule: the order qualifies only if every rule's expression is true.
type Rule struct {
	ID     string
	Expr   string
	Reason string // said when the rule fails
	Line   int
	compiled
}

// RateRule is a rate rule: the first whose condition is true sets the rate and/or flat amount.
type RateRule struct {
	ID          string
	When        string
	Description string
	// Rate is a percentage of the commissionable amount (10 means 10%); nil when the rule pays only a flat amount.
	Rate *apd.Decimal
	// Flat is a fixed amount per order, by currency; nil when the rule pays only a rate.
	Flat map[string]*apd.Decimal
	Line int
	compiled
}

// compiled is a rule's planned program and what static analysis learnt about it.
type compiled struct {
	prg cel.Program // with the runtime cost limit
	// fast is the same program without cost tracking, for orders inside the sizes the cost
	// estimate assumed: for them the estimate, which Compile held to RuntimeCostLimit, bounds
	// the actual cost, so the limit cannot be reached and tracking it only costs time.
	fast      cel.Program
	names     []string // schema names the expression reads, in schema order
	constants []string // the policy constants it refers to, sorted
	literals  []string // string literals it mentions, for lint probes
}

// TestCase is an example order with its expected decision, kept in the policy file.
type TestCase struct {
	Name  string
	Line  int
	Order []byte // the order as JSON, numbers as written
	// Affiliate gives the affiliate.* inputs the example is decided with (nil: zero).
	Affiliate *AffiliateGiven
	Expect    Expectation
}

// AffiliateGiven is a test case's affiliate.* inputs: what the pipeline would compute from the
// affiliate's earlier orders of the month.
type AffiliateGiven struct {
	MonthQualifiedOrders int64
	MonthQualifiedSales  *apd.Decimal
}

// Expectation is what a test case expects; nil fields are not checked.
type Expectation struct {
	Qualified   *bool
	FailedRules []string // checked when HasFailed
	HasFailed   bool
	RateRule    *string
	Rate        *string
	Commission  *string
	Error       *string // a substring of the expected rejection
}

// Eval evaluates the rule against an activation. An evaluation error (cost limit, a function error)
// is returned with the rule id; it is never taken as pass or fail.
func (r *Rule) Eval(ctx context.Context, act *Activation) (bool, error) {
	return evalBool(ctx, &r.compiled, act, r.ID)
}

// Names returns the order fields the rule reads, in schema order.
func (r *Rule) Names() []string { return r.names }

// Constants returns the policy constants the rule refers to, sorted.
func (r *Rule) Constants() []string { return r.constants }

// Eval evaluates the rate rule's condition.
func (r *RateRule) Eval(ctx context.Context, act *Activation) (bool, error) {
	return evalBool(ctx, &r.compiled, act, r.ID)
}

// Names returns the order fields the rule reads, in schema order.
func (r *RateRule) Names() []string { return r.names }

// Constants returns the policy constants the rule refers to, sorted.
func (r *RateRule) Constants() []string { return r.constants }

func evalBool(ctx context.Context, c *compiled, act *Activation, id string) (bool, error) {
	// The programs are planned without an interrupt check frequency, so ContextEval would never
	// look at ctx; it would only set up a cancellable context per evaluation (three allocations).
	// The context is checked here instead, once per rule.
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("rule %s: %w", id, err)
	}
	var out ref.Val
	var err error
	if act.withinEstimate() {
		out, _, err = c.fast.Eval(act.frame)
	} else {
		// The cost-limited program sets up its own frame, with a cost tracker.
		out, _, err = c.prg.Eval(act)
	}
	if err != nil {
		return false, fmt.Errorf("rule %s: %w", id, err)
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("rule %s: evaluated to %s, not bool", id, out.Type())
	}
	return bool(b), nil
}

// Identity is a version's identity: program, version number and content digest.
func (p *Policy) Identity() string {
	return fmt.Sprintf("%s v%d (%s)", p.Program, p.Version, p.Digest)
}

// Digest returns the content digest of a policy file's bytes.
func Digest(source []byte) string {
	sum := sha256.Sum256(source)
	return "sha256:" + hex.EncodeToString(sum[:])
}
