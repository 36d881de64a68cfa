package engine

import (
	"context"
	"fmt"
	"strings"

	"github.com/commissioner/commissioner/rules"
)

// PolicyCheck is a policy set checked as it must be before it decides anything: rules.Check's
// problems, and the result of every example order the policy files keep.
type PolicyCheck struct {
	Set      *rules.Set
	Problems rules.Problems // sorted; errors and warnings
	Tests    []TestResult
}

// CheckPolicies loads, lints and tests the policies at path (a directory, or one file): the gate
// of serve, its reloads and `commissioner policy check|test`. A policy that does not compile, or a
// path that cannot be read, is the error.
func CheckPolicies(ctx context.Context, path string, opts ...rules.LoadOption) (*PolicyCheck, error) {
	set, problems, err := rules.Check(path, opts...)
	if err != nil {
		return nil, err
	}
	return &PolicyCheck{Set: set, Problems: problems, Tests: New(set).RunPolicyTests(ctx)}, nil
}

// Failed returns the tests that failed.
func (c *PolicyCheck) Failed() []TestResult {
	var out []TestResult
	for _, r := range c.Tests {
		if !r.Passed() {
			out = append(out, r)
		}
	}
	return out
}

// Err is nil when the set may decide orders: no problem is an error and every test passes; else
// it says what fails ("fail the check: …", "fail their tests: …").
// Warnings do not stop it.
func (c *PolicyCheck) Err() error {
	if c.Problems.HasErrors() {
		var errs rules.Problems
		for _, p := range c.Problems {
			if p.Severity == rules.SeverityError {
				errs = append(errs, p)
			}
		}
		return fmt.Errorf("fail the check:\n%w", errs)
	}
	if failed := c.Failed(); len(failed) > 0 {
		lines := make([]string, len(failed))
		for i, r := range failed {
			lines[i] = fmt.Sprintf("%s: %v", r.Name(), r.Diffs)
		}
		return fmt.Errorf("fail their tests:\n%s", strings.Join(lines, "\n"))
	}
	return nil
}
