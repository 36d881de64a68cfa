package rules

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"cel.dev/cel-go/common/types"
	"github.com/cockroachdb/apd/v3"
)

// Lint looks for rate rules that cannot do what their author meant. It builds probe orders from
// the values the policy mentions (its constants and string literals, plus one value it does not
// mention for each field), keeps those that pass qualification, and reports:
//   - an error for a qualified probe that matches no rate rule (an order that would be rejected);
//   - an error for a rate rule that is never the first match (unreachable: earlier rules take all
//     its orders);
//   - a warning for two rules with different terms that match one probe (first match wins; if
//     that is intended, order them so and make the earlier condition explicit).
//
// Probes cover the values the policy names, not every possible order: a clean lint is evidence,
// not proof. When no probe qualifies, it says so rather than staying silent.
func Lint(p *Policy) Problems {
	ps := &problems{file: p.File}
	if len(p.Rates) == 0 {
		return nil
	}
	space := newProbeSpace(p)

	base, ok := space.findQualifying(p)
	if !ok {
		ps.warnAt(p.Rates[0].Line, 0, CodeLintSkipped, "lint", "could not build an order that passes qualification from the values the policy names; rate rule coverage not checked")
		return ps.list
	}
	// Vary what the rate rules read, keep the rest of the qualifying base.
	var names []string
	seen := map[string]bool{}
	for _, r := range p.Rates {
		for _, n := range r.names {
			if !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
	}
	firstMatches := make([]int, len(p.Rates))
	reportedGap, overlaps := false, map[[2]int]bool{}
	type overlap struct {
		later int
		warn  Problem
	}
	var overlapWarnings []overlap
	ctx := context.Background()
	act := NewActivation(&Vars{})
	space.each(names, base, func(v *Vars, desc string) bool {
		act.Reset(v)
		if !passes(ctx, p, act) {
			return true
		}
		var matched []int
		for i, r := range p.Rates {
			if ok, err := r.Eval(ctx, act); err == nil && ok {
				matched = append(matched, i)
			}
		}
		if len(matched) == 0 {
			if !reportedGap {
				ps.atPos(p.Rates[len(p.Rates)-1].Line, 0, CodeNoRateMatch, "lint", "a qualified order matches no rate rule, e.g. %s: add a rule for it or a final catch-all (when: \"true\")", desc)
				reportedGap = true
			}
			return true
		}
		firstMatches[matched[0]]++
		for _, j := range matched[1:] {
			a, b := p.Rates[matched[0]], p.Rates[j]
			if key := [2]int{matched[0], j}; !overlaps[key] && !sameTerms(a, b) && b.When != "true" {
				overlaps[key] = true
				overlapWarnings = append(overlapWarnings, overlap{later: j, warn: Problem{File: p.File, Line: b.Line, Rule: b.ID, Code: CodeOverlap, Severity: SeverityWarning,
					Message: fmt.Sprintf("overlaps rule %s (line %d), which wins as the earlier match, e.g. %s", a.ID, a.Line, desc)}})
			}
		}
		return true
	})
	for i, r := range p.Rates {
		if firstMatches[i] == 0 {
			ps.atPos(r.Line, 0, CodeUnreachable, r.ID, "unreachable: no qualified order reaches this rule as the first match (earlier rules take all its orders, or its condition never holds)")
		}
	}
	// An unreachable rule is reported once, as unreachable, not also as overlapping.
	for _, o := range overlapWarnings {
		if firstMatches[o.later] > 0 {
			ps.list = append(ps.list, o.warn)
		}
	}
	ps.list.Sort()
	return ps.list
}

func passes(ctx context.Context, p *Policy, act *Activation) bool {
	for _, r := range p.Qualify {
		if ok, err := r.Eval(ctx, act); err != nil || !ok {
			return false
		}
	}
	return true
}

func sameTerms(a, b *RateRule) bool {
	if (a.Rate == nil) != (b.Rate == nil) || (a.Rate != nil && a.Rate.Cmp(b.Rate) != 0) || len(a.Flat) != len(b.Flat) {
		return false
	}
	for c, x := range a.Flat {
		if y, ok := b.Flat[c]; !ok || x.Cmp(y) != 0 {
			return false
		}
	}
	return true
}

var (
	countryLike  = regexp.MustCompile(`^[A-Z]{2}$`)
	currencyLike = regexp.MustCompile(`^[A-Z]{3}$`)
)

// probeSpace holds candidate values for each schema name.
type probeSpace struct {
	values map[string][]func(*Vars) string // each sets one field and describes it
}

const maxProbes = 200_000

// newProbeSpace gathers the candidate values for every schema name rules read: the values the
// policy names (its constants and string literals, sorted into countries, currencies and other
// strings), one value it does not name for each field, and the thresholds its constants set.
func newProbeSpace(p *Policy) *probeSpace {
	countries, currencies, others := probeStrings(p)
	sp := &probeSpace{values: map[string][]func(*Vars) string{}}
	sp.addStrings(countries, currencies)
	sp.addTimes()
	sp.addItems(others)
	sp.addAffiliate(p, others)
	return sp
}

// probeStrings sorts the strings the policy names (its constants and string literals) into
// countries, currencies and others, each starting with a value the policy need not name.
func probeStrings(p *Policy) (countries, currencies, others []string) {
	var strs []string
	for _, c := range p.Constants {
		strs = append(strs, constantStrings(c)...)
	}
	for _, r := range p.Qualify {
		strs = append(strs, r.literals...)
	}
	for _, r := range p.Rates {
		strs = append(strs, r.literals...)
	}
	countries, currencies, others = []string{"ZZ"}, []string{"USD"}, []string{"other"}
	seen := map[string]bool{"ZZ": true, "USD": true, "other": true}
	for _, s := range strs {
		if seen[s] {
			continue
		}
		seen[s] = true
		switch {
		case countryLike.MatchString(s):
			countries = append(countries, s)
		case currencyLike.MatchString(s):
			currencies = append(currencies, s)
		default:
			others = append(others, s)
		}
	}
	sort.Strings(countries)
	sort.Strings(currencies)
	sort.Strings(others)
	return countries, currencies, others
}

// set makes fns the candidate values of a schema name.
func (sp *probeSpace) set(name string, fns ...func(*Vars) string) { sp.values[name] = fns }

// addStrings adds the order's string and boolean fields: countries, currencies, statuses, a new
// or returning buyer.
func (sp *probeSpace) addStrings(countries, currencies []string) {
	str := func(name string, vals []string, f func(*Vars, string)) {
		var fns []func(*Vars) string
		for _, x := range vals {
			fns = append(fns, func(v *Vars) string { f(v, x); return fmt.Sprintf("%s=%q", name, x) })
		}
		sp.set(name, fns...)
	}
	str("order.buyer.country", countries, func(v *Vars, s string) { v.BuyerCountry = s })
	str("order.traffic_country", append([]string{""}, countries...), func(v *Vars, s string) { v.TrafficCountry = s })
	str("order.currency", currencies, func(v *Vars, s string) { v.Currency = s })
	str("order.status", []string{"completed", "pending", "cancelled", "refunded"}, func(v *Vars, s string) { v.Status = s })
	sp.set("order.buyer.new",
		func(v *Vars) string { v.BuyerNew = true; return "order.buyer.new=true" },
		func(v *Vars) string { v.BuyerNew = false; return "order.buyer.new=false" })
}

// addTimes adds the order's optional moments (a click, a completion, a buyer's signup), each
// present or absent, and a refund or none.
func (sp *probeSpace) addTimes() {
	clicks := []func(*Vars) string{
		func(v *Vars) string {
			v.HasClick, v.ClickAt = true, v.PlacedAt.Add(-time.Hour)
			return "a click 1h before the order"
		},
		func(v *Vars) string { v.HasClick, v.ClickAt = false, time.Unix(0, 0).UTC(); return "no click" },
	}
	sp.set("order.has_click", clicks...)
	sp.set("order.click_at", clicks...)
	completions := []func(*Vars) string{
		func(v *Vars) string {
			v.HasCompletedAt, v.CompletedAt = true, v.PlacedAt.Add(time.Hour)
			return "completed 1h after placing"
		},
		func(v *Vars) string {
			v.HasCompletedAt, v.CompletedAt = false, time.Unix(0, 0).UTC()
			return "no completed_at"
		},
	}
	sp.set("order.has_completed_at", completions...)
	sp.set("order.completed_at", completions...)
	sp.set("order.refunded_amount",
		func(v *Vars) string { v.RefundedAmount = apd.New(0, 0); return "refunded_amount=0" },
		func(v *Vars) string { v.RefundedAmount = apd.New(10, 0); return "refunded_amount=10" })
	signups := []func(*Vars) string{
		func(v *Vars) string {
			v.HasBuyerSignupAt, v.BuyerSignupAt = true, v.PlacedAt.Add(-time.Hour)
			return "a buyer who signed up 1h before the order"
		},
		func(v *Vars) string {
			v.HasBuyerSignupAt, v.BuyerSignupAt = true, v.PlacedAt.AddDate(-10, 0, 0)
			return "a buyer who signed up 10 years before the order"
		},
		func(v *Vars) string {
			v.HasBuyerSignupAt, v.BuyerSignupAt = false, time.Unix(0, 0).UTC()
			return "no signup_at"
		},
	}
	sp.set("order.buyer.has_signup_at", signups...)
	sp.set("order.buyer.signup_at", signups...)
}

// addItems adds the order's items: none, or one item of each category (other string) named.
func (sp *probeSpace) addItems(categories []string) {
	var items []func(*Vars) string
	items = append(items, func(v *Vars) string { v.Items = nil; return "no items" })
	for _, c := range categories {
		items = append(items, func(v *Vars) string {
			v.Items = []Item{{SKU: "sku-1", Category: c, Quantity: 1, Amount: apd.New(100, 0)}}
			return fmt.Sprintf("an item of category %q", c)
		})
	}
	sp.set("order.items", items...)
}

// addAffiliate adds the affiliate's month figures: 0 and every threshold the policy names (int
// and decimal constants, and decimal("…") literals among others), so that each tier is probed.
func (sp *probeSpace) addAffiliate(p *Policy, others []string) {
	ints, decs := []int64{0}, []*apd.Decimal{apd.New(0, 0)}
	for _, c := range p.Constants {
		switch x := c.Value.(type) {
		case types.Int:
			ints = append(ints, int64(x))
		case Decimal:
			decs = append(decs, x.D)
		}
	}
	for _, s := range others {
		if d, _, err := apd.NewFromString(s); err == nil && d.Form == apd.Finite && !d.Negative {
			decs = append(decs, d)
		}
	}
	var orders, sales []func(*Vars) string
	for _, n := range ints {
		orders = append(orders, func(v *Vars) string {
			v.MonthQualifiedOrders = n
			return fmt.Sprintf("affiliate.month_qualified_orders=%d", n)
		})
	}
	for _, d := range decs {
		sales = append(sales, func(v *Vars) string {
			v.MonthQualifiedSales = d
			return fmt.Sprintf("affiliate.month_qualified_sales=%s", d.Text('f'))
		})
	}
	sp.set("affiliate.month_qualified_orders", orders...)
	sp.set("affiliate.month_qualified_sales", sales...)
}

func constantStrings(c Constant) []string {
	switch {
	case strings.HasPrefix(c.Text, "["):
		var out []string
		for _, s := range strings.Split(strings.Trim(c.Text, "[]"), ", ") {
			if len(s) >= 2 && s[0] == '"' {
				out = append(out, strings.Trim(s, `"`))
			}
		}
		return out
	case strings.HasPrefix(c.Text, `"`):
		return []string{strings.Trim(c.Text, `"`)}
	}
	return nil
}

// defaultVars is a plain order every probe starts from.
func defaultVars() Vars {
	placed := time.Date(2030, 6, 15, 12, 0, 0, 0, time.UTC)
	return Vars{
		OrderID: "probe", Program: "probe", AffiliateID: "aff", Status: "completed",
		PlacedAt: placed, HasCompletedAt: true, CompletedAt: placed.Add(time.Hour),
		HasClick: true, ClickAt: placed.Add(-time.Hour),
		BuyerID: "buyer", BuyerCountry: "ZZ", TrafficCountry: "ZZ", Currency: "USD",
		Amount: apd.New(100, 0), RefundedAmount: apd.New(0, 0),
	}
}

// findQualifying searches the values qualification rules read for a probe that passes them all.
func (sp *probeSpace) findQualifying(p *Policy) (Vars, bool) {
	var names []string
	seen := map[string]bool{}
	for _, r := range p.Qualify {
		for _, n := range r.names {
			if !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
	}
	var found Vars
	ok := false
	act := NewActivation(&Vars{})
	sp.each(names, defaultVars(), func(v *Vars, _ string) bool {
		act.Reset(v)
		if passes(context.Background(), p, act) {
			found, ok = *v, true
			found.Items = append([]Item(nil), v.Items...)
			return false
		}
		return true
	})
	return found, ok
}

// each calls fn for every combination of the candidate values of names (at most maxProbes),
// starting from base; fn returns false to stop.
func (sp *probeSpace) each(names []string, base Vars, fn func(v *Vars, desc string) bool) {
	var dims [][]func(*Vars) string
	seen := map[*func(*Vars) string]bool{}
	for _, n := range names {
		if vals, ok := sp.values[n]; ok && len(vals) > 0 && !seen[&vals[0]] {
			seen[&vals[0]] = true
			dims = append(dims, vals)
		}
	}
	idx := make([]int, len(dims))
	descs := make([]string, len(dims))
	for count := 0; count < maxProbes; count++ {
		v := base
		for d, i := range idx {
			descs[d] = dims[d][i](&v)
		}
		if !fn(&v, strings.Join(descs, ", ")) {
			return
		}
		d := len(idx) - 1
		for d >= 0 {
			idx[d]++
			if idx[d] < len(dims[d]) {
				break
			}
			idx[d] = 0
			d--
		}
		if d < 0 {
			return
		}
	}
}
