package engine

// The replay report and its assembly from the workers' aggregates.

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/rules"
)

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

// mergeReplay combines the workers' aggregates into the report, in a deterministic order.
func mergeReplay(candidate *rules.Set, aggs []*replayAgg, opts ReplayOptions) (*ReplayReport, error) {
	r := &ReplayReport{Errors: map[string]int64{}}
	m := newReplayMerge(opts)
	for _, a := range aggs {
		r.addCounts(a)
		if err := m.add(a); err != nil {
			return nil, err
		}
	}
	m.changes.compact()
	m.drifted.compact()
	m.errorSamples.compact()
	r.Changes, r.Drifted, r.ErrorSamples = m.changes.items, m.drifted.items, m.errorSamples.items
	r.Candidates = candidateVersions(candidate, m.candidates, opts.AsDeployed)
	r.Recorded = recordedVersions(m.recorded)
	if err := r.setBreakdowns(m.cells, opts.TopAffiliates); err != nil {
		return nil, err
	}
	return r, nil
}

// addCounts adds a worker's counts to the report's.
func (r *ReplayReport) addCounts(a *replayAgg) {
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
}

// replayMerge is the workers' aggregates combined, before the report is assembled from them.
type replayMerge struct {
	candidates   map[*rules.Policy]int64
	recorded     map[versionKey]int64
	cells        map[cellKey]*money
	changes      bounded[OrderChange]
	drifted      bounded[OrderChange]
	errorSamples bounded[ReplayError]
}

func newReplayMerge(opts ReplayOptions) *replayMerge {
	return &replayMerge{
		candidates:   map[*rules.Policy]int64{},
		recorded:     map[versionKey]int64{},
		cells:        map[cellKey]*money{},
		changes:      bounded[OrderChange]{max: opts.MaxChanges, cmp: cmpOrderChange},
		drifted:      bounded[OrderChange]{max: opts.MaxChanges, cmp: cmpOrderChange},
		errorSamples: bounded[ReplayError]{max: opts.MaxErrors, cmp: cmpReplayError},
	}
}

// add combines one worker's aggregate with the others'.
func (m *replayMerge) add(a *replayAgg) error {
	for p, n := range a.candidates {
		m.candidates[p] += n
	}
	for k, n := range a.recorded {
		m.recorded[k] += *n
	}
	for k, c := range a.cells {
		if err := bucket(m.cells, k).merge(c); err != nil {
			return err
		}
	}
	for _, c := range a.changes.items {
		m.changes.add(c)
	}
	for _, c := range a.drifted.items {
		m.drifted.add(c)
	}
	for _, e := range a.errorSamples.items {
		m.errorSamples.add(e)
	}
	return nil
}

// candidateVersions lists every version of the candidate set, by program and version, with
// the events each decided.
func candidateVersions(candidate *rules.Set, decided map[*rules.Policy]int64, asDeployed bool) []CandidateVersion {
	var out []CandidateVersion
	for _, prog := range candidate.Programs() {
		vs := candidate.Versions(prog)
		for _, p := range vs {
			out = append(out, CandidateVersion{Program: p.Program, Version: p.Version, Digest: p.Digest,
				EffectiveFrom: p.EffectiveFrom, File: p.File, Pinned: !asDeployed && len(vs) == 1, Orders: decided[p]})
		}
	}
	return out
}

// recordedVersions lists the versions that decided the recorded decisions, sorted.
func recordedVersions(recorded map[versionKey]int64) []RecordedVersion {
	var out []RecordedVersion
	for k, n := range recorded {
		out = append(out, RecordedVersion{Program: k.program, Version: k.version, Digest: k.digest, Orders: n})
	}
	slices.SortFunc(out, func(a, b RecordedVersion) int {
		return cmp.Or(cmp.Compare(a.Program, b.Program), cmp.Compare(a.Version, b.Version), cmp.Compare(a.Digest, b.Digest))
	})
	return out
}

// breakdowns are the cells rolled up into the totals per currency and each breakdown's groups.
type breakdowns struct {
	totals                           map[string]*money
	byRate, byMarket, byBuyer, byAff map[groupKey]*money
}

// rollUp adds every cell to its currency's total and to its group in each breakdown.
func rollUp(cells map[cellKey]*money) (*breakdowns, error) {
	b := &breakdowns{totals: map[string]*money{},
		byRate: map[groupKey]*money{}, byMarket: map[groupKey]*money{}, byBuyer: map[groupKey]*money{}, byAff: map[groupKey]*money{}}
	for k, m := range cells {
		buyer := "returning"
		if k.newBuyer {
			buyer = "new"
		}
		for _, g := range [...]*money{
			bucket(b.totals, k.currency),
			bucket(b.byRate, groupKey{k.oldRule, k.newRule, k.currency}),
			bucket(b.byMarket, groupKey{k.market, "", k.currency}),
			bucket(b.byBuyer, groupKey{buyer, "", k.currency}),
			bucket(b.byAff, groupKey{k.affiliate, "", k.currency}),
		} {
			if err := g.merge(m); err != nil {
				return nil, err
			}
		}
	}
	return b, nil
}

// setBreakdowns sets the report's totals and breakdowns from the merged cells, listing at most
// top affiliates per currency.
func (r *ReplayReport) setBreakdowns(cells map[cellKey]*money, top int) error {
	b, err := rollUp(cells)
	if err != nil {
		return err
	}
	if r.Totals, err = currencyTotals(b.totals); err != nil {
		return err
	}
	if r.ByMarket, err = replayGroups(b.byMarket); err != nil {
		return err
	}
	if r.ByBuyer, err = replayGroups(b.byBuyer); err != nil {
		return err
	}
	if r.ByRateRule, err = rateRuleGroups(b.byRate); err != nil {
		return err
	}
	r.TopAffiliates, err = topAffiliates(b.byAff, top)
	return err
}

// currencyTotals lists the totals per currency, by currency.
func currencyTotals(totals map[string]*money) ([]CurrencyTotal, error) {
	var out []CurrencyTotal
	for cur, m := range totals {
		t := CurrencyTotal{Currency: cur, Orders: m.orders, Changed: m.changed}
		if err := amounts(cur, m, &t.Before, &t.After, &t.Diff); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b CurrencyTotal) int { return cmp.Compare(a.Currency, b.Currency) })
	return out, nil
}

func replayGroup(k groupKey, m *money) (ReplayGroup, error) {
	g := ReplayGroup{Key: k.a, Currency: k.currency, Orders: m.orders, Changed: m.changed}
	return g, amounts(k.currency, m, &g.Before, &g.After, &g.Diff)
}

// replayGroups lists a breakdown's groups, by key and currency.
func replayGroups(src map[groupKey]*money) ([]ReplayGroup, error) {
	out := make([]ReplayGroup, 0, len(src))
	for k, m := range src {
		g, err := replayGroup(k, m)
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

// rateRuleGroups lists the groups by recorded and candidate rate rule, by both and currency.
func rateRuleGroups(src map[groupKey]*money) ([]RateRuleGroup, error) {
	var out []RateRuleGroup
	for k, m := range src {
		g, err := replayGroup(k, m)
		if err != nil {
			return nil, fmt.Errorf("summing commissions: %w", err)
		}
		out = append(out, RateRuleGroup{Old: k.a, New: k.b, ReplayGroup: g})
	}
	slices.SortFunc(out, func(a, b RateRuleGroup) int {
		return cmp.Or(cmp.Compare(a.Old, b.Old), cmp.Compare(a.New, b.New), cmp.Compare(a.Currency, b.Currency))
	})
	return out, nil
}

// topAffiliates lists, per currency, the top affiliates whose total changed, the largest
// absolute differences first.
func topAffiliates(byAff map[groupKey]*money, top int) ([]ReplayGroup, error) {
	affs, err := replayGroups(byAff)
	if err != nil {
		return nil, err
	}
	perCurrency := map[string][]ReplayGroup{}
	for _, g := range affs {
		if !g.Diff.IsZero() {
			perCurrency[g.Currency] = append(perCurrency[g.Currency], g)
		}
	}
	var out []ReplayGroup
	for _, cur := range sortedKeys(perCurrency) {
		gs := perCurrency[cur]
		slices.SortFunc(gs, func(a, b ReplayGroup) int {
			var x, y apd.Decimal
			x.Abs(&a.Diff)
			y.Abs(&b.Diff)
			return cmp.Or(y.Cmp(&x), cmp.Compare(a.Key, b.Key))
		})
		out = append(out, gs[:min(len(gs), top)]...)
	}
	return out, nil
}

// amounts sets before, after and their difference, each written with the currency's minor
// units (a sum of nothing is 0.00 in USD, not 0).
func amounts(currency string, m *money, before, after, diff *apd.Decimal) error {
	before.Set(&m.before)
	after.Set(&m.after)
	if _, err := SumContext.Sub(diff, &m.after, &m.before); err != nil {
		return fmt.Errorf("summing commissions: %w", err)
	}
	c, ok := LookupCurrency(currency)
	if !ok {
		return nil
	}
	for _, d := range []*apd.Decimal{before, after, diff} {
		if d.Exponent > -c.MinorUnits {
			if _, err := SumContext.Quantize(d, d, -c.MinorUnits); err != nil {
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
