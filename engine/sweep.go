package engine

// Sweeps and budgets: the cost curve of a policy's terms across a range of values, priced on
// history in one pass, and the point at which the change crosses a budget.
//
// A sweep varies rate rules' terms — a rate, or a flat amount in one currency — of one candidate
// policy over ranges (several ranges form a grid). Each point is the candidate file with those
// values written in (rules.Policy.WithTerms): a policy of its own, with its own digest, exactly
// what `replay --policy` of that file decides with. ReplaySweep reads and decodes each event of
// the history once and has every point's candidate decide it, into one replay aggregate per
// point: each point's report is the report Replay gives for that candidate, digit for digit.
// Since the points differ in terms only, the rules are evaluated once per event: the other points
// take the first one's rule outcomes and apply their own terms (rulesAlike, withTermsOf).

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/cockroachdb/apd/v3"

	"github.com/commissioner/commissioner/rules"
)

// MaxSweepPoints bounds the points of one sweep (the product of its ranges' sizes): every point
// decides every event, so a sweep costs about a replay per point beyond reading the history.
const MaxSweepPoints = 64

// SweepAxis is one range of a sweep: a term of the candidate and the values it takes, in order.
type SweepAxis struct {
	Term   rules.Term
	Values []*apd.Decimal
	Spec   string // the values as given: "4%..7%/0.5%", "1.00,1.50"
}

// ParseSweepAxis reads TERM=VALUES, where TERM is RULE.rate, RULE.flat.CUR or RULE.flat (the
// rule's only flat currency) and VALUES is a range FROM..TO/STEP or a list V1,V2,… . Rates are
// percentages ("4%..7%/0.5%"; the % signs may be left out), flat amounts decimals in the policy's
// terms ("1.00..3.00/0.50", in the currency the term names). A range starts at FROM and goes up by
// STEP while it stays at or below TO: TO is included when it lands on a step. Values are exact
// decimals. A rate is from 0% to 100%, a flat amount ≥ 0; a range has at most MaxSweepPoints.
//
// Values are written as a policy would: a rate with no trailing zeros (5%, 5.5%), a flat amount
// with as many decimals as the most precise of FROM, TO and STEP (1.00, 1.50).
func ParseSweepAxis(spec string) (SweepAxis, error) {
	name, values, ok := strings.Cut(spec, "=")
	if !ok {
		return SweepAxis{}, fmt.Errorf("--sweep %q: want TERM=FROM..TO/STEP (selected_returning.rate=4%%..7%%/0.5%%) or TERM=V1,V2,…", spec)
	}
	t, err := rules.ParseTerm(strings.TrimSpace(name))
	if err != nil {
		return SweepAxis{}, fmt.Errorf("--sweep %q: %w", spec, err)
	}
	ax := SweepAxis{Term: t, Spec: strings.TrimSpace(values)}
	fail := func(format string, args ...any) (SweepAxis, error) {
		return SweepAxis{}, fmt.Errorf("--sweep %q: %s", spec, fmt.Sprintf(format, args...))
	}
	if ax.Spec == "" {
		return fail("no values after =: want FROM..TO/STEP or V1,V2,…")
	}
	if from, rest, isRange := strings.Cut(ax.Spec, ".."); isRange {
		to, step, hasStep := strings.Cut(rest, "/")
		a, err := parseTermValue(t, from)
		if err != nil {
			return fail("from: %v", err)
		}
		b, err := parseTermValue(t, to)
		if err != nil {
			return fail("to: %v", err)
		}
		if a.Cmp(b) > 0 {
			return fail("from %s is above to %s", t.Format(a), t.Format(b))
		}
		var s *apd.Decimal
		switch {
		case hasStep:
			if s, err = parseTermValue(t, step); err != nil {
				return fail("step: %v", err)
			}
			if s.IsZero() {
				return fail("the step must be above 0")
			}
		case a.Cmp(b) != 0:
			return fail("a range needs a step: %s..%s/STEP", from, to)
		default:
			s = apd.New(1, 0)
		}
		if ax.Values, err = rangeValues(t, a, b, s); err != nil {
			return fail("%v", err)
		}
		return ax, nil
	}
	seen := map[string]bool{}
	for _, v := range strings.Split(ax.Spec, ",") {
		d, err := parseTermValue(t, v)
		if err != nil {
			return fail("%v", err)
		}
		if t.Kind == rules.TermRate {
			d.Reduce(d)
		}
		var key apd.Decimal
		key.Reduce(d)
		if seen[key.String()] {
			return fail("%s is listed twice", t.Format(d))
		}
		seen[key.String()] = true
		ax.Values = append(ax.Values, d)
	}
	if len(ax.Values) > MaxSweepPoints {
		return fail("%d values; a sweep has at most %d points", len(ax.Values), MaxSweepPoints)
	}
	return ax, nil
}

// parseTermValue reads one value of a term: a percentage for a rate ("5.5%" or "5.5"), from 0 to
// 100; a decimal ≥ 0 for a flat amount.
func parseTermValue(t rules.Term, s string) (*apd.Decimal, error) {
	s = strings.TrimSpace(s)
	text := s
	if t.Kind == rules.TermRate {
		text = strings.TrimSpace(strings.TrimSuffix(s, "%"))
	}
	d, _, err := apd.NewFromString(text)
	if err != nil || d.Form != apd.Finite || text == "" || strings.ContainsAny(text, "eE") {
		if t.Kind == rules.TermRate {
			return nil, fmt.Errorf("%q is not a percentage such as 5%% or 5.5%%", s)
		}
		return nil, fmt.Errorf("%q is not a decimal amount such as 2.50", s)
	}
	if d.Negative && !d.IsZero() {
		return nil, fmt.Errorf("%s is below 0", s)
	}
	d.Negative = false
	if t.Kind == rules.TermRate && d.Cmp(apd.New(100, 0)) > 0 {
		return nil, fmt.Errorf("%s is above 100%%", s)
	}
	return d, nil
}

// rangeValues are from, from+step, … while at most to, written as the term writes them.
func rangeValues(t rules.Term, from, to, step *apd.Decimal) ([]*apd.Decimal, error) {
	var span, steps apd.Decimal
	if _, err := SumContext.Sub(&span, to, from); err != nil {
		return nil, err
	}
	if _, err := SumContext.QuoInteger(&steps, &span, step); err != nil {
		return nil, err
	}
	n, err := steps.Int64()
	if err != nil || n+1 > MaxSweepPoints {
		return nil, fmt.Errorf("%s..%s by %s is %s points; a sweep has at most %d",
			t.Format(from), t.Format(to), t.Format(step), pointCount(&steps), MaxSweepPoints)
	}
	scale := max(-from.Exponent, -to.Exponent, -step.Exponent, 0)
	out := make([]*apd.Decimal, 0, n+1)
	for i := range n + 1 {
		v := new(apd.Decimal)
		if _, err := SumContext.Mul(v, step, apd.New(i, 0)); err != nil {
			return nil, err
		}
		if _, err := SumContext.Add(v, v, from); err != nil {
			return nil, err
		}
		if t.Kind == rules.TermRate {
			v.Reduce(v)
		} else if _, err := SumContext.Quantize(v, v, -scale); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// pointCount is steps + 1, as text, however large.
func pointCount(steps *apd.Decimal) string {
	var n apd.Decimal
	if _, err := SumContext.Add(&n, steps, apd.New(1, 0)); err != nil {
		return "too many"
	}
	return n.Text('f')
}

// SweepPoint is one point of a sweep: a value for each of its ranges' terms, and the candidate
// policy with those values.
type SweepPoint struct {
	Values []rules.TermValue // one per range, in the ranges' order
	Policy *rules.Policy
	Set    *rules.Set // Policy alone: the candidate to replay
}

// Label is the point's values, "selected_returning.rate=5%, other_returning.rate=4%".
func (p *SweepPoint) Label() string {
	parts := make([]string, len(p.Values))
	for i, v := range p.Values {
		parts[i] = v.String()
	}
	return strings.Join(parts, ", ")
}

// SweepPoints makes the points of a sweep of the base policy: every combination of the ranges'
// values (the first range varies slowest), each compiled as base's file with the values written
// in. A term base does not have, one term in two ranges, more than MaxSweepPoints points or a
// variant that does not compile is an error naming the rule and the file. The ranges come back
// with their terms resolved (a flat amount's currency named).
func SweepPoints(base *rules.Policy, axes []SweepAxis) ([]SweepPoint, []SweepAxis, error) {
	if len(axes) == 0 {
		return nil, nil, errors.New("a sweep needs at least one range")
	}
	resolved := make([]SweepAxis, len(axes))
	total := 1
	seen := map[rules.Term]string{}
	for i, ax := range axes {
		t, err := base.ResolveTerm(ax.Term)
		if err != nil {
			return nil, nil, fmt.Errorf("--sweep %s=%s: %w", ax.Term, ax.Spec, err)
		}
		if prev, dup := seen[t]; dup {
			return nil, nil, fmt.Errorf("--sweep %s=%s: %s is swept already (--sweep %s)", ax.Term, ax.Spec, t, prev)
		}
		seen[t] = ax.Term.String() + "=" + ax.Spec
		ax.Term = t
		resolved[i] = ax
		if total *= len(ax.Values); total > MaxSweepPoints {
			return nil, nil, fmt.Errorf("the sweep has %s points; at most %d in one sweep: use fewer values or a larger step", gridSize(axes), MaxSweepPoints)
		}
	}
	points := make([]SweepPoint, 0, total)
	idx := make([]int, len(resolved))
	for range total {
		values := make([]rules.TermValue, len(resolved))
		for i, ax := range resolved {
			values[i] = rules.TermValue{Term: ax.Term, Value: ax.Values[idx[i]]}
		}
		p, err := base.WithTerms(values...)
		if err != nil {
			return nil, nil, err
		}
		set, problems := rules.NewSet([]*rules.Policy{p})
		if set == nil {
			return nil, nil, fmt.Errorf("the variant with %s: %w", (&SweepPoint{Values: values}).Label(), problems)
		}
		points = append(points, SweepPoint{Values: values, Policy: p, Set: set})
		for i := len(idx) - 1; i >= 0; i-- { // the last range varies fastest
			if idx[i]++; idx[i] < len(resolved[i].Values) {
				break
			}
			idx[i] = 0
		}
	}
	return points, resolved, nil
}

// gridSize is "7 × 12 = 84": the ranges' sizes and their product.
func gridSize(axes []SweepAxis) string {
	sizes := make([]string, len(axes))
	total := 1
	for i, ax := range axes {
		sizes[i] = fmt.Sprint(len(ax.Values))
		total *= len(ax.Values)
	}
	if len(axes) == 1 {
		return sizes[0]
	}
	return fmt.Sprintf("%s = %d", strings.Join(sizes, " × "), total)
}

// ReplaySweep replays the history once for several candidates (a sweep's points): each event is
// read once and decoded once, and every candidate decides it — a candidate whose deciding version
// has the same rules as the first candidate's (rulesAlike: a sweep's points differ in terms
// only) takes that decision's rule outcomes with its own terms instead of evaluating the rules
// again. The i-th report is exactly the report Replay(ctx, candidates[i], h, opts) gives; workers
// as in Replay, memory as Replay's times the candidates (each worker keeps an aggregate per
// candidate).
func ReplaySweep(ctx context.Context, candidates []*rules.Set, h History, opts ReplayOptions) ([]*ReplayReport, error) {
	if len(candidates) == 0 {
		return nil, errors.New("replaying a sweep: no candidate policy set")
	}
	for _, c := range candidates {
		if c == nil {
			return nil, errors.New("replaying a sweep: a nil candidate policy set")
		}
	}
	workers := opts.setDefaults()
	engines := make([]*Engine, len(candidates))
	for i, c := range candidates {
		engines[i] = New(c)
	}
	ws := make([]*sweepWorker, workers)
	for w := range ws {
		ws[w] = &sweepWorker{points: make([]*replayAgg, len(candidates))}
		for i, eng := range engines {
			ws[w].points[i] = newReplayAgg(eng, opts)
		}
	}
	if err := walkReplay(ctx, h, ws); err != nil {
		return nil, err
	}
	reports := make([]*ReplayReport, len(candidates))
	for i, c := range candidates {
		aggs := make([]*replayAgg, workers)
		for w := range ws {
			aggs[w] = ws[w].points[i]
		}
		rep, err := mergeReplay(c, aggs, opts)
		if err != nil {
			return nil, err
		}
		reports[i] = rep
	}
	return reports, nil
}

// sweepWorker is one worker's share of a sweep: an aggregate per point, which every event it is
// given goes to, decoded once.
type sweepWorker struct {
	points []*replayAgg
}

func (w *sweepWorker) addBatch(ctx context.Context, batch []ReplayEvent) {
	for j := range batch {
		ev := &batch[j]
		o, err := DecodeOrder(ev.Event.Raw)
		// The first point evaluates the rules; the others, when their version has the same
		// rules (a sweep's points differ in terms only), take its outcomes with their terms.
		var like *Decision
		for _, a := range w.points {
			if d := a.addDecoded(ctx, ev, o, err, like); like == nil {
				like = d
			}
		}
	}
}

func (w *sweepWorker) failure() error {
	for _, a := range w.points {
		if a.err != nil {
			return a.err
		}
	}
	return nil
}

// Budget bounds the change of one currency's total commission: a candidate keeps to it when its
// difference in that currency (after − before, as the replay's totals say) is at most Amount. A
// negative budget is a saving to reach (USD -5000: at least 5 000.00 less), a positive one a cost
// not to exceed (USD 2000: at most 2 000.00 more), 0 no increase at all. A currency with no order
// in the replay has a difference of 0.
type Budget struct {
	Currency string
	Amount   apd.Decimal
}

// ParseBudget reads CUR:AMOUNT, "USD:-5000": an ISO 4217 code and a signed decimal.
func ParseBudget(s string) (Budget, error) {
	cur, amount, ok := strings.Cut(s, ":")
	if !ok {
		return Budget{}, fmt.Errorf("--budget %q: want CUR:AMOUNT, e.g. USD:-5000 (save at least 5000 USD) or EUR:2000 (cost at most 2000 EUR more)", s)
	}
	cur = strings.TrimSpace(cur)
	if _, ok := LookupCurrency(cur); !ok {
		return Budget{}, fmt.Errorf("--budget %q: %q is not an ISO 4217 currency code", s, cur)
	}
	amount = strings.TrimSpace(amount)
	d, _, err := apd.NewFromString(amount)
	if err != nil || d.Form != apd.Finite || strings.ContainsAny(amount, "eE") {
		return Budget{}, fmt.Errorf("--budget %q: %q is not a decimal amount (write -5000 or -5000.00, no separators)", s, amount)
	}
	if d.IsZero() {
		d.Negative = false
	}
	return Budget{Currency: cur, Amount: *d}, nil
}

func (b *Budget) String() string { return b.Currency + ":" + b.Amount.Text('f') }

// Difference is the report's difference in the budget's currency (after − before); found is
// false, and the difference 0 (0.00 in USD), when the report has no order in that currency.
func (b *Budget) Difference(rep *ReplayReport) (diff apd.Decimal, found bool) {
	for i := range rep.Totals {
		if t := &rep.Totals[i]; t.Currency == b.Currency {
			diff.Set(&t.Diff)
			return diff, true
		}
	}
	if c, ok := LookupCurrency(b.Currency); ok {
		diff.SetFinite(0, -c.MinorUnits)
	}
	return diff, false
}

// Keeps reports whether a difference keeps to the budget: diff ≤ Amount.
func (b *Budget) Keeps(diff *apd.Decimal) bool { return diff.Cmp(&b.Amount) <= 0 }

// BudgetCrossing is where a sweep's change crosses a budget.
type BudgetCrossing struct {
	// Point is the index of the point at which the change crosses the budget: of the points
	// that keep to it, the one whose difference is closest to it (the largest: the least change
	// that meets the budget); when none keeps to it, the one closest to it (the smallest
	// difference). On a tie, the first point.
	Point      int
	Difference apd.Decimal
	Keeps      bool // the point keeps to the budget
	Keeping    int  // how many points keep to it
}

// Crossing finds where the points' change crosses the budget (reports: one per point, in order).
func (b *Budget) Crossing(reports []*ReplayReport) BudgetCrossing {
	c := BudgetCrossing{Point: -1}
	for i, rep := range reports {
		d, _ := b.Difference(rep)
		keeps := b.Keeps(&d)
		if keeps {
			c.Keeping++
		}
		better := c.Point < 0 ||
			keeps && !c.Keeps ||
			keeps && c.Keeps && d.Cmp(&c.Difference) > 0 ||
			!keeps && !c.Keeps && d.Cmp(&c.Difference) < 0
		if better {
			c.Point, c.Keeps = i, keeps
			c.Difference.Set(&d)
		}
	}
	return c
}

// rulesAlike reports whether two versions decide every order alike but for their terms: the same
// program, constants, qualification rules and rate rules' conditions, in the same order. Then a
// decision by one, given the other's identity and terms (Decision.withTermsOf), is the decision the
// other makes. A sweep's points are alike by construction (rules.Policy.WithTerms edits terms only);
// anything else is compared as written.
func rulesAlike(a, b *rules.Policy) bool {
	if a == b {
		return true
	}
	if a.Program != b.Program || a.ReadsAffiliate() != b.ReadsAffiliate() ||
		len(a.Constants) != len(b.Constants) || len(a.Qualify) != len(b.Qualify) || len(a.Rates) != len(b.Rates) {
		return false
	}
	for i := range a.Constants {
		x, y := &a.Constants[i], &b.Constants[i]
		if x.Name != y.Name || x.Text != y.Text || x.Type.String() != y.Type.String() {
			return false
		}
	}
	for i := range a.Qualify {
		if a.Qualify[i].ID != b.Qualify[i].ID || a.Qualify[i].Expr != b.Qualify[i].Expr {
			return false
		}
	}
	for i := range a.Rates {
		if a.Rates[i].ID != b.Rates[i].ID || a.Rates[i].When != b.Rates[i].When {
			return false
		}
	}
	return true
}

// alikePair caches rulesAlike for the last pair of versions asked about.
type alikePair struct {
	a, b *rules.Policy
	ok   bool
}

func (c *alikePair) same(a, b *rules.Policy) bool {
	if c.a != a || c.b != b {
		c.a, c.b, c.ok = a, b, rulesAlike(a, b)
	}
	return c.ok
}

// withTermsOf is the decision version p makes of the order o that d decided, when p's rules are
// d's version's (rulesAlike): d's outcomes, with p's identity and the terms of p's matching rule.
func (d *Decision) withTermsOf(p *rules.Policy, o *Order) (*Decision, error) {
	n := &Decision{
		OrderID: d.OrderID, Program: d.Program, AffiliateID: d.AffiliateID,
		Policy: p, PolicyVersion: p.Version, PolicyDigest: p.Digest,
		Qualified: d.Qualified, FailedRules: d.FailedRules,
		Currency: d.Currency, Rounding: p.Rounding, Env: d.Env, Affiliate: d.Affiliate,
	}
	if len(d.Trace) <= len(n.traceBuf) {
		n.Trace = n.traceBuf[:len(d.Trace):len(d.Trace)]
	} else {
		n.Trace = make([]Outcome, len(d.Trace))
	}
	copy(n.Trace, d.Trace)
	if !d.Qualified {
		n.Commission, _ = roundTo(&n.Commission, o.Currency, p.Rounding)
		return n, nil
	}
	last := d.Trace[len(d.Trace)-1] // the rate rule that matched
	if err := n.setTerms(p, p.Rates[last.Index], o); err != nil {
		return nil, err
	}
	return n, nil
}
