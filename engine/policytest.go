package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/commissioner/commissioner/rules"
)

// TestResult is the outcome of one example order kept in a policy file.
type TestResult struct {
	Policy *rules.Policy
	Case   rules.TestCase
	Diffs  []string // what differed, "field: got X, want Y"; empty when the case passed
}

// Passed reports whether the case passed.
func (r TestResult) Passed() bool { return len(r.Diffs) == 0 }

// Name is "file:line: test name".
func (r TestResult) Name() string {
	return fmt.Sprintf("%s:%d: %s", r.Policy.File, r.Case.Line, r.Case.Name)
}

// RunPolicyTests decides every example order of every policy in the set with the version that
// holds it, and compares with what the example expects.
func (e *Engine) RunPolicyTests(ctx context.Context) []TestResult {
	var out []TestResult
	for _, p := range e.set.All() {
		for _, tc := range p.Tests {
			out = append(out, TestResult{Policy: p, Case: tc, Diffs: e.runCase(ctx, p, tc)})
		}
	}
	return out
}

func (e *Engine) runCase(ctx context.Context, p *rules.Policy, tc rules.TestCase) []string {
	want := tc.Expect
	o, err := DecodeOrder(tc.Order)
	var d *Decision
	if err == nil && tc.Affiliate != nil {
		o.Affiliate.QualifiedOrders = tc.Affiliate.MonthQualifiedOrders
		o.Affiliate.QualifiedSales.Set(tc.Affiliate.MonthQualifiedSales)
	}
	if err == nil {
		d, err = e.DecideWith(ctx, p, o)
	}
	if err != nil {
		if want.Error != nil && strings.Contains(err.Error(), *want.Error) {
			return nil
		}
		if want.Error != nil {
			return []string{fmt.Sprintf("error: got %q, want one containing %q", err, *want.Error)}
		}
		return []string{fmt.Sprintf("error: %v", err)}
	}
	var diffs []string
	if want.Error != nil {
		diffs = append(diffs, fmt.Sprintf("error: got a decision, want an error containing %q", *want.Error))
	}
	if want.Qualified != nil && *want.Qualified != d.Qualified {
		diffs = append(diffs, fmt.Sprintf("qualified: got %t, want %t (failed rules: %v)", d.Qualified, *want.Qualified, d.FailedRules))
	}
	if want.HasFailed && !slices.Equal(want.FailedRules, d.FailedRules) {
		diffs = append(diffs, fmt.Sprintf("failed_rules: got %v, want %v", d.FailedRules, want.FailedRules))
	}
	if want.RateRule != nil && *want.RateRule != d.RateRule {
		diffs = append(diffs, fmt.Sprintf("rate_rule: got %q, want %q", d.RateRule, *want.RateRule))
	}
	if want.Rate != nil && *want.Rate != d.Rate.Text('f') {
		diffs = append(diffs, fmt.Sprintf("rate: got %q, want %q", d.Rate.Text('f'), *want.Rate))
	}
	if want.Commission != nil && *want.Commission != d.Commission.Text('f') {
		diffs = append(diffs, fmt.Sprintf("commission: got %q, want %q", d.Commission.Text('f'), *want.Commission))
	}
	return diffs
}
