package engine

// Replay: decide stored order events again with a candidate policy and compare with the
// decisions that were recorded for them. Like the rest of the engine it does no I/O: the events
// and their recorded decisions come through History, which an adapter implements (the store, or
// the stream's history with the store's decisions).

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/rules"
)

// History is the order events a replay reads, each with the decision recorded for it.
type History interface {
	// Walk calls fn with successive batches of events, from one goroutine, until every event
	// was passed or fn returns an error, which Walk then returns (unwrapped). A batch belongs to
	// fn once passed: Walk never reads or reuses it again. A cancelled ctx stops the walk with an
	// error wrapping ctx's. Walk closes nothing it was given.
	Walk(ctx context.Context, fn func(batch []ReplayEvent) error) error
}

// PartitionedHistory is a History that can split itself into parts walked at once, so that
// reading the history also runs on every core (a database read by several connections).
type PartitionedHistory interface {
	History
	// Partitions splits the history for n walkers: histories that, walked together, give
	// exactly the events of this one, each once. There may be more parts than walkers (each
	// walker takes the next part when done with one, so uneven parts even out), or fewer; it
	// may return the history itself.
	Partitions(ctx context.Context, n int) ([]History, error)
}

// ReplayEvent is one stored order event and the decision recorded for it.
type ReplayEvent struct {
	Event Event
	// Recorded is the latest decision recorded for the event; nil when none was (the event was
	// dead-lettered: no policy was in force, or none of its program was loaded).
	Recorded *RecordedDecision
}

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
	PolicyVersion int
	PolicyDigest  string
	Qualified     bool
	FailedRules   []string
	RateRule      string
	Rate          apd.Decimal
	Flat          apd.Decimal // meaningful only when HasFlat
	HasFlat       bool
	Base          apd.Decimal
	Commission    apd.Decimal
	Currency      string
	Rounding      string
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

// ReplayOptions tune a replay. The zero value is ready to use.
type ReplayOptions struct {
	// AsDeployed decides each event as the service would have from the candidate set (a policy
	// directory): with the version its order was pinned to when the recorded decision was
	// pinned (its digest must match, else the event is not decidable, ErrorKindPinMissing),
	// else with the version in force at its placed_at. Without it, that holds only for programs
	// of which the candidate has several versions: when it has one (a single policy file, a
	// stored version), that version decides every order of the program, whatever its
	// effective_from or the order's pin — the replay asks "what if these terms had applied".
	AsDeployed bool
	// Workers decide events in parallel; ≤ 0 means GOMAXPROCS.
	Workers int
	// MaxChanges bounds the per-order changes kept in the report (and, separately, the drifted
	// orders): the first by placed_at, program, order id and event id. ≤ 0 keeps all.
	MaxChanges int
	// MaxErrors bounds the events the candidate could not decide that the report lists; ≤ 0
	// means 20. Every one is counted.
	MaxErrors int
	// TopAffiliates is how many affiliates with the largest changes the report lists per
	// currency; ≤ 0 means 10.
	TopAffiliates int
}

// ReplayReport is what a replay found. Money is exact, per currency.
type ReplayReport struct {
	// Candidates are the versions of the candidate set, with how many events each decided.
	Candidates []CandidateVersion
	// Recorded are the versions that decided the recorded decisions compared with.
	Recorded []RecordedVersion

	Events     int64 // events read from the history
	Evaluated  int64 // events the candidate decided: the ones compared and totalled
	Unrecorded int64 // evaluated events with no recorded decision (before: no commission)
	// Errors counts events the candidate could not decide (invalid, no version of the program,
	// none in force, a rule error), by kind (see ErrorKind). They are in no total.
	Errors       map[string]int64
	ErrorSamples []ReplayError

	NewlyQualified    int64 // recorded not qualified, qualified under the candidate
	NewlyDisqualified int64 // recorded qualified, not qualified under the candidate
	Changed           int64 // recorded decisions the candidate decided differently in any way
	CommissionChanged int64 // recorded decisions whose commission changed

	// SameVersion counts events the candidate decided with the very version (number and digest)
	// that decided the recorded decision: each must reproduce it exactly. Drift counts those
	// that did not.
	SameVersion int64
	Drift       int64
	// DigestMismatch counts events whose candidate version has the recorded version's number
	// but another digest: the policy text changed without a new version.
	DigestMismatch int64
	// AffiliateAssumed counts events decided by a candidate version that reads the affiliate's
	// month (affiliate.*) when none was recorded for them: the month counted as empty.
	AffiliateAssumed int64

	Totals []CurrencyTotal
	// ByRateRule groups by the recorded rate rule and the candidate's ("" when not qualified;
	// the recorded one is NoRecord when there was no decision).
	ByRateRule    []RateRuleGroup
	ByMarket      []ReplayGroup // by the buyer's country
	ByBuyer       []ReplayGroup // "new" or "returning" buyer
	TopAffiliates []ReplayGroup // per currency, the largest absolute differences first; only affiliates whose total changed

	// Changes are the per-order changes (every event whose decision changed, or that had no
	// recorded decision), by placed_at, program, order id and event id; at most
	// ReplayOptions.MaxChanges of ChangesTotal.
	Changes      []OrderChange
	ChangesTotal int64
	// Drifted are the same-version events that did not reproduce (at most MaxChanges of Drift).
	Drifted []OrderChange
}

// NoRecord is the recorded rate rule of an event that had no recorded decision, in ByRateRule.
const NoRecord = "(no decision)"

// CandidateVersion is one version of the candidate policy set.
type CandidateVersion struct {
	Program       string
	Version       int
	Digest        string
	EffectiveFrom time.Time
	File          string
	// Pinned: the only candidate version of its program, it decided every order of the
	// program whatever its effective_from or the order's pin (not ReplayOptions.AsDeployed).
	Pinned bool
	Orders int64 // events it decided
}

// RecordedVersion is a policy version that decided recorded decisions.
type RecordedVersion struct {
	Program string
	Version int
	Digest  string
	Orders  int64
}

// CurrencyTotal is the commission of the evaluated events in one currency.
type CurrencyTotal struct {
	Currency string
	Orders   int64
	Changed  int64 // events whose commission changed
	// Before is the recorded commission, After the candidate's, Diff = After − Before.
	Before, After, Diff apd.Decimal
}

// ReplayGroup is one group of a breakdown, in one currency.
type ReplayGroup struct {
	Key      string
	Currency string
	Orders   int64
	Changed  int64 // events whose commission changed
	Before   apd.Decimal
	After    apd.Decimal
	Diff     apd.Decimal
}

// RateRuleGroup is the events that went from one rate rule to another.
type RateRuleGroup struct {
	Old, New string // rate rule ids; "" for not qualified, NoRecord for no recorded decision
	ReplayGroup
}

// ReplayError is an event the candidate could not decide.
type ReplayError struct {
	EventID string
	Program string
	OrderID string
	Kind    string // see ErrorKind
	Reason  string
}

// Error kinds of events the candidate could not decide.
const (
	ErrorKindInvalid        = "invalid"         // the event is not a valid order
	ErrorKindUnknownProgram = "unknown_program" // the candidate has no version of its program
	ErrorKindNoPolicy       = "no_policy"       // no candidate version was in force at its time
	ErrorKindPinMissing     = "pin_missing"     // its order is pinned to a version the candidate lacks
	ErrorKindRule           = "rule_error"      // a rule failed to evaluate, no rate rule matched…
)

// ErrorKind classifies why an event could not be decided.
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

// DecisionSummary is one side of an order change.
type DecisionSummary struct {
	PolicyVersion int
	PolicyDigest  string
	Qualified     bool
	FailedRules   []string
	RateRule      string
	Rate          apd.Decimal
	Flat          apd.Decimal
	HasFlat       bool
	Commission    apd.Decimal
}

// Terms describes what the decision's rate rule paid: "6%", "USD 1.00", "6% + USD 1.00"; "" when
// not qualified.
func (s *DecisionSummary) Terms(currency string) string {
	if !s.Qualified {
		return ""
	}
	return terms(&s.Rate, &s.Flat, s.HasFlat, currency)
}

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
	Old         *DecisionSummary // nil when no decision was recorded
	New         DecisionSummary
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

// candidatePolicy returns the candidate version that decides an event (see
// ReplayOptions.AsDeployed).
func candidatePolicy(set *rules.Set, o *Order, rec *RecordedDecision, asDeployed bool) (*rules.Policy, error) {
	if vs := set.Versions(o.Program); !asDeployed && len(vs) == 1 {
		return vs[0], nil
	}
	if rec != nil && rec.Pinned && rec.Pin != nil {
		p, err := set.Version(o.Program, rec.Pin.Version)
		if err != nil || p.Digest != rec.Pin.Digest {
			return nil, fmt.Errorf("%w: order %s of program %s was first qualified by version %d (%s), which the candidate does not hold",
				ErrPinnedPolicyMissing, o.OrderID, o.Program, rec.Pin.Version, rec.Pin.Digest)
		}
		if p.Lifecycle.Terms != rules.TermsInForce {
			return p, nil
		}
	}
	return set.InForce(o.Program, o.PlacedAt)
}

// Replay decides every event of the history with the candidate policy set and compares each
// decision with the one recorded for the event. Which candidate version decides an order:
// see ReplayOptions.AsDeployed.
//
// Events are decided in parallel; each worker aggregates on its own and the results are merged,
// so memory stays bounded by the options (kept changes and errors), not by the history. It
// writes nothing anywhere. It fails only when the history cannot be read, ctx ends, or a total
// cannot be summed exactly; every event's own problem is counted in the report.
func Replay(ctx context.Context, candidate *rules.Set, h History, opts ReplayOptions) (*ReplayReport, error) {
	if candidate == nil {
		return nil, errors.New("replaying: no candidate policy set")
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if opts.MaxErrors <= 0 {
		opts.MaxErrors = 20
	}
	if opts.TopAffiliates <= 0 {
		opts.TopAffiliates = 10
	}
	eng := New(candidate)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	parts := []History{h}
	if ph, ok := h.(PartitionedHistory); ok && workers > 1 {
		ps, err := ph.Partitions(ctx, workers)
		if err != nil {
			return nil, fmt.Errorf("replaying: reading the history: %w", err)
		}
		parts = ps
	}
	var aggs []*replayAgg
	var wg sync.WaitGroup
	jobs := make(chan []ReplayEvent, workers*2)
	var walkErrs []error
	var walkers sync.WaitGroup
	if len(parts) > 1 && len(parts) >= workers {
		// At least as many parts as workers: each walker decides what it reads, in its own
		// goroutine, while the rows are still in its core's cache (no hand-over), and takes the
		// next part when done.
		walkErrs = make([]error, workers)
		var next atomic.Int64
		for w := range workers {
			a := newReplayAgg(eng, opts)
			aggs = append(aggs, a)
			walkers.Add(1)
			go func() {
				defer walkers.Done()
				decide := func(batch []ReplayEvent) error {
					for j := range batch {
						a.add(ctx, &batch[j])
					}
					if a.err != nil {
						return a.err
					}
					return ctx.Err()
				}
				for i := next.Add(1) - 1; i < int64(len(parts)); i = next.Add(1) - 1 {
					if walkErrs[w] = parts[i].Walk(ctx, decide); walkErrs[w] != nil {
						cancel() // the other walkers stop too
						return
					}
				}
			}()
		}
	} else {
		// Fewer parts than workers: each part's walker hands batches to a pool.
		for range workers {
			a := newReplayAgg(eng, opts)
			aggs = append(aggs, a)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for batch := range jobs {
					if a.err != nil || ctx.Err() != nil {
						continue // drain, so the walk never blocks
					}
					for j := range batch {
						a.add(ctx, &batch[j])
					}
					if a.err != nil {
						cancel()
					}
				}
			}()
		}
		send := func(batch []ReplayEvent) error {
			select {
			case jobs <- batch:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		walkErrs = make([]error, len(parts))
		for i, part := range parts {
			walkers.Add(1)
			go func() {
				defer walkers.Done()
				if walkErrs[i] = part.Walk(ctx, send); walkErrs[i] != nil {
					cancel() // the other parts stop too
				}
			}()
		}
	}
	walkers.Wait()
	close(jobs)
	wg.Wait()
	var walkErr error
	for _, err := range walkErrs {
		if err != nil && (walkErr == nil || errors.Is(walkErr, context.Canceled)) {
			walkErr = err
		}
	}
	for _, a := range aggs {
		if a.err != nil {
			return nil, fmt.Errorf("replaying: %w", a.err)
		}
	}
	if walkErr != nil {
		return nil, fmt.Errorf("replaying: reading the history: %w", walkErr)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("replaying: %w", err)
	}
	return mergeReplay(candidate, aggs, opts)
}

// sumCtx adds money without ever rounding: a sum that would not be exact is an error.
var sumCtx = apd.Context{
	Precision:   2000,
	MaxExponent: apd.MaxExponent,
	MinExponent: apd.MinExponent,
	Traps:       apd.DefaultTraps | apd.Inexact | apd.Rounded,
}

// money accumulates before and after amounts.
type money struct {
	orders, changed int64
	before, after   apd.Decimal
}

func (m *money) add(before, after *apd.Decimal, changed bool) error {
	m.orders++
	if changed {
		m.changed++
	}
	if !before.IsZero() {
		if _, err := sumCtx.Add(&m.before, &m.before, before); err != nil {
			return fmt.Errorf("summing commissions: %w", err)
		}
	}
	if !after.IsZero() {
		if _, err := sumCtx.Add(&m.after, &m.after, after); err != nil {
			return fmt.Errorf("summing commissions: %w", err)
		}
	}
	return nil
}

func (m *money) merge(o *money) error {
	m.orders += o.orders
	m.changed += o.changed
	if _, err := sumCtx.Add(&m.before, &m.before, &o.before); err != nil {
		return fmt.Errorf("summing commissions: %w", err)
	}
	if _, err := sumCtx.Add(&m.after, &m.after, &o.after); err != nil {
		return fmt.Errorf("summing commissions: %w", err)
	}
	return nil
}

type groupKey struct{ a, b, currency string }

// cellKey is an event's place in every breakdown.
type cellKey struct {
	oldRule, newRule, market, affiliate, currency string
	newBuyer                                      bool
}

type versionKey struct {
	program string
	version int
	digest  string
}

// replayAgg is one worker's share of a replay.
type replayAgg struct {
	eng  *Engine
	opts ReplayOptions
	err  error

	events, evaluated, unrecorded                   int64
	newlyQualified, newlyDisqualified               int64
	changed, commissionChanged                      int64
	sameVersion, drift, digestMismatch, changesSeen int64
	affiliateAssumed                                int64
	errors                                          map[string]int64
	errorSamples                                    bounded[ReplayError]

	candidates   map[*rules.Policy]int64
	recorded     map[versionKey]*int64
	lastRecorded versionKey
	lastCount    *int64
	// cells total the events by every breakdown's key at once (one map lookup per event);
	// the breakdowns are rolled up from them when the workers' shares are merged.
	cells map[cellKey]*money

	changes bounded[OrderChange]
	drifted bounded[OrderChange]
}

func newReplayAgg(eng *Engine, opts ReplayOptions) *replayAgg {
	return &replayAgg{
		eng: eng, opts: opts,
		errors:       map[string]int64{},
		errorSamples: bounded[ReplayError]{max: opts.MaxErrors, cmp: cmpReplayError},
		candidates:   map[*rules.Policy]int64{},
		recorded:     map[versionKey]*int64{},
		cells:        map[cellKey]*money{},
		changes:      bounded[OrderChange]{max: opts.MaxChanges, cmp: cmpOrderChange},
		drifted:      bounded[OrderChange]{max: opts.MaxChanges, cmp: cmpOrderChange},
	}
}

func (a *replayAgg) fail(ev *ReplayEvent, o *Order, err error) {
	kind := ErrorKind(err)
	a.errors[kind]++
	re := ReplayError{EventID: ev.Event.ID, Kind: kind, Reason: err.Error()}
	if o != nil {
		re.Program, re.OrderID = o.Program, o.OrderID
	} else if ie, ok := err.(*InputError); ok {
		re.OrderID = ie.OrderID
	}
	a.errorSamples.add(re)
}

func bucket(m map[groupKey]*money, k groupKey) *money {
	g := m[k]
	if g == nil {
		g = &money{}
		m[k] = g
	}
	return g
}

// add decides one event with the candidate and compares.
func (a *replayAgg) add(ctx context.Context, ev *ReplayEvent) {
	a.events++
	o, err := DecodeOrder(ev.Event.Raw)
	if err != nil {
		a.fail(ev, nil, err)
		return
	}
	rec := ev.Recorded
	p, err := candidatePolicy(a.eng.set, o, rec, a.opts.AsDeployed)
	if err != nil {
		a.fail(ev, o, err)
		return
	}
	if p.ReadsAffiliate() {
		// The affiliate's month as it stood when the event was decided, as recorded. A version
		// that reads it where the recorded one did not has none: the month counts as empty.
		if rec != nil && rec.Affiliate != nil {
			o.Affiliate.Month, o.Affiliate.QualifiedOrders = rec.Affiliate.Month, rec.Affiliate.QualifiedOrders
			o.Affiliate.QualifiedSales.Set(&rec.Affiliate.QualifiedSales)
		} else {
			o.Affiliate = AffiliateMonth{Month: MonthOf(o.PlacedAt)}
			a.affiliateAssumed++
		}
	}
	d, err := a.eng.DecideWith(ctx, p, o)
	if err != nil {
		if ctx.Err() != nil {
			return // the replay is being abandoned
		}
		a.fail(ev, o, err)
		return
	}
	a.evaluated++
	a.candidates[p]++

	var zero apd.Decimal
	before := &zero
	oldRule := NoRecord
	var diff decisionDiff
	same := false
	if rec == nil {
		a.unrecorded++
	} else {
		if k := (versionKey{o.Program, rec.PolicyVersion, rec.PolicyDigest}); k == a.lastRecorded && a.lastCount != nil {
			*a.lastCount++ // most events were recorded by the version the last one was
		} else {
			n := a.recorded[k]
			if n == nil {
				n = new(int64)
				a.recorded[k] = n
			}
			*n++
			a.lastRecorded, a.lastCount = k, n
		}
		before, oldRule = &rec.Commission, rec.RateRule
		diff = compareDecisions(d, rec)
		same = rec.PolicyVersion == p.Version && rec.PolicyDigest == p.Digest
		if rec.PolicyVersion == p.Version && rec.PolicyDigest != p.Digest {
			a.digestMismatch++
		}
		switch {
		case rec.Qualified && !d.Qualified:
			a.newlyDisqualified++
		case !rec.Qualified && d.Qualified:
			a.newlyQualified++
		}
		if diff.changed {
			a.changed++
		}
		if diff.commission {
			a.commissionChanged++
		}
	}
	var driftFields []string
	if same {
		a.sameVersion++
		if driftFields = driftOf(d, rec, &diff); len(driftFields) > 0 {
			a.drift++
		}
	}

	cur := d.Currency.Code
	commissionChanged := rec == nil && !d.Commission.IsZero() || diff.commission
	after := &d.Commission
	k := cellKey{oldRule: oldRule, newRule: d.RateRule, market: o.Buyer.Country, affiliate: o.AffiliateID, currency: cur, newBuyer: o.Buyer.New}
	cell := a.cells[k]
	if cell == nil {
		cell = &money{}
		a.cells[k] = cell
	}
	if err := cell.add(before, after, commissionChanged); err != nil {
		a.err = err
		return
	}

	listed, drifted := rec == nil || diff.changed, len(driftFields) > 0
	if !listed && !drifted {
		return
	}
	if listed {
		a.changesSeen++
	}
	ch := OrderChange{EventID: ev.Event.ID, Program: o.Program, OrderID: o.OrderID, PlacedAt: o.PlacedAt}
	if !(listed && a.changes.wants(ch)) && !(drifted && a.drifted.wants(ch)) {
		return // beyond what the report keeps: no need to work out the details
	}
	ch.AffiliateID, ch.Currency, ch.Market, ch.NewBuyer = o.AffiliateID, cur, o.Buyer.Country, o.Buyer.New
	ch.New = DecisionSummary{
		PolicyVersion: d.PolicyVersion, PolicyDigest: d.PolicyDigest, Qualified: d.Qualified,
		FailedRules: d.FailedRules, RateRule: d.RateRule, HasFlat: d.hasFlat,
	}
	ch.New.Rate.Set(&d.Rate)
	ch.New.Flat.Set(&d.Flat)
	ch.New.Commission.Set(&d.Commission)
	ch.Drift, ch.DriftFields = drifted, driftFields
	if rec == nil {
		ch.Cause = Cause{Kind: CauseNoRecord}
	} else {
		old := &DecisionSummary{
			PolicyVersion: rec.PolicyVersion, PolicyDigest: rec.PolicyDigest, Qualified: rec.Qualified,
			FailedRules: rec.FailedRules, RateRule: rec.RateRule, HasFlat: rec.HasFlat,
		}
		old.Rate.Set(&rec.Rate)
		old.Flat.Set(&rec.Flat)
		old.Commission.Set(&rec.Commission)
		ch.Old = old
		ch.Cause = causeOf(d, rec)
	}
	if listed {
		a.changes.add(ch)
	}
	if drifted {
		a.drifted.add(ch)
	}
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

// bounded keeps the smallest max items by cmp (all when max ≤ 0); compact sorts them.
type bounded[T any] struct {
	max   int
	cmp   func(a, b T) int
	items []T
	// limit, once max items were kept, is the largest of them at the last compaction: nothing
	// above it can be among the smallest max any more.
	limit    T
	hasLimit bool
}

// wants reports whether x could still be among the smallest max.
func (b *bounded[T]) wants(x T) bool {
	return b.max <= 0 || !b.hasLimit || b.cmp(x, b.limit) < 0
}

func (b *bounded[T]) add(x T) {
	if !b.wants(x) {
		return
	}
	b.items = append(b.items, x)
	if b.max > 0 && len(b.items) >= 2*b.max {
		b.compact()
	}
}

// compact sorts the items and keeps the smallest max.
func (b *bounded[T]) compact() {
	slices.SortFunc(b.items, b.cmp)
	if b.max > 0 && len(b.items) >= b.max {
		clear(b.items[b.max:])
		b.items = b.items[:b.max]
		b.limit, b.hasLimit = b.items[b.max-1], true
	}
}

func cmpOrderChange(a, b OrderChange) int {
	return cmp.Or(a.PlacedAt.Compare(b.PlacedAt), cmp.Compare(a.Program, b.Program),
		cmp.Compare(a.OrderID, b.OrderID), cmp.Compare(a.EventID, b.EventID))
}

func cmpReplayError(a, b ReplayError) int {
	return cmp.Or(cmp.Compare(a.Program, b.Program), cmp.Compare(a.OrderID, b.OrderID), cmp.Compare(a.EventID, b.EventID))
}

// mergeReplay combines the workers' aggregates into the report, in a deterministic order.
func mergeReplay(candidate *rules.Set, aggs []*replayAgg, opts ReplayOptions) (*ReplayReport, error) {
	r := &ReplayReport{Errors: map[string]int64{}}
	candidates := map[*rules.Policy]int64{}
	recorded := map[versionKey]int64{}
	cells := map[cellKey]*money{}
	changes := bounded[OrderChange]{max: opts.MaxChanges, cmp: cmpOrderChange}
	drifted := bounded[OrderChange]{max: opts.MaxChanges, cmp: cmpOrderChange}
	errorSamples := bounded[ReplayError]{max: opts.MaxErrors, cmp: cmpReplayError}
	for _, a := range aggs {
		r.Events += a.events
		r.Evaluated += a.evaluated
		r.Unrecorded += a.unrecorded
		r.NewlyQualified += a.newlyQualified
		r.NewlyDisqualified += a.newlyDisqualified
		r.Changed += a.changed
		r.CommissionChanged += a.commissionChanged
		r.SameVersion += a.sameVersion
		r.Drift += a.drift
		r.DigestMismatch += a.digestMismatch
		r.AffiliateAssumed += a.affiliateAssumed
		r.ChangesTotal += a.changesSeen
		for k, n := range a.errors {
			r.Errors[k] += n
		}
		for p, n := range a.candidates {
			candidates[p] += n
		}
		for k, n := range a.recorded {
			recorded[k] += *n
		}
		for k, m := range a.cells {
			c := cells[k]
			if c == nil {
				c = &money{}
				cells[k] = c
			}
			if err := c.merge(m); err != nil {
				return nil, err
			}
		}
		for _, c := range a.changes.items {
			changes.add(c)
		}
		for _, c := range a.drifted.items {
			drifted.add(c)
		}
		for _, e := range a.errorSamples.items {
			errorSamples.add(e)
		}
	}
	changes.compact()
	drifted.compact()
	errorSamples.compact()
	r.Changes, r.Drifted, r.ErrorSamples = changes.items, drifted.items, errorSamples.items

	for _, prog := range candidate.Programs() {
		vs := candidate.Versions(prog)
		for _, p := range vs {
			r.Candidates = append(r.Candidates, CandidateVersion{Program: p.Program, Version: p.Version, Digest: p.Digest,
				EffectiveFrom: p.EffectiveFrom, File: p.File, Pinned: !opts.AsDeployed && len(vs) == 1, Orders: candidates[p]})
		}
	}
	for k, n := range recorded {
		r.Recorded = append(r.Recorded, RecordedVersion{Program: k.program, Version: k.version, Digest: k.digest, Orders: n})
	}
	slices.SortFunc(r.Recorded, func(a, b RecordedVersion) int {
		return cmp.Or(cmp.Compare(a.Program, b.Program), cmp.Compare(a.Version, b.Version), cmp.Compare(a.Digest, b.Digest))
	})

	// Roll the cells up into the total and each breakdown.
	totals := map[string]*money{}
	byRate, byMarket, byBuyer, byAff := map[groupKey]*money{}, map[groupKey]*money{}, map[groupKey]*money{}, map[groupKey]*money{}
	for k, m := range cells {
		buyer := "returning"
		if k.newBuyer {
			buyer = "new"
		}
		t := totals[k.currency]
		if t == nil {
			t = &money{}
			totals[k.currency] = t
		}
		for _, g := range [...]*money{t,
			bucket(byRate, groupKey{k.oldRule, k.newRule, k.currency}),
			bucket(byMarket, groupKey{k.market, "", k.currency}),
			bucket(byBuyer, groupKey{buyer, "", k.currency}),
			bucket(byAff, groupKey{k.affiliate, "", k.currency}),
		} {
			if err := g.merge(m); err != nil {
				return nil, err
			}
		}
	}
	for cur, m := range totals {
		t := CurrencyTotal{Currency: cur, Orders: m.orders, Changed: m.changed}
		if err := amounts(cur, m, &t.Before, &t.After, &t.Diff); err != nil {
			return nil, err
		}
		r.Totals = append(r.Totals, t)
	}
	slices.SortFunc(r.Totals, func(a, b CurrencyTotal) int { return cmp.Compare(a.Currency, b.Currency) })

	group := func(k groupKey, m *money) (ReplayGroup, error) {
		g := ReplayGroup{Key: k.a, Currency: k.currency, Orders: m.orders, Changed: m.changed}
		return g, amounts(k.currency, m, &g.Before, &g.After, &g.Diff)
	}
	groups := func(src map[groupKey]*money) ([]ReplayGroup, error) {
		out := make([]ReplayGroup, 0, len(src))
		for k, m := range src {
			g, err := group(k, m)
			if err != nil {
				return nil, fmt.Errorf("summing commissions: %w", err)
			}
			out = append(out, g)
		}
		slices.SortFunc(out, func(a, b ReplayGroup) int {
			return cmp.Or(cmp.Compare(a.Key, b.Key), cmp.Compare(a.Currency, b.Currency))
		})
		return out, nil
	}
	var err error
	if r.ByMarket, err = groups(byMarket); err != nil {
		return nil, err
	}
	if r.ByBuyer, err = groups(byBuyer); err != nil {
		return nil, err
	}
	for k, m := range byRate {
		g, err := group(k, m)
		if err != nil {
			return nil, fmt.Errorf("summing commissions: %w", err)
		}
		r.ByRateRule = append(r.ByRateRule, RateRuleGroup{Old: k.a, New: k.b, ReplayGroup: g})
	}
	slices.SortFunc(r.ByRateRule, func(a, b RateRuleGroup) int {
		return cmp.Or(cmp.Compare(a.Old, b.Old), cmp.Compare(a.New, b.New), cmp.Compare(a.Currency, b.Currency))
	})

	affs, err := groups(byAff)
	if err != nil {
		return nil, err
	}
	perCurrency := map[string][]ReplayGroup{}
	for _, g := range affs {
		if !g.Diff.IsZero() {
			perCurrency[g.Currency] = append(perCurrency[g.Currency], g)
		}
	}
	for _, cur := range sortedKeys(perCurrency) {
		gs := perCurrency[cur]
		slices.SortFunc(gs, func(a, b ReplayGroup) int {
			var x, y apd.Decimal
			x.Abs(&a.Diff)
			y.Abs(&b.Diff)
			return cmp.Or(y.Cmp(&x), cmp.Compare(a.Key, b.Key))
		})
		r.TopAffiliates = append(r.TopAffiliates, gs[:min(len(gs), opts.TopAffiliates)]...)
	}
	return r, nil
}

// amounts sets before, after and their difference, each written with the currency's minor
// units (a sum of nothing is 0.00 in USD, not 0).
func amounts(currency string, m *money, before, after, diff *apd.Decimal) error {
	before.Set(&m.before)
	after.Set(&m.after)
	if _, err := sumCtx.Sub(diff, &m.after, &m.before); err != nil {
		return fmt.Errorf("summing commissions: %w", err)
	}
	c, ok := LookupCurrency(currency)
	if !ok {
		return nil
	}
	for _, d := range []*apd.Decimal{before, after, diff} {
		if d.Exponent > -c.MinorUnits {
			if _, err := sumCtx.Quantize(d, d, -c.MinorUnits); err != nil {
				return fmt.Errorf("summing commissions: %w", err)
			}
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// EventFilter selects stored events for a replay (a History). Zero fields select everything.
type EventFilter struct {
	Program   string
	From, To  time.Time // placed_at in [From, To); a zero time is unbounded
	Affiliate string
	// LatestPerOrder keeps only the latest event of each (program, order): the highest stream
	// sequence, then the latest stored.
	LatestPerOrder bool
}
