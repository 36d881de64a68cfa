package engine

// One replay worker's aggregate: it decides each event with the candidate, compares, and totals
// the commissions by every breakdown's key; the bounded lists of changes and errors it keeps.

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/rules"
)

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
		if _, err := SumContext.Add(&m.before, &m.before, before); err != nil {
			return fmt.Errorf("summing commissions: %w", err)
		}
	}
	if !after.IsZero() {
		if _, err := SumContext.Add(&m.after, &m.after, after); err != nil {
			return fmt.Errorf("summing commissions: %w", err)
		}
	}
	return nil
}

func (m *money) merge(o *money) error {
	m.orders += o.orders
	m.changed += o.changed
	if _, err := SumContext.Add(&m.before, &m.before, &o.before); err != nil {
		return fmt.Errorf("summing commissions: %w", err)
	}
	if _, err := SumContext.Add(&m.after, &m.after, &o.after); err != nil {
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

	// alike remembers the last pair of versions compared by rulesAlike (a sweep's points have
	// one version each, so one pair is all there is).
	alike alikePair
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

// bucket is m's total for k, added when there is none yet.
func bucket[K comparable](m map[K]*money, k K) *money {
	g := m[k]
	if g == nil {
		g = &money{}
		m[k] = g
	}
	return g
}

// addBatch decides a batch of events with the candidate and compares each.
func (a *replayAgg) addBatch(ctx context.Context, batch []ReplayEvent) {
	for j := range batch {
		a.add(ctx, &batch[j])
	}
}

// failure is what stopped the aggregate (a total that could not be summed exactly), or nil.
func (a *replayAgg) failure() error { return a.err }

// add decides one event with the candidate and compares.
func (a *replayAgg) add(ctx context.Context, ev *ReplayEvent) {
	o, err := DecodeOrder(ev.Event.Raw)
	a.addDecoded(ctx, ev, o, err, nil)
}

// addDecoded is add with the event already decoded (o, or the decoding's error): a sweep
// decodes each event once for all its points' aggregates. like, when not nil, is another
// candidate's decision of the same order: when the version that decides it here has the same
// rules (rulesAlike), its decision is like's outcomes with this version's terms, not evaluated
// again. It returns the decision (nil when there is none). It may set o's affiliate month (to
// the recorded one, or an empty one), and never changes anything else of it.
func (a *replayAgg) addDecoded(ctx context.Context, ev *ReplayEvent, o *Order, decodeErr error, like *Decision) *Decision {
	a.events++
	if decodeErr != nil {
		a.fail(ev, nil, decodeErr)
		return nil
	}
	p, d := a.decide(ctx, ev, o, like)
	if d == nil {
		return nil
	}
	a.evaluated++
	a.candidates[p]++
	a.compare(ev, o, p, d)
	return d
}

// decide decides the event's order with the candidate version that decides it, as the recorded
// decision was made (the affiliate's month it recorded); from like when it can (see
// addDecoded). It returns a nil decision when the event could not be decided (counted, and kept
// as a sample) or the replay is being abandoned.
func (a *replayAgg) decide(ctx context.Context, ev *ReplayEvent, o *Order, like *Decision) (*rules.Policy, *Decision) {
	rec := ev.Recorded
	p, err := candidatePolicy(a.eng.set, o, rec, a.opts.AsDeployed)
	if err != nil {
		a.fail(ev, o, err)
		return nil, nil
	}
	if p.ReadsAffiliate() {
		a.setAffiliate(o, rec)
	}
	var d *Decision
	if like != nil && a.alike.same(like.Policy, p) {
		d, err = like.withTermsOf(p, o)
	} else {
		d, err = a.eng.DecideWith(ctx, p, o)
	}
	if err != nil {
		if ctx.Err() == nil { // else the replay is being abandoned
			a.fail(ev, o, err)
		}
		return nil, nil
	}
	return p, d
}

// setAffiliate gives the order the affiliate's month as it stood when the event was decided, as
// recorded. A version that reads it where the recorded one did not has none: the month counts as
// empty.
func (a *replayAgg) setAffiliate(o *Order, rec *RecordedDecision) {
	if rec != nil && rec.Affiliate != nil {
		o.Affiliate.Month, o.Affiliate.QualifiedOrders = rec.Affiliate.Month, rec.Affiliate.QualifiedOrders
		o.Affiliate.QualifiedSales.Set(&rec.Affiliate.QualifiedSales)
		return
	}
	o.Affiliate = AffiliateMonth{Month: MonthOf(o.PlacedAt)}
	a.affiliateAssumed++
}

// compare compares the candidate's decision d (by version p) with the recorded one: it counts
// what differs, adds the commissions to the event's cell, and keeps the change or the drift.
func (a *replayAgg) compare(ev *ReplayEvent, o *Order, p *rules.Policy, d *Decision) {
	rec := ev.Recorded
	var zero apd.Decimal
	before := &zero
	oldRule := NoRecord
	var diff decisionDiff
	same := false
	if rec == nil {
		a.unrecorded++
	} else {
		a.countRecorded(versionKey{o.Program, rec.PolicyVersion, rec.PolicyDigest})
		before, oldRule = &rec.Commission, rec.RateRule
		diff = compareDecisions(d, rec)
		same = rec.PolicyVersion == p.Version && rec.PolicyDigest == p.Digest
		a.countDifferences(rec, p, d, &diff)
	}
	var driftFields []string
	if same {
		a.sameVersion++
		if driftFields = driftOf(d, rec, &diff); len(driftFields) > 0 {
			a.drift++
		}
	}

	commissionChanged := rec == nil && !d.Commission.IsZero() || diff.commission
	k := cellKey{oldRule: oldRule, newRule: d.RateRule, market: o.Buyer.Country, affiliate: o.AffiliateID, currency: d.Currency.Code, newBuyer: o.Buyer.New}
	if err := bucket(a.cells, k).add(before, &d.Commission, commissionChanged); err != nil {
		a.err = err
		return
	}
	a.keep(ev, o, d, rec == nil || diff.changed, driftFields)
}

// countRecorded counts an event recorded by version k.
func (a *replayAgg) countRecorded(k versionKey) {
	if k == a.lastRecorded && a.lastCount != nil {
		*a.lastCount++ // most events were recorded by the version the last one was
		return
	}
	n := a.recorded[k]
	if n == nil {
		n = new(int64)
		a.recorded[k] = n
	}
	*n++
	a.lastRecorded, a.lastCount = k, n
}

// countDifferences counts how the candidate's decision d, by version p, differs from the
// recorded one.
func (a *replayAgg) countDifferences(rec *RecordedDecision, p *rules.Policy, d *Decision, diff *decisionDiff) {
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

// keep keeps the event's change (listed: its decision changed, or none was recorded) and its
// drift (driftFields: what a decision by the recorded version itself did not reproduce), as far
// as the report's bounded lists want them.
func (a *replayAgg) keep(ev *ReplayEvent, o *Order, d *Decision, listed bool, driftFields []string) {
	drifted := len(driftFields) > 0
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
	ch.AffiliateID, ch.Currency, ch.Market, ch.NewBuyer = o.AffiliateID, d.Currency.Code, o.Buyer.Country, o.Buyer.New
	ch.New = d.summary()
	ch.Drift, ch.DriftFields = drifted, driftFields
	if rec := ev.Recorded; rec == nil {
		ch.Cause = Cause{Kind: CauseNoRecord}
	} else {
		ch.Old = rec.summary()
		ch.Cause = causeOf(d, rec)
	}
	if listed {
		a.changes.add(ch)
	}
	if drifted {
		a.drifted.add(ch)
	}
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
