package engine

import (
	"context"
	"maps"
	"slices"
	"strings"

	"github.com/commissioner/commissioner/rules"
)

// Explanation is a decision with the reasoning behind it: for every rule of the policy, its
// expression, its outcome and the input values it read.
type Explanation struct {
	Decision *Decision
	Rules    []RuleExplanation
}

// RuleExplanation is one rule's part in a decision.
type RuleExplanation struct {
	Stage   string  // "qualify" or "rate"
	ID      string  // the rule id
	Line    int     // where the rule is in the policy file
	Expr    string  // the expression (a rate rule's condition)
	Text    string  // the reason a qualification rule gives when it fails, or a rate rule's description
	Outcome string  // pass | fail | match | no_match | not_evaluated
	Inputs  []Input // the order fields and constants the expression reads, with their values
	Terms   string  // for rate rules: what the rule pays ("10%", "10% + USD 5.00")
}

// Input is a named value a rule read.
type Input struct {
	Name  string
	Value string
}

// Explain decides the order with policy p and explains the decision. It evaluates exactly as
// DecideWith does; the explanation adds what the rules read.
func (e *Engine) Explain(ctx context.Context, p *rules.Policy, o *Order) (*Explanation, error) {
	d, err := e.DecideWith(ctx, p, o)
	if err != nil {
		return nil, err
	}
	vars := o.Vars()
	outcomes := map[[2]int]bool{}
	for _, t := range d.Trace {
		outcomes[[2]int{int(t.Stage), int(t.Index)}] = t.Result
	}
	outcome := func(stage Stage, i int, yes, no string) string {
		r, ok := outcomes[[2]int{int(stage), i}]
		switch {
		case !ok:
			return "not_evaluated"
		case r:
			return yes
		}
		return no
	}
	consts := map[string]rules.Constant{}
	for _, c := range p.Constants {
		consts[c.Name] = c
	}
	inputs := func(names, constants []string) []Input {
		var in []Input
		for _, n := range names {
			v, _ := rules.ResolveName(vars, n)
			in = append(in, Input{Name: n, Value: rules.FormatValue(v)})
		}
		for _, n := range constants {
			in = append(in, Input{Name: n, Value: consts[n].Text})
		}
		return in
	}
	x := &Explanation{Decision: d}
	for i, r := range p.Qualify {
		x.Rules = append(x.Rules, RuleExplanation{
			Stage: "qualify", ID: r.ID, Line: r.Line, Expr: r.Expr, Text: r.Reason,
			Outcome: outcome(StageQualify, i, "pass", "fail"),
			Inputs:  inputs(r.Names(), r.Constants()),
		})
	}
	for i, r := range p.Rates {
		x.Rules = append(x.Rules, RuleExplanation{
			Stage: "rate", ID: r.ID, Line: r.Line, Expr: r.When, Text: r.Description,
			Outcome: outcome(StageRate, i, "match", "no_match"),
			Inputs:  inputs(r.Names(), r.Constants()),
			Terms:   Terms(r),
		})
	}
	return x, nil
}

// Terms describes what a rate rule pays: "10%", "USD 5.00", "10% + EUR 4.50 / USD 5.00".
func Terms(r *rules.RateRule) string {
	var parts []string
	if r.Rate != nil {
		parts = append(parts, r.Rate.Text('f')+"%")
	}
	if len(r.Flat) > 0 {
		var flats []string
		for _, cur := range slices.Sorted(maps.Keys(r.Flat)) {
			flats = append(flats, cur+" "+r.Flat[cur].Text('f'))
		}
		parts = append(parts, strings.Join(flats, " / "))
	}
	return strings.Join(parts, " + ")
}
