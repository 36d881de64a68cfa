package engine

// The shadow report: the stored outcomes of a shadow version set beside the live decisions of
// the same events, summed like a replay's (live as before, shadow as after): totals per currency,
// the live × shadow qualification matrix, breakdowns by rate rule, by the first rule that
// differed, by market and by buyer, the orders that diverged most. It decides nothing: both
// sides were decided by the pass (engine.Pass), and the report only reads them.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/apd/v3"
)

// ShadowOutcome is a shadow version's stored outcome for one event (a ShadowRow read back).
type ShadowOutcome struct {
	Program     string
	Version     int
	Digest      string
	Qualified   bool
	FailedRules []string
	RateRule    string
	Rate, Flat  apd.Decimal
	HasFlat     bool
	Commission  apd.Decimal
	Currency    string
	// Diverged: it decided otherwise than the live decision; Cause is the first rule that
	// differed.
	Diverged bool
	Cause    Cause
	// ErrorKind and Error: the shadow could not decide the event ("" when it did).
	ErrorKind, Error string
}

// Verdict is the shadow's side of a comparison.
func (s *ShadowOutcome) Verdict() Verdict {
	v := Verdict{PolicyVersion: s.Version, PolicyDigest: s.Digest, Qualified: s.Qualified, FailedRules: s.FailedRules,
		RateRule: s.RateRule, HasFlat: s.HasFlat, Currency: s.Currency}
	v.Rate.Set(&s.Rate)
	v.Flat.Set(&s.Flat)
	v.Commission.Set(&s.Commission)
	return v
}

// ShadowEvent is one event a shadow version decided, with the live decision of the same event.
type ShadowEvent struct {
	Event Event // its id, stream sequence and raw bytes (market and buyer are read from them)
	// Live is the event's live decision; Shadow the shadow's outcome.
	Live   *RecordedDecision
	Shadow ShadowOutcome
	// Latest: the event is its order's latest one the shadow version decided. Only those are
	// compared and summed (an order counts once, as replay's latest event per order); every
	// event is counted in ShadowReport.Events.
	Latest bool
}

// ShadowHistory is the stored shadow outcomes a report reads (the store implements it).
type ShadowHistory interface {
	// Walk calls fn with successive batches of shadow outcomes, each with its event's live
	// decision, from one goroutine, until every one was passed or fn returns an error, which
	// Walk returns (unwrapped). A batch belongs to fn once passed. A cancelled ctx stops the walk
	// with an error wrapping ctx's. Walk closes nothing it was given.
	Walk(ctx context.Context, fn func(batch []ShadowEvent) error) error
}

// ShadowReportOptions tune a shadow report. The zero value is ready to use.
type ShadowReportOptions struct {
	// MaxOrders bounds the diverging orders listed (the largest commission differences first);
	// ≤ 0 means 20. Every one is counted.
	MaxOrders int
	// TopAffiliates per currency (≤ 0: 10), MaxErrors listed (≤ 0: 20).
	TopAffiliates int
	MaxErrors     int
}

// ShadowVersion is a shadow version the report read outcomes of.
type ShadowVersion struct {
	Program string
	Version int
	Digest  string
	Events  int64 // its outcomes read, every event
	Orders  int64 // the orders compared (each order's latest event)
}

// QualificationMatrix counts the compared orders by whether the live decision and the shadow
// qualified them.
type QualificationMatrix struct {
	BothQualified  int64 // live qualified, shadow qualified
	LiveOnly       int64 // live qualified, shadow not (newly disqualified)
	ShadowOnly     int64 // live not, shadow qualified (newly qualified)
	NeitherQualify int64
}

// ShadowReport is what a shadow version did beside the live decisions. Money is exact, per
// currency; before is the live commission, after the shadow's.
type ShadowReport struct {
	Shadows []ShadowVersion
	Live    []RecordedVersion // the live versions that decided the compared orders

	Events   int64 // shadow outcomes read: every event
	Compared int64 // orders compared: each order's latest event, decided by the shadow
	// Errors counts the orders (latest events) the shadow could not decide, by kind; they are
	// in no total.
	Errors       map[string]int64
	ErrorSamples []ReplayError

	Matrix            QualificationMatrix
	Diverged          int64 // compared orders the shadow decided otherwise in any way
	CommissionChanged int64

	Totals        []CurrencyTotal
	ByRateRule    []RateRuleGroup // live rate rule → shadow rate rule ("" not qualified)
	ByCause       []ReplayGroup   // diverged orders by the first rule whose outcome differed (Cause.String())
	ByMarket      []ReplayGroup
	ByBuyer       []ReplayGroup
	TopAffiliates []ReplayGroup

	// Diverging are the diverged orders with the largest absolute commission differences (then
	// by placed_at, program, order id); at most MaxOrders of DivergingTotal (= Diverged).
	Diverging      []OrderChange
	DivergingTotal int64
}

// ShadowReportOf reads every shadow outcome of h and sums them against the live decisions. It
// fails only when the history cannot be read, ctx ends, or a total cannot be summed exactly.
func ShadowReportOf(ctx context.Context, h ShadowHistory, opts ShadowReportOptions) (*ShadowReport, error) {
	if opts.MaxOrders <= 0 {
		opts.MaxOrders = 20
	}
	if opts.TopAffiliates <= 0 {
		opts.TopAffiliates = 10
	}
	if opts.MaxErrors <= 0 {
		opts.MaxErrors = 20
	}
	a := &shadowAgg{
		rep:      &ShadowReport{Errors: map[string]int64{}},
		versions: map[versionKey]*ShadowVersion{},
		live:     map[versionKey]int64{},
		cells:    map[cellKey]*money{},
		causes:   map[groupKey]*money{},
		errors:   bounded[ReplayError]{max: opts.MaxErrors, cmp: cmpReplayError},
		top:      bounded[OrderChange]{max: opts.MaxOrders, cmp: cmpDivergence},
	}
	if err := h.Walk(ctx, func(batch []ShadowEvent) error {
		for i := range batch {
			if err := a.add(&batch[i]); err != nil {
				return err
			}
		}
		return ctx.Err()
	}); err != nil {
		return nil, fmt.Errorf("reading the shadow outcomes: %w", err)
	}
	return a.report(opts)
}

// shadowAgg sums a shadow report.
type shadowAgg struct {
	rep      *ShadowReport
	versions map[versionKey]*ShadowVersion
	live     map[versionKey]int64
	cells    map[cellKey]*money
	causes   map[groupKey]*money
	errors   bounded[ReplayError]
	top      bounded[OrderChange]
}

func (a *shadowAgg) add(ev *ShadowEvent) error {
	r, s := a.rep, &ev.Shadow
	r.Events++
	vk := versionKey{s.Program, s.Version, s.Digest}
	v := a.versions[vk]
	if v == nil {
		v = &ShadowVersion{Program: s.Program, Version: s.Version, Digest: s.Digest}
		a.versions[vk] = v
	}
	v.Events++
	if !ev.Latest || ev.Live == nil {
		return nil
	}
	v.Orders++
	o, err := DecodeOrder(ev.Event.Raw)
	if err != nil { // a stored decision's event always decodes; say which one did not
		return fmt.Errorf("event %s: %w", ev.Event.ID, err)
	}
	if s.ErrorKind != "" {
		r.Errors[s.ErrorKind]++
		a.errors.add(ReplayError{EventID: ev.Event.ID, Program: o.Program, OrderID: o.OrderID, Kind: s.ErrorKind, Reason: s.Error})
		return nil
	}
	live := ev.Live
	r.Compared++
	a.live[versionKey{o.Program, live.PolicyVersion, live.PolicyDigest}]++
	switch {
	case live.Qualified && s.Qualified:
		r.Matrix.BothQualified++
	case live.Qualified:
		r.Matrix.LiveOnly++
	case s.Qualified:
		r.Matrix.ShadowOnly++
	default:
		r.Matrix.NeitherQualify++
	}
	commissionChanged := live.Commission.Cmp(&s.Commission) != 0 || live.Currency != s.Currency
	diverged := s.Diverged || s.Cause.Kind != CauseNone || commissionChanged || live.Qualified != s.Qualified || live.RateRule != s.RateRule
	if commissionChanged {
		r.CommissionChanged++
	}
	k := cellKey{oldRule: live.RateRule, newRule: s.RateRule, market: o.Buyer.Country, affiliate: o.AffiliateID, currency: s.Currency, newBuyer: o.Buyer.New}
	if err := bucket(a.cells, k).add(&live.Commission, &s.Commission, commissionChanged); err != nil {
		return err
	}
	if !diverged {
		return nil
	}
	r.Diverged++
	if err := bucket(a.causes, groupKey{s.Cause.String(), "", s.Currency}).add(&live.Commission, &s.Commission, commissionChanged); err != nil {
		return err
	}
	ch := OrderChange{EventID: ev.Event.ID, Program: o.Program, OrderID: o.OrderID, AffiliateID: o.AffiliateID, PlacedAt: o.PlacedAt,
		Currency: s.Currency, Market: o.Buyer.Country, NewBuyer: o.Buyer.New, New: s.Verdict(), Cause: s.Cause}
	old := live.summary()
	ch.Old = old
	if a.top.wants(ch) {
		a.top.add(ch)
	}
	return nil
}

// report assembles the report from the sums, in a deterministic order.
func (a *shadowAgg) report(opts ShadowReportOptions) (*ShadowReport, error) {
	r := a.rep
	for _, v := range a.versions {
		r.Shadows = append(r.Shadows, *v)
	}
	slices.SortFunc(r.Shadows, func(x, y ShadowVersion) int {
		return cmp.Or(cmp.Compare(x.Program, y.Program), cmp.Compare(x.Version, y.Version), cmp.Compare(x.Digest, y.Digest))
	})
	r.Live = recordedVersions(a.live)
	rr := &ReplayReport{}
	if err := rr.setBreakdowns(a.cells, opts.TopAffiliates); err != nil {
		return nil, err
	}
	r.Totals, r.ByRateRule, r.ByMarket, r.ByBuyer, r.TopAffiliates = rr.Totals, rr.ByRateRule, rr.ByMarket, rr.ByBuyer, rr.TopAffiliates
	causes, err := replayGroups(a.causes)
	if err != nil {
		return nil, err
	}
	r.ByCause = causes
	a.top.compact()
	a.errors.compact()
	r.Diverging, r.ErrorSamples, r.DivergingTotal = a.top.items, a.errors.items, r.Diverged
	return r, nil
}

// cmpDivergence orders diverged orders by the absolute commission difference, largest first,
// then as replay lists changes (placed_at, program, order id, event id).
func cmpDivergence(a, b OrderChange) int {
	da, db := absDiff(&a), absDiff(&b)
	return cmp.Or(db.Cmp(&da), cmpOrderChange(a, b))
}

func absDiff(c *OrderChange) apd.Decimal {
	var d apd.Decimal
	if c.Old != nil {
		_, _ = SumContext.Sub(&d, &c.New.Commission, &c.Old.Commission)
	} else {
		d.Set(&c.New.Commission)
	}
	d.Abs(&d)
	return d
}

// ErrNoShadowOutcomes: the store holds no shadow outcome the report's filter selects.
var ErrNoShadowOutcomes = errors.New("no shadow outcomes")

// ShadowFilter selects stored shadow outcomes for a report. Zero fields select everything.
type ShadowFilter struct {
	Program  string
	Version  int       // 0: every shadow version
	From, To time.Time // placed_at in [From, To); a zero time is unbounded
}

// StoredShadowVersion is one shadow version (and digest) with outcomes stored: how many, and the
// range of their orders' times.
type StoredShadowVersion struct {
	Program     string
	Version     int
	Digest      string
	Events      int64
	First, Last time.Time // placed_at of the first and the last
}

// ErrShadowAmbiguous: a report was asked for without naming the program or the shadow version,
// and the store holds outcomes of several.
var ErrShadowAmbiguous = errors.New("several shadow versions")

// ResolveShadow completes a report's filter from the shadow versions stored (by program, version
// and digest, as the store lists them): with no program, the one program that has shadow
// outcomes; with no version, the program's one shadow version. It fails with ErrNoShadowOutcomes
// when nothing matches, and ErrShadowAmbiguous (naming the candidates) when several do.
func ResolveShadow(stored []StoredShadowVersion, f ShadowFilter) (ShadowFilter, error) {
	var programs []string
	versions := map[string][]int{}
	counts := map[string]int64{}
	for _, v := range stored {
		if f.Program != "" && v.Program != f.Program || f.Version != 0 && v.Version != f.Version {
			continue
		}
		if !slices.Contains(programs, v.Program) {
			programs = append(programs, v.Program)
		}
		if vs := versions[v.Program]; !slices.Contains(vs, v.Version) {
			versions[v.Program] = append(vs, v.Version)
		}
		counts[fmt.Sprintf("%s v%d", v.Program, v.Version)] += v.Events
	}
	what := "program " + f.Program
	if f.Program == "" {
		what = "any program"
	}
	if f.Version != 0 {
		what += fmt.Sprintf(", shadow version %d", f.Version)
	}
	switch {
	case len(programs) == 0:
		return f, fmt.Errorf("%w of %s are stored: is a shadow version (stage: shadow) among the policies the service runs?", ErrNoShadowOutcomes, what)
	case len(programs) > 1:
		return f, fmt.Errorf("%w: %s have shadow outcomes: name one with the program", ErrShadowAmbiguous, listCounts(counts))
	}
	f.Program = programs[0]
	vs := versions[f.Program]
	if len(vs) > 1 {
		return f, fmt.Errorf("%w of program %s have outcomes: %s; name one with the version", ErrShadowAmbiguous, f.Program, listCounts(counts))
	}
	f.Version = vs[0]
	return f, nil
}

func listCounts(counts map[string]int64) string {
	keys := sortedKeys(counts)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s (%d events)", k, counts[k])
	}
	return strings.Join(parts, ", ")
}
