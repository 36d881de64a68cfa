package engine_test

import (
	"context"
	"strings"
	"testing"

	"github.com/commissioner/commissioner/engine"
	"github.com/commissioner/commissioner/rules"
)

// TestPolicies runs the example orders kept in every policy file under ../policies: this is how
// `go test ./...` runs the in-file tests, one subtest per case.
func TestPolicies(t *testing.T) {
	set, err := rules.LoadDir("../policies")
	if err != nil {
		t.Fatalf("loading ../policies: %v", err)
	}
	results := engine.New(set).RunPolicyTests(context.Background())
	if len(results) == 0 {
		t.Fatal("got no policy test cases, want the seed policy's examples")
	}
	for _, r := range results {
		t.Run(r.Policy.Program+"/v"+itoa(r.Policy.Version)+"/"+r.Case.Name, func(t *testing.T) {
			if !r.Passed() {
				t.Errorf("%s:\n  %s", r.Name(), strings.Join(r.Diffs, "\n  "))
			}
		})
	}
}

// TestPolicyTestsCanFail checks that RunPolicyTests reports what differs: a policy whose examples
// are all wrong fails every one of them, each with the field that differed.
func TestPolicyTestsCanFail(t *testing.T) {
	src := seedWithTests(`
tests:
  - name: wrong commission
    order: ` + baseOrderFlow + `
    expect: {qualified: true, commission: "294.11"}
  - name: wrong qualified
    order: ` + baseOrderFlow + `
    expect: {qualified: false}
  - name: wrong failed rules
    order: ` + baseOrderFlow + `
    expect: {failed_rules: [completed]}
  - name: wrong rate rule and rate
    order: ` + baseOrderFlow + `
    expect: {rate_rule: other_new, rate: "9"}
  - name: expects an error but is decided
    order: ` + baseOrderFlow + `
    expect: {error: "amount"}
  - name: rejected with another error
    order: {order_id: x}
    expect: {error: "refunded_amount"}
  - name: rejected unexpectedly
    order: {order_id: x}
    expect: {qualified: true}
`)
	e := engine.New(mustSet(t, map[string]string{"alibaba/v1.yaml": src}))
	want := map[string]string{
		"wrong commission":                `commission: got "294.10", want "294.11"`,
		"wrong qualified":                 "qualified: got true, want false",
		"wrong failed rules":              "failed_rules: got [], want [completed]",
		"wrong rate rule and rate":        `rate_rule: got "selected_new", want "other_new"`,
		"expects an error but is decided": `error: got a decision, want an error containing "amount"`,
		"rejected with another error":     `want one containing "refunded_amount"`,
		"rejected unexpectedly":           "error: program: required",
	}
	results := e.RunPolicyTests(context.Background())
	if len(results) != len(want) {
		t.Fatalf("got %d results, want %d", len(results), len(want))
	}
	for _, r := range results {
		t.Run(r.Case.Name, func(t *testing.T) {
			if r.Passed() {
				t.Fatalf("got a pass, want a failure")
			}
			got := strings.Join(r.Diffs, "; ")
			if !strings.Contains(got, want[r.Case.Name]) {
				t.Errorf("got diffs %q, want one containing %q", got, want[r.Case.Name])
			}
		})
	}
}
